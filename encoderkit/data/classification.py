"""Sentence (pair) classification data: examples to padded token ids, batches, epochs.

Examples are anything with `text_a`, `text_b` (or None) and `label` (class index, float score,
or None for unlabeled test sets), such as `encoderkit.data.glue.GlueExample`.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch


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
    """`[CLS] a [SEP]` or `[CLS] a [SEP] b [SEP]`, pairs truncated longest-first to max_seq_length; RoBERTa's
    tokenizer makes pairs `<s> a </s></s> b </s>` of one token type.

    `tokenizer` needs `encode(text) -> list[int]` and `cls_id`, `sep_id`, `pad_id`; `pair_separators` and
    `second_type_id` when its pairs are not BERT's (see data.tokenizer.Tokenizer).
    """
    separators = getattr(tokenizer, "pair_separators", 1)
    second_type_id = getattr(tokenizer, "second_type_id", 1)
    if max_seq_length < 3:
        raise ValueError(f"max_seq_length must leave room for [CLS] and [SEP] tokens, got {max_seq_length}")
    count = len(examples)
    input_ids = torch.full((count, max_seq_length), tokenizer.pad_id, dtype=torch.int32)
    token_type_ids = torch.zeros((count, max_seq_length), dtype=torch.int8)
    lengths = torch.zeros(count, dtype=torch.long)
    for row, example in enumerate(examples):
        tokens_a = list(tokenizer.encode(example.text_a))
        tokens_b = list(tokenizer.encode(example.text_b)) if example.text_b is not None else []
        special_tokens = 2 + separators if example.text_b is not None else 2
        # Like BERT: shorten the longer text one token at a time, so a short text stays whole.
        while len(tokens_a) + len(tokens_b) > max_seq_length - special_tokens:
            (tokens_a if len(tokens_a) > len(tokens_b) else tokens_b).pop()
        first = [tokenizer.cls_id, *tokens_a, tokenizer.sep_id]
        second = []
        if example.text_b is not None:
            second = [tokenizer.sep_id] * (separators - 1) + [*tokens_b, tokenizer.sep_id]
        ids = first + second
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.int32)
        token_type_ids[row, len(first) : len(ids)] = second_type_id
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


class EpochBatches:
    """Endless training micro-batches, epoch after epoch, each epoch in a new shuffled order.

    An epoch is `batches_per_epoch` full batches (the few examples after the last full batch differ
    from epoch to epoch). The state, (epoch, batch), is what the loop's checkpoints save for an exact resume.
    """

    def __init__(self, examples: EncodedExamples, batch_size: int, batches_per_epoch: int, seed: int):
        self.examples, self.batch_size, self.seed = examples, batch_size, seed
        self.batches_per_epoch = batches_per_epoch
        self.epoch, self.batch = 0, 0
        self._rest_of_epoch = None

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self.batch == self.batches_per_epoch:
            self.epoch, self.batch, self._rest_of_epoch = self.epoch + 1, 0, None
        if self._rest_of_epoch is None:
            # seed * 10_000 + epoch: two seeds never share an epoch's order (seed + epoch would).
            order = iter_batches(self.examples, self.batch_size, shuffle=True, seed=self.seed * 10_000 + self.epoch)
            self._rest_of_epoch = itertools.islice(order, self.batch, None)
        self.batch += 1
        return next(self._rest_of_epoch)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batch}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.batch, self._rest_of_epoch = state["epoch"], state["batch"], None
