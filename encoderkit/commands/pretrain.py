"""`encoderkit pretrain`: glue a recipe to its tokenizer, batch stream, model, objective and the loop."""

from __future__ import annotations

import itertools
from pathlib import Path

from rich.console import Console

from encoderkit.recipes import PretrainRecipe, RecipeError, dump_yaml


def prepare_tokenizer(recipe: PretrainRecipe, run_dir: Path, console: Console):
    """The recipe's tokenizer, the run's own (on resume), or a new one trained on the corpus."""
    from encoderkit.data.corpus import iter_documents
    from encoderkit.data.tokenizer import Tokenizer

    if recipe.tokenizer.path:
        return Tokenizer.load(recipe.tokenizer.path)
    if (run_dir / "spiece.model").is_file():
        return Tokenizer.load(run_dir)
    n = recipe.tokenizer.sample_documents
    console.log(f"training a {recipe.tokenizer.model_type} tokenizer ({recipe.tokenizer.vocab_size} pieces) "
                f"on up to {n} documents of '{recipe.data.source}'")
    documents = itertools.islice(iter_documents(recipe.data.source), n)
    sentences = (sentence for doc in documents for sentence in doc)
    tokenizer = Tokenizer.train(sentences, recipe.tokenizer.vocab_size, model_type=recipe.tokenizer.model_type)
    tokenizer.save(run_dir)
    return tokenizer


def build_model(recipe: PretrainRecipe, vocab_size: int):
    from encoderkit.models.albert import AlbertForPreTraining

    # The vocabulary size always follows the tokenizer.
    recipe.model.config.vocab_size = vocab_size
    return AlbertForPreTraining(recipe.model.config)


def dry_run(recipe: PretrainRecipe, console: Console) -> None:
    from rich.table import Table

    from encoderkit.models.hf_format import parameter_breakdown

    vocab = recipe.tokenizer.vocab_size
    if recipe.tokenizer.path:
        from encoderkit.data.tokenizer import Tokenizer

        vocab = Tokenizer.load(recipe.tokenizer.path).vocab_size
    counts = parameter_breakdown(build_model(recipe, vocab))
    console.print(dump_yaml(recipe), end="", markup=False, highlight=False)
    table = Table(title="parameters")
    table.add_column("part")
    table.add_column("count", justify="right")
    for part, count in counts.items():
        table.add_row(part, f"{count:,}")
    console.print(table)


def pretrain(recipe: PretrainRecipe, resume: bool = False, console: Console | None = None) -> Path:
    from encoderkit.data.stream import PretrainBatches
    from encoderkit.models.hf_format import save_pretrained
    from encoderkit.objectives.mlm_sop import MlmSopObjective
    from encoderkit.train.loop import latest_checkpoint, train, write_run_record

    console = console or Console(stderr=True)
    run_dir = Path(recipe.output.dir)
    has_checkpoints = latest_checkpoint(run_dir, missing_ok=True) is not None
    if resume and not has_checkpoints:
        raise RecipeError(f"output.dir: nothing to resume in '{run_dir}' (no checkpoints/step-*)")
    if not resume and has_checkpoints:
        raise RecipeError(
            f"output.dir: '{run_dir}' already holds checkpoints; pass --resume to continue it "
            "or choose another output.dir"
        )
    write_run_record(run_dir, dump_yaml(recipe))

    tokenizer = prepare_tokenizer(recipe, run_dir, console)
    model = build_model(recipe, tokenizer.vocab_size)
    micro_batch = recipe.train.batch_size // recipe.train.gradient_accumulation_steps
    batches = PretrainBatches(
        recipe.data.source,
        tokenizer,
        batch_size=micro_batch,
        max_seq_length=recipe.data.max_seq_length,
        seed=recipe.train.seed,
        short_seq_prob=recipe.data.short_seq_prob,
        masked_lm_prob=recipe.data.masked_lm_prob,
        max_ngram=recipe.data.max_ngram,
    )
    objective = MlmSopObjective(tokenizer.vocab_size)
    result = train(model, objective, batches, recipe.train, run_dir, resume=resume, console=console)

    save_pretrained(result.model, run_dir)
    tokenizer.save(run_dir)
    summary = ", ".join(f"{k} {result.last_metrics[k]:.3f}"
                        for k in ("loss", "mlm_acc", "unigram_acc", "sop_acc") if k in result.last_metrics)
    console.log(f"saved the model to {run_dir} after {result.step} steps ({summary})")
    return run_dir
