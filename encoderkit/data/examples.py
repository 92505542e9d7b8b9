"""ALBERT's pretraining examples: sentence pairs of one document, in order or swapped (sentence-order prediction).

Follows `create_instances_from_document` of google-research/albert's create_pretraining_data.py, streamed
one document at a time. Unlike the original, B never comes from another document: a chunk of a single
sentence is split inside that sentence, so documents never mix.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

ORIGINAL_ORDER, SWAPPED = 0, 1  # sop_label, as in transformers' AlbertForPreTraining


@dataclass(frozen=True)
class Example:
    """`[CLS] A [SEP] B [SEP]` as token ids, with its segment ids and sentence-order label."""

    input_ids: list[int]
    token_type_ids: list[int]
    sop_label: int


def iter_examples(
    documents: Iterable[list[list[int]]],
    rng: random.Random,
    *,
    max_seq_length: int,
    cls_id: int,
    sep_id: int,
    short_seq_prob: float = 0.1,
) -> Iterator[Example]:
    """Examples of each tokenized document (a list of sentences, each a list of token ids) in turn."""
    for document in documents:
        yield from document_examples(
            document,
            rng,
            max_seq_length=max_seq_length,
            cls_id=cls_id,
            sep_id=sep_id,
            short_seq_prob=short_seq_prob,
        )


def document_examples(
    document: list[list[int]],
    rng: random.Random,
    *,
    max_seq_length: int,
    cls_id: int,
    sep_id: int,
    short_seq_prob: float = 0.1,
    swap_prob: float = 0.5,
) -> list[Example]:
    """Pack the sentences of one document into segment pairs of about the target length.

    Each pair is swapped with probability `swap_prob` (0.5 for sentence-order prediction, 0 for ELECTRA).

    The target is max_seq_length - 3 (room for [CLS] and two [SEP]); with probability `short_seq_prob`
    a random shorter target in [2, max_seq_length - 3], to reduce the mismatch with short fine-tuning
    inputs. The original draws it once per document and then shuffles all examples; streamed, without
    that shuffle, it is drawn per example so that short examples spread evenly over the batches.
    """
    max_num_tokens = max_seq_length - 3
    target_length = _target_length(max_num_tokens, short_seq_prob, rng)
    sentences = [sentence for sentence in document if sentence]
    examples = []
    chunk: list[list[int]] = []
    chunk_length = 0
    for index, sentence in enumerate(sentences):
        chunk.append(sentence)
        chunk_length += len(sentence)
        if index == len(sentences) - 1 or chunk_length >= target_length:
            pair = _split_chunk(chunk, rng)
            if pair is not None:
                examples.append(_make_example(*pair, max_num_tokens, cls_id, sep_id, rng, swap_prob))
            chunk, chunk_length = [], 0
            target_length = _target_length(max_num_tokens, short_seq_prob, rng)
    return examples


def _target_length(max_num_tokens: int, short_seq_prob: float, rng: random.Random) -> int:
    return rng.randint(2, max_num_tokens) if rng.random() < short_seq_prob else max_num_tokens


def _split_chunk(chunk: list[list[int]], rng: random.Random) -> tuple[list[int], list[int]] | None:
    """A and B: the chunk cut at a random sentence boundary (inside the sentence if there is only one)."""
    if len(chunk) >= 2:
        a_end = rng.randint(1, len(chunk) - 1)
        return [t for sentence in chunk[:a_end] for t in sentence], [t for sentence in chunk[a_end:] for t in sentence]
    sentence = chunk[0]
    if len(sentence) < 2:
        return None
    cut = rng.randint(1, len(sentence) - 1)
    return sentence[:cut], sentence[cut:]


def _make_example(
    tokens_a: list[int], tokens_b: list[int], max_num_tokens: int, cls_id: int, sep_id: int, rng: random.Random,
    swap_prob: float,
) -> Example:
    sop_label = SWAPPED if rng.random() < swap_prob else ORIGINAL_ORDER
    if sop_label == SWAPPED:
        tokens_a, tokens_b = tokens_b, tokens_a
    truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
    input_ids = [cls_id, *tokens_a, sep_id, *tokens_b, sep_id]
    token_type_ids = [0] * (len(tokens_a) + 2) + [1] * (len(tokens_b) + 1)
    return Example(input_ids, token_type_ids, sop_label)


def truncate_seq_pair(tokens_a: list[int], tokens_b: list[int], max_num_tokens: int, rng: random.Random) -> None:
    """Shorten the longer of A and B, one token at a time from its front or back at random, until both fit."""
    while len(tokens_a) + len(tokens_b) > max_num_tokens:
        longer = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
        if rng.random() < 0.5:
            del longer[0]
        else:
            longer.pop()


# ---------------------------------------------------------------------------------------------------
# Plain MLM (BERT, RoBERTa): packed full-length sequences, no sentence pairs


def packed_examples(
    document: list[list[int]], carry: list[int], *, max_seq_length: int, cls_id: int, sep_id: int
) -> tuple[list[Example], list[int]]:
    """RoBERTa's FULL-SENTENCES packing (Liu et al. 2019, section 4.2): the document's tokens, then a [SEP] that
    ends it, follow `carry` (what the documents before left over) and are cut into `[CLS] ... [SEP]` sequences
    of exactly max_seq_length. Returns those and the new carry (fewer tokens than fit in one sequence).

    Sequences may span documents, as in RoBERTa; the [SEP] between documents marks where one ends."""
    tokens = [token for sentence in document for token in sentence]
    if not tokens:
        return [], carry
    stream = carry + tokens + [sep_id]
    size = max_seq_length - 2
    cut = len(stream) - len(stream) % size
    examples = [packed_example(stream[start : start + size], cls_id, sep_id) for start in range(0, cut, size)]
    return examples, stream[cut:]


def packed_example(tokens: list[int], cls_id: int, sep_id: int) -> Example:
    return Example([cls_id, *tokens, sep_id], [0] * (len(tokens) + 2), ORIGINAL_ORDER)
