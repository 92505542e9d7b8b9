"""ALBERT's examples: [CLS] A [SEP] B [SEP] within one document, sentence order, lengths, truncation."""

import random

import pytest

from encoderkit.data.examples import ORIGINAL_ORDER, SWAPPED, document_examples, iter_examples, truncate_seq_pair

CLS, SEP = 2, 3


def counting_document(start: int, sentence_lengths: list[int]) -> list[list[int]]:
    """Sentences of increasing token ids from `start`: the order of any two pieces is visible in the ids."""
    sentences, next_id = [], start
    for length in sentence_lengths:
        sentences.append(list(range(next_id, next_id + length)))
        next_id += length
    return sentences


def segments(example):
    first_sep = example.input_ids.index(SEP)
    return example.input_ids[1:first_sep], example.input_ids[first_sep + 1 : -1]


def test_examples_are_cls_a_sep_b_sep_with_segment_ids_and_fit():
    rng = random.Random(0)
    documents = [counting_document(1000 * d + 10, [rng.randint(1, 30) for _ in range(40)]) for d in range(20)]
    examples = list(iter_examples(documents, rng, max_seq_length=64, cls_id=CLS, sep_id=SEP))
    assert len(examples) > 100
    for example in examples:
        a, b = segments(example)
        assert a and b and len(example.input_ids) <= 64
        assert example.input_ids == [CLS, *a, SEP, *b, SEP]
        assert example.token_type_ids == [0] * (len(a) + 2) + [1] * (len(b) + 1)


def test_documents_never_mix():
    rng = random.Random(1)
    # document d uses ids in [1000 d, 1000 d + 999]; one-sentence documents too
    documents = [
        counting_document(1000 * d + 10, [rng.randint(1, 20) for _ in range(rng.randint(1, 12))]) for d in range(1, 200)
    ]
    for example in iter_examples(documents, rng, max_seq_length=48, cls_id=CLS, sep_id=SEP):
        assert len({token // 1000 for token in example.input_ids if token not in (CLS, SEP)}) == 1


def test_sentence_order_labels_tell_whether_a_and_b_were_swapped():
    rng = random.Random(2)
    labels = []
    for _ in range(600):
        document = counting_document(10, [rng.randint(3, 15) for _ in range(30)])
        for example in document_examples(document, rng, max_seq_length=64, cls_id=CLS, sep_id=SEP):
            a, b = segments(example)
            if example.sop_label == ORIGINAL_ORDER:
                assert max(a) < min(b)
            else:
                assert example.sop_label == SWAPPED and min(a) > max(b)
            labels.append(example.sop_label)
    assert len(labels) > 2500
    assert 0.46 < sum(labels) / len(labels) < 0.54


@pytest.mark.parametrize("short_seq_prob", [0.0, 0.1, 0.5])
def test_short_sequences_come_with_short_seq_prob(short_seq_prob):
    rng = random.Random(3)
    max_seq_length = 64  # full examples hold 61 tokens, short ones at most target + 1 (one-token sentences)
    document = counting_document(10, [1] * 100_000)
    examples = document_examples(
        document, rng, max_seq_length=max_seq_length, cls_id=CLS, sep_id=SEP, short_seq_prob=short_seq_prob
    )[:-1]  # the last one ends with the document
    full = max_seq_length - 3
    assert all(len(e.input_ids) - 3 <= full for e in examples)
    short = sum(len(e.input_ids) - 3 < full - 1 for e in examples) / len(examples)
    # a short target of full - 2 or more still makes a full-length example
    expected = short_seq_prob * (full - 3) / (full - 1)
    assert abs(short - expected) < 0.03, (short, expected, len(examples))


def test_a_single_sentence_chunk_is_split_inside_the_sentence():
    rng = random.Random(4)
    examples = document_examples(
        [list(range(10, 200))], rng, max_seq_length=64, cls_id=CLS, sep_id=SEP, short_seq_prob=0.0
    )
    assert len(examples) == 1 and len(examples[0].input_ids) == 64
    assert document_examples([[10]], rng, max_seq_length=64, cls_id=CLS, sep_id=SEP) == []
    assert document_examples([], rng, max_seq_length=64, cls_id=CLS, sep_id=SEP) == []


def test_truncate_seq_pair_trims_the_longer_side_from_either_end():
    rng = random.Random(5)
    trimmed_front = trimmed_back = 0
    for _ in range(200):
        a, b = list(range(100, 150)), list(range(200, 210))
        truncate_seq_pair(a, b, 40, rng)
        assert len(a) + len(b) == 40 and b == list(range(200, 210))
        assert a == list(range(a[0], a[-1] + 1))  # still one contiguous run
        trimmed_front += a[0] > 100
        trimmed_back += a[-1] < 149
    assert trimmed_front > 150 and trimmed_back > 150
