"""Ranges on config dataclass fields, which the recipe engine checks (encoderkit.recipes).

The configs that carry them live on several floors (train/config.py, objectives, recipes); this module
sits below all of them.
"""


def value_range(lo=None, hi=None, lo_open: bool = False) -> dict:
    """Field metadata: the value must be >= lo (> lo with lo_open) and <= hi; None leaves that side open."""
    return {"lo": lo, "hi": hi, "lo_open": lo_open}
