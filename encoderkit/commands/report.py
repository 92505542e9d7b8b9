"""Tables and summaries that commands print and record: seeds' statistics, GLUE dev scores beside the
published ones, FP32 against quantized scores."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from rich.table import Table

from encoderkit.data.glue import PUBLISHED_DEV_SCORES, TASKS


def seed_statistics(dev_splits: Sequence[str], seed_results: list[dict]) -> dict:
    """Median, min and max over the seeds of every dev split's every metric."""
    stats = {"median": {}, "min": {}, "max": {}}
    for split in dev_splits:
        for metric in seed_results[0]["scores"][split]:
            values = [result["scores"][split][metric] for result in seed_results]
            for name, reduce in (("median", statistics.median), ("min", min), ("max", max)):
                stats[name].setdefault(split, {})[metric] = reduce(values)
    return stats


def compare_with_published(task_results: dict, published_model: str | None) -> tuple[list[dict], dict]:
    """One row per task and dev split: our median score x100 (the metric the published table uses, else
    the task's primary metric) beside the published value; and the average over the rows without WNLI
    and MNLI-mismatched (as BERT and ELECTRA average GLUE dev scores)."""
    published = {(s.task, s.split): s for s in PUBLISHED_DEV_SCORES if s.model == published_model}
    rows = []
    for name, result in task_results.items():
        task = TASKS[name]
        for split in task.dev_splits:
            reference = published.get((name, split))
            metric = reference.metric if reference else task.primary_metric
            rows.append({
                "task": name, "split": split, "metric": metric,
                "ours": 100 * result["median"][split][metric],
                "min": 100 * result["min"][split][metric],
                "max": 100 * result["max"][split][metric],
                "published": reference.value if reference else None,
            })
    averaged = [row for row in rows if row["task"] != "wnli" and row["split"] == TASKS[row["task"]].dev_splits[0]]
    published_values = [row["published"] for row in averaged]
    published_average = statistics.mean(published_values) if averaged and None not in published_values else None
    if published_average is None and {row["task"] for row in averaged} >= set(TASKS) - {"wnli"}:
        # a source that publishes only the GLUE score (ELECTRA paper, Table 1)
        published_average = published[("average", "dev")].value if ("average", "dev") in published else None
    average = {
        "tasks": [row["task"] for row in averaged],
        "ours": statistics.mean(row["ours"] for row in averaged) if averaged else None,
        "published": published_average,
    }
    return rows, average


def comparison_table(rows: list[dict], average: dict, published_model: str | None, show_range: bool) -> Table:
    sources = sorted({s.source for s in PUBLISHED_DEV_SCORES if s.model == published_model})
    table = Table(title=f"GLUE dev, x100{f'; published: {published_model}' if published_model else ''}",
                  caption="; ".join(sources) or None)
    for column in ("task", "split", "metric"):
        table.add_column(column)
    for column in ("ours", *(["seeds min-max"] if show_range else []), "published"):
        table.add_column(column, justify="right")
    for row in rows:
        spread = [f"{row['min']:.1f}-{row['max']:.1f}"] if show_range else []
        table.add_row(row["task"], row["split"], row["metric"], f"{row['ours']:.1f}", *spread,
                      _points(row["published"]))
    if average["ours"] is not None:
        table.add_section()
        table.add_row("average", "", "no WNLI, MNLI-mm", f"{average['ours']:.1f}", *([""] if show_range else []),
                      _points(average["published"]))
    return table


def _points(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def seeds_table(title: str, split: str, runs: dict) -> Table:
    """The dev split's metrics x100: the median over the seeds and, with several seeds, their range."""
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("ours", justify="right")
    show_range = len(runs["seeds"]) > 1
    if show_range:
        table.add_column("seeds min-max", justify="right")
    for metric, value in runs["median"][split].items():
        low, high = runs["min"][split][metric], runs["max"][split][metric]
        table.add_row(metric, f"{100 * value:.1f}", *([f"{100 * low:.1f}-{100 * high:.1f}"] if show_range else []))
    return table


def per_class_table(title: str, rows: dict[str, dict]) -> Table:
    """One row per class (or entity type): precision, recall, F1 x100 where given, and the support."""
    table = Table(title=title)
    table.add_column("class")
    metrics = [m for m in ("precision", "recall", "f1") if any(m in row for row in rows.values())]
    for column in (*metrics, "support"):
        table.add_column(column, justify="right")
    for name, row in rows.items():
        table.add_row(name, *(f"{100 * row[m]:.1f}" for m in metrics), str(row["support"]))
    return table


def scores_table(title: str, primary: tuple[str, str], scores: dict[str, dict], differences: dict[str, float],
                 names: dict[str, str]) -> Table:
    """One row per model: every metric of every dev split x100, and the `primary` (split, metric)'s difference
    from FP32 in points."""
    table = Table(title=f"{title}, x100: FP32 against quantized")
    table.add_column("model")
    columns = [(split, metric) for split, values in scores["fp32"].items() for metric in values]
    for split, metric in columns:
        table.add_column(metric if len(scores["fp32"]) == 1 else f"{split} {metric}", justify="right")
    table.add_column(f"{primary[1]} - FP32", justify="right")
    for name, each in scores.items():
        difference = f"{differences[name]:+.1f}" if name in differences else ""
        table.add_row(names[name], *(f"{100 * each[split][metric]:.1f}" for split, metric in columns), difference)
    return table
