"""`encoderkit predict`: the answer of a fine-tuned model for each stdin line. The dir's head picks the answer
(ANSWERS): a sequence classifier gives the label and its probability (a regression head: the score), from a
Hugging Face model dir (ALBERT, ELECTRA, BERT, RoBERTa, I-BERT) or the integer-only model that `encoderkit quantize`
writes (its integer/ dir), which runs without any float model.

A line with a tab is a pair: the text before the tab and the text after it (as GLUE's pair tasks).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import BinaryIO, TextIO

import torch

from encoderkit.commands.lines import (
    DEFAULT_BATCH_SIZE,
    InferenceOptionError,
    LineError,
    LineTask,
    Prepared,
    announce_if_slow,
    answer_stream,
    check_options,
    resolve_device,
)
from encoderkit.data.classification import encode_examples, iter_batches
from encoderkit.data.glue import GlueExample, get_task
from encoderkit.errors import UserError


class PredictError(UserError):
    """A model directory or option that `encoderkit predict` cannot use."""


class SequenceClassifier:
    """The answer of a sequence-classification head: {label, score} (the most probable class, its name when
    `labels` are given, and its probability), or {score} for a regression head."""

    def __init__(self, model, tokenizer, max_seq_length: int, labels: tuple[str, ...] | None):
        self.model, self.tokenizer, self.max_seq_length, self.labels = model, tokenizer, max_seq_length, labels
        self.device = _device(model)

    def prepare(self, text: str) -> Prepared:
        text_a, tab, text_b = text.partition("\t")
        if "\t" in text_b:
            raise LineError("more than one tab: give a text, or two texts separated by one tab")
        if not text_a.strip() or (tab and not text_b.strip()):
            raise LineError("an empty text before or after the tab")
        example = GlueExample(text_a, text_b if tab else None, label=None, id="")
        length = sum(len(self.tokenizer.encode(part)) + 1 for part in (text_a, text_b) if part) + 1
        note = None
        if length > self.max_seq_length:
            note = f"{length} tokens, cut to {self.max_seq_length} (--max-seq-length, or the model's positions)"
        return Prepared(min(length, self.max_seq_length), example, note)

    def run(self, examples: list[GlueExample]) -> list[dict]:
        encoded = encode_examples(examples, self.tokenizer, self.max_seq_length)
        batch = next(iter_batches(encoded, len(examples), shuffle=False))
        with torch.inference_mode():
            logits = self.model(*(batch[k].to(self.device) for k in ("input_ids", "attention_mask",
                                                                      "token_type_ids"))).float()
        if logits.shape[-1] == 1:
            return [{"score": score} for score in logits[:, 0].tolist()]
        probabilities, indices = logits.softmax(-1).max(-1)
        return [{"label": self.labels[index] if self.labels else index, "score": probability}
                for probability, index in zip(probabilities.tolist(), indices.tolist())]

    @staticmethod
    def render(text: str, answer: dict) -> str:
        if "label" in answer:
            return f"{answer['label']}\t{answer['score']:.4f}\t{text}\n"
        return f"{answer['score']:.4f}\t{text}\n"


# The head of a model dir -> its answer.
ANSWERS = {"sequence_classification": SequenceClassifier}


def _device(model) -> torch.device:
    tensor = next(model.parameters(), None)
    return (tensor if tensor is not None else next(model.buffers())).device  # the integer model has buffers only


def load_for_predict(model_dir: Path, device: torch.device, dtype: torch.dtype):
    """The model of `model_dir` with a head `predict` answers, on `device` in `dtype`."""
    from encoderkit.models.load import is_integer_dir, load_model, read_model_config, saved_head, what_it_holds

    _, head = saved_head(model_dir)
    if head not in ANSWERS:
        holds = "; it is an integer-only encoder" if is_integer_dir(model_dir) else \
            what_it_holds(model_dir, read_model_config(model_dir))
        raise PredictError(f"--model: {model_dir} holds no classifier or other head that `encoderkit predict` "
                           f"answers ({', '.join(ANSWERS)}){holds}")
    if is_integer_dir(model_dir):
        if device.type != "cpu" or dtype != torch.float32:
            raise InferenceOptionError("--device/--dtype: the integer-only model runs on the CPU in integers; "
                                       "leave --device cpu and --dtype fp32")
        model = load_model(model_dir, head, require_head=True)
        _prepare_integer_kernels(model)
        return model, head
    with announce_if_slow(f"loading {model_dir} ..."):
        return load_model(model_dir, head, require_head=True).eval().to(device=device, dtype=dtype), head


def _prepare_integer_kernels(model) -> None:
    """Run the integer model once on two short sequences, so its kernels are built (or read from the
    compile cache) before the first line, with a status line if that takes a while."""
    from encoderkit.models.ibert.int_ops import kernel_cache_dir

    with announce_if_slow(f"preparing the integer-only kernels (compiled once, then cached in {kernel_cache_dir()})"
                          " ..."):
        model(torch.ones((2, 3), dtype=torch.long), torch.tensor([[1, 1, 1], [1, 1, 0]]))


def run(model_dir: Path, stream: BinaryIO, fmt: str, task: str | None = None, max_seq_length: int = 128,
        out: TextIO = sys.stdout, err: TextIO = sys.stderr, batch_size: int = DEFAULT_BATCH_SIZE,
        device: str = "cpu", dtype: str = "fp32") -> int:
    """Answer each line of the binary `stream`; returns the number of lines that failed."""
    from encoderkit.data.tokenizer import Tokenizer
    from encoderkit.models.load import max_tokens, vocab_size

    check_options(fmt, batch_size)
    glue_task = get_task(task) if task else None
    model, head = load_for_predict(model_dir, *resolve_device(device, dtype))
    tokenizer = Tokenizer.load(model_dir, vocab_size(model))
    if glue_task is not None:
        with torch.inference_mode():  # the head's width, which the integer-only model does not record
            ids = torch.tensor([[tokenizer.cls_id, tokenizer.sep_id]], device=_device(model))
            outputs = model(ids).shape[-1]
        if outputs != glue_task.num_labels:
            raise PredictError(f"--task: {glue_task.name} has {glue_task.num_labels} output(s), the model {outputs}")
    labels = glue_task.labels if glue_task else None
    answer = ANSWERS[head](model, tokenizer, min(max_seq_length, max_tokens(model)), labels)
    return answer_stream(stream, LineTask(answer.prepare, answer.run, answer.render), fmt, out, err, batch_size)

