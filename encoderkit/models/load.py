"""The one way to open a model dir, for every command: `load_model(directory, head, **config_overrides)`.

It dispatches on config.json's `model_type` (the families of hf_format.FAMILIES: albert, electra, bert,
ibert) or, in a dir without config.json, on the integer-only I-BERT file that `encoderkit quantize` writes.
`head` names what to build on the encoder: "base", "masked_lm", "pretraining", "discriminator",
"sequence_classification", "question_answering", "multiple_choice" (the family's table says which it has),
or "generator_discriminator" for an ELECTRA pretraining run dir holding generator/ and discriminator/. Every
failure is one ModelDirError whose message names the dir or file and what to do.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from encoderkit.errors import UserError

if TYPE_CHECKING:
    from torch import nn

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
PAIR_HEAD = "generator_discriminator"
INTEGER_HEADS = ("base", "sequence_classification")
# The command that serves each head, for the message when a dir lacks the one a command needs.
SERVED_BY = {"masked_lm": "encoderkit fill-mask", "discriminator": "encoderkit rtd",
             "sequence_classification": "encoderkit predict", "question_answering": "encoderkit predict",
             "multiple_choice": "encoderkit predict"}


class ModelDirError(UserError):
    """A model dir that cannot be used: the message names the dir or file, what is wrong and the fix."""

    option = "--model"  # where every command takes its model dir from


def read_model_config(directory: str | os.PathLike) -> dict:
    """config.json of a model dir, checked to be a JSON object of a family encoderkit builds."""
    from encoderkit.models.hf_format import FAMILIES

    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise ModelDirError(f"'{directory}' is not a model directory (no {CONFIG_FILE}); point it at a run dir "
                            "or a Hugging Face model dir")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelDirError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise ModelDirError(f"{path}: expected a JSON object of config fields, got {type(config).__name__}")
    if config.get("model_type") not in FAMILIES:
        raise ModelDirError(f"{path}: model_type {config.get('model_type')!r} is not one of: {', '.join(FAMILIES)}")
    return config


def is_integer_dir(directory: str | os.PathLike) -> bool:
    """A dir of `encoderkit quantize`'s integer-only model: its model.safetensors and no config.json."""
    directory = Path(directory)
    return not (directory / CONFIG_FILE).is_file() and (directory / WEIGHTS_FILE).is_file()


def load_model(directory: str | os.PathLike, head: str = "base", classifier_dropout: float | None = None,
               **config_overrides) -> nn.Module:
    """The `head` model of the dir's family with the dir's weights (config_overrides replace config fields,
    e.g. num_labels=3 for a new classifier; head tensors the dir lacks start fresh, with a warning).

    `classifier_dropout` sets the dropout before a task head in the field the family keeps it in."""
    from encoderkit.models import hf_format

    directory = Path(directory)
    if head == PAIR_HEAD:
        return _load_pair(directory)
    if is_integer_dir(directory):
        return _load_integer(directory, head)
    model_type = read_model_config(directory)["model_type"]
    heads = hf_format.FAMILIES[model_type][1]
    if head not in heads:
        served = [f"{name} ({SERVED_BY[name]})" if name in SERVED_BY else name for name in heads]
        raise ModelDirError(f"{directory}: a {model_type} model has no {head} head; it has: {', '.join(served)}")
    if classifier_dropout is not None:
        field = getattr(hf_format.FAMILIES[model_type][0], "classifier_dropout_field", None)
        if field is None:
            raise ModelDirError(f"{directory}: a {model_type} model has no separate classifier dropout; leave it unset")
        config_overrides[field] = classifier_dropout
    try:
        return hf_format.load_pretrained(directory, head, **config_overrides)
    except ValueError as err:  # missing or misshaped tensors, a config field the family refuses
        raise ModelDirError(str(err)) from None


def _load_pair(directory: Path) -> nn.Module:
    from encoderkit.models import hf_format

    for part in ("generator", "discriminator"):
        read_model_config(directory / part)
    try:
        return hf_format.load_generator_discriminator(directory)
    except ValueError as err:
        raise ModelDirError(str(err)) from None


def _load_integer(directory: Path, head: str) -> nn.Module:
    from encoderkit.models.ibert.integer import load_integer_model

    if head not in INTEGER_HEADS:
        raise ModelDirError(f"{directory}: an integer-only I-BERT has no {head} head (it is a classifier or an "
                            "encoder); use it with `encoderkit predict`")
    try:
        model = load_integer_model(directory / WEIGHTS_FILE)
    except ValueError as err:
        raise ModelDirError(f"{directory}: {err}") from None
    if head == "sequence_classification" and model.classifier is None:
        raise ModelDirError(f"{directory}: an integer-only encoder without a classifier head")
    return model


def max_tokens(model: nn.Module) -> int:
    """How many tokens a sequence may hold: the position table's size, less RoBERTa's (I-BERT's) offset of
    pad_token_id + 1 where positions count from there."""
    if hasattr(model, "spec"):  # the integer-only model records its table, not a config
        return len(model.embeddings.position_table) - model.spec["pad_token_id"] - 1
    config = model.config
    offset = config.pad_token_id + 1 if config.model_type in ("ibert", "roberta") else 0
    return config.max_position_embeddings - offset
