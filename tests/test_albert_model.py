"""ALBERT: parity with transformers both ways through the HF format, heads, masks, loading rules."""

import dataclasses
import json
import logging

import pytest
import safetensors.torch
import torch

from encoderkit.models import albert, hf_format

transformers = pytest.importorskip("transformers")

TINY = dict(vocab_size=99, embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=37)
# 3 layer applications over 2 groups of 2 layers: layers 0, 1 use group 0 and layer 2 group 1 (HF's rule).
GROUPED = dict(TINY, num_hidden_layers=3, num_hidden_groups=2, inner_group_num=2)

HEADS = {  # our head name -> (our class, transformers class)
    "pretraining": (albert.AlbertForPreTraining, "AlbertForPreTraining"),
    "masked_lm": (albert.AlbertForMaskedLM, "AlbertForMaskedLM"),
    "sequence_classification": (albert.AlbertForSequenceClassification, "AlbertForSequenceClassification"),
    "base": (albert.AlbertModel, "AlbertModel"),
}


def randomize(model, seed=0):
    """Random values everywhere (LayerNorms and biases too), so a swapped name cannot go unnoticed."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model.eval()


def batch(vocab_size=99):
    g = torch.Generator().manual_seed(1)
    input_ids = torch.randint(1, vocab_size, (3, 9), generator=g)
    attention_mask = torch.ones(3, 9, dtype=torch.long)
    attention_mask[1, 6:] = 0
    attention_mask[2, 3:] = 0
    input_ids[attention_mask == 0] = 0
    token_type_ids = torch.zeros(3, 9, dtype=torch.long)
    token_type_ids[:, 4:] = 1
    return dict(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)


def hf_model(name, **config):
    cfg = transformers.AlbertConfig(**config)
    cfg._attn_implementation = "eager"  # the plainest reference
    return randomize(getattr(transformers, name)(cfg))


def hf_logits(model, inputs):
    with torch.no_grad():
        out = model(**inputs)
    if isinstance(out, transformers.modeling_outputs.BaseModelOutputWithPooling):
        return (out.last_hidden_state,)
    if hasattr(out, "sop_logits"):
        return out.prediction_logits, out.sop_logits
    return (out.logits,)


def our_logits(model, inputs):
    with torch.no_grad():
        out = model(**inputs)
    return tuple(out) if isinstance(out, tuple) else (out,)


def assert_close(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("config", [TINY, GROUPED], ids=["tiny", "grouped"])
@pytest.mark.parametrize("head", list(HEADS))
def test_transformers_checkpoint_loads_with_same_logits(tmp_path, head, config):
    theirs = hf_model(HEADS[head][1], **config, num_labels=3)
    theirs.save_pretrained(tmp_path)
    ours = hf_format.load_pretrained(tmp_path, head).eval()
    assert isinstance(ours, HEADS[head][0]) and ours.config.num_labels == 3
    inputs = batch()
    assert_close(our_logits(ours, inputs), hf_logits(theirs, inputs))


@pytest.mark.parametrize("config", [TINY, GROUPED], ids=["tiny", "grouped"])
@pytest.mark.parametrize("head", list(HEADS))
def test_our_checkpoint_loads_in_transformers_with_same_logits(tmp_path, head, config):
    ours = randomize(HEADS[head][0](albert.AlbertConfig(**config, num_labels=1)))
    hf_format.save_pretrained(ours, tmp_path)
    assert sorted(tmp_path.iterdir()) == [tmp_path / "config.json", tmp_path / "model.safetensors"]
    hf_config = json.loads((tmp_path / "config.json").read_text())
    assert hf_config["model_type"] == "albert" and hf_config["architectures"] == [HEADS[head][1]]
    theirs = getattr(transformers, HEADS[head][1]).from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert theirs.config.num_labels == 1 and theirs.config.inner_group_num == config.get("inner_group_num", 1)
    inputs = batch()
    assert_close(our_logits(ours, inputs), hf_logits(theirs, inputs))


def test_saved_names_are_exactly_transformers_names(tmp_path):
    theirs = hf_model("AlbertForPreTraining", **GROUPED)
    theirs.save_pretrained(tmp_path / "theirs")
    hf_format.save_pretrained(albert.AlbertForPreTraining(albert.AlbertConfig(**GROUPED)), tmp_path / "ours")
    read = lambda d: safetensors.torch.load_file(tmp_path / d / "model.safetensors")  # noqa: E731
    assert {k: v.shape for k, v in read("ours").items()} == {k: v.shape for k, v in read("theirs").items()}


def test_mlm_mask_gives_the_masked_rows_of_the_full_logits():
    model = randomize(albert.AlbertForPreTraining(albert.AlbertConfig(**GROUPED)))
    inputs = batch()
    mlm_mask = torch.zeros(3, 9, dtype=torch.bool)
    mlm_mask[0, [1, 5]] = mlm_mask[1, 2] = mlm_mask[2, [0, 2]] = True
    with torch.no_grad():
        full = model(**inputs)
        masked = model(**inputs, mlm_mask=mlm_mask)
        masked_lm = albert.AlbertForMaskedLM(model.config)
        masked_lm.load_state_dict(model.state_dict(), strict=False)
        masked_lm.eval()
        assert masked_lm(**inputs, mlm_mask=mlm_mask).shape == (5, 99)
    assert masked.mlm_logits.shape == (5, 99)
    torch.testing.assert_close(masked.mlm_logits, full.mlm_logits[mlm_mask])
    torch.testing.assert_close(masked.sop_logits, full.sop_logits)


def test_padding_does_not_change_the_real_tokens():
    model = randomize(albert.AlbertForMaskedLM(albert.AlbertConfig(**TINY)))
    inputs = batch()
    with torch.no_grad():
        padded = model(**inputs)[2, :3]
        alone = model(**{k: v[2:, :3] for k, v in inputs.items()})[0]
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-5)


def test_classifier_on_a_pretraining_checkpoint_is_new_and_reported(tmp_path, caplog):
    pretrained = randomize(albert.AlbertForPreTraining(albert.AlbertConfig(**TINY)))
    hf_format.save_pretrained(pretrained, tmp_path)
    with caplog.at_level(logging.WARNING):
        classifier = hf_format.load_pretrained(tmp_path, "sequence_classification", num_labels=1)
    assert "classifier.weight" in caplog.text and "classifier.bias" in caplog.text
    assert classifier.config.num_labels == 1
    assert classifier.classifier.weight.shape == (1, 32)
    torch.testing.assert_close(classifier.classifier.bias, torch.zeros(1))  # fresh init, not the SOP head
    assert torch.equal(classifier.encoder.pooler.dense.weight, pretrained.encoder.pooler.dense.weight)
    assert torch.equal(classifier.encoder.layer_groups[0][0].feed_forward.up.weight,
                       pretrained.encoder.layer_groups[0][0].feed_forward.up.weight)
    new = hf_format.load_weights(classifier, tmp_path / "model.safetensors")
    assert new == ["classifier.weight", "classifier.bias"]


def test_masked_lm_loads_a_pretraining_checkpoint_and_base_loads_either_way(tmp_path):
    pretrained = randomize(albert.AlbertForPreTraining(albert.AlbertConfig(**TINY)))
    hf_format.save_pretrained(pretrained, tmp_path / "pretraining")
    masked_lm = hf_format.load_pretrained(tmp_path / "pretraining", "masked_lm").eval()
    assert hf_format.load_weights(masked_lm, tmp_path / "pretraining" / "model.safetensors") == []
    inputs = batch()
    with torch.no_grad():
        torch.testing.assert_close(masked_lm(**inputs), pretrained(**inputs).mlm_logits)
        base = hf_format.load_pretrained(tmp_path / "pretraining", "base").eval()
        torch.testing.assert_close(base(**inputs), pretrained.encoder(**inputs))
        hf_format.save_pretrained(base, tmp_path / "base")  # no `albert.` prefix, as AlbertModel writes
        names = safetensors.torch.load_file(tmp_path / "base" / "model.safetensors")
        assert "embeddings.word_embeddings.weight" in names
        head = hf_format.load_pretrained(tmp_path / "base", "pretraining").eval()
        torch.testing.assert_close(head.encoder(**inputs), base(**inputs))


def test_tied_decoder_weights_in_the_file_are_accepted(tmp_path):
    model = randomize(albert.AlbertForMaskedLM(albert.AlbertConfig(**TINY)))
    hf_format.save_pretrained(model, tmp_path)
    path = tmp_path / "model.safetensors"
    tensors = safetensors.torch.load_file(path)
    tensors["predictions.decoder.weight"] = tensors["albert.embeddings.word_embeddings.weight"]
    tensors["predictions.decoder.bias"] = tensors["predictions.bias"]
    safetensors.torch.save_file({k: v.clone() for k, v in tensors.items()}, path)
    loaded = hf_format.load_pretrained(tmp_path, "masked_lm").eval()
    inputs = batch()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs), model(**inputs))


def test_decoder_is_tied_to_the_word_embeddings():
    model = albert.AlbertForMaskedLM(albert.AlbertConfig(**TINY))
    with torch.no_grad():
        model.encoder.embeddings.word_embeddings.weight[7] = 0.0
        model.mlm_head.bias[7] = -3.0
        logits = model.eval()(torch.tensor([[5, 6]]))
    torch.testing.assert_close(logits[..., 7], torch.full((1, 2), -3.0))


def test_load_errors_name_the_directory(tmp_path):
    with pytest.raises(ValueError, match="no config.json"):
        hf_format.load_pretrained(tmp_path, "base")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ValueError, match=r"config\.json.*unknown model_type 'gpt2'.*albert"):
        hf_format.load_pretrained(tmp_path, "base")
    hf_format.save_pretrained(albert.AlbertModel(albert.AlbertConfig(**TINY)), tmp_path)
    with pytest.raises(ValueError, match="unknown head 'generator'"):
        hf_format.load_pretrained(tmp_path, "generator")
    with pytest.raises(ValueError, match=r"model\.safetensors.*shape \(99, 16\).*\(50, 16\)"):
        hf_format.load_pretrained(tmp_path, "base", vocab_size=50)
    with pytest.raises(ValueError, match="no_such_field"):
        hf_format.load_pretrained(tmp_path, "base", no_such_field=1)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(ValueError, match=str(tmp_path / "model.safetensors")):
        hf_format.load_pretrained(tmp_path, "base")


def test_missing_encoder_tensor_is_an_error(tmp_path):
    hf_format.save_pretrained(albert.AlbertModel(albert.AlbertConfig(**TINY)), tmp_path)
    path = tmp_path / "model.safetensors"
    tensors = safetensors.torch.load_file(path)
    del tensors["encoder.albert_layer_groups.0.albert_layers.0.ffn.weight"]
    safetensors.torch.save_file(tensors, path)
    with pytest.raises(ValueError, match=r"no tensor for albert\.encoder\.albert_layer_groups\.0.*ffn\.weight"):
        hf_format.load_pretrained(tmp_path, "masked_lm")


# HFConfig's own fields: label names (transformers' default table is LABEL_<i>) and the unknown keys kept
OUR_CONFIG_FIELDS = ("id2label", "extra_keys")


def test_config_matches_transformers_defaults_and_round_trips():
    ours = {k: v for k, v in dataclasses.asdict(albert.AlbertConfig()).items() if k not in OUR_CONFIG_FIELDS}
    theirs = transformers.AlbertConfig()
    assert {k: getattr(theirs, k) for k in ours} == ours
    assert albert.AlbertConfig().label_names() == list(theirs.id2label.values())
    config = albert.AlbertConfig(**GROUPED, num_labels=3, problem_type="single_label_classification")
    d = config.to_hf_dict()
    assert d["model_type"] == "albert"
    assert albert.AlbertConfig.from_hf_dict({**d, "transformers_version": "5.0", "unknown_key": 1}) == config
    assert albert.AlbertConfig.from_hf_dict({"id2label": {"0": "a", "1": "b", "2": "c"}}).num_labels == 3


def test_init_follows_transformers():
    model = albert.AlbertForPreTraining(albert.AlbertConfig(**TINY, initializer_range=0.5))
    embeddings = model.encoder.embeddings
    assert torch.all(embeddings.word_embeddings.weight[0] == 0)  # padding row
    assert 0.4 < embeddings.word_embeddings.weight[1:].std() < 0.6
    assert torch.all(embeddings.norm.weight == 1) and torch.all(embeddings.norm.bias == 0)
    assert torch.all(model.mlm_head.bias == 0) and torch.all(model.sop_classifier.bias == 0)


def test_parameter_breakdown_matches_transformers():
    config = albert.AlbertConfig(**GROUPED)
    counts = hf_format.parameter_breakdown(albert.AlbertForPreTraining(config))
    theirs = transformers.AlbertForPreTraining(transformers.AlbertConfig(**GROUPED))
    assert counts["total"] == theirs.num_parameters()
    assert counts["total"] == counts["embeddings"] + counts["encoder"] + counts["heads"]
    E, H, V = 16, 32, 99
    assert counts["embeddings"] == (V + 512 + 2) * E + 2 * E + E * H + H
    assert counts["heads"] == (H * H + H) + (H * E + E + 2 * E + V) + (H * 2 + 2)  # pooler, MLM, SOP
