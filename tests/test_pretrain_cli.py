"""End to end from the command line: pretrain a tiny ALBERT, resume exactly, fill masks, bad input."""

import json
import random
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

WORDS = ("the a cat dog sees likes runs sleeps on under big small red blue house garden river tree "
         "quickly slowly and but then because morning evening").split()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    docs = []
    for _ in range(60):
        sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 10))).capitalize() + "."
                     for _ in range(rng.randint(3, 8))]
        docs.append("\n".join(sentences))
    path.write_text("\n\n".join(docs) + "\n")
    return path


def tiny(corpus, out, *extra):
    return ["albert-tiny", f"data.source={corpus}", f"output.dir={out}", "tokenizer.vocab_size=50",
            "tokenizer.sample_documents=60", "model.embedding_size=16", "model.hidden_size=32",
            "model.num_attention_heads=2", "model.intermediate_size=64", "model.num_hidden_layers=2",
            "data.max_seq_length=32", "train.batch_size=4", "train.max_steps=6", "train.save_every=3",
            "train.warmup_steps=2", "train.log_every=1", *extra]


def cli(*args, stdin=""):
    return subprocess.run([sys.executable, "-m", "encoderkit", *args], input=stdin, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def run_dir(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "full"
    # steps 1-4 on shorter rows (4, 4, 8, 16 tokens): the step-3 checkpoint that the resume test starts from is
    # in the middle of the length warmup
    result = cli("pretrain", *tiny(corpus, out, "data.length_warmup_steps=4"))
    assert result.returncode == 0, result.stderr
    return out


@pytest.mark.slow
def test_pretrain_writes_a_complete_run_dir(run_dir):
    for name in ("config.json", "model.safetensors", "spiece.model", "recipe.yaml", "versions.json", "metrics.jsonl"):
        assert (run_dir / name).is_file(), name
    assert json.loads((run_dir / "config.json").read_text())["model_type"] == "albert"
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert {"loss", "mlm_acc", "unigram_acc", "sop_acc", "tokens_per_s"} <= set(records[-1])
    assert "sop_acc" not in records[3]  # the warmup's pieces of rows have no sentence order
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step-00000003", "step-00000006"]


def error_lines(result):
    """The error lines of a failed command: exactly one is expected, and no traceback."""
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def strict_json_lines(path):
    """metrics.jsonl parsed as strict JSON (NaN and Infinity are not JSON)."""
    def refuse(constant):
        raise ValueError(f"{constant} in {path}")
    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_resume_continues_exactly(run_dir, tmp_path):
    # The run stopped after step 6 was being saved: its newest checkpoint is damaged, so resume falls back to
    # step 3 and must give the 6-step weights bit for bit. Only output.dir is given: the run's recorded
    # recipe.yaml supplies the other overrides it was started with.
    part = tmp_path / "part"
    shutil.copytree(run_dir, part)
    optimizer_file = part / "checkpoints" / "step-00000006" / "optimizer.pt"
    optimizer_file.write_bytes(optimizer_file.read_bytes()[:100])
    (part / "model.safetensors").unlink()
    result = cli("pretrain", "albert-tiny", f"output.dir={part}", "--resume")
    assert result.returncode == 0, result.stderr
    assert "skipping" in result.stderr and "resumed from step 3" in result.stderr
    full, resumed = load_file(str(run_dir / "model.safetensors")), load_file(str(part / "model.safetensors"))
    assert full.keys() == resumed.keys()
    for name in full:
        assert torch.equal(full[name], resumed[name]), name
    # Steps 4-6 ran twice; metrics.jsonl holds each step once, the same records but for the timing.
    records = strict_json_lines(part / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in records] == [r["loss"] for r in strict_json_lines(run_dir / "metrics.jsonl")]
    assert (part / "recipe.yaml").read_text() == (run_dir / "recipe.yaml").read_text().replace(str(run_dir), str(part))


@pytest.mark.slow
@pytest.mark.parametrize("override, key", [("train.batch_size=8", "train.batch_size"),
                                           ("data.max_seq_length=16", "data.max_seq_length"),
                                           ("model.hidden_size=64", "model.hidden_size"),
                                           ("tokenizer.vocab_size=60", "tokenizer.vocab_size")])
def test_resume_refuses_what_cannot_change_and_leaves_the_run_dir_alone(run_dir, tmp_path, override, key):
    part = tmp_path / "part"
    shutil.copytree(run_dir, part)
    before = {p: p.read_bytes() for p in part.rglob("*") if p.is_file()}
    result = cli("pretrain", "albert-tiny", f"output.dir={part}", override, "--resume")
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert line.startswith(f"error: {key}: the run in") and "cannot change on resume" in line
    assert {p: p.read_bytes() for p in part.rglob("*") if p.is_file()} == before


@pytest.mark.slow
def test_resume_without_a_complete_checkpoint_leaves_the_run_dir_alone(run_dir, tmp_path):
    part = tmp_path / "part"
    shutil.copytree(run_dir, part)
    for checkpoint in (part / "checkpoints").iterdir():
        (checkpoint / "manifest.json").unlink()
    before = {p: p.read_bytes() for p in part.rglob("*") if p.is_file()}
    result = cli("pretrain", "albert-tiny", f"output.dir={part}", "--resume")
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert "no complete checkpoint" in line
    assert {p: p.read_bytes() for p in part.rglob("*") if p.is_file()} == before


def tiny_from(run_dir, out):
    """The same recipe as the original run, read back from its run dir."""
    return [str(run_dir / "recipe.yaml"), f"output.dir={out}"]


@pytest.mark.slow
def test_a_run_dir_with_checkpoints_is_not_overwritten(run_dir):
    result = cli("pretrain", *tiny_from(run_dir, run_dir))
    assert result.returncode == 2
    assert "already holds checkpoints" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_our_checkpoint_loads_in_transformers(run_dir):
    transformers = pytest.importorskip("transformers")
    model = transformers.AlbertForMaskedLM.from_pretrained(run_dir)
    tokenizer = transformers.AlbertTokenizer.from_pretrained(run_dir)
    ids = tokenizer("the cat sees a dog", return_tensors="pt")
    assert model(**ids).logits.shape[-1] == model.config.vocab_size


@pytest.mark.slow
def test_fill_mask_text_and_jsonl(run_dir):
    lines = "the cat [MASK] the dog.\nno mask here\n\n[MASK] big [MASK] house.\n"
    text = cli("fill-mask", "--model", str(run_dir), "--top-k", "3", stdin=lines)
    assert text.returncode == 1  # one line failed, the others were answered
    assert "line 2: no [MASK]" in text.stderr
    assert text.stdout.count("[MASK] 1:") == 2 and text.stdout.count("[MASK] 2:") == 1
    jsonl = cli("fill-mask", "--model", str(run_dir), "--top-k", "3", "--format", "jsonl", stdin=lines)
    records = [json.loads(line) for line in jsonl.stdout.splitlines()]
    assert [r["line"] for r in records] == [1, 4]
    assert [len(r["masks"]) for r in records] == [1, 2]
    scores = [c["score"] for c in records[0]["masks"][0]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0001


def test_fill_mask_empty_stdin_and_bad_model_dir(tmp_path):
    bad = cli("fill-mask", "--model", str(tmp_path))
    assert bad.returncode == 2 and "not a model directory" in bad.stderr and "Traceback" not in bad.stderr
    fmt = cli("fill-mask", "--model", str(tmp_path), "--format", "xml")
    assert fmt.returncode == 2 and "--format" in fmt.stderr


@pytest.mark.slow
def test_fill_mask_empty_stdin_exits_zero(run_dir):
    result = cli("fill-mask", "--model", str(run_dir), stdin="")
    assert result.returncode == 0 and result.stdout == ""


def test_dry_run_prints_recipe_and_parameter_counts(corpus, tmp_path):
    result = cli("pretrain", *tiny(corpus, tmp_path / "dry"), "--dry-run")
    assert result.returncode == 0, result.stderr
    for part in ("total", "embeddings", "encoder", "heads"):
        assert part in result.stdout
    assert "family: albert" in result.stdout
    assert not (tmp_path / "dry").exists()


def test_too_large_vocabulary_is_a_usage_error(corpus, tmp_path):
    result = cli("pretrain", *tiny(corpus, tmp_path / "out"), "tokenizer.vocab_size=5000")
    assert result.returncode == 2, result.stderr
    assert "tokenizer.vocab_size: cannot train 5000 pieces; this corpus sample allows at most" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_corpus_file_is_a_usage_error(tmp_path):
    result = cli("pretrain", *tiny(tmp_path / "missing.txt", tmp_path / "out"))
    assert result.returncode == 2, result.stderr
    assert "missing.txt" in result.stderr and "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def electra_run(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "electra"
    args = ["electra-tiny", *tiny(corpus, out)[1:], "train.max_steps=4", "train.save_every=2"]
    result = cli("pretrain", *args)
    assert result.returncode == 0, result.stderr
    return out


@pytest.mark.slow
def test_electra_run_saves_generator_and_discriminator_for_transformers(electra_run):
    transformers = pytest.importorskip("transformers")
    records = [json.loads(line) for line in (electra_run / "metrics.jsonl").read_text().splitlines()]
    assert {"gen_acc", "unigram_acc", "disc_auc", "disc_recall", "disc_precision", "replaced_frac",
            "gen_loss", "disc_loss", "tokens_per_s"} <= set(records[-1])
    discriminator = transformers.ElectraForPreTraining.from_pretrained(electra_run / "discriminator")
    generator = transformers.ElectraForMaskedLM.from_pretrained(electra_run / "generator")
    assert generator.config.hidden_size == discriminator.config.hidden_size // 2  # electra-tiny's 1/2 generator
    # The shared embeddings were saved into both directories.
    assert torch.equal(discriminator.electra.embeddings.word_embeddings.weight,
                       generator.electra.embeddings.word_embeddings.weight)


@pytest.mark.slow
def test_rtd_and_fill_mask_on_an_electra_run(electra_run):
    rtd = cli("rtd", "--model", str(electra_run / "discriminator"), "--format", "jsonl",
              stdin="the cat sees a dog.\n")
    assert rtd.returncode == 0, rtd.stderr
    record = json.loads(rtd.stdout)
    assert record["tokens"] and all(0 <= t["replaced"] <= 1 for t in record["tokens"])
    text = cli("rtd", "--model", str(electra_run / "discriminator"), stdin="the cat sees a dog.\n")
    assert text.returncode == 0 and text.stdout.startswith("the cat sees a dog.\n")
    filled = cli("fill-mask", "--model", str(electra_run / "generator"), stdin="the [MASK] sees a dog.\n")
    assert filled.returncode == 0, filled.stderr
    assert "[MASK] 1:" in filled.stdout


@pytest.mark.parametrize("layout", ["other files", "a run without checkpoints", "a file"])
def test_an_output_dir_that_is_not_a_fresh_run_is_refused(corpus, tmp_path, layout):
    out = tmp_path / "out"
    if layout == "a file":
        out.write_text("notes\n")
    else:
        out.mkdir()
        (out / "notes.txt").write_text("mine\n")
        (out / "spiece.model").write_bytes(b"not mine to reuse")
        if layout == "a run without checkpoints":
            (out / "recipe.yaml").write_text("name: albert-tiny\n")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    result = cli("pretrain", *tiny(corpus, out))
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert line.startswith("error: output.dir: ") and str(out) in line
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


@pytest.mark.slow
def test_overwrite_starts_a_new_run_in_a_used_dir(corpus, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    (out / "spiece.model").write_bytes(b"an earlier tokenizer, not this recipe's")
    (out / "metrics.jsonl").write_text('{"step": 99}\n')
    result = cli("pretrain", *tiny(corpus, out, "train.max_steps=2", "train.save_every=2"), "--overwrite")
    assert result.returncode == 0, result.stderr
    assert "training a unigram tokenizer" in result.stderr  # the file that was there is not reused
    assert [r["step"] for r in strict_json_lines(out / "metrics.jsonl")] == [1, 2]
    assert (out / "notes.txt").read_text() == "mine\n"
    assert json.loads((out / "config.json").read_text())["vocab_size"] == 50


@pytest.mark.slow
def test_a_diverged_run_keeps_the_checkpoint_of_its_last_finite_step(corpus, tmp_path):
    # learning_rate 1e6: step 1 (half the rate in warmup) gives finite, huge weights; the next steps are NaN.
    out = tmp_path / "diverged"
    result = cli("pretrain", *tiny(corpus, out, "train.learning_rate=1e6", "train.save_every=1",
                                   "train.max_nonfinite_steps=3", "train.max_steps=10"))
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert "training diverged: 3 non-finite steps in a row" in line and "lower train.learning_rate" in line
    assert f"resume from {out / 'checkpoints' / 'step-00000001'}" in line
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000001"]
    kept = load_file(str(out / "checkpoints" / "step-00000001" / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in kept.values())
    # ... and equal to what one step of the same run gives.
    one = tmp_path / "one"
    result = cli("pretrain", *tiny(corpus, one, "train.learning_rate=1e6", "train.max_steps=1", "train.save_every=1"))
    assert result.returncode == 0, result.stderr
    reference = load_file(str(one / "checkpoints" / "step-00000001" / "model.safetensors"))
    assert kept.keys() == reference.keys() and all(torch.equal(kept[k], reference[k]) for k in kept)
    records = strict_json_lines(out / "metrics.jsonl")
    assert records[-1]["loss"] is None and "loss" in records[-1]["nonfinite"]


@pytest.mark.slow
@pytest.mark.parametrize("override", ["train.learning_rate=.inf", "train.max_grad_norm=.nan",
                                      "model.initializer_range=1e30"])
def test_other_divergences_end_in_one_line_without_a_checkpoint(corpus, tmp_path, override):
    out = tmp_path / "diverged"
    result = cli("pretrain", *tiny(corpus, out, override, "train.save_every=1", "train.max_nonfinite_steps=2"))
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert override.partition("=")[0] in line  # the key to change (a recipe check may already refuse it)
    assert not list((out / "checkpoints").glob("step-*"))
    if (out / "metrics.jsonl").exists():
        strict_json_lines(out / "metrics.jsonl")


@pytest.mark.slow
def test_the_recorded_recipe_is_the_one_that_ran(run_dir, corpus, tmp_path):
    import yaml

    recorded = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    assert recorded["model"]["vocab_size"] == json.loads((run_dir / "config.json").read_text())["vocab_size"] == 50
    result = cli("pretrain", *tiny(corpus, tmp_path / "out"), "model.vocab_size=30000")
    assert result.returncode == 2 and not (tmp_path / "out").exists()
    assert result.stderr == ("error: model.vocab_size: not a setting: it follows the tokenizer; "
                             "set tokenizer.vocab_size (or tokenizer.path)\n")


@pytest.mark.slow
def test_zero_steps_saves_the_recipes_untrained_model_with_the_given_tokenizer(run_dir, corpus, tmp_path):
    """A random-init baseline: train.max_steps=0 writes the model the recipe builds at its seed, untouched."""
    from encoderkit.models.load import load_model
    from encoderkit.objectives import PRETRAINING
    from encoderkit.recipes import load_recipe

    out = tmp_path / "random"
    result = cli("pretrain", *tiny(corpus, out, "train.max_steps=0", "train.seed=3", f"tokenizer.path={run_dir}"))
    assert result.returncode == 0, result.stderr
    assert (out / "spiece.model").read_bytes() == (run_dir / "spiece.model").read_bytes()
    assert not (out / "checkpoints").exists()
    recipe = load_recipe(str(out / "recipe.yaml"))
    torch.manual_seed(3)
    fresh = PRETRAINING[recipe.objective].build_model(recipe.model.config, recipe.settings).state_dict()
    saved = load_model(out, "pretraining").state_dict()
    assert saved.keys() == fresh.keys()
    assert all(torch.equal(saved[name], fresh[name]) for name in fresh)
