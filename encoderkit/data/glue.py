"""GLUE: the nine tasks as one table, their data, official metrics, submission files and published scores.

One `GlueTask` row per task says everything task-specific: folder and TSV file names exactly as
the GLUE download script writes them, which header columns hold the texts / the label / the test
id, the label strings, the metrics and the one that picks the best checkpoint. Every function
below is driven by that row; none branches on a task name.

Data comes from the GLUE TSV files (`data_dir`) or from the `nyu-mll/glue` dataset on the
Hugging Face hub. Labels are class indices into `GlueTask.labels` (the TSV strings, in the order
of nyu-mll/glue's ClassLabel, so both sources agree) or floats for STS-B.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from encoderkit.data.hub import load_split
from encoderkit.errors import UserError
from encoderkit.files import write_text

HUB_DATASET = "nyu-mll/glue"


class GlueDataError(UserError):
    """A GLUE file or task name is wrong; the message names the file and line."""


@dataclass(frozen=True)
class GlueSplit:
    name: str  # our name: train, dev, dev_matched, test, test_mismatched, ...
    file: str  # TSV file in the task's GLUE folder
    hub_split: str  # the same split in nyu-mll/glue
    submission_file: str | None = None  # leaderboard file name; only test splits have one
    headerless_columns: tuple[str, ...] | None = None  # column names of a file written without header

    @property
    def is_test(self) -> bool:
        return self.submission_file is not None


@dataclass(frozen=True)
class GlueTask:
    name: str  # also the nyu-mll/glue config name
    glue_dir: str  # folder name in the GLUE download
    text_columns: tuple[str, ...]  # TSV header names of the one or two texts
    hub_text_columns: tuple[str, ...]  # the same texts in nyu-mll/glue
    label_column: str  # TSV header name of the label (absent from test files)
    labels: tuple[str, ...] | None  # label strings as in the TSV; None means regression
    metrics: tuple[str, ...]  # official GLUE metrics; with two, their mean is reported too
    primary_metric: str  # picks the best checkpoint, measured on the first dev split
    splits: tuple[GlueSplit, ...]
    test_id_column: str = "index"
    symmetric_pairs: bool = False  # the label stays the same when the two texts swap

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)

    @property
    def dev_splits(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.splits if s.name != "train" and not s.is_test)

    @property
    def test_splits(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.splits if s.is_test)


@dataclass(frozen=True)
class GlueExample:
    text_a: str
    text_b: str | None
    label: int | float | None  # class index, STS-B score, or None on test splits
    id: str  # test splits: the file's index/id column (what a submission names); else the row number


# CoLA's train/dev files have no header row; these are their four columns. The third holds the
# original author's acceptability marker ("*" for unacceptable), which GLUE's label replaces.
COLA_COLUMNS = ("source", "label", "original_marker", "sentence")


def _train_dev_test(submission_file: str, headerless_columns: tuple[str, ...] | None = None):
    return (
        GlueSplit("train", "train.tsv", "train", headerless_columns=headerless_columns),
        GlueSplit("dev", "dev.tsv", "validation", headerless_columns=headerless_columns),
        GlueSplit("test", "test.tsv", "test", submission_file=submission_file),
    )


BINARY = ("0", "1")
NLI_BINARY = ("entailment", "not_entailment")
SENTENCE_PAIR = ("sentence1", "sentence2")

# Header layouts as the GLUE download script writes them (train/dev; test drops the label):
#   CoLA   train/dev: no header, COLA_COLUMNS; test: index sentence
#   SST-2  sentence label; test: index sentence
#   MRPC   Quality #1 ID #2 ID #1 String #2 String (UTF-8 BOM first); test: index #1 ID ...
#   STS-B  index genre filename year old_index source1 source2 sentence1 sentence2 score
#   QQP    id qid1 qid2 question1 question2 is_duplicate; test: id question1 question2
#   MNLI   index promptID pairID genre sentence1_binary_parse sentence2_binary_parse
#          sentence1_parse sentence2_parse sentence1 sentence2 label1 [label2..label5] gold_label
#   QNLI   index question sentence label
#   RTE    index sentence1 sentence2 label
#   WNLI   index sentence1 sentence2 label
TASKS: dict[str, GlueTask] = {
    task.name: task
    for task in (
        GlueTask(
            name="cola", glue_dir="CoLA", text_columns=("sentence",), hub_text_columns=("sentence",),
            label_column="label", labels=BINARY, metrics=("mcc",), primary_metric="mcc",
            splits=_train_dev_test("CoLA.tsv", headerless_columns=COLA_COLUMNS),
        ),
        GlueTask(
            name="sst2", glue_dir="SST-2", text_columns=("sentence",), hub_text_columns=("sentence",),
            label_column="label", labels=BINARY, metrics=("accuracy",), primary_metric="accuracy",
            splits=_train_dev_test("SST-2.tsv"),
        ),
        GlueTask(
            name="mrpc", glue_dir="MRPC", text_columns=("#1 String", "#2 String"), hub_text_columns=SENTENCE_PAIR,
            label_column="Quality", labels=BINARY, metrics=("accuracy", "f1"), primary_metric="accuracy_f1_mean",
            splits=_train_dev_test("MRPC.tsv"), symmetric_pairs=True,
        ),
        GlueTask(
            name="stsb", glue_dir="STS-B", text_columns=SENTENCE_PAIR, hub_text_columns=SENTENCE_PAIR,
            label_column="score", labels=None, metrics=("pearson", "spearman"),
            primary_metric="pearson_spearman_mean", splits=_train_dev_test("STS-B.tsv"), symmetric_pairs=True,
        ),
        GlueTask(
            name="qqp", glue_dir="QQP", text_columns=("question1", "question2"),
            hub_text_columns=("question1", "question2"), label_column="is_duplicate", labels=BINARY,
            metrics=("accuracy", "f1"), primary_metric="accuracy_f1_mean", splits=_train_dev_test("QQP.tsv"),
            test_id_column="id", symmetric_pairs=True,
        ),
        GlueTask(
            name="mnli", glue_dir="MNLI", text_columns=SENTENCE_PAIR, hub_text_columns=("premise", "hypothesis"),
            label_column="gold_label", labels=("entailment", "neutral", "contradiction"),
            metrics=("accuracy",), primary_metric="accuracy",
            splits=(
                GlueSplit("train", "train.tsv", "train"),
                GlueSplit("dev_matched", "dev_matched.tsv", "validation_matched"),
                GlueSplit("dev_mismatched", "dev_mismatched.tsv", "validation_mismatched"),
                GlueSplit("test_matched", "test_matched.tsv", "test_matched", submission_file="MNLI-m.tsv"),
                GlueSplit(
                    "test_mismatched", "test_mismatched.tsv", "test_mismatched", submission_file="MNLI-mm.tsv"
                ),
            ),
        ),
        GlueTask(
            name="qnli", glue_dir="QNLI", text_columns=("question", "sentence"),
            hub_text_columns=("question", "sentence"), label_column="label", labels=NLI_BINARY,
            metrics=("accuracy",), primary_metric="accuracy", splits=_train_dev_test("QNLI.tsv"),
        ),
        GlueTask(
            name="rte", glue_dir="RTE", text_columns=SENTENCE_PAIR, hub_text_columns=SENTENCE_PAIR,
            label_column="label", labels=NLI_BINARY, metrics=("accuracy",), primary_metric="accuracy",
            splits=_train_dev_test("RTE.tsv"),
        ),
        GlueTask(
            # label 1 means entailment, as nyu-mll/glue's ClassLabel (not_entailment, entailment) says
            name="wnli", glue_dir="WNLI", text_columns=SENTENCE_PAIR, hub_text_columns=SENTENCE_PAIR,
            label_column="label", labels=BINARY, metrics=("accuracy",), primary_metric="accuracy",
            splits=_train_dev_test("WNLI.tsv"),
        ),
    )
}


def get_task(name: str) -> GlueTask:
    """The task called `name`; GLUE's spellings (SST-2, STS-B, CoLA) work too."""
    key = name.lower().replace("-", "")
    if key not in TASKS:
        raise GlueDataError(f"unknown GLUE task {name!r}; valid tasks: {', '.join(TASKS)}")
    return TASKS[key]


# --------------------------------------------------------------------------------------------
# Loading


def load_task(
    task: str, data_dir: str | Path | None = None, splits: Iterable[str] | None = None
) -> dict[str, list[GlueExample]]:
    """Examples of each split (all of the task's splits unless `splits` names some).

    With `data_dir` (the folder holding CoLA/, SST-2/, ... or lowercase names) the GLUE TSV
    files are read; without it the splits come from nyu-mll/glue on the Hugging Face hub.
    """
    spec = get_task(task)
    chosen = _choose_splits(spec, splits)
    if data_dir is None:
        return _load_from_hub(spec, chosen)
    task_dir = _find_task_dir(spec, Path(data_dir))
    return {split.name: _read_tsv_split(spec, split, task_dir / split.file) for split in chosen}


def _choose_splits(task: GlueTask, names: Iterable[str] | None) -> list[GlueSplit]:
    by_name = {split.name: split for split in task.splits}
    if names is None:
        return list(task.splits)
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise GlueDataError(f"GLUE task {task.name} has no split {unknown[0]!r}; its splits: {', '.join(by_name)}")
    return [by_name[name] for name in names]


def _find_task_dir(task: GlueTask, data_dir: Path) -> Path:
    names = list(dict.fromkeys([task.glue_dir, task.glue_dir.lower(), task.name]))
    if data_dir.name in names:  # the task folder itself was given
        return data_dir
    for name in names:
        if (data_dir / name).is_dir():
            return data_dir / name
    raise GlueDataError(f"{data_dir}: no folder for GLUE task {task.name} (looked for {', '.join(names)})")


def _read_tsv_split(task: GlueTask, split: GlueSplit, path: Path) -> list[GlueExample]:
    if not path.is_file():
        raise GlueDataError(f"{path}: file not found (GLUE task {task.name}, split {split.name})")
    # utf-8-sig drops the byte-order mark MRPC's train/dev files start with. GLUE texts contain
    # unbalanced quotes, so quote characters must be read as plain text (QUOTE_NONE).
    with open(path, encoding="utf-8-sig", newline="") as file:
        rows = csv.reader(file, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = split.headerless_columns or next(rows, None)
        if header is None:
            raise GlueDataError(f"{path}: the file is empty; a header line was expected")
        column = {name: i for i, name in enumerate(header)}
        needed = task.text_columns + ((task.test_id_column,) if split.is_test else (task.label_column,))
        missing = [name for name in needed if name not in column]
        if missing:
            raise GlueDataError(
                f"{path}:1: no column {missing[0]!r} in the header ({', '.join(header)}); "
                f"is this the GLUE {task.glue_dir} file?"
            )
        examples = []
        for row in rows:
            if not row:  # a blank line, e.g. a trailing one
                continue
            where = f"{path}:{rows.line_num}"
            if len(row) != len(header):
                raise GlueDataError(
                    f"{where}: {len(row)} tab-separated columns, expected {len(header)} ({', '.join(header)})"
                )
            texts = [row[column[name]] for name in task.text_columns]
            if split.is_test:
                label, example_id = None, row[column[task.test_id_column]]
            else:
                label, example_id = _parse_label(task, row[column[task.label_column]], where), str(len(examples))
            examples.append(GlueExample(texts[0], texts[1] if len(texts) > 1 else None, label, example_id))
    return examples


def _parse_label(task: GlueTask, text: str, where: str) -> int | float:
    if task.labels is None:
        try:
            return float(text)
        except ValueError:
            raise GlueDataError(f"{where}: score {text!r} is not a number (task {task.name})") from None
    if text not in task.labels:
        raise GlueDataError(f"{where}: label {text!r} is not one of {', '.join(task.labels)} (task {task.name})")
    return task.labels.index(text)


def _load_from_hub(task: GlueTask, splits: list[GlueSplit]) -> dict[str, list[GlueExample]]:
    loaded = {}
    for split in splits:
        rows = load_split(f"{HUB_DATASET}:{task.name}", split.hub_split, GlueDataError,
                          "pass --data-dir with the GLUE TSV files")
        loaded[split.name] = [_example_from_hub_row(task, split, row) for row in rows]
    return loaded


def _example_from_hub_row(task: GlueTask, split: GlueSplit, row: dict) -> GlueExample:
    texts = [row[name] for name in task.hub_text_columns]
    label = None if split.is_test else row["label"]  # hub test rows carry label -1
    if label is not None and task.labels is not None and not 0 <= label < task.num_labels:
        raise GlueDataError(f"{HUB_DATASET} {task.name} {split.hub_split}, row {row['idx']}: label {label}")
    return GlueExample(texts[0], texts[1] if len(texts) > 1 else None, label, str(row["idx"]))


# --------------------------------------------------------------------------------------------
# Test-set predictions in GLUE's submission format


def write_predictions(path: str | Path, task: str, ids: Sequence, predictions: Sequence) -> None:
    """Write `index<TAB>prediction` lines: label strings for classification, scores for STS-B.

    `predictions` are class indices (or STS-B scores), `ids` the test examples' ids. The file
    appears complete or not at all (written to a temporary file, then renamed).
    """
    spec = get_task(task)
    if len(ids) != len(predictions):
        raise ValueError(f"{len(ids)} ids but {len(predictions)} predictions")
    lines = ["index\tprediction"]
    lines += [f"{example_id}\t{_format_prediction(spec, p)}" for example_id, p in zip(ids, predictions)]
    write_text(path, "\n".join(lines) + "\n")


def _format_prediction(task: GlueTask, prediction) -> str:
    if task.labels is None:
        return f"{float(prediction):.3f}"
    index = int(prediction)
    if not 0 <= index < task.num_labels:
        raise ValueError(f"prediction {index} is not a class of task {task.name} (0..{task.num_labels - 1})")
    return task.labels[index]


# --------------------------------------------------------------------------------------------
# Official metrics (numpy only). All return fractions in [0, 1] ([-1, 1] for correlations).


def accuracy(predictions, labels) -> float:
    return float(np.mean(np.asarray(predictions) == np.asarray(labels)))


def f1_score(predictions, labels) -> float:
    """Binary F1 of the positive class 1; 0 when there is nothing positive to find or find."""
    predicted, actual = np.asarray(predictions) == 1, np.asarray(labels) == 1
    true_pos = np.sum(predicted & actual)
    wrong = np.sum(predicted != actual)  # false positives + false negatives
    return float(2 * true_pos / (2 * true_pos + wrong)) if true_pos + wrong else 0.0


def matthews_corrcoef(predictions, labels) -> float:
    """Matthews correlation (multi-class form, equal to the 2x2 one for CoLA); 0 when undefined."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    classes, encoded = np.unique(np.concatenate([labels, predictions]), return_inverse=True)
    actual, predicted = encoded[: len(labels)], encoded[len(labels):]
    confusion = np.zeros((len(classes), len(classes)))
    np.add.at(confusion, (actual, predicted), 1)
    actual_counts, predicted_counts = confusion.sum(axis=1), confusion.sum(axis=0)
    total, correct = confusion.sum(), np.trace(confusion)
    numerator = correct * total - actual_counts @ predicted_counts
    denominator = np.sqrt((total**2 - predicted_counts @ predicted_counts) * (total**2 - actual_counts @ actual_counts))
    return float(numerator / denominator) if denominator else 0.0


def pearson(predictions, labels) -> float:
    """Pearson correlation; 0 when either side is constant (undefined, so it ranks last)."""
    x = np.asarray(predictions, dtype=np.float64) - np.mean(predictions)
    y = np.asarray(labels, dtype=np.float64) - np.mean(labels)
    denominator = np.sqrt(np.sum(x * x) * np.sum(y * y))
    return float(np.sum(x * y) / denominator) if denominator else 0.0


def spearman(predictions, labels) -> float:
    """Spearman correlation: Pearson of the ranks, tied values sharing their average rank."""
    return pearson(_average_ranks(predictions), _average_ranks(labels))


def _average_ranks(values) -> np.ndarray:
    distinct, position, counts = np.unique(np.asarray(values), return_inverse=True, return_counts=True)
    first_rank = np.cumsum(counts) - counts + 1  # 1-based rank of each distinct value's first copy
    return (first_rank + (counts - 1) / 2)[position]


METRICS = {
    "accuracy": accuracy,
    "f1": f1_score,
    "mcc": matthews_corrcoef,
    "pearson": pearson,
    "spearman": spearman,
}


def compute_metrics(task: str, predictions, labels) -> dict[str, float]:
    """The task's official metrics (and their mean when there are two, e.g. accuracy_f1_mean).

    `predictions` are class indices (STS-B: scores), `labels` the gold ones.
    """
    spec = get_task(task)
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape or predictions.ndim != 1 or len(labels) == 0:
        raise ValueError(f"need two equally long, non-empty 1-D arrays; got {predictions.shape} and {labels.shape}")
    scores = {name: METRICS[name](predictions, labels) for name in spec.metrics}
    if len(scores) > 1:
        scores["_".join(spec.metrics) + "_mean"] = float(np.mean(list(scores.values())))
    return scores


# --------------------------------------------------------------------------------------------
# Published GLUE dev-set scores, for the comparison table. Values as published: points (x100).


@dataclass(frozen=True)
class PublishedScore:
    model: str
    task: str  # a GLUE task name, or "average" for a GLUE score averaged over tasks
    split: str  # dev split of the task
    metric: str  # as compute_metrics names it ("glue_score" for averages)
    value: float
    source: str


ELECTRA_README = (
    "google-research/electra README.md, 'Expected Results' table: GLUE dev, median over many "
    "fine-tuning seeds; its ELECTRA-Small/Base rows are the released checkpoints, which the "
    "README says correspond to ELECTRA-Small++/Base++ of the paper"
)
ELECTRA_PAPER_TABLE1 = (
    "Clark et al. 2020, ELECTRA (ICLR), Table 1: GLUE dev score, average of CoLA (MCC), STS "
    "(Spearman) and accuracy on SST, MRPC, QQP, MNLI, QNLI, RTE; median of 10 fine-tuning runs"
)
ALBERT_README = (
    "google-research/albert README.md, v1/v2 comparison table (per task only MNLI and SST-2); the "
    "README names neither the split nor matched/mismatched: dev and MNLI-matched are assumed"
)
IBERT_PAPER_TABLE2 = (
    "Kim et al. 2021, I-BERT (ICML), Table 2(a) and Appendix C.3: GLUE dev, RoBERTa-Base; MRPC/QQP "
    "are the mean of accuracy and F1, STS-B the mean of Pearson and Spearman"
)

# Each source's columns as (task, split, metric), in the order its table lists them.
ELECTRA_README_COLUMNS = (
    ("cola", "dev", "mcc"), ("sst2", "dev", "accuracy"), ("mrpc", "dev", "accuracy"),
    ("stsb", "dev", "spearman"), ("qqp", "dev", "accuracy"),
    ("mnli", "dev_matched", "accuracy"),  # ELECTRA's MNLI task evaluates dev_matched.tsv
    ("qnli", "dev", "accuracy"), ("rte", "dev", "accuracy"),
)
ELECTRA_TABLE1_COLUMNS = (("average", "dev", "glue_score"),)
ALBERT_README_COLUMNS = (("mnli", "dev_matched", "accuracy"), ("sst2", "dev", "accuracy"))
IBERT_TABLE2_COLUMNS = (
    ("mnli", "dev_matched", "accuracy"), ("mnli", "dev_mismatched", "accuracy"),
    ("qqp", "dev", "accuracy_f1_mean"), ("qnli", "dev", "accuracy"), ("sst2", "dev", "accuracy"),
    ("cola", "dev", "mcc"), ("stsb", "dev", "pearson_spearman_mean"),
    ("mrpc", "dev", "accuracy_f1_mean"), ("rte", "dev", "accuracy"),
)


# (model, source, columns, values as published)
PUBLISHED_ROWS = (
    ("electra-small++", ELECTRA_README, ELECTRA_README_COLUMNS, (57.0, 91.2, 88.0, 87.5, 89.0, 81.3, 88.4, 66.7)),
    ("electra-base++", ELECTRA_README, ELECTRA_README_COLUMNS, (67.7, 95.1, 89.5, 91.2, 91.5, 88.8, 93.2, 82.7)),
    # ELECTRA-Small pretrained on OpenWebText by the repository's quickstart: the closest
    # published reference for a small model pretrained from scratch outside Google.
    ("electra-small-owt", ELECTRA_README, ELECTRA_README_COLUMNS, (56.8, 88.3, 87.4, 86.8, 88.3, 78.9, 87.9, 68.5)),
    ("electra-small", ELECTRA_PAPER_TABLE1, ELECTRA_TABLE1_COLUMNS, (79.9,)),
    ("electra-base", ELECTRA_PAPER_TABLE1, ELECTRA_TABLE1_COLUMNS, (85.1,)),
    ("albert-base-v1", ALBERT_README, ALBERT_README_COLUMNS, (81.6, 90.3)),
    ("albert-base-v2", ALBERT_README, ALBERT_README_COLUMNS, (84.6, 92.9)),
    ("roberta-base-fp32", IBERT_PAPER_TABLE2, IBERT_TABLE2_COLUMNS,
     (87.8, 87.4, 90.4, 92.8, 94.6, 61.2, 91.1, 90.9, 78.0)),
    ("ibert-roberta-base-int8", IBERT_PAPER_TABLE2, IBERT_TABLE2_COLUMNS,
     (87.5, 87.4, 90.2, 92.8, 95.2, 62.5, 90.8, 91.1, 79.4)),
)
PUBLISHED_DEV_SCORES: tuple[PublishedScore, ...] = tuple(
    PublishedScore(model, task, split, metric, value, source)
    for model, source, columns, values in PUBLISHED_ROWS
    for (task, split, metric), value in zip(columns, values, strict=True)
)
