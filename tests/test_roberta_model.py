"""RoBERTa: parity with transformers' Roberta* classes (logits and gradients) on the same weights, checkpoints
both ways with transformers' exact names, positions counted from the pad id under padding."""

import json

import pytest
import safetensors.torch
import torch

from encoderkit.models import hf_format, roberta
from encoderkit.models.load import load_model, max_tokens

transformers = pytest.importorskip("transformers")

# hidden_act is not gelu, so a head using the wrong activation shows (RoBERTa's MLM head is always gelu).
TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            hidden_act="gelu_new", max_position_embeddings=20, pad_token_id=1)
HEADS = {
    "base": (roberta.RobertaModel, "RobertaModel"),
    "masked_lm": (roberta.RobertaForMaskedLM, "RobertaForMaskedLM"),
    "sequence_classification": (roberta.RobertaForSequenceClassification, "RobertaForSequenceClassification"),
}
PAD = 1


def randomize(model, seed=0):
    """Random values everywhere (LayerNorms and biases too), so a swapped name cannot go unnoticed."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model.eval()


def batch():
    """Three rows, two of them padded at the end with the pad id: positions must skip the padding."""
    g = torch.Generator().manual_seed(1)
    input_ids = torch.randint(3, 99, (3, 9), generator=g)
    input_ids[:, 0] = 0
    attention_mask = torch.ones(3, 9, dtype=torch.long)
    attention_mask[1, 6:] = 0
    attention_mask[2, 3:] = 0
    input_ids[attention_mask == 0] = PAD
    return dict(input_ids=input_ids, attention_mask=attention_mask)


def hf_output(out):
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def real_rows(output, inputs):
    """Outputs at real tokens (padding positions of hidden states are not compared: ours leave them out)."""
    return output if output.dim() == 2 else output[inputs["attention_mask"].bool()]


@pytest.mark.parametrize("head", HEADS)
def test_transformers_checkpoint_loads_with_same_logits_and_gradients(tmp_path, head):
    hf_config = transformers.RobertaConfig(**TINY, num_labels=3, hidden_dropout_prob=0.0,
                                           attention_probs_dropout_prob=0.0)
    hf_config._attn_implementation = "eager"
    theirs = randomize(getattr(transformers, HEADS[head][1])(hf_config))
    theirs.save_pretrained(tmp_path)
    ours = load_model(tmp_path, head)
    assert isinstance(ours, HEADS[head][0]) and ours.config.num_labels == 3
    assert max_tokens(ours) == 20 - PAD - 1
    inputs = batch()
    ours_out, theirs_out = ours(**inputs), hf_output(theirs(**inputs))
    torch.testing.assert_close(real_rows(ours_out, inputs), real_rows(theirs_out, inputs), atol=1e-5, rtol=1e-5)
    # gradients of every tensor, through the same loss on the real rows
    real_rows(ours_out, inputs).square().sum().backward()
    real_rows(theirs_out, inputs).square().sum().backward()
    names = hf_format.hf_names(ours)
    theirs_grads = {name: p.grad for name, p in theirs.named_parameters()}
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, theirs_grads[names[name]], atol=1e-4, rtol=1e-4, msg=name)


@pytest.mark.parametrize("head", HEADS)
def test_our_checkpoint_loads_in_transformers_with_same_logits(tmp_path, head):
    ours = randomize(HEADS[head][0](roberta.RobertaConfig(**TINY, num_labels=1)))
    hf_format.save_pretrained(ours, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "roberta" and config["architectures"] == [HEADS[head][1]]
    theirs = getattr(transformers, HEADS[head][1]).from_pretrained(tmp_path, attn_implementation="eager").eval()
    inputs = batch()
    with torch.no_grad():
        torch.testing.assert_close(real_rows(ours(**inputs), inputs), real_rows(hf_output(theirs(**inputs)), inputs),
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["RobertaForMaskedLM", "RobertaForSequenceClassification", "RobertaModel"])
def test_saved_names_are_exactly_transformers_names(tmp_path, name):
    getattr(transformers, name)(transformers.RobertaConfig(**TINY)).save_pretrained(tmp_path / "theirs")
    hf_format.save_pretrained(getattr(roberta, name)(roberta.RobertaConfig(**TINY)), tmp_path / "ours")
    read = lambda d: safetensors.torch.load_file(tmp_path / d / "model.safetensors")  # noqa: E731
    assert {k: v.shape for k, v in read("ours").items()} == {k: v.shape for k, v in read("theirs").items()}


def test_masked_lm_at_mlm_mask_is_the_rows_of_the_full_logits():
    model = randomize(roberta.RobertaForMaskedLM(roberta.RobertaConfig(**TINY)))
    inputs = batch()
    mlm_mask = torch.zeros(3, 9, dtype=torch.bool)
    mlm_mask[0, [1, 5]] = mlm_mask[2, [1, 2]] = True
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs, mlm_mask=mlm_mask), model(**inputs)[mlm_mask])


def test_config_defaults_are_transformers_roberta_config():
    theirs = transformers.RobertaConfig().to_dict()
    ours = roberta.RobertaConfig().to_hf_dict()
    for key, value in ours.items():
        if key in theirs and key not in ("model_type", "tie_word_embeddings"):
            assert theirs[key] == value, key
