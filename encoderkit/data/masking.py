"""Masked-language-model inputs: ALBERT's n-gram whole-word masking and ELECTRA's token masking.

Both take a `vocab`: anything with `mask_id`, `vocab_size`, `special_ids` and (ALBERT) `word_start`,
such as `encoderkit.data.tokenizer.Tokenizer`. Labels are the original ids where a token is to be
predicted and -100 elsewhere.
"""

from __future__ import annotations

import random
from typing import Protocol

import torch

IGNORE_INDEX = -100  # label of positions that are not predicted (torch's cross-entropy ignore_index)


class MaskingVocab(Protocol):
    mask_id: int
    vocab_size: int
    special_ids: frozenset[int]
    word_start: list[bool]


# ---------------------------------------------------------------------------------------------------
# ALBERT: n-gram whole-word masking, one example at a time (create_masked_lm_predictions)


def mask_whole_word_ngrams(
    input_ids: list[int],
    vocab: MaskingVocab,
    rng: random.Random,
    *,
    masked_lm_prob: float = 0.15,
    max_ngram: int = 3,
    max_predictions: int | None = None,
    mask_token_prob: float = 0.8,
    random_token_prob: float = 0.1,
) -> tuple[list[int], list[int]]:
    """Mask spans of 1..max_ngram whole words (p(n) ∝ 1/n) covering about `masked_lm_prob` of the tokens.

    round(masked_lm_prob * len) tokens are predicted (at least 1, at most `max_predictions`); each is
    replaced by [MASK] with probability `mask_token_prob` (80%), by a random token with
    `random_token_prob` (10%), and left unchanged otherwise. Special tokens are never masked.
    """
    words = group_words(input_ids, vocab)
    num_to_predict = max(1, round(len(input_ids) * masked_lm_prob))
    if max_predictions is not None:
        num_to_predict = min(num_to_predict, max_predictions)
    masked_ids = list(input_ids)
    labels = [IGNORE_INDEX] * len(input_ids)
    for span in choose_ngram_spans(words, num_to_predict, max_ngram, rng):
        for word in span:
            for position in word:
                labels[position] = input_ids[position]
                masked_ids[position] = _replacement(input_ids[position], vocab, rng, mask_token_prob, random_token_prob)
    return masked_ids, labels


def group_words(input_ids: list[int], vocab: MaskingVocab) -> list[list[int]]:
    """Positions of `input_ids` grouped into whole words; special tokens belong to no word."""
    words: list[list[int]] = []
    in_word = False
    for position, token_id in enumerate(input_ids):
        if token_id in vocab.special_ids:
            in_word = False
        elif in_word and not vocab.word_start[token_id]:
            words[-1].append(position)
        else:
            words.append([position])
            in_word = True
    return words


def choose_ngram_spans(
    words: list[list[int]], num_to_predict: int, max_ngram: int, rng: random.Random
) -> list[list[list[int]]]:
    """Spans of n consecutive words (n ≤ max_ngram, p(n) ∝ 1/n) to mask, covering at most `num_to_predict` tokens.

    As in ALBERT: visit the word positions in random order; at each, draw n, shorten the span while it
    would exceed the budget, and skip it if it still does or if it overlaps a span already chosen.
    """
    starts = list(range(len(words)))
    rng.shuffle(starts)
    spans = []
    covered: set[int] = set()
    num_covered = 0
    for start in starts:
        if num_covered >= num_to_predict:
            break
        lengths = range(1, min(max_ngram, len(words) - start) + 1)
        n = rng.choices(lengths, weights=[1 / length for length in lengths])[0]
        while n > 1 and num_covered + _span_size(words, start, n) > num_to_predict:
            n -= 1
        span = words[start : start + n]
        size = _span_size(words, start, n)
        if num_covered + size > num_to_predict or any(word[0] in covered for word in span):
            continue
        covered.update(word[0] for word in span)
        num_covered += size
        spans.append(span)
    return spans


def _span_size(words: list[list[int]], start: int, n: int) -> int:
    return sum(len(word) for word in words[start : start + n])


def _replacement(token_id: int, vocab: MaskingVocab, rng: random.Random, mask_token_prob: float,
                 random_token_prob: float) -> int:
    # With 0.8/0.1 these are the original's draws: 80% [MASK], then half of the rest unchanged, half random.
    if rng.random() < mask_token_prob:
        return vocab.mask_id
    if rng.random() < (1 - mask_token_prob - random_token_prob) / (1 - mask_token_prob):
        return token_id
    return _random_token(vocab, rng)


def _random_token(vocab: MaskingVocab, rng: random.Random) -> int:
    while True:  # specials are a handful of ids: rejection is cheap
        token_id = rng.randrange(vocab.vocab_size)
        if token_id not in vocab.special_ids:
            return token_id


# ---------------------------------------------------------------------------------------------------
# ELECTRA: token masking of a whole batch at once


def mask_tokens(
    input_ids: torch.Tensor,
    vocab: MaskingVocab,
    generator: torch.Generator,
    *,
    mask_prob: float = 0.15,
    mask_token_prob: float = 0.85,
    random_token_prob: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask round(mask_prob * n) of the n non-special tokens of each row of `input_ids` [B, S].

    Chosen tokens become [MASK] with probability `mask_token_prob`, a random non-special token with
    `random_token_prob`, and stay unchanged otherwise: ELECTRA's 85/0/15 by default, BERT's 80/10/10
    with mask_token_prob=0.8, random_token_prob=0.1.
    """
    special = torch.tensor(sorted(vocab.special_ids), dtype=input_ids.dtype, device=input_ids.device)
    maskable = ~torch.isin(input_ids, special)
    num_maskable = maskable.sum(dim=1, keepdim=True)
    num_to_predict = torch.minimum(torch.round(num_maskable * mask_prob).clamp(min=1), num_maskable)
    # a uniformly random subset of size num_to_predict: the maskable positions with the smallest random keys
    keys = torch.rand(input_ids.shape, generator=generator, device=input_ids.device).masked_fill(~maskable, 2.0)
    rank = keys.argsort(dim=1).argsort(dim=1)
    selected = rank < num_to_predict

    decision = torch.rand(input_ids.shape, generator=generator, device=input_ids.device)
    to_mask = selected & (decision < mask_token_prob)
    to_random = selected & (decision >= mask_token_prob) & (decision < mask_token_prob + random_token_prob)
    normal_ids = torch.tensor(
        sorted(set(range(vocab.vocab_size)) - vocab.special_ids), dtype=input_ids.dtype, device=input_ids.device
    )
    random_ids = normal_ids[
        torch.randint(len(normal_ids), input_ids.shape, generator=generator, device=input_ids.device)
    ]
    masked_ids = torch.where(to_mask, vocab.mask_id, torch.where(to_random, random_ids, input_ids))
    labels = torch.where(selected, input_ids, IGNORE_INDEX)
    return masked_ids, labels
