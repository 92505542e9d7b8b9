"""`encoderkit finetune glue` end to end on GLUE-layout fixtures and on a generated task a tiny model must
learn; the layer-wise learning rates and the resumable batch order; bad input gets one line and exit 2."""

import csv
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from encoderkit.data.classification import EncodedExamples, EpochBatches
from encoderkit.data.glue import TASKS
from encoderkit.data.tokenizer import Tokenizer
from encoderkit.models.albert import AlbertConfig, AlbertForPreTraining, AlbertForSequenceClassification
from encoderkit.models.electra import ElectraConfig, ElectraForPreTraining, ElectraForSequenceClassification
from encoderkit.models.hf_format import save_pretrained
from encoderkit.recipes import dump_yaml, load_finetune_recipe
from encoderkit.train.optim import layerwise_learning_rate, parameter_groups

FIXTURES = Path(__file__).parent / "fixtures"
GLUE, BROKEN = FIXTURES / "glue", FIXTURES / "glue_broken"
# Larger initial weights and no dropout: a random tiny encoder then learns the generated task in a few dozen steps.
TINY = dict(embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
            initializer_range=0.2)
# Tiny runs of the bundled recipe: short sequences, batches of 2, one epoch (also for RTE and STS-B).
QUICK = ["finetune.max_seq_length=48", "train.batch_size=2", "finetune.epochs=1", "finetune.task_epochs={}",
         "train.log_every=1"]
# The generated task: a sentence is positive exactly when it holds "good" (the negatives hold "bad").
FILLER = "the a film movie plot actor story scene cast music long short old new".split()


def cli(*args):
    # One intra-op thread: on a busy shared machine two threads spin waiting for each other, and these
    # tiny models ran 5x slower with them.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "encoderkit", *args], capture_output=True, text=True, timeout=300,
                          env=env)


def keyword_sentences(rng, count):
    sentences = []
    for _ in range(count):
        label = rng.randrange(2)
        words = rng.sample(FILLER, 4) + ["good" if label else "bad"]
        rng.shuffle(words)
        sentences.append((" ".join(words), label))
    return sentences


def fixture_texts():
    for path in GLUE.glob("*/*.tsv"):
        with open(path, encoding="utf-8-sig", newline="") as file:
            for row in csv.reader(file, delimiter="\t", quoting=csv.QUOTE_NONE):
                yield from (cell for cell in row if " " in cell)


@pytest.fixture(scope="module")
def tokenizer():
    texts = list(fixture_texts()) + [text for text, _ in keyword_sentences(random.Random(1), 300)]
    return Tokenizer.train(texts, vocab_size=200, num_threads=1)


@pytest.fixture(scope="module")
def electra_dir(tokenizer, tmp_path_factory):
    """A tiny ELECTRA discriminator checkpoint (no classifier yet) with its tokenizer."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("electra")
    save_pretrained(ElectraForPreTraining(ElectraConfig(vocab_size=tokenizer.vocab_size, **TINY)), path)
    tokenizer.save(path)
    return path


@pytest.fixture(scope="module")
def albert_dir(tokenizer, tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("albert")
    save_pretrained(AlbertForPreTraining(AlbertConfig(vocab_size=tokenizer.vocab_size, **TINY)), path)
    tokenizer.save(path)
    return path


@pytest.fixture(scope="module")
def all_tasks(electra_dir, tmp_path_factory):
    """One `--task all` run over the fixtures: every kind of task end to end."""
    out = tmp_path_factory.mktemp("glue-all") / "run"
    result = cli("finetune", "glue", "--task", "all", "--model", str(electra_dir), "--data-dir", str(GLUE),
                 "glue-electra-small", *QUICK, f"output.dir={out}")
    assert result.returncode == 0, result.stderr
    return out, json.loads((out / "results.json").read_text()), result.stdout


def submission(path):
    lines = path.read_text().splitlines()
    assert lines[0] == "index\tprediction"
    return dict(line.split("\t") for line in lines[1:])


def fixture_rows(task, split):
    return sum(1 for line in (GLUE / TASKS[task].glue_dir / f"{split}.tsv").read_text().splitlines()[1:] if line)


@pytest.mark.slow
@pytest.mark.parametrize("task, submission_file", [("sst2", "SST-2.tsv"), ("cola", "CoLA.tsv"),
                                                   ("rte", "RTE.tsv"), ("mrpc", "MRPC.tsv")])
def test_classification_tasks_end_to_end(all_tasks, task, submission_file):
    out, results, _ = all_tasks
    spec = TASKS[task]
    result = results["tasks"][task]
    assert set(result["median"]["dev"]) >= set(spec.metrics)
    assert result["seeds"][0]["seed"] == 0 and result["seeds"][0]["epoch"] >= 1
    predictions = submission(out / "predictions" / submission_file)
    assert len(predictions) == fixture_rows(task, "test") and set(predictions.values()) <= set(spec.labels)
    best = out / task / "best"
    for name in ("config.json", "model.safetensors", "spiece.model", "eval.json"):
        assert (best / name).is_file(), name
    config = json.loads((best / "config.json").read_text())
    assert config["num_labels"] == 2 and config["architectures"] == ["ElectraForSequenceClassification"]
    assert (out / task / "seed-0" / "result.json").is_file()
    assert not (out / task / "seed-0" / "checkpoints").exists()  # removed once the seed finished


@pytest.mark.slow
def test_steps_follow_the_training_set_and_pairs_are_swapped(all_tasks):
    _, results, _ = all_tasks
    tasks = results["tasks"]
    assert tasks["mrpc"]["train_examples"] == 2 * fixture_rows("mrpc", "train")  # swap_pairs: [mrpc, stsb]
    assert tasks["qqp"]["train_examples"] == fixture_rows("qqp", "train")
    assert tasks["rte"]["steps_per_epoch"] == fixture_rows("rte", "train") // 2  # full batches of 2 only
    assert tasks["rte"]["epochs"] == 1


@pytest.mark.parametrize("recipe, learning_rate, published", [("glue-electra-small", 3e-4, "electra-small++"),
                                                              ("glue-electra-base", 1e-4, "electra-base++"),
                                                              ("glue-albert-base", 1e-4, "albert-base-v2")])
def test_bundled_recipes_hold_the_electra_protocol(recipe, learning_rate, published):
    loaded = load_finetune_recipe(recipe)
    settings, train = loaded.finetune, loaded.train
    assert (settings.epochs, settings.task_epochs, settings.warmup_fraction) == (3, {"rte": 10, "stsb": 10}, 0.1)
    assert (settings.layerwise_lr_decay, settings.max_seq_length, settings.published) == (0.8, 128, published)
    assert (train.learning_rate, train.batch_size, train.weight_decay) == (learning_rate, 32, 0)
    assert train.adam_epsilon == 1e-6 and settings.swap_pairs == ["mrpc", "stsb"]


def test_a_shown_finetune_recipe_loads_back(tmp_path):
    shown = cli("recipes", "show", "glue-electra-base", "finetune.task_epochs.cola=4", "train.seed=3")
    assert shown.returncode == 0, shown.stderr
    assert "kind: finetune" in shown.stdout and "max_steps" not in shown.stdout  # computed per task
    path = tmp_path / "mine.yaml"
    path.write_text(shown.stdout)
    assert dump_yaml(load_finetune_recipe(str(path))) == shown.stdout
    listed = cli("recipes", "ls")
    assert "glue-electra-small\tfinetune" in listed.stdout and "albert-tiny\tmlm_sop" in listed.stdout
    fixed = cli("recipes", "validate", str(path), "train.max_steps=10")
    assert fixed.returncode == 2 and "train.max_steps: computed per task" in fixed.stderr


@pytest.mark.slow
def test_regression_end_to_end(all_tasks):
    out, results, _ = all_tasks
    assert set(results["tasks"]["stsb"]["median"]["dev"]) == {"pearson", "spearman", "pearson_spearman_mean"}
    scores = submission(out / "predictions" / "STS-B.tsv")
    assert len(scores) == fixture_rows("stsb", "test")
    assert all(len(value.split(".")[1]) == 3 for value in scores.values())  # floats with 3 decimals
    config = json.loads((out / "stsb" / "best" / "config.json").read_text())
    assert config["num_labels"] == 1 and config["problem_type"] == "regression"


@pytest.mark.slow
def test_mnli_is_scored_on_both_dev_sets_and_predicts_both_test_sets(all_tasks):
    out, results, _ = all_tasks
    mnli = results["tasks"]["mnli"]
    assert set(mnli["seeds"][0]["scores"]) == {"dev_matched", "dev_mismatched"}
    assert set(mnli["best_checkpoint"]["scores"]) == {"dev_matched", "dev_mismatched"}
    for name in ("MNLI-m.tsv", "MNLI-mm.tsv"):
        assert set(submission(out / "predictions" / name).values()) <= {"entailment", "neutral", "contradiction"}
    records = [json.loads(line) for line in (out / "mnli" / "seed-0" / "metrics.jsonl").read_text().splitlines()]
    evaluated = [r for r in records if "eval_dev_matched_accuracy" in r]
    assert evaluated and all("eval_dev_mismatched_accuracy" in r for r in evaluated)


@pytest.mark.slow
def test_the_final_table_sets_ours_beside_the_published_scores(all_tasks):
    _, results, stdout = all_tasks
    rows = {(row["task"], row["split"]): row for row in results["comparison"]["rows"]}
    assert len(rows) == 10  # nine tasks, MNLI twice
    assert rows[("rte", "dev")]["published"] == 66.7 and rows[("stsb", "dev")]["metric"] == "spearman"
    assert rows[("wnli", "dev")]["published"] is None
    average = results["comparison"]["average"]
    assert average["tasks"] == ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte"]
    assert average["published"] == pytest.approx(statistics.mean([57.0, 91.2, 88.0, 87.5, 89.0, 81.3, 88.4, 66.7]))
    assert "published: electra-small++" in stdout and "66.7" in stdout and "average" in stdout


@pytest.mark.slow
def test_a_tiny_model_learns_a_generated_task(electra_dir, tmp_path):
    """SST-2 layout; the label is decided by one keyword. High dev accuracy means head, labels and loss fit.

    No layer-wise decay: this encoder is randomly initialised, so its lower layers have nothing to keep."""
    rng = random.Random(0)
    task_dir = tmp_path / "data" / "SST-2"
    task_dir.mkdir(parents=True)
    for split, count in (("train", 160), ("dev", 100)):
        rows = "".join(f"{text}\t{label}\n" for text, label in keyword_sentences(rng, count))
        (task_dir / f"{split}.tsv").write_text("sentence\tlabel\n" + rows)
    test = keyword_sentences(rng, 40)
    (task_dir / "test.tsv").write_text("index\tsentence\n" + "".join(f"{i}\t{t}\n" for i, (t, _) in enumerate(test)))

    out = tmp_path / "run"
    result = cli("finetune", "glue", "--task", "sst2", "--model", str(electra_dir), "--data-dir",
                 str(tmp_path / "data"), "finetune.max_seq_length=16", "train.batch_size=8", "finetune.epochs=3",
                 "train.learning_rate=2e-3", "finetune.layerwise_lr_decay=1.0", f"output.dir={out}")
    assert result.returncode == 0, result.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["tasks"]["sst2"]["median"]["dev"]["accuracy"] >= 0.95
    predictions = submission(out / "predictions" / "SST-2.tsv")
    correct = sum(predictions[str(i)] == str(label) for i, (_, label) in enumerate(test))
    assert correct >= 0.9 * len(test)


@pytest.mark.slow
def test_seeds_report_median_and_range_and_resume_keeps_finished_seeds(albert_dir, tmp_path):
    out = tmp_path / "run"
    args = ["finetune", "glue", "--task", "stsb", "--model", str(albert_dir), "--data-dir", str(GLUE),
            "glue-albert-base", *QUICK, "finetune.task_epochs={}", f"output.dir={out}", "--seeds", "3"]
    first = cli(*args)
    assert first.returncode == 0, first.stderr
    stsb = json.loads((out / "results.json").read_text())["tasks"]["stsb"]
    assert [seed["seed"] for seed in stsb["seeds"]] == [0, 1, 2]
    pearsons = [seed["scores"]["dev"]["pearson"] for seed in stsb["seeds"]]
    assert stsb["median"]["dev"]["pearson"] == statistics.median(pearsons)
    assert stsb["min"]["dev"]["pearson"] == min(pearsons) and stsb["max"]["dev"]["pearson"] == max(pearsons)
    assert "seeds min-max" in first.stdout
    assert json.loads((out / "stsb" / "best" / "eval.json").read_text())["scores"]["dev"]["pearson_spearman_mean"] \
        == max(seed["scores"]["dev"]["pearson_spearman_mean"] for seed in stsb["seeds"])

    again = cli(*args)
    assert again.returncode == 2 and "pass --resume" in again.stderr
    resumed = cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((out / "results.json").read_text())["tasks"]["stsb"]["seeds"] == stsb["seeds"]
    assert "seed 0" not in resumed.stderr  # nothing was trained again


def _copy_glue(tmp_path, task_dir):
    data = tmp_path / "glue"
    shutil.copytree(GLUE / task_dir, data / task_dir)
    return data


@pytest.mark.parametrize("case", ["unknown task", "missing data dir", "missing file", "labels not of the task",
                                  "not a model dir", "classifier for other labels"])
def test_bad_input_is_one_line_and_exit_2(case, electra_dir, tokenizer, tmp_path):
    task, model, data = "sst2", electra_dir, GLUE
    if case == "unknown task":
        task, expected = "sst3", "unknown GLUE task 'sst3'; valid tasks: cola, sst2"
    elif case == "missing data dir":
        data, expected = tmp_path / "nowhere", "no folder for GLUE task sst2"
    elif case == "missing file":
        data = _copy_glue(tmp_path, "SST-2")
        (data / "SST-2" / "dev.tsv").unlink()
        expected = f"{data / 'SST-2' / 'dev.tsv'}: file not found"
    elif case == "labels not of the task":
        data, expected = BROKEN / "bad_label", "is not one of 0, 1 (task sst2)"
    elif case == "not a model dir":
        model, expected = tmp_path, "--model:"
    else:  # a checkpoint already fine-tuned on three classes (MNLI), used for a two-class task
        model = tmp_path / "mnli-model"
        save_pretrained(ElectraForSequenceClassification(ElectraConfig(vocab_size=tokenizer.vocab_size, num_labels=3,
                                                                       **TINY)), model)
        tokenizer.save(model)
        expected = "classifier.out_proj.weight has shape (3, 32), the model expects (2, 32)"
    result = cli("finetune", "glue", "--task", task, "--model", str(model), "--data-dir", str(data),
                 f"output.dir={tmp_path / 'run'}", *QUICK)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and expected in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


# ---- in-process pieces -------------------------------------------------------------------------------


def _lrs_by_parameter(model, decay=0.5):
    groups = parameter_groups(model, weight_decay=0.01,
                              learning_rate=layerwise_learning_rate(model, learning_rate=1.0, decay=decay))
    lrs = {id(p): group["lr"] for group in groups for p in group["params"]}
    no_decay = {id(p) for group in groups if group["weight_decay"] == 0.0 for p in group["params"]}
    return {name: (lrs[id(p)], id(p) in no_decay) for name, p in model.named_parameters()}


def test_layerwise_lr_decay_follows_electra_depths():
    model = ElectraForSequenceClassification(ElectraConfig(vocab_size=50, **{**TINY, "num_hidden_layers": 3}))
    lrs = _lrs_by_parameter(model)
    assert lrs["classifier.out_proj.weight"] == (1.0, False) and lrs["classifier.dense.bias"] == (1.0, True)
    # no pooler in ELECTRA, yet its step stays (google-research/electra issue #51): top layer 0.5^2
    assert lrs["encoder.layers.2.attention.query.weight"] == (0.5**2, False)
    assert lrs["encoder.layers.0.feed_forward.up.weight"][0] == 0.5**4
    assert lrs["encoder.layers.0.attention_norm.weight"] == (0.5**4, True)
    assert lrs["encoder.embeddings.word_embeddings.weight"][0] == lrs["encoder.embedding_projection.weight"][0] \
        == 0.5**5


def test_albert_shared_layers_are_one_group_between_embeddings_and_pooler():
    model = AlbertForSequenceClassification(AlbertConfig(vocab_size=50, **TINY))
    lrs = {name: lr for name, (lr, _) in _lrs_by_parameter(model).items()}
    assert lrs["classifier.weight"] == 1.0 and lrs["encoder.pooler.dense.weight"] == 0.5
    assert {lr for name, lr in lrs.items() if ".layer_groups." in name} == {0.5**2}
    assert lrs["encoder.embeddings.word_embeddings.weight"] == lrs["encoder.embedding_projection.bias"] == 0.5**3


def test_epoch_batches_reshuffle_each_epoch_and_resume_exactly():
    count = 10
    examples = EncodedExamples(torch.arange(count)[:, None].int(), torch.zeros(count, 1, dtype=torch.int8),
                               torch.ones(count, dtype=torch.long), torch.arange(count))
    batches = EpochBatches(examples, batch_size=3, batches_per_epoch=3, seed=7)
    drawn = [next(batches)["labels"].tolist() for _ in range(7)]
    first_epoch, second_epoch = sum(drawn[:3], []), sum(drawn[3:6], [])
    assert len(set(first_epoch)) == 9 and first_epoch != second_epoch  # full batches only, a new order
    assert batches.state_dict() == {"epoch": 2, "batch": 1}

    resumed = EpochBatches(examples, batch_size=3, batches_per_epoch=3, seed=7)
    resumed.load_state_dict({"epoch": 1, "batch": 2})
    assert [next(resumed)["labels"].tolist() for _ in range(2)] == drawn[5:7]
