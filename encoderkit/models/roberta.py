"""RoBERTa (Liu et al., 2019): BERT's encoder pretrained otherwise, and the float model I-BERT quantizes.

The encoder is BERT's (electra.ElectraModel with E == H) except for its positions: they count from
pad_token_id + 1 over the real tokens and padding sits at pad_token_id (layers.position_ids), so a RoBERTa
checkpoint's position table has pad_token_id + 1 more rows than the longest sequence (514 for 512 tokens).
One token type, byte-level BPE (data/bpe.py), pad_token_id 1, LayerNorm eps 1e-5.
Heads: the MLM head (dense, gelu, LayerNorm, decoder tied to the word embeddings) and the classifier on <s>
(dropout, dense, tanh, dropout, out_proj: no pooler, which RobertaModel keeps only for checkpoints); the token,
question-answering and multiple-choice heads are BERT's, module for module (transformers' Roberta* are too).

Differences from transformers' modeling_roberta.py: those of electra.py (MLM heads run only at `mlm_mask`,
padding packed out where a head reads only some positions; encoder only, no losses or output tuples), and the
multiple-choice head's dropout follows `classifier_dropout` when it is set, as BERT's (transformers' RoBERTa one
always takes hidden_dropout_prob; they differ only in training, and only when the field is set).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from .electra import (
    BertConfig,
    BertForMultipleChoice,
    BertForQuestionAnswering,
    BertForTokenClassification,
    BertModel,
    ElectraForMaskedLM,
    ElectraModel,
)
from .layers import Dropout, first_token, init_weights


@dataclass
class RobertaConfig(BertConfig):
    """Field names and defaults are transformers' RobertaConfig: BERT's, with RoBERTa's vocabulary and special ids.
    (roberta-base's config.json sets max_position_embeddings 514, type_vocab_size 1, layer_norm_eps 1e-5.)"""

    model_type: ClassVar[str] = "roberta"
    positions_from_pad: ClassVar[bool] = True

    vocab_size: int = 50265
    pad_token_id: int = 1
    bos_token_id: int = 0
    eos_token_id: int = 2


class RobertaModel(BertModel):
    """RoBERTa's encoder with the pooler (kept so RobertaModel checkpoints round-trip)."""


class RobertaForMaskedLM(ElectraForMaskedLM):
    """RobertaLMHead: dense H->H, gelu (always, as transformers' RobertaLMHead), LayerNorm, tied decoder + bias."""

    def __init__(self, config: RobertaConfig):
        super().__init__(config, head_act="gelu")


class RobertaClassificationHead(nn.Module):
    """On <s>: dropout, dense, tanh, dropout, out_proj (transformers' RobertaClassificationHead)."""

    def __init__(self, config: RobertaConfig):
        super().__init__()
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = Dropout(dropout)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.dense(self.dropout(hidden[:, 0])))  # (B, H)
        return self.out_proj(self.dropout(x))


class RobertaForSequenceClassification(nn.Module):
    """Returns logits (B, num_labels)."""

    def __init__(self, config: RobertaConfig):
        super().__init__()
        self.config = config
        self.encoder = ElectraModel(config)
        self.classifier = RobertaClassificationHead(config)
        init_weights(self, config.initializer_range)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        return self.classifier(self.encoder(input_ids, attention_mask, token_type_ids, first_token(input_ids)))


class RobertaForTokenClassification(BertForTokenClassification):
    """BERT's token head on RoBERTa's encoder (no pooler): dropout, linear at every position; (B, S, num_labels)."""


class RobertaForQuestionAnswering(BertForQuestionAnswering):
    """BERT's qa_outputs (H -> 2) on RoBERTa's encoder (no pooler): start and end logits (B, S) each."""


class RobertaForMultipleChoice(BertForMultipleChoice):
    """Inputs (B, C, S); BERT's pooler -> dropout -> linear H -> 1 on each (context, choice) sequence; (B, C)."""
