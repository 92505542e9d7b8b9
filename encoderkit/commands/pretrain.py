"""`encoderkit pretrain`: glue a recipe to its tokenizer, batch stream, model, objective and the loop."""

from __future__ import annotations

import dataclasses
import itertools
import re
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
    try:
        tokenizer = Tokenizer.train(sentences, recipe.tokenizer.vocab_size, model_type=recipe.tokenizer.model_type)
    except RuntimeError as err:  # sentencepiece: e.g. more pieces asked for than the sample holds
        limit = re.search(r"value <= (\d+)", str(err))
        hint = f"; this corpus sample allows at most {limit.group(1)}" if limit else f" ({err})"
        raise RecipeError(f"tokenizer.vocab_size: cannot train {recipe.tokenizer.vocab_size} pieces{hint}") from None
    tokenizer.save(run_dir)
    return tokenizer


def build_model(recipe: PretrainRecipe, vocab_size: int):
    """ALBERT for MLM+SOP; ELECTRA's generator + discriminator (shared embeddings) for RTD."""
    # The vocabulary size always follows the tokenizer.
    config = recipe.model.config
    config.vocab_size = vocab_size
    if recipe.objective == "rtd":
        from encoderkit.models.electra import ElectraGeneratorDiscriminator

        return ElectraGeneratorDiscriminator(generator_config(config, recipe.rtd.generator_size_multiplier), config)
    from encoderkit.models.albert import AlbertForPreTraining

    return AlbertForPreTraining(config)


def generator_config(discriminator, multiplier: float):
    """The generator: same depth and embeddings, `multiplier` x the hidden size, heads and FFN size."""
    return dataclasses.replace(
        discriminator,
        hidden_size=max(1, round(discriminator.hidden_size * multiplier)),
        num_attention_heads=max(1, round(discriminator.num_attention_heads * multiplier)),
        intermediate_size=max(1, round(discriminator.intermediate_size * multiplier)),
    )


def build_objective(recipe: PretrainRecipe, vocab_size: int):
    if recipe.objective == "rtd":
        from encoderkit.objectives.rtd import ReplacedTokenDetectionObjective

        return ReplacedTokenDetectionObjective(vocab_size, recipe.rtd.discriminator_weight, recipe.rtd.temperature,
                                               seed=recipe.train.seed)
    from encoderkit.objectives.mlm_sop import MlmSopObjective

    return MlmSopObjective(vocab_size)


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
    import torch
    from accelerate import Accelerator

    from encoderkit.data.corpus import CorpusError
    from encoderkit.data.stream import PretrainBatches
    from encoderkit.models.hf_format import save_pretrained
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
    accelerator = Accelerator(mixed_precision=recipe.train.mixed_precision)
    micro_batch = recipe.train.batch_size // recipe.train.gradient_accumulation_steps
    try:
        # One process trains the tokenizer; the others then load it from the run dir.
        with accelerator.main_process_first():
            tokenizer = prepare_tokenizer(recipe, run_dir, console)
        batches = PretrainBatches(
            recipe.data.source,
            tokenizer,
            batch_size=micro_batch,
            max_seq_length=recipe.data.max_seq_length,
            seed=recipe.train.seed,
            short_seq_prob=recipe.data.short_seq_prob,
            masked_lm_prob=recipe.data.masked_lm_prob,
            max_ngram=recipe.data.max_ngram,
            masking=recipe.data.masking,
            mask_token_prob=recipe.data.mask_token_prob,
            random_token_prob=recipe.data.random_token_prob,
            sentence_order=recipe.data.sentence_order,
        )
    except CorpusError as err:
        raise RecipeError(f"data.source: {err}") from None
    if accelerator.is_main_process:
        write_run_record(run_dir, dump_yaml(recipe))
    torch.manual_seed(recipe.train.seed)  # the same initial weights in every process and every run
    model = build_model(recipe, tokenizer.vocab_size)
    objective = build_objective(recipe, tokenizer.vocab_size)
    result = train(model, objective, batches, recipe.train, run_dir, resume=resume, console=console,
                   accelerator=accelerator)
    if not accelerator.is_main_process:
        return run_dir

    # ALBERT: the run dir is the model dir. ELECTRA: run_dir/generator and run_dir/discriminator.
    save_pretrained(result.model, run_dir)
    for model_dir in [run_dir] if recipe.objective == "mlm_sop" else [run_dir / "generator", run_dir / "discriminator"]:
        tokenizer.save(model_dir)
    shown = ("loss", "mlm_acc", "unigram_acc", "sop_acc", "gen_acc", "disc_auc", "disc_recall")
    summary = ", ".join(f"{k} {result.last_metrics[k]:.3f}" for k in shown if k in result.last_metrics)
    console.log(f"saved the model to {run_dir} after {result.step} steps ({summary})")
    return run_dir
