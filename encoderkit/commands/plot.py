"""`encoderkit plot RUN_DIR`: redraw a run's curves (RUN_DIR/curves.png) from its metrics.jsonl, e.g. for a run that
was stopped before the loop drew them."""

from __future__ import annotations

from pathlib import Path

from encoderkit.errors import UserError
from encoderkit.train.plot import CURVES_FILE, plot_metrics
from encoderkit.train.run_dir import METRICS_FILE


class PlotError(UserError):
    option = "RUN_DIR"


def plot(run_dir: Path, out: Path | None = None) -> Path:
    """Draw RUN_DIR/metrics.jsonl into `out` (default RUN_DIR/curves.png); returns the file written."""
    metrics = Path(run_dir) / METRICS_FILE
    if not metrics.is_file():
        raise PlotError(f"'{run_dir}' has no {METRICS_FILE}; give the output.dir of a pretraining or fine-tuning run "
                        "(for a fine-tuning run, one of its task/seed dirs)")
    out = out or Path(run_dir) / CURVES_FILE
    try:
        drawn = plot_metrics(metrics, out)
    except ValueError as err:
        raise PlotError(str(err)) from None
    if not drawn:
        raise PlotError(f"{metrics} holds no numbers to draw yet; run the training for at least train.log_every steps")
    return out
