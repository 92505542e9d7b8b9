"""ALBERT (Lan et al., 2020): factorized embeddings and cross-layer parameter sharing.

Embeddings of width E are projected to the hidden width H; the num_hidden_layers layer applications
share the weights of num_hidden_groups layer groups, each group holding inner_group_num layers.

Differences from transformers' modeling_albert.py:
- Dropout is applied after the feed-forward, as in the original ALBERT code; transformers' AlbertLayer
  defines it but never applies it (no effect at ALBERT v2's hidden_dropout_prob of 0).
- MLM heads take `mlm_mask` and run the head only at those positions.
- Heads that read only some positions (the masked ones, the first token) leave padding out of the computation.
- No losses, output tuples, head pruning, attention outputs or inputs_embeds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple

import torch
from torch import nn

from encoderkit.fields import value_range

from .layers import (
    ACTIVATION,
    PROBABILITY,
    PROBLEM_TYPE,
    SIZE,
    Dropout,
    Embeddings,
    HFConfig,
    MaskedLMHead,
    Pooler,
    TokenLayout,
    TransformerLayer,
    first_token,
    init_weights,
    select_masked,
)


@dataclass
class AlbertConfig(HFConfig):
    """Field names and defaults are transformers' AlbertConfig (ALBERT-xxlarge)."""

    model_type: ClassVar[str] = "albert"
    classifier_dropout_field: ClassVar[str] = "classifier_dropout_prob"  # the dropout before a task head

    vocab_size: int = field(default=30000, metadata=SIZE)
    embedding_size: int = field(default=128, metadata=SIZE)
    hidden_size: int = field(default=4096, metadata=value_range(1, multiple_of="num_attention_heads"))
    num_hidden_layers: int = field(default=12, metadata=SIZE)
    num_hidden_groups: int = field(default=1, metadata=value_range(1, at_most="num_hidden_layers"))
    num_attention_heads: int = field(default=64, metadata=SIZE)
    intermediate_size: int = field(default=16384, metadata=SIZE)
    inner_group_num: int = field(default=1, metadata=SIZE)
    hidden_act: str = field(default="gelu_new", metadata=ACTIVATION)
    hidden_dropout_prob: float = field(default=0.0, metadata=PROBABILITY)
    attention_probs_dropout_prob: float = field(default=0.0, metadata=PROBABILITY)
    max_position_embeddings: int = field(default=512, metadata=SIZE)
    type_vocab_size: int = field(default=2, metadata=SIZE)
    initializer_range: float = field(default=0.02, metadata=value_range(0))
    layer_norm_eps: float = field(default=1e-12, metadata=value_range(0, lo_open=True))
    classifier_dropout_prob: float = field(default=0.1, metadata=PROBABILITY)
    pad_token_id: int = field(default=0, metadata=value_range(0, below="vocab_size"))
    bos_token_id: int | None = field(default=2, metadata=value_range(0))
    eos_token_id: int | None = field(default=3, metadata=value_range(0))
    # sequence classification; 1 means regression. Also the SOP head's width, as in HF.
    num_labels: int = field(default=2, metadata=SIZE)
    # "regression", "single_label_classification", "multi_label_classification"
    problem_type: str | None = field(default=None, metadata=PROBLEM_TYPE)


class AlbertModel(nn.Module):
    """Embeddings (E) -> E->H projection -> shared layer groups; forward returns hidden states (B, S, H)."""

    def __init__(self, config: AlbertConfig, with_pooler: bool = True):
        super().__init__()
        if not 1 <= config.num_hidden_groups <= config.num_hidden_layers:
            raise ValueError(f"num_hidden_groups {config.num_hidden_groups} must be in 1..num_hidden_layers "
                             f"({config.num_hidden_layers})")
        self.config = config
        c = config
        self.embeddings = Embeddings(c.vocab_size, c.embedding_size, c.max_position_embeddings,
                                     c.type_vocab_size, c.pad_token_id, c.layer_norm_eps, c.hidden_dropout_prob)
        self.embedding_projection = nn.Linear(c.embedding_size, c.hidden_size)
        self.layer_groups = nn.ModuleList(
            nn.ModuleList(
                TransformerLayer(c.hidden_size, c.num_attention_heads, c.intermediate_size, c.hidden_act,
                                 c.hidden_dropout_prob, c.attention_probs_dropout_prob, c.layer_norm_eps)
                for _ in range(c.inner_group_num))
            for _ in range(c.num_hidden_groups))
        self.pooler = Pooler(c.hidden_size) if with_pooler else None
        init_weights(self, c.initializer_range)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, needed_positions=None) -> torch.Tensor:
        """needed_positions (bool (B, S)): when given, padding is left out of the computation except at these
        positions, and the hidden states at the other padding positions come back as 0."""
        layout = TokenLayout(attention_mask, needed_positions, *input_ids.shape)
        x = self.embedding_projection(layout.pack(self.embeddings(input_ids, token_type_ids)))
        L, G = self.config.num_hidden_layers, self.config.num_hidden_groups
        for i in range(L):
            # Layer i uses group int(i / (L / G)): consecutive layers share a group (HF AlbertTransformer).
            for layer in self.layer_groups[int(i / (L / G))]:
                x = layer(x, layout)
        return layout.unpack(x)  # (B, S, H)


class AlbertPreTrainingOutput(NamedTuple):
    mlm_logits: torch.Tensor  # (B, S, V), or (N, V) at the mlm_mask positions
    sop_logits: torch.Tensor  # (B, num_labels): sentence order prediction


class AlbertForPreTraining(nn.Module):
    """MLM head on every (or each masked) position + sentence-order-prediction head on the pooled token."""

    def __init__(self, config: AlbertConfig):
        super().__init__()
        self.config = config
        self.encoder = AlbertModel(config)
        self.mlm_head = MaskedLMHead(config.hidden_size, config.embedding_size, config.vocab_size,
                                     config.hidden_act, config.layer_norm_eps)
        self.sop_dropout = Dropout(config.classifier_dropout_prob)
        self.sop_classifier = nn.Linear(config.hidden_size, config.num_labels)
        init_weights(self, config.initializer_range)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, mlm_mask=None):
        needed = None if mlm_mask is None else mlm_mask | first_token(input_ids)
        hidden = self.encoder(input_ids, attention_mask, token_type_ids, needed)
        sop_logits = self.sop_classifier(self.sop_dropout(self.encoder.pooler(hidden)))
        mlm_logits = self.mlm_head(select_masked(hidden, mlm_mask), self.encoder.embeddings.word_embeddings.weight)
        return AlbertPreTrainingOutput(mlm_logits, sop_logits)


class AlbertForMaskedLM(nn.Module):
    def __init__(self, config: AlbertConfig):
        super().__init__()
        self.config = config
        self.encoder = AlbertModel(config, with_pooler=False)
        self.mlm_head = MaskedLMHead(config.hidden_size, config.embedding_size, config.vocab_size,
                                     config.hidden_act, config.layer_norm_eps)
        init_weights(self, config.initializer_range)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, mlm_mask=None) -> torch.Tensor:
        hidden = self.encoder(input_ids, attention_mask, token_type_ids, mlm_mask)
        return self.mlm_head(select_masked(hidden, mlm_mask), self.encoder.embeddings.word_embeddings.weight)


class AlbertForSequenceClassification(nn.Module):
    """pooler -> dropout -> linear; returns (B, num_labels)."""

    def __init__(self, config: AlbertConfig):
        super().__init__()
        self.config = config
        self.encoder = AlbertModel(config)
        self.dropout = Dropout(config.classifier_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        init_weights(self, config.initializer_range)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        hidden = self.encoder(input_ids, attention_mask, token_type_ids, first_token(input_ids))
        return self.classifier(self.dropout(self.encoder.pooler(hidden)))
