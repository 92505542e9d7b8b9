"""The Hugging Face checkpoint format, both ways: config.json + model.safetensors with HF's tensor names.

This module is the one place that knows HF's tensor names. A tensor name is our module path plus the
parameter's name (weight, bias); the tables below map module paths, by model_type (I-BERT's module paths are
transformers' own: its names map to themselves). Loading follows transformers:
a head model loads a base-model checkpoint (no `albert.`/`electra.`/`bert.`/`roberta.` prefix) and a base model
loads a head checkpoint; head tensors missing from the file (a classifier on a pretraining checkpoint)
are freshly initialised and reported; tied decoder weights may be absent from the file or present.
A tensor that several modules share (I-BERT's shared layers) is written once, under its first name.
Weights are read from safetensors only: nothing is unpickled. Files are written atomically.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import re
from pathlib import Path

import safetensors
import safetensors.torch
import torch
from torch import nn

from encoderkit.files import atomic_write, write_text

from .albert import (
    AlbertConfig,
    AlbertForMaskedLM,
    AlbertForMultipleChoice,
    AlbertForPreTraining,
    AlbertForQuestionAnswering,
    AlbertForSequenceClassification,
    AlbertForTokenClassification,
    AlbertModel,
)
from .electra import (
    BertConfig,
    BertForMaskedLM,
    BertForMultipleChoice,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    ElectraConfig,
    ElectraForMaskedLM,
    ElectraForMultipleChoice,
    ElectraForPreTraining,
    ElectraForQuestionAnswering,
    ElectraForSequenceClassification,
    ElectraForTokenClassification,
    ElectraGeneratorDiscriminator,
    ElectraModel,
)
from .ibert.model import HEADS as IBERT_HEADS
from .ibert.model import IBertConfig
from .layers import unique_state
from .roberta import (
    RobertaConfig,
    RobertaForMaskedLM,
    RobertaForMultipleChoice,
    RobertaForQuestionAnswering,
    RobertaForSequenceClassification,
    RobertaForTokenClassification,
    RobertaModel,
)

logger = logging.getLogger(__name__)

# model_type -> (config class, {head name: model class}). The model class's name is HF's architecture.
FAMILIES = {
    "albert": (AlbertConfig, {
        "base": AlbertModel,
        "pretraining": AlbertForPreTraining,
        "masked_lm": AlbertForMaskedLM,
        "sequence_classification": AlbertForSequenceClassification,
        "token_classification": AlbertForTokenClassification,
        "question_answering": AlbertForQuestionAnswering,
        "multiple_choice": AlbertForMultipleChoice,
    }),
    "electra": (ElectraConfig, {
        "base": ElectraModel,
        "discriminator": ElectraForPreTraining,
        "masked_lm": ElectraForMaskedLM,
        "sequence_classification": ElectraForSequenceClassification,
        "token_classification": ElectraForTokenClassification,
        "question_answering": ElectraForQuestionAnswering,
        "multiple_choice": ElectraForMultipleChoice,
    }),
    "bert": (BertConfig, {
        "base": BertModel,
        "masked_lm": BertForMaskedLM,
        "sequence_classification": BertForSequenceClassification,
        "token_classification": BertForTokenClassification,
        "question_answering": BertForQuestionAnswering,
        "multiple_choice": BertForMultipleChoice,
    }),
    "ibert": (IBertConfig, IBERT_HEADS),
    "roberta": (RobertaConfig, {
        "base": RobertaModel,
        "masked_lm": RobertaForMaskedLM,
        "sequence_classification": RobertaForSequenceClassification,
        "token_classification": RobertaForTokenClassification,
        "question_answering": RobertaForQuestionAnswering,
        "multiple_choice": RobertaForMultipleChoice,
    }),
}

_BASE_MODELS = (AlbertModel, ElectraModel)


def _layer_names(ours: str, hf: str, parts: dict[str, str]) -> list[tuple[str, str]]:
    return [(rf"{ours}\.{re.escape(a)}", rf"{hf}.{b}") for a, b in parts.items()]


# Encoder module paths (regex on our path -> HF path, relative to the base model), by model_type.
_EMBEDDINGS = [
    (r"embeddings\.norm", "embeddings.LayerNorm"),
    (r"embeddings\.(word|position|token_type)_embeddings", r"embeddings.\1_embeddings"),
]
ENCODER_NAMES = {
    "albert": _EMBEDDINGS + [
        (r"embedding_projection", "encoder.embedding_hidden_mapping_in"),
        (r"pooler\.dense", "pooler"),
        *_layer_names(r"layer_groups\.(\d+)\.(\d+)", r"encoder.albert_layer_groups.\1.albert_layers.\2", {
            "attention.query": "attention.query",
            "attention.key": "attention.key",
            "attention.value": "attention.value",
            "attention.output": "attention.dense",
            "attention_norm": "attention.LayerNorm",
            "feed_forward.up": "ffn",
            "feed_forward.down": "ffn_output",
            "output_norm": "full_layer_layer_norm",
        }),
    ],
    "bert": _EMBEDDINGS + [
        (r"embedding_projection", "embeddings_project"),
        (r"pooler\.dense", "pooler.dense"),
        *_layer_names(r"layers\.(\d+)", r"encoder.layer.\1", {
            "attention.query": "attention.self.query",
            "attention.key": "attention.self.key",
            "attention.value": "attention.self.value",
            "attention.output": "attention.output.dense",
            "attention_norm": "attention.output.LayerNorm",
            "feed_forward.up": "intermediate.dense",
            "feed_forward.down": "output.dense",
            "output_norm": "output.LayerNorm",
        }),
    ],
}
ENCODER_NAMES["electra"] = ENCODER_NAMES["bert"]  # ELECTRA's encoder is BERT's, plus embeddings_project
ENCODER_NAMES["roberta"] = ENCODER_NAMES["bert"]  # RoBERTa's is BERT's (other positions, same names)

# Head module paths (our path -> HF path), by our class name.
_ALBERT_MLM = {"mlm_head.dense": "predictions.dense", "mlm_head.norm": "predictions.LayerNorm",
               "mlm_head": "predictions"}
HEAD_NAMES = {
    "AlbertModel": {},
    "AlbertForPreTraining": {**_ALBERT_MLM, "sop_classifier": "sop_classifier.classifier"},
    "AlbertForMaskedLM": _ALBERT_MLM,
    "AlbertForSequenceClassification": {"classifier": "classifier"},
    "AlbertForTokenClassification": {"classifier": "classifier"},
    "AlbertForQuestionAnswering": {"qa_outputs": "qa_outputs"},
    "AlbertForMultipleChoice": {"classifier": "classifier"},
    "ElectraModel": {},
    "ElectraForPreTraining": {"discriminator_head.dense": "discriminator_predictions.dense",
                              "discriminator_head.prediction": "discriminator_predictions.dense_prediction"},
    "ElectraForMaskedLM": {"mlm_head.dense": "generator_predictions.dense",
                           "mlm_head.norm": "generator_predictions.LayerNorm", "mlm_head": "generator_lm_head"},
    "ElectraForSequenceClassification": {"classifier.dense": "classifier.dense",
                                         "classifier.out_proj": "classifier.out_proj"},
    "ElectraForTokenClassification": {"classifier": "classifier"},
    "ElectraForQuestionAnswering": {"qa_outputs": "qa_outputs"},
    "ElectraForMultipleChoice": {"sequence_summary.summary": "sequence_summary.summary", "classifier": "classifier"},
    "BertModel": {},
    "BertForMaskedLM": {"mlm_head.dense": "cls.predictions.transform.dense",
                        "mlm_head.norm": "cls.predictions.transform.LayerNorm", "mlm_head": "cls.predictions"},
    "BertForSequenceClassification": {"classifier": "classifier"},
    "BertForTokenClassification": {"classifier": "classifier"},
    "BertForQuestionAnswering": {"qa_outputs": "qa_outputs"},
    "BertForMultipleChoice": {"classifier": "classifier"},
    "RobertaModel": {},
    "RobertaForMaskedLM": {"mlm_head.dense": "lm_head.dense", "mlm_head.norm": "lm_head.layer_norm",
                           "mlm_head": "lm_head"},
    "RobertaForSequenceClassification": {"classifier.dense": "classifier.dense",
                                         "classifier.out_proj": "classifier.out_proj"},
    "RobertaForTokenClassification": {"classifier": "classifier"},
    "RobertaForQuestionAnswering": {"qa_outputs": "qa_outputs"},
    "RobertaForMultipleChoice": {"classifier": "classifier"},
}

# Decoder weights that transformers ties to other tensors; older checkpoints store them, we never need them.
TIED_NAMES = {"predictions.decoder.weight", "predictions.decoder.bias", "generator_lm_head.weight",
              "cls.predictions.decoder.weight", "cls.predictions.decoder.bias", "lm_head.decoder.weight",
              "lm_head.decoder.bias"}
# Families whose module paths are HF's already (no table): our names are the file's names.
SAME_NAMES = {"ibert"}


def hf_encoder_module(model_type: str, path: str) -> str:
    """HF's module path (in the base model) of our encoder module `path` (in our base model); KeyError if none."""
    for pattern, replacement in ENCODER_NAMES[model_type]:
        if re.fullmatch(pattern, path):
            return re.sub(pattern, replacement, path)
    raise KeyError(path)


@functools.cache
def _inverse(pattern: str, replacement: str) -> tuple[str, str]:
    """An ENCODER_NAMES entry backwards: (regex on HF's path, replacement that gives ours). The tables' groups
    are not nested, and HF's side refers to each at most once."""
    ours, groups = "", {}
    for i, piece in enumerate(re.split(r"(\([^()]*\))", pattern)):
        if i % 2:  # a group: its pattern, and a reference to it in our path
            groups[str(len(groups) + 1)] = piece[1:-1]
            ours += rf"\g<g{len(groups)}>"
        else:  # literal text, as re.escape wrote it
            ours += re.sub(r"\\(.)", r"\1", piece)
    hf = "".join(f"(?P<g{piece}>{groups[piece]})" if i % 2 else re.escape(piece)
                 for i, piece in enumerate(re.split(r"\\(\d)", replacement)))
    return hf, ours


def our_encoder_module(model_type: str, hf_path: str) -> str | None:
    """Our module path (in our base model) of HF's encoder module `hf_path` (in HF's base model, without the
    `albert.`-style prefix) of a `model_type` checkpoint; None for a module the tables do not map."""
    for pattern, replacement in ENCODER_NAMES[model_type]:
        hf, ours = _inverse(pattern, replacement)
        match = re.fullmatch(hf, hf_path)
        if match:
            return match.expand(ours)
    return None


def _hf_module(model_type: str, path: str, is_base: bool, head_names: dict[str, str]) -> str:
    if not is_base:
        if path in head_names:
            return head_names[path]
        if not path.startswith("encoder."):
            raise KeyError(path)
        path = path.removeprefix("encoder.")
    name = hf_encoder_module(model_type, path)
    return name if is_base else f"{model_type}.{name}"


def hf_names(model: nn.Module) -> dict[str, str]:
    """Our state_dict name -> HF tensor name (with the `albert.`-style prefix on head models), each tensor once
    (a shared one under its first name, see layers.unique_state)."""
    model_type = model.config.model_type
    if model_type in SAME_NAMES:
        return {name: name for name in unique_state(model)}
    head_names = HEAD_NAMES[type(model).__name__]
    is_base = isinstance(model, _BASE_MODELS)
    names = {}
    for name in unique_state(model):
        path, param = name.rsplit(".", 1)
        names[name] = f"{_hf_module(model_type, path, is_base, head_names)}.{param}"
    return names


def _part(name: str) -> str:
    """Which part of a model a parameter belongs to: embeddings (with the E -> H projection: our
    embedding_projection, I-BERT's embeddings_project), encoder (the layers: I-BERT's encoder.layer) or heads
    (the rest)."""
    parts = name.split(".")
    if any(part.startswith("embedding") for part in parts):
        return "embeddings"
    if {"layers", "layer_groups", "layer"} & set(parts):
        return "encoder"
    return "heads"


def parameter_breakdown(model: nn.Module) -> dict[str, int]:
    """Parameter counts: total, embeddings (incl. the E->H projection), encoder layers, heads (incl. pooler).

    Tied and shared parameters are counted once.
    """
    counts = {"total": 0, "embeddings": 0, "encoder": 0, "heads": 0}
    for name, p in model.named_parameters():  # yields each shared Parameter once
        counts["total"] += p.numel()
        counts[_part(name)] += p.numel()
    return counts


def save_pretrained(model: nn.Module, directory: str | os.PathLike) -> None:
    """Write config.json and model.safetensors so that transformers' from_pretrained loads the model.

    An ElectraGeneratorDiscriminator is written as two such directories, generator/ and discriminator/.
    """
    directory = Path(directory)
    if isinstance(model, ElectraGeneratorDiscriminator):
        save_pretrained(model.generator, directory / "generator")
        save_pretrained(model.discriminator, directory / "discriminator")
        return
    directory.mkdir(parents=True, exist_ok=True)
    config = {**model.config.to_hf_dict(), "architectures": [type(model).__name__]}
    extensions = model.config.extensions()
    if extensions:  # transformers would build another model from this dir: the name and a README say so
        config.update(architectures=[EXTENDED_PREFIX + type(model).__name__], encoderkit_extensions=extensions)
        write_text(directory / "README.md", _extensions_readme(type(model).__name__, extensions))
    names = hf_names(model)
    tensors = {names[k]: v.contiguous().cpu() for k, v in unique_state(model).items()}

    atomic_write(directory / "model.safetensors",
                 lambda tmp: safetensors.torch.save_file(tensors, tmp, metadata={"format": "pt"}))
    write_text(directory / "config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")


# What the extensions of our models are, for the README of a dir that uses them.
EXTENDED_PREFIX = "Encoderkit"
_EXTENSIONS = {
    "embedding_size": "embeddings narrower than the layers, projected up to hidden_size (`embeddings_project`, "
                      "ELECTRA-Small's and ALBERT's)",
    "num_hidden_groups": "ALBERT's cross-layer sharing: layers that run one group's weights, stored once",
    "inner_group_num": "ALBERT's layers per shared group",
}


def _extensions_readme(architecture: str, extensions: list[str]) -> str:
    listed = "".join(f"- `{name}`: {_EXTENSIONS[name]}\n" for name in extensions)
    return (f"# An encoderkit {architecture} with encoderkit's extensions\n\n"
            f"This model uses config fields that transformers' class does not have:\n\n{listed}\n"
            f"transformers' `{architecture}` would build a model without them from this config.json and load "
            "these weights wrongly or not at all, so config.json names the architecture "
            f"`{EXTENDED_PREFIX}{architecture}` and lists the fields under `encoderkit_extensions`. Load it with "
            "encoderkit (`encoderkit predict --model <this dir>`, `encoderkit.models.load.load_model`).\n")


def read_config(directory: str | os.PathLike) -> dict:
    """config.json of a model dir, checked to be a JSON object (ValueError naming the file otherwise)."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise ValueError(f"{directory}: no config.json (not a Hugging Face model directory)")
    try:
        config = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err}); restore the file the model was saved with") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a JSON object of config fields, got {type(config).__name__}")
    return config


def _damaged(path: Path, err: Exception) -> ValueError:
    return ValueError(f"{path}: not a complete safetensors file ({err}); the file is damaged or truncated: "
                      "copy or save the model again")


def read_header(path: str | os.PathLike) -> dict[str, tuple[tuple[int, ...], str]]:
    """The name -> (shape, dtype kind) of every tensor of a safetensors file, from its header: no tensor is read.
    Kinds are "float", "int" and "bool"."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file (only model.safetensors is read, never pickled .bin files)")
    try:
        with safetensors.safe_open(str(path), framework="pt") as file:
            slices = {name: file.get_slice(name) for name in file.keys()}  # noqa: SIM118 (no iteration)
            return {name: (tuple(s.get_shape()), _kind(s.get_dtype())) for name, s in slices.items()}
    except safetensors.SafetensorError as err:
        raise _damaged(path, err) from None


def _kind(dtype: torch.dtype | str) -> str:
    """"float", "int" or "bool": a tensor may be loaded into a parameter of another dtype of the same kind."""
    if isinstance(dtype, torch.dtype):
        return "float" if dtype.is_floating_point else "bool" if dtype == torch.bool else "int"
    return "float" if dtype.startswith(("F", "BF")) else "bool" if dtype == "BOOL" else "int"  # F32, BF16, I64


def read_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a model.safetensors file, by HF name; ValueError for a damaged file or a non-finite weight
    (a model with NaN or inf weights answers NaN, and training from it goes nowhere)."""
    read_header(path)  # a missing, truncated or garbage file is named before anything is read
    try:
        tensors = safetensors.torch.load_file(path)
    except safetensors.SafetensorError as err:
        raise _damaged(Path(path), err) from None
    for name, tensor in tensors.items():
        # NaN and inf show in the extremes: aminmax reads a tensor once, without isfinite's bool copy of it
        extremes = torch.stack(torch.aminmax(tensor)) if tensor.is_floating_point() and tensor.numel() else None
        if extremes is not None and not torch.isfinite(extremes).all():
            raise ValueError(f"{path}: tensor {name} holds NaN or infinite values; the model is broken (a diverged "
                             "run?): use an earlier checkpoint")
    return tensors


def load_pretrained(directory: str | os.PathLike, head: str = "base", **config_overrides) -> nn.Module:
    """Build the `head` model of config.json's model_type and load model.safetensors into it.

    config_overrides replace config fields (e.g. num_labels=3 for a new classifier; for I-BERT quant_mode=True
    to start quantization-aware training from a float checkpoint). Head tensors the file lacks are left freshly
    initialised and logged as a warning. The model comes back in eval mode, as transformers' does.
    """
    model, fresh = read_pretrained(directory, head, **config_overrides)
    if fresh:
        logger.warning("%s: newly initialised (not in %s): %s", type(model).__name__, directory, ", ".join(fresh))
    return model


def read_pretrained(directory: str | os.PathLike, head: str = "base", **config_overrides) -> tuple[nn.Module, list]:
    """load_pretrained, returning also the HF names of the head tensors the file lacks (left freshly initialised).

    Everything is checked before a tensor is read: config.json against the family's config (fields.FieldError
    names the field), then the names, shapes and dtypes in model.safetensors' header against the model.
    """
    directory = Path(directory)
    hf_config = read_config(directory)
    model_type = hf_config.get("model_type")
    if model_type not in FAMILIES:
        raise ValueError(f"{directory / 'config.json'}: unknown model_type {model_type!r}; "
                         f"valid: {', '.join(FAMILIES)}")
    config_class, heads = FAMILIES[model_type]
    if head not in heads:
        raise ValueError(f"unknown head {head!r} for {model_type}; valid: {', '.join(heads)}")
    try:
        config = config_class.from_hf_dict(hf_config)
    except ValueError as err:  # FieldError: a field of the wrong type or out of range
        raise ValueError(f"{directory / 'config.json'}: {err}; correct it (or save the model again)") from None
    try:
        config = dataclasses.replace(config, **config_overrides)
    except TypeError as e:
        raise ValueError(f"config override: {e}") from None
    path = directory / "model.safetensors"
    with _skeleton():  # the model's names and shapes, without allocating or initialising it
        model = heads[head](config)
    fresh = check_tensors(model, read_header(path), path)
    if fresh or len(unique_state(model)) < len(model.state_dict()):
        model = heads[head](config)  # initialised: some tensors stay fresh, or assigning would undo a sharing
        load_weights(model, path)
    else:  # the file holds every tensor: no 100M random weights drawn only to be overwritten (seconds)
        load_state(model, read_tensors(path), path, assign=True)
    return model.eval(), fresh


@contextlib.contextmanager
def _skeleton():
    """Modules built on the meta device, without nn.init.normal_ (nn.Embedding's and layers.init_weights'): on
    meta tensors torch runs it through a Python decomposition that imports torch._dynamo, ~2 s of CPU."""
    normal = nn.init.normal_
    nn.init.normal_ = lambda tensor, *args, **kwargs: tensor
    try:
        with torch.device("meta"):
            yield
    finally:
        nn.init.normal_ = normal


def load_weights(model: nn.Module, path: Path) -> list[str]:
    """Copy an HF safetensors file into `model` (rules in the module docstring).

    Returns the HF names of the head tensors the file lacks, which keep their fresh initialisation.
    """
    return load_state(model, read_tensors(path), path)


def check_tensors(model: nn.Module, available: dict[str, tuple[tuple[int, ...], str]],
                  source: str | os.PathLike) -> list[str]:
    """Check that tensors by HF name -> (shape, dtype kind) fit `model`: every encoder tensor there, each with the
    model's shape and kind. Returns the HF names of the head tensors missing (see load_state)."""
    prefix = f"{model.config.model_type}."
    # Compare names without the base-model prefix, so base and head checkpoints load either way.
    available = {k.removeprefix(prefix): v for k, v in available.items()}
    names = {ours: hf.removeprefix(prefix) for ours, hf in hf_names(model).items()}
    state = model.state_dict()
    missing = [ours for ours, hf in names.items() if hf not in available]
    broken = [ours for ours in missing if _part(ours) != "heads"]
    if broken:
        raise ValueError(f"{source}: no tensor for {', '.join(prefix + names[o] for o in broken[:5])}"
                         f"{' ...' if len(broken) > 5 else ''} (is this a {type(model).__name__} checkpoint?)")
    for ours, hf in names.items():
        if hf not in available:
            continue
        shape, kind = available[hf]
        if shape != tuple(state[ours].shape):
            raise ValueError(f"{source}: tensor {hf} has shape {shape}, the model expects "
                             f"{tuple(state[ours].shape)} (check config.json)")
        if kind != _kind(state[ours].dtype):
            raise ValueError(f"{source}: tensor {hf} holds {kind} values, the model expects "
                             f"{_kind(state[ours].dtype)} ones")
    return [names[o] for o in missing]


def load_state(model: nn.Module, tensors: dict[str, torch.Tensor], source: str | os.PathLike,
               assign: bool = False) -> list[str]:
    """load_weights of tensors by HF name that `source` (a file, for messages) holds. With `assign` (a model on
    the meta device, every tensor in `tensors`) the model's tensors are replaced by copies in its dtypes."""
    missing = check_tensors(model, {k: (tuple(v.shape), _kind(v.dtype)) for k, v in tensors.items()}, source)
    prefix = f"{model.config.model_type}."
    tensors = {k.removeprefix(prefix): v for k, v in tensors.items()}
    names = {ours: hf.removeprefix(prefix) for ours, hf in hf_names(model).items()}
    state = model.state_dict()
    if assign:  # copies all the same: safetensors' tensors start at unaligned offsets, where GEMMs round otherwise
        model.load_state_dict({ours: tensors[hf].to(state[ours].dtype, copy=True) for ours, hf in names.items()},
                              assign=True)
    else:
        with torch.no_grad():
            for ours, hf in names.items():
                if hf in tensors:
                    state[ours].copy_(tensors[hf])
    unused = set(tensors) - set(names.values()) - TIED_NAMES
    if unused:
        logger.info("%s: unused tensors in %s: %s", type(model).__name__, source, ", ".join(sorted(unused)))
    return missing


def load_generator_discriminator(directory: str | os.PathLike) -> ElectraGeneratorDiscriminator:
    """Read back what save_pretrained wrote for an ElectraGeneratorDiscriminator (shared embeddings restored)."""
    directory = Path(directory)
    configs = {}
    for part in ("generator", "discriminator"):
        hf_config = read_config(directory / part)
        if hf_config.get("model_type") != "electra":
            raise ValueError(f"{directory / part / 'config.json'}: model_type {hf_config.get('model_type')!r}, "
                             "expected 'electra'")
        configs[part] = ElectraConfig.from_hf_dict(hf_config)
    model = ElectraGeneratorDiscriminator(configs["generator"], configs["discriminator"])
    # The discriminator's embeddings are loaded last, so they are the shared ones (the two files hold the same).
    load_weights(model.generator, directory / "generator" / "model.safetensors")
    load_weights(model.discriminator, directory / "discriminator" / "model.safetensors")
    return model
