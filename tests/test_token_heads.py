"""ForTokenClassification heads (ALBERT, ELECTRA, BERT, RoBERTa, I-BERT): logits and gradients equal to transformers'
on the same weights, checkpoints loading both ways, tensor names exactly transformers'."""

import dataclasses
import json

import pytest
import safetensors.torch
import torch

from encoderkit.models import albert, electra, hf_format, roberta
from encoderkit.models.ibert import model as ibert

transformers = pytest.importorskip("transformers")

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            hidden_act="gelu_new", max_position_embeddings=40)
FAMILIES = {  # name -> (our config, our class, transformers' config and class names)
    "albert": (albert.AlbertConfig(**TINY, embedding_size=16, num_hidden_groups=2, num_labels=5),
               albert.AlbertForTokenClassification, "AlbertConfig", "AlbertForTokenClassification"),
    "electra": (electra.ElectraConfig(**TINY, embedding_size=16, num_labels=5),
                electra.ElectraForTokenClassification, "ElectraConfig", "ElectraForTokenClassification"),
    "bert": (electra.BertConfig(**TINY, num_labels=5),
             electra.BertForTokenClassification, "BertConfig", "BertForTokenClassification"),
    "roberta": (roberta.RobertaConfig(**TINY, num_labels=5),  # positions from pad id 1 + 1
                roberta.RobertaForTokenClassification, "RobertaConfig", "RobertaForTokenClassification"),
    "ibert": (ibert.IBertConfig(**{**TINY, "hidden_act": "gelu"}, num_labels=5),
              ibert.IBertForTokenClassification, "IBertConfig", "IBertForTokenClassification"),
}


def randomize(model, seed=0):
    """Random values everywhere (LayerNorms and biases too), so a swapped name cannot go unnoticed."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 1.0 if "norm" in name.lower() and name.endswith("weight") else 0.0
            p.copy_(scale + 0.2 * torch.randn(p.shape, generator=g))
    return model


def batch(pad_token_id=0):
    g = torch.Generator().manual_seed(1)
    input_ids = torch.randint(3, 99, (3, 9), generator=g)
    attention_mask = torch.ones(3, 9, dtype=torch.long)
    attention_mask[1, 6:] = 0
    attention_mask[2, 3:] = 0
    input_ids[attention_mask == 0] = pad_token_id
    token_type_ids = torch.zeros(3, 9, dtype=torch.long)
    token_type_ids[:, 4:] = 1
    return dict(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)


def theirs_from(ours, family, directory):
    hf_format.save_pretrained(ours, directory)
    model_class = getattr(transformers, FAMILIES[family][3])
    theirs, info = model_class.from_pretrained(directory, output_loading_info=True, attn_implementation="eager")
    assert not info["missing_keys"], info
    return theirs


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_and_gradients_equal_transformers(tmp_path, family):
    config, our_class, _, _ = FAMILIES[family]
    # train mode, as in fine-tuning, with every dropout off so both compute the same function
    no_dropout = {name: 0.0 for name in ("hidden_dropout_prob", "attention_probs_dropout_prob",
                                         "classifier_dropout", "classifier_dropout_prob") if hasattr(config, name)}
    ours = randomize(our_class(dataclasses.replace(config, **no_dropout))).train()
    theirs = theirs_from(ours, family, tmp_path).train()
    inputs = batch(config.pad_token_id)
    labels = torch.randint(0, 5, inputs["input_ids"].shape, generator=torch.Generator().manual_seed(2))
    labels[inputs["attention_mask"] == 0] = -100
    our_logits = ours(**inputs)
    loss = torch.nn.functional.cross_entropy(our_logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
    loss.backward()
    out = theirs(**inputs, labels=labels)
    out.loss.backward()
    assert our_logits.shape == (3, 9, 5)
    torch.testing.assert_close(our_logits, out.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss, out.loss, atol=1e-5, rtol=1e-5)
    their_params = dict(theirs.named_parameters())
    names = hf_format.hf_names(ours)
    checked = 0
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, their_params[names[name]].grad, atol=1e-5, rtol=1e-4, msg=name)
        checked += 1
    assert checked == len(their_params) - sum("pooler" in name for name in their_params)


@pytest.mark.parametrize("family", FAMILIES)
def test_transformers_checkpoint_loads_with_same_logits(tmp_path, family):
    config, our_class, config_name, class_name = FAMILIES[family]
    fields = {k: v for k, v in config.to_hf_dict().items() if k not in ("model_type", "id2label", "label2id")}
    hf_config = getattr(transformers, config_name)(**fields)
    theirs = randomize(getattr(transformers, class_name)(hf_config)).eval()
    theirs.save_pretrained(tmp_path)
    ours = hf_format.load_pretrained(tmp_path, "token_classification")
    assert isinstance(ours, our_class) and ours.config.num_labels == 5
    inputs = batch(config.pad_token_id)
    with torch.no_grad():
        torch.testing.assert_close(ours(**inputs), theirs(**inputs).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_saved_names_are_exactly_transformers_names(tmp_path, family):
    config, our_class, config_name, class_name = FAMILIES[family]
    fields = {k: v for k, v in config.to_hf_dict().items() if k not in ("model_type", "id2label", "label2id")}
    getattr(transformers, class_name)(getattr(transformers, config_name)(**fields)).save_pretrained(tmp_path / "t")
    hf_format.save_pretrained(our_class(config), tmp_path / "o")
    read = lambda d: {k: v.shape for k, v in safetensors.torch.load_file(tmp_path / d / "model.safetensors").items()}  # noqa: E731
    assert read("o") == read("t")
    assert json.loads((tmp_path / "o" / "config.json").read_text())["architectures"] == [class_name]


def test_quantized_i_bert_token_head_equals_transformers(tmp_path):
    config = ibert.IBertConfig(**{**TINY, "hidden_act": "gelu"}, num_labels=5, quant_mode=True, pad_token_id=1)
    ours = randomize(ibert.IBertForTokenClassification(config))
    ibert.calibrate(ours, [batch(1)])
    theirs = theirs_from(ours, "ibert", tmp_path).eval()
    inputs = batch(1)
    with torch.no_grad():
        torch.testing.assert_close(ours(**inputs), theirs(**inputs).logits, atol=1e-5, rtol=1e-5)


def test_a_base_checkpoint_gets_a_fresh_token_head(tmp_path):
    config = electra.BertConfig(**TINY)
    hf_format.save_pretrained(randomize(electra.BertModel(config)), tmp_path)
    tagger = hf_format.load_pretrained(tmp_path, "token_classification", num_labels=7)
    assert tagger.classifier.out_features == 7
    assert hf_format.load_weights(tagger, tmp_path / "model.safetensors") == ["classifier.weight", "classifier.bias"]


def test_label_names_and_unknown_config_keys_survive_load_and_save(tmp_path):
    config = electra.ElectraConfig(**TINY, embedding_size=16, num_labels=3, id2label={0: "O", 1: "B-PER", 2: "I-PER"})
    hf_format.save_pretrained(electra.ElectraForTokenClassification(config), tmp_path / "first")
    written = json.loads((tmp_path / "first" / "config.json").read_text())
    assert written["id2label"] == {"0": "O", "1": "B-PER", "2": "I-PER"}
    assert written["label2id"] == {"O": 0, "B-PER": 1, "I-PER": 2}
    written.update(summary_type="first", summary_use_proj=True, finetuning_task="ner")
    (tmp_path / "first" / "config.json").write_text(json.dumps(written))
    hf_format.save_pretrained(hf_format.load_pretrained(tmp_path / "first", "token_classification"), tmp_path / "again")
    again = json.loads((tmp_path / "again" / "config.json").read_text())
    assert again == written
    theirs = transformers.AutoConfig.from_pretrained(tmp_path / "again")
    assert theirs.id2label == {0: "O", 1: "B-PER", 2: "I-PER"} and theirs.summary_type == "first"
    # a new head of another size drops names that no longer fit, as transformers' LABEL_<i> defaults
    resized = dataclasses.replace(config, num_labels=2)
    assert resized.to_hf_dict()["id2label"] == {"0": "LABEL_0", "1": "LABEL_1"}


@pytest.mark.parametrize(("family", "config_name", "class_name"), [
    ("bert", "BertConfig", "BertForTokenClassification"),
    ("electra", "ElectraConfig", "ElectraForTokenClassification"),
    ("albert", "AlbertConfig", "AlbertForTokenClassification")])
def test_a_float_token_classifier_converts_to_i_bert_for_quantization_aware_training(tmp_path, family, config_name,
                                                                                      class_name):
    from encoderkit.models.ibert import convert

    fields = {**TINY, "hidden_act": "gelu", "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    if family != "bert":
        fields["embedding_size"] = 16
    theirs = randomize(getattr(transformers, class_name)(getattr(transformers, config_name)(**fields, num_labels=5)))
    theirs.eval().save_pretrained(tmp_path)
    inputs = batch(0)
    valid = inputs["attention_mask"].bool()  # padding has position pad_token_id in I-BERT, its index elsewhere
    with torch.no_grad():
        expected = theirs(**inputs).logits[valid]
    float_model, fresh = convert.from_float(tmp_path, "token_classification", quant_mode=False)
    assert fresh == [] and isinstance(float_model, ibert.IBertForTokenClassification)
    with torch.no_grad():
        torch.testing.assert_close(float_model.eval()(**inputs)[valid], expected, atol=1e-5, rtol=1e-5)
    qat, _ = convert.from_float(tmp_path, "token_classification")
    ibert.calibrate(qat, [batch(0)])
    with torch.no_grad():
        logits = qat(**inputs)[valid]
    assert (logits - expected).norm() < 0.25 * expected.norm()  # 8 bits, random weights, hidden 32


def test_the_loop_trains_a_token_head_exactly_as_transformers_does(tmp_path):
    """Same weights, batches, AdamW and linear decay, no dropout: the same loss at every step (the loop, the
    objective and the head together)."""
    from encoderkit.objectives.token_classification import TokenClassificationObjective
    from encoderkit.train.config import TrainConfig
    from encoderkit.train.loop import train

    config = electra.BertConfig(**TINY, num_labels=5, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    ours = randomize(electra.BertForTokenClassification(config))
    theirs = theirs_from(ours, "bert", tmp_path / "start").train()
    g = torch.Generator().manual_seed(3)
    batches = []
    for _ in range(6):
        inputs = batch()
        labels = torch.randint(0, 5, inputs["input_ids"].shape, generator=g)
        labels[inputs["attention_mask"] == 0] = -100
        batches.append({**inputs, "labels": labels})
    cfg = TrainConfig(max_steps=6, batch_size=3, learning_rate=1e-3, weight_decay=0.0, adam_epsilon=1e-8,
                      log_every=1, save_every=100)
    train(ours, TokenClassificationObjective(), iter(batches), cfg, tmp_path / "run")
    our_losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
                  if '"loss"' in line]
    optimizer = torch.optim.AdamW(theirs.parameters(), lr=1e-3, eps=1e-8, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: (6 - step) / 6)
    their_losses = []
    for each in batches:
        loss = theirs(**each).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(theirs.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        their_losses.append(loss.item())
    assert our_losses == pytest.approx(their_losses, rel=1e-4, abs=1e-5)
    assert their_losses[-1] < their_losses[0]
