"""`encoderkit finetune tokens`: token classification (NER, POS, chunking) on the user's tagged files or a hub
dataset, through the generic seed loop of train/finetune.py.

The run dir (output.dir):
  recipe.yaml, versions.json   the run record
  results.json                 the tags, each seed's validation scores at its best epoch, their median, min and
                               max, and the best checkpoint's per-entity-type table (BIO / BIOES tags)
  best/                        the best validation checkpoint over all epochs and seeds: Hugging Face format
                               (tag names in config.json's id2label), the tokenizer, eval.json
  seed-<n>/                    one seed's loop run dir (metrics.jsonl, result.json)
  predictions/test.conll       with a test file: each word and its predicted tag, a blank line between sentences
"""

from __future__ import annotations

import json
from pathlib import Path

from accelerate import PartialState
from rich.console import Console

from encoderkit.commands.report import per_class_table, seed_statistics, seeds_table
from encoderkit.data.classification import iter_batches
from encoderkit.data.entities import entity_scores, is_entity_tagging
from encoderkit.data.tokenizer import Tokenizer
from encoderkit.data.tokens import TaggedSentence, encode_tagged, tag_vocabulary
from encoderkit.files import write_json, write_text
from encoderkit.models.load import load_model, max_tokens, read_model_config
from encoderkit.objectives.token_classification import TokenClassificationObjective
from encoderkit.recipes import FinetuneRecipe, RecipeError, dump_yaml
from encoderkit.train.evaluate import predict_tags, score_tagging
from encoderkit.train.finetune import EpochPlan, FinetuneTask, check_output_dir, finetune_seeds
from encoderkit.train.run_dir import write_run_record

RESULTS_FILE = "results.json"
HEAD = "token_classification"


def tag_lines(sentences: list[TaggedSentence], predicted: list[list[str]]) -> str:
    """CoNLL: word TAB tag per line, a blank line after each sentence."""
    return "".join("".join(f"{word}\t{tag}\n" for word, tag in zip(s.words, tags, strict=True)) + "\n"
                   for s, tags in zip(sentences, predicted, strict=True))


def finetune_tokens(recipe: FinetuneRecipe, model_dir: Path, data: dict[str, list[TaggedSentence]],
                    label_all_pieces: bool = False, seeds: int = 1, resume: bool = False,
                    console: Console | None = None) -> dict:
    """Fine-tune `model_dir` on {train, validation, test?} tagged sentences; returns what results.json holds."""
    console = console or Console(stderr=True)
    is_main = PartialState().is_main_process
    settings = recipe.finetune
    read_model_config(model_dir)
    tokenizer = Tokenizer.load(model_dir)
    out = Path(recipe.output.dir)
    check_output_dir(out, resume)
    tags = tag_vocabulary(data["train"], {split: data[split] for split in data if split != "train"})
    with_entities = is_entity_tagging(tags)

    def new_model():
        return load_model(model_dir, HEAD, classifier_dropout=settings.classifier_dropout, in_float=True,
                          num_labels=len(tags), id2label=dict(enumerate(tags)))

    positions = max_tokens(new_model())  # a checkpoint with another tag count fails here, before any writing
    if settings.max_seq_length > positions:
        raise RecipeError(f"finetune.max_seq_length: {settings.max_seq_length} exceeds the model's "
                          f"{positions} positions")
    encoded = {split: encode_tagged(sentences, tokenizer, settings.max_seq_length, tags,
                                    label_all_pieces and split == "train")
               for split, sentences in data.items()}
    true = [sentence.tags for sentence in data["validation"]]

    def tag_names(model, split: str) -> list[list[str]]:
        return [[tags[i] for i in sentence] for sentence in
                predict_tags(model, encoded[split], settings.eval_batch_size)]

    def evaluate(model) -> dict:
        return {"validation": score_tagging(model, encoded["validation"], true, tags, settings.eval_batch_size)}

    PartialState().wait_for_everyone()
    if is_main:
        write_run_record(out, dump_yaml(recipe))
    runs = finetune_seeds(
        FinetuneTask(name="tokens", new_model=new_model, objective=TokenClassificationObjective(),
                     train_set=encoded["train"], dev_splits=("validation",), evaluate=evaluate,
                     primary=("validation", "f1" if with_entities else "accuracy"), batcher=iter_batches),
        EpochPlan(settings.epochs, settings.layerwise_lr_decay, settings.warmup_fraction),
        recipe.train, seeds, out, tokenizer, console, is_main)
    if not is_main:
        return {}
    best = load_model(out / "best", HEAD).to(PartialState().device).eval()
    results = {"recipe": recipe.name, "model": str(model_dir), "tags": tags, **runs,
               **seed_statistics(["validation"], runs["seeds"]),
               "best_checkpoint": json.loads((out / "best" / "eval.json").read_text())}
    if with_entities:
        results["per_type"] = entity_scores(true, tag_names(best, "validation"))["per_type"]
    if "test" in data:
        path = out / "predictions" / "test.conll"
        write_text(path, tag_lines(data["test"], tag_names(best, "test")))
        results["predictions"] = str(path.relative_to(out))
    write_json(out / RESULTS_FILE, results)
    stdout = Console()
    stdout.print(seeds_table("token classification, validation, x100", "validation", results))
    if with_entities:
        stdout.print(per_class_table("best checkpoint, validation entities, x100", results["per_type"]))
    return results
