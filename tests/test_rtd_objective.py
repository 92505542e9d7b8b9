"""ELECTRA's replaced-token detection objective: labels, loss, sampling, AUC, the collapse alarm."""

import warnings

import pytest
import torch
import torch.nn.functional as F

from encoderkit.models.electra import ElectraConfig, ElectraGeneratorDiscriminator, sample_categorical
from encoderkit.objectives.rtd import CollapseAlarm, ReplacedTokenDetectionObjective, binary_auc

V = 50


def pair(seed=0):
    torch.manual_seed(seed)
    disc = ElectraConfig(vocab_size=V, embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=32, hidden_dropout_prob=0.0,
                         attention_probs_dropout_prob=0.0)
    gen = ElectraConfig(**{**disc.__dict__, "hidden_size": 16, "num_attention_heads": 1, "intermediate_size": 32})
    return ElectraGeneratorDiscriminator(gen, disc)


def batch(rows=4, length=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    original = torch.randint(5, V, (rows, length), generator=g)
    mlm_mask = torch.rand(rows, length, generator=g) < 0.3
    mlm_mask[:, 0] = True
    attention = torch.ones(rows, length, dtype=torch.long)
    attention[-1, -3:] = 0
    mlm_mask &= attention.bool()
    labels = torch.where(mlm_mask, original, -100)
    return {"input_ids": torch.where(mlm_mask, 4, original), "attention_mask": attention,
            "token_type_ids": torch.zeros_like(original), "mlm_labels": labels}, original


def test_binary_auc_matches_hand_computed_values():
    assert binary_auc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1])) == pytest.approx(0.75)
    # ties count half: one positive tied with one negative
    assert binary_auc(torch.tensor([0.5, 0.5, 0.9]), torch.tensor([0, 1, 1])) == pytest.approx(0.75)
    assert binary_auc(torch.tensor([0.2, 0.3]), torch.tensor([1, 1])) == 0.5


def test_loss_is_generator_plus_weighted_discriminator_and_labels_follow_the_samples():
    model = pair()
    objective = ReplacedTokenDetectionObjective(V, discriminator_weight=50.0, seed=3)
    b, original = batch()
    uniforms = objective.sampling_uniforms(b["mlm_labels"] != -100, 0)
    objective.sampling_seeds.manual_seed(3)  # the objective draws the same numbers again
    loss, metrics = objective(model, b)

    mlm_mask = b["mlm_labels"] != -100
    gen_logits, disc_logits, disc_input = model(b["input_ids"], b["attention_mask"], b["token_type_ids"], mlm_mask,
                                                uniforms)
    replaced = (disc_input != original) & b["attention_mask"].bool()
    gen_loss = F.cross_entropy(gen_logits, original[mlm_mask])
    real = b["attention_mask"].bool()
    disc_loss = F.binary_cross_entropy_with_logits(disc_logits[real], replaced[real].float())
    assert loss.item() == pytest.approx((gen_loss + 50 * disc_loss).item(), rel=1e-5)
    assert metrics["replaced_frac"] == pytest.approx(replaced[real].float().mean().item())
    # Unmasked positions are never replaced; a sample equal to the original counts as original.
    assert not replaced[~mlm_mask].any()
    assert torch.equal(replaced[mlm_mask], disc_input[mlm_mask] != original[mlm_mask])


def test_no_gradient_flows_through_the_sample():
    model = pair()
    b, _ = batch()
    mlm_mask = b["mlm_labels"] != -100
    _, disc_logits, _ = model(b["input_ids"], b["attention_mask"], b["token_type_ids"], mlm_mask)
    disc_logits.sum().backward()
    generator_only = [p for n, p in model.generator.named_parameters() if "embeddings" not in n]
    assert all(p.grad is None or not p.grad.any() for p in generator_only)


def test_sampling_numbers_are_the_same_however_the_batch_is_split():
    objective_a, objective_b = ReplacedTokenDetectionObjective(V, seed=1), ReplacedTokenDetectionObjective(V, seed=1)
    mask = torch.rand(6, 10, generator=torch.Generator().manual_seed(0)) < 0.4
    whole = objective_a.sampling_uniforms(mask, 0)
    top = objective_b.sampling_uniforms(mask[:3], 0)
    objective_b.sampling_seeds.manual_seed(1)
    bottom = objective_b.sampling_uniforms(mask[3:], 3)
    assert torch.equal(whole, torch.cat([top, bottom]))


def test_sampling_draws_each_token_by_its_softmax_probability():
    logits = torch.tensor([[0.0, 1.0, 2.0, -float("inf"), 0.5], [3.0, -float("inf"), 0.0, 0.0, 1.0]])
    n = 100_000
    uniforms = (torch.arange(n, dtype=torch.float64) + 0.5) / n  # evenly spread: counts are exact up to 1
    for row in range(2):
        drawn = sample_categorical(logits[row].expand(n, -1), uniforms)
        counts = torch.bincount(drawn, minlength=5).double()
        expected = logits[row].double().softmax(-1) * n
        assert (counts - expected).abs().max() <= 1.0
        assert counts[logits[row] == -float("inf")].sum() == 0  # probability 0: never drawn
    # extreme uniforms stay in range
    assert sample_categorical(logits, torch.tensor([0.0, 1.0 - 1e-7])).tolist() == [0, 4]


def run_alarm(history):
    alarm = CollapseAlarm()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for auc, recall, gen_acc in history:
            alarm.update(auc, recall, gen_acc)
    return [str(w.message) for w in caught]


def test_alarm_catches_the_stalled_run_and_not_a_healthy_one():
    # The run from the issue: 2,400 steps, generator at unigram accuracy, discriminator answering
    # "original" everywhere (recall 0, AUC 0.54).
    stalled = [(0.54, 0.0, 0.05)] * 2400
    messages = run_alarm(stalled)
    assert len(messages) == 1 and "AUC 0.54" in messages[0] and "recall 0.00" in messages[0]
    # A healthy run: AUC climbs past 0.6 within the first few hundred steps.
    healthy = [(min(0.9, 0.5 + step / 1000), min(0.5, step / 2000), min(0.4, step / 5000)) for step in range(2400)]
    assert run_alarm(healthy) == []


def test_alarm_catches_a_generator_that_runs_away_early():
    messages = run_alarm([(0.8, 0.3, 0.9)] * 1200)
    assert len(messages) == 1 and "generator accuracy 0.90" in messages[0]
