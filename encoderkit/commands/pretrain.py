"""`encoderkit pretrain`: glue a recipe to its tokenizer, batch stream, model, objective and the loop.

The objective's row in objectives.PRETRAINING says which model it trains, where the run dir keeps it, which
head `model.init_from` loads and whether its examples are packed sequences or segment pairs.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from encoderkit.data.tokenizer import Tokenizer, TokenizerError, TokenizerNotFoundError, train_on_corpus
from encoderkit.objectives import PRETRAINING
from encoderkit.recipes import PretrainRecipe, RecipeError, dump_yaml, load_recipe, to_dict
from encoderkit.train.run_dir import CHECKPOINTS, METRICS_FILE, complete_checkpoint, latest_checkpoint, writing

# What a resume may change; every other key stays as the run's recipe.yaml records it.
RESUMABLE_KEYS = ("train.max_steps", "train.learning_rate", "train.max_grad_norm", "train.log_every",
                  "train.save_every", "train.keep_last", "train.max_nonfinite_steps", "output.dir")
RECIPE_FILE = "recipe.yaml"


def resume_recipe(name_or_path: str, overrides: list[str]) -> PretrainRecipe:
    """The recipe of the run in output.dir (its recorded recipe.yaml) with the overrides given now; a key
    that cannot change mid-run is refused. output.dir comes from the overrides or the named recipe."""
    run_dir = Path(load_recipe(name_or_path, overrides).output.dir)
    recorded = run_dir / RECIPE_FILE
    if not recorded.is_file():
        raise RecipeError(f"output.dir: nothing to resume in '{run_dir}' (no {RECIPE_FILE} of a run there)")
    before = _flat(to_dict(load_recipe(str(recorded))))
    recipe = load_recipe(str(recorded), overrides)
    recipe.output.dir = str(run_dir)
    after = _flat(to_dict(recipe))
    for key in sorted(set(before) | set(after)):
        if key not in RESUMABLE_KEYS and before.get(key) != after.get(key):
            raise RecipeError(f"{key}: the run in '{run_dir}' has {before.get(key)!r}, which cannot change on "
                              f"resume (these can: {', '.join(RESUMABLE_KEYS)}); start a new run in another "
                              "output.dir to change it")
    return recipe


def _flat(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_output_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse, before anything is written, an output.dir this run must not use."""
    if resume and overwrite:
        raise RecipeError("--resume and --overwrite: give one (continue the run, or start it again)")
    if run_dir.exists() and not run_dir.is_dir():
        raise RecipeError(f"output.dir: '{run_dir}' is a file; choose a directory")
    has_checkpoints = latest_checkpoint(run_dir, missing_ok=True) is not None
    if resume:
        if not has_checkpoints:
            raise RecipeError(f"output.dir: nothing to resume in '{run_dir}' (no {CHECKPOINTS}/step-*)")
        if complete_checkpoint(run_dir) is None:
            raise RecipeError(f"output.dir: no complete checkpoint in '{run_dir / CHECKPOINTS}' (each lacks its "
                              "manifest or a file of the size it lists); start a new run in another output.dir")
        return
    if overwrite or not run_dir.is_dir() or not any(run_dir.iterdir()):
        return
    if has_checkpoints:
        raise RecipeError(f"output.dir: '{run_dir}' already holds checkpoints; pass --resume to continue it, "
                          "--overwrite to start it again, or choose another output.dir")
    if (run_dir / RECIPE_FILE).is_file():
        raise RecipeError(f"output.dir: '{run_dir}' holds a run that stopped before its first checkpoint; pass "
                          "--overwrite to start it again, or choose another output.dir")
    raise RecipeError(f"output.dir: '{run_dir}' is not empty and holds no encoderkit run; choose a new or empty "
                      "directory, or pass --overwrite to write the run into it")


def clear_run(run_dir: Path) -> None:
    """--overwrite: the earlier run's checkpoints and metrics go (its other files are written over)."""
    import shutil

    checkpoints = run_dir / CHECKPOINTS
    with writing(run_dir):
        if checkpoints.is_dir():
            trash = run_dir / f".deleted-{CHECKPOINTS}"  # renamed first: never a half-deleted step-* to resume
            shutil.rmtree(trash, ignore_errors=True)
            checkpoints.rename(trash)
            shutil.rmtree(trash)
        (run_dir / METRICS_FILE).unlink(missing_ok=True)


def prepare_tokenizer(recipe: PretrainRecipe, run_dir: Path, console: Console, from_run_dir: bool) -> Tokenizer:
    """The checkpoint's own (model.init_from), the recipe's tokenizer, the run's own (`from_run_dir`: on resume,
    or a process that waited for the main one to train it), or a new one trained on the corpus and saved (an
    earlier file there is not reused)."""
    if recipe.model.init_from:
        return checkpoint_tokenizer(recipe)
    if recipe.tokenizer.path:
        return Tokenizer.load(recipe.tokenizer.path)
    if from_run_dir:
        return Tokenizer.load(run_dir)
    settings = recipe.tokenizer
    console.log(f"training a {settings.model_type} tokenizer ({settings.vocab_size} pieces) "
                f"on up to {settings.sample_documents} documents of '{recipe.data.source}'")
    try:
        tokenizer = train_on_corpus(recipe.data.source, settings.vocab_size, settings.model_type,
                                    settings.sample_documents)
    except TokenizerError as err:
        raise RecipeError(f"tokenizer.vocab_size: {err}") from None
    with writing(run_dir):
        tokenizer.save(run_dir)
    return tokenizer


def checkpoint_tokenizer(recipe: PretrainRecipe) -> Tokenizer:
    """model.init_from's tokenizer, used as it is: its ids must fit the checkpoint's vocabulary."""
    where = Path(recipe.model.init_from) / PRETRAINING[recipe.objective].init_config_dir
    try:
        tokenizer = Tokenizer.load(where)
    except TokenizerNotFoundError as err:
        raise RecipeError(f"model.init_from: {err}; continued pretraining uses the checkpoint's own tokenizer, so "
                          "copy it into that dir") from None
    except TokenizerError as err:
        raise RecipeError(f"model.init_from: {err}") from None
    if tokenizer.vocab_size > recipe.model.config.vocab_size:
        raise RecipeError(f"model.init_from: the tokenizer in '{where}' has {tokenizer.vocab_size} pieces, more than "
                          f"the model's vocab_size {recipe.model.config.vocab_size}: not this model's tokenizer")
    return tokenizer


def follow_tokenizer(recipe: PretrainRecipe, vocab_size: int) -> None:
    """Set model.vocab_size to the tokenizer's, so the model and the recorded recipe say what ran; a recipe
    file that names another size is refused."""
    stated = recipe.model.stated_vocab_size
    if stated is not None and stated != vocab_size:
        raise RecipeError(f"model.vocab_size: {stated}, but the tokenizer has {vocab_size} pieces; remove "
                          "model.vocab_size from the recipe (it follows the tokenizer)")
    recipe.model.config.vocab_size = recipe.model.stated_vocab_size = vocab_size


def build_model(recipe: PretrainRecipe):
    """A new model of the recipe's shape, or (model.init_from) the checkpoint's weights; heads the checkpoint
    lacks (ALBERT's sentence-order classifier in a masked-LM dir) start fresh."""
    from encoderkit.models.load import ModelDirError, load_model

    spec = PRETRAINING[recipe.objective]
    if not recipe.model.init_from:
        return spec.build_model(recipe.model.config, recipe.settings)
    try:
        return load_model(recipe.model.init_from, spec.init_head).train()
    except ModelDirError as err:
        raise RecipeError(f"model.init_from: {err}") from None


def dry_run(recipe: PretrainRecipe, console: Console) -> None:
    from rich.table import Table

    from encoderkit.models.hf_format import parameter_breakdown

    if not recipe.model.init_from:
        path = recipe.tokenizer.path
        follow_tokenizer(recipe, Tokenizer.load(path).vocab_size if path else recipe.tokenizer.vocab_size)
    counts = parameter_breakdown(build_model(recipe))
    console.print(dump_yaml(recipe), end="", markup=False, highlight=False)
    table = Table(title="parameters")
    table.add_column("part")
    table.add_column("count", justify="right")
    for part, count in counts.items():
        table.add_row(part, f"{count:,}")
    console.print(table)


def pretrain(recipe: PretrainRecipe, resume: bool = False, overwrite: bool = False,
             console: Console | None = None) -> Path:
    import torch

    from encoderkit.data.corpus import CorpusError
    from encoderkit.data.stream import PretrainBatches
    from encoderkit.models.hf_format import save_pretrained
    from encoderkit.train.loop import make_accelerator, train
    from encoderkit.train.run_dir import write_run_record

    console = console or Console(stderr=True)
    spec = PRETRAINING[recipe.objective]
    run_dir = Path(recipe.output.dir)
    check_output_dir(run_dir, resume, overwrite)
    accelerator = make_accelerator(recipe.train.mixed_precision, run_dir)
    accelerator.wait_for_everyone()  # every process has checked output.dir before the main one writes there
    if overwrite and accelerator.is_main_process:
        clear_run(run_dir)
    micro_batch = recipe.train.batch_size // recipe.train.gradient_accumulation_steps
    data = recipe.data
    try:
        # One process trains the tokenizer; the others then load it from the run dir.
        with accelerator.main_process_first():
            tokenizer = prepare_tokenizer(recipe, run_dir, console, resume or not accelerator.is_main_process)
        hold_out = (data.validation, data.validation_seed) if isinstance(data.validation, float) else None
        warmup = data.length_warmup_steps * recipe.train.gradient_accumulation_steps  # in micro-batches
        batches = PretrainBatches(data.source, tokenizer, **stream_options(recipe), batch_size=micro_batch,
                                  seed=recipe.train.seed, hold_out=hold_out,
                                  length_warmup=(data.length_warmup_first, warmup) if warmup else None)
    except CorpusError as err:
        raise RecipeError(f"data.source: {err}") from None
    held_out = held_out_batches(recipe, tokenizer)
    if not recipe.model.init_from:
        follow_tokenizer(recipe, tokenizer.vocab_size)
    if accelerator.is_main_process:
        write_run_record(run_dir, dump_yaml(recipe))
    torch.manual_seed(recipe.train.seed)  # the same initial weights in every process and every run
    model = build_model(recipe)
    objective = spec.build_objective(recipe.model.config.vocab_size, recipe.settings, recipe.train.seed)
    evaluate = (lambda model, step: objective.evaluate(model, held_out, step)) if held_out else None
    result = train(model, objective, batches, recipe.train, run_dir, resume=resume, console=console,
                   accelerator=accelerator, evaluate=evaluate, eval_every=recipe.train.eval_every,
                   evaluate_at_start=True)
    if not accelerator.is_main_process:
        return run_dir

    with writing(run_dir):
        save_pretrained(result.model, run_dir)
        for model_dir in spec.model_dirs:
            tokenizer.save(run_dir / model_dir)
    shown = [key for key, _ in (("loss", ""), *objective.shown_metrics)]
    summary = ", ".join(f"{k} {result.last_metrics[k]:.3f}" for k in shown if k in result.last_metrics)
    # Beside each held-out accuracy, the one where the input hid the token (`*_acc_hidden`): the chosen tokens left
    # unchanged can be answered by copying them, so only that one shows whether the model reads the context.
    held_out = [name for k in shown for name in dict.fromkeys((k, k.replace("_acc", "_acc_hidden")))
                if f"eval_{name}" in result.last_metrics]
    if held_out:
        summary += "; held-out: " + ", ".join(f"{k} {result.last_metrics[f'eval_{k}']:.3f}" for k in held_out)
    console.log(f"saved the model to {run_dir} after {result.step} steps ({summary})")
    return run_dir


def stream_options(recipe: PretrainRecipe) -> dict:
    """The PretrainBatches settings the training and the held-out streams share."""
    data = recipe.data
    return dict(max_seq_length=data.max_seq_length, short_seq_prob=data.short_seq_prob,
                masked_lm_prob=data.masked_lm_prob, max_ngram=data.max_ngram, masking=data.masking,
                mask_token_prob=data.mask_token_prob, random_token_prob=data.random_token_prob,
                sentence_order=data.sentence_order, packed=PRETRAINING[recipe.objective].packed)


def held_out_batches(recipe: PretrainRecipe, tokenizer: Tokenizer) -> list[dict] | None:
    """data.validation as a fixed list of masked batches (masked once, with a seed of their own, so every
    evaluation sees the same), at most data.validation_batches; None without data.validation."""
    from itertools import islice

    from encoderkit.data.corpus import CorpusError
    from encoderkit.data.stream import PretrainBatches

    data = recipe.data
    if data.validation is None:
        return None
    if isinstance(data.validation, float):
        source, split, hold_out = data.source, "train", (data.validation, data.validation_seed)
        what = f"the {data.validation:g} of data.source's documents held out"
    else:
        source, split, hold_out = data.validation, data.validation_split, None
        what = f"'{data.validation}'"
    try:
        stream = PretrainBatches(source, tokenizer, **stream_options(recipe), batch_size=recipe.train.batch_size,
                                 seed=data.validation_seed, split=split, hold_out=hold_out, held_out=True,
                                 max_passes=1)
    except CorpusError as err:
        raise RecipeError(f"data.validation: {err}") from None
    try:
        batches = list(islice(stream, data.validation_batches))
    except CorpusError:  # a pass without a single example
        batches = []
    if not batches:
        raise RecipeError(f"data.validation: {what} give no documents to evaluate on; hold out a larger fraction "
                          "or give other files")
    return batches
