"""Blocks shared by every encoder family: embeddings, attention, feed-forward, the post-LN layer, heads.

Each family file (albert.py, electra.py) builds its encoder from these; nothing here knows a family.
Module names are ours (`norm`, `feed_forward.up`, ...); hf_format.py maps them to Hugging Face's names.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from encoderkit import fields

# gelu is the exact erf form (BERT, ELECTRA); gelu_new is the tanh approximation of the original BERT
# and ALBERT code (transformers' NewGELUActivation, same as torch's approximate="tanh").
ACTIVATIONS = {
    "gelu": nn.GELU,
    "gelu_new": lambda: nn.GELU(approximate="tanh"),
    "gelu_pytorch_tanh": lambda: nn.GELU(approximate="tanh"),
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "tanh": nn.Tanh,
    "linear": nn.Identity,  # transformers' name for none (e.g. an ELECTRA summary_activation)
}


def activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; valid: {', '.join(sorted(ACTIVATIONS))}")
    return ACTIVATIONS[name]()


# The rules (encoderkit.fields) that the families' config fields share.
SIZE = fields.value_range(1)
PROBABILITY = fields.value_range(0, 1, hi_open=True)  # a dropout of 1 would zero everything
ACTIVATION = fields.one_of(ACTIVATIONS)
PROBLEM_TYPE = fields.one_of(("regression", "single_label_classification", "multi_label_classification"))


@dataclasses.dataclass
class HFConfig:
    """Base of a config dataclass whose fields are the keys of a transformers `config.json`.

    Every construction checks the fields' rules (fields.check), so no model is built from sizes it cannot have.
    Every family's config has `num_labels`. Label names, where known, are `id2label` (class index -> name),
    written with `label2id` as transformers does so its pipelines show them. Keys of a loaded config.json that
    the config has no field for (`transformers_version`, ...) are kept in `extra_keys` and written back, so a
    load-save round trip loses nothing; they take no part in comparing configs.
    """

    model_type: ClassVar[str]

    id2label: dict[int, str] | None = None
    extra_keys: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        fields.check(self)

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any]):
        """Build from a transformers config dict, checking types and rules (fields.FieldError names the key);
        keys this config has no field for go to extra_keys."""
        if d.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"position_embedding_type {d['position_embedding_type']!r}: only 'absolute' is built")
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known and k != "extra_keys"}
        if isinstance(d.get("id2label"), dict):  # transformers writes the label count as the id2label table
            kwargs["num_labels"] = len(d["id2label"])
            try:
                names = {int(i): name for i, name in d["id2label"].items()}
            except ValueError:
                raise fields.FieldError(f"id2label: class indices must be integers, got {list(d['id2label'])}") \
                    from None
            # transformers' default table, LABEL_<i>, names nothing
            kwargs["id2label"] = None if all(name == f"LABEL_{i}" for i, name in names.items()) else names
        derived = {"label2id", "model_type", "architectures"}  # rewritten from the fields and the model on save
        kwargs["extra_keys"] = {k: v for k, v in d.items() if k not in known and k not in derived}
        return fields.build(cls, kwargs)

    def extensions(self) -> list[str]:
        """The fields set here that transformers' config class of this model_type does not have (none but I-BERT's)."""
        return []

    def label_names(self) -> list[str]:
        """Each class's name: id2label's where it names every class, else transformers' LABEL_<i>."""
        if self.id2label is not None and sorted(self.id2label) == list(range(self.num_labels)):
            return [self.id2label[i] for i in range(self.num_labels)]
        return [f"LABEL_{i}" for i in range(self.num_labels)]

    def to_hf_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra_keys"}
        names = self.label_names()
        values["id2label"] = {str(i): name for i, name in enumerate(names)}
        values["label2id"] = {name: i for i, name in enumerate(names)}
        # The output layer is always tied to the word embeddings here, as in every reference checkpoint.
        return {**self.extra_keys, "model_type": self.model_type, **values, "tie_word_embeddings": True}


class Dropout(nn.Dropout):
    """nn.Dropout with a mask that is ~4x cheaper to draw on CPU; the drop probability is p to within 2^-17.

    torch draws a CPU dropout mask one double-precision Bernoulli sample at a time (its vectorised path
    runs on Intel CPUs only): ~9 ms per million elements on one core, serial whatever the thread count.
    Here each kept/dropped decision compares 16 random bits from the same global generator (so seeds and
    exact resume work as before) against round(p * 2^16): an element is dropped with probability
    p' = round(p * 2^16) / 2^16 (p = 0.1 gives 0.1000061), and kept ones are scaled by 1 / (1 - p'), so
    the expectation is exactly the input's. ~2.5 ms per million. An ELECTRA-small pretraining step draws
    ~30 million. Other devices use F.dropout, as does a p that rounds to 1.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    if not training or p == 0.0:
        return x
    threshold = round(p * 2**16)  # drop where 16 uniform random bits, as an integer, are below it
    if x.device.type != "cpu" or threshold == 2**16:
        return F.dropout(x, p, training=True)
    # Four 16-bit draws per int64 (torch's full-range int64 sampler), read as signed int16.
    words = torch.empty((x.numel() + 3) // 4, dtype=torch.int64).random_(-(2**63), None)
    uniform = words.view(torch.int16)[: x.numel()].view(x.shape)  # uniform over [-2**15, 2**15)
    keep = uniform >= threshold - 2**15
    return x.mul(keep).mul_(2**16 / (2**16 - threshold))  # autograd keeps the bool mask, not a float copy


class Embeddings(nn.Module):
    """Word + token type + absolute position embeddings of width E, then LayerNorm and dropout."""

    def __init__(self, vocab_size: int, embedding_size: int, max_positions: int, type_vocab_size: int,
                 pad_token_id: int | None, layer_norm_eps: float, dropout: float, positions_from_pad: bool = False):
        """positions_from_pad: RoBERTa's positions (`position_ids`), else 0, 1, 2, ... as BERT's."""
        super().__init__()
        self.positions_pad_id = pad_token_id if positions_from_pad else None
        self.word_embeddings = nn.Embedding(vocab_size, embedding_size, padding_idx=pad_token_id)
        # RoBERTa's padding position, as its pad token, gets no gradient (transformers' padding_idx on both)
        self.position_embeddings = nn.Embedding(max_positions, embedding_size, padding_idx=self.positions_pad_id)
        self.token_type_embeddings = nn.Embedding(type_vocab_size, embedding_size)
        self.norm = nn.LayerNorm(embedding_size, eps=layer_norm_eps)
        self.dropout = Dropout(dropout)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        if self.positions_pad_id is None:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        else:
            positions = position_ids(input_ids, self.positions_pad_id)  # (B, S)
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        x = x + self.position_embeddings(positions)  # (B, S, E)
        return self.dropout(self.norm(x))


class TokenLayout:
    """Where a batch's tokens sit in the hidden states, and which keys attention may see.

    Hidden states are (B, S, H), or packed as (N, H) when padding is left out: every layer except
    attention works token by token, so it runs on the N kept tokens only; attention puts the tokens
    back in their (B, S) places for the batched kernel, with the padding masked out as keys, so each
    example still attends only to itself. Packing keeps the real tokens plus the positions a head
    reads (`needed`, e.g. the first token for a classifier); outputs at the positions left out are 0.
    """

    def __init__(self, attention_mask: torch.Tensor | None, needed: torch.Tensor | None, batch_size: int,
                 seq_len: int):
        self.batch_size, self.seq_len = batch_size, seq_len
        real = attention_mask.bool() if attention_mask is not None else None
        if real is not None and bool(real.all()):
            real = None  # no padding: no mask to apply (SDPA's fastest path), nothing to pack
        # (B, 1, 1, S) for SDPA, True where attention is allowed. A row that is all padding gets zeros
        # from SDPA, not NaN, so padded-out examples are harmless.
        self.key_mask = real[:, None, None, :] if real is not None else None
        self.kept = None  # (N,) flat indices into B * S of the packed tokens
        if real is not None and needed is not None:
            self.kept = (real | needed).flatten().nonzero().squeeze(1)

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """(B, S, D) -> (N, D) when packing, else unchanged."""
        return x if self.kept is None else x.reshape(-1, x.shape[-1]).index_select(0, self.kept)

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        """Back to (B, S, D), zeros at the positions left out."""
        if self.kept is None:
            return x
        full = x.new_zeros(self.batch_size * self.seq_len, x.shape[-1]).index_copy(0, self.kept, x)
        return full.view(self.batch_size, self.seq_len, -1)

    def to_heads(self, x: torch.Tensor, num_heads: int) -> torch.Tensor:
        """Hidden states -> (B, heads, S, head size)."""
        x = self.unpack(x)
        return x.view(self.batch_size, self.seq_len, num_heads, -1).transpose(1, 2)

    def from_heads(self, y: torch.Tensor) -> torch.Tensor:
        """(B, heads, S, head size) -> hidden states in this layout."""
        return self.pack(y.transpose(1, 2).reshape(self.batch_size, self.seq_len, -1))


def first_token(input_ids: torch.Tensor) -> torch.Tensor:
    """bool (B, S), True at position 0: what a classifier or pooler reads."""
    needed = torch.zeros(input_ids.shape, dtype=torch.bool, device=input_ids.device)
    needed[:, 0] = True
    return needed


class SelfAttention(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, dropout: float):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not a multiple of num_attention_heads {num_heads}")
        self.num_heads = num_heads
        self.dropout = dropout
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)
        self.output = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        q, k, v = (layout.to_heads(proj(x), self.num_heads) for proj in (self.query, self.key, self.value))
        p = self.dropout if self.training else 0.0
        if p > 0 and x.device.type == "cpu":
            y = _attention_with_dropout(q, k, v, layout.key_mask, p)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=layout.key_mask, dropout_p=p)
        return self.output(layout.from_heads(y))


def _attention_with_dropout(q, k, v, key_mask, p: float) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v with dropout on the weights, as SDPA computes it, but with our faster mask.

    SDPA's CPU kernel has no dropout; its fallback does these same steps with torch's slow dropout mask.
    A key mask fills with the lowest finite value, so a row that is all padding gets uniform weights, not NaN.
    """
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)  # (B, heads, S, S)
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask, torch.finfo(scores.dtype).min)
    return dropout(scores.softmax(-1), p, training=True) @ v


class FeedForward(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int, act: str):
        super().__init__()
        self.up = nn.Linear(hidden_size, intermediate_size)
        self.act = activation(act)
        self.down = nn.Linear(intermediate_size, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.act(self.up(x)))


class TransformerLayer(nn.Module):
    """Post-LN layer of BERT: x = LN(x + drop(attn(x))); x = LN(x + drop(ffn(x)))."""

    def __init__(self, hidden_size: int, num_heads: int, intermediate_size: int, act: str,
                 hidden_dropout: float, attention_dropout: float, layer_norm_eps: float):
        super().__init__()
        self.attention = SelfAttention(hidden_size, num_heads, attention_dropout)
        self.attention_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.feed_forward = FeedForward(hidden_size, intermediate_size, act)
        self.output_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.dropout = Dropout(hidden_dropout)

    def forward(self, x: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        x = self.attention_norm(x + self.dropout(self.attention(x, layout)))
        return self.output_norm(x + self.dropout(self.feed_forward(x)))


class Pooler(nn.Module):
    """BERT/ALBERT pooler: tanh(dense(first token))."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))  # (B, H)


class MaskedLMHead(nn.Module):
    """dense H->E, activation, LayerNorm, then the decoder E->V whose weight is the word embedding matrix.

    The tied weight is passed in at call time rather than held, so the tie cannot come undone (after a
    load, a `.to()`, or a swap of the embedding module) and each parameter appears once in state_dict.
    """

    def __init__(self, hidden_size: int, embedding_size: int, vocab_size: int, act: str, layer_norm_eps: float):
        super().__init__()
        self.dense = nn.Linear(hidden_size, embedding_size)
        self.act = activation(act)
        self.norm = nn.LayerNorm(embedding_size, eps=layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, hidden: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        return F.linear(self.norm(self.act(self.dense(hidden))), word_embeddings, self.bias)


class SpanLogits(NamedTuple):
    """What a question-answering head returns: per token, the logit of the answer starting or ending there."""

    start_logits: torch.Tensor  # (B, S)
    end_logits: torch.Tensor  # (B, S)


def span_logits(qa_outputs: nn.Linear, hidden: torch.Tensor) -> SpanLogits:
    """transformers' qa_outputs: one linear layer H -> 2 on every token, split into start and end logits."""
    start, end = qa_outputs(hidden).unbind(-1)  # (B, S) each
    return SpanLogits(start, end)


def flatten_choices(*inputs: torch.Tensor | None) -> list[torch.Tensor | None]:
    """(B, C, S) -> (B * C, S) for each input (None stays None): a multiple-choice head encodes every
    (context, choice) pair as its own sequence, then views its C scores per example back as (B, C)."""
    return [None if x is None else x.reshape(-1, x.shape[-1]) for x in inputs]


def select_masked(hidden: torch.Tensor, mlm_mask: torch.Tensor | None) -> torch.Tensor:
    """(B, S, H) -> (N, H) rows at mlm_mask in row-major order, so the MLM head runs only where needed."""
    return hidden if mlm_mask is None else hidden[mlm_mask]


@torch.no_grad()
def init_weights(model: nn.Module, std: float) -> None:
    """transformers' init: normal(0, std) weights, zero biases, LayerNorm 1/0, zero padding embedding."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, std)
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, 0.0, std)
            if module.padding_idx is not None:
                module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            module.weight.fill_(1.0)
            module.bias.zero_()
        elif isinstance(module, MaskedLMHead):
            module.bias.zero_()


def position_ids(input_ids: torch.Tensor, padding_idx: int) -> torch.Tensor:
    """RoBERTa's positions: padding_idx + 1, + 2, ... counting the tokens, padding_idx at padding."""
    is_token = input_ids.ne(padding_idx).int()
    return (torch.cumsum(is_token, dim=1) * is_token).long() + padding_idx


def unique_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """state_dict with every tensor once, under its first name: weights shared between modules (I-BERT's
    shared layers, ibert.model.IBertEncoder) are stored once, as the model holds them."""
    state, seen = {}, set()
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) not in seen:
            seen.add(id(tensor))
            state[name] = tensor.detach()
    return state
