"""ELECTRA (Clark et al., 2020) and BERT, which is ELECTRA's encoder with E == H plus a pooler.

The encoder: embeddings of width E, a projection E->H when E != H, then post-LN layers. ELECTRA's heads:
the discriminator (one replaced/original logit per token), the generator (an MLM tied to the word
embeddings), a two-layer classifier on the first token. `ElectraGeneratorDiscriminator` holds a generator
and a discriminator sharing one embeddings module, as in the paper (section 3.2) and the original code.
BERT's heads (MLM, pooled classifier) are here so BERT/MiniLM checkpoints load into the same encoder.

Differences from transformers' modeling_electra.py / modeling_bert.py:
- MLM heads take `mlm_mask` and run the head only at those positions.
- Heads that read only some positions (the masked ones, the first token) leave padding out of the computation;
  so does the discriminator inside `ElectraGeneratorDiscriminator`, whose logits at padding are meaningless.
- Encoder only: no decoder mode, cross-attention, KV cache, relative positions, losses or output tuples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

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
    activation,
    first_token,
    init_weights,
    select_masked,
)


@dataclass
class ElectraConfig(HFConfig):
    """Field names and defaults are transformers' ElectraConfig (ELECTRA-small discriminator), encoder fields."""

    model_type: ClassVar[str] = "electra"
    classifier_dropout_field: ClassVar[str] = "classifier_dropout"  # the dropout before a task head
    positions_from_pad: ClassVar[bool] = False  # RoBERTa's position ids (roberta.py), not 0, 1, 2, ...

    vocab_size: int = field(default=30522, metadata=SIZE)
    embedding_size: int = field(default=128, metadata=SIZE)
    hidden_size: int = field(default=256, metadata=value_range(1, multiple_of="num_attention_heads"))
    num_hidden_layers: int = field(default=12, metadata=SIZE)
    num_attention_heads: int = field(default=4, metadata=SIZE)
    intermediate_size: int = field(default=1024, metadata=SIZE)
    hidden_act: str = field(default="gelu", metadata=ACTIVATION)
    hidden_dropout_prob: float = field(default=0.1, metadata=PROBABILITY)
    attention_probs_dropout_prob: float = field(default=0.1, metadata=PROBABILITY)
    max_position_embeddings: int = field(default=512, metadata=SIZE)
    type_vocab_size: int = field(default=2, metadata=SIZE)
    initializer_range: float = field(default=0.02, metadata=value_range(0))
    layer_norm_eps: float = field(default=1e-12, metadata=value_range(0, lo_open=True))
    pad_token_id: int = field(default=0, metadata=value_range(0, below="vocab_size"))
    classifier_dropout: float | None = field(default=None, metadata=PROBABILITY)  # None: hidden_dropout_prob
    num_labels: int = field(default=2, metadata=SIZE)  # sequence classification; 1 means regression
    # "regression", "single_label_classification", "multi_label_classification"
    problem_type: str | None = field(default=None, metadata=PROBLEM_TYPE)


@dataclass
class BertConfig(HFConfig):
    """Field names and defaults are transformers' BertConfig (BERT-base), encoder fields."""

    model_type: ClassVar[str] = "bert"
    classifier_dropout_field: ClassVar[str] = "classifier_dropout"
    positions_from_pad: ClassVar[bool] = False

    vocab_size: int = field(default=30522, metadata=SIZE)
    hidden_size: int = field(default=768, metadata=value_range(1, multiple_of="num_attention_heads"))
    num_hidden_layers: int = field(default=12, metadata=SIZE)
    num_attention_heads: int = field(default=12, metadata=SIZE)
    intermediate_size: int = field(default=3072, metadata=SIZE)
    hidden_act: str = field(default="gelu", metadata=ACTIVATION)
    hidden_dropout_prob: float = field(default=0.1, metadata=PROBABILITY)
    attention_probs_dropout_prob: float = field(default=0.1, metadata=PROBABILITY)
    max_position_embeddings: int = field(default=512, metadata=SIZE)
    type_vocab_size: int = field(default=2, metadata=SIZE)
    initializer_range: float = field(default=0.02, metadata=value_range(0))
    layer_norm_eps: float = field(default=1e-12, metadata=value_range(0, lo_open=True))
    pad_token_id: int = field(default=0, metadata=value_range(0, below="vocab_size"))
    classifier_dropout: float | None = field(default=None, metadata=PROBABILITY)  # None: hidden_dropout_prob
    num_labels: int = field(default=2, metadata=SIZE)
    problem_type: str | None = field(default=None, metadata=PROBLEM_TYPE)

    @property
    def embedding_size(self) -> int:  # BERT's embeddings are as wide as its layers
        return self.hidden_size


class ElectraModel(nn.Module):
    """Embeddings (E) -> projection E->H if E != H -> layers; forward returns hidden states (B, S, H)."""

    def __init__(self, config: ElectraConfig | BertConfig, with_pooler: bool = False):
        super().__init__()
        self.config = config
        c = config
        self.embeddings = Embeddings(c.vocab_size, c.embedding_size, c.max_position_embeddings,
                                     c.type_vocab_size, c.pad_token_id, c.layer_norm_eps, c.hidden_dropout_prob,
                                     c.positions_from_pad)
        self.embedding_projection = (nn.Linear(c.embedding_size, c.hidden_size)
                                     if c.embedding_size != c.hidden_size else None)
        self.layers = nn.ModuleList(
            TransformerLayer(c.hidden_size, c.num_attention_heads, c.intermediate_size, c.hidden_act,
                             c.hidden_dropout_prob, c.attention_probs_dropout_prob, c.layer_norm_eps)
            for _ in range(c.num_hidden_layers))
        self.pooler = Pooler(c.hidden_size) if with_pooler else None  # BERT's; ELECTRA has none
        init_weights(self, c.initializer_range)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, needed_positions=None) -> torch.Tensor:
        """needed_positions (bool (B, S)): when given, padding is left out of the computation except at these
        positions, and the hidden states at the other padding positions come back as 0."""
        layout = TokenLayout(attention_mask, needed_positions, *input_ids.shape)
        x = layout.pack(self.embeddings(input_ids, token_type_ids))  # (B, S, E) or packed (N, E)
        if self.embedding_projection is not None:
            x = self.embedding_projection(x)
        for layer in self.layers:
            x = layer(x, layout)
        return layout.unpack(x)  # (B, S, H)


class DiscriminatorHead(nn.Module):
    """Replaced-token detection: dense H->H, activation, dense H->1; one logit per token."""

    def __init__(self, config: ElectraConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = activation(config.hidden_act)
        self.prediction = nn.Linear(config.hidden_size, 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.prediction(self.act(self.dense(hidden))).squeeze(-1)  # (B, S)


class ElectraForPreTraining(nn.Module):
    """The discriminator: returns replaced-token logits (B, S)."""

    def __init__(self, config: ElectraConfig):
        super().__init__()
        self.config = config
        self.encoder = ElectraModel(config)
        self.discriminator_head = DiscriminatorHead(config)
        init_weights(self, config.initializer_range)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        return self.discriminator_head(self.encoder(input_ids, attention_mask, token_type_ids))


class ElectraForMaskedLM(nn.Module):
    """The generator: MLM head dense H->E, activation, LayerNorm, decoder tied to the word embeddings."""

    # ELECTRA's generator head always uses gelu (transformers' ElectraGeneratorPredictions).
    def __init__(self, config: ElectraConfig | BertConfig, head_act: str = "gelu"):
        super().__init__()
        self.config = config
        self.encoder = ElectraModel(config)
        self.mlm_head = MaskedLMHead(config.hidden_size, config.embedding_size, config.vocab_size, head_act,
                                     config.layer_norm_eps)
        init_weights(self, config.initializer_range)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, mlm_mask=None) -> torch.Tensor:
        hidden = self.encoder(input_ids, attention_mask, token_type_ids, mlm_mask)
        return self.mlm_head(select_masked(hidden, mlm_mask), self.encoder.embeddings.word_embeddings.weight)


class ElectraClassificationHead(nn.Module):
    """ELECTRA's classifier on the first token: dropout, dense, gelu, dropout, out_proj (no pooler)."""

    def __init__(self, config: ElectraConfig):
        super().__init__()
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = Dropout(dropout)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = activation("gelu")  # gelu, not BERT's tanh, as in transformers and the ELECTRA code
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        x = self.act(self.dense(self.dropout(hidden[:, 0])))  # (B, H)
        return self.out_proj(self.dropout(x))


class ElectraForSequenceClassification(nn.Module):
    def __init__(self, config: ElectraConfig):
        super().__init__()
        self.config = config
        self.encoder = ElectraModel(config)
        self.classifier = ElectraClassificationHead(config)
        init_weights(self, config.initializer_range)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        return self.classifier(self.encoder(input_ids, attention_mask, token_type_ids, first_token(input_ids)))


class ElectraGeneratorDiscriminator(nn.Module):
    """A generator and a discriminator sharing one embeddings module (word, position, token type, LayerNorm).

    Each keeps its own E->H projection, so the generator can be narrower than the discriminator
    (ELECTRA section 3.2). One forward runs generator, sampling and discriminator, so that a
    distributed wrapper (DDP) sees a single call; the losses live in the replaced-token objective.
    """

    def __init__(self, generator_config: ElectraConfig, discriminator_config: ElectraConfig):
        super().__init__()
        shared = ("vocab_size", "embedding_size", "max_position_embeddings", "type_vocab_size", "pad_token_id",
                  "layer_norm_eps")
        differ = [f"{k} ({getattr(generator_config, k)} vs {getattr(discriminator_config, k)})"
                  for k in shared if getattr(generator_config, k) != getattr(discriminator_config, k)]
        if differ:
            raise ValueError(f"generator and discriminator share embeddings, but differ in {', '.join(differ)}")
        self.generator = ElectraForMaskedLM(generator_config)
        self.discriminator = ElectraForPreTraining(discriminator_config)
        self.generator.encoder.embeddings = self.discriminator.encoder.embeddings

    def forward(self, input_ids, attention_mask, token_type_ids, mlm_mask, uniforms=None, temperature: float = 1.0):
        """Returns (generator logits [N, V] at mlm_mask, discriminator logits [B, S], discriminator input).

        The masked positions get tokens sampled from the generator's softmax at `temperature`, one
        uniform number in [0, 1) per position (`uniforms` [N], fresh when None), with no gradient
        through the sample.
        """
        generator_logits = self.generator(input_ids, attention_mask, token_type_ids, mlm_mask=mlm_mask)
        if uniforms is None:
            uniforms = torch.rand(generator_logits.shape[0], device=generator_logits.device)
        sampled = sample_categorical(generator_logits.detach().float() / temperature, uniforms)
        discriminator_input = input_ids.masked_scatter(mlm_mask, sampled)
        # The objective reads the discriminator's logits at real tokens only, so padding is left out.
        real = attention_mask.bool() if attention_mask is not None else None
        hidden = self.discriminator.encoder(discriminator_input, attention_mask, token_type_ids, real)
        discriminator_logits = self.discriminator.discriminator_head(hidden)
        return generator_logits, discriminator_logits, discriminator_input


def sample_categorical(logits: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """One draw per row of softmax(logits) [N, V], by inverting its CDF at uniforms [N] in [0, 1).

    The same distribution as the Gumbel-max trick of the ELECTRA code, with one random number per row
    instead of V: about 4x faster at ELECTRA-Small's vocabulary (30 ms against 135 ms for b16 x s128).
    A token of probability 0 is never drawn (`right=True` skips the flat steps of the CDF).
    """
    weights = (logits - logits.amax(-1, keepdim=True)).exp_()  # fp32: fp16 overflows in the sum
    cdf = weights.cumsum_(-1)
    targets = (uniforms.to(cdf.dtype) * cdf[:, -1]).unsqueeze(1)
    return torch.searchsorted(cdf, targets, right=True).squeeze(1).clamp_(max=logits.shape[-1] - 1)


class BertModel(ElectraModel):
    """BERT's encoder: ELECTRA's with E == H, plus the pooler (kept so BERT checkpoints round-trip)."""

    def __init__(self, config: BertConfig):
        super().__init__(config, with_pooler=True)


class BertForMaskedLM(ElectraForMaskedLM):
    """BERT's MLM head has the generator's shape (E == H) but uses hidden_act."""

    def __init__(self, config: BertConfig):
        super().__init__(config, head_act=config.hidden_act)


class BertForSequenceClassification(nn.Module):
    """pooler -> dropout -> linear; returns (B, num_labels)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.encoder = BertModel(config)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        init_weights(self, config.initializer_range)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        hidden = self.encoder(input_ids, attention_mask, token_type_ids, first_token(input_ids))
        return self.classifier(self.dropout(self.encoder.pooler(hidden)))
