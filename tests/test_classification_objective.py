"""The classification objective and the example-to-batch encoding, on stand-in models and tokenizers."""

import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from encoderkit.data.classification import add_swapped_pairs, encode_examples, iter_batches
from encoderkit.data.glue import GlueExample, compute_metrics
from encoderkit.objectives.classification import ClassificationObjective

PAD, CLS, SEP = 0, 1, 2


class WordTokenizer:
    """One id per whitespace-separated word, numbered in order of first appearance."""

    pad_id, cls_id, sep_id = PAD, CLS, SEP

    def __init__(self):
        self.vocab = {}

    def encode(self, text):
        return [self.vocab.setdefault(word, len(self.vocab) + 3) for word in text.split()]


class BagOfWords(nn.Module):
    """Stand-in sequence classifier: summed embeddings of the unpadded tokens, then a linear layer."""

    def __init__(self, vocab_size, num_labels, dim=16):
        super().__init__()
        self.embed = nn.EmbeddingBag(vocab_size, dim, mode="sum")
        self.out = nn.Linear(dim, num_labels)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        return self.out(self.embed(input_ids, per_sample_weights=attention_mask.float()))


class NumberTokenizer:
    """Words spell their ids: 'w10 w11' encodes to [10, 11]."""

    pad_id, cls_id, sep_id = PAD, CLS, SEP

    def encode(self, text):
        return [int(word[1:]) for word in text.split()]


def test_pair_is_cls_a_sep_b_sep_and_the_longer_text_is_truncated_first():
    example = GlueExample("w10 w11 w12 w13 w14 w15", "w20 w21", 1, "0")
    encoded = encode_examples([example], NumberTokenizer(), max_seq_length=8)
    # 8 - 3 special tokens leaves 5: b (2 tokens) stays whole, a keeps its first 3.
    assert encoded.input_ids[0].tolist() == [CLS, 10, 11, 12, SEP, 20, 21, SEP]
    assert encoded.token_type_ids[0].tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    assert encoded.lengths.tolist() == [8]
    assert encoded.labels.tolist() == [1]


def test_two_long_texts_are_cut_to_about_half_each():
    pair = GlueExample("w10 w11 w12 w13 w14", "w20 w21 w22 w23 w24", 0, "0")
    # 10 - 3 = 7 tokens for texts: shortening the longer one (b on ties) ends at 4 + 3.
    encoded = encode_examples([pair], NumberTokenizer(), max_seq_length=10)
    assert encoded.input_ids[0].tolist() == [CLS, 10, 11, 12, 13, SEP, 20, 21, 22, SEP]


def test_single_sentences_are_cls_text_sep_and_padded():
    examples = [GlueExample("w10 w11 w12 w13 w14", None, 0, "0"), GlueExample("w30", None, 1, "1")]
    encoded = encode_examples(examples, NumberTokenizer(), max_seq_length=5)
    assert encoded.input_ids.tolist() == [[CLS, 10, 11, 12, SEP], [CLS, 30, SEP, PAD, PAD]]
    assert encoded.token_type_ids.sum() == 0
    assert encoded.lengths.tolist() == [5, 3]


def test_scores_become_float_labels_and_test_sets_have_none():
    tokenizer = NumberTokenizer()
    scores = encode_examples([GlueExample("w3", "w4", 3.8, "0")], tokenizer, 8)
    assert scores.labels.dtype == torch.float32 and scores.labels.tolist() == pytest.approx([3.8])
    unlabeled = encode_examples([GlueExample("w3", "w4", None, "0")], tokenizer, 8)
    assert unlabeled.labels is None
    assert "labels" not in next(iter_batches(unlabeled, 4, shuffle=False))


def test_batches_are_cut_to_their_longest_row_with_matching_masks():
    lengths_of_texts = [1, 5, 2, 3, 1]
    examples = [GlueExample(" ".join(f"w{3 + j}" for j in range(n)), None, i % 2, str(i))
                for i, n in enumerate(lengths_of_texts)]
    encoded = encode_examples(examples, NumberTokenizer(), max_seq_length=16)
    batches = list(iter_batches(encoded, batch_size=2, shuffle=False))
    assert [b["input_ids"].shape for b in batches] == [(2, 7), (2, 5), (1, 3)]
    first = batches[0]
    assert first["attention_mask"].tolist() == [[1, 1, 1, 0, 0, 0, 0], [1] * 7]
    assert first["input_ids"][0].tolist() == [CLS, 3, SEP, PAD, PAD, PAD, PAD]
    assert all(b["input_ids"].dtype == torch.long for b in batches)
    assert torch.cat([b["labels"] for b in batches]).tolist() == [0, 1, 0, 1, 0]


def test_shuffling_is_a_seeded_permutation():
    examples = [GlueExample(f"w{3 + i}", None, i, str(i)) for i in range(20)]
    encoded = encode_examples(examples, NumberTokenizer(), max_seq_length=4)

    def order(seed):
        return torch.cat([b["labels"] for b in iter_batches(encoded, 6, shuffle=True, seed=seed)]).tolist()

    assert sorted(order(1)) == list(range(20))
    assert order(1) == order(1)
    assert order(1) != order(2)


def test_swapped_pairs_are_appended():
    examples = [GlueExample("a", "b", 1, "0"), GlueExample("c", "d", 0, "1")]
    assert add_swapped_pairs(examples) == examples + [GlueExample("b", "a", 1, "0"), GlueExample("d", "c", 0, "1")]
    with pytest.raises(ValueError, match="sentence pairs"):
        add_swapped_pairs([GlueExample("a", None, 1, "0")])


def _random_batch(labels):
    torch.manual_seed(0)
    input_ids = torch.randint(3, 50, (len(labels), 6))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, 4:] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask,
            "token_type_ids": torch.zeros_like(input_ids), "labels": labels}


def test_classification_loss_is_cross_entropy_and_accuracy_is_reported():
    model = BagOfWords(50, num_labels=3)
    batch = _random_batch(torch.tensor([0, 2, 1, 1]))
    loss, metrics = ClassificationObjective(3)(model, batch)
    logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    assert loss.item() == pytest.approx(F.cross_entropy(logits, batch["labels"]).item())
    assert metrics["loss"] == pytest.approx(loss.item())
    assert metrics["accuracy"] == pytest.approx((logits.argmax(-1) == batch["labels"]).float().mean().item())
    loss.backward()
    assert model.out.weight.grad is not None


def test_regression_loss_is_mean_squared_error_on_the_single_output():
    model = BagOfWords(50, num_labels=1)
    batch = _random_batch(torch.tensor([0.5, 4.0, 2.2, 3.1]))
    objective = ClassificationObjective(1)
    loss, metrics = objective(model, batch)
    logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    assert loss.item() == pytest.approx(F.mse_loss(logits.squeeze(-1), batch["labels"]).item())
    assert set(metrics) == {"loss"}
    assert objective.predict(logits).shape == (4,)


def _sentiment_pairs(count, rng):
    """Pairs whose label is 1 exactly when text_b contains 'good' (the other case has 'bad')."""
    filler = [f"f{i}" for i in range(20)]
    examples = []
    for i in range(count):
        label = rng.randrange(2)
        words_b = rng.sample(filler, 3) + ["good" if label else "bad"]
        rng.shuffle(words_b)
        examples.append(GlueExample(" ".join(rng.sample(filler, 4)), " ".join(words_b), label, str(i)))
    return examples


def test_a_tiny_model_learns_a_trivial_task_through_the_objective():
    rng = random.Random(0)
    torch.manual_seed(0)
    tokenizer = WordTokenizer()
    train = encode_examples(_sentiment_pairs(256, rng), tokenizer, max_seq_length=12)
    held_out = encode_examples(_sentiment_pairs(128, rng), tokenizer, max_seq_length=12)
    model = BagOfWords(len(tokenizer.vocab) + 3, num_labels=2)
    objective = ClassificationObjective(2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.3)

    steps = 0
    for epoch in range(2):
        for batch in iter_batches(train, batch_size=16, shuffle=True, seed=epoch):
            loss, _ = objective(model, batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
    assert steps == 32

    with torch.no_grad():
        batch = next(iter_batches(held_out, batch_size=len(held_out), shuffle=False))
        predictions = objective.predict(model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]))
    assert compute_metrics("sst2", predictions, batch["labels"])["accuracy"] >= 0.95
