"""Sequence classification and regression (GLUE): the objective, and examples to padded batches.

Examples are anything with `text_a`, `text_b` (or None) and `label` (class index, float score,
or None for unlabeled test sets), such as `encoderkit.data.glue.GlueExample`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class ClassificationObjective:
    """Cross-entropy over `num_labels` classes, or with num_labels == 1 mean squared error on a score.

    The model maps (input_ids, attention_mask, token_type_ids) to logits [B, num_labels].
    """

    def __init__(self, num_labels: int):
        if num_labels < 1:
            raise ValueError(f"num_labels must be at least 1, got {num_labels}")
        self.num_labels = num_labels
        self.is_regression = num_labels == 1

    def __call__(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        labels = batch["labels"]
        if self.is_regression:
            loss = F.mse_loss(logits.squeeze(-1).float(), labels.float())
            return loss, {"loss": float(loss.detach())}
        loss = F.cross_entropy(logits.float(), labels)
        accuracy = (logits.detach().argmax(-1) == labels).float().mean()
        return loss, {"loss": float(loss.detach()), "accuracy": float(accuracy)}

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        """Class indices, or scores for regression: what the GLUE metrics and submissions take."""
        return logits.squeeze(-1) if self.is_regression else logits.argmax(-1)


@dataclass
class EncodedExamples:
    """Token ids of every example, padded to max_seq_length; batches are cut to their longest row."""

    input_ids: torch.Tensor  # [N, max_seq_length] int32, pad_id after the real tokens
    token_type_ids: torch.Tensor  # [N, max_seq_length] int8: 0 for [CLS] a [SEP], 1 for b [SEP]
    lengths: torch.Tensor  # [N] number of real tokens
    labels: torch.Tensor | None  # [N] int64 classes or float32 scores; None when unlabeled

    def __len__(self) -> int:
        return len(self.lengths)


def encode_examples(examples: Sequence, tokenizer, max_seq_length: int) -> EncodedExamples:
    """`[CLS] a [SEP]` or `[CLS] a [SEP] b [SEP]`, pairs truncated longest-first to max_seq_length.

    `tokenizer` needs `encode(text) -> list[int]` and `cls_id`, `sep_id`, `pad_id`.
    """
    if max_seq_length < 3:
        raise ValueError(f"max_seq_length must leave room for [CLS] and [SEP] tokens, got {max_seq_length}")
    count = len(examples)
    input_ids = torch.full((count, max_seq_length), tokenizer.pad_id, dtype=torch.int32)
    token_type_ids = torch.zeros((count, max_seq_length), dtype=torch.int8)
    lengths = torch.zeros(count, dtype=torch.long)
    for row, example in enumerate(examples):
        tokens_a = list(tokenizer.encode(example.text_a))
        tokens_b = list(tokenizer.encode(example.text_b)) if example.text_b is not None else []
        special_tokens = 3 if example.text_b is not None else 2
        # Like BERT: shorten the longer text one token at a time, so a short text stays whole.
        while len(tokens_a) + len(tokens_b) > max_seq_length - special_tokens:
            (tokens_a if len(tokens_a) > len(tokens_b) else tokens_b).pop()
        first = [tokenizer.cls_id, *tokens_a, tokenizer.sep_id]
        second = [*tokens_b, tokenizer.sep_id] if example.text_b is not None else []
        ids = first + second
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.int32)
        token_type_ids[row, len(first) : len(ids)] = 1
        lengths[row] = len(ids)
    return EncodedExamples(input_ids, token_type_ids, lengths, _labels_tensor(examples))


def _labels_tensor(examples: Sequence) -> torch.Tensor | None:
    labels = [example.label for example in examples]
    if all(label is None for label in labels):
        return None
    if any(label is None for label in labels):
        raise ValueError("some examples have a label and some do not")
    return torch.tensor(labels)  # int64 for class indices, float32 for scores


def iter_batches(encoded: EncodedExamples, batch_size: int, shuffle: bool, seed: int = 0) -> Iterator[dict]:
    """One pass over the examples in batches (the last may be smaller), each cut to its longest row.

    With `shuffle` the order is a permutation drawn from `seed` (pass a new seed per epoch).
    """
    if shuffle:
        order = torch.randperm(len(encoded), generator=torch.Generator().manual_seed(seed))
    else:
        order = torch.arange(len(encoded))
    for start in range(0, len(encoded), batch_size):
        rows = order[start : start + batch_size]
        lengths = encoded.lengths[rows]
        width = int(lengths.max())
        batch = {
            "input_ids": encoded.input_ids[rows, :width].long(),
            "attention_mask": (torch.arange(width) < lengths[:, None]).long(),
            "token_type_ids": encoded.token_type_ids[rows, :width].long(),
        }
        if encoded.labels is not None:
            batch["labels"] = encoded.labels[rows]
        yield batch


def add_swapped_pairs(examples: Sequence) -> list:
    """The examples followed by copies with text_a and text_b swapped.

    For training sets of tasks whose label does not depend on the order of the two texts
    (MRPC, STS-B, QQP: `GlueTask.symmetric_pairs`).
    """
    if any(example.text_b is None for example in examples):
        raise ValueError("swapping needs sentence pairs; some examples have no text_b")
    swapped = [dataclasses.replace(example, text_a=example.text_b, text_b=example.text_a) for example in examples]
    return list(examples) + swapped
