"""`encoderkit finetune classify` end to end: string labels from a CSV and multi-labels from JSON Lines, label
names in config.json for transformers' pipeline and `encoderkit predict`; the metrics against scikit-learn;
bad input gets one line and exit 2."""

import csv
import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from encoderkit.data.text_classification import (
    MULTI,
    REGRESSION,
    SINGLE,
    Row,
    classification_metrics,
    label_space,
    per_class_scores,
)
from encoderkit.data.tokenizer import Tokenizer
from encoderkit.models.electra import ElectraConfig, ElectraForPreTraining
from encoderkit.models.hf_format import save_pretrained

TINY = dict(embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
            initializer_range=0.2)
FILLER = "the a film movie plot actor story scene cast old new".split()  # with the keywords: 17 words, each one piece
KEYWORDS = {"good": "positive", "bad": "negative", "dull": "neutral"}
TOPICS = ["sports", "music", "food"]  # multi-label: each present keyword adds its topic


def cli(*args, stdin=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "encoderkit", *args], capture_output=True, text=True, timeout=300,
                          env=env, input=stdin)


def sentiment(rng):
    keyword = rng.choice(list(KEYWORDS))
    words = rng.sample(FILLER, 4) + [keyword]
    rng.shuffle(words)
    return " ".join(words), KEYWORDS[keyword]


def topics(rng):
    chosen = [topic for topic in TOPICS if rng.random() < 0.4]
    words = rng.sample(FILLER, 4) + chosen
    rng.shuffle(words)
    return " ".join(words), chosen


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    rng = random.Random(0)
    texts = [sentiment(rng)[0] for _ in range(200)] + [topics(rng)[0] for _ in range(200)]
    tokenizer = Tokenizer.train(texts, vocab_size=22, model_type="word", num_threads=1)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("electra")
    save_pretrained(ElectraForPreTraining(ElectraConfig(vocab_size=tokenizer.vocab_size, **TINY)), path)
    tokenizer.save(path)
    return path


QUICK = ["finetune.max_seq_length=16", "train.batch_size=16", "finetune.epochs=6", "train.learning_rate=3e-3"]


@pytest.fixture(scope="module")
def csv_run(model_dir, tmp_path_factory):
    rng = random.Random(1)
    path = tmp_path_factory.mktemp("csv")
    for split, count in (("train", 240), ("dev", 90), ("test", 12)):
        with open(path / f"{split}.csv", "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["review", "sentiment"])
            writer.writerows(sentiment(rng) for _ in range(count))
    out = path / "run"
    result = cli("finetune", "classify", "--model", str(model_dir), "--train", str(path / "train.csv"),
                 "--validation", str(path / "dev.csv"), "--test", str(path / "test.csv"), "--text-column", "review",
                 "--label-column", "sentiment", *QUICK, f"output.dir={out}")
    assert result.returncode == 0, result.stderr
    return out, json.loads((out / "results.json").read_text()), result


@pytest.mark.slow
def test_string_labels_from_a_csv_end_to_end(csv_run):
    out, results, result = csv_run
    assert results["problem_type"] == SINGLE and results["labels"] == ["negative", "neutral", "positive"]
    assert results["median"]["validation"]["accuracy"] >= 0.95
    assert set(results["median"]["validation"]) == {"accuracy", "macro_f1", "mcc"}
    assert set(results["per_class"]) == {"negative", "neutral", "positive"} and "recall" in result.stdout
    lines = (out / "predictions" / "test.tsv").read_text().splitlines()
    assert lines[0] == "index\tprediction" and len(lines) == 13
    assert {line.split("\t")[1] for line in lines[1:]} <= {"negative", "neutral", "positive"}


@pytest.mark.slow
def test_label_names_show_in_predict_and_in_transformers_pipeline(csv_run):
    transformers = pytest.importorskip("transformers")
    out, _, _ = csv_run
    result = cli("predict", "--model", str(out / "best"), stdin="the good film\nthe bad plot\n")
    assert result.returncode == 0, result.stderr
    assert [line.split("\t")[0] for line in result.stdout.splitlines()] == ["positive", "negative"]
    model = transformers.AutoModelForSequenceClassification.from_pretrained(out / "best")
    classifier = transformers.pipeline("text-classification", model=model, tokenizer=str(out / "best"))
    assert classifier("the dull movie")[0]["label"] == "neutral"


@pytest.mark.slow
def test_multi_labels_from_json_lines_end_to_end(model_dir, tmp_path):
    rng = random.Random(2)
    for split, count in (("train", 240), ("dev", 90)):
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps({"text": t, "label": labels}) + "\n"
                                                         for t, labels in (topics(rng) for _ in range(count))))
    out = tmp_path / "run"
    result = cli("finetune", "classify", "--model", str(model_dir), "--train", str(tmp_path / "train.jsonl"),
                 "--validation", str(tmp_path / "dev.jsonl"), *QUICK, "finetune.epochs=25", f"output.dir={out}")
    assert result.returncode == 0, result.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["problem_type"] == MULTI and results["labels"] == ["food", "music", "sports"]
    assert results["median"]["validation"]["micro_f1"] >= 0.95
    config = json.loads((out / "best" / "config.json").read_text())
    assert config["problem_type"] == MULTI and config["id2label"] == {"0": "food", "1": "music", "2": "sports"}
    predicted = cli("predict", "--model", str(out / "best"), stdin="the music film with food\nthe old plot\n")
    assert predicted.stdout.splitlines() == ["food,music\tthe music film with food", "\tthe old plot"]


@pytest.mark.slow
@pytest.mark.parametrize("case", ["no label column", "unseen label", "bad csv row"])
def test_bad_input_is_one_line_and_exit_2(case, model_dir, tmp_path):
    (tmp_path / "train.csv").write_text("text,label\nthe good film,positive\nthe bad film,negative\n")
    dev = tmp_path / "dev.csv"
    dev.write_text("text,label\nthe dull film,neutral\n" if case == "unseen label" else "text,label\na film,positive\n")
    label_column, expected = "label", f"{dev}:2: label 'neutral' is not in the training data"
    if case == "no label column":
        label_column, expected = "stars", "no label column 'stars' (columns: text, label); set --label-column"
    elif case == "bad csv row":
        dev.write_text("text,label\n,positive\n")
        expected = f"{dev}:2: an empty or non-text value in column 'text'"
    result = cli("finetune", "classify", "--model", str(model_dir), "--train", str(tmp_path / "train.csv"),
                 "--validation", str(dev), "--label-column", label_column, f"output.dir={tmp_path / 'run'}")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and expected in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


# ---- in-process pieces -------------------------------------------------------------------------------


def rows(labels):
    return [Row({"label": label}, f"f:{i}") for i, label in enumerate(labels)]


def test_the_label_column_decides_the_problem_type():
    assert label_space(rows(["b", "a", "b"]), "label").names == ["a", "b"]
    assert label_space(rows(["10", "9", "10"]), "label").names == ["9", "10"]  # integers sorted as numbers
    assert label_space(rows(["0.5", "3.25"]), "label").problem_type == REGRESSION
    assert label_space(rows(["1", "2"]), "label", regression=True).problem_type == REGRESSION
    multi = label_space(rows([["x"], ["y", "x"], []]), "label")
    assert multi.problem_type == MULTI and multi.names == ["x", "y"]


@pytest.mark.parametrize("seed", range(3))
def test_metrics_equal_scikit_learn_and_scipy(seed):
    metrics = pytest.importorskip("sklearn.metrics")
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(seed)
    labels, predictions = rng.integers(0, 4, 80), rng.integers(0, 4, 80)
    predictions[:40] = labels[:40]
    ours = classification_metrics(SINGLE, predictions, labels, list("abcd"))
    assert ours["accuracy"] == pytest.approx(metrics.accuracy_score(labels, predictions))
    assert ours["macro_f1"] == pytest.approx(metrics.f1_score(labels, predictions, average="macro"))
    assert ours["mcc"] == pytest.approx(metrics.matthews_corrcoef(labels, predictions))
    precision, recall, f1, support = metrics.precision_recall_fscore_support(labels, predictions, labels=range(4),
                                                                             zero_division=0)
    table = per_class_scores(predictions, labels, list("abcd"))
    assert [table[c]["precision"] for c in "abcd"] == pytest.approx(precision)
    assert [table[c]["recall"] for c in "abcd"] == pytest.approx(recall)
    assert [table[c]["support"] for c in "abcd"] == list(support)
    hot_labels, hot_predictions = rng.random((50, 5)) < 0.3, rng.random((50, 5)) < 0.3
    multi = classification_metrics(MULTI, hot_predictions, hot_labels, list("abcde"))
    assert multi["micro_f1"] == pytest.approx(metrics.f1_score(hot_labels, hot_predictions, average="micro"))
    assert multi["macro_f1"] == pytest.approx(metrics.f1_score(hot_labels, hot_predictions, average="macro",
                                                               zero_division=0))
    assert multi["accuracy"] == pytest.approx(metrics.accuracy_score(hot_labels, hot_predictions))
    scores, gold = rng.normal(size=40), rng.normal(size=40)
    regression = classification_metrics(REGRESSION, scores, gold, ["score"])
    assert regression["pearson"] == pytest.approx(stats.pearsonr(scores, gold)[0])
    assert regression["spearman"] == pytest.approx(stats.spearmanr(scores, gold)[0])
