"""Masking: ALBERT's n-gram whole-word masking and ELECTRA's batch masking, checked statistically."""

import collections
import random
from types import SimpleNamespace

import pytest
import torch

from encoderkit.data.masking import (
    IGNORE_INDEX,
    choose_ngram_spans,
    group_words,
    mask_tokens,
    mask_whole_word_ngrams,
)

PAD, CLS, SEP, MASK = 0, 2, 3, 4
# ids 5..499 start a word, 500..999 continue one
VOCAB = SimpleNamespace(
    mask_id=MASK, vocab_size=1000, special_ids=frozenset(range(5)), word_start=[True] * 500 + [False] * 500
)


def random_example(rng: random.Random, length: int) -> list[int]:
    """[CLS] A [SEP] B [SEP] of words made of 1-4 pieces."""
    tokens = []
    while len(tokens) < length - 3:
        tokens += [rng.randrange(5, 500)] + [rng.randrange(500, 1000) for _ in range(rng.randint(0, 3))]
    tokens = tokens[: length - 3]
    cut = len(tokens) // 2
    return [CLS, *tokens[:cut], SEP, *tokens[cut:], SEP]


def test_group_words_joins_continuations_and_skips_specials():
    assert group_words([CLS, 10, 600, 11, SEP, 700, 12, 601, 602, SEP], VOCAB) == [[1, 2], [3], [5], [6, 7, 8]]


def test_about_15_percent_of_tokens_are_predicted_never_specials_and_always_whole_words():
    rng = random.Random(0)
    predicted = total = 0
    for _ in range(300):
        input_ids = random_example(rng, rng.randint(20, 128))
        masked_ids, labels = mask_whole_word_ngrams(input_ids, VOCAB, rng)
        count = sum(label != IGNORE_INDEX for label in labels)
        assert 1 <= count <= round(0.15 * len(input_ids))
        predicted, total = predicted + count, total + len(input_ids)
        for position, token in enumerate(input_ids):
            if token in VOCAB.special_ids:
                assert labels[position] == IGNORE_INDEX and masked_ids[position] == token
            elif labels[position] == IGNORE_INDEX:
                assert masked_ids[position] == token
            else:
                assert labels[position] == token
        for word in group_words(input_ids, VOCAB):
            assert len({labels[position] == IGNORE_INDEX for position in word}) == 1, "a word is masked in part"
    assert 0.14 < predicted / total <= 0.15


def test_masked_tokens_become_mask_80_random_10_unchanged_10_percent():
    rng = random.Random(1)
    outcomes = collections.Counter()
    for _ in range(400):
        input_ids = random_example(rng, 128)
        masked_ids, labels = mask_whole_word_ngrams(input_ids, VOCAB, rng)
        for token, masked, label in zip(input_ids, masked_ids, labels, strict=True):
            if label != IGNORE_INDEX:
                outcomes["mask" if masked == MASK else "same" if masked == token else "random"] += 1
                assert masked not in VOCAB.special_ids or masked == MASK
    total = sum(outcomes.values())
    assert total > 7000
    assert abs(outcomes["mask"] / total - 0.8) < 0.02
    assert abs(outcomes["same"] / total - 0.1) < 0.015
    assert abs(outcomes["random"] / total - 0.1) < 0.015


@pytest.mark.parametrize("max_ngram", [1, 3])
def test_ngram_lengths_follow_one_over_n(max_ngram):
    # many words and a small budget, so that overlaps and the budget hardly bend the draw
    rng = random.Random(2)
    counts = collections.Counter()
    for _ in range(150):
        words = [[i] for i in range(1000)]
        spans = choose_ngram_spans(words, 60, max_ngram, rng)
        assert sum(len(word) for span in spans for word in span) == 60
        assert all(span == words[span[0][0] : span[0][0] + len(span)] for span in spans)  # consecutive words
        counts.update(len(span) for span in spans)
    total = sum(counts.values())
    weights = [1 / n for n in range(1, max_ngram + 1)]
    for n, weight in enumerate(weights, start=1):
        assert abs(counts[n] / total - weight / sum(weights)) < 0.02, (n, counts)


def test_whole_word_masking_is_seeded():
    input_ids = random_example(random.Random(3), 100)
    first = mask_whole_word_ngrams(input_ids, VOCAB, random.Random(7))
    assert first == mask_whole_word_ngrams(input_ids, VOCAB, random.Random(7))
    assert first != mask_whole_word_ngrams(input_ids, VOCAB, random.Random(8))


def electra_batch(rows: int = 64, length: int = 128) -> torch.Tensor:
    """Rows of [CLS] tokens [SEP] and padding of random lengths."""
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, 1000, (rows, length), generator=generator)
    lengths = torch.randint(10, length + 1, (rows,), generator=generator)
    positions = torch.arange(length)
    input_ids[:, 0] = CLS
    input_ids[torch.arange(rows), lengths - 1] = SEP
    return input_ids.masked_fill(positions >= lengths[:, None], PAD)


def test_electra_masks_15_percent_of_each_row_85_mask_15_unchanged():
    input_ids = electra_batch()
    masked_ids, labels = mask_tokens(input_ids, VOCAB, torch.Generator().manual_seed(1))
    maskable = input_ids > 4
    selected = labels != IGNORE_INDEX
    assert not (selected & ~maskable).any()
    assert torch.equal(selected.sum(1), torch.round(maskable.sum(1) * 0.15).long())
    assert torch.equal(labels[selected], input_ids[selected])
    assert torch.equal(masked_ids[~selected], input_ids[~selected])
    became_mask = (masked_ids[selected] == MASK).float().mean()
    unchanged = (masked_ids[selected] == input_ids[selected]).float().mean()
    assert abs(became_mask - 0.85) < 0.03 and abs(unchanged - 0.15) < 0.03
    assert abs(became_mask + unchanged - 1) < 1e-6  # no random tokens


def test_electra_masking_can_do_80_10_10_and_is_seeded():
    input_ids = electra_batch(rows=128)
    masked_ids, labels = mask_tokens(
        input_ids, VOCAB, torch.Generator().manual_seed(2), mask_token_prob=0.8, random_token_prob=0.1
    )
    selected = labels != IGNORE_INDEX
    became_mask = (masked_ids[selected] == MASK).float().mean()
    unchanged = (masked_ids[selected] == input_ids[selected]).float().mean()
    assert abs(became_mask - 0.8) < 0.03 and abs(unchanged - 0.1) < 0.02
    assert not torch.isin(masked_ids[selected & (masked_ids != MASK)], torch.arange(5)).any()
    again = mask_tokens(input_ids, VOCAB, torch.Generator().manual_seed(2), mask_token_prob=0.8, random_token_prob=0.1)
    assert torch.equal(again[0], masked_ids) and torch.equal(again[1], labels)
