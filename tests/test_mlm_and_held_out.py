"""Plain MLM's packed sequences, the length warmup, the held-out split, held-out numbers, the recipe's init_from
and validation checks, the curves PNG."""

import json
import math
import random

import pytest
import torch
import torch.nn.functional as F
from data_helpers import random_documents, tiny_tokenizer, write_txt

from encoderkit.data.examples import packed_examples
from encoderkit.data.stream import PretrainBatches, is_held_out, split_rows, warmup_length
from encoderkit.models.albert import AlbertConfig, AlbertForMaskedLM
from encoderkit.models.electra import BertConfig, BertForMaskedLM
from encoderkit.models.hf_format import save_pretrained
from encoderkit.objectives import PRETRAINING
from encoderkit.objectives.baseline import UnigramBaseline
from encoderkit.objectives.mlm import MaskedLmObjective, MaskedLmTally
from encoderkit.objectives.rtd import CollapseAlarm
from encoderkit.recipes import RecipeError, load_recipe
from encoderkit.train.plot import plot_metrics, read_curves

CLS, SEP = 1, 2


def test_packing_cuts_the_documents_into_full_sequences_and_carries_the_rest():
    rng = random.Random(0)
    documents = [[[rng.randrange(10, 99) for _ in range(rng.randint(1, 9))] for _ in range(rng.randint(0, 4))]
                 for _ in range(30)]
    carry, sequences = [], []
    for document in documents:
        examples, carry = packed_examples(document, carry, max_seq_length=12, cls_id=CLS, sep_id=SEP)
        sequences += examples
        assert len(carry) < 10
    assert sequences and all(len(e.input_ids) == 12 and e.input_ids[0] == CLS and e.input_ids[-1] == SEP
                             for e in sequences)
    assert all(e.token_type_ids == [0] * 12 for e in sequences)
    # Nothing lost, nothing repeated: the documents in order, each ended by a [SEP], empty ones left out.
    expected = [t for d in documents if any(d) for t in [*(t for s in d for t in s), SEP]]
    assert [t for e in sequences for t in e.input_ids[1:-1]] + carry == expected


def test_packed_stream_gives_full_rows_and_resumes_exactly(tmp_path):
    corpus = write_txt(tmp_path / "c.txt", random_documents(3, 30))

    def stream():
        return PretrainBatches(corpus, tiny_tokenizer(), batch_size=4, max_seq_length=24, seed=0, packed=True,
                               masking="electra", mask_token_prob=0.8, random_token_prob=0.1)

    first = stream()
    for _ in range(5):
        batch = next(first)
        assert batch["input_ids"].shape == (4, 24) and bool(batch["attention_mask"].all())
        assert int((batch["mlm_labels"] != -100).sum()) > 0
    state = json.loads(json.dumps(first.state_dict()))
    expected = [next(first) for _ in range(6)]
    resumed = stream()
    resumed.load_state_dict(state)
    for want in expected:
        got = next(resumed)
        assert all(torch.equal(want[k], got[k]) for k in want)


def warmup_lengths(length_warmup, max_seq_length):
    """Every batch's row length while the warmup lasts (and the first one after it, None)."""
    batches = length_warmup[1] if length_warmup else 0
    return [warmup_length(i, length_warmup, max_seq_length) for i in range(batches + 1)]


def test_warmup_lengths_double_below_the_full_length_in_equal_shares():
    assert warmup_lengths((4, 9), 32) == [4, 4, 4, 8, 8, 8, 16, 16, 16, None]
    assert warmup_lengths((4, 4), 32) == [4, 4, 8, 16, None]  # the first lengths take the remainder
    assert warmup_lengths((3, 4), 12) == [3, 3, 6, 6, None]
    assert warmup_lengths(None, 32) == [None] and warmup_lengths((32, 5), 32) == [None] * 6


def test_split_rows_cuts_each_row_in_order_and_pads_its_end():
    ids = torch.arange(1, 15).reshape(2, 7)
    labels = torch.full((2, 7), -100)
    labels[1, 6] = 99
    batch = {"input_ids": ids, "attention_mask": torch.ones(2, 7, dtype=torch.long),
             "token_type_ids": torch.ones(2, 7, dtype=torch.long), "mlm_labels": labels,
             "sop_labels": torch.tensor([1, 1])}
    cut = split_rows(batch, 4, pad_id=0)
    assert cut["input_ids"].tolist() == [[1, 2, 3, 4], [5, 6, 7, 0], [8, 9, 10, 11], [12, 13, 14, 0]]
    assert cut["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]] * 2
    assert cut["token_type_ids"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]] * 2
    assert cut["mlm_labels"][3].tolist() == [-100, -100, 99, -100] and int((cut["mlm_labels"] != -100).sum()) == 1
    assert cut["sop_labels"].tolist() == [-100] * 4


def test_the_length_warmup_stream_cuts_then_gives_full_rows_and_resumes_exactly(tmp_path):
    corpus = write_txt(tmp_path / "c.txt", random_documents(3, 30))

    def stream(warmup):
        return PretrainBatches(corpus, tiny_tokenizer(), batch_size=4, max_seq_length=24, seed=0, packed=True,
                               masking="electra", length_warmup=warmup)

    plain, warm = stream(None), stream((6, 4))
    shapes = []
    for _ in range(6):
        whole, cut = next(plain), next(warm)
        shapes.append(tuple(cut["input_ids"].shape))
        # the same tokens and masks as without the warmup, only in shorter rows
        assert torch.equal(cut["input_ids"][cut["attention_mask"] == 1], whole["input_ids"].flatten())
        assert torch.equal(cut["mlm_labels"].flatten()[cut["mlm_labels"].flatten() != -100],
                           whole["mlm_labels"].flatten()[whole["mlm_labels"].flatten() != -100])
    assert shapes == [(16, 6), (16, 6), (8, 12), (8, 12), (4, 24), (4, 24)]
    warm = stream((6, 4))
    next(warm)
    state = json.loads(json.dumps(warm.state_dict()))
    expected = [next(warm) for _ in range(4)]
    resumed = stream((6, 4))
    resumed.load_state_dict(state)
    for want in expected:
        got = next(resumed)
        assert all(torch.equal(want[k], got[k]) for k in want)
    with pytest.raises(ValueError, match="another stream"):
        stream(None).load_state_dict(state)


def test_held_out_documents_are_never_trained_on(tmp_path):
    documents = random_documents(4, 200)
    corpus = write_txt(tmp_path / "c.txt", documents)
    texts = ["\n".join(d) for d in documents]
    options = dict(batch_size=4, max_seq_length=24, seed=0, packed=True, hold_out=(0.25, 7))
    train = PretrainBatches(corpus, tiny_tokenizer(), **options)
    held = PretrainBatches(corpus, tiny_tokenizer(), **options, held_out=True, max_passes=1)
    kept_for_training = {t for t in texts if train._keeps(t)}
    kept_held_out = {t for t in texts if held._keeps(t)}
    assert not kept_for_training & kept_held_out and kept_for_training | kept_held_out == set(texts)
    assert 30 <= len(kept_held_out) <= 70  # about a quarter of 200
    assert {t for t in texts if is_held_out(t, 0.25, 8)} != kept_held_out  # the seed chooses the split
    batches = list(held)  # finite: one pass, a shorter last batch
    assert batches and 1 <= len(batches[-1]["input_ids"]) <= 4
    assert list(PretrainBatches(corpus, tiny_tokenizer(), **options, held_out=True, max_passes=1)) != []


def test_held_out_tally_matches_a_direct_computation():
    torch.manual_seed(0)
    unigram = UnigramBaseline(7)
    unigram.accuracy(torch.tensor([3, 3, 3, 1, 0]))  # training labels: 3 the most frequent
    tally = MaskedLmTally(unigram)
    logits = [torch.randn(5, 7), torch.randn(3, 7)]
    targets = [torch.tensor([3, 1, 2, 3, 6]), torch.tensor([0, 3, 5])]
    inputs = [torch.tensor([4, 1, 4, 4, 4]), torch.tensor([4, 3, 4])]  # 4: [MASK]; two tokens left unchanged
    for one_logits, one_targets, one_inputs in zip(logits, targets, inputs):
        tally.add(one_logits, one_targets, one_inputs)
    all_logits, all_targets = torch.cat(logits), torch.cat(targets)
    results = tally.results("mlm")
    assert results["mlm_acc"] == pytest.approx(float((all_logits.argmax(-1) == all_targets).float().mean()))
    assert results["mlm_perplexity"] == pytest.approx(math.exp(float(F.cross_entropy(all_logits, all_targets))))
    assert results["unigram_acc"] == pytest.approx(3 / 8)
    hidden = torch.cat(inputs) != all_targets
    assert results["mlm_acc_hidden"] == pytest.approx(
        float((all_logits.argmax(-1) == all_targets)[hidden].float().mean()))
    counts = torch.tensor([1, 1, 0, 3, 0, 0, 0]) + 1.0  # add-one smoothed training frequencies
    nll = -sum(math.log(counts[t] / counts.sum()) for t in all_targets.tolist()) / 8
    assert results["unigram_perplexity"] == pytest.approx(math.exp(nll))


def test_mlm_objective_trains_bert_albert_and_electra_masked_lm_heads():
    tiny = dict(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    assert type(PRETRAINING["mlm"].build_model(BertConfig(**tiny), None)) is BertForMaskedLM
    assert type(PRETRAINING["mlm"].build_model(AlbertConfig(**tiny, embedding_size=8), None)) is AlbertForMaskedLM
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(**tiny))
    ids = torch.randint(5, 30, (2, 6))
    labels = torch.full_like(ids, -100)
    labels[0, 2], labels[1, 4] = 7, 9
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids),
             "mlm_labels": labels}
    loss = MaskedLmObjective(30)(model, batch)[0].detach()
    logits = model(ids, batch["attention_mask"], batch["token_type_ids"], mlm_mask=labels != -100).detach()
    assert float(loss) == pytest.approx(float(F.cross_entropy(logits, torch.tensor([7, 9]))), rel=1e-5)
    held_out = MaskedLmObjective(30).evaluate(model, [batch], step=0)
    assert held_out["mlm_perplexity"] == pytest.approx(math.exp(float(loss)), rel=1e-5)


def test_the_collapse_alarm_reads_one_held_out_evaluation():
    alarm = CollapseAlarm(after_steps=100)
    assert alarm.check_held_out(50, auc=0.52, recall=0.0, gen_acc=0.2) == []  # too early to judge
    assert any("AUC 0.52" in message for message in pytest.warns(UserWarning, alarm.check_held_out, 200,
                                                                  auc=0.52, recall=0.0, gen_acc=0.2))
    assert CollapseAlarm(after_steps=100).check_held_out(200, auc=0.8, recall=0.4, gen_acc=0.3) == []


# ---- recipes: model.init_from, data.validation, train.eval_every --------------------------------------


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("bert")
    save_pretrained(BertForMaskedLM(BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1,
                                               num_attention_heads=2, intermediate_size=32)), directory)
    return directory


def test_init_from_takes_the_checkpoints_config(bert_dir):
    recipe = load_recipe("bert-mlm", [f"model.init_from={bert_dir}", "model.num_hidden_layers=1"])
    assert recipe.model.config.hidden_size == 16 and recipe.model.config.vocab_size == 40
    assert recipe.model.init_from == str(bert_dir)


@pytest.mark.parametrize("overrides, message", [
    (["model.hidden_size=32", "model.num_attention_heads=2"], "model.hidden_size: the recipe says 32, but"),
    (["model.family=albert", "objective=mlm_sop"], "holds a bert model, but model.family is 'albert'"),
])
def test_init_from_refuses_a_recipe_that_disagrees_with_the_checkpoint(bert_dir, overrides, message):
    with pytest.raises(RecipeError, match=message.replace("(", r"\(")):
        load_recipe("bert-mlm", [f"model.init_from={bert_dir}", *overrides])


def test_init_from_uses_the_checkpoints_tokenizer_only(tmp_path):
    tiny = dict(embedding_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                max_position_embeddings=128, hidden_act="gelu_new", hidden_dropout_prob=0.0,
                attention_probs_dropout_prob=0.0, classifier_dropout_prob=0.0, vocab_size=40)
    save_pretrained(AlbertForMaskedLM(AlbertConfig(**tiny)), tmp_path)
    stated = [f"model.{key}={value}" for key, value in tiny.items() if key != "vocab_size"]
    with pytest.raises(RecipeError, match="model.embedding_size: the recipe says 64, but .*config.json says 8"):
        load_recipe("albert-tiny", [f"model.init_from={tmp_path}"])
    with pytest.raises(RecipeError, match="tokenizer.path: a run with model.init_from uses the checkpoint's own"):
        load_recipe("albert-tiny", [f"model.init_from={tmp_path}", *stated, "model.num_hidden_layers=1",
                                    f"tokenizer.path={tmp_path}"])
    assert load_recipe("albert-tiny", [f"model.init_from={tmp_path}", *stated]).model.config.vocab_size == 40


def test_init_from_a_dir_without_a_model(tmp_path):
    with pytest.raises(RecipeError, match=r"model.init_from: .* is not a model directory"):
        load_recipe("bert-mlm", [f"model.init_from={tmp_path}"])


@pytest.mark.parametrize("overrides, message", [
    (["train.eval_every=2000", "train.max_steps=1000"], "train.eval_every: 2000 is larger than the run"),
    (["data.validation=null"], "train.eval_every: there is no held-out text"),
    (["data.validation=1.5"], "data.validation: 1.5 is not a fraction"),
    (["data.length_warmup_steps=2000", "train.max_steps=1000"], "data.length_warmup_steps: 2000 is longer than"),
    (["data.length_warmup_steps=10", "data.length_warmup_first=512"], "data.length_warmup_first: 512 is not shorter"),
    (["data.length_warmup_steps=10", "data.length_warmup_first=1"], "data.length_warmup_first"),
])
def test_bad_held_out_settings_get_one_line(overrides, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe("bert-mlm", overrides)


def test_sentence_order_prediction_rests_on_the_warmups_pieces_of_rows():
    torch.manual_seed(0)
    config = AlbertConfig(vocab_size=50, embedding_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=32, max_position_embeddings=16)
    spec = PRETRAINING["mlm_sop"]
    model, objective = spec.build_model(config, None), spec.build_objective(50, None, 0)
    ids = torch.randint(5, 50, (2, 8))
    labels = torch.full((2, 8), -100)
    labels[:, 3] = ids[:, 3]
    whole = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids),
             "mlm_labels": labels, "sop_labels": torch.tensor([0, 1])}
    loss, metrics = objective(model, whole)
    assert "sop_acc" in metrics and float(loss.detach()) > metrics["mlm_loss"]
    loss, metrics = objective(model, split_rows(whole, 4, pad_id=0))
    loss.backward()
    assert "sop_acc" not in metrics and float(loss.detach()) == pytest.approx(metrics["mlm_loss"])
    assert model.sop_classifier.weight.grad.abs().sum() == 0


def test_curves_png_from_metrics_with_a_cut_last_line(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    records = [{"step": s, "loss": 5 - s / 10, "mlm_acc": s / 100, "unigram_acc": 0.05, "lr": 1e-3} for s in (1, 2, 3)]
    records += [{"step": 3, "eval_mlm_acc": 0.04, "eval_mlm_perplexity": 80.0, "eval_unigram_perplexity": 300.0,
                 "eval_masked_tokens": 95}]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"step": 4, "lo')
    train, held_out = read_curves(metrics)
    assert train["loss"] == {1: 4.9, 2: 4.8, 3: 4.7} and held_out["mlm_acc"] == {3: 0.04}
    assert "lr" not in train and "masked_tokens" not in held_out
    assert plot_metrics(metrics, tmp_path / "curves.png")
    matplotlib_image = pytest.importorskip("matplotlib.image")
    assert matplotlib_image.imread(tmp_path / "curves.png").shape[0] > 100
