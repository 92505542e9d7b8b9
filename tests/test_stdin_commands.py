"""The stdin commands (fill-mask, rtd, predict) as an inference tool: reading and batching (lines.py), answers equal
to transformers' pipelines and models on the same dirs, hostile input that cannot end the stream, interactive use,
--device / --dtype, and dirs a command cannot serve."""

import io
import json
import os
import random
import select
import subprocess
import sys

import pytest
import torch
from data_helpers import WORDS, tiny_tokenizer

from encoderkit.commands import fill_mask, predict, rtd
from encoderkit.commands.fill_mask import mask_windows
from encoderkit.commands.lines import (
    InferenceOptionError,
    LineError,
    LineReader,
    LineTask,
    Prepared,
    answer_stream,
    decode_line,
    resolve_device,
)
from encoderkit.models.albert import AlbertConfig, AlbertForMaskedLM
from encoderkit.models.electra import (
    BertConfig,
    BertForMultipleChoice,
    BertForSequenceClassification,
    ElectraConfig,
    ElectraForPreTraining,
)
from encoderkit.models.hf_format import save_pretrained

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=64, initializer_range=0.2)


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    """A masked LM (ALBERT), a discriminator (ELECTRA) and a classifier (BERT), each with a SentencePiece tokenizer."""
    tokenizer = tiny_tokenizer()
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    models = {"masked_lm": AlbertForMaskedLM(AlbertConfig(vocab_size=tokenizer.vocab_size, embedding_size=16, **TINY)),
              "discriminator": ElectraForPreTraining(ElectraConfig(vocab_size=tokenizer.vocab_size, embedding_size=32,
                                                                   **TINY)),
              "classifier": BertForSequenceClassification(BertConfig(vocab_size=tokenizer.vocab_size, num_labels=3,
                                                                     **TINY))}
    for name, model in models.items():
        save_pretrained(model, root / name)
        tokenizer.save(root / name)
    return {name: root / name for name in models}


def sentence(rng: random.Random, words: int = 8) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def answer(command, model_dir, lines: bytes, *args, **options):
    """Run a command's `run` in this process: (failed lines, JSONL records, stderr lines)."""
    out, err = io.StringIO(), io.StringIO()
    failed = command.run(model_dir, io.BytesIO(lines), *args, fmt="jsonl", out=out, err=err, **options)
    return failed, [json.loads(line) for line in out.getvalue().splitlines()], err.getvalue().splitlines()


def cli(*args, stdin: bytes = b""):
    return subprocess.run([sys.executable, "-m", "encoderkit", *args], input=stdin, capture_output=True, timeout=300)


# --------------------------------------------------------------------------------------------------
# reading and batching


def test_lines_split_on_newline_only_and_keep_the_last_line_without_one():
    reader = LineReader(io.BytesIO(b"a\r\nb\x0c c\xe2\x80\xa8 d\n\nlast"))
    lines = reader.window(10)
    assert lines == [(1, b"a\r"), (2, b"b\x0c c\xe2\x80\xa8 d"), (3, b""), (4, b"last")]
    assert [decode_line(raw)[0] for _, raw in lines] == ["a", "b\x0c c\u2028 d", "", "last"]
    assert reader.window(10) == []


def test_invalid_utf8_is_replaced_and_noted_with_its_column():
    text, note = decode_line(b"ok \xff\xfe then")
    assert text == "ok \ufffd\ufffd then"
    assert "invalid UTF-8 (byte 0xff at column 4)" in note
    assert decode_line("caf\u00e9".encode()) == ("caf\u00e9", None)


def test_read_ahead_takes_only_lines_that_have_arrived():
    read_end, write_end = os.pipe()
    with open(read_end, "rb", buffering=0) as stream:
        reader = LineReader(stream)
        os.write(write_end, b"one\n")
        assert reader.window(100) == [(1, b"one")]  # answered alone: the window does not wait for 100 lines
        os.write(write_end, b"two\nthree\nfou")
        assert reader.window(100) == [(2, b"two"), (3, b"three")]
        os.write(write_end, b"r")
        os.close(write_end)
        assert reader.window(100) == [(4, b"four")]
        assert reader.window(100) == []


class Recorder:
    """A LineTask that answers a line with its length and records the batches it ran."""

    def __init__(self, fail_on: str | None = None):
        self.batches, self.fail_on = [], fail_on

    def prepare(self, text):
        if text.startswith("bad"):
            raise LineError("starts with bad")
        return Prepared(len(text), text)

    def run(self, texts):
        self.batches.append(list(texts))
        if self.fail_on in texts:
            raise RuntimeError("the model broke")
        return [{"length": len(text)} for text in texts]

    def task(self):
        return LineTask(self.prepare, self.run, lambda text, answer: f"{answer['length']}\n")


def test_batches_are_sorted_by_length_and_answers_come_in_input_order():
    texts = ["x" * n for n in (5, 1, 9, 3, 7, 2)]
    recorder, out, err = Recorder(), io.StringIO(), io.StringIO()
    failed = answer_stream(io.BytesIO("\n".join(texts).encode()), recorder.task(), "jsonl", out, err, batch_size=2)
    assert failed == 0 and err.getvalue() == ""
    assert recorder.batches == [["x", "xx"], ["xxx", "xxxxx"], ["xxxxxxx", "xxxxxxxxx"]]
    assert [json.loads(line)["length"] for line in out.getvalue().splitlines()] == [5, 1, 9, 3, 7, 2]


def test_a_line_much_longer_than_the_others_runs_in_a_batch_of_its_own():
    texts = ["x" * n for n in (4, 40, 5, 4, 6)]
    recorder, out, err = Recorder(), io.StringIO(), io.StringIO()
    answer_stream(io.BytesIO("\n".join(texts).encode()), recorder.task(), "jsonl", out, err, batch_size=8)
    # with it, the first batch would be 5 x 40 positions for 59 real ones: more than half padding
    assert [[len(text) for text in batch] for batch in recorder.batches] == [[4, 4, 5, 6], [40]]
    assert [json.loads(line)["length"] for line in out.getvalue().splitlines()] == [4, 40, 5, 4, 6]


def test_a_failing_line_is_reported_in_its_place_and_the_others_are_answered():
    lines = b"aaa\nbad one\nboom\n  \nbb\n"
    recorder, out, err = Recorder(fail_on="boom"), io.StringIO(), io.StringIO()
    failed = answer_stream(io.BytesIO(lines), recorder.task(), "text", out, err, batch_size=8)
    assert failed == 2
    assert out.getvalue() == "3\n2\n"
    assert err.getvalue().splitlines() == [
        "line 2: starts with bad", "line 3: the model failed on this line (RuntimeError: the model broke)"]


def test_mask_windows_hold_every_mask_once_within_the_width():
    rng = random.Random(0)
    for _ in range(200):
        length, width = rng.randint(1, 300), rng.randint(1, 64)
        positions = sorted(rng.sample(range(length), rng.randint(1, min(length, 40))))
        windows = mask_windows(length, positions, width)
        assert [p for _, _, group in windows for p in group] == positions
        for start, end, group in windows:
            assert 0 <= start < end <= length and end - start <= width
            assert all(start <= p < end for p in group)


# --------------------------------------------------------------------------------------------------
# answers against transformers


def test_fill_mask_equals_transformers_pipeline_in_batches(model_dirs):
    from transformers import pipeline

    rng = random.Random(1)
    texts = [f"{sentence(rng, rng.randint(2, 12))} [MASK] {sentence(rng, rng.randint(0, 6))}" for _ in range(6)]
    texts.append("[MASK] the cat [MASK] a dog")
    failed, records, _ = answer(fill_mask, model_dirs["masked_lm"], "\n".join(texts).encode(), top_k=3,
                                batch_size=4)
    assert failed == 0 and [r["line"] for r in records] == list(range(1, 8))
    reference = pipeline("fill-mask", model=str(model_dirs["masked_lm"]), top_k=3)
    for text, record in zip(texts, records):
        expected = reference(text)
        expected = expected if isinstance(expected[0], list) else [expected]
        assert len(record["masks"]) == len(expected)
        for ours, theirs in zip(record["masks"], expected):
            assert [c["token_id"] for c in ours] == [c["token"] for c in theirs]
            assert [c["score"] for c in ours] == pytest.approx([c["score"] for c in theirs], abs=1e-6)


def test_scores_are_printed_at_full_precision(model_dirs):
    _, records, _ = answer(fill_mask, model_dirs["masked_lm"], b"the [MASK] sees\n", top_k=200)
    scores = [c["score"] for c in records[0]["masks"][0]]
    assert len(scores) == 200 and min(scores) > 0
    assert any(len(repr(score)) > 9 for score in scores)  # not rounded to 5 decimals
    assert sum(scores) == pytest.approx(1.0, abs=1e-5)


def test_rtd_equals_the_transformers_discriminator(model_dirs):
    from transformers import ElectraForPreTraining as Reference

    lines = [b"the cat sees a dog", b"a big red house under the tree quickly", b"dog"]
    failed, records, _ = answer(rtd, model_dirs["discriminator"], b"\n".join(lines), batch_size=2)
    assert failed == 0
    reference = Reference.from_pretrained(model_dirs["discriminator"]).eval()
    tokenizer = tiny_tokenizer()
    for record in records:
        ids = [tokenizer.cls_id, *(t["token_id"] for t in record["tokens"]), tokenizer.sep_id]
        with torch.no_grad():
            expected = reference(torch.tensor([ids])).logits[0, 1:-1].sigmoid().tolist()
        assert [t["replaced"] for t in record["tokens"]] == pytest.approx(expected, abs=1e-6)


def test_predict_equals_transformers_pipeline_and_model(model_dirs):
    from transformers import AutoModelForSequenceClassification, pipeline

    rng = random.Random(2)
    texts = [sentence(rng, rng.randint(1, 20)) for _ in range(5)]
    pair = (sentence(rng), sentence(rng, 3))
    lines = "\n".join([*texts, "\t".join(pair)]).encode()
    failed, records, _ = answer(predict, model_dirs["classifier"], lines, batch_size=4)
    assert failed == 0 and len(records) == 6
    reference = pipeline("text-classification", model=str(model_dirs["classifier"]))
    for text, record in zip(texts, records):
        expected = reference(text)[0]
        assert f"LABEL_{record['label']}" == expected["label"]
        assert record["score"] == pytest.approx(expected["score"], abs=1e-6)
    # transformers' AlbertTokenizer gives no token types for a pair here: BERT's are built by hand
    tokenizer = tiny_tokenizer()
    first = [tokenizer.cls_id, *tokenizer.encode(pair[0]), tokenizer.sep_id]
    second = [*tokenizer.encode(pair[1]), tokenizer.sep_id]
    model = AutoModelForSequenceClassification.from_pretrained(model_dirs["classifier"]).eval()
    with torch.no_grad():
        types = torch.tensor([[0] * len(first) + [1] * len(second)])
        logits = model(torch.tensor([first + second]), token_type_ids=types).logits
    probability, label = logits[0].softmax(-1).max(-1)
    assert (records[5]["label"], records[5]["score"]) == (int(label), pytest.approx(float(probability), abs=1e-6))


def test_multiple_choice_lines_run_in_batches_and_equal_transformers_model(tmp_path):
    from transformers import BertForMultipleChoice as Reference

    tokenizer = tiny_tokenizer()
    torch.manual_seed(0)
    save_pretrained(BertForMultipleChoice(BertConfig(vocab_size=tokenizer.vocab_size, **TINY)), tmp_path)
    tokenizer.save(tmp_path)
    rng = random.Random(3)
    rows = [{"context": sentence(rng, rng.randint(2, 12)), "choices": [sentence(rng, rng.randint(1, 6))
                                                                       for _ in range(count)]}
            for count in (2, 4, 2, 3, 4, 2)]
    calls = []
    with torch.nn.modules.module.register_module_forward_hook(
            lambda module, args, output: calls.append(1) if isinstance(module, BertForMultipleChoice) else None):
        failed, records, _ = answer(predict, tmp_path, "\n".join(map(json.dumps, rows)).encode(), batch_size=8)
    assert failed == 0 and len(calls) == 3  # one forward pass per number of choices
    reference = Reference.from_pretrained(tmp_path).eval()
    for row, record in zip(rows, records, strict=True):
        pairs = [([tokenizer.cls_id, *tokenizer.encode(row["context"]), tokenizer.sep_id],
                  [*tokenizer.encode(choice), tokenizer.sep_id]) for choice in row["choices"]]
        width = max(len(a) + len(b) for a, b in pairs)
        ids, types, mask = (torch.tensor([[*a, *b] + [0] * (width - len(a) - len(b)) for a, b in pairs]),
                            torch.tensor([[0] * len(a) + [1] * len(b) + [0] * (width - len(a) - len(b))
                                          for a, b in pairs]),
                            torch.tensor([[1] * (len(a) + len(b)) + [0] * (width - len(a) - len(b)) for a, b in pairs]))
        with torch.no_grad():
            expected = reference(ids[None], mask[None], types[None]).logits[0].softmax(-1)
        assert record["scores"] == pytest.approx(expected.tolist(), abs=1e-6)
        assert record["label"] == int(expected.argmax())


# --------------------------------------------------------------------------------------------------
# hostile input


def hostile_lines(rng: random.Random, masks: bool) -> tuple[list[bytes], set[int]]:
    """Lines of every kind that has broken a stdin command, and the numbers of those that must be answered
    (for fill-mask: those with a [MASK])."""
    mask = b" [MASK] " if masks else b" "
    long_text = " ".join(rng.choice(WORDS) for _ in range(200_000)).encode()[:1_000_000]
    lines = [
        sentence(rng).encode() + mask + b"end",                        # 1 good
        bytes(rng.choice([b for b in range(256) if b != 10]) for _ in range(300)),  # 2 binary
        b"caf\xe9 \xff\xfe" + mask + b"x",                               # 3 invalid UTF-8
        long_text[:500_000] + mask + long_text[500_000:],                # 4 a 1 MB line
        b" ".join([b"[MASK]" if masks else b"word"] * 100),              # 5 100 masks
        b"nul\x00 bytes\x00" + mask + b"\x00",                           # 6 NUL bytes
        sentence(rng).encode() + mask + b"crlf\r",                       # 7 \r\n
        b"",                                                             # 8 empty
        b" \t ",                                                         # 9 whitespace only
        sentence(rng).encode(),                                          # 10 no mask
        b"[MASK]" if masks else b"x",                                    # 11 the mask alone
        sentence(rng).encode() + mask,                                   # 12 no final newline
    ]
    answered = {1, 3, 4, 5, 6, 7, 11, 12} if masks else {1, 2, 3, 4, 5, 6, 7, 10, 11, 12}
    return lines, answered


@pytest.mark.slow
@pytest.mark.parametrize("command", ["fill-mask", "rtd", "predict"])
def test_no_input_line_can_end_the_stream(command, model_dirs):
    model = model_dirs[{"fill-mask": "masked_lm", "rtd": "discriminator", "predict": "classifier"}[command]]
    lines, answered = hostile_lines(random.Random(3), masks=command == "fill-mask")
    result = cli(command, "--model", str(model), "--format", "jsonl", "--batch-size", "4",
                 stdin=b"\n".join(lines[:6]) + b"\r\n" + b"\n".join(lines[6:]))
    stderr = result.stderr.decode()
    assert "Traceback" not in stderr, stderr
    records = [json.loads(line) for line in result.stdout.decode().splitlines()]  # each line valid JSON
    assert [r["line"] for r in records] == sorted(answered)
    # a slow load (a busy machine) adds one status line ending in " ..."; every other line is about a line
    messages = [line for line in stderr.splitlines() if not line.endswith(" ...")]
    errors = [line for line in messages if ": note: " not in line]
    assert all(line.startswith("line ") for line in messages), stderr
    bad = set(range(1, 13)) - answered - {8, 9}  # blank lines are skipped, not errors
    assert sorted(int(line.split(":")[0].removeprefix("line ")) for line in errors) == sorted(bad)
    assert result.returncode == (1 if bad else 0)
    by_line = {r["line"]: r for r in records}
    if command == "fill-mask":
        assert len(by_line[4]["masks"]) == 1 and len(by_line[5]["masks"]) == 100 and len(by_line[11]["masks"]) == 1
        assert by_line[7]["text"].endswith("crlf") and "\ufffd" in by_line[3]["text"]
    elif command == "rtd":
        assert len(by_line[4]["tokens"]) > 100_000  # the 1 MB line scored in windows, every token
    else:
        assert "line 4: note: " in stderr and "cut to 64" in stderr


@pytest.mark.slow
def test_a_line_typed_alone_is_answered_at_once(model_dirs):
    process = subprocess.Popen([sys.executable, "-m", "encoderkit", "fill-mask", "--model",
                                str(model_dirs["masked_lm"]), "--format", "jsonl"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for number, text in enumerate((b"the [MASK] sees a dog\n", b"a [MASK]\n"), start=1):
            process.stdin.write(text)
            process.stdin.flush()  # stdin stays open: the command must not wait for more lines
            assert select.select([process.stdout], [], [], 120)[0], "no answer while stdin is open"
            assert json.loads(process.stdout.readline())["line"] == number
        process.stdin.close()
        assert process.wait(timeout=60) == 0
    finally:
        process.kill()


# --------------------------------------------------------------------------------------------------
# devices, dtypes, and dirs a command cannot serve


def test_bf16_answers_close_to_fp32(model_dirs):
    lines = b"the cat [MASK] a dog\n[MASK] big house\n"
    _, fp32, _ = answer(fill_mask, model_dirs["masked_lm"], lines, top_k=3)
    _, bf16, _ = answer(fill_mask, model_dirs["masked_lm"], lines, top_k=3, dtype="bf16")
    ours = [c["score"] for r in bf16 for m in r["masks"] for c in m]
    theirs = [c["score"] for r in fp32 for m in r["masks"] for c in m]
    assert ours != theirs and ours == pytest.approx(theirs, rel=0.05)


def test_device_and_dtype_refusals(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto", "bf16") == (torch.device("cpu"), torch.bfloat16)
    for device, dtype, expected in (("cuda", "fp32", "--device: cuda is not available here"),
                                    ("tpu", "fp32", "--device: 'tpu' is not one of: cpu, cuda, auto"),
                                    ("cpu", "int4", "--dtype: 'int4' is not one of: fp32, bf16, fp16")):
        with pytest.raises(InferenceOptionError, match=expected):
            resolve_device(device, dtype)


@pytest.mark.slow
def test_a_dir_of_another_head_is_one_line_naming_the_command_that_serves_it(model_dirs):
    result = cli("predict", "--model", str(model_dirs["masked_lm"]), stdin=b"a film\n")
    stderr = result.stderr.decode()
    assert result.returncode == 2 and len(stderr.splitlines()) == 1, stderr
    assert "holds no classifier" in stderr and "(AlbertForMaskedLM): use `encoderkit fill-mask" in stderr
    cuda = cli("rtd", "--model", str(model_dirs["discriminator"]), "--device", "cuda", stdin=b"a film\n")
    if torch.cuda.is_available():
        assert cuda.returncode == 0, cuda.stderr
    else:
        assert cuda.returncode == 2 and cuda.stderr.decode().startswith("error: --device: cuda is not available")


def test_a_slow_step_says_so_once_and_a_fast_one_says_nothing():
    import time

    from encoderkit.commands.lines import announce_if_slow

    err = io.StringIO()
    with announce_if_slow("loading x ...", err, after_s=0.05):
        time.sleep(0.3)
    with announce_if_slow("compiling y ...", err, after_s=5):
        pass
    time.sleep(0.1)
    assert err.getvalue() == "loading x ...\n"


def test_integer_kernels_are_cached_under_encoderkits_cache_dir(monkeypatch, tmp_path):
    from encoderkit.models.ibert.kernels import kernel_cache_dir

    monkeypatch.setenv("ENCODERKIT_CACHE", str(tmp_path))
    assert kernel_cache_dir() == tmp_path / "integer-kernels"
