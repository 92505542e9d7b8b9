"""Hostile input, generated: damaged model dirs for every command that opens one, hostile recipes and overrides.

Each case must end as the CLI promises for bad input: exit code 2, ONE line on stderr starting with `error: `,
no traceback, and nothing on disk changed (the model dir's files as they were, no output dir created). Tiny
model dirs are built once per module and damaged in copies; the CLI runs in-process (encoderkit.cli.main with
sys.argv patched), and a few cases run the real entry point in a subprocess (marked slow).
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from data_helpers import tiny_tokenizer
from safetensors.torch import load_file, save_file

from encoderkit import cli
from encoderkit.models import albert, electra, hf_format

GLUE = Path(__file__).parent / "fixtures" / "glue"
VOCAB = 200  # tiny_tokenizer's
ALBERT = dict(vocab_size=VOCAB, embedding_size=8, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
              intermediate_size=32, max_position_embeddings=64)
ELECTRA = dict(vocab_size=VOCAB, embedding_size=16, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
               intermediate_size=32, max_position_embeddings=64)


# ---- the model dirs, built once ------------------------------------------------------------------


def _save(model, directory: Path) -> Path:
    hf_format.save_pretrained(model, directory)
    tiny_tokenizer().save(directory)
    return directory


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    return {
        "albert": _save(albert.AlbertForPreTraining(albert.AlbertConfig(**ALBERT)), root / "albert"),
        "generator": _save(electra.ElectraForMaskedLM(electra.ElectraConfig(**ELECTRA)), root / "generator"),
        "discriminator": _save(electra.ElectraForPreTraining(electra.ElectraConfig(**ELECTRA)),
                               root / "discriminator"),
        "classifier": _save(electra.ElectraForSequenceClassification(electra.ElectraConfig(**ELECTRA)),
                            root / "classifier"),
        "integer": _integer_classifier(root / "integer"),
    }


def _integer_classifier(directory: Path) -> Path:
    """The integer-only I-BERT classifier `encoderkit quantize` writes (integer/): calibrated on random ids."""
    from encoderkit.models import ibert
    from encoderkit.models.ibert.export import export_integer_model

    config = ibert.IBertConfig(**{**ELECTRA, "embedding_size": None}, quant_mode=True)
    model = ibert.IBertForSequenceClassification(config)
    ibert.calibrate(model, [{"input_ids": torch.randint(2, VOCAB, (4, 12))} for _ in range(2)])
    directory.mkdir()
    export_integer_model(model.eval()).save(directory / "model.safetensors")
    tiny_tokenizer().save(directory)
    return directory


def fingerprint(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def run_cli(args: list[str], monkeypatch, capsys, stdin: str = "") -> tuple[int, str]:
    """encoderkit.cli.main in this process: (exit code, stderr). An exception that is not a user error escapes
    and fails the test with its traceback."""
    monkeypatch.setattr(sys, "argv", ["encoderkit", *args])
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin.encode())))  # the commands read bytes
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # main() sets its own
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    return exit_info.value.code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, expected: str | None = None) -> None:
    assert code == 2, err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    if expected is not None:  # "a|b": either (what is checked first differs between commands)
        assert any(piece in err for piece in expected.split("|")), err


# ---- damage ---------------------------------------------------------------------------------------


def _edit_config(**changes):
    def damage(directory: Path) -> None:
        path = directory / "config.json"
        config = json.loads(path.read_text())
        config.update(changes)
        path.write_text(json.dumps(config))
    return damage


def _write(name: str, content: bytes):
    def damage(directory: Path) -> None:
        (directory / name).write_bytes(content)
    return damage


def _truncate(name: str, keep: float):
    def damage(directory: Path) -> None:
        data = (directory / name).read_bytes()
        (directory / name).write_bytes(data[: int(len(data) * keep)])
    return damage


def _delete(name: str):
    def damage(directory: Path) -> None:
        (directory / name).unlink()
    return damage


def _edit_tensors(edit):
    def damage(directory: Path) -> None:
        path = directory / "model.safetensors"
        tensors = load_file(path)
        edit(tensors)
        save_file(tensors, path, metadata={"format": "pt"})
    return damage


def _first_encoder_tensor(tensors: dict) -> str:
    return next(name for name in tensors if "layer" in name and name.endswith("weight"))


def _drop_tensor(tensors):
    del tensors[_first_encoder_tensor(tensors)]


def _misshape_tensor(tensors):
    name = _first_encoder_tensor(tensors)
    tensors[name] = tensors[name][:-1]


def _integer_tensor(tensors):
    name = _first_encoder_tensor(tensors)
    tensors[name] = tensors[name].long()


def _nan_weight(tensors):
    name = _first_encoder_tensor(tensors)
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] = float("nan")


def _inf_weight(tensors):
    name = _first_encoder_tensor(tensors)
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] = float("inf")


def _spiece_cut_at_a_record(directory: Path) -> None:
    """spiece.model cut after its 100th piece record: a valid, smaller SentencePiece model (protobuf field 1)."""
    data = (directory / "spiece.model").read_bytes()
    position, pieces = 0, 0
    while position < len(data) and pieces < 100:
        tag = data[position]
        length, shift, position = 0, 0, position + 1
        while True:  # a varint
            byte = data[position]
            length |= (byte & 0x7F) << shift
            position, shift = position + 1, shift + 7
            if byte < 0x80:
                break
        position += length
        pieces += tag == 0x0A
    (directory / "spiece.model").write_bytes(data[:position])


# name -> (damage, a piece of the expected message)
DAMAGE = {
    "weights truncated": (_truncate("model.safetensors", 0.6), "not a complete safetensors file"),
    "weights cut in the header": (_truncate("model.safetensors", 0.001), "not a complete safetensors file"),
    "weights garbage": (_write("model.safetensors", b"\x89garbage" * 100), "not a complete safetensors file"),
    "weights empty": (_write("model.safetensors", b""), "not a complete safetensors file"),
    "weights huge header length": (_write("model.safetensors", struct.pack("<Q", 2**40) + b"{}"),
                                   "not a complete safetensors file"),
    "weights missing": (_delete("model.safetensors"), "model.safetensors"),
    "tensor missing": (_edit_tensors(_drop_tensor), "no tensor for"),
    "tensor misshaped": (_edit_tensors(_misshape_tensor), "has shape"),
    "tensor of integers": (_edit_tensors(_integer_tensor), "holds int values"),
    "NaN weight": (_edit_tensors(_nan_weight), "NaN or infinite"),
    "inf weight": (_edit_tensors(_inf_weight), "NaN or infinite"),
    "config empty": (_write("config.json", b""), "not valid JSON"),
    "config invalid": (_write("config.json", b'{"model_type": "electra",'), "not valid JSON"),
    "config not UTF-8": (_write("config.json", b'{"model_type": "\xff"}'), "not valid JSON"),
    "config a list": (_write("config.json", b"[1, 2]"), "expected a JSON object"),
    "config missing": (_delete("config.json"), "config.json"),
    "unknown model_type": (_edit_config(model_type="gpt"), "model_type 'gpt'"),
    "size a string": (_edit_config(hidden_size="16"), "hidden_size: expected an integer"),
    "size zero": (_edit_config(num_attention_heads=0), "num_attention_heads: 0 is out of range"),
    "size negative": (_edit_config(intermediate_size=-32), "intermediate_size: -32 is out of range"),
    "heads do not divide": (_edit_config(num_attention_heads=3), "hidden_size: 16 is not divisible by"),
    "unknown hidden_act": (_edit_config(hidden_act="nonsense"), "hidden_act: 'nonsense' is not one of"),
    "dropout 2": (_edit_config(hidden_dropout_prob=2), "hidden_dropout_prob: 2.0 is out of range"),
    "NaN in config": (_edit_config(layer_norm_eps=float("nan")), "layer_norm_eps: nan is not a finite number"),
    "pad id past the vocabulary": (_edit_config(pad_token_id=VOCAB), "pad_token_id: 200 is out of range"),
    "vocab size in config differs": (_edit_config(vocab_size=VOCAB + 8), "has shape|vocab_size is 208"),
    "tokenizer empty": (_write("spiece.model", b""), "spiece.model"),
    "tokenizer garbage": (_write("spiece.model", b"\x00\x01garbage" * 50), "spiece.model"),
    "tokenizer cut at a record": (_spiece_cut_at_a_record, "the model's vocab_size is 200"),
    "tokenizer missing": (_delete("spiece.model"), "no SentencePiece model or WordPiece vocabulary"),
}

# command -> (model dir, its command line without --model, stdin)
COMMANDS = {
    "fill-mask": ("albert", ["fill-mask"], "The cat [MASK] on the mat.\n"),
    "fill-mask generator": ("generator", ["fill-mask"], "The cat [MASK] on the mat.\n"),
    "rtd": ("discriminator", ["rtd"], "The cat sat on the mat.\n"),
    "predict": ("classifier", ["predict"], "a fine film\n"),
    "finetune": ("discriminator", ["finetune", "glue", "--task", "rte", "--data-dir", str(GLUE)], ""),
    "quantize": ("classifier", ["quantize", "--task", "sst2", "--data-dir", str(GLUE), "quantize.max_seq_length=64"],
                 ""),
}


def test_the_undamaged_dirs_answer(dirs, monkeypatch, capsys, tmp_path):
    """The cases below fail because of their damage alone: the same dirs, undamaged, work."""
    for command in ("fill-mask", "fill-mask generator", "rtd", "predict"):  # (the integer model: test_quantize_cli)
        source, args, stdin = COMMANDS[command]
        code, err = run_cli([*args, "--model", str(dirs[source]), "--format", "jsonl"], monkeypatch, capsys, stdin)
        assert code is None or code == 0, err


@pytest.mark.parametrize("damage", list(DAMAGE))
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_damaged_model_dir_is_one_line_and_exit_2(command, damage, dirs, monkeypatch, capsys, tmp_path):
    source, args, stdin = COMMANDS[command]
    model, out = tmp_path / "model", tmp_path / "out"
    shutil.copytree(dirs[source], model)
    damage_fn, expected = DAMAGE[damage]
    damage_fn(model)
    before = fingerprint(model)
    outputs = [f"output.dir={out}"] if command in ("finetune", "quantize") else []
    code, err = run_cli([*args, "--model", str(model), *outputs], monkeypatch, capsys, stdin)
    assert_one_line_error(code, err, expected)
    assert fingerprint(model) == before  # nothing in the model dir changed
    assert not out.exists()  # and nothing was written


def _edit_integer_file(edit):
    """Rewrite the integer model's file after `edit(tensors, description)` (the JSON in its metadata)."""
    def damage(directory: Path) -> None:
        from safetensors import safe_open

        from encoderkit.models.ibert.integer import FORMAT

        path = directory / "model.safetensors"
        with safe_open(str(path), framework="pt") as file:
            description = json.loads(file.metadata()[FORMAT])
        tensors = load_file(path)
        description = edit(tensors, description)
        save_file(tensors, path, metadata={FORMAT: description if isinstance(description, str) else
                                           json.dumps(description)})
    return damage


def _drop_layer_count(tensors, description):
    del description["num_hidden_layers"]
    return description


INTEGER_DAMAGE = {
    "weights truncated": (_truncate("model.safetensors", 0.6), "not a complete integer-only I-BERT file"),
    "weights garbage": (_write("model.safetensors", b"\x89garbage" * 100), "not a complete integer-only I-BERT"),
    "weights empty": (_write("model.safetensors", b""), "not a complete integer-only I-BERT file"),
    "weights missing": (_delete("model.safetensors"), "is not a model directory"),
    "description not JSON": (_edit_integer_file(lambda tensors, description: "{"), "a damaged integer-only I-BERT"),
    "description incomplete": (_edit_integer_file(_drop_layer_count), "a damaged integer-only I-BERT file"),
    "tokenizer empty": DAMAGE["tokenizer empty"],
    "tokenizer cut at a record": DAMAGE["tokenizer cut at a record"],
}


@pytest.mark.parametrize("damage", list(INTEGER_DAMAGE))
def test_a_damaged_integer_model_dir_is_one_line_and_exit_2(damage, dirs, monkeypatch, capsys, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(dirs["integer"], model)
    damage_fn, expected = INTEGER_DAMAGE[damage]
    damage_fn(model)
    before = fingerprint(model)
    code, err = run_cli(["predict", "--model", str(model)], monkeypatch, capsys, "a fine film\n")
    assert_one_line_error(code, err, expected)
    assert fingerprint(model) == before


# ---- a dir without the head a command needs --------------------------------------------------------

WRONG_HEADS = {
    "generator to rtd": ("generator", ["rtd"], "this is an ELECTRA generator (ElectraForMaskedLM): use `encoderkit "
                                               "fill-mask"),
    "discriminator to fill-mask": ("discriminator", ["fill-mask"], "this is an ELECTRA discriminator "
                                                                   "(ElectraForPreTraining): use `encoderkit rtd"),
    "discriminator to predict": ("discriminator", ["predict"], "use `encoderkit rtd"),
    "pretrained ALBERT to predict": ("albert", ["predict"], "use `encoderkit fill-mask"),
    "classifier to fill-mask": ("classifier", ["fill-mask"], "(ElectraForSequenceClassification): use `encoderkit "
                                                             "predict"),
}


@pytest.mark.parametrize("case", list(WRONG_HEADS))
def test_inference_without_the_head_is_one_line_with_the_fix(case, dirs, monkeypatch, capsys):
    source, args, expected = WRONG_HEADS[case]
    before = fingerprint(dirs[source])
    code, err = run_cli([*args, "--model", str(dirs[source])], monkeypatch, capsys, "The cat [MASK] on the mat.\n")
    assert_one_line_error(code, err, expected)
    assert fingerprint(dirs[source]) == before


def test_fine_tuning_starts_a_fresh_head_and_says_so_once(dirs):
    from encoderkit.models.load import load_model

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # as a command line run shows them: each message once
        models = [load_model(dirs["discriminator"], "sequence_classification", num_labels=3) for _ in range(3)]
    assert [str(w.message) for w in caught] == [
        f"{dirs['discriminator']} has no sequence_classification head (classifier.dense.weight, ...): it starts "
        "freshly initialised"]
    assert models[0].classifier.out_proj.weight.shape == (3, ELECTRA["hidden_size"])
    # a dir that has the head loads it without a word
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_model(dirs["classifier"], "sequence_classification", require_head=True)
    assert caught == []


# ---- hostile recipes and overrides ---------------------------------------------------------------------

HOSTILE_OVERRIDES = {
    "model.hidden_size=-128": "model.hidden_size: -128 is out of range (must be >= 1)",
    "model.num_attention_heads=0": "model.num_attention_heads: 0 is out of range",
    "model.num_attention_heads=5": "model.hidden_size: 128 is not divisible by model.num_attention_heads=5",
    "model.hidden_act=nonsense": "model.hidden_act: 'nonsense' is not one of: gelu",
    "model.hidden_dropout_prob=2": "model.hidden_dropout_prob: 2.0 is out of range (must be in [0, 1))",
    "model.attention_probs_dropout_prob=1": "model.attention_probs_dropout_prob: 1.0 is out of range",
    "model.classifier_dropout_prob=-0.1": "model.classifier_dropout_prob: -0.1 is out of range",
    "model.inner_group_num=0": "model.inner_group_num: 0 is out of range",
    "model.num_hidden_groups=0": "model.num_hidden_groups: 0 is out of range",
    "model.num_hidden_groups=9": "model.num_hidden_groups: 9 is out of range: it must be at most "
                                 "model.num_hidden_layers=4",
    "model.layer_norm_eps=0": "model.layer_norm_eps: 0.0 is out of range (must be > 0)",
    "model.initializer_range=.nan": "model.initializer_range: nan is not a finite number",
    "model.max_position_embeddings=0": "model.max_position_embeddings: 0 is out of range",
    "model.embedding_size=abc": "model.embedding_size: expected an integer, got 'abc'",
    "model.hidden_size=[1]": "model.hidden_size: expected an integer, got [1]",
    "model.pad_token_id=-1": "model.pad_token_id: -1 is out of range",
    "model.problem_type=ranking": "model.problem_type: 'ranking' is not one of",
    "model.family=gpt": "model.family: 'gpt' is not one of",
    "model.vocab_size=100": "model.vocab_size: not a setting",
    "model.nonsense=1": "model.nonsense: unknown key",
    "train.learning_rate=.inf": "train.learning_rate: inf is not a finite number",
    "train.learning_rate=-.inf": "train.learning_rate: -inf is not a finite number",
    "train.learning_rate=true": "train.learning_rate: expected a number, got True",
    "train.max_grad_norm=.nan": "train.max_grad_norm: nan is not a finite number",
    "train.adam_beta1=1": "train.adam_beta1: 1.0 is out of range (must be in [0, 1))",
    "train.adam_beta2=-0.5": "train.adam_beta2: -0.5 is out of range",
    "train.max_steps=-1": "train.max_steps: -1 is out of range",
    "train.batch_size=3.5": "train.batch_size: expected an integer",
    "train.optimizer=sgd": "train.optimizer: 'sgd' is not one of: adamw, lamb",
    "data.source=[]": "data.source: an empty list of files",
    "data.source=missing.txt": "data.source: no such corpus file: 'missing.txt'",
    "data.source=[missing.txt]": "data.source: no such corpus file: 'missing.txt'",
    "data.source=nothing-*.txt": "data.source: no file matches the glob",
    "data.source=3": "data.source: expected a string, got 3",
    "data.max_seq_length=4096": "data.max_seq_length: 4096 exceeds model.max_position_embeddings",
    "data.masked_lm_prob=0": "data.masked_lm_prob: 0.0 is out of range",
    "tokenizer.path=missing/spiece.model": "tokenizer.path: 'missing/spiece.model' does not exist",
    "tokenizer.vocab_size=-1": "tokenizer.vocab_size: -1 is out of range",
    "train=3": "override 'train': not key=value|train: expected a mapping",
    "train.max_steps": "override 'train.max_steps' is not key=value",
    "=3": "override '=3' is not key=value",
    "train.max_steps.x=1": "'train.max_steps' is not a section",
    "objective=nonsense": "objective: 'nonsense' is not one of",
}


@pytest.mark.parametrize("override", list(HOSTILE_OVERRIDES))
def test_a_hostile_override_is_one_line_and_exit_2_and_writes_nothing(override, monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)  # relative data files are looked up here
    out = tmp_path / "run"
    for args in (["recipes", "validate", "albert-tiny"], ["pretrain", "albert-tiny", "--dry-run"],
                 ["pretrain", "albert-tiny", f"output.dir={out}"]):
        code, err = run_cli([*args, override], monkeypatch, capsys)
        assert_one_line_error(code, err, HOSTILE_OVERRIDES[override])
    assert list(tmp_path.iterdir()) == []  # no run dir, no tokenizer, nothing


def test_overrides_of_every_recipe_kind_are_checked(monkeypatch, capsys):
    for recipe, override, expected in (
            ("electra-tiny", "model.hidden_act=nonsense", "model.hidden_act: 'nonsense' is not one of"),
            ("electra-tiny", "model.hidden_size=102", "model.hidden_size: 102 is not divisible by"),
            ("electra-tiny", "rtd.discriminator_weight=.inf", "rtd.discriminator_weight: inf is not a finite"),
            ("glue-electra-small", "finetune.classifier_dropout=1", "finetune.classifier_dropout: 1.0 is out of"),
            ("glue-electra-small", "train.adam_beta1=1", "train.adam_beta1: 1.0 is out of range"),
            ("quantize-glue", "quantize.act_range_momentum=.nan", "quantize.act_range_momentum: nan is not a")):
        code, err = run_cli(["recipes", "validate", recipe, override], monkeypatch, capsys)
        assert_one_line_error(code, err, expected)


HOSTILE_FILES = {
    "duplicate key": (b"name: x\nobjective: mlm_sop\nmodel:\n  family: albert\ntrain:\n  max_steps: 3\n"
                      b"  max_steps: 4\n", "line 7: not valid YAML (duplicate key 'max_steps'; write each key once)"),
    "duplicate section": (b"name: x\nobjective: mlm_sop\nmodel:\n  family: albert\nmodel:\n  family: albert\n",
                          "line 5: not valid YAML (duplicate key 'model'"),
    "invalid UTF-8": (b"name: caf\xe9\nobjective: mlm_sop\n", "not UTF-8 text (byte 9); save the recipe as UTF-8"),
    "binary": (bytes(range(256)), "not UTF-8 text"),
    "not YAML": (b"model: [unclosed\n", "not valid YAML"),
    "a list": (b"- 1\n- 2\n", "a recipe is a YAML mapping of sections"),
    "empty": (b"", "a recipe is a YAML mapping of sections"),
    "missing data file": (b"name: x\nobjective: mlm_sop\nmodel:\n  family: albert\ndata:\n  source: gone.txt\n",
                          "data.source: no such corpus file: 'gone.txt'"),
    "unknown section": (b"name: x\nobjective: mlm_sop\nmodel:\n  family: albert\nextra: 1\n", "extra: unknown key"),
    "a section that is a number": (b"name: x\nobjective: mlm_sop\nmodel:\n  family: albert\ntrain: 3\n",
                                   "train: expected a mapping of keys, got int"),
}


@pytest.mark.parametrize("case", list(HOSTILE_FILES))
def test_a_hostile_recipe_file_is_one_line_and_exit_2(case, monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    content, expected = HOSTILE_FILES[case]
    (tmp_path / "recipe.yaml").write_bytes(content)
    for args in (["recipes", "validate"], ["recipes", "show"], ["pretrain", "--dry-run"]):
        code, err = run_cli([*args, "recipe.yaml"], monkeypatch, capsys)
        assert_one_line_error(code, err, expected)
    assert (tmp_path / "recipe.yaml").read_bytes() == content and len(list(tmp_path.iterdir())) == 1


# ---- the real entry point -------------------------------------------------------------------------------


def run_entry_point(*args, stdin=""):
    return subprocess.run([sys.executable, "-m", "encoderkit", *args], input=stdin, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.slow
def test_the_entry_point_gives_one_line_for_bad_dirs_and_recipes(dirs, tmp_path):
    truncated = tmp_path / "truncated"
    shutil.copytree(dirs["albert"], truncated)
    DAMAGE["weights truncated"][0](truncated)
    (tmp_path / "dup.yaml").write_bytes(HOSTILE_FILES["duplicate key"][0])
    for args, stdin, expected in (
            (["fill-mask", "--model", str(truncated)], "The [MASK] sat.\n", "not a complete safetensors file"),
            (["rtd", "--model", str(dirs["generator"])], "The cat sat.\n", "this is an ELECTRA generator"),
            (["recipes", "validate", str(tmp_path / "dup.yaml")], "", "duplicate key 'max_steps'")):
        result = run_entry_point(*args, stdin=stdin)
        # a status line ("loading DIR ...") comes first when loading takes over a second (commands/lines.py)
        stderr = "".join(line for line in result.stderr.splitlines(keepends=True) if not line.startswith("loading "))
        assert_one_line_error(result.returncode, stderr, expected)
        assert result.stdout == ""
