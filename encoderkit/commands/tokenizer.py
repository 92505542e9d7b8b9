"""`encoderkit tokenizer train`: a SentencePiece tokenizer, or RoBERTa's byte-level BPE (tokenizer.model_type=byte_bpe),
trained on a sample of a recipe's corpus."""

from __future__ import annotations

from pathlib import Path

from encoderkit.data.tokenizer import MODEL_FILE, TOKENIZER_JSON, Tokenizer, TokenizerError, train_on_corpus
from encoderkit.recipes import PretrainRecipe, RecipeError


def train_tokenizer(recipe: PretrainRecipe, out: Path) -> Tokenizer:
    """Train on recipe.data.source with the recipe's tokenizer section; write its files (spiece.model, or
    tokenizer.json + vocab.json + merges.txt) into `out`."""
    if out.exists() and not out.is_dir():
        raise RecipeError(f"--out: '{out}' is a file; give a directory")
    for name in (MODEL_FILE, TOKENIZER_JSON, "vocab.json"):  # a tokenizer already there is never overwritten
        if (out / name).exists():
            raise RecipeError(f"--out: '{out / name}' already exists; choose another directory")
    settings = recipe.tokenizer
    try:
        tokenizer = train_on_corpus(recipe.data.source, settings.vocab_size, settings.model_type,
                                    settings.sample_documents)
    except TokenizerError as err:
        raise RecipeError(f"tokenizer.vocab_size: {err}") from None
    tokenizer.save(out)
    return tokenizer
