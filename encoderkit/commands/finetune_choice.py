"""`encoderkit finetune choice`: a pretrained encoder under a multiple-choice head (one score per (context, choice)
pair, softmax across the choices), fine-tuned on SWAG / RACE / JSON Lines data through the fine-tuning seed loop;
the best dev checkpoint by accuracy.

The run dir (output.dir):
  recipe.yaml, versions.json   the run record
  results.json                 the data, each seed's best epoch, the best checkpoint's dev accuracy
  dev_predictions.jsonl        the best checkpoint's choice for each dev example: {"id", "label", "scores"}
  test_predictions.jsonl       the same for --test examples, if given
  choice/best/, choice/seed-<n>/   as in encoderkit.train.finetune
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from rich.console import Console

from encoderkit.data.choice import ChoiceExample, encode_choices, load_examples
from encoderkit.data.classification import EncodedExamples, iter_batches
from encoderkit.data.tokenizer import Tokenizer
from encoderkit.errors import UserError
from encoderkit.files import write_json, write_text
from encoderkit.models.load import load_model, max_tokens, read_model_config
from encoderkit.objectives.multiple_choice import ChoiceObjective
from encoderkit.recipes import RecipeError, dump_yaml
from encoderkit.recipes.qa_choice import ChoiceRecipe
from encoderkit.train.evaluate import predict
from encoderkit.train.finetune import EpochPlan, FinetuneTask, check_output_dir, finetune_seeds
from encoderkit.train.run_dir import write_run_record

HEAD = "multiple_choice"
RESULTS_FILE = "results.json"


class ChoiceRunError(UserError):
    """A run directory or data that cannot be used."""


@torch.inference_mode()
def choice_probabilities(model, examples: EncodedExamples, batch_size: int) -> torch.Tensor:
    """Each example's choice probabilities [N, C] (softmax across its choices)."""
    device = next(model.parameters()).device
    probabilities = []
    for batch in iter_batches(examples, batch_size, shuffle=False):
        scores = model(*(batch[key].to(device) for key in ("input_ids", "attention_mask", "token_type_ids")))
        probabilities.append(scores.float().softmax(-1).cpu())
    return torch.cat(probabilities)


def write_predictions(path: Path, examples: list[ChoiceExample], probabilities: torch.Tensor) -> None:
    lines = [json.dumps({"id": example.id, "label": int(row.argmax()), "scores": [round(p, 6) for p in row.tolist()]})
             for example, row in zip(examples, probabilities, strict=True)]
    write_text(path, "".join(line + "\n" for line in lines))


def finetune_choice(recipe: ChoiceRecipe, model_dir: Path, train_source: Path, dev_source: Path,
                    test_source: Path | None = None, seeds: int = 1, resume: bool = False,
                    console: Console | None = None) -> dict:
    """Fine-tune `model_dir` on the training examples `seeds` times, keep the best dev checkpoint, and write its
    dev (and test) predictions; returns what results.json holds."""
    from accelerate import PartialState

    console = console or Console(stderr=True)
    is_main = PartialState().is_main_process
    settings = recipe.choice
    model_type = read_model_config(model_dir)["model_type"]
    tokenizer = Tokenizer.load(model_dir)
    out = Path(recipe.output.dir)
    check_output_dir(out, resume)
    data = {"train": load_examples(train_source), "dev": load_examples(dev_source)}
    if test_source is not None:
        data["test"] = load_examples(test_source)
    for split in ("train", "dev"):
        if data[split][0].label is None:
            raise ChoiceRunError(f"--{split}: {train_source if split == 'train' else dev_source} has no labels")
    counts = {split: len(examples[0].choices) for split, examples in data.items()}
    if len(set(counts.values())) > 1:
        raise ChoiceRunError(f"the files have different numbers of choices: {counts}; one model scores one count")

    def new_model():
        if model_type == "electra" and settings.classifier_dropout is not None:  # its head's dropout is the summary's
            return load_model(model_dir, HEAD, summary_last_dropout=settings.classifier_dropout)
        return load_model(model_dir, HEAD, classifier_dropout=settings.classifier_dropout, in_float=True)

    positions = max_tokens(new_model())
    if settings.max_seq_length > positions:
        raise RecipeError(f"choice.max_seq_length: {settings.max_seq_length} exceeds the model's {positions} "
                          "positions")
    encoded = {split: encode_choices(examples, tokenizer, settings.max_seq_length) for split, examples in data.items()}
    if is_main:
        write_run_record(out, dump_yaml(recipe))

    objective = ChoiceObjective()

    def evaluate(model) -> dict:
        chosen = predict(model, encoded["dev"], settings.eval_batch_size, objective)
        return {"dev": {"accuracy": float((chosen == encoded["dev"].labels).float().mean())}}

    runs = finetune_seeds(
        FinetuneTask(name="choice", new_model=new_model, objective=objective, train_set=encoded["train"],
                     dev_splits=("dev",), evaluate=evaluate, primary=("dev", "accuracy")),
        EpochPlan(settings.epochs, settings.layerwise_lr_decay, settings.warmup_fraction),
        recipe.train, seeds, out / "choice", tokenizer, console, is_main)
    if not is_main:
        return {}
    best = load_model(out / "choice" / "best", HEAD).to(PartialState().device).eval()
    for split in ("dev", "test") if "test" in data else ("dev",):
        write_predictions(out / f"{split}_predictions.jsonl", data[split],
                          choice_probabilities(best, encoded[split], settings.eval_batch_size))
    results = {"recipe": recipe.name, "model": str(model_dir), "choices": counts["train"],
               **{f"{split}_examples": len(examples) for split, examples in data.items()}, **runs,
               "best_checkpoint": json.loads((out / "choice" / "best" / "eval.json").read_text())}
    write_json(out / RESULTS_FILE, results)
    accuracy = results["best_checkpoint"]["scores"]["dev"]["accuracy"]
    Console().print(f"dev accuracy of the best checkpoint ({len(data['dev'])} examples): {accuracy:.4f}")
    return results
