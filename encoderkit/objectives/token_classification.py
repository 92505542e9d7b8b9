"""Token classification (NER, POS, chunking): cross-entropy over the tags at the labelled pieces.

Batches come from encoderkit.data.tokens (iter_batches over EncodedTokens): labels [B, S], -100 where a piece
is outside the loss (special tokens, padding, a word's later pieces), as transformers' run_ner.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from encoderkit.data.tokens import IGNORED


class TokenClassificationObjective:
    """The model maps (input_ids, attention_mask, token_type_ids) to logits [B, S, num_labels]; the loss is the
    mean cross-entropy over the labelled positions, as transformers' ForTokenClassification computes it."""

    shown_metrics = (("accuracy", "acc {:.3f}"),)

    def __call__(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        labels = batch["labels"]
        loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORED)
        labelled = labels != IGNORED
        accuracy = (logits.detach().argmax(-1)[labelled] == labels[labelled]).float().mean()
        return loss, {"loss": float(loss.detach()), "accuracy": float(accuracy)}
