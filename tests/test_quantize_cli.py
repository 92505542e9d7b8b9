"""`encoderkit quantize` and `encoderkit predict` end to end: a tiny BERT fine-tuned on a generated task is
quantized (calibration, QAT through the loop, integer-only export) and keeps its dev accuracy; predict answers
stdin from the float and from the integer-only model dir; bad input gets one line and exit 2."""

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from rich.console import Console
from test_finetune_cli import keyword_sentences

from encoderkit.data.tokenizer import Tokenizer
from encoderkit.models.albert import AlbertConfig, AlbertForSequenceClassification, AlbertModel
from encoderkit.models.electra import (
    BertConfig,
    BertModel,
    ElectraConfig,
    ElectraForPreTraining,
    ElectraForSequenceClassification,
)
from encoderkit.models.hf_format import load_pretrained, save_pretrained
from encoderkit.recipes import load_quantize_recipe

# As tests/test_finetune_cli.py: large initial weights and no dropout, so a random tiny encoder learns the task in
# a few dozen steps.
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
            initializer_range=0.2)
# Short runs of the bundled recipe: I-BERT's learning rate and schedule, fewer and smaller batches.
QUICK = ["quantize.max_seq_length=16", "train.batch_size=8", "quantize.task_batch_size={}", "quantize.epochs=2",
         "quantize.calibration_batches=4", "train.log_every=5"]


def cli(*args, stdin=None):
    # One intra-op thread (a busy shared machine); no torch.compile: the integer chains then run eagerly, with the
    # same integers, instead of compiling for every batch shape of these tiny runs.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCHDYNAMO_DISABLE": "1"}
    return subprocess.run([sys.executable, "-m", "encoderkit", *args], capture_output=True, text=True, timeout=300,
                          env=env, input=stdin)


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.train([text for text, _ in keyword_sentences(random.Random(1), 300)], vocab_size=40,
                           num_threads=1)


@pytest.fixture(scope="module")
def glue_dir(tmp_path_factory):
    """SST-2 in GLUE's layout, holding the keyword task."""
    rng = random.Random(0)
    data = tmp_path_factory.mktemp("glue")
    (data / "SST-2").mkdir()
    for split, count in (("train", 160), ("dev", 100)):
        rows = "".join(f"{text}\t{label}\n" for text, label in keyword_sentences(rng, count))
        (data / "SST-2" / f"{split}.tsv").write_text("sentence\tlabel\n" + rows)
    test = "".join(f"{i}\t{text}\n" for i, (text, _) in enumerate(keyword_sentences(rng, 4)))
    (data / "SST-2" / "test.tsv").write_text("index\tsentence\n" + test)  # `finetune glue` predicts it
    return data


def save_model(model, tokenizer, path):
    save_pretrained(model, path)
    tokenizer.save(path)
    return path


def fine_tuned(build_encoder, tokenizer, glue_dir, tmp_path_factory, name, epochs=5):
    """`finetune glue` on the keyword task, from the encoder `build_encoder()` makes with the global seed at 0
    (its weights then do not depend on which tests ran before); returns the best checkpoint's dir."""
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp(name)
    save_model(build_encoder(), tokenizer, out / "pretrained")
    result = cli("finetune", "glue", "--task", "sst2", "--model", str(out / "pretrained"), "--data-dir",
                 str(glue_dir), "finetune.max_seq_length=16", "train.batch_size=8", f"finetune.epochs={epochs}",
                 "train.learning_rate=2e-3", "finetune.layerwise_lr_decay=1.0", f"output.dir={out / 'run'}")
    assert result.returncode == 0, result.stderr
    return out / "run" / "sst2" / "best"


@pytest.fixture(scope="module")
def bert_quantized(tokenizer, glue_dir, tmp_path_factory):
    """A fine-tuned tiny BERT, and one `quantize` run of it: (fine-tuned dir, run dir, results, stdout)."""
    best = fine_tuned(lambda: BertModel(BertConfig(vocab_size=tokenizer.vocab_size, **TINY)), tokenizer, glue_dir,
                      tmp_path_factory, "bert")
    out = tmp_path_factory.mktemp("bert-int8") / "run"
    result = cli("quantize", "--model", str(best), "--task", "sst2", "--data-dir", str(glue_dir), *QUICK,
                 f"output.dir={out}")
    assert result.returncode == 0, result.stderr
    return best, out, json.loads((out / "results.json").read_text()), result.stdout


@pytest.mark.slow
def test_quantized_dev_accuracy_within_one_point_of_fp32(bert_quantized):
    _, out, results, stdout = bert_quantized
    accuracy = {name: scores["dev"]["accuracy"] for name, scores in results["scores"].items()}
    assert set(accuracy) == {"fp32", "calibrated", "qat", "integer"}
    assert accuracy["fp32"] >= 0.95  # the task was learned, so the comparison means something
    # Within 1 point; one example in 100 is exactly 1 point, give or take float rounding (1.0000000000000009).
    within_one_point = 1.0 + 1e-9
    assert abs(results["difference_points"]["qat"]) <= within_one_point
    assert abs(results["difference_points"]["integer"]) <= within_one_point
    assert results["difference_points"]["integer"] == pytest.approx(100 * (accuracy["integer"] - accuracy["fp32"]))
    assert results["freshly_initialised"] == []  # BERT's pooler + classifier are I-BERT's classifier head
    assert results["steps_per_epoch"] == 160 // 8 and results["epochs"] == 2
    for row in ("FP32 BertForSequenceClassification", "I-BERT QAT, best epoch", "integer-only", "accuracy - FP32"):
        assert row in stdout, stdout


@pytest.mark.slow
def test_the_run_dir_holds_the_qat_model_in_hf_format_and_the_integer_model(bert_quantized):
    _, out, results, _ = bert_quantized
    config = json.loads((out / "qat" / "config.json").read_text())
    assert config["model_type"] == "ibert" and config["quant_mode"] is True
    assert config["architectures"] == ["IBertForSequenceClassification"]
    assert json.loads((out / "qat" / "eval.json").read_text())["scores"] == results["scores"]["qat"]
    for name in ("model.safetensors", "spiece.model"):
        assert (out / "integer" / name).is_file() and (out / "qat" / name).is_file()
    assert not (out / "integer" / "config.json").exists()  # nothing a float loader would mistake it for
    records = [json.loads(line) for line in (out / "train" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "eval_dev_accuracy" in r] == [20, 40]  # every epoch, through the loop
    assert max(r["lr"] for r in records if "lr" in r) <= 1e-6  # I-BERT's rate, no warmup above it
    assert not (out / "train" / "checkpoints").exists()
    assert (out / "recipe.yaml").read_text().startswith("kind: quantize")


@pytest.mark.slow
def test_the_exported_qat_model_loads_in_transformers(bert_quantized):
    transformers = pytest.importorskip("transformers")
    _, out, _, _ = bert_quantized
    theirs = transformers.IBertForSequenceClassification.from_pretrained(out / "qat").eval()
    ours = load_pretrained(out / "qat", "sequence_classification")
    ids = torch.tensor([[2, 10, 11, 12, 3]])
    with torch.no_grad():
        assert torch.allclose(theirs(ids).logits, ours(ids), atol=1e-5)


@pytest.mark.slow
def test_predict_reads_stdin_with_the_float_qat_and_integer_models(bert_quantized):
    best, out, _, _ = bert_quantized
    lines = ["the good film", "a bad old movie", "music good cast\tscene long"]
    answers = {}
    for name, model_dir in (("fp32", best), ("qat", out / "qat"), ("integer", out / "integer")):
        result = cli("predict", "--model", str(model_dir), "--task", "sst2", "--format", "jsonl",
                     stdin="\n".join(lines) + "\n")
        assert result.returncode == 0, result.stderr
        answers[name] = [json.loads(line) for line in result.stdout.splitlines()]
        assert [a["text"] for a in answers[name]] == lines
        assert [a["label"] for a in answers[name]][:2] == ["1", "0"]  # SST-2's label strings
        assert all(0.5 <= a["score"] <= 1 for a in answers[name])
    assert [a["label"] for a in answers["fp32"]] == [a["label"] for a in answers["qat"]] \
        == [a["label"] for a in answers["integer"]]

    text = cli("predict", "--model", str(out / "integer"), stdin="good acting\na\tb\tc\n")
    assert text.returncode == 1  # one line failed, the others were answered
    assert text.stdout.startswith("1\t") and text.stdout.strip().endswith("\tgood acting")
    # besides a status line while the integer kernels build, if that takes over a second
    assert [line for line in text.stderr.splitlines() if not line.startswith("preparing the integer-only")] == [
        "line 2: more than one tab: give a text, or two texts separated by one tab"]


@pytest.mark.slow
def test_the_benchmark_script_times_each_model_of_a_run_and_sets_them_side_by_side(bert_quantized, tmp_path):
    """benchmarks/bench_quantize_run.py (what `quantize --bench` was), briefly: each side loads and runs its model
    of the run dir in the harness, and the table holds every side. The speed itself is the benchmark's business."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "benchmarks" / "bench_quantize_run.py").is_file():
        pytest.skip("no benchmarks/ beside the tests")
    _, out, _, _ = bert_quantized
    env = {**os.environ, "TORCHDYNAMO_DISABLE": "1", "COLUMNS": "200"}
    result = subprocess.run([sys.executable, "-m", "benchmarks.bench_quantize_run", str(out), "--threads", "1",
                             "--shapes", "2x32", "--warmup", "1", "--repeats", "1", "--json", str(tmp_path / "b.json")],
                            capture_output=True, text=True, timeout=300, env=env, cwd=root)
    assert result.returncode == 0, result.stderr
    sides = json.loads((tmp_path / "b.json").read_text())["timings"]["2x32"]
    expected = {"fp32", "integer", "transformers"}
    assert set(sides) == expected
    ran = {name for name, side in sides.items() if "latency_ms" in side}
    assert ran >= {"fp32", "integer"}, sides
    try:
        import transformers  # noqa: F401
    except ImportError:
        assert "No module named" in sides["transformers"]["error"]
    else:
        assert ran == expected, sides
    for column in ("FP32", "integer-only", "transformers IBert quant_mode", "integer-only / FP32", "2x32", "seq/s"):
        assert column in result.stdout, result.stdout


def test_the_benchmark_table_sets_the_sides_side_by_side(monkeypatch):
    """The table holds every side, errors included, and integer-only's throughput over FP32's."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "benchmarks" / "bench_quantize_run.py").is_file():
        pytest.skip("no benchmarks/ beside the tests")
    monkeypatch.syspath_prepend(str(root))
    from benchmarks.bench_quantize_run import bench_table

    side = {"latency_ms": 10.0, "sequences_per_s": 100.0}
    bench = {"threads": 2, "repeats": 5, "timings": {"1x128": {
        "fp32": side, "integer": {"latency_ms": 5.0, "sequences_per_s": 200.0},
        "transformers": {"error": "ModuleNotFoundError: No module named 'transformers'"}}}}
    console = Console(width=200, record=True)
    console.print(bench_table(bench))
    text = console.export_text()
    assert "10.0 ms" in text and "200.0 seq/s" in text and "2.00x" in text and "No module named" in text


@pytest.mark.slow
def test_an_i_bert_checkpoint_is_quantized_as_it_is(bert_quantized, glue_dir, tmp_path):
    """`quantize`'s own qat/ dir is an I-BERT checkpoint: read as I-BERT in float for FP32, as it is for QAT."""
    _, out, results, _ = bert_quantized
    again = tmp_path / "run"
    result = cli("quantize", "--model", str(out / "qat"), "--task", "sst2", "--data-dir", str(glue_dir), *QUICK,
                 "quantize.epochs=1", f"output.dir={again}")
    assert result.returncode == 0, result.stderr
    second = json.loads((again / "results.json").read_text())
    assert second["architecture"] == "IBertForSequenceClassification" and second["freshly_initialised"] == []
    assert abs(second["difference_points"]["integer"]) <= 1.0 + 1e-9  # 1 point, give or take float rounding
    assert "FP32 IBertForSequenceClassification" in result.stdout


def quantized_near_fp32_and_qat(results: dict) -> None:
    """The task was learned (FP32 >= 95%), QAT kept it, the integer-only model is within 1 point of QAT."""
    accuracy = {name: scores["dev"]["accuracy"] for name, scores in results["scores"].items()}
    assert accuracy["fp32"] >= 0.95 and accuracy["qat"] >= 0.95
    assert abs(accuracy["integer"] - accuracy["qat"]) <= 0.01


@pytest.mark.slow
@pytest.mark.parametrize("embedding_size", [32, 16], ids=["no-projection", "projection"])
def test_an_electra_classifier_is_quantized_with_a_new_head(embedding_size, tokenizer, glue_dir, tmp_path_factory):
    """ELECTRA's classifier (gelu) does not map onto I-BERT's (tanh): the head starts fresh and trains at
    quantize.new_head_learning_rate while the encoder keeps I-BERT's QAT rate. ELECTRA-Small's layout
    (embedding_size < hidden_size) is quantized with its projection."""
    config = ElectraConfig(vocab_size=tokenizer.vocab_size, embedding_size=embedding_size, **TINY)
    best = fine_tuned(lambda: ElectraForPreTraining(config), tokenizer, glue_dir, tmp_path_factory,
                      f"electra-{embedding_size}")
    out = tmp_path_factory.mktemp(f"electra-{embedding_size}-int8") / "run"
    result = cli("quantize", "--model", str(best), "--task", "sst2", "--data-dir", str(glue_dir), *QUICK,
                 "quantize.epochs=3", "quantize.new_head_learning_rate=3e-3", f"output.dir={out}")
    assert result.returncode == 0, result.stderr
    results = json.loads((out / "results.json").read_text())
    assert sorted(results["freshly_initialised"]) == ["classifier.dense.bias", "classifier.dense.weight",
                                                      "classifier.out_proj.bias", "classifier.out_proj.weight"]
    quantized_near_fp32_and_qat(results)
    assert (json.loads((out / "qat" / "config.json").read_text())["embedding_size"] is None) == (embedding_size == 32)


@pytest.mark.slow
@pytest.mark.parametrize("groups", [1, 2])
def test_an_albert_classifier_is_quantized_with_shared_layers(groups, tokenizer, glue_dir, tmp_path_factory):
    """ALBERT: embedding projection and 4 layers running 1 or 2 groups' weights; its pooler + classifier are
    I-BERT's classifier head, so nothing starts fresh."""
    config = AlbertConfig(vocab_size=tokenizer.vocab_size, embedding_size=16, num_hidden_groups=groups,
                          **{**TINY, "num_hidden_layers": 4})
    # Shared layers learn the task more slowly: in 5 epochs one of four seeds stayed below 95%, in 10 none did.
    best = fine_tuned(lambda: AlbertModel(config), tokenizer, glue_dir, tmp_path_factory, f"albert-{groups}",
                      epochs=10)
    out = tmp_path_factory.mktemp(f"albert-{groups}-int8") / "run"
    result = cli("quantize", "--model", str(best), "--task", "sst2", "--data-dir", str(glue_dir), *QUICK,
                 f"output.dir={out}")
    assert result.returncode == 0, result.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["freshly_initialised"] == [] and "integer_export_error" not in results
    quantized_near_fp32_and_qat(results)
    qat = json.loads((out / "qat" / "config.json").read_text())
    assert (qat["num_hidden_layers"], qat["num_hidden_groups"], qat["embedding_size"]) == (4, groups, 16)


def test_bundled_recipe_holds_i_berts_settings():
    recipe = load_quantize_recipe("quantize-glue")
    settings, train = recipe.quantize, recipe.train
    assert (train.learning_rate, settings.warmup_fraction, settings.act_range_momentum) == (1e-6, 0.0, 0.95)
    assert (settings.epochs, settings.task_epochs) == (12, {"mnli": 7})
    assert train.batch_size == 32 and settings.task_batch_size == {"rte": 16, "mrpc": 16, "cola": 16, "stsb": 16}
    assert (train.weight_decay, train.adam_beta2, train.adam_epsilon) == (0.1, 0.98, 1e-6)


@pytest.fixture(scope="module")
def unusable_models(tokenizer, tmp_path_factory):
    """Model dirs that cannot be quantized, each with the line its error must hold."""
    root = tmp_path_factory.mktemp("unusable")
    vocab = tokenizer.vocab_size
    albert = save_model(AlbertForSequenceClassification(AlbertConfig(vocab_size=vocab, embedding_size=16, **TINY)),
                        tokenizer, root / "albert")
    other_family = shutil.copytree(albert, root / "deberta")
    config = json.loads((other_family / "config.json").read_text())
    (other_family / "config.json").write_text(json.dumps({**config, "model_type": "deberta-v2"}))
    encoder_only = save_model(ElectraForPreTraining(ElectraConfig(vocab_size=vocab, embedding_size=32, **TINY)),
                              tokenizer, root / "discriminator")
    three_classes = save_model(ElectraForSequenceClassification(ElectraConfig(vocab_size=vocab, embedding_size=32,
                                                                              num_labels=3, **TINY)),
                               tokenizer, root / "mnli")
    return {
        "missing model dir": (root / "nowhere", "sst2", "no config.json"),
        "unknown task": (albert, "sst3", "unknown GLUE task 'sst3'"),
        "another family": (other_family, "sst2", "model_type 'deberta-v2' cannot be quantized"),
        "not a classifier": (encoder_only, "sst2", "holds no fine-tuned classifier"),
        "classifier of another task": (three_classes, "sst2", "the classifier has 3 outputs, task sst2 needs 2"),
    }


@pytest.mark.parametrize("case", ["missing model dir", "unknown task", "another family", "not a classifier",
                                  "classifier of another task"])
def test_bad_input_is_one_line_and_exit_2(case, unusable_models, glue_dir, tmp_path):
    model, task, expected = unusable_models[case]
    result = cli("quantize", "--model", str(model), "--task", task, "--data-dir", str(glue_dir), *QUICK,
                 f"output.dir={tmp_path / 'run'}")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and expected in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()  # nothing written


def test_predict_refuses_what_it_cannot_answer(unusable_models, tmp_path):
    encoder_only = unusable_models["not a classifier"][0]
    three_classes = unusable_models["classifier of another task"][0]
    for args, expected in ((["--model", str(tmp_path)], "is not a model directory"),
                           (["--model", str(encoder_only)], "holds no classifier"),
                           (["--model", str(encoder_only)], "(ElectraForPreTraining): use `encoderkit rtd"),
                           (["--model", str(three_classes), "--task", "sst2"], "sst2 has 2 output(s), the model 3"),
                           (["--model", str(three_classes), "--format", "csv"], "--format: 'csv' is not one of")):
        result = cli("predict", *args, stdin="a film\n")
        assert result.returncode == 2 and result.stderr.startswith("error: "), result.stderr
        assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
