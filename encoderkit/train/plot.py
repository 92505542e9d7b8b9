"""The curves of a run, drawn from its metrics.jsonl into one PNG: the loss and every metric against the step,
training (lines) and held-out (dots) in the same panel, the unigram baseline dashed beside what it is the
baseline of. The loop draws it at the end of every run; `encoderkit plot RUN_DIR` redraws it for a run that
was stopped.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from encoderkit.files import atomic_write

CURVES_FILE = "curves.png"
# Records' bookkeeping, not curves worth a panel.
NOT_PLOTTED = {"step", "lr", "tokens_per_s", "grad_norm", "nonfinite_steps", "masked_tokens", "epoch"}
EVAL_PREFIX = "eval_"


def read_curves(metrics_file: Path) -> tuple[dict[str, dict[int, float]], dict[str, dict[int, float]]]:
    """(training, held-out) curves: metric -> {step: value}, a later record of a step replacing an earlier one (a
    resumed run logs again from its checkpoint). A last line cut short by a crash is left out."""
    train: dict[str, dict[int, float]] = {}
    held_out: dict[str, dict[int, float]] = {}
    lines = Path(metrics_file).read_text().splitlines()
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise ValueError(f"{metrics_file} line {number}: not a JSON record") from None
        step = record.get("step")
        for key, value in record.items():
            name = key.removeprefix(EVAL_PREFIX)
            if name in NOT_PLOTTED or not isinstance(value, int | float) or not math.isfinite(value):
                continue
            curves = held_out if key.startswith(EVAL_PREFIX) else train
            curves.setdefault(name, {})[step] = float(value)
    return train, held_out


def panels(train: dict, held_out: dict) -> list[str]:
    """The loss first, then each metric once; losses of parts and baselines go into others' panels."""
    names = [name for name in {**train, **held_out} if name != "loss" and not name.endswith("_loss")
             and not name.startswith("unigram_")]
    return ["loss"] * ("loss" in train or "loss" in held_out) + sorted(names)


def baseline_of(panel: str) -> str | None:
    """The unigram baseline drawn in a masked-token panel: accuracy beside accuracy, perplexity beside perplexity."""
    if panel.startswith(("mlm_acc", "gen_acc")):
        return "unigram_acc"
    if panel.endswith("_perplexity"):
        return "unigram_perplexity"
    return None


def plot_metrics(metrics_file: Path, png: Path, title: str | None = None) -> bool:
    """Draw the curves of `metrics_file` into `png` (written atomically). False if there is nothing to draw."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    if not Path(metrics_file).is_file():
        return False
    train, held_out = read_curves(metrics_file)
    names = panels(train, held_out)
    if not names:
        return False
    columns = min(3, len(names))
    rows = math.ceil(len(names) / columns)
    figure = Figure(figsize=(4.2 * columns, 3.0 * rows), layout="constrained")
    figure.suptitle(title or str(Path(metrics_file).parent))
    for index, name in enumerate(names):
        axes = figure.add_subplot(rows, columns, index + 1)
        parts = [(name, "-", None)]
        if name == "loss":
            parts += [(part, "-", None) for part in sorted(train) if part.endswith("_loss")]
        if baseline_of(name):
            parts.append((baseline_of(name), "--", "grey"))
        for key, style, color in parts:
            _draw(axes, train.get(key), style, color, f"{key} (training)", None)
            _draw(axes, held_out.get(key), style, color, f"{key} (held-out)", "o")
        if name.endswith("_perplexity"):
            axes.set_yscale("log")
        axes.set_title(name)
        axes.set_xlabel("step")
        axes.grid(alpha=0.3)
        axes.legend(fontsize="x-small")
    atomic_write(png, lambda tmp: figure.savefig(tmp, format="png", dpi=100))
    return True


def _draw(axes, curve: dict[int, float] | None, style: str, color, label: str, marker) -> None:
    if not curve:
        return
    steps = sorted(curve)
    axes.plot(steps, [curve[step] for step in steps], style, color=color, marker=marker, markersize=4, label=label,
              linewidth=1.2)
