"""From a float BERT / ELECTRA / RoBERTa / ALBERT (BERT's post-LN layers) in Hugging Face format to an I-BERT
model: `from_float`.

Encoder tensor names come from hf_format's tables, the one place that knows HF's names: a checkpoint's name goes
back to our module path through its family's table (ENCODER_NAMES["albert"], or ["bert"] for BERT, ELECTRA and
RoBERTa, whose encoders are BERT's), an ALBERT group layer (`layer_groups.G.N`) becomes the layer application
that first runs it (`layers.I`, see model.IBertEncoder), and the path goes out through BERT's table, whose names
are I-BERT's.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .. import hf_format
from .model import BASE_PREFIX, HEADS, IBertConfig

FLOAT_FAMILIES = ("albert", "bert", "electra", "roberta")

# Head tensors by source model_type and our head: source name -> ours. ELECTRA's classifier is not mapped:
# its activation is gelu where RoBERTa's (I-BERT's) is tanh, so it starts fresh.
_FLOAT_HEADS = {
    ("albert", "sequence_classification"): {"albert.pooler": "classifier.dense", "classifier": "classifier.out_proj"},
    ("bert", "sequence_classification"): {"bert.pooler.dense": "classifier.dense",
                                          "classifier": "classifier.out_proj"},
    ("bert", "masked_lm"): {"cls.predictions.transform.dense": "lm_head.dense",
                            "cls.predictions.transform.LayerNorm": "lm_head.layer_norm",
                            "cls.predictions": "lm_head"},
    ("electra", "masked_lm"): {"generator_predictions.dense": "lm_head.dense",
                               "generator_predictions.LayerNorm": "lm_head.layer_norm",
                               "generator_lm_head": "lm_head"},
    ("roberta", "sequence_classification"): {"classifier": "classifier"},
    ("roberta", "masked_lm"): {"lm_head": "lm_head"},
    # Token classifiers are one float linear layer in every family, so all of them map, ELECTRA's too.
    **{(family, "token_classification"): {"classifier": "classifier"} for family in FLOAT_FAMILIES},
}


def _float_encoder_name(name: str, model_type: str, config: IBertConfig) -> str | None:
    """I-BERT's name (without `ibert.`) of a float checkpoint's encoder tensor; None for other tensors.

    The tensors of ALBERT's group layer go to the first layer application that runs it (IBertEncoder).
    """
    module, _, param = name.removeprefix(f"{model_type}.").rpartition(".")
    ours = hf_format.our_encoder_module("albert" if model_type == "albert" else "bert", module)
    if ours is None:
        return None
    if ours.startswith("layer_groups."):
        _, group, inner, rest = ours.split(".", 3)
        application = config.layer_runs().index(int(group) * config.inner_group_num + int(inner))
        ours = f"layers.{application}.{rest}"
    return f"{hf_format.hf_encoder_module('bert', ours)}.{param}"


def _projected_width(src: dict) -> int | None:
    """The float model's embedding width if it projects its embeddings up: ALBERT always, ELECTRA when E != H."""
    if src["model_type"] == "albert" or src.get("embedding_size", src["hidden_size"]) != src["hidden_size"]:
        return src["embedding_size"]
    return None


def _rename_head(name: str, table: dict[str, str]) -> str | None:
    """The name under the table's module path that starts `name`, or None."""
    for source, ours in table.items():
        if name.startswith(source + "."):
            return ours + name.removeprefix(source)
    return None


def from_float(directory: str | os.PathLike, head: str = "base", quant_mode: bool = True,
               force_dequant: str = "none") -> tuple[nn.Module, list[str]]:
    """An I-BERT model with the weights of a float BERT, ELECTRA, RoBERTa or ALBERT in Hugging Face format.

    `directory` holds config.json (model_type albert, bert, electra or roberta; hidden_act gelu, or ALBERT's
    gelu_new) and model.safetensors with transformers' names (as our hf_format.save_pretrained writes them).
    Encoder weights map one to one, ELECTRA's and ALBERT's embedding projection included; ALBERT's shared layer
    groups become shared layers (IBertEncoder). BERT/ELECTRA/ALBERT positions count from 0, I-BERT's
    (RoBERTa's) from pad_token_id + 1, so the position table is shifted. Heads: BERT's and ALBERT's pooler +
    classifier become RoBERTa's classifier dense + out_proj (equal in eval); MLM heads map; ELECTRA's
    classifier does not (see _FLOAT_HEADS).

    Returns (model, names of the tensors left freshly initialised). The activation ranges are not set:
    run `calibrate` or quantization-aware fine-tuning before using the model in eval mode.
    """
    directory = Path(directory)
    src = hf_format.read_config(directory)
    model_type = src.get("model_type")
    if model_type not in FLOAT_FAMILIES:
        raise ValueError(f"{directory / 'config.json'}: model_type {model_type!r}; "
                         f"expected {', '.join(FLOAT_FAMILIES)}")
    pad = src.get("pad_token_id", 0)
    offset = 0 if model_type == "roberta" else pad + 1
    config = IBertConfig.from_hf_dict({**src, "pad_token_id": pad, "quant_mode": quant_mode,
                                       "force_dequant": force_dequant, "embedding_size": _projected_width(src),
                                       "max_position_embeddings": src["max_position_embeddings"] + offset})
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; valid: {', '.join(HEADS)}")
    model = HEADS[head](config)
    head_table = _FLOAT_HEADS.get((model_type, head), {})
    path = directory / "model.safetensors"
    tensors = {}
    for name, tensor in hf_format.read_tensors(path).items():
        ours = _rename_head(name, head_table) or _float_encoder_name(name, model_type, config)
        if ours is not None:
            tensors[ours] = tensor
    positions = tensors["embeddings.position_embeddings.weight"]
    tensors["embeddings.position_embeddings.weight"] = torch.cat([positions.new_zeros(offset, positions.shape[1]),
                                                                  positions])
    for name, buffer in model.named_buffers():  # a float checkpoint has no ranges or integer copies
        tensors.setdefault(name.removeprefix(BASE_PREFIX), buffer)
    missing = hf_format.load_state(model, tensors, path)
    return model, missing
