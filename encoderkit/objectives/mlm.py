"""Plain masked-language modelling (BERT, RoBERTa): cross-entropy at the masked positions only.

The model is the family's `masked_lm` head (BERT, RoBERTa, or an ALBERT/ELECTRA encoder when the recipe asks).
This file also holds what every masked-LM objective shares: the loss at masked positions and the held-out tally
(accuracy, perplexity and the unigram baseline over a whole validation set).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from encoderkit.models.hf_format import FAMILIES
from encoderkit.objectives.baseline import UnigramBaseline


def build_model(config, settings: None) -> nn.Module:
    return FAMILIES[config.model_type][1]["masked_lm"](config)


def build_objective(vocab_size: int, settings: None, seed: int) -> MaskedLmObjective:
    return MaskedLmObjective(vocab_size)


def masked_lm_loss(logits: torch.Tensor, targets: torch.Tensor, batch: dict) -> torch.Tensor:
    """Mean cross-entropy over the masked tokens, normalised by the global number of masked tokens so that
    N processes sum to one process's mean."""
    num_masked = batch.get("num_masked_global", targets.numel())
    loss = F.cross_entropy(logits.float(), targets, reduction="sum")
    return loss * batch.get("world_size", 1) / max(num_masked, 1)


class MaskedLmTally:
    """Held-out masked-LM numbers summed over batches: accuracy and perplexity per masked token, beside the
    unigram baseline's (the most frequent training label as the answer; training label frequencies, add-one
    smoothed, as the distribution), and accuracy where the input hid the token ([MASK] or a random token):
    the 10% of chosen tokens left unchanged can be answered by copying, which lifts plain accuracy above the
    baseline without any use of context."""

    def __init__(self, unigram: UnigramBaseline):
        counts = unigram.label_counts.double() + 1
        self.unigram_log_probs = (counts / counts.sum()).log()
        self.unigram_guess = int(unigram.label_counts.argmax())
        self.correct = self.unigram_correct = self.count = self.hidden_correct = self.hidden_count = 0
        self.nll = self.unigram_nll = 0.0

    def add(self, logits: torch.Tensor, targets: torch.Tensor, inputs: torch.Tensor) -> None:
        """`inputs`: the input ids at the masked positions, [N] like `targets`."""
        logits, targets_cpu = logits.detach(), targets.cpu()
        right, hidden = logits.argmax(-1) == targets, inputs != targets
        self.correct += int(right.sum())
        self.hidden_correct += int((right & hidden).sum())
        self.hidden_count += int(hidden.sum())
        self.nll += float(F.cross_entropy(logits.float(), targets, reduction="sum"))
        self.unigram_correct += int((targets_cpu == self.unigram_guess).sum())
        self.unigram_nll -= float(self.unigram_log_probs[targets_cpu].sum())
        self.count += targets.numel()

    def results(self, prefix: str) -> dict:
        count = max(self.count, 1)
        return {f"{prefix}_acc": self.correct / count,
                f"{prefix}_acc_hidden": self.hidden_correct / max(self.hidden_count, 1),
                f"{prefix}_perplexity": math.exp(self.nll / count),
                "unigram_acc": self.unigram_correct / count, "unigram_perplexity": math.exp(self.unigram_nll / count),
                "masked_tokens": self.count}


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


class MaskedLmObjective:
    """loss = MLM cross-entropy; accuracy is logged beside its unigram baseline."""

    shown_metrics = (("mlm_acc", "mlm {:.3f}"), ("unigram_acc", "(unigram {:.3f})"))

    def __init__(self, vocab_size: int):
        self.unigram = UnigramBaseline(vocab_size)

    def __call__(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        mlm_mask = batch["mlm_labels"] != -100
        targets = batch["mlm_labels"][mlm_mask]
        logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], mlm_mask=mlm_mask)
        loss = masked_lm_loss(logits, targets, batch)
        with torch.no_grad():
            metrics = {
                "loss": float(loss),
                "mlm_acc": float((logits.argmax(-1) == targets).float().mean()),
                "unigram_acc": self.unigram.accuracy(targets),
            }
        return loss, metrics

    def evaluate(self, model: nn.Module, batches, step: int) -> dict:
        """Held-out numbers over all of `batches` (no gradients, the model as it is)."""
        tally = MaskedLmTally(self.unigram)
        device = model_device(model)
        for batch in batches:
            mlm_mask = batch["mlm_labels"] != -100
            logits = model(batch["input_ids"].to(device), batch["attention_mask"].to(device),
                           batch["token_type_ids"].to(device), mlm_mask=mlm_mask.to(device))
            tally.add(logits, batch["mlm_labels"][mlm_mask].to(device), batch["input_ids"][mlm_mask].to(device))
        return tally.results("mlm")

    def state_dict(self) -> dict:
        return self.unigram.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.unigram.load_state_dict(state)
