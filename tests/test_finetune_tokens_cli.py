"""`encoderkit finetune tokens` end to end: a tiny model learns a generated tagging task to near-perfect entity F1,
the run dir holds what transformers' pipeline and `encoderkit predict` read, bad input gets one line and exit 2;
then `encoderkit quantize` runs QAT on its token head and the integer-only dir tags words in `encoderkit predict`."""

import json
import os
import random
import subprocess
import sys

import pytest
import torch

from encoderkit.data.tokenizer import Tokenizer
from encoderkit.models.electra import (
    ElectraConfig,
    ElectraForPreTraining,
    ElectraForSequenceClassification,
    ElectraForTokenClassification,
)
from encoderkit.models.hf_format import save_pretrained

TINY = dict(embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
            initializer_range=0.2)
# The generated task: first names start a person (a surname continues it), cities are locations, the rest O.
FIRST, LAST = ["alice", "bob", "carol", "dave"], ["smith", "jones", "brown"]
CITIES, FILLER = ["paris", "rome", "oslo"], "the a went to saw met in from with and yesterday today".split()


def cli(*args, stdin=None):
    # no torch.compile: the integer-only chains run eagerly (the same integers) instead of compiling per shape
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCHDYNAMO_DISABLE": "1"}
    return subprocess.run([sys.executable, "-m", "encoderkit", *args], capture_output=True, text=True, timeout=300,
                          env=env, input=stdin)


def tagged_sentence(rng):
    words, tags = [], []
    for _ in range(rng.randint(3, 7)):
        kind = rng.random()
        if kind < 0.25:
            words.append(rng.choice(FIRST))
            tags.append("B-PER")
            if rng.random() < 0.5:
                words.append(rng.choice(LAST))
                tags.append("I-PER")
        elif kind < 0.4:
            words.append(rng.choice(CITIES))
            tags.append("B-LOC")
        else:
            words.append(rng.choice(FILLER))
            tags.append("O")
    return words, tags


def write_conll(path, sentences):
    path.write_text("-DOCSTART- O\n\n" + "".join("".join(f"{w} {t}\n" for w, t in zip(words, tags)) + "\n"
                                                 for words, tags in sentences))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    rng = random.Random(0)
    texts = [" ".join(tagged_sentence(rng)[0]) for _ in range(300)]
    # whole words as pieces: a SentencePiece word split into characters starts with a bare "▁", the piece
    # that carries its tag, and a two-layer model then needs far more steps
    tokenizer = Tokenizer.train(texts, vocab_size=27, model_type="word", num_threads=1)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("electra")
    save_pretrained(ElectraForPreTraining(ElectraConfig(vocab_size=tokenizer.vocab_size, **TINY)), path)
    tokenizer.save(path)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = random.Random(1)
    path = tmp_path_factory.mktemp("ner")
    for split, count in (("train", 240), ("dev", 80), ("test", 20)):
        write_conll(path / f"{split}.conll", [tagged_sentence(rng) for _ in range(count)])
    return path


@pytest.fixture(scope="module")
def trained(model_dir, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "ner"
    result = cli("finetune", "tokens", "--model", str(model_dir), "--train", str(data / "train.conll"),
                 "--validation", str(data / "dev.conll"), "--test", str(data / "test.conll"),
                 "finetune.max_seq_length=32", "train.batch_size=16", "finetune.epochs=6",
                 "train.learning_rate=3e-3", "train.log_every=5", f"output.dir={out}")
    assert result.returncode == 0, result.stderr
    return out, json.loads((out / "results.json").read_text()), result


@pytest.mark.slow
def test_a_tiny_model_learns_a_generated_tagging_task(trained):
    out, results, result = trained
    assert results["tags"] == ["B-LOC", "B-PER", "I-PER", "O"]
    assert results["median"]["validation"]["f1"] >= 0.98
    assert set(results["per_type"]) == {"LOC", "PER"} and results["per_type"]["PER"]["f1"] >= 0.95
    assert "PER" in result.stdout  # the per-type table
    predictions = (out / "predictions" / "test.conll").read_text().split("\n\n")
    assert len([p for p in predictions if p.strip()]) == 20


@pytest.mark.slow
def test_the_best_checkpoint_names_its_tags_for_transformers_pipeline(trained):
    transformers = pytest.importorskip("transformers")
    out, _, _ = trained
    config = json.loads((out / "best" / "config.json").read_text())
    assert config["architectures"] == ["ElectraForTokenClassification"]
    assert config["id2label"] == {"0": "B-LOC", "1": "B-PER", "2": "I-PER", "3": "O"}
    model = transformers.AutoModelForTokenClassification.from_pretrained(out / "best")
    assert model.config.id2label[1] == "B-PER"
    tagger = transformers.pipeline("token-classification", model=model, tokenizer=str(out / "best"))
    found = {(each["word"].lstrip("▁"), each["entity"]) for each in tagger("yesterday alice smith went to paris")}
    assert {("alice", "B-PER"), ("smith", "I-PER"), ("paris", "B-LOC")} <= found, found


@pytest.mark.slow
def test_predict_prints_each_word_with_its_tag(trained):
    out, _, _ = trained
    result = cli("predict", "--model", str(out / "best"), stdin="yesterday alice smith went to paris\n\nbob met rome\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["yesterday/O alice/B-PER smith/I-PER went/O to/O paris/B-LOC",
                                          "bob/B-PER met/O rome/B-LOC"]
    as_json = cli("predict", "--model", str(out / "best"), "--format", "jsonl", stdin="carol jones in oslo\n")
    assert json.loads(as_json.stdout) == {"line": 1, "text": "carol jones in oslo", "words": ["carol", "jones", "in",
                                          "oslo"], "tags": ["B-PER", "I-PER", "O", "B-LOC"]}


@pytest.mark.slow
@pytest.mark.parametrize("case", ["bad columns", "unseen tag", "missing file", "no validation"])
def test_bad_input_is_one_line_and_exit_2(case, model_dir, data, tmp_path):
    train, validation = data / "train.conll", tmp_path / "dev.conll"
    if case == "bad columns":
        validation.write_text("alice B-PER\nwent O extra\n")
        expected = f"{validation}:2: 3 columns, the file's first line has 2"
    elif case == "unseen tag":
        validation.write_text("alice B-ORG\n")
        expected = f"{validation}:1: tag 'B-ORG' is not in the training data"
    elif case == "missing file":
        expected = f"{validation}: file not found"
    args = ["--train", str(train)] + ([] if case == "no validation" else ["--validation", str(validation)])
    if case == "no validation":
        expected = "--train and --validation: both files are needed"
    result = cli("finetune", "tokens", "--model", str(model_dir), *args, f"output.dir={tmp_path / 'run'}")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and expected in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.parametrize("command", ["tokens", "classify"])
def test_a_hub_dataset_without_a_network_is_one_line_and_exit_2(command, model_dir, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "-m", "encoderkit", "finetune", command, "--model", str(model_dir),
                             "--hub", "conll2003", f"output.dir={tmp_path / 'run'}"],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: could not load 'conll2003' (train) from the Hugging Face hub")
    assert "pass local files instead" in result.stderr and len(result.stderr.strip().splitlines()) == 1


# I-BERT's QAT settings (the bundled quantize-glue recipe), one short epoch.
QUICK_QAT = ["quantize.max_seq_length=32", "train.batch_size=16", "quantize.task_batch_size={}", "quantize.epochs=1",
             "quantize.calibration_batches=4", "train.log_every=5"]


@pytest.mark.slow
def test_quantize_runs_qat_on_the_token_head_and_the_integer_dir_tags_words(trained, data, tmp_path):
    """`quantize` takes the `finetune tokens` run dir (its best/) and the same tagged files; the table and
    results.json hold accuracy and entity scores of FP32, QAT and the integer-only model (ELECTRA-Small's layout:
    the embedding projection is quantized too)."""
    out, _, _ = trained
    run = tmp_path / "int8"
    result = cli("quantize", "--model", str(out), "--train", str(data / "train.conll"), "--validation",
                 str(data / "dev.conll"), *QUICK_QAT, f"output.dir={run}")
    assert result.returncode == 0, result.stderr
    results = json.loads((run / "results.json").read_text())
    assert results["model"] == str(out / "best") and results["architecture"] == "ElectraForTokenClassification"
    assert results["freshly_initialised"] == []  # the token classifier maps onto I-BERT's
    f1 = {name: scores["validation"]["f1"] for name, scores in results["scores"].items()}
    assert set(f1) == {"fp32", "calibrated", "qat", "integer"}
    assert f1["fp32"] >= 0.98 and f1["qat"] >= 0.98 and abs(f1["integer"] - f1["qat"]) <= 0.01
    assert all("accuracy" in scores["validation"] for scores in results["scores"].values())
    assert "f1 - FP32" in result.stdout and "integer-only" in result.stdout
    assert json.loads((run / "qat" / "config.json").read_text())["id2label"]["1"] == "B-PER"
    tagged = cli("predict", "--model", str(run / "integer"), stdin="yesterday alice smith went to paris\n")
    assert tagged.returncode == 0, tagged.stderr
    assert tagged.stdout == "yesterday/O alice/B-PER smith/I-PER went/O to/O paris/B-LOC\n"


@pytest.fixture(scope="module")
def untrained(model_dir, tmp_path_factory):
    """A token classifier with the task's tags and a sequence classifier, as `finetune` saves them (untrained)."""
    config = dict(vocab_size=json.loads((model_dir / "config.json").read_text())["vocab_size"], **TINY)
    tags = dict(enumerate(["B-LOC", "B-PER", "I-PER", "O"]))
    dirs = {}
    for name, model in (("tokens", ElectraForTokenClassification(ElectraConfig(**config, num_labels=4,
                                                                               id2label=tags))),
                        ("sequence", ElectraForSequenceClassification(ElectraConfig(**config)))):
        dirs[name] = tmp_path_factory.mktemp(name)
        save_pretrained(model, dirs[name])
        Tokenizer.load(model_dir).save(dirs[name])
    return dirs


@pytest.mark.parametrize("case", ["token classifier with --task", "sentence classifier with files",
                                  "tag the classifier lacks", "neither"])
def test_quantize_bad_input_is_one_line_and_exit_2(case, untrained, data, tmp_path):
    out = untrained["tokens"]
    files = ["--train", str(data / "train.conll"), "--validation", str(data / "dev.conll")]
    if case == "token classifier with --task":
        args, expected = ["--model", str(out), "--task", "sst2", *files], "--task/--data-dir: a token classifier"
    elif case == "sentence classifier with files":
        args = ["--model", str(untrained["sequence"]), *files]
        expected = "holds a sequence classifier (ElectraForSequenceClassification): give its GLUE task with --task"
    elif case == "tag the classifier lacks":
        other = tmp_path / "other.conll"
        other.write_text("alice B-ORG\n")
        args = ["--model", str(out), "--train", str(other), "--validation", str(data / "dev.conll")]
        expected = f"{other}:1: tag 'B-ORG' is not in the classifier's id2label (its tags: B-LOC, B-PER, I-PER, O)"
    else:
        args, expected = ["--model", str(out)], "--task: give the GLUE task of a sequence classifier, or --train"
    result = cli("quantize", *args, "quantize.max_seq_length=32", f"output.dir={tmp_path / 'run'}")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and expected in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
