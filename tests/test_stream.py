"""PretrainBatches: padded masked batches, seeding, passes with fresh masks, exact resume from a state dict."""

import json

import pytest
import torch
from data_helpers import random_documents, tiny_tokenizer, write_txt

from encoderkit.data.corpus import CorpusError
from encoderkit.data.stream import PretrainBatches


@pytest.fixture
def corpus(tmp_path):
    return write_txt(tmp_path / "corpus.txt", random_documents(10, 40))


def stream(source, seed=0, batch_size=8, max_seq_length=48, **options):
    return PretrainBatches(
        source, tiny_tokenizer(), batch_size=batch_size, max_seq_length=max_seq_length, seed=seed, **options
    )


def take(batches, count):
    return [next(batches) for _ in range(count)]


def assert_same(first, second):
    assert len(first) == len(second)
    for one, other in zip(first, second, strict=True):
        assert one.keys() == other.keys()
        for key in one:
            assert torch.equal(one[key], other[key]), key


def test_batches_are_padded_masked_rows_of_cls_a_sep_b_sep(corpus):
    tokenizer = tiny_tokenizer()
    for batch in take(stream(corpus), 10):
        assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "mlm_labels", "sop_labels"}
        rows, length = batch["input_ids"].shape
        assert rows == 8 and length <= 48 and batch["sop_labels"].shape == (8,)
        assert all(tensor.dtype == torch.long for tensor in batch.values())
        assert batch["attention_mask"].sum(1).max() == length  # padded to the longest row
        padding = batch["attention_mask"] == 0
        assert (batch["input_ids"][padding] == tokenizer.pad_id).all()
        assert (batch["mlm_labels"][padding] == -100).all() and (batch["token_type_ids"][padding] == 0).all()
        assert (batch["input_ids"][:, 0] == tokenizer.cls_id).all()
        assert ((batch["input_ids"] == tokenizer.sep_id).sum(1) == 2).all()
        predicted = batch["mlm_labels"] != -100
        assert predicted.any(1).all()
        assert not torch.isin(batch["mlm_labels"][predicted], torch.tensor(sorted(tokenizer.special_ids))).any()


def test_the_same_seed_gives_the_same_batches(corpus):
    assert_same(take(stream(corpus, seed=1), 5), take(stream(corpus, seed=1), 5))
    different = take(stream(corpus, seed=2), 5)
    assert any(
        not torch.equal(a["input_ids"], b["input_ids"])
        for a, b in zip(take(stream(corpus, seed=1), 5), different, strict=True)
    )


@pytest.mark.parametrize("taken", [0, 3, 7, 30])
def test_resume_from_a_state_dict_gives_exactly_the_next_batches(corpus, taken):
    # the corpus gives ~20 batches a pass: 30 + 12 batches cross into the second and third pass
    original = stream(corpus)
    take(original, taken)
    state = json.loads(json.dumps(original.state_dict()))  # as written to a checkpoint
    expected = take(original, 12)
    resumed = stream(corpus)
    resumed.load_state_dict(state)
    assert_same(take(resumed, 12), expected)


def test_resume_replays_at_most_the_current_document(corpus, monkeypatch):
    original = stream(corpus, batch_size=3)
    take(original, 5)
    state = original.state_dict()
    assert state["examples_taken"] > 0  # in the middle of a document
    resumed = stream(corpus, batch_size=3)
    resumed.load_state_dict(state)
    tokenizer = resumed.tokenizer
    documents_read = []
    encode_batch = tokenizer.encode_batch
    monkeypatch.setattr(tokenizer, "encode_batch", lambda texts: documents_read.append(texts) or encode_batch(texts))
    assert_same([next(resumed)], [next(original)])
    # the current document, then only as many as the 3 rows of the batch need
    assert 1 <= len(documents_read) <= 3


def test_every_pass_draws_new_masks(tmp_path):
    # two-sentence documents and no short targets: every pass makes the same pairs, only masks differ
    documents = [document[:2] for document in random_documents(11, 16, min_sentences=2)]
    corpus = write_txt(tmp_path / "pairs.txt", documents)
    batches = stream(corpus, batch_size=16, max_seq_length=64, short_seq_prob=0.0)
    first_pass = next(batches)
    assert batches.state_dict()["epoch"] == 0
    second_pass = next(batches)
    assert batches.state_dict()["epoch"] == 1

    def by_pair(batch):
        rows = {}
        for row in range(batch["input_ids"].shape[0]):
            predicted = batch["mlm_labels"][row] != -100
            original = torch.where(predicted, batch["mlm_labels"][row], batch["input_ids"][row])
            rows[tuple(sorted(original.tolist()))] = predicted
        return rows

    first, second = by_pair(first_pass), by_pair(second_pass)
    assert first.keys() == second.keys() and len(first) == 16
    assert sum(not torch.equal(first[pair], second[pair]) for pair in first) >= 12


def test_electra_stream_keeps_order_and_masks_single_tokens_85_15(corpus):
    tokenizer = tiny_tokenizer()
    batches = take(stream(corpus, masking="electra", mask_token_prob=0.85, random_token_prob=0.0,
                          sentence_order=False), 20)
    chosen = masked = kept = real = 0
    for batch in batches:
        assert (batch["sop_labels"] == 0).all()  # never swapped
        labels, ids, attention = batch["mlm_labels"], batch["input_ids"], batch["attention_mask"].bool()
        selected = labels != -100
        assert not (selected & ~attention).any()  # padding is never chosen
        chosen += int(selected.sum())
        masked += int((ids[selected] == tokenizer.mask_id).sum())
        kept += int((ids[selected] == labels[selected]).sum())
        real += int(attention.sum()) - 3 * ids.shape[0]  # [CLS] and two [SEP] are never chosen
    assert chosen / real == pytest.approx(0.15, abs=0.02)
    assert masked / chosen == pytest.approx(0.85, abs=0.04)
    assert masked + kept == chosen  # no random replacements


def test_electra_stream_resumes_exactly(corpus):
    options = dict(masking="electra", mask_token_prob=0.85, random_token_prob=0.0, sentence_order=False)
    original = stream(corpus, **options)
    take(original, 5)
    state = json.loads(json.dumps(original.state_dict()))
    expected = take(original, 4)
    restored = stream(corpus, **options)
    restored.load_state_dict(state)
    assert_same(take(restored, 4), expected)


def test_state_of_another_stream_is_refused(corpus):
    state = stream(corpus, batch_size=8).state_dict()
    with pytest.raises(ValueError, match="another stream"):
        stream(corpus, batch_size=4).load_state_dict(state)


def test_a_corpus_without_examples_is_an_error(tmp_path):
    corpus = tmp_path / "empty.txt"
    corpus.write_text("\n\n\n")
    with pytest.raises(CorpusError, match="no pretraining examples"):
        next(stream(corpus))
