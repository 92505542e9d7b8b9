"""One split of a Hugging Face hub dataset, or one line saying why not: the one place where encoderkit's data
modules reach the hub. A machine without a network lands in the error, so each caller says what to pass instead."""

from __future__ import annotations

from encoderkit.errors import UserError


def load_split(name: str, split: str, error: type[UserError], instead: str, streaming: bool = False):
    """The `split` of hub dataset `name` ("path" or "path:config"), as `datasets.load_dataset` returns it;
    any failure raises `error`: "could not load NAME (SPLIT) from the Hugging Face hub: WHY; INSTEAD"."""
    import datasets

    path, _, config = name.partition(":")
    try:
        return datasets.load_dataset(path, config or None, split=split, streaming=streaming)
    except Exception as err:  # offline, hub down, proxy, unknown name or split: all mean "use local files"
        reason = (str(err).splitlines() or [""])[0]
        raise error(f"could not load {name!r} ({split}) from the Hugging Face hub: {type(err).__name__}: "
                    f"{reason}; {instead}") from err
