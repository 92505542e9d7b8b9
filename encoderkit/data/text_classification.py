"""Sequence classification on the user's data: rows from CSV, TSV, JSON Lines or Parquet files (or a hub
dataset), the text / pair / label columns, the label space the training labels imply, and the metrics.

The label space, as transformers' run_glue reads a `--train_file`: float labels (or `regression`) mean
regression; list-valued labels mean multi-label classification (`problem_type: multi_label_classification`,
one sigmoid per class); anything else is single-label classification over the sorted distinct training labels
(strings, or integers compared as numbers). Examples carry class indices, a float score, or a multi-hot list,
as encode_examples takes them.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from encoderkit.data.glue import accuracy, matthews_corrcoef, pearson, spearman
from encoderkit.data.hub import load_split
from encoderkit.errors import UserError
from encoderkit.files import jsonl_rows

SINGLE, MULTI, REGRESSION = "single_label_classification", "multi_label_classification", "regression"
SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}


class TextDataError(UserError):
    """A file, column or label that cannot be used; the message names the file and row."""


@dataclass
class Row:
    values: dict
    where: str  # "file:line" (CSV/TSV/JSONL), "file row N" (Parquet), "dataset (split) row N"


@dataclass
class TextExample:
    text_a: str
    text_b: str | None
    label: int | float | list[float] | None
    where: str


# ---- rows ------------------------------------------------------------------------------------------


def read_rows(path: Path) -> list[Row]:
    path = Path(path)
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise TextDataError(f"{path}: unknown file type {path.suffix!r}; use .csv, .tsv, .jsonl or .parquet")
    if not path.is_file():
        raise TextDataError(f"{path}: file not found")
    if kind in ("csv", "tsv"):
        with open(path, encoding="utf-8-sig", newline="") as file:
            reader = csv.DictReader(file, delimiter="," if kind == "csv" else "\t")
            rows = [Row(values, f"{path}:{reader.line_num}") for values in reader]
    elif kind == "jsonl":
        rows = []
        for _, where, values in jsonl_rows(path, TextDataError):
            if not isinstance(values, dict):
                raise TextDataError(f"{where}: not a JSON object")
            rows.append(Row(values, where))
    else:
        import pyarrow.parquet

        rows = [Row(values, f"{path} row {i}") for i, values in enumerate(pyarrow.parquet.read_table(path).to_pylist())]
    if not rows:
        raise TextDataError(f"{path}: no rows (an empty split)")
    return rows


def split_rows(rows: list[Row], column: str, path: Path) -> dict[str, list[Row]]:
    """One file's rows by the value of its split column (train / validation / test)."""
    _require(rows, column, str(path))
    splits: dict[str, list[Row]] = {}
    for row in rows:
        splits.setdefault(str(row.values[column]), []).append(row)
    return splits


def load_hub_rows(name: str, split: str) -> list[Row]:
    dataset = load_split(name, split, TextDataError, "pass local files instead")
    names = {}
    for column, feature in dataset.features.items():  # class-index columns: their names, as the dataset gives them
        names[column] = getattr(feature, "names", None) or getattr(getattr(feature, "feature", None), "names", None)
    rows = []
    for i, values in enumerate(dataset):
        for column, classes in names.items():
            if classes and values[column] is not None:
                value = values[column]
                values[column] = [classes[v] for v in value] if isinstance(value, list) else classes[value]
        rows.append(Row(values, f"{name} ({split}) row {i}"))
    return rows


def _require(rows: list[Row], column: str, where: str) -> None:
    if column not in rows[0].values:
        raise TextDataError(f"{where}: no column {column!r} (columns: {', '.join(map(str, rows[0].values))})")


# ---- labels ------------------------------------------------------------------------------------------


@dataclass
class LabelSpace:
    problem_type: str
    names: list[str]  # class names; one "score" for regression

    @property
    def num_labels(self) -> int:
        return len(self.names)


def _number(value):
    """An int or float from a number or a numeric string; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    try:
        return int(value)
    except (TypeError, ValueError):
        try:
            return float(value)
        except (TypeError, ValueError):
            return None


def label_space(rows: Sequence[Row], column: str, regression: bool = False) -> LabelSpace:
    """What the training labels imply (module docstring)."""
    values = [row.values[column] for row in rows]
    for row, value in zip(rows, values, strict=True):
        if value is None or value == "":
            raise TextDataError(f"{row.where}: no label in column {column!r}")
    if all(isinstance(value, list) for value in values):
        return LabelSpace(MULTI, sorted({str(label) for value in values for label in value}))
    numbers = [_number(value) for value in values]
    if regression or (None not in numbers and any(isinstance(n, float) and not n.is_integer() for n in numbers)):
        bad = next((row for row, n in zip(rows, numbers, strict=True) if n is None), None)
        if bad is not None:
            raise TextDataError(f"{bad.where}: label {bad.values[column]!r} is not a number (regression)")
        return LabelSpace(REGRESSION, ["score"])
    if None not in numbers:  # integer classes: sorted as numbers, named as written
        return LabelSpace(SINGLE, [str(n) for n in sorted({int(n) for n in numbers})])
    return LabelSpace(SINGLE, sorted({str(value) for value in values}))


def to_examples(rows: Sequence[Row], text: str, pair: str | None, label: str | None, space: LabelSpace,
                where: str) -> list[TextExample]:
    """Examples of `rows`; unlabeled when the label column is absent (a test file)."""
    for column in (text, pair):
        if column is not None:
            _require(rows, column, where)
    labelled = label is not None and label in rows[0].values
    index = {name: i for i, name in enumerate(space.names)}
    examples = []
    for row in rows:
        texts = [row.values[column] for column in (text, pair) if column is not None]
        if any(not isinstance(t, str) or not t.strip() for t in texts):
            raise TextDataError(f"{row.where}: an empty or non-text value in column {text!r}"
                                f"{f' or {pair!r}' if pair else ''}")
        examples.append(TextExample(texts[0], texts[1] if pair else None,
                                    _label(row, label, space, index) if labelled else None, row.where))
    return examples


def _label(row: Row, column: str, space: LabelSpace, index: dict[str, int]):
    value = row.values[column]
    if space.problem_type == REGRESSION:
        number = _number(value)
        if number is None:
            raise TextDataError(f"{row.where}: label {value!r} is not a number (regression)")
        return float(number)
    names = [str(v) for v in value] if space.problem_type == MULTI and isinstance(value, list) else None
    if space.problem_type == MULTI and names is None:
        raise TextDataError(f"{row.where}: label {value!r} is not a list (multi-label classification)")
    if space.problem_type == SINGLE:
        number = _number(value)
        integer_classes = all(name.lstrip("-").isdigit() for name in space.names)
        names = [str(int(number)) if integer_classes and number is not None and float(number).is_integer()
                 else str(value)]
    unknown = [name for name in names if name not in index]
    if unknown:
        raise TextDataError(f"{row.where}: label {unknown[0]!r} is not in the training data "
                            f"(its labels: {', '.join(space.names)})")
    if space.problem_type == SINGLE:
        return index[names[0]]
    hot = [0.0] * len(index)
    for name in names:
        hot[index[name]] = 1.0
    return hot


# ---- metrics -------------------------------------------------------------------------------------


def per_class_scores(predictions, labels, names: Sequence[str]) -> dict[str, dict]:
    """Precision, recall, F1 and support of each class (sklearn's precision_recall_fscore_support, 0 where a
    ratio is undefined); `predictions`/`labels` are class indices, or multi-hot rows for multi-label."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.ndim == 1:
        predictions, labels = [np.eye(len(names), dtype=bool)[x] for x in (predictions, labels)]
    predicted, actual = predictions.astype(bool), labels.astype(bool)
    scores = {}
    for i, name in enumerate(names):
        hits = int(np.sum(predicted[:, i] & actual[:, i]))
        guessed, support = int(np.sum(predicted[:, i])), int(np.sum(actual[:, i]))
        precision = hits / guessed if guessed else 0.0
        recall = hits / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        scores[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    return scores


def classification_metrics(problem_type: str, predictions, labels, names: Sequence[str]) -> dict[str, float]:
    """Single-label: accuracy, macro-F1, Matthews; multi-label: micro- and macro-F1 and exact-match accuracy;
    regression: Pearson and Spearman."""
    if problem_type == REGRESSION:
        return {"pearson": pearson(predictions, labels), "spearman": spearman(predictions, labels)}
    per_class = per_class_scores(predictions, labels, names)
    macro_f1 = float(np.mean([row["f1"] for row in per_class.values()]))
    if problem_type == SINGLE:
        return {"accuracy": accuracy(predictions, labels), "macro_f1": macro_f1,
                "mcc": matthews_corrcoef(predictions, labels)}
    predicted, actual = np.asarray(predictions).astype(bool), np.asarray(labels).astype(bool)
    hits, wrong = np.sum(predicted & actual), np.sum(predicted != actual)
    return {"micro_f1": float(2 * hits / (2 * hits + wrong)) if hits + wrong else 0.0, "macro_f1": macro_f1,
            "accuracy": float(np.mean(np.all(predicted == actual, axis=1)))}


PRIMARY = {SINGLE: "accuracy", MULTI: "micro_f1", REGRESSION: "pearson"}  # picks the best checkpoint
