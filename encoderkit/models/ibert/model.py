"""I-BERT (Kim et al., 2021): RoBERTa built from the quantization modules of quant.py.

With quant_mode=True every layer computes on (simulated) integers: 8-bit weights and activations, 32-bit
biases, 16/22/32-bit sums where I-BERT keeps them wide, i-GELU, i-softmax and integer LayerNorm.
Quantization-aware training fine-tunes it; export.py turns it into the integer-only model of integer.py. With
quant_mode=False it is RoBERTa in float.

Module and buffer names are transformers' (`ibert.encoder.layer.0.attention.self.query.weight_integer`),
so a config.json + model.safetensors written by transformers' IBert* classes loads as it is, and ours
load there (both through hf_format.load_pretrained / save_pretrained). convert.from_float builds the QAT model
from a float BERT, ELECTRA, RoBERTa or ALBERT.

Two extensions of ours (config fields transformers' IBertConfig does not have, so such a model does not load
in transformers): `embedding_size`, embeddings narrower than the layers and a quantized projection
`embeddings_project` (ELECTRA-Small's name) up to hidden_size; and ALBERT's cross-layer sharing
(`num_hidden_groups`, `inner_group_num`, see IBertEncoder).

Differences from transformers' modeling_ibert.py:
- IBertSelfOutput and IBertOutput are one class, IBertResidualOutput.
- The MLM head takes `mlm_mask`; no losses, output tuples, inputs_embeds or attention outputs.
- As in transformers, the embeddings' second addition reuses embeddings_act1: embeddings_act2 and each
  IntLayerNorm's `activation` are never called and exist only for their buffers in checkpoints.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from encoderkit.fields import one_of, value_range

from ..layers import PROBABILITY, PROBLEM_TYPE, SIZE, HFConfig, Pooler, init_weights, position_ids, select_masked
from .quant import FORCE_DEQUANT, IntGELU, IntLayerNorm, IntSoftmax, QuantAct, QuantEmbedding, QuantLinear

# Bit widths of I-BERT (transformers' IBert* modules hard-code the same).
WEIGHT_BIT, BIAS_BIT, ACT_BIT = 8, 32, 8
EMBEDDING_SUM_BIT = 16  # word + token type + position embeddings
RESIDUAL_SUM_BIT = 22  # dense output + residual, the LayerNorm's input
LAYER_NORM_OUTPUT_BIT = 32  # before requantization to ACT_BIT


@dataclass
class IBertConfig(HFConfig):
    """Field names and defaults are transformers' IBertConfig (RoBERTa-base sizes, BERT's vocabulary)."""

    model_type: ClassVar[str] = "ibert"

    vocab_size: int = field(default=30522, metadata=SIZE)
    hidden_size: int = field(default=768, metadata=value_range(1, multiple_of="num_attention_heads"))
    num_hidden_layers: int = field(default=12, metadata=SIZE)
    num_attention_heads: int = field(default=12, metadata=SIZE)
    intermediate_size: int = field(default=3072, metadata=SIZE)
    # or ALBERT's gelu_new: i-GELU approximates both (they differ by < 1e-3)
    hidden_act: str = field(default="gelu", metadata=one_of(("gelu", "gelu_new")))
    hidden_dropout_prob: float = field(default=0.1, metadata=PROBABILITY)
    attention_probs_dropout_prob: float = field(default=0.1, metadata=PROBABILITY)
    max_position_embeddings: int = field(default=512, metadata=SIZE)
    type_vocab_size: int = field(default=2, metadata=SIZE)
    initializer_range: float = field(default=0.02, metadata=value_range(0))
    layer_norm_eps: float = field(default=1e-12, metadata=value_range(0, lo_open=True))
    pad_token_id: int = field(default=1, metadata=value_range(0, below="vocab_size"))
    bos_token_id: int | None = field(default=0, metadata=value_range(0))
    eos_token_id: int | None = field(default=2, metadata=value_range(0))
    quant_mode: bool = False
    # none | gelu | softmax | layernorm | nonlinear: those run in float
    force_dequant: str = field(default="none", metadata=one_of(FORCE_DEQUANT))
    num_labels: int = field(default=2, metadata=SIZE)  # sequence classification; 1 means regression
    problem_type: str | None = field(default=None, metadata=PROBLEM_TYPE)
    # Ours, not transformers': embeddings of this width projected to hidden_size (None: no projection) ...
    embedding_size: int | None = field(default=None, metadata=SIZE)
    # ... and ALBERT's sharing: layer i runs the inner_group_num layers of group int(i / (L / num_hidden_groups))
    # (None: every layer its own weights, as in BERT).
    num_hidden_groups: int | None = field(default=None, metadata=value_range(1, at_most="num_hidden_layers"))
    inner_group_num: int = field(default=1, metadata=SIZE)

    def extensions(self) -> list[str]:
        """Our fields this config sets (see the module docstring): with them transformers' IBert cannot run it."""
        ours = {"embedding_size": self.embedding_size is not None,
                "num_hidden_groups": self.num_hidden_groups is not None, "inner_group_num": self.inner_group_num != 1}
        return [name for name, is_set in ours.items() if is_set]

    @property
    def embedding_width(self) -> int:
        return self.embedding_size or self.hidden_size

    def layer_runs(self) -> list[int]:
        """The layer weights each layer application runs (num_hidden_layers x inner_group_num applications):
        ALBERT's group layer, group * inner_group_num + n, in transformers' AlbertTransformer's order; without
        num_hidden_groups each application runs its own, 0, 1, 2, ..."""
        L, inner = self.num_hidden_layers, self.inner_group_num
        groups = self.num_hidden_groups or L
        return [int(i / (L / groups)) * inner + n for i in range(L) for n in range(inner)]


def _quant_linear(in_features: int, out_features: int, config: IBertConfig) -> QuantLinear:
    return QuantLinear(in_features, out_features, bias=True, weight_bit=WEIGHT_BIT, bias_bit=BIAS_BIT,
                       per_channel=True, quant_mode=config.quant_mode)


def _layer_norm(config: IBertConfig, width: int | None = None) -> IntLayerNorm:
    return IntLayerNorm(width or config.hidden_size, eps=config.layer_norm_eps, output_bit=LAYER_NORM_OUTPUT_BIT,
                        quant_mode=config.quant_mode, force_dequant=config.force_dequant)


def additive_mask(attention_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """(B, S) 1 = token, 0 = padding -> (B, 1, 1, S): 0 where attention is allowed, the dtype's minimum else."""
    if attention_mask is None:
        return None
    return (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


class IBertEmbeddings(nn.Module):
    """Word + token type + position embeddings added as 16-bit integers, integer LayerNorm, 8-bit output."""

    def __init__(self, config: IBertConfig):
        super().__init__()
        c, q, width = config, config.quant_mode, config.embedding_width
        self.padding_idx = c.pad_token_id
        self.word_embeddings = QuantEmbedding(c.vocab_size, width, padding_idx=c.pad_token_id,
                                              weight_bit=WEIGHT_BIT, quant_mode=q)
        self.token_type_embeddings = QuantEmbedding(c.type_vocab_size, width, weight_bit=WEIGHT_BIT, quant_mode=q)
        self.position_embeddings = QuantEmbedding(c.max_position_embeddings, width, padding_idx=c.pad_token_id,
                                                  weight_bit=WEIGHT_BIT, quant_mode=q)
        self.embeddings_act1 = QuantAct(EMBEDDING_SUM_BIT, quant_mode=q)
        self.embeddings_act2 = QuantAct(EMBEDDING_SUM_BIT, quant_mode=q)
        self.LayerNorm = _layer_norm(c, width)
        self.output_activation = QuantAct(ACT_BIT, quant_mode=q)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor):
        words, words_scale = self.word_embeddings(input_ids)
        types, types_scale = self.token_type_embeddings(token_type_ids)
        x, scale = self.embeddings_act1(words, words_scale, identity=types, identity_scaling_factor=types_scale)
        positions, positions_scale = self.position_embeddings(position_ids(input_ids, self.padding_idx))
        x, scale = self.embeddings_act1(x, scale, identity=positions, identity_scaling_factor=positions_scale)
        x, scale = self.LayerNorm(x, scale)
        return self.output_activation(self.dropout(x), scale)


class IBertSelfAttention(nn.Module):
    """q, k, v requantized to 8 bits; integer scores q.k; i-softmax to 8 bits; context requantized to 8 bits."""

    def __init__(self, config: IBertConfig):
        super().__init__()
        c, q = config, config.quant_mode
        self.num_heads = c.num_attention_heads
        self.head_size = c.hidden_size // c.num_attention_heads
        self.query = _quant_linear(c.hidden_size, c.hidden_size, c)
        self.key = _quant_linear(c.hidden_size, c.hidden_size, c)
        self.value = _quant_linear(c.hidden_size, c.hidden_size, c)
        self.query_activation = QuantAct(ACT_BIT, quant_mode=q)
        self.key_activation = QuantAct(ACT_BIT, quant_mode=q)
        self.value_activation = QuantAct(ACT_BIT, quant_mode=q)
        self.output_activation = QuantAct(ACT_BIT, quant_mode=q)
        self.dropout = nn.Dropout(c.attention_probs_dropout_prob)
        self.softmax = IntSoftmax(ACT_BIT, quant_mode=q, force_dequant=c.force_dequant)

    def forward(self, x: torch.Tensor, scale: torch.Tensor | None, mask: torch.Tensor | None):
        B, S, H = x.shape
        heads = (B, S, self.num_heads, self.head_size)
        q, q_scale = self.query_activation(*self.query(x, scale))
        k, k_scale = self.key_activation(*self.key(x, scale))
        v, v_scale = self.value_activation(*self.value(x, scale))
        q, k, v = (t.view(heads).transpose(1, 2) for t in (q, k, v))  # (B, nh, S, hs)
        sqrt_d = math.sqrt(self.head_size)
        scores = torch.matmul(q, k.transpose(-1, -2)) / sqrt_d
        scores_scale = q_scale * k_scale / sqrt_d if q_scale is not None else None
        if mask is not None:
            scores = scores + mask
        probs, probs_scale = self.softmax(scores, scores_scale)
        context = torch.matmul(self.dropout(probs), v)
        context_scale = probs_scale * v_scale if probs_scale is not None else None
        return self.output_activation(context.transpose(1, 2).reshape(B, S, H), context_scale)


class IBertResidualOutput(nn.Module):
    """dense, dropout, + residual as a 22-bit integer sum, integer LayerNorm, requantization to 8 bits.

    transformers' IBertSelfOutput (after attention) and IBertOutput (after the feed-forward).
    """

    def __init__(self, config: IBertConfig, in_features: int):
        super().__init__()
        self.dense = _quant_linear(in_features, config.hidden_size, config)
        self.ln_input_act = QuantAct(RESIDUAL_SUM_BIT, quant_mode=config.quant_mode)
        self.LayerNorm = _layer_norm(config)
        self.output_activation = QuantAct(ACT_BIT, quant_mode=config.quant_mode)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x, scale, residual, residual_scale):
        x, scale = self.dense(x, scale)
        x, scale = self.ln_input_act(self.dropout(x), scale, identity=residual,
                                     identity_scaling_factor=residual_scale)
        return self.output_activation(*self.LayerNorm(x, scale))


class IBertAttention(nn.Module):
    def __init__(self, config: IBertConfig):
        super().__init__()
        self.self = IBertSelfAttention(config)
        self.output = IBertResidualOutput(config, config.hidden_size)

    def forward(self, x, scale, mask):
        return self.output(*self.self(x, scale, mask), x, scale)


class IBertIntermediate(nn.Module):
    """dense H -> intermediate, i-GELU, requantization to 8 bits."""

    def __init__(self, config: IBertConfig):
        super().__init__()
        self.dense = _quant_linear(config.hidden_size, config.intermediate_size, config)
        self.intermediate_act_fn = IntGELU(quant_mode=config.quant_mode, force_dequant=config.force_dequant,
                                           approximate="tanh" if config.hidden_act == "gelu_new" else "none")
        self.output_activation = QuantAct(ACT_BIT, quant_mode=config.quant_mode)

    def forward(self, x, scale):
        return self.output_activation(*self.intermediate_act_fn(*self.dense(x, scale)))


class IBertLayer(nn.Module):
    def __init__(self, config: IBertConfig):
        super().__init__()
        self.attention = IBertAttention(config)
        self.pre_intermediate_act = QuantAct(ACT_BIT, quant_mode=config.quant_mode)
        self.intermediate = IBertIntermediate(config)
        self.pre_output_act = QuantAct(ACT_BIT, quant_mode=config.quant_mode)
        self.output = IBertResidualOutput(config, config.intermediate_size)

    def forward(self, x, scale, mask):
        x, scale = self.pre_intermediate_act(*self.attention(x, scale, mask))
        h, h_scale = self.pre_output_act(*self.intermediate(x, scale))
        return self.output(h, h_scale, x, scale)


class IBertEncoder(nn.Module):
    """`layer.{j}`: one IBertLayer per layer application, in order.

    With ALBERT's sharing (config.num_hidden_groups), applications that run the same layer of a group share its
    weights but not its activation ranges: each application sees other activations, and 8-bit ranges fitted to
    all of them at once would waste bits on each. So every application is its own IBertLayer (own QuantActs,
    softmax range, LayerNorm shift), whose QuantLinear modules are the first such application's modules and whose
    LayerNorm weight and bias are its parameters. The weights are then one set of tensors, which the optimizer
    sees once and which checkpoints store once, under the first application's names (layers.unique_state); a shared
    QuantLinear's bias_integer (a cache, recomputed from the input's scale at every call) holds its last call's.
    """

    def __init__(self, config: IBertConfig):
        super().__init__()
        runs = config.layer_runs()
        self.weights_from = [runs.index(weights) for weights in runs]  # the first application that runs them
        self.layer = nn.ModuleList(IBertLayer(config) for _ in self.weights_from)
        for layer, owner in zip(self.layer, self.weights_from, strict=True):
            if layer is not self.layer[owner]:
                _share_weights(layer, self.layer[owner])

    def forward(self, x, scale, mask):
        # As in transformers (whose IBertLayer returns no scale), every layer is told the embeddings' output
        # scale, also where its input has another: the inputs of its q/k/v projections and of its attention
        # residual are then x / scale, integers times (true scale / embeddings' scale), and round to integers
        # only at the next requantization. Checkpoints were fine-tuned so; integer.py does the same rescale.
        for layer in self.layer:
            x, out_scale = layer(x, scale, mask)
        return x, out_scale


def _share_weights(layer: IBertLayer, owner: IBertLayer) -> None:
    """Make `layer` run on the weights of `owner` (see IBertEncoder)."""
    for name, module in owner.named_modules():
        if isinstance(module, QuantLinear):
            layer.set_submodule(name, module)
        elif isinstance(module, IntLayerNorm):
            norm = layer.get_submodule(name)
            norm.weight, norm.bias = module.weight, module.bias


@torch.no_grad()
def _init_ibert_weights(model: nn.Module, std: float) -> None:
    """transformers' init: the float modules as in layers.init_weights, quantized ones alike."""
    init_weights(model, std)
    for module in model.modules():
        if isinstance(module, (QuantLinear, QuantEmbedding)):
            module.weight.normal_(0.0, std)
        if isinstance(module, QuantLinear) and module.bias is not None:
            module.bias.zero_()
        if isinstance(module, QuantEmbedding) and module.padding_idx is not None:
            module.weight[module.padding_idx].zero_()


class IBertModel(nn.Module):
    """Embeddings -> layers; forward returns hidden states (B, S, H) (integers times a scale in quant_mode)."""

    def __init__(self, config: IBertConfig, add_pooling_layer: bool = True):
        super().__init__()
        self.config = config
        self.embeddings = IBertEmbeddings(config)
        self.embeddings_project, self.embeddings_project_act = None, None
        if config.embedding_size is not None:  # ELECTRA-Small's (and ALBERT's) projection up to hidden_size
            self.embeddings_project = _quant_linear(config.embedding_size, config.hidden_size, config)
            self.embeddings_project_act = QuantAct(ACT_BIT, quant_mode=config.quant_mode)
        self.encoder = IBertEncoder(config)
        self.pooler = Pooler(config.hidden_size) if add_pooling_layer else None  # kept so checkpoints round-trip
        _init_ibert_weights(self, config.initializer_range)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x, scale = self.embeddings(input_ids, token_type_ids)  # 8 bits, the projection's input
        if self.embeddings_project is not None:
            x, scale = self.embeddings_project_act(*self.embeddings_project(x, scale))
        return self.encoder(x, scale, additive_mask(attention_mask, x.dtype))[0]


class IBertClassificationHead(nn.Module):
    """RoBERTa's classifier on the first token (float): dropout, dense, tanh, dropout, out_proj."""

    def __init__(self, config: IBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.dense(self.dropout(hidden[:, 0])))  # (B, H)
        return self.out_proj(self.dropout(x))


class IBertForSequenceClassification(nn.Module):
    """Returns logits (B, num_labels)."""

    def __init__(self, config: IBertConfig):
        super().__init__()
        self.config = config
        self.ibert = IBertModel(config, add_pooling_layer=False)
        self.classifier = IBertClassificationHead(config)
        _init_ibert_weights(self, config.initializer_range)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        return self.classifier(self.ibert(input_ids, attention_mask, token_type_ids))


class IBertLMHead(nn.Module):
    """RoBERTa's MLM head (float): dense (to the embeddings' width), gelu, LayerNorm, decoder tied to the word
    embeddings, bias."""

    def __init__(self, config: IBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.embedding_width)
        self.layer_norm = nn.LayerNorm(config.embedding_width, eps=config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        return F.linear(self.layer_norm(F.gelu(self.dense(hidden))), word_embeddings, self.bias)


class IBertForMaskedLM(nn.Module):
    """Returns logits (B, S, V), or (N, V) at mlm_mask."""

    def __init__(self, config: IBertConfig):
        super().__init__()
        self.config = config
        self.ibert = IBertModel(config, add_pooling_layer=False)
        self.lm_head = IBertLMHead(config)
        _init_ibert_weights(self, config.initializer_range)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, mlm_mask=None) -> torch.Tensor:
        hidden = self.ibert(input_ids, attention_mask, token_type_ids)
        return self.lm_head(select_masked(hidden, mlm_mask), self.ibert.embeddings.word_embeddings.weight)


HEADS = {
    "base": IBertModel,
    "sequence_classification": IBertForSequenceClassification,
    "masked_lm": IBertForMaskedLM,
}
BASE_PREFIX = "ibert."  # a head model's base model (hf_format loads base and head checkpoints either way)


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable[dict]) -> None:
    """Set the activation ranges (EMA) and LayerNorm shifts from batches, without dropout or gradients.

    The ranges move in train mode only, so this runs train mode with every dropout off; the model comes
    back in eval mode. Each batch is a dict of model inputs (input_ids, attention_mask, token_type_ids).
    """
    model.train()
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.eval()
    for batch in batches:
        model(**batch)
    model.eval()
