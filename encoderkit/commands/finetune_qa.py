"""`encoderkit finetune qa`: a pretrained encoder under a question-answering head, fine-tuned on SQuAD-format
data (v1.1, or v2.0 with unanswerable questions) through the fine-tuning seed loop; the best dev checkpoint by F1.

The run dir (output.dir):
  recipe.yaml, versions.json   the run record
  results.json                 the data (examples, features, skipped training examples), each seed's best epoch,
                               and the best checkpoint's official evaluation: exact and F1 (v1.1: exact_match,
                               f1; v2.0: exact, f1, HasAns_*, NoAns_*, best_exact/best_f1 and their thresholds)
  predictions.json             the best checkpoint's dev answers, {id: text}: the official scripts' input
  null_odds.json               v2.0: {id: null score - best answer's score}, the official --na-prob-file; an
                               answer is "" where its odds exceed best_f1_thresh, chosen on dev
  qa/best/                     the best dev checkpoint (Hugging Face format, the tokenizer, eval.json)
  qa/seed-<n>/                 each seed's training run (see encoderkit.train.finetune)
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from encoderkit.data.squad import QAExample, QAFeatures, answer_found, build_features, load_examples
from encoderkit.data.squad_eval import answers_from_logits, predictions_at_threshold, squad_v1_scores, squad_v2_scores
from encoderkit.data.tokenizer import Tokenizer
from encoderkit.files import write_json
from encoderkit.models.load import load_model, max_tokens, read_model_config
from encoderkit.objectives.question_answering import SpanObjective
from encoderkit.recipes import RecipeError, dump_yaml
from encoderkit.recipes.qa_choice import QAConfig, QARecipe
from encoderkit.train.evaluate import span_logits
from encoderkit.train.finetune import EpochPlan, FinetuneTask, check_output_dir, finetune_seeds
from encoderkit.train.run_dir import write_run_record

HEAD = "question_answering"
RESULTS_FILE = "results.json"


def dev_answers(model, examples: list[QAExample], features: QAFeatures, settings: QAConfig,
                version_2: bool) -> tuple[dict[str, str], dict[str, float] | None, dict[str, float]]:
    """The model's answers to the dev questions, their null odds (v2.0) and the official scores.

    v2.0: the null threshold is the one that maximises F1 on these questions (the official best_f1_thresh), and
    the answers are "" where the null odds exceed it, so that `f1` is `best_f1`.
    """
    start, end = span_logits(model, features.encoded, settings.eval_batch_size)
    predictions = answers_from_logits([e.context for e in examples], features.example_index, features.offsets,
                                      start, end, version_2, settings.n_best_size, settings.max_answer_length)
    ids = [e.id for e in examples]
    golds = {e.id: [answer.text for answer in e.answers] for e in examples}
    if not version_2:
        answers = predictions_at_threshold(ids, predictions)
        return answers, None, squad_v1_scores(golds, answers)
    null_odds = {id_: p.null_odds for id_, p in zip(ids, predictions, strict=True)}
    best = squad_v2_scores(golds, {id_: p.text for id_, p in zip(ids, predictions, strict=True)}, null_odds)
    answers = predictions_at_threshold(ids, predictions, best["best_f1_thresh"])
    scores = squad_v2_scores(golds, answers)
    scores.update({key: best[key] for key in ("best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh")})
    return answers, null_odds, scores


def finetune_qa(recipe: QARecipe, model_dir: Path, train_source: str, dev_source: str, seeds: int = 1,
                resume: bool = False, console: Console | None = None) -> dict:
    """Fine-tune `model_dir` on the training questions `seeds` times, keep the best dev checkpoint, and write its
    dev answers in the official formats; returns what results.json holds."""
    from accelerate import PartialState

    console = console or Console(stderr=True)
    is_main = PartialState().is_main_process
    settings = recipe.qa
    read_model_config(model_dir)
    tokenizer = Tokenizer.load(model_dir)
    out = Path(recipe.output.dir)
    check_output_dir(out, resume)
    # Everything is read and checked before anything is written: a bad file fails now and leaves output.dir alone.
    train_examples, train_v2 = load_examples(train_source)
    dev_examples, dev_v2 = load_examples(dev_source)
    version_2 = train_v2 or dev_v2
    usable = [example for example in train_examples if answer_found(example)]
    skipped = len(train_examples) - len(usable)
    if skipped:  # the original run_squad skips them too ("Could not find answer")
        console.log(f"skipped {skipped} training questions whose answer text is not at its answer_start")

    def new_model():
        return load_model(model_dir, HEAD, in_float=True, num_labels=2)

    positions = max_tokens(new_model())
    if settings.max_seq_length > positions:
        raise RecipeError(f"qa.max_seq_length: {settings.max_seq_length} exceeds the model's {positions} positions")
    train_features = build_features(usable, tokenizer, settings.max_seq_length, settings.doc_stride,
                                    settings.max_query_length, training=True)
    dev_features = build_features(dev_examples, tokenizer, settings.max_seq_length, settings.doc_stride,
                                  settings.max_query_length, training=False)
    if is_main:
        write_run_record(out, dump_yaml(recipe))

    def evaluate(model) -> dict:
        return {"dev": dev_answers(model, dev_examples, dev_features, settings, version_2)[2]}

    runs = finetune_seeds(
        FinetuneTask(name="qa", new_model=new_model, objective=SpanObjective(),
                     train_set=train_features.encoded, dev_splits=("dev",), evaluate=evaluate, primary=("dev", "f1")),
        EpochPlan(settings.epochs, settings.layerwise_lr_decay, settings.warmup_fraction),
        recipe.train, seeds, out / "qa", tokenizer, console, is_main)
    if not is_main:
        return {}
    best = load_model(out / "qa" / "best", HEAD).to(PartialState().device).eval()
    answers, null_odds, scores = dev_answers(best, dev_examples, dev_features, settings, version_2)
    write_json(out / "predictions.json", answers)
    if null_odds is not None:
        write_json(out / "null_odds.json", null_odds)
    results = {"recipe": recipe.name, "model": str(model_dir), "squad_version": "2.0" if version_2 else "1.1",
               "train_questions": len(train_examples), "skipped_train_questions": skipped,
               "train_features": len(train_features), "dev_questions": len(dev_examples),
               "dev_features": len(dev_features), **runs,
               "best_checkpoint": json.loads((out / "qa" / "best" / "eval.json").read_text()), "dev": scores}
    write_json(out / RESULTS_FILE, results)
    shown = {key: round(value, 2) for key, value in scores.items() if not key.endswith("total")}
    Console().print(f"dev ({len(dev_examples)} questions, SQuAD {results['squad_version']}): {shown}")
    return results
