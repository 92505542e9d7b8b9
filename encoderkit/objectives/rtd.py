"""ELECTRA's objective: generator masked LM + discriminator replaced-token detection.

As in the paper and the original code: the generator predicts the masked positions; the model
samples replacements from its softmax (in fp32, no gradient through the sample);
the discriminator labels every token replaced or original (a sample equal to the original
counts as original). loss = generator + weight x discriminator.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from encoderkit.fields import value_range
from encoderkit.models.electra import ElectraConfig, ElectraGeneratorDiscriminator
from encoderkit.objectives.baseline import UnigramBaseline
from encoderkit.objectives.mlm import MaskedLmTally, masked_lm_loss, model_device


@dataclass
class RtdSettings:
    """The `rtd` section of an ELECTRA recipe (Clark et al. 2020, Section 3 and Appendix A)."""

    discriminator_weight: float = field(default=50.0, metadata=value_range(0, lo_open=True))
    temperature: float = field(default=1.0, metadata=value_range(0, lo_open=True))
    # The generator has this fraction of the discriminator's hidden size, heads and FFN size.
    generator_size_multiplier: float = field(default=0.25, metadata=value_range(0, 1, lo_open=True))


def generator_config(discriminator: ElectraConfig, multiplier: float) -> ElectraConfig:
    """The generator: same depth and embeddings, `multiplier` x the hidden size, heads and FFN size."""
    return dataclasses.replace(
        discriminator,
        hidden_size=max(1, round(discriminator.hidden_size * multiplier)),
        num_attention_heads=max(1, round(discriminator.num_attention_heads * multiplier)),
        intermediate_size=max(1, round(discriminator.intermediate_size * multiplier)),
    )


def build_model(config: ElectraConfig, settings: RtdSettings) -> ElectraGeneratorDiscriminator:
    """The generator and the discriminator (`config`), sharing their embeddings."""
    return ElectraGeneratorDiscriminator(generator_config(config, settings.generator_size_multiplier), config)


def build_objective(vocab_size: int, settings: RtdSettings, seed: int) -> ReplacedTokenDetectionObjective:
    return ReplacedTokenDetectionObjective(vocab_size, settings.discriminator_weight, settings.temperature, seed=seed)


def binary_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half); 0.5 when one class is absent."""
    scores, labels = scores.float().flatten(), labels.bool().flatten()
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return 0.5
    order = scores.argsort()
    sorted_scores = scores[order]
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, scores.numel() + 1, dtype=scores.dtype, device=scores.device)
    # Average the ranks of tied scores.
    unique, inverse, counts = torch.unique_consecutive(sorted_scores, return_inverse=True, return_counts=True)
    if unique.numel() < scores.numel():
        sums = torch.zeros_like(unique).index_add_(0, inverse, ranks[order])
        ranks[order] = (sums / counts)[inverse]
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


class CollapseAlarm:
    """Warns on the known ways ELECTRA runs fail: the discriminator answering "original"
    everywhere (AUC near 0.5, recall near 0), or a generator that runs away early (too accurate,
    leaving the discriminator nothing to detect)."""

    # A healthy tiny run is past AUC 0.6 by then; the stalled run this catches sat at 0.54 for 2,400 steps.
    def __init__(self, after_steps: int = 1000, window: int = 100, min_auc: float = 0.6,
                 min_recall: float = 0.05, max_early_gen_acc: float = 0.6):
        self.after_steps, self.window = after_steps, window
        self.min_auc, self.min_recall, self.max_early_gen_acc = min_auc, min_recall, max_early_gen_acc
        self.history: list[tuple[float, float, float]] = []
        self.calls = 0
        self.raised: set[str] = set()

    def update(self, auc: float, recall: float, gen_acc: float) -> list[str]:
        self.calls += 1
        self.history = (self.history + [(auc, recall, gen_acc)])[-self.window:]
        if self.calls < self.after_steps or len(self.history) < self.window:
            return []
        mean_auc, mean_recall, mean_gen = (sum(col) / len(col) for col in zip(*self.history))
        alarms = []
        if mean_auc < self.min_auc and "auc" not in self.raised:
            alarms.append(
                f"ELECTRA collapse: discriminator AUC {mean_auc:.2f} and recall {mean_recall:.2f} after "
                f"{self.calls} batches: it answers 'original' everywhere. Try a higher learning rate, "
                "longer warmup, a smaller generator or more steps."
            )
            self.raised.add("auc")
        if mean_gen > self.max_early_gen_acc and self.calls < 10 * self.after_steps and "gen" not in self.raised:
            alarms.append(
                f"ELECTRA collapse: generator accuracy {mean_gen:.2f} after {self.calls} batches runs away; "
                "shrink the generator (rtd.generator_size_multiplier)."
            )
            self.raised.add("gen")
        for message in alarms:
            warnings.warn(message, stacklevel=2)
        return alarms

    def check_held_out(self, step: int, auc: float, recall: float, gen_acc: float) -> list[str]:
        """The same alarms on one held-out evaluation at optimizer step `step` (a whole validation set is
        already an average, so no window)."""
        self.history, self.calls = [(auc, recall, gen_acc)] * self.window, max(self.calls, step - 1)
        return self.update(auc, recall, gen_acc)

    def state_dict(self) -> dict:
        return {"history": self.history, "calls": self.calls, "raised": sorted(self.raised)}

    def load_state_dict(self, state: dict) -> None:
        self.history = [tuple(h) for h in state["history"]]
        self.calls, self.raised = state["calls"], set(state["raised"])


class ReplacedTokenDetectionObjective:
    shown_metrics = (("gen_acc", "gen {:.3f}"), ("unigram_acc", "(unigram {:.3f})"), ("disc_auc", "auc {:.3f}"),
                     ("disc_recall", "recall {:.3f}"))

    def __init__(self, vocab_size: int, discriminator_weight: float = 50.0, temperature: float = 1.0,
                 alarm: CollapseAlarm | None = None, seed: int = 0):
        self.unigram = UnigramBaseline(vocab_size)
        self.sampling_seeds = torch.Generator().manual_seed(seed)
        self.discriminator_weight = discriminator_weight
        self.temperature = temperature
        self.alarm = alarm or CollapseAlarm()
        self.alarm_reads_held_out = False  # set by the first held-out evaluation

    def __call__(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        input_ids, attention, token_types = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
        labels = batch["mlm_labels"]
        mlm_mask = labels != -100
        targets = labels[mlm_mask]
        world = batch.get("world_size", 1)

        uniforms = self.sampling_uniforms(mlm_mask, batch.get("row_offset", 0))
        gen_logits, disc_logits, disc_input = model(
            input_ids, attention, token_types, mlm_mask, uniforms, self.temperature
        )
        gen_loss = masked_lm_loss(gen_logits, targets, batch)

        real = attention.bool()
        replaced = replaced_tokens(input_ids, mlm_mask, targets, disc_input, real)
        per_token = F.binary_cross_entropy_with_logits(disc_logits.float(), replaced.float(), reduction="none")
        num_tokens = batch.get("num_tokens_global", int(real.sum()))
        disc_loss = (per_token * real).sum() * world / max(num_tokens, 1)
        loss = gen_loss + self.discriminator_weight * disc_loss

        with torch.no_grad():
            scores, truth = disc_logits[real].float(), replaced[real]
            predicted = scores > 0
            true_pos = int((predicted & truth).sum())
            metrics = {
                "loss": float(loss),
                "gen_loss": float(gen_loss),
                "disc_loss": float(disc_loss),
                "gen_acc": float((gen_logits.argmax(-1) == targets).float().mean()),
                "unigram_acc": self.unigram.accuracy(targets),
                "replaced_frac": float(truth.float().mean()),
                "disc_acc": float((predicted == truth).float().mean()),
                "disc_precision": true_pos / max(int(predicted.sum()), 1),
                "disc_recall": true_pos / max(int(truth.sum()), 1),
                "disc_auc": binary_auc(scores, truth),
            }
            if not self.alarm_reads_held_out:
                self.alarm.update(metrics["disc_auc"], metrics["disc_recall"], metrics["gen_acc"])
        return loss, metrics

    def evaluate(self, model: nn.Module, batches, step: int) -> dict:
        """Held-out numbers over all of `batches`: the generator's accuracy and perplexity (with the unigram
        baseline's), the discriminator's AUC, precision and recall over every real token. Replacements are
        sampled with the same seed at every evaluation, so the numbers compare across steps. From the first
        evaluation on, the collapse alarm reads these numbers instead of the training batches'."""
        tally = MaskedLmTally(self.unigram)
        device = model_device(model)
        sampling = torch.Generator().manual_seed(0)
        all_scores, all_truth = [], []
        for batch in batches:
            input_ids, attention = batch["input_ids"].to(device), batch["attention_mask"].to(device)
            mlm_mask = (batch["mlm_labels"] != -100).to(device)
            targets = batch["mlm_labels"].to(device)[mlm_mask]
            uniforms = torch.rand(int(mlm_mask.sum()), generator=sampling).to(device)
            gen_logits, disc_logits, disc_input = model(input_ids, attention, batch["token_type_ids"].to(device),
                                                        mlm_mask, uniforms, self.temperature)
            tally.add(gen_logits, targets, input_ids[mlm_mask])
            real = attention.bool()
            all_scores.append(disc_logits[real].float().cpu())
            all_truth.append(replaced_tokens(input_ids, mlm_mask, targets, disc_input, real)[real].cpu())
        scores, truth = torch.cat(all_scores), torch.cat(all_truth)
        predicted = scores > 0
        true_pos = int((predicted & truth).sum())
        results = {**tally.results("gen"), "disc_auc": binary_auc(scores, truth),
                   "disc_precision": true_pos / max(int(predicted.sum()), 1),
                   "disc_recall": true_pos / max(int(truth.sum()), 1)}
        self.alarm_reads_held_out = True
        self.alarm.check_held_out(step, results["disc_auc"], results["disc_recall"], results["gen_acc"])
        return results

    def sampling_uniforms(self, mlm_mask: torch.Tensor, row_offset: int) -> torch.Tensor:
        """One uniform number [N] per masked position (the model samples a replacement with it), drawn
        row by row from a seed for this batch and the row's index in the global batch: however the batch
        is split over processes, every row gets the numbers it would get in one process."""
        batch_seed = int(torch.randint(2**62, (1,), generator=self.sampling_seeds))
        rows = []
        for row, count in enumerate(mlm_mask.sum(dim=1).tolist()):
            if count:
                row_generator = torch.Generator().manual_seed(batch_seed + row_offset + row)
                rows.append(torch.rand(count, generator=row_generator))
        return torch.cat(rows).to(mlm_mask.device) if rows else torch.empty(0, device=mlm_mask.device)

    def state_dict(self) -> dict:
        return {"alarm": self.alarm.state_dict(), "unigram": self.unigram.state_dict(),
                "sampling_seeds": self.sampling_seeds.get_state().tolist(),
                "alarm_reads_held_out": self.alarm_reads_held_out}

    def load_state_dict(self, state: dict) -> None:
        self.alarm.load_state_dict(state["alarm"])
        self.unigram.load_state_dict(state["unigram"])
        self.sampling_seeds.set_state(torch.tensor(state["sampling_seeds"], dtype=torch.uint8))
        self.alarm_reads_held_out = state.get("alarm_reads_held_out", False)


def replaced_tokens(input_ids, mlm_mask, targets, disc_input, real) -> torch.Tensor:
    """The discriminator's labels (bool [B, S]): real tokens whose input differs from the original text
    (a sample equal to the original counts as original)."""
    original = input_ids.clone()
    original[mlm_mask] = targets
    return (disc_input != original) & real
