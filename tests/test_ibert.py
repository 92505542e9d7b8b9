"""I-BERT: parity with transformers' IBert* both ways (quant_mode, force_dequant, float), QAT from float
BERT/RoBERTa checkpoints, quantization-aware training steps."""

import json

import pytest
import safetensors.torch
import torch
from torch import nn

from encoderkit.models import hf_format
from encoderkit.models.ibert import convert
from encoderkit.models.ibert import model as ibert

transformers = pytest.importorskip("transformers")

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=40)
HF_HEADS = {"base": "IBertModel", "sequence_classification": "IBertForSequenceClassification",
            "masked_lm": "IBertForMaskedLM", "token_classification": "IBertForTokenClassification"}


def randomize(model, seed=0):
    """Random values everywhere (LayerNorms and biases too), so a swapped name cannot go unnoticed.

    Matrices get std 0.2: the attention scores' scale is then well above the ~4e-5 where transformers'
    IntSoftmax overflows float32 (see ibert/quant.py).
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("LayerNorm.weight") or name.endswith("layer_norm.weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return model


def batch(seed=1, pad_token_id=1, size=(3, 12)):
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, 99, size, generator=g)
    attention_mask = torch.ones(size, dtype=torch.long)
    attention_mask[1, 8:] = 0
    attention_mask[2, 5:] = 0
    input_ids[attention_mask == 0] = pad_token_id
    token_type_ids = torch.zeros(size, dtype=torch.long)
    token_type_ids[:, 6:] = 1
    return dict(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)


def calibrate_transformers(model, batches):
    """What fine-tuning with transformers does to the ranges: train-mode forwards (dropout off here)."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.eval()
    with torch.no_grad():
        for b in batches:
            model(**b)
    return model.eval()


def hf_output(model, inputs):
    with torch.no_grad():
        out = model(**inputs)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def our_output(model, inputs):
    with torch.no_grad():
        return model(**inputs)


def calibration_batches(n=4, **kw):
    return [batch(seed=100 + i, **kw) for i in range(n)]


CASES = [("sequence_classification", "none", True), ("masked_lm", "none", True), ("base", "none", True),
         ("sequence_classification", "none", False)] + \
        [("sequence_classification", fd, True) for fd in ("gelu", "softmax", "layernorm", "nonlinear")]


@pytest.mark.parametrize(("head", "force_dequant", "quant_mode"), CASES,
                         ids=[f"{h}-{f}-{'quant' if q else 'float'}" for h, f, q in CASES])
def test_transformers_checkpoint_loads_with_same_outputs(tmp_path, head, force_dequant, quant_mode):
    """Tolerance: 1e-5 absolute (float rounding); the integers inside agree exactly."""
    hf_config = transformers.IBertConfig(**TINY, quant_mode=quant_mode, force_dequant=force_dequant, num_labels=3)
    theirs = randomize(getattr(transformers, HF_HEADS[head])(hf_config))
    calibrate_transformers(theirs, calibration_batches())
    theirs.save_pretrained(tmp_path)
    ours = hf_format.load_pretrained(tmp_path, head)
    assert ours.config.quant_mode == quant_mode and ours.config.force_dequant == force_dequant
    if quant_mode and force_dequant == "none":
        attention = getattr(ours, "ibert", ours).encoder.layer[0].attention.self
        scores_scale = attention.query_activation.scale() * attention.key_activation.scale() / 8**0.5
        assert scores_scale > 4e-5
    inputs = batch()
    torch.testing.assert_close(our_output(ours, inputs), hf_output(theirs, inputs), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("head", ["sequence_classification", "token_classification"])
def test_ours_loads_in_transformers_with_same_logits(tmp_path, head):
    """What `encoderkit quantize` writes to qat/ (a QAT classifier, ranges calibrated) loads in transformers'
    IBertFor{Sequence,Token}Classification with nothing missing and the same logits."""
    config = ibert.IBertConfig(**TINY, quant_mode=True, num_labels=3)
    ours = randomize(ibert.HEADS[head](config))
    ibert.calibrate(ours, calibration_batches())
    hf_format.save_pretrained(ours, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == [HF_HEADS[head]]
    theirs, info = getattr(transformers, HF_HEADS[head]).from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    inputs = batch()
    torch.testing.assert_close(our_output(ours, inputs), hf_output(theirs.eval(), inputs), atol=1e-5, rtol=1e-5)


def test_base_checkpoint_loads_into_a_head_and_back(tmp_path):
    config = ibert.IBertConfig(**TINY, quant_mode=True)
    base = randomize(ibert.IBertModel(config))
    ibert.calibrate(base, calibration_batches())
    hf_format.save_pretrained(base, tmp_path / "base")
    classifier = hf_format.load_pretrained(tmp_path / "base", "sequence_classification")
    inputs = batch()
    torch.testing.assert_close(our_output(classifier.ibert, inputs), our_output(base.eval(), inputs))
    hf_format.save_pretrained(classifier, tmp_path / "head")
    torch.testing.assert_close(our_output(hf_format.load_pretrained(tmp_path / "head"), inputs),
                               our_output(base, inputs))


def test_masked_lm_at_mlm_mask_positions_only():
    model = randomize(ibert.IBertForMaskedLM(ibert.IBertConfig(**TINY))).eval()
    inputs = batch()
    mlm_mask = torch.zeros_like(inputs["input_ids"], dtype=torch.bool)
    mlm_mask[0, 2] = mlm_mask[1, 0] = mlm_mask[1, 5] = True
    with torch.no_grad():
        full = model(**inputs)
        masked = model(**inputs, mlm_mask=mlm_mask)
    assert masked.shape == (3, 99)
    torch.testing.assert_close(masked, full[mlm_mask])


def test_config_round_trips_and_rejects_what_i_bert_cannot_run():
    config = ibert.IBertConfig(**TINY, quant_mode=True, force_dequant="gelu", num_labels=5)
    d = config.to_hf_dict()
    assert d["model_type"] == "ibert" and d["quant_mode"] is True
    assert ibert.IBertConfig.from_hf_dict(d) == config
    assert ibert.IBertConfig.from_hf_dict(transformers.IBertConfig(num_labels=4).to_dict()).num_labels == 4
    with pytest.raises(ValueError, match="gelu"):
        ibert.IBertConfig(hidden_act="relu")
    with pytest.raises(ValueError, match="force_dequant"):
        ibert.IBertConfig(force_dequant="everything")


def float_checkpoint(tmp_path, model_type, **extra):
    config_class = {"bert": "BertConfig", "roberta": "RobertaConfig", "electra": "ElectraConfig",
                    "albert": "AlbertConfig"}[model_type]
    model_class = config_class.removesuffix("Config") + "ForSequenceClassification"
    pad = 1 if model_type == "roberta" else 0
    config = getattr(transformers, config_class)(**{**TINY, **extra}, pad_token_id=pad, num_labels=3,
                                                 hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    config._attn_implementation = "eager"
    model = randomize(getattr(transformers, model_class)(config)).eval()
    model.save_pretrained(tmp_path)
    return model, pad


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
def test_from_float_checkpoint_same_logits_in_float_then_quantized_close(tmp_path, model_type):
    theirs, pad = float_checkpoint(tmp_path, model_type)
    inputs = batch(pad_token_id=pad)
    float_model, fresh = convert.from_float(tmp_path, "sequence_classification", quant_mode=False)
    assert fresh == []
    torch.testing.assert_close(our_output(float_model.eval(), inputs), hf_output(theirs, inputs),
                               atol=1e-5, rtol=1e-5)
    qat, _ = convert.from_float(tmp_path, "sequence_classification")
    assert qat.config.quant_mode
    ibert.calibrate(qat, calibration_batches(8, pad_token_id=pad))
    logits, reference = our_output(qat, inputs), hf_output(theirs, inputs)
    assert (logits - reference).norm() < 0.25 * reference.norm()  # 8 bits, random weights, hidden 32


@pytest.mark.parametrize("embedding_size", [32, 16], ids=["no-projection", "projection"])
def test_from_float_electra_encoder_same_in_float_then_quantized_close(tmp_path, embedding_size):
    """ELECTRA-Small's layout (embeddings narrower than the layers) too: the projection is a QuantLinear under
    ELECTRA's name, embeddings_project."""
    theirs, _ = float_checkpoint(tmp_path, "electra", embedding_size=embedding_size)
    model, fresh = convert.from_float(tmp_path, "base", quant_mode=False)
    assert fresh == ["pooler.dense.weight", "pooler.dense.bias"]  # ELECTRA has no pooler
    assert (model.embeddings_project is None) == (embedding_size == 32)
    if model.embeddings_project is not None:
        assert torch.equal(model.embeddings_project.weight, theirs.electra.embeddings_project.weight)
    inputs = batch(pad_token_id=0)
    with torch.no_grad():
        expected = theirs.electra(**inputs).last_hidden_state
    valid = inputs["attention_mask"].bool()  # padding has position pad_token_id in I-BERT, its index in ELECTRA
    torch.testing.assert_close(our_output(model.eval(), inputs)[valid], expected[valid], atol=1e-5, rtol=1e-5)
    qat, _ = convert.from_float(tmp_path, "base")
    ibert.calibrate(qat, calibration_batches(8, pad_token_id=0))
    hidden = our_output(qat, inputs)[valid]
    assert (hidden - expected[valid]).norm() < 0.25 * expected[valid].norm()  # 8 bits, random weights, hidden 32
    _, fresh = convert.from_float(tmp_path, "sequence_classification")
    assert fresh == ["classifier.dense.weight", "classifier.dense.bias", "classifier.out_proj.weight",
                     "classifier.out_proj.bias"]  # ELECTRA's head uses gelu, RoBERTa's tanh


ALBERT_LAYOUTS = {"1-group": dict(num_hidden_groups=1), "2-groups": dict(num_hidden_groups=2),
                  "2-groups-of-2": dict(num_hidden_groups=2, inner_group_num=2)}


@pytest.mark.parametrize("layout", ALBERT_LAYOUTS)
def test_from_float_albert_same_in_float_then_quantized_close_weights_shared(tmp_path, layout):
    """ALBERT (embedding projection, 4 layers sharing 1 or 2 groups' weights, gelu_new) against transformers':
    equal logits in float, close once quantized. Layer applications share the weights (one tensor, stored once)
    but each has its own activation ranges."""
    theirs, _ = float_checkpoint(tmp_path / "albert", "albert", embedding_size=16, num_hidden_layers=4,
                                 classifier_dropout_prob=0.0, **ALBERT_LAYOUTS[layout])
    inputs = batch(pad_token_id=0)
    float_model, fresh = convert.from_float(tmp_path / "albert", "sequence_classification", quant_mode=False)
    assert fresh == []  # ALBERT's pooler + classifier are RoBERTa's classifier head
    reference = hf_output(theirs, inputs)
    torch.testing.assert_close(our_output(float_model.eval(), inputs), reference, atol=1e-5, rtol=1e-5)
    qat, _ = convert.from_float(tmp_path / "albert", "sequence_classification")
    ibert.calibrate(qat, calibration_batches(8, pad_token_id=0))
    logits = our_output(qat, inputs)
    assert (logits - reference).norm() < 0.25 * reference.norm()

    layers = qat.ibert.encoder.layer
    groups, inner = theirs.config.num_hidden_groups, theirs.config.inner_group_num
    assert len(layers) == 4 * inner
    # each shared weight once; one more position (I-BERT's count from pad_token_id + 1 = 1), of width 16
    assert sum(p.numel() for p in qat.parameters()) == sum(p.numel() for p in theirs.parameters()) + 16
    # Layers 0 and 1 (of 4) run the first group's layers, layer 3 the last group's.
    first, second, last = layers[0], layers[inner], layers[3 * inner]
    assert first.attention.self.query.weight is second.attention.self.query.weight
    assert first.output.LayerNorm.weight is second.output.LayerNorm.weight
    assert (first.intermediate.dense.weight is last.intermediate.dense.weight) == (groups == 1)
    assert first.attention.self.query_activation.x_max != second.attention.self.query_activation.x_max
    assert first.output.LayerNorm.shift is not second.output.LayerNorm.shift

    hf_format.save_pretrained(qat, tmp_path / "qat")
    stored = safetensors.torch.load_file(tmp_path / "qat" / "model.safetensors")
    assert sum(name.endswith("query.weight") for name in stored) == groups * inner
    assert sum(name.endswith("query_activation.x_max") for name in stored) == 4 * inner
    torch.testing.assert_close(our_output(hf_format.load_pretrained(tmp_path / "qat", "sequence_classification"),
                                          inputs), logits, atol=0, rtol=0)


def test_quantization_aware_training_steps_reduce_the_loss():
    torch.manual_seed(0)
    model = randomize(ibert.IBertForSequenceClassification(ibert.IBertConfig(**TINY, quant_mode=True)))
    inputs = batch()
    labels = torch.tensor([0, 1, 1])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(8):
        loss = nn.functional.cross_entropy(model(**inputs), labels)
        optimizer.zero_grad()
        loss.backward()
        losses.append(loss.item())
        optimizer.step()
    layer = model.ibert.encoder.layer[1]
    for p in (layer.attention.self.query.weight, layer.output.dense.weight, layer.output.LayerNorm.weight,
              model.ibert.embeddings.word_embeddings.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert losses[-1] < losses[0]
