"""Sequence classification and regression: cross-entropy over the classes, or mean squared error on a score.

Batches come from encoderkit.data.classification.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ClassificationObjective:
    """Cross-entropy over `num_labels` classes, or with num_labels == 1 mean squared error on a score, or with
    `multi_label` one sigmoid per class and binary cross-entropy (transformers' multi_label_classification);
    a class is then predicted where its probability exceeds `threshold`.

    The model maps (input_ids, attention_mask, token_type_ids) to logits [B, num_labels].
    """

    shown_metrics = (("accuracy", "acc {:.3f}"),)

    def __init__(self, num_labels: int, multi_label: bool = False, threshold: float = 0.5):
        if num_labels < 1:
            raise ValueError(f"num_labels must be at least 1, got {num_labels}")
        self.num_labels, self.multi_label, self.threshold = num_labels, multi_label, threshold
        self.is_regression = num_labels == 1 and not multi_label

    def __call__(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        labels = batch["labels"]
        if self.is_regression:
            loss = F.mse_loss(logits.squeeze(-1).float(), labels.float())
            return loss, {"loss": float(loss.detach())}
        if self.multi_label:
            loss = F.binary_cross_entropy_with_logits(logits.float(), labels.float())
            exact = (self.predict(logits.detach()) == labels.bool()).all(-1).float().mean()
            return loss, {"loss": float(loss.detach()), "accuracy": float(exact)}
        loss = F.cross_entropy(logits.float(), labels)
        accuracy = (logits.detach().argmax(-1) == labels).float().mean()
        return loss, {"loss": float(loss.detach()), "accuracy": float(accuracy)}

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        """Class indices, scores for regression, multi-hot bool rows for multi-label: what the metrics take."""
        if self.multi_label:
            return logits.sigmoid() > self.threshold
        return logits.squeeze(-1) if self.is_regression else logits.argmax(-1)
