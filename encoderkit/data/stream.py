"""The pretraining stream: corpus → sentences → token ids → examples → masked, padded batches.

ALBERT: segment pairs swapped half the time for sentence-order prediction, whole-word n-gram masks.
ELECTRA: segment pairs in their order, single tokens masked (85% [MASK], 15% unchanged).

Plain MLM (`packed=True`): the documents' tokens packed into full-length sequences, no pairs, no SOP.

Held-out text: `hold_out=(fraction, seed)` splits the documents by a seeded hash of their text; the training
stream (`held_out=False`) skips those the validation stream (`held_out=True`) keeps, so no document is both.

Endless: when the corpus ends the next pass (epoch) starts. Examples (segment lengths, A/B splits,
sentence order) and masks come from two seeded random generators that keep running across passes,
so every pass sees new pairs and new masks. Masks are drawn when a batch is built.

Exact resume: the state names the position in the corpus before the current document, the example
generator's state at that point, how many examples of that document were already taken, and the mask
generator's state. Restoring re-reads and re-tokenizes at most that one document. Packed sequences add
the tokens carried over from the documents before it. `max_passes=1` makes a finite stream (a validation
set): it ends after one pass over the corpus, with a last, shorter batch.

Length warmup (`length_warmup=(first_length, batches)`): the first `batches` batches have their rows cut into
rows of `first_length` tokens, then twice that, and so on below `max_seq_length`, an equal share of the batches
each (Li et al., 2022, "sequence length warmup"). A small encoder trained from scratch on full rows sits on the
plateau where every masked token gets the unigram distribution; on rows of 4 tokens even uniform attention
reads the neighbours, and what it learns there carries over to longer rows.
"""

from __future__ import annotations

import copy
import hashlib
import random
from collections.abc import Iterator

import torch

from encoderkit.data.corpus import CorpusError, SourceLike, load_corpus, split_sentences
from encoderkit.data.examples import Example, document_examples, packed_example, packed_examples
from encoderkit.data.masking import IGNORE_INDEX, mask_tokens, mask_whole_word_ngrams
from encoderkit.data.tokenizer import Tokenizer
from encoderkit.files import rng_state_from_json, rng_state_to_json

STATE_VERSION = 1


class PretrainBatches:
    """Iterator of batches for masked-LM pretraining (ALBERT's MLM + SOP, or ELECTRA's masking).

    Each batch is a dict of int64 tensors: `input_ids`, `attention_mask`, `token_type_ids`,
    `mlm_labels` ([B, S], -100 where not predicted) and `sop_labels` ([B], 1 = segments swapped).
    Rows are padded with <pad> to the longest row of the batch (at most `max_seq_length`).

    `masking="ngram"`: ALBERT's whole-word n-gram spans, one example at a time. `masking="electra"`:
    single tokens over the whole batch at once. Of the chosen tokens, `mask_token_prob` become
    [MASK], `random_token_prob` a random token, the rest stay. `sentence_order=False` never swaps.

    Data-parallel training draws the same global batch in every process and splits its rows (the
    training loop does that), so N processes see exactly what one process would.
    """

    def __init__(
        self,
        source: SourceLike,
        tokenizer: Tokenizer,
        batch_size: int,
        max_seq_length: int,
        seed: int,
        short_seq_prob: float = 0.1,
        masked_lm_prob: float = 0.15,
        max_ngram: int = 3,
        *,
        masking: str = "ngram",
        mask_token_prob: float = 0.8,
        random_token_prob: float = 0.1,
        sentence_order: bool = True,
        split: str = "train",
        packed: bool = False,
        hold_out: tuple[float, int] | None = None,
        held_out: bool = False,
        max_passes: int | None = None,
        length_warmup: tuple[int, int] | None = None,
    ):
        if masking not in ("ngram", "electra"):
            raise ValueError(f"masking must be 'ngram' or 'electra', not {masking!r}")
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_seq_length = max_seq_length
        self.short_seq_prob = short_seq_prob
        self.masked_lm_prob = masked_lm_prob
        self.max_ngram = max_ngram
        self.masking = masking
        self.mask_token_prob, self.random_token_prob = mask_token_prob, random_token_prob
        self.swap_prob = 0.5 if sentence_order else 0.0
        self.packed = packed
        self.hold_out, self.held_out = hold_out, held_out
        self.max_passes = max_passes
        self._config = {"source": str(source), "batch_size": batch_size, "max_seq_length": max_seq_length}
        if packed:
            self._config["packed"] = True
        if hold_out:
            self._config["hold_out"] = list(hold_out)
        self.length_warmup = length_warmup
        if length_warmup:
            self._config["length_warmup"] = list(length_warmup)
        self._batches_drawn = 0
        self._dataset = load_corpus(source, split)
        self._corpus_start = self._dataset.state_dict()
        self._example_rng = random.Random(f"examples-{seed}")
        self._mask_rng = random.Random(f"masks-{seed}")
        # ELECTRA masks a whole batch with torch ops
        self._mask_generator = torch.Generator().manual_seed(seed)
        # position before the current document; see state_dict()
        self._epoch = 0
        self._corpus_state = self._corpus_start
        self._document_rng_state = self._example_rng.getstate()
        self._examples_taken = 0
        self._carry: list[int] = []  # packed: tokens left over by the documents before
        self._document_carry: list[int] = []
        self._examples: Iterator[Example] | None = None

    def __iter__(self) -> PretrainBatches:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        if self._examples is None:
            self._examples = self._iter_examples()
        examples = [example for _, example in zip(range(self.batch_size), self._examples)]
        if not examples:
            raise StopIteration
        batch = self._collate(examples)
        length = warmup_length(self._batches_drawn, self.length_warmup, self.max_seq_length)
        self._batches_drawn += 1
        return split_rows(batch, length, self.tokenizer.pad_id) if length else batch

    def state_dict(self) -> dict:
        """JSON-serialisable position of the stream: the next batch after `load_state_dict` is the next one here."""
        return {
            "version": STATE_VERSION,
            "config": self._config,
            "epoch": self._epoch,
            "corpus": copy.deepcopy(self._corpus_state),
            "document_rng": rng_state_to_json(self._document_rng_state),
            "examples_taken": self._examples_taken,
            "mask_rng": rng_state_to_json(self._mask_rng.getstate()),
            "mask_generator": self._mask_generator.get_state().tolist(),
            "carry": list(self._document_carry),
            "batches_drawn": self._batches_drawn,
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unknown PretrainBatches state version {state.get('version')!r}")
        if state["config"] != self._config:
            raise ValueError(f"state is of another stream: {state['config']} (this one: {self._config})")
        self._epoch = state["epoch"]
        self._corpus_state = state["corpus"]
        self._document_rng_state = rng_state_from_json(state["document_rng"])
        self._examples_taken = state["examples_taken"]
        self._mask_rng.setstate(rng_state_from_json(state["mask_rng"]))
        self._mask_generator.set_state(torch.tensor(state["mask_generator"], dtype=torch.uint8))
        self._document_carry = list(state.get("carry", []))
        self._batches_drawn = state.get("batches_drawn", 0)
        self._examples = None  # restart the example generator from the restored position

    def _iter_examples(self) -> Iterator[Example]:
        """Examples of document after document, pass after pass, keeping the resume position up to date."""
        self._example_rng.setstate(self._document_rng_state)
        self._carry = list(self._document_carry)
        while self.max_passes is None or self._epoch < self.max_passes:
            whole_pass = self._corpus_state == self._corpus_start
            self._dataset.load_state_dict(self._corpus_state)
            produced_any = False
            for row in self._dataset:
                text = row["text"] or ""
                examples = self._document_examples(text) if self._keeps(text) else []
                produced_any = produced_any or bool(examples) or bool(self._carry)
                for example in examples[self._examples_taken :]:
                    self._examples_taken += 1
                    yield example
                # the document is used up: the position moves past it
                self._corpus_state = self._dataset.state_dict()
                self._document_rng_state = self._example_rng.getstate()
                self._document_carry = list(self._carry)
                self._examples_taken = 0
            if whole_pass and not produced_any:
                raise CorpusError(f"the corpus {self._config['source']!r} gives no pretraining examples")
            self._epoch += 1
            self._corpus_state = self._corpus_start
        if self.packed and self._carry:  # a finite stream ends with the tokens it has left
            yield packed_example(self._carry, self.tokenizer.cls_id, self.tokenizer.sep_id)
            self._carry = []

    def _keeps(self, text: str) -> bool:
        """Whether this stream uses the document: all of them, or the held-out ones, or all but those."""
        return self.hold_out is None or is_held_out(text, *self.hold_out) == self.held_out

    def _document_examples(self, text: str) -> list[Example]:
        sentences = self.tokenizer.encode_batch(split_sentences(text))
        if self.packed:
            examples, self._carry = packed_examples(sentences, self._carry, max_seq_length=self.max_seq_length,
                                                    cls_id=self.tokenizer.cls_id, sep_id=self.tokenizer.sep_id)
            return examples
        return document_examples(
            sentences,
            self._example_rng,
            max_seq_length=self.max_seq_length,
            cls_id=self.tokenizer.cls_id,
            sep_id=self.tokenizer.sep_id,
            short_seq_prob=self.short_seq_prob,
            swap_prob=self.swap_prob,
        )

    def _collate(self, examples: list[Example]) -> dict[str, torch.Tensor]:
        length = max(len(example.input_ids) for example in examples)
        input_ids, attention_mask, token_type_ids, mlm_labels = [], [], [], []
        for example in examples:
            if self.masking == "ngram":
                masked_ids, labels = mask_whole_word_ngrams(
                    example.input_ids,
                    self.tokenizer,
                    self._mask_rng,
                    masked_lm_prob=self.masked_lm_prob,
                    max_ngram=self.max_ngram,
                    mask_token_prob=self.mask_token_prob,
                    random_token_prob=self.random_token_prob,
                )
            else:  # masked below, for the whole batch at once
                masked_ids, labels = example.input_ids, []
            padding = length - len(masked_ids)
            input_ids.append(masked_ids + [self.tokenizer.pad_id] * padding)
            attention_mask.append([1] * len(masked_ids) + [0] * padding)
            token_type_ids.append(example.token_type_ids + [0] * padding)
            mlm_labels.append(labels + [IGNORE_INDEX] * (length - len(labels)))
        batch = {
            "input_ids": torch.tensor(input_ids),
            "attention_mask": torch.tensor(attention_mask),
            "token_type_ids": torch.tensor(token_type_ids),
            "mlm_labels": torch.tensor(mlm_labels),
            "sop_labels": torch.tensor([example.sop_label for example in examples]),
        }
        if self.masking == "electra":
            batch["input_ids"], batch["mlm_labels"] = mask_tokens(
                batch["input_ids"],
                self.tokenizer,
                self._mask_generator,
                mask_prob=self.masked_lm_prob,
                mask_token_prob=self.mask_token_prob,
                random_token_prob=self.random_token_prob,
            )
        return batch


def warmup_length(batch_index: int, length_warmup: tuple[int, int] | None, max_seq_length: int) -> int | None:
    """The row length of warmup batch `batch_index`: `first`, 2 * first, ... while below max_seq_length, an equal
    share of the `batches` each (the first lengths take the remainder); None after the warmup (whole rows)."""
    if not length_warmup or batch_index >= length_warmup[1]:
        return None
    first, batches = length_warmup
    lengths = [first * 2**k for k in range(max_seq_length.bit_length()) if first * 2**k < max_seq_length]
    return lengths[batch_index * len(lengths) // batches] if lengths else None


def split_rows(batch: dict[str, torch.Tensor], length: int, pad_id: int) -> dict[str, torch.Tensor]:
    """Every row cut into rows of `length` tokens (the row's end padded), in order: row r's pieces, then row r+1's.
    Rows of padding only are kept, so the row count stays a multiple of the batch size. A piece of a row has no
    sentence order: `sop_labels` becomes IGNORE_INDEX (the MLM+SOP objective then trains MLM only)."""
    pad = -batch["input_ids"].shape[1] % length
    fill = {"input_ids": pad_id, "attention_mask": 0, "token_type_ids": 0, "mlm_labels": IGNORE_INDEX}
    cut = {key: torch.nn.functional.pad(batch[key], (0, pad), value=value).reshape(-1, length)
           for key, value in fill.items()}
    cut["sop_labels"] = torch.full((cut["input_ids"].shape[0],), IGNORE_INDEX, dtype=batch["sop_labels"].dtype)
    return cut


def is_held_out(text: str, fraction: float, seed: int) -> bool:
    """Whether a document belongs to the held-out `fraction`: a seeded hash of its text, so the split is the same
    in every run, process and pass, and needs no list of documents."""
    digest = hashlib.blake2b(text.encode(), digest_size=8, key=str(seed).encode()).digest()
    return int.from_bytes(digest, "big") < fraction * 2**64
