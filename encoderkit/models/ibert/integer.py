"""The integer-only I-BERT: `IntegerIBert`, whose tensors are integers and whose forward uses integer arithmetic
only. export.py builds it from a QAT model (model.py); `load_integer_model` reads back what `save` wrote, without
the float or the QAT model.

- GEMMs: int8 x int8 -> int32 with `torch._int_mm` (one for q/k/v together, one per head for the
  attention products). Attention probabilities are 8-bit unsigned (0..255); they enter the int8 GEMM as
  p - 128, and 128 * sum(v) is added back.
- Requantization: round(v * m / 2^e) with integer m, e (fixed-point, from export.py), rounding half up.
- i-GELU, i-softmax and integer LayerNorm as in quant.py, with the constants quant.py derives;
  the LayerNorm's square root by Newton's method on integers.
- Embeddings: int8 tables, and where the model has one, the projection E -> H as one more int8 GEMM; the
  classifier heads (float in I-BERT) run on 16-bit weights, the sequence classifier's with a lookup
  table for tanh, and only their logits are turned into floats, at the very end.

The elementwise chains between GEMMs are plain functions of integer tensors (`int_ops.py`), run one
sequence at a time; kernels.py compiles each ahead of time (once per machine, cached) into one pass over
memory when a C++ compiler is present, else they run eagerly, with the same results. Batches are split
over the CPU as schedule.py says. `save` / `load_integer_model` use safetensors: integer tensors plus a
JSON description of the shapes.

ALBERT's shared layers (model.IBertEncoder): every layer application has its own constants (its biases are
integers at its own input's scale, its requantizations its own ranges'), while the int8 weight matrices
(SHARED_WEIGHTS) are stored once, with the first application that runs them; spec["layer_weights"] names it
for each application.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import safetensors
import safetensors.torch
import torch
from torch import nn

from ..layers import position_ids, unique_state
from . import int_ops, kernels, schedule

FORMAT = "encoderkit-integer-ibert"
# A layer's int8 weight matrices: what layer applications that run the same (ALBERT) layer share.
SHARED_WEIGHTS = ("attention.qkv_weight", "attention_output.weight", "ffn_in.weight", "ffn_out.weight")


def _sub(tensors: dict, prefix: str) -> dict:
    return {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}


class _Tensors(nn.Module):
    """Named integer tensors, held as buffers so that state_dict (and the safetensors file) has them."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        super().__init__()
        for name, tensor in tensors.items():
            self.register_buffer(name, tensor)


def _constants(block: nn.Module) -> dict[str, torch.Tensor]:
    """A block's tensors by name, in sorted order: a compiled chain's signature includes the order."""
    return dict(sorted(block.named_buffers()))


def _stage(owner: nn.Module, fn, args: tuple, seq_dims: tuple, fuse: bool, **static) -> torch.Tensor:
    """fn(*args, **static): its compiled kernel (kernels.chain, looked up once per `owner`), or fn itself."""
    if not fuse:
        return fn(*args, **static)
    kernel = owner.__dict__.get("_kernel")
    if kernel is None:
        kernel = owner.__dict__["_kernel"] = kernels.chain(fn, args, seq_dims, **static)
    return kernel(*args)


class IntegerLayer(nn.Module):
    """One encoder layer, run on whole sequences."""

    def __init__(self, tensors: dict[str, torch.Tensor], num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.attention = _Tensors(_sub(tensors, "attention."))
        self.attention_output = _Tensors(_sub(tensors, "attention_output."))
        self.ffn_in = _Tensors(_sub(tensors, "ffn_in."))
        self.ffn_out = _Tensors(_sub(tensors, "ffn_out."))

    def constants(self) -> tuple[dict, dict, dict, dict]:
        return tuple(_constants(block) for block in (self.attention, self.attention_output, self.ffn_in, self.ffn_out))

    def forward(self, h: torch.Tensor, mask: torch.Tensor, fuse: bool) -> torch.Tensor:
        """h: int8 (S, H) of one sequence, mask (1, 1, S) -> int8 (S, H)."""
        return _stage(self, int_ops.layer, (h, mask, *self.constants()), (0, 2, None, None, None, None), fuse,
                      num_heads=self.num_heads)


class IntegerClassifier(_Tensors):
    """On the first token: dense (16-bit weights) -> tanh by table -> out_proj (16-bit weights) -> logits as floats."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        acc = h[:, 0].long() @ self.dense_weight.t() + self.dense_bias
        grid = int_ops.fixed_mul(acc, self.tanh_in_m, self.tanh_in_e).clamp(-(2**15), 2**15 - 1)
        tanh = self.tanh_table[grid + 2**15]
        logits = tanh @ self.out_proj_weight.t() + self.out_proj_bias
        return (logits.double() * self.logit_scale).float()


class IntegerTokenClassifier(_Tensors):
    """On every position: a linear layer (16-bit weights) -> logits (B, S, num_labels) as floats."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        logits = h.long() @ self.weight.t() + self.bias
        return (logits.double() * self.logit_scale).float()


CLASSIFIER_HEADS = {"sequence_classification": IntegerClassifier, "token_classification": IntegerTokenClassifier}


class IntegerIBert(nn.Module):
    """Integer-only I-BERT. forward(input_ids, attention_mask=None, token_type_ids=None) returns float logits
    (B, num_labels) for a sequence classifier, (B, S, num_labels) for a token classifier, int8 hidden states
    (B, S, H) (times `output_scale`) for a base model. spec["labels"] names a classifier's classes.

    `fuse` (default True) runs the elementwise chains compiled (kernels.py); False runs them eagerly.
    """

    def __init__(self, spec: dict, tensors: dict[str, torch.Tensor]):
        super().__init__()
        if spec.get("format") != FORMAT:
            raise ValueError(f"not an integer I-BERT ({FORMAT}) description: {spec.get('format')!r}")
        self.spec = spec
        self.fuse = True
        self.embeddings = _Tensors(_sub(tensors, "embeddings."))
        projection = _sub(tensors, "embeddings_project.")
        self.embeddings_project = _Tensors(projection) if projection else None
        # Layer applications of one shared layer hold the same weight tensors (save writes them once).
        tensors = dict(tensors)
        for i, owner in enumerate(self.layer_weights):
            for name in SHARED_WEIGHTS:
                tensors.setdefault(f"layers.{i}.{name}", tensors[f"layers.{owner}.{name}"])
        self.layers = nn.ModuleList(IntegerLayer(_sub(tensors, f"layers.{i}."), spec["num_attention_heads"])
                                    for i in range(spec["num_hidden_layers"]))
        head = CLASSIFIER_HEADS.get(spec["head"])
        self.classifier = head(_sub(tensors, "classifier.")) if head is not None else None

    @property
    def layer_weights(self) -> list[int]:
        """For each layer application, the one whose weights it runs (itself but in ALBERT's shared layers)."""
        return self.spec.get("layer_weights", list(range(self.spec["num_hidden_layers"])))

    @property
    def output_scale(self) -> float | None:
        return self.spec.get("output_scale")

    @torch.inference_mode()
    def forward(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        B, S = input_ids.shape
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        groups = schedule.sequence_groups(B, S)
        if groups is None:  # fewer sequences than workers: all of them here, on torch's intra-op threads
            return self._run(input_ids, attention_mask, token_type_ids)
        outputs = [None] * len(groups)

        def run_group(i: int) -> None:  # a few whole sequences through the whole model, in one worker
            b = slice(*groups[i])
            outputs[i] = self._run(input_ids[b], attention_mask[b], token_type_ids[b])

        schedule.run(run_group, range(len(groups)))
        return torch.cat(outputs)

    def _run(self, input_ids, attention_mask, token_type_ids) -> torch.Tensor:
        hidden = torch.stack([self._sequence(*row) for row in zip(input_ids, attention_mask, token_type_ids,
                                                                  strict=True)])  # (B, S, H)
        return hidden if self.classifier is None else self.classifier(hidden)

    def _sequence(self, input_ids, attention_mask, token_type_ids) -> torch.Tensor:
        """One sequence's ids (S,) -> int8 (S, H)."""
        positions = position_ids(input_ids[None], self.spec["pad_token_id"])[0]
        h = _stage(self.embeddings, int_ops.embed, (input_ids, token_type_ids, positions, _constants(self.embeddings)),
                   (0, 0, 0, None), self.fuse)
        if self.embeddings_project is not None:
            h = _stage(self.embeddings_project, int_ops.dense, (h, _constants(self.embeddings_project)), (0, None),
                       self.fuse)
        mask = (attention_mask == 0).int()[None, None, :] * int_ops.MASKED
        for layer in self.layers:
            h = layer(h, mask, self.fuse)
        return h

    def save(self, path: str | os.PathLike) -> None:
        """One safetensors file: the integer tensors (shared ones once), and the shapes as JSON in its metadata."""
        tensors = {k: v.contiguous() for k, v in unique_state(self).items()}
        safetensors.torch.save_file(tensors, str(path), metadata={FORMAT: json.dumps(self.spec)})


def load_integer_model(path: str | os.PathLike) -> IntegerIBert:
    """Read what IntegerIBert.save wrote; needs neither the float nor the QAT model."""
    with safetensors.safe_open(str(path), framework="pt") as f:
        spec = _spec(f, Path(path))
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no iteration)
    return IntegerIBert(spec, tensors)


def read_spec(path: str | os.PathLike) -> dict:
    """The description (head, shapes) that IntegerIBert.save wrote, without reading the tensors."""
    with safetensors.safe_open(str(path), framework="pt") as f:
        return _spec(f, Path(path))


def _spec(f, path: Path) -> dict:
    metadata = f.metadata() or {}
    if FORMAT not in metadata:
        raise ValueError(f"{path}: not an integer I-BERT file (no {FORMAT} metadata)")
    return json.loads(metadata[FORMAT])
