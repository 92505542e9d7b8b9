"""`encoderkit tokenizer train`: a SentencePiece tokenizer trained on a sample of a recipe's corpus."""

from __future__ import annotations

from pathlib import Path

from encoderkit.data.tokenizer import MODEL_FILE, Tokenizer, TokenizerError, train_on_corpus
from encoderkit.recipes import PretrainRecipe, RecipeError


def train_tokenizer(recipe: PretrainRecipe, out: Path) -> Tokenizer:
    """Train on recipe.data.source with the recipe's tokenizer section; write out/spiece.model."""
    if out.exists() and not out.is_dir():
        raise RecipeError(f"--out: '{out}' is a file; give a directory")
    if (out / MODEL_FILE).exists():
        raise RecipeError(f"--out: '{out / MODEL_FILE}' already exists; choose another directory")
    settings = recipe.tokenizer
    try:
        tokenizer = train_on_corpus(recipe.data.source, settings.vocab_size, settings.model_type,
                                    settings.sample_documents)
    except TokenizerError as err:
        raise RecipeError(f"tokenizer.vocab_size: {err}") from None
    tokenizer.save(out)
    return tokenizer
