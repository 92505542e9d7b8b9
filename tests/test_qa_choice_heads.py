"""Question-answering and multiple-choice heads of every family against transformers' classes: logits, loss and
gradients at 1e-5 both ways through the HF format, exactly transformers' tensor names, the ELECTRA summary fields."""

import json

import pytest
import safetensors.torch
import torch

from encoderkit.models import albert, electra, hf_format, roberta
from encoderkit.models.ibert import model as ibert
from encoderkit.objectives.multiple_choice import ChoiceObjective
from encoderkit.objectives.question_answering import SpanObjective

transformers = pytest.importorskip("transformers")

SIZES = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)
FAMILIES = {  # family -> (our config class, config kwargs, transformers prefix, pad id)
    "albert": (albert.AlbertConfig, dict(SIZES, embedding_size=16, hidden_act="gelu_new"), "Albert", 0),
    "electra": (electra.ElectraConfig, dict(SIZES, embedding_size=16, hidden_act="gelu_new"), "Electra", 0),
    "bert": (electra.BertConfig, dict(SIZES, hidden_act="gelu_new"), "Bert", 0),
    "roberta": (roberta.RobertaConfig, dict(SIZES, hidden_act="gelu_new", max_position_embeddings=40), "Roberta", 1),
    "ibert": (ibert.IBertConfig, dict(SIZES, intermediate_size=64, max_position_embeddings=40), "IBert", 1),
}
HEADS = {"question_answering": "ForQuestionAnswering", "multiple_choice": "ForMultipleChoice"}
CASES = [(family, head) for family in FAMILIES for head in HEADS]


def randomize(model, seed=0):
    """Random values everywhere (LayerNorms and biases too), so a swapped name cannot go unnoticed."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 1 + 0.2 * torch.randn(p.shape, generator=g) if "LayerNorm.weight" in name else None
            p.copy_(scale if scale is not None else 0.2 * torch.randn(p.shape, generator=g))
    return model


def inputs(head, pad, choices=3):
    """A padded batch of 2 examples: (2, 12) token ids for QA, (2, choices, 12) for multiple choice."""
    shape = (2, 12) if head == "question_answering" else (2, choices, 12)
    g = torch.Generator().manual_seed(1)
    input_ids = torch.randint(3, 99, shape, generator=g)
    lengths = torch.randint(4, 13, shape[:-1], generator=g)
    attention_mask = (torch.arange(12) < lengths[..., None]).long()
    input_ids[attention_mask == 0] = pad
    token_type_ids = (torch.arange(12) >= 3).long().expand(shape).clone() * attention_mask
    return dict(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)


def labels(head):
    if head == "question_answering":  # one start beyond the sequence: clamped and ignored, as in transformers
        return dict(start_positions=torch.tensor([2, 40]), end_positions=torch.tensor([5, 3]))
    return dict(labels=torch.tensor([2, 0]))


def hf_model(family, head, **extra):
    _, config, prefix, pad = FAMILIES[family]
    hf_config = getattr(transformers, f"{prefix}Config")(**config, pad_token_id=pad, **extra)
    hf_config._attn_implementation = "eager"  # the plainest reference
    return randomize(getattr(transformers, prefix + HEADS[head])(hf_config))


def our_outputs(model, batch):
    out = model(**batch)
    return tuple(out) if isinstance(out, tuple) else (out,)


def hf_outputs(model, batch):
    out = model(**batch)
    return (out.start_logits, out.end_logits) if hasattr(out, "start_logits") else (out.logits,)


def our_loss(model, head, batch):
    if head == "question_answering":  # the objective's labels: (start, end) per row
        positions = labels(head)
        return SpanObjective()(model, {**batch, "labels": torch.stack(list(positions.values()), -1)})[0]
    return ChoiceObjective()(model, {**batch, **labels(head)})[0]


def close(a, b):
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def assert_same_model(ours, theirs, head, pad):
    """Logits, loss and every parameter's gradient (by HF name) of the two models on the same batch."""
    batch = inputs(head, pad)
    for a, b in zip(our_outputs(ours, batch), hf_outputs(theirs, batch), strict=True):
        close(a, b)
    ours.zero_grad()
    theirs.zero_grad()
    loss = our_loss(ours, head, batch)
    reference = theirs(**batch, **labels(head)).loss
    close(loss, reference)
    loss.backward()
    reference.backward()
    their_params = dict(theirs.named_parameters())
    names = hf_format.hf_names(ours)
    for name, p in ours.named_parameters():
        close(p.grad, their_params[names[name]].grad)


@pytest.mark.parametrize(("family", "head"), CASES)
def test_transformers_checkpoint_loads_with_same_logits_loss_and_gradients(tmp_path, family, head):
    theirs = hf_model(family, head)
    theirs.save_pretrained(tmp_path)
    ours = hf_format.load_pretrained(tmp_path, head)
    assert type(ours).__name__ == FAMILIES[family][2] + HEADS[head]
    assert_same_model(ours.eval(), theirs.eval(), head, FAMILIES[family][3])


@pytest.mark.parametrize(("family", "head"), CASES)
def test_our_checkpoint_loads_in_transformers_with_same_logits_loss_and_gradients(tmp_path, family, head):
    config_class, config, prefix, pad = FAMILIES[family]
    ours = randomize(hf_format.FAMILIES[family][1][head](config_class(**config, pad_token_id=pad)))
    hf_format.save_pretrained(ours, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == [prefix + HEADS[head]]
    theirs = getattr(transformers, prefix + HEADS[head]).from_pretrained(tmp_path, attn_implementation="eager")
    saved = safetensors.torch.load_file(tmp_path / "model.safetensors")
    assert set(saved) == set(theirs.state_dict()), "exactly transformers' tensor names"
    assert_same_model(ours.eval(), theirs.eval(), head, pad)


@pytest.mark.parametrize("summary", [dict(summary_type="mean", summary_use_proj=False, summary_activation="tanh"),
                                     dict(summary_type="last", summary_activation="linear", summary_last_dropout=0.0)],
                         ids=["mean-tanh-no-projection", "last-linear"])
def test_electra_sequence_summary_follows_config_json_both_ways(tmp_path, summary):
    theirs = hf_model("electra", "multiple_choice", **summary)
    theirs.save_pretrained(tmp_path / "theirs")
    ours = hf_format.load_pretrained(tmp_path / "theirs", "multiple_choice")
    assert {key: getattr(ours.config, key) for key in summary} == summary
    assert_same_model(ours.eval(), theirs.eval(), "multiple_choice", 0)
    hf_format.save_pretrained(ours, tmp_path / "ours")
    written = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert {key: written[key] for key in summary} == summary
    again = transformers.ElectraForMultipleChoice.from_pretrained(tmp_path / "ours")
    assert {key: getattr(again.config, key) for key in summary} == summary


def test_quantized_ibert_heads_load_from_transformers_with_same_logits(tmp_path):
    """quant_mode: the integer path under both heads, after transformers' calibration (train-mode forwards)."""
    for head in HEADS:
        theirs = hf_model("ibert", head, quant_mode=True)
        theirs.train()
        with torch.no_grad():
            for m in theirs.modules():
                if isinstance(m, torch.nn.Dropout):
                    m.eval()
            theirs(**inputs(head, 1))
        theirs.eval().save_pretrained(tmp_path / head)
        ours = hf_format.load_pretrained(tmp_path / head, head)
        with torch.no_grad():
            for a, b in zip(our_outputs(ours, inputs(head, 1)), hf_outputs(theirs, inputs(head, 1)), strict=True):
                close(a, b)


def test_question_answering_head_refuses_other_than_two_outputs():
    with pytest.raises(ValueError, match="num_labels 2"):
        albert.AlbertForQuestionAnswering(albert.AlbertConfig(**FAMILIES["albert"][1], num_labels=3))


def test_unknown_summary_type_is_refused():
    with pytest.raises(ValueError, match="summary_type: 'attn' is not one of: first, last, mean, cls_index"):
        electra.ElectraConfig(summary_type="attn")
