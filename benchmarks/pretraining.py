"""Pretraining steps: ALBERT-base (MLM+SOP) and ELECTRA-small (generator + discriminator), ours and transformers'.

Ours is what `encoderkit pretrain` runs: our model, our objective and the optimizer the training loop builds.
The reference is transformers' models with the losses they compute themselves, plus the few lines that
transformers leaves to the user (ELECTRA's sampling and replaced-token labels).
"""

from __future__ import annotations

import torch

from benchmarks.common import adamw, our_optimizer, pretraining_batch, reference_decay_groups, training_step

# ALBERT-base v2 (no dropout) and ELECTRA-small; the generator is the discriminator scaled by 1/4 in width.
ALBERT_BASE = dict(vocab_size=30000, embedding_size=128, hidden_size=768, num_hidden_layers=12,
                   num_attention_heads=12, intermediate_size=3072, hidden_act="gelu_new",
                   hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
ELECTRA_SMALL = dict(vocab_size=30522, embedding_size=128, hidden_size=256, num_hidden_layers=12,
                     num_attention_heads=4, intermediate_size=1024)
ELECTRA_SMALL_GENERATOR = dict(ELECTRA_SMALL, hidden_size=64, num_attention_heads=1, intermediate_size=256)
DISCRIMINATOR_WEIGHT = 50.0


def albert_ours(batch_size: int, seq_len: int, bf16: bool = False):
    from encoderkit.models.albert import AlbertConfig, AlbertForPreTraining
    from encoderkit.objectives.mlm_sop import MlmSopObjective

    model = AlbertForPreTraining(AlbertConfig(**ALBERT_BASE))
    objective = MlmSopObjective(model.config.vocab_size)
    batch = pretraining_batch(batch_size, seq_len, model.config.vocab_size)
    return training_step(model, our_optimizer(model), lambda: objective(model, batch)[0], bf16)


def albert_reference(batch_size: int, seq_len: int):
    import transformers

    model = transformers.AlbertForPreTraining(transformers.AlbertConfig(**ALBERT_BASE))
    batch = pretraining_batch(batch_size, seq_len, model.config.vocab_size)

    def loss():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     token_type_ids=batch["token_type_ids"], labels=batch["mlm_labels"],
                     sentence_order_label=batch["sop_labels"]).loss

    return training_step(model, adamw(reference_decay_groups(model)), loss)


def electra_ours(batch_size: int, seq_len: int, bf16: bool = False):
    from encoderkit.models.electra import ElectraConfig, ElectraGeneratorDiscriminator
    from encoderkit.objectives.rtd import ReplacedTokenDetectionObjective

    model = ElectraGeneratorDiscriminator(ElectraConfig(**ELECTRA_SMALL_GENERATOR), ElectraConfig(**ELECTRA_SMALL))
    objective = ReplacedTokenDetectionObjective(vocab_size=ELECTRA_SMALL["vocab_size"],
                                                discriminator_weight=DISCRIMINATOR_WEIGHT)
    batch = pretraining_batch(batch_size, seq_len, ELECTRA_SMALL["vocab_size"])
    return training_step(model, our_optimizer(model), lambda: objective(model, batch)[0], bf16)


def electra_reference(batch_size: int, seq_len: int):
    """transformers' generator and discriminator sharing embeddings, each computing its own loss."""
    import transformers

    discriminator = transformers.ElectraForPreTraining(transformers.ElectraConfig(**ELECTRA_SMALL))
    generator = transformers.ElectraForMaskedLM(transformers.ElectraConfig(**ELECTRA_SMALL_GENERATOR))
    generator.electra.embeddings = discriminator.electra.embeddings
    generator.generator_lm_head.weight = discriminator.electra.embeddings.word_embeddings.weight
    pair = torch.nn.ModuleDict({"generator": generator, "discriminator": discriminator})
    batch = pretraining_batch(batch_size, seq_len, ELECTRA_SMALL["vocab_size"])
    inputs = {k: batch[k] for k in ("attention_mask", "token_type_ids")}
    mlm_mask = batch["mlm_labels"] != -100
    original = torch.where(mlm_mask, batch["mlm_labels"], batch["input_ids"])

    def loss():
        generated = generator(input_ids=batch["input_ids"], labels=batch["mlm_labels"], **inputs)
        with torch.no_grad():  # Gumbel-max sampling of the replacements, as in the ELECTRA code
            logits = generated.logits[mlm_mask].float()
            noise = -torch.log(-torch.log(torch.rand(logits.shape).clamp(1e-9, 1 - 1e-9)))
            replaced_input = batch["input_ids"].masked_scatter(mlm_mask, (logits + noise).argmax(-1))
        replaced = (replaced_input != original).long()
        detected = discriminator(input_ids=replaced_input, labels=replaced, **inputs)
        return generated.loss + DISCRIMINATOR_WEIGHT * detected.loss

    return training_step(pair, adamw(reference_decay_groups(pair)), loss)
