"""The one way to open a model dir, for every command: `load_model(directory, head, **config_overrides)`.

It dispatches on config.json's `model_type` (the families of hf_format.FAMILIES: albert, electra, bert, roberta,
ibert) or, in a dir without config.json, on the integer-only I-BERT file that `encoderkit quantize` writes.
`head` names what to build on the encoder: "base", "masked_lm", "pretraining", "discriminator",
"sequence_classification", "token_classification", "question_answering", "multiple_choice" (the family's table
says which it has), or "generator_discriminator" for an ELECTRA pretraining run dir holding generator/ and
discriminator/. Every failure is one ModelDirError whose message names the dir or file and what to do.

Nothing runs on a dir before it is checked: config.json against the family's config (types, ranges and
relations: the fields' rules, the same the recipes are checked with), model.safetensors' header (names,
shapes, dtypes) against the model, then the weights' values (finite). Inference passes `require_head=True`:
a dir without the head it needs is refused, naming what the dir holds and the command for it.
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from encoderkit.errors import UserError

if TYPE_CHECKING:
    from torch import nn

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
PAIR_HEAD = "generator_discriminator"
INTEGER_HEADS = ("base", "sequence_classification", "token_classification")
# The command that serves each head, for the message when a dir lacks the one a command needs.
SERVED_BY = {"masked_lm": "encoderkit fill-mask", "pretraining": "encoderkit fill-mask",
             "discriminator": "encoderkit rtd", "sequence_classification": "encoderkit predict",
             "token_classification": "encoderkit predict", "question_answering": "encoderkit predict",
             "multiple_choice": "encoderkit predict"}
HEAD_WORDS = {"sequence_classification": "classifier", "token_classification": "token-classification head",
              "masked_lm": "masked-LM head",
              "discriminator": "discriminator head", "question_answering": "question-answering head",
              "multiple_choice": "multiple-choice head"}
# What a dir holding (family, head) is, in the words a user knows it by.
HEAD_DESCRIPTIONS = {("electra", "masked_lm"): "an ELECTRA generator", ("electra", "discriminator"):
                     "an ELECTRA discriminator", ("albert", "pretraining"): "a pretrained ALBERT (MLM + SOP heads)"}


class ModelDirError(UserError):
    """A model dir that cannot be used: the message names the dir or file, what is wrong and the fix."""

    option = "--model"  # where every command takes its model dir from


def read_model_config(directory: str | os.PathLike) -> dict:
    """config.json of a model dir, checked to be a JSON object of a family encoderkit builds, with fields of the
    family's config (types, ranges, relations: fields.check)."""
    from encoderkit.models.hf_format import FAMILIES, read_config

    path = Path(directory) / CONFIG_FILE
    if not path.is_file() and (Path(directory) / WEIGHTS_FILE).is_file():
        raise ModelDirError(f"{directory}: no {CONFIG_FILE} beside {WEIGHTS_FILE} (which is not a complete "
                            "integer-only I-BERT file either): restore config.json, or export the model again")
    if not path.is_file():
        raise ModelDirError(f"'{directory}' is not a model directory (no {CONFIG_FILE}); point it at a run dir "
                            "or a Hugging Face model dir")
    try:
        config = read_config(directory)
    except ValueError as err:
        raise ModelDirError(str(err)) from None
    if config.get("model_type") not in FAMILIES:
        raise ModelDirError(f"{path}: model_type {config.get('model_type')!r} is not one of: {', '.join(FAMILIES)}")
    try:
        FAMILIES[config["model_type"]][0].from_hf_dict(config)
    except ValueError as err:
        raise ModelDirError(f"{path}: {err}; correct it (or save the model again)") from None
    return config


def is_integer_dir(directory: str | os.PathLike) -> bool:
    """A dir of `encoderkit quantize`'s integer-only model: no config.json, and a model.safetensors that says it
    is one (a Hugging Face dir that lost its config.json is not)."""
    import safetensors

    from encoderkit.models.ibert.integer import FORMAT

    path = Path(directory) / WEIGHTS_FILE
    if (Path(directory) / CONFIG_FILE).is_file() or not path.is_file():
        return False
    try:
        with safetensors.safe_open(str(path), framework="pt") as file:
            return FORMAT in (file.metadata() or {})
    except safetensors.SafetensorError:
        return False


def load_model(directory: str | os.PathLike, head: str = "base", classifier_dropout: float | None = None,
               require_head: bool = False, in_float: bool = False, **config_overrides) -> nn.Module:
    """The `head` model of the dir's family with the dir's weights (config_overrides replace config fields,
    e.g. num_labels=3 for a new classifier).

    config.json and model.safetensors' header are checked before any tensor is read, and the weights must be
    finite. Head tensors the dir lacks are an error with `require_head` (inference: a random head would answer
    nonsense), else they start fresh, which is said once on stderr (fine-tuning a new classifier).
    `classifier_dropout` sets the dropout before a task head in the field the family keeps it in. `in_float`
    (fine-tuning): an I-BERT dir saved with quant_mode true is built in float, which is said once on stderr."""
    from encoderkit.models import hf_format

    directory = Path(directory)
    if head == PAIR_HEAD:
        return _load_pair(directory)
    if is_integer_dir(directory):
        return _load_integer(directory, head)
    config = read_model_config(directory)
    model_type = config["model_type"]
    heads = hf_format.FAMILIES[model_type][1]
    if head not in heads:
        served = [f"{name} ({SERVED_BY[name]})" if name in SERVED_BY else name for name in heads]
        raise ModelDirError(f"{directory}: a {model_type} model has no {head} head; it has: {', '.join(served)}")
    if classifier_dropout is not None:
        field = getattr(hf_format.FAMILIES[model_type][0], "classifier_dropout_field", None)
        if field is None:  # transformers' IBert heads take hidden_dropout_prob
            raise ModelDirError(f"{directory}: {model_type} models have no dropout of their own before a task head "
                                "(it is hidden_dropout_prob): set the recipe's classifier_dropout to null (e.g. "
                                "finetune.classifier_dropout=null) or use the glue-roberta-base recipe")
        config_overrides[field] = classifier_dropout
    if in_float and config.get("quant_mode") is True and "quant_mode" not in config_overrides:
        _say_fine_tuned_in_float(directory)
        config_overrides["quant_mode"] = False
    try:
        model, fresh = hf_format.read_pretrained(directory, head, **config_overrides)
    except ValueError as err:  # a damaged file, missing or misshaped tensors, non-finite weights
        raise ModelDirError(str(err)) from None
    if fresh and require_head:
        raise ModelDirError(_no_head_message(directory, config, head, fresh))
    if fresh:
        warnings.warn(f"{directory} has no {head} head ({fresh[0]}, ...): it starts freshly initialised",
                      stacklevel=2)
    return model


@functools.cache  # once per dir, however many seeds build a model from it
def _say_fine_tuned_in_float(directory: Path) -> None:
    # I-BERT's authors fine-tune in float first; quantization-aware training is `encoderkit quantize`'s
    warnings.warn(f"{directory} is an I-BERT saved with quant_mode true: it is fine-tuned in float (quant_mode "
                  "false), as I-BERT's first step; `encoderkit quantize` then trains it quantized", stacklevel=1)


def _no_head_message(directory: Path, config: dict, head: str, fresh: list[str]) -> str:
    """What the dir holds instead of `head`, and the command that uses it."""
    message = f"{directory} holds no {HEAD_WORDS.get(head, head + ' head')} (model.safetensors has no {fresh[0]})"
    return message + what_it_holds(directory, config)


def what_it_holds(directory: Path, config: dict) -> str:
    """': this is <what> (<architecture>): use `<command> --model <dir>`' for a dir whose config.json names an
    architecture of its family, else a hint to give one that does."""
    from encoderkit.models import hf_format

    heads = hf_format.FAMILIES[config["model_type"]][1]
    classes = {cls.__name__: name for name, cls in heads.items()}
    architectures = config.get("architectures") if isinstance(config.get("architectures"), list) else []
    held = [(name, classes[name.removeprefix(hf_format.EXTENDED_PREFIX)]) for name in architectures
            if isinstance(name, str) and name.removeprefix(hf_format.EXTENDED_PREFIX) in classes]
    if not held:
        return "; give a model dir that was saved with one"
    architecture, held_head = held[0]
    what = HEAD_DESCRIPTIONS.get((config["model_type"], held_head), f"a {config['model_type']} {held_head} model")
    use = f": use `{SERVED_BY[held_head]} --model {directory}`" if held_head in SERVED_BY else ""
    return f": this is {what} ({architecture}){use}"


def _load_pair(directory: Path) -> nn.Module:
    from encoderkit.models import hf_format

    for part in ("generator", "discriminator"):
        read_model_config(directory / part)
    try:
        return hf_format.load_generator_discriminator(directory)
    except ValueError as err:
        raise ModelDirError(str(err)) from None


# What reading a damaged integer-only file raises: its JSON description unreadable or not fitting the tensors.
INTEGER_FILE_ERRORS = (ValueError, KeyError, TypeError, RuntimeError)


def _damaged_integer_file(path: Path, err: Exception) -> ModelDirError:
    return ModelDirError(f"{path}: a damaged integer-only I-BERT file ({type(err).__name__}: {err}); "
                         "export it again with `encoderkit quantize`")


def _load_integer(directory: Path, head: str) -> nn.Module:
    from encoderkit.models.ibert.integer import load_integer_model

    if head not in INTEGER_HEADS:
        raise ModelDirError(f"{directory}: an integer-only I-BERT has no {head} head (it is a classifier or an "
                            "encoder); use it with `encoderkit predict`")
    path = directory / WEIGHTS_FILE
    try:
        model = load_integer_model(path)
    except INTEGER_FILE_ERRORS as err:  # a description that does not fit the tensors
        raise _damaged_integer_file(path, err) from None
    if head != "base" and model.spec["head"] != head:
        raise ModelDirError(f"{directory}: an integer-only I-BERT whose head is {model.spec['head']}, not {head}")
    return model


def max_tokens(model: nn.Module) -> int:
    """How many tokens a sequence may hold: the position table's size, less RoBERTa's (I-BERT's) offset of
    pad_token_id + 1 where positions count from there."""
    if hasattr(model, "spec"):  # the integer-only model records its table, not a config
        return len(model.embeddings.position_table) - model.spec["pad_token_id"] - 1
    config = model.config
    offset = config.pad_token_id + 1 if config.model_type in ("ibert", "roberta") else 0
    return config.max_position_embeddings - offset


def label_names(model: nn.Module) -> list[str]:
    """A classifier's class names (config.json's id2label; transformers' LABEL_<i> where it names none); [] for an
    integer-only file exported before its description recorded them."""
    if hasattr(model, "spec"):  # the integer-only model: its description
        return model.spec.get("labels", [])
    return model.config.label_names()


def vocab_size(model: nn.Module) -> int:
    """The number of token ids the model embeds (what its tokenizer must have)."""
    if hasattr(model, "spec"):  # the integer-only model: its int8 word table
        return model.embeddings.word_table.shape[0]
    return model.config.vocab_size


def saved_head(directory: str | os.PathLike) -> tuple[str, str | None]:
    """(family, head) of the model a dir holds: config.json's model_type and the head of its first
    architecture (None if it names none of the family's); "ibert-integer" for the integer-only format."""
    from encoderkit.models import hf_format

    if is_integer_dir(directory):
        from encoderkit.models.ibert.integer import read_spec

        path = Path(directory) / WEIGHTS_FILE
        try:
            return "integer-only ibert", read_spec(path)["head"]
        except INTEGER_FILE_ERRORS as err:
            raise _damaged_integer_file(path, err) from None
    config = read_model_config(directory)
    heads = hf_format.FAMILIES[config["model_type"]][1]
    names = {model_class.__name__: head for head, model_class in heads.items()}
    architectures = config.get("architectures") or [None]
    # a dir with encoderkit's extensions names its class EncoderkitX, so that transformers does not load it as X
    return config["model_type"], names.get(str(architectures[0]).removeprefix(hf_format.EXTENDED_PREFIX))
