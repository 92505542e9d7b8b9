"""ALBERT's pretraining objective: masked LM (at masked positions only) + sentence-order prediction."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from encoderkit.data.masking import IGNORE_INDEX
from encoderkit.models.albert import AlbertConfig, AlbertForPreTraining
from encoderkit.objectives.baseline import UnigramBaseline
from encoderkit.objectives.mlm import MaskedLmTally, masked_lm_loss, model_device


def build_model(config: AlbertConfig, settings: None) -> AlbertForPreTraining:
    return AlbertForPreTraining(config)


def build_objective(vocab_size: int, settings: None, seed: int) -> MlmSopObjective:
    return MlmSopObjective(vocab_size)


class MlmSopObjective:
    """loss = MLM cross-entropy + SOP cross-entropy; MLM accuracy is logged beside its unigram baseline."""

    shown_metrics = (("mlm_acc", "mlm {:.3f}"), ("unigram_acc", "(unigram {:.3f})"), ("sop_acc", "sop {:.3f}"))

    def __init__(self, vocab_size: int):
        self.unigram = UnigramBaseline(vocab_size)

    def __call__(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        labels = batch["mlm_labels"]
        mlm_mask = labels != -100
        targets = labels[mlm_mask]
        mlm_logits, sop_logits = model(
            batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], mlm_mask=mlm_mask
        )
        mlm_loss = masked_lm_loss(mlm_logits, targets, batch)
        sop_labels = batch["sop_labels"]
        has_order = sop_labels != IGNORE_INDEX  # none in the length warmup's pieces of rows
        # the sum over no rows is 0 with a gradient of 0, so the warmup's steps train MLM only
        sop_loss = F.cross_entropy(sop_logits.float(), sop_labels, reduction="sum") / max(int(has_order.sum()), 1)

        with torch.no_grad():
            metrics = {
                "loss": float(mlm_loss + sop_loss),
                "mlm_loss": float(mlm_loss),
                "mlm_acc": float((mlm_logits.argmax(-1) == targets).float().mean()),
                "unigram_acc": self.unigram.accuracy(targets),
            }
            if has_order.any():
                metrics["sop_loss"] = float(sop_loss)
                metrics["sop_acc"] = float((sop_logits.argmax(-1) == sop_labels)[has_order].float().mean())
        return mlm_loss + sop_loss, metrics

    def evaluate(self, model: nn.Module, batches, step: int) -> dict:
        """Held-out numbers over all of `batches`: masked-token accuracy and perplexity (with the unigram
        baseline's), sentence-order accuracy."""
        tally = MaskedLmTally(self.unigram)
        device = model_device(model)
        sop_correct = sop_count = 0
        for batch in batches:
            mlm_mask = batch["mlm_labels"] != -100
            mlm_logits, sop_logits = model(batch["input_ids"].to(device), batch["attention_mask"].to(device),
                                           batch["token_type_ids"].to(device), mlm_mask=mlm_mask.to(device))
            tally.add(mlm_logits, batch["mlm_labels"][mlm_mask].to(device), batch["input_ids"][mlm_mask].to(device))
            sop_correct += int((sop_logits.argmax(-1).cpu() == batch["sop_labels"]).sum())
            sop_count += len(batch["sop_labels"])
        return {**tally.results("mlm"), "sop_acc": sop_correct / max(sop_count, 1)}

    def state_dict(self) -> dict:
        return self.unigram.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.unigram.load_state_dict(state)
