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
    }


def fingerprint(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def run_cli(args: list[str], monkeypatch, capsys, stdin: str = "") -> tuple[int, str]:
    """encoderkit.cli.main in this process: (exit code, stderr). An exception that is not a user error escapes
    and fails the test with its traceback."""
    monkeypatch.setattr(sys, "argv", ["encoderkit", *args])
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
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
    "quantize": ("classifier", ["quantize", "--task", "sst2", "--data-dir", str(GLUE)], ""),
}


def test_the_undamaged_dirs_answer(dirs, monkeypatch, capsys, tmp_path):
    """The cases below fail because of their damage alone: the same dirs, undamaged, work."""
    for command in ("fill-mask", "fill-mask generator", "rtd", "predict"):
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
