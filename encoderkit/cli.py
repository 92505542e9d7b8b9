"""The `encoderkit` command line: parse, load the recipe, call a command. Nothing else.

Heavy imports (torch, datasets) happen inside the commands so that `--help` and small
commands start fast. Usage errors print one line and exit with code 2.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import typer

app = typer.Typer(
    help="Pretrain, fine-tune, quantize and use compact encoders (ALBERT, ELECTRA, I-BERT).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
tokenizer_app = typer.Typer(help="Train SentencePiece or byte-level BPE tokenizers.", no_args_is_help=True)
recipes_app = typer.Typer(help="List, show and validate recipes.", no_args_is_help=True)
finetune_app = typer.Typer(help="Fine-tune a pretrained encoder on downstream tasks.", no_args_is_help=True)
app.add_typer(tokenizer_app, name="tokenizer")
app.add_typer(recipes_app, name="recipes")
app.add_typer(finetune_app, name="finetune")

OVERRIDES = typer.Argument(None, help="Dotted overrides such as train.max_steps=100 output.dir=runs/x.")
# The stdin commands' shared options (encoderkit.commands.lines checks their values).
BATCH_SIZE_HELP = ("Lines per forward pass; lines are read ahead (only what has arrived) and sorted by length, "
                   "answers come in input order.")
DEVICE_HELP = "cpu, cuda or auto (cuda if there is one)."
DTYPE_HELP = "fp32, bf16 or fp16: the float type the model computes in."


def _fail(message: str, code: int = 2):
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@app.command(epilog="Example: encoderkit pretrain albert-tiny train.max_steps=200 output.dir=runs/demo")
def pretrain(
    recipe: str = typer.Argument(..., help="A recipe YAML file or a bundled recipe name (see `recipes ls`)."),
    overrides: list[str] = OVERRIDES,
    resume: bool = typer.Option(False, "--resume", help="Continue the run in output.dir from its newest complete "
                                "checkpoint, with its recorded recipe.yaml and only the overrides given now."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start a new run in an output.dir that is not empty "
                                   "(an earlier run's checkpoints and metrics there are deleted)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved recipe and parameter counts, then exit."),
):
    """Pretrain a model from a recipe; the run dir ends up holding a Hugging Face checkpoint."""
    from rich.console import Console

    from encoderkit.commands import pretrain as command
    from encoderkit.recipes import load_recipe

    recipe_obj = command.resume_recipe(recipe, overrides or []) if resume else load_recipe(recipe, overrides or [])
    if dry_run:
        command.dry_run(recipe_obj, Console())
        return
    command.pretrain(recipe_obj, resume=resume, overwrite=overwrite)


@app.command("fill-mask", epilog='Example: echo "The capital of France is [MASK]." | '
                                  "encoderkit fill-mask --model runs/albert-tiny --top-k 5")
def fill_mask(
    model: Path = typer.Option(..., "--model", help="Model dir: config.json, model.safetensors, a tokenizer."),
    top_k: int = typer.Option(5, "--top-k", min=1, help="Candidates per [MASK]."),
    fmt: str = typer.Option("text", "--format", help="text or jsonl (one JSON object per input line)."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help=BATCH_SIZE_HELP),
    device: str = typer.Option("cpu", "--device", help=DEVICE_HELP),
    dtype: str = typer.Option("fp32", "--dtype", help=DTYPE_HELP),
):
    """Read lines from stdin and print the top-k fillings of each [MASK] (the model's own mask token).

    A line that cannot be answered gets one `line N: ...` on stderr; the others are answered; exit code 1."""
    from encoderkit.commands.fill_mask import run

    _check_format(fmt)
    if run(model, sys.stdin.buffer, top_k, fmt, batch_size=batch_size, device=device, dtype=dtype):
        raise typer.Exit(1)


@app.command(epilog='Example: echo "The cat sat on the mat." | encoderkit rtd --model runs/electra-tiny/discriminator')
def rtd(
    model: Path = typer.Option(..., "--model", help="An ELECTRA discriminator directory."),
    fmt: str = typer.Option("text", "--format", help="text or jsonl (one JSON object per input line)."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help=BATCH_SIZE_HELP),
    device: str = typer.Option("cpu", "--device", help=DEVICE_HELP),
    dtype: str = typer.Option("fp32", "--dtype", help=DTYPE_HELP),
):
    """Read lines from stdin and print, for each token, the probability that it was replaced."""
    from encoderkit.commands.rtd import run

    _check_format(fmt)
    if run(model, sys.stdin.buffer, fmt, batch_size=batch_size, device=device, dtype=dtype):
        raise typer.Exit(1)


def _recipe_and_overrides(recipe: str, overrides: list[str] | None, default: str) -> tuple[str, list[str]]:
    """A recipe argument that is really the first override (`key=value`) means "the default recipe"."""
    if "=" in recipe:
        return default, [recipe, *(overrides or [])]
    return recipe, overrides or []


def _check_format(fmt: str) -> None:
    if fmt not in ("text", "jsonl"):
        _fail(f"--format: '{fmt}' is not one of: text, jsonl")


@tokenizer_app.command("train", epilog="Example: encoderkit tokenizer train albert-tiny tokenizer.vocab_size=8000 "
                                        "--out runs/tok")
def tokenizer_train(
    recipe: str = typer.Argument(..., help="The recipe whose data.source and tokenizer section to use."),
    overrides: list[str] = OVERRIDES,
    out: Path = typer.Option(..., "--out", help="Directory to write the tokenizer's files into."),
):
    """Train a SentencePiece tokenizer (ALBERT's special tokens) on a sample of the recipe's corpus, or with
    tokenizer.model_type=byte_bpe a byte-level BPE (RoBERTa's: vocab.json + merges.txt, <s> </s> <pad> <mask>)."""
    from encoderkit.commands.tokenizer import train_tokenizer
    from encoderkit.recipes import load_recipe

    tokenizer = train_tokenizer(load_recipe(recipe, (overrides or []) + ["tokenizer.path="]), out)
    typer.echo(f"wrote {out / tokenizer.files[0]} ({tokenizer.vocab_size} pieces)")


@finetune_app.command("glue", epilog="Example: encoderkit finetune glue --task rte --model runs/electra-small "
                                      "--data-dir glue_data glue-electra-small output.dir=runs/rte --seeds 5")
def finetune_glue(
    recipe: str = typer.Argument("glue-electra-small", help="A fine-tuning recipe YAML file or bundled name "
                                 "(glue-electra-small, glue-electra-base, glue-albert-base, glue-roberta-base)."),
    overrides: list[str] = OVERRIDES,
    task: str = typer.Option(..., "--task", help="cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli, or all."),
    model: Path = typer.Option(..., "--model", help="A model dir in Hugging Face format with its tokenizer "
                               "(ALBERT, ELECTRA discriminator, BERT, RoBERTa or I-BERT)."),
    data_dir: Path = typer.Option(None, "--data-dir", help="The GLUE download (CoLA/, SST-2/, ... with their TSV "
                                  "files); without it the nyu-mll/glue dataset comes from the hub."),
    seeds: int = typer.Option(1, "--seeds", min=1, help="Fine-tune N times (seeds train.seed, +1, ...); "
                              "report the median and range."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in output.dir: finished seeds are kept, "
                                "an interrupted one resumes from its last epoch."),
):
    """Fine-tune on GLUE: best dev checkpoint, test predictions in GLUE's format, and a table beside the
    published scores."""
    from encoderkit.commands.finetune import finetune_glue as command
    from encoderkit.recipes import load_finetune_recipe

    recipe, overrides = _recipe_and_overrides(recipe, overrides, "glue-electra-small")
    command(load_finetune_recipe(recipe, overrides), task, model, data_dir, seeds=seeds, resume=resume)


@finetune_app.command("classify", epilog="Example: encoderkit finetune classify --model runs/electra-small "
                                          "--train train.csv --validation dev.csv --text-column review "
                                          "--label-column sentiment output.dir=runs/reviews")
def finetune_classify(
    recipe: str = typer.Argument("finetune-classify", help="A fine-tuning recipe YAML file or bundled name."),
    overrides: list[str] = OVERRIDES,
    model: Path = typer.Option(..., "--model", help="A pretrained model dir in Hugging Face format with its "
                               "tokenizer (ALBERT, ELECTRA, BERT, RoBERTa or I-BERT)."),
    train: Path = typer.Option(None, "--train", help="Training rows: .csv, .tsv, .jsonl or .parquet."),
    validation: Path = typer.Option(None, "--validation", help="Validation rows: the best checkpoint is picked "
                                    "on them."),
    test: Path = typer.Option(None, "--test", help="Rows to predict with the best checkpoint (labels optional)."),
    data: Path = typer.Option(None, "--data", help="One file holding every split, with --split-column."),
    split_column: str = typer.Option(None, "--split-column", help="--data's column naming each row's split "
                                     "(train, validation, test)."),
    hub: str = typer.Option(None, "--hub", help="A hub dataset (name or name:config) instead of files; needs a "
                            "network."),
    hub_splits: str = typer.Option("train,validation,test", "--hub-splits", help="The hub dataset's train, "
                                   "validation and (optional) test split names."),
    text_column: str = typer.Option("text", "--text-column", help="The text."),
    pair_column: str = typer.Option(None, "--pair-column", help="A second text (sentence pairs)."),
    label_column: str = typer.Option("label", "--label-column", help="The label: strings or integers (classes), "
                                     "floats (regression) or lists (multi-label)."),
    regression: bool = typer.Option(False, "--regression", help="Treat numeric labels as scores."),
    threshold: float = typer.Option(0.5, "--threshold", min=0.0, max=1.0, help="Multi-label: a class is "
                                    "predicted where its probability exceeds this."),
    seeds: int = typer.Option(1, "--seeds", min=1, help="Fine-tune N times (seeds train.seed, +1, ...); "
                              "report the median and range."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in output.dir."),
):
    """Sequence (pair) classification, multi-label classification or regression on your own files: label names
    in config.json, accuracy / macro-F1 / Matthews (multi-label: micro / macro F1; regression: Pearson /
    Spearman), per-class precision and recall."""
    from encoderkit.commands.finetune_classify import finetune_classify as command
    from encoderkit.commands.finetune_classify import read_splits
    from encoderkit.recipes import load_finetune_recipe

    recipe, overrides = _recipe_and_overrides(recipe, overrides, "finetune-classify")
    loaded = load_finetune_recipe(recipe, overrides)
    splits = tuple(name or None for name in hub_splits.split(","))
    rows = read_splits({"train": train, "validation": validation, "test": test}, data, split_column, hub, splits)
    command(loaded, model, rows, text_column, pair_column, label_column, regression=regression, threshold=threshold,
            seeds=seeds, resume=resume)


@finetune_app.command("tokens", epilog="Example: encoderkit finetune tokens --model runs/electra-small "
                                        "--train train.conll --validation dev.conll output.dir=runs/ner")
def finetune_tokens(
    recipe: str = typer.Argument("finetune-tokens", help="A fine-tuning recipe YAML file or bundled name."),
    overrides: list[str] = OVERRIDES,
    model: Path = typer.Option(..., "--model", help="A pretrained model dir in Hugging Face format with its "
                               "tokenizer (ALBERT, ELECTRA, BERT, RoBERTa or I-BERT)."),
    train: Path = typer.Option(None, "--train", help="Training sentences: CoNLL-style (a token per line, a blank "
                               "line between sentences) or .jsonl ({\"tokens\": [...], \"tags\": [...]})."),
    validation: Path = typer.Option(None, "--validation", help="Validation sentences, as --train: the best "
                                    "checkpoint is picked on them."),
    test: Path = typer.Option(None, "--test", help="Sentences to tag with the best checkpoint (tags optional)."),
    tag_column: int = typer.Option(-1, "--tag-column", help="CoNLL files: the tag's column, from 0 (-1: last)."),
    hub: str = typer.Option(None, "--hub", help="A hub dataset (name or name:config) with a tokens column "
                            "instead of files; needs a network."),
    hub_splits: str = typer.Option("train,validation,test", "--hub-splits", help="The hub dataset's train, "
                                   "validation and (optional) test split names."),
    hub_tags: str = typer.Option("ner_tags", "--hub-tags", help="The hub dataset's tag column."),
    label_all_pieces: bool = typer.Option(False, "--label-all-pieces", help="Train on every piece of a word "
                                          "(B- tags become I- after the first), not only on its first."),
    seeds: int = typer.Option(1, "--seeds", min=1, help="Fine-tune N times (seeds train.seed, +1, ...); "
                              "report the median and range."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in output.dir."),
):
    """Token classification (NER, POS, chunking): words aligned to subword pieces, entity-level F1 as
    seqeval computes it for BIO / BIOES tags, token accuracy otherwise."""
    from encoderkit.commands.finetune_tokens import finetune_tokens as command
    from encoderkit.data.tokens import read_tagged_splits
    from encoderkit.recipes import load_finetune_recipe

    recipe, overrides = _recipe_and_overrides(recipe, overrides, "finetune-tokens")
    splits = [name or None for name in hub_splits.split(",")]
    if len(splits) not in (2, 3):
        _fail(f"--hub-splits: {hub_splits!r}; give train,validation or train,validation,test")
    loaded = load_finetune_recipe(recipe, overrides)
    data = read_tagged_splits(train, validation, test, tag_column, hub, (*splits, None)[:3], hub_tags)
    command(loaded, model, data, label_all_pieces=label_all_pieces, seeds=seeds, resume=resume)


@finetune_app.command("qa", epilog="Example: encoderkit finetune qa squad-electra-small --model runs/electra-small "
                                    "--train train-v1.1.json --dev dev-v1.1.json output.dir=runs/squad")
def finetune_qa(
    recipe: str = typer.Argument("squad-electra-small", help="A question-answering recipe YAML file or bundled name."),
    overrides: list[str] = OVERRIDES,
    model: Path = typer.Option(..., "--model", help="A pretrained model dir in Hugging Face format with its tokenizer "
                               "(ALBERT, ELECTRA discriminator, BERT, RoBERTa, I-BERT)."),
    train: str = typer.Option(..., "--train", help="Training questions: a SQuAD .json (v1.1 or v2.0), a .jsonl "
                              "(id, question, context, answers), or from the hub squad:train / squad_v2:train."),
    dev: str = typer.Option(..., "--dev", help="Dev questions, as --train (e.g. dev-v2.0.json or squad:validation)."),
    seeds: int = typer.Option(1, "--seeds", min=1, help="Fine-tune N times (seeds train.seed, +1, ...)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in output.dir."),
):
    """Fine-tune for extractive question answering (SQuAD v1.1 / v2.0): the best dev checkpoint by F1, its
    predictions.json (and null_odds.json) in the official formats, and the official EM/F1."""
    from encoderkit.commands.finetune_qa import finetune_qa as command
    from encoderkit.recipes.qa_choice import load_qa_recipe

    recipe, overrides = _recipe_and_overrides(recipe, overrides, "squad-electra-small")
    command(load_qa_recipe(recipe, overrides), model, train, dev, seeds=seeds, resume=resume)


@finetune_app.command("choice", epilog="Example: encoderkit finetune choice swag-electra-small --model "
                                        "runs/electra-small --train train.csv --dev val.csv output.dir=runs/swag")
def finetune_choice(
    recipe: str = typer.Argument("swag-electra-small", help="A multiple-choice recipe YAML file or bundled name."),
    overrides: list[str] = OVERRIDES,
    model: Path = typer.Option(..., "--model", help="A pretrained model dir in Hugging Face format with its tokenizer "
                               "(ALBERT, ELECTRA discriminator, BERT, RoBERTa, I-BERT)."),
    train: Path = typer.Option(..., "--train", help="Training examples: a SWAG .csv (sent1, sent2, ending0.., label), "
                               "a RACE .json file or directory, or a .jsonl (context, choices, label)."),
    dev: Path = typer.Option(..., "--dev", help="Dev examples, as --train."),
    test: Path = typer.Option(None, "--test", help="Examples to predict (labels not needed), as --train."),
    seeds: int = typer.Option(1, "--seeds", min=1, help="Fine-tune N times (seeds train.seed, +1, ...)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in output.dir."),
):
    """Fine-tune for multiple choice (SWAG, RACE): the best dev checkpoint by accuracy and its predictions."""
    from encoderkit.commands.finetune_choice import finetune_choice as command
    from encoderkit.recipes.qa_choice import load_choice_recipe

    recipe, overrides = _recipe_and_overrides(recipe, overrides, "swag-electra-small")
    command(load_choice_recipe(recipe, overrides), model, train, dev, test, seeds=seeds, resume=resume)


@app.command(epilog="Examples: encoderkit quantize --model runs/rte/rte/best --task rte --data-dir glue_data "
                    "quantize-glue output.dir=runs/rte-int8 ; encoderkit quantize --model runs/ner --train train.conll "
                    "--validation dev.conll output.dir=runs/ner-int8")
def quantize(
    recipe: str = typer.Argument("quantize-glue", help="A quantization recipe YAML file or bundled name "
                                 "(quantize-glue: I-BERT's settings, for sequence and token classifiers)."),
    overrides: list[str] = OVERRIDES,
    model: Path = typer.Option(..., "--model", help="A fine-tuned classifier in Hugging Face format with its "
                               "tokenizer (BERT, ELECTRA, RoBERTa, ALBERT, I-BERT), e.g. the best/ dir of "
                               "`finetune glue`, or a `finetune tokens` run dir (its best/ is quantized)."),
    task: str = typer.Option(None, "--task", help="A sequence classifier's GLUE task: cola, sst2, mrpc, "
                             "stsb, qqp, mnli, qnli, rte, wnli."),
    data_dir: Path = typer.Option(None, "--data-dir", help="The GLUE download (CoLA/, SST-2/, ... with their TSV "
                                  "files); without it the nyu-mll/glue dataset comes from the hub."),
    train: Path = typer.Option(None, "--train", help="A token classifier's training sentences, as `finetune tokens` "
                               "reads them: CoNLL-style or .jsonl ({\"tokens\": [...], \"tags\": [...]})."),
    validation: Path = typer.Option(None, "--validation", help="A token classifier's validation sentences: the "
                                    "best QAT epoch is picked and every model scored on them."),
    tag_column: int = typer.Option(-1, "--tag-column", help="CoNLL files: the tag's column, from 0 (-1: last)."),
):
    """Quantization-aware fine-tuning with I-BERT, export to integer-only inference, and FP32 against quantized
    scores in one table: a sequence classifier on its GLUE task, or a token classifier on its tagged files."""
    from encoderkit.commands.quantize import quantize as command
    from encoderkit.recipes import load_quantize_recipe

    recipe, overrides = _recipe_and_overrides(recipe, overrides, "quantize-glue")
    command(load_quantize_recipe(recipe, overrides), model, task, data_dir, train, validation, tag_column)


@app.command(epilog='Example: printf "a gripping, funny film\\n" | encoderkit predict --model runs/sst2-int8/integer '
                    "--task sst2")
def predict(
    model: Path = typer.Option(..., "--model", help="A fine-tuned classifier dir (`finetune glue`'s best/, "
                               "`quantize`'s qat/) or an integer-only model dir (`quantize`'s integer/)."),
    task: str = typer.Option(None, "--task", help="The GLUE task the model was fine-tuned on: print its label "
                             "names instead of class indices."),
    max_seq_length: int = typer.Option(128, "--max-seq-length", min=3, help="Tokens per line, [CLS] and [SEP] "
                                       "included; longer texts are cut."),
    fmt: str = typer.Option("text", "--format", help="text or jsonl (one JSON object per input line)."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help=BATCH_SIZE_HELP),
    device: str = typer.Option("cpu", "--device", help=DEVICE_HELP),
    dtype: str = typer.Option("fp32", "--dtype", help=DTYPE_HELP),
):
    """Read sentences (or tab-separated pairs) from stdin and print each one's label and probability (a
    regression head: its score). A question-answering model reads JSON lines {"question", "context"} and prints
    the answer, its probability and character span; a multiple-choice model reads {"context", "choices"} and
    prints each choice's probability."""
    from encoderkit.commands.predict import run

    if run(model, sys.stdin.buffer, fmt, task=task, max_seq_length=max_seq_length, batch_size=batch_size,
           device=device, dtype=dtype):
        raise typer.Exit(1)


@app.command(epilog="Example: encoderkit plot runs/albert-tiny")
def plot(
    run_dir: Path = typer.Argument(..., help="A run dir holding metrics.jsonl."),
    out: Path = typer.Option(None, "--out", help="The PNG to write; default RUN_DIR/curves.png."),
):
    """Redraw a run's curves (loss and metrics against the step, training and held-out) from its metrics.jsonl."""
    from encoderkit.commands.plot import plot as draw

    typer.echo(f"wrote {draw(run_dir, out)}")


@recipes_app.command("ls")
def recipes_ls():
    """List the bundled recipes."""
    from encoderkit.recipes import bundled_names, load_finetune_recipe, load_recipe

    for name in bundled_names("pretrain"):
        typer.echo(f"{name}\t{load_recipe(name).objective}")
    for name in bundled_names("finetune"):
        typer.echo(f"{name}\t{load_finetune_recipe(name).kind}")
    for name in bundled_names("quantize"):
        typer.echo(f"{name}\tquantize")
    for kind in ("qa", "choice"):
        for name in bundled_names(kind):
            typer.echo(f"{name}\t{kind}")


@recipes_app.command("show", epilog="Example: encoderkit recipes show albert-tiny train.max_steps=10")
def recipes_show(name: str = typer.Argument(..., help="A bundled recipe name or a YAML file."),
                 overrides: list[str] = OVERRIDES):
    """Print the resolved recipe (defaults filled in, overrides applied)."""
    from encoderkit.recipes import dump_yaml, load_any_recipe

    typer.echo(dump_yaml(load_any_recipe(name, overrides or [])), nl=False)


@recipes_app.command("validate", epilog="Example: encoderkit recipes validate my-recipe.yaml")
def recipes_validate(path: str = typer.Argument(..., help="A recipe YAML file."),
                     overrides: list[str] = OVERRIDES):
    """Check a recipe: keys, types, ranges and files."""
    from encoderkit.recipes import load_any_recipe

    load_any_recipe(path, overrides or [])
    typer.echo(f"{path}: ok")


@recipes_app.command("cp", epilog="Example: encoderkit recipes cp albert-tiny my-albert.yaml && "
                                  "encoderkit pretrain my-albert.yaml")
def recipes_cp(name: str = typer.Argument(..., help="A bundled recipe name (see `recipes ls`)."),
               dest: str = typer.Argument(..., help="The file to write, or a directory (DEST/NAME.yaml).")):
    """Copy a bundled recipe to a file, to start your own from it; never overwrites a file."""
    from encoderkit.recipes import copy_bundled

    typer.echo(f"wrote {copy_bundled(name, dest)}")


def _print_version(value: bool) -> None:
    if not value:
        return
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("encoderkit")
    except PackageNotFoundError:  # run from a source tree that was never installed
        from encoderkit import __version__ as installed
    typer.echo(f"encoderkit {installed}")
    raise typer.Exit(0)


@app.callback()
def _app_options(
    show_version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                      help="Print the installed version and exit."),
):
    pass


def main() -> None:
    """Console entry point: known user errors become one line on stderr and exit code 2."""
    from encoderkit.errors import USER_ERRORS
    from encoderkit.runtime import tune_allocator, use_cpu_processes

    tune_allocator()
    use_cpu_processes()
    # Warnings (e.g. ELECTRA's collapse alarm) as one readable line, not a source excerpt.
    warnings.formatwarning = lambda message, category, *rest: f"warning: {message}\n"
    try:
        app()
    except USER_ERRORS as err:
        typer.echo(f"error: {f'{err.option}: ' if err.option else ''}{err}", err=True)
        sys.exit(2)
