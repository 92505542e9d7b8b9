"""Sequence classification: an ELECTRA-small GLUE fine-tuning step, and base-size inference in fp32.

Ours is what `encoderkit finetune` and inference run: our model with our classification objective and the
loop's optimizer; the reference is transformers' model computing its own loss. Batches are padded
sentence pairs (common.classification_batch), the same on both sides.
"""

from __future__ import annotations

from benchmarks.common import (
    adamw,
    classification_batch,
    inference_step,
    our_optimizer,
    reference_decay_groups,
    training_step,
)
from benchmarks.pretraining import ELECTRA_SMALL

# RoBERTa-base's size; our BERT encoder and transformers' RoBERTa differ only in position numbering and in
# the head (pooler + classifier vs dense + out_proj: the same products), so they do the same work.
BASE = dict(vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
            max_position_embeddings=514, type_vocab_size=1)


def glue_ours(batch_size: int, seq_len: int, bf16: bool = False):
    from encoderkit.models.electra import ElectraConfig, ElectraForSequenceClassification
    from encoderkit.objectives.classification import ClassificationObjective

    model = ElectraForSequenceClassification(ElectraConfig(**ELECTRA_SMALL, num_labels=2))
    objective = ClassificationObjective(num_labels=2)
    batch = classification_batch(batch_size, seq_len, ELECTRA_SMALL["vocab_size"])
    return training_step(model, our_optimizer(model), lambda: objective(model, batch)[0], bf16)


def glue_reference(batch_size: int, seq_len: int):
    import transformers

    model = transformers.ElectraForSequenceClassification(transformers.ElectraConfig(**ELECTRA_SMALL, num_labels=2))
    batch = classification_batch(batch_size, seq_len, ELECTRA_SMALL["vocab_size"])
    return training_step(model, adamw(reference_decay_groups(model)), lambda: model(**batch).loss)


def base_inference_ours(batch_size: int, seq_len: int, bf16: bool = False):
    from encoderkit.models.electra import BertConfig, BertForSequenceClassification

    model = BertForSequenceClassification(BertConfig(**BASE))
    batch = classification_batch(batch_size, seq_len, BASE["vocab_size"])
    inputs = (batch["input_ids"], batch["attention_mask"])  # one segment: RoBERTa has no second
    return inference_step(model, lambda: model(*inputs), bf16)


def base_inference_reference(batch_size: int, seq_len: int):
    import transformers

    model = transformers.RobertaForSequenceClassification(transformers.RobertaConfig(**BASE))
    batch = classification_batch(batch_size, seq_len, BASE["vocab_size"])
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    return inference_step(model, lambda: model(**inputs))
