"""I-BERT's own path, as a new user runs it: a RoBERTa saved by transformers with a byte-level BPE tokenizer trained
here -> `finetune glue` -> `quantize` -> `predict` on the integer-only dir; I-BERT dirs written by transformers
(float and quant_mode) in fill-mask, fine-tuning, quantization and predict; fill-mask against transformers'
pipeline; force_dequant; `tokenizer train` of a byte-level BPE."""

import io
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import test_quantize_cli
import torch
from test_finetune_cli import keyword_sentences
from test_quantize_cli import QUICK, cli

from encoderkit.data.bpe import ByteLevelBPETokenizer
from encoderkit.data.tokenizer import Tokenizer
from encoderkit.models import hf_format
from encoderkit.models.ibert import IBertConfig, IBertForSequenceClassification
from encoderkit.models.load import load_model
from encoderkit.train.optim import layerwise_learning_rate, parameter_groups

transformers = pytest.importorskip("transformers")
glue_dir = test_quantize_cli.glue_dir  # the BERT path's fixture: SST-2 in GLUE's layout holding the keyword task

# As the BERT path (tests/test_quantize_cli.py): large initial weights and no dropout, so a random tiny encoder
# learns the keyword task in a few dozen steps. RoBERTa's layout: one token type, pad id 1, positions from 2.
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=66, type_vocab_size=1, pad_token_id=1, hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0, initializer_range=0.2, layer_norm_eps=1e-5)
FINETUNE = ["finetune.max_seq_length=16", "train.batch_size=8", "finetune.epochs=5", "train.learning_rate=2e-3",
            "finetune.warmup_fraction=0.1"]
LINES = ["the good film", "a bad old movie", "music good cast\tscene long"]


@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
    """A byte-level BPE trained on the keyword task's sentences, as saved in a model dir."""
    tokenizer = ByteLevelBPETokenizer.train([text for text, _ in keyword_sentences(random.Random(1), 300)],
                                            vocab_size=400)
    tokenizer.save(tmp_path_factory.mktemp("bpe"))
    return tokenizer


def saved_by_transformers(model_class: str, config_class: str, tokenizer, directory, **config):
    torch.manual_seed(0)
    hf_config = getattr(transformers, config_class)(vocab_size=tokenizer.vocab_size, **{**TINY, **config})
    getattr(transformers, model_class)(hf_config).save_pretrained(directory)
    tokenizer.save(directory)
    return directory


def predictions(model_dir) -> list[dict]:
    result = cli("predict", "--model", str(model_dir), "--task", "sst2", "--format", "jsonl",
                 stdin="\n".join(LINES) + "\n")
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.fixture(scope="module")
def roberta_path(bpe, glue_dir, tmp_path_factory):
    """RobertaForMaskedLM(...).save_pretrained + the BPE -> finetune glue -> quantize: (run dirs, results, stdout)."""
    root = tmp_path_factory.mktemp("roberta")
    pretrained = saved_by_transformers("RobertaForMaskedLM", "RobertaConfig", bpe, root / "pretrained")
    finetuned = cli("finetune", "glue", "glue-roberta-base", "--task", "sst2", "--model", str(pretrained),
                    "--data-dir", str(glue_dir), *FINETUNE, f"output.dir={root / 'finetune'}")
    assert finetuned.returncode == 0, finetuned.stderr
    best = root / "finetune" / "sst2" / "best"
    quantized = cli("quantize", "--model", str(best), "--task", "sst2", "--data-dir", str(glue_dir), *QUICK,
                    f"output.dir={root / 'int8'}")
    assert quantized.returncode == 0, quantized.stderr
    return best, root / "int8", json.loads((root / "int8" / "results.json").read_text()), quantized.stdout


@pytest.mark.slow
def test_roberta_fine_tuned_quantized_and_predicted_from_the_cli(roberta_path):
    best, out, results, stdout = roberta_path
    assert json.loads((best / "config.json").read_text())["architectures"] == ["RobertaForSequenceClassification"]
    accuracy = {name: scores["dev"]["accuracy"] for name, scores in results["scores"].items()}
    assert set(accuracy) == {"fp32", "calibrated", "qat", "integer"}
    assert accuracy["fp32"] >= 0.95  # the task was learned, so the comparison means something
    assert abs(results["difference_points"]["qat"]) <= 1.0 + 1e-9
    assert abs(results["difference_points"]["integer"]) <= 1.0 + 1e-9
    assert results["freshly_initialised"] == []  # RoBERTa's classifier is I-BERT's
    for row in ("FP32 RobertaForSequenceClassification", "I-BERT QAT, best epoch", "integer-only", "accuracy - FP32"):
        assert row in stdout, stdout
    assert not (out / "integer" / "config.json").exists() and (out / "integer" / "vocab.json").is_file()
    answers = {name: predictions(model_dir) for name, model_dir in
               (("fp32", best), ("qat", out / "qat"), ("integer", out / "integer"))}
    for name, answer in answers.items():
        assert [a["text"] for a in answer] == LINES
        assert [a["label"] for a in answer][:2] == ["1", "0"], name
    assert [a["label"] for a in answers["fp32"]] == [a["label"] for a in answers["integer"]]
    for model_dir in (best, out / "integer"):  # longer than the 64 positions: cut to them, counted from pad id + 1
        long = cli("predict", "--model", str(model_dir), stdin="the good film " * 40 + "\n")
        assert long.returncode == 0 and long.stdout.startswith("1\t"), long.stderr


@pytest.mark.slow
def test_the_qat_dir_of_a_roberta_loads_in_transformers_with_the_same_logits(roberta_path, bpe):
    _, out, _, _ = roberta_path
    config = json.loads((out / "qat" / "config.json").read_text())
    assert config["architectures"] == ["IBertForSequenceClassification"] and "encoderkit_extensions" not in config
    assert not (out / "qat" / "README.md").exists()
    theirs = transformers.IBertForSequenceClassification.from_pretrained(out / "qat").eval()
    ours = load_model(out / "qat", "sequence_classification")
    ids = torch.tensor([[bpe.cls_id, *bpe.encode("the good film"), bpe.sep_id, bpe.sep_id, *bpe.encode("bad"),
                         bpe.sep_id]])
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), theirs(ids).logits, atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def ibert_path(bpe, glue_dir, tmp_path_factory):
    """The authors' path: an I-BERT checkpoint saved by transformers, fine-tuned in float, then QAT: (the fine-tuned
    dir, the quantize run dir). The checkpoint says quant_mode true, which `finetune` turns off, saying so once."""
    root = tmp_path_factory.mktemp("ibert")
    pretrained = saved_by_transformers("IBertForMaskedLM", "IBertConfig", bpe, root / "ibert", quant_mode=True)
    finetuned = cli("finetune", "glue", "glue-roberta-base", "--task", "sst2", "--model", str(pretrained),
                    "--data-dir", str(glue_dir), *FINETUNE, f"output.dir={root / 'finetune'}")
    assert finetuned.returncode == 0, finetuned.stderr
    assert finetuned.stderr.count("saved with quant_mode true: it is fine-tuned in float") == 1, finetuned.stderr
    best = root / "finetune" / "sst2" / "best"
    quantized = cli("quantize", "--model", str(best), "--task", "sst2", "--data-dir", str(glue_dir), *QUICK,
                    "quantize.epochs=1", f"output.dir={root / 'int8'}")
    assert quantized.returncode == 0, quantized.stderr
    return best, root / "int8"


@pytest.mark.slow
def test_an_i_bert_dir_written_by_transformers_fine_tunes_in_float_and_quantizes(ibert_path):
    best, out = ibert_path
    config = json.loads((best / "config.json").read_text())
    assert (config["model_type"], config["quant_mode"]) == ("ibert", False)
    results = json.loads((out / "results.json").read_text())
    assert results["scores"]["fp32"]["dev"]["accuracy"] >= 0.95
    assert abs(results["difference_points"]["integer"]) <= 1.0 + 1e-9


@pytest.mark.slow
def test_a_quant_mode_i_bert_dir_written_by_transformers_predicts_as_transformers_and_quantizes(ibert_path, bpe,
                                                                                               glue_dir, tmp_path):
    """A quant_mode dir with every buffer transformers' IBert keeps (our QAT dir re-saved by transformers)."""
    published = tmp_path / "published"
    theirs = transformers.IBertForSequenceClassification.from_pretrained(ibert_path[1] / "qat").eval()
    theirs.save_pretrained(published)
    bpe.save(published)
    assert json.loads((published / "config.json").read_text())["quant_mode"] is True
    answers = predictions(published)
    with torch.no_grad():
        for line, answer in zip(LINES, answers):
            text_a, _, text_b = line.partition("\t")
            ids = [bpe.cls_id, *bpe.encode(text_a), bpe.sep_id] + ([bpe.sep_id, *bpe.encode(text_b), bpe.sep_id]
                                                                   if text_b else [])
            probability, label = theirs(torch.tensor([ids])).logits[0].softmax(-1).max(-1)
            assert answer["label"] == str(int(label)) and answer["score"] == pytest.approx(float(probability),
                                                                                            abs=1e-4)
    again = cli("quantize", "--model", str(published), "--task", "sst2", "--data-dir", str(glue_dir), *QUICK,
                "quantize.epochs=1", f"output.dir={tmp_path / 'again'}")
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "again" / "results.json").read_text())["scores"]["integer"]["dev"]["accuracy"] >= 0.95


@pytest.mark.slow
def test_a_roberta_fine_tunes_on_every_glue_task_of_the_fixtures(bpe, tmp_path):
    """Pairs (<s> a </s></s> b </s>, one token type), three classes (MNLI) and regression (STS-B) on GLUE's files."""
    from test_finetune_cli import GLUE
    from test_finetune_cli import QUICK as FINETUNE_QUICK

    pretrained = saved_by_transformers("RobertaModel", "RobertaConfig", bpe, tmp_path / "roberta")
    result = cli("finetune", "glue", "glue-roberta-base", "--task", "all", "--model", str(pretrained), "--data-dir",
                 str(GLUE), *FINETUNE_QUICK, f"output.dir={tmp_path / 'run'}")
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert set(results["tasks"]) == {"cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"}
    for task, labels in (("mnli", 3), ("stsb", 1), ("rte", 2)):
        config = json.loads((tmp_path / "run" / task / "best" / "config.json").read_text())
        assert config["architectures"] == ["RobertaForSequenceClassification"] and config["num_labels"] == labels
    assert "roberta-base-fp32" in result.stdout  # the table compares with the published RoBERTa-Base
    assert len(list((tmp_path / "run" / "predictions").glob("*.tsv"))) == 10  # one a task, MNLI two (m, mm)


def calibrated_in_transformers(model_dir, tokenizer):
    """An I-BERT dir with quant_mode, its activation ranges set by transformers' own QuantActs (train mode, no
    dropout) on a few sentences, saved again by transformers: every buffer as a published QAT checkpoint has."""
    model = transformers.IBertForMaskedLM.from_pretrained(model_dir).train()
    sentences = [text for text, _ in keyword_sentences(random.Random(3), 16)]
    with torch.no_grad():
        for text in sentences:
            model(torch.tensor([[tokenizer.cls_id, *tokenizer.encode(text), tokenizer.sep_id]]))
    model.eval().save_pretrained(model_dir)
    return model_dir


@pytest.mark.slow
@pytest.mark.parametrize("family", ["roberta", "ibert", "ibert-quant_mode"])
def test_fill_mask_matches_transformers_pipeline(family, bpe, tmp_path):
    classes = {"roberta": ("RobertaForMaskedLM", "RobertaConfig"), "ibert": ("IBertForMaskedLM", "IBertConfig"),
               "ibert-quant_mode": ("IBertForMaskedLM", "IBertConfig")}
    quant = {"quant_mode": True} if family == "ibert-quant_mode" else {}
    model_dir = saved_by_transformers(*classes[family], bpe, tmp_path / family, initializer_range=0.5, **quant)
    if quant:
        calibrated_in_transformers(model_dir, bpe)
    texts = ["the good [MASK] film", "[MASK] movie is a bad [MASK]."]
    result = cli("fill-mask", "--model", str(model_dir), "--top-k", "5", "--format", "jsonl",
                 stdin="\n".join(texts) + "\n")
    assert result.returncode == 0, result.stderr
    answers = [json.loads(line)["masks"] for line in result.stdout.splitlines()]
    pipeline = transformers.pipeline("fill-mask", model=str(model_dir), top_k=5)
    for text, masks in zip(texts, answers):
        expected = pipeline(text.replace("[MASK]", "<mask>"))
        expected = expected if isinstance(expected[0], list) else [expected]
        assert len(masks) == len(expected) == text.count("[MASK]")
        for ours, theirs in zip(masks, expected):
            assert [c["token_id"] for c in ours] == [c["token"] for c in theirs], text
            assert [c["score"] for c in ours] == pytest.approx([c["score"] for c in theirs], abs=1e-5)
            assert [c["token"] for c in ours] == [c["token_str"].strip() or c["token_str"] for c in theirs]


@pytest.mark.slow
def test_force_dequant_runs_qat_and_refuses_the_integer_export_in_one_line(roberta_path, glue_dir, tmp_path):
    best = roberta_path[0]
    out = tmp_path / "gelu"
    result = cli("quantize", "--model", str(best), "--task", "sst2", "--data-dir", str(glue_dir), *QUICK,
                 "quantize.epochs=1", "quantize.force_dequant=gelu", f"output.dir={out}")
    assert result.returncode == 0, result.stderr
    results = json.loads((out / "results.json").read_text())
    assert set(results["scores"]) == {"fp32", "calibrated", "qat"} and not (out / "integer").exists()
    assert results["integer_export_error"].startswith("no integer-only export: quantize.force_dequant=gelu keeps "
                                                      "gelu in float")
    assert json.loads((out / "qat" / "config.json").read_text())["force_dequant"] == "gelu"
    assert "integer-only" not in result.stdout and "I-BERT QAT" in result.stdout


def test_electra_s_classifier_dropout_on_an_i_bert_dir_is_one_line_saying_how_to_fix_it(bpe, glue_dir, tmp_path):
    model_dir = saved_by_transformers("IBertForMaskedLM", "IBertConfig", bpe, tmp_path / "ibert")
    result = cli("finetune", "glue", "glue-electra-small", "--task", "sst2", "--model", str(model_dir), "--data-dir",
                 str(glue_dir), f"output.dir={tmp_path / 'run'}")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "hidden_dropout_prob" in result.stderr and "finetune.classifier_dropout=null" in result.stderr
    assert not (tmp_path / "run").exists()


def test_force_dequant_outside_i_berts_choices_is_one_line(tmp_path):
    result = cli("quantize", "--model", str(tmp_path), "--task", "sst2", "quantize.force_dequant=all",
                 f"output.dir={tmp_path / 'run'}")
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: quantize.force_dequant: 'all' is not one of: none, gelu, softmax, "
                                     "layernorm, nonlinear")


def test_tokenizer_train_writes_a_byte_level_bpe_transformers_reads(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"{text}.\n\n" for text, _ in keyword_sentences(random.Random(2), 200)))
    result = cli("tokenizer", "train", "albert-tiny", f"data.source={corpus}", "tokenizer.model_type=byte_bpe",
                 "tokenizer.vocab_size=300", "--out", str(tmp_path / "tok"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"wrote {tmp_path / 'tok' / 'tokenizer.json'} (300 pieces)"
    ours = Tokenizer.load(tmp_path / "tok")
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert isinstance(ours, ByteLevelBPETokenizer) and type(theirs).__name__.startswith("RobertaTokenizer")
    assert ours.encode("the good film <mask>") == theirs("the good film <mask>", add_special_tokens=False)["input_ids"]
    again = cli("tokenizer", "train", "albert-tiny", f"data.source={corpus}", "tokenizer.model_type=byte_bpe",
                "--out", str(tmp_path / "tok"))
    assert again.returncode == 2 and "already exists" in again.stderr


def test_extended_i_bert_dirs_say_transformers_cannot_load_them(tmp_path):
    model = IBertForSequenceClassification(IBertConfig(vocab_size=50, embedding_size=16, num_hidden_groups=1,
                                                       **{**TINY, "num_hidden_layers": 2}))
    hf_format.save_pretrained(model, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == ["EncoderkitIBertForSequenceClassification"]
    assert config["encoderkit_extensions"] == ["embedding_size", "num_hidden_groups"]
    readme = (tmp_path / "README.md").read_text()
    assert "`embedding_size`" in readme and "`num_hidden_groups`" in readme and "transformers" in readme
    assert load_model(tmp_path, "sequence_classification").config.extensions() == config["encoderkit_extensions"]


def test_i_bert_layer_names_get_electra_s_layerwise_learning_rates():
    model = IBertForSequenceClassification(IBertConfig(vocab_size=50, embedding_size=16, **TINY))
    groups = parameter_groups(model, 0.01, layerwise_learning_rate(model, learning_rate=1.0, decay=0.5))
    lrs = {id(p): group["lr"] for group in groups for p in group["params"]}
    lr = {name: lrs[id(p)] for name, p in model.named_parameters()}
    assert lr["classifier.out_proj.weight"] == 1.0
    assert lr["ibert.encoder.layer.1.attention.self.query.weight"] == 0.5**2
    assert lr["ibert.encoder.layer.0.output.dense.weight"] == 0.5**3
    assert lr["ibert.embeddings.word_embeddings.weight"] == lr["ibert.embeddings_project.weight"] == 0.5**4


@pytest.mark.slow
def test_the_benchmark_script_times_a_roberta_run(roberta_path, tmp_path):
    """One token type and pad id 1: the benchmark's batches follow the model's config, so every side runs."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "benchmarks" / "bench_quantize_run.py").is_file():
        pytest.skip("no benchmarks/ beside the tests")
    env = {**os.environ, "TORCHDYNAMO_DISABLE": "1", "COLUMNS": "200"}
    result = subprocess.run([sys.executable, "-m", "benchmarks.bench_quantize_run", str(roberta_path[1]), "--threads",
                             "1", "--shapes", "2x32", "--warmup", "1", "--repeats", "1", "--json",
                             str(tmp_path / "b.json")], capture_output=True, text=True, timeout=300, env=env, cwd=root)
    assert result.returncode == 0, result.stderr
    sides = json.loads((tmp_path / "b.json").read_text())["timings"]["2x32"]
    assert all("latency_ms" in side for side in sides.values()) and set(sides) == {"fp32", "integer", "transformers"}


# ---- RoBERTa's token, question-answering and multiple-choice heads from the CLI ---------------------


@pytest.fixture(scope="module")
def word_bpe():
    """A byte-level BPE whose pieces are the whole words of the generated tagging, span and choice tasks."""
    from test_finetune_tokens_cli import tagged_sentence
    from test_qa_choice_cli import TARGETS, span_example

    rng = random.Random(0)
    texts = [" ".join(tagged_sentence(rng)[0]) for _ in range(300)] + [span_example(rng, i)[0] for i in range(300)]
    return ByteLevelBPETokenizer.train(texts + [" ".join(TARGETS), "What comes after the cue? It is"] * 5, 700)


def jsonl_answers(model_dir, lines: list[str]) -> list[dict]:
    """`encoderkit predict --format jsonl`'s answers, from the command's function (no process start per dir)."""
    from encoderkit.commands.predict import run

    out, err = io.StringIO(), io.StringIO()
    assert run(model_dir, io.BytesIO("".join(line + "\n" for line in lines).encode()), "jsonl", out=out, err=err) == 0
    return [json.loads(line) for line in out.getvalue().splitlines()]


@pytest.mark.slow
def test_roberta_tags_answers_and_chooses_from_the_cli(word_bpe, tmp_path):
    """`finetune tokens`, `qa` and `choice` on a RoBERTa saved by transformers, then `predict` on each best dir: the
    tags are transformers' own on RobertaTokenizerFast(add_prefix_space=True)'s word pieces (run_ner's), the choice
    scores its RobertaForMultipleChoice's."""
    from test_finetune_tokens_cli import tagged_sentence, write_conll
    from test_qa_choice_cli import span_example, write_squad, write_swag

    pretrained = saved_by_transformers("RobertaModel", "RobertaConfig", word_bpe, tmp_path / "roberta")
    rng = random.Random(1)
    for split, count in (("train", 240), ("dev", 40)):
        write_conll(tmp_path / f"{split}.conll", [tagged_sentence(rng) for _ in range(count)])
    write_squad(tmp_path / "train.json", 320, 1), write_squad(tmp_path / "dev.json", 40, 2)
    write_swag(tmp_path / "train.csv", 320, 5), write_swag(tmp_path / "dev.csv", 40, 6)
    quick = ["train.batch_size=16", "train.log_every=10"]
    commands = {
        "tokens": ["--train", tmp_path / "train.conll", "--validation", tmp_path / "dev.conll",
                   "finetune.max_seq_length=32", "finetune.epochs=3", "train.learning_rate=3e-3"],
        "qa": ["squad-electra-small", "--train", tmp_path / "train.json", "--dev", tmp_path / "dev.json",
               "qa.max_seq_length=40", "qa.doc_stride=8", "qa.max_query_length=12", "qa.layerwise_lr_decay=1.0",
               "qa.epochs=3", "train.learning_rate=2e-3"],
        "choice": ["swag-electra-small", "--train", tmp_path / "train.csv", "--dev", tmp_path / "dev.csv",
                   "choice.max_seq_length=24", "choice.epochs=3", "choice.layerwise_lr_decay=1.0",
                   "train.learning_rate=4e-3"]}
    results = {}
    for command, args in commands.items():
        result = cli("finetune", command, "--model", str(pretrained), *map(str, args), *quick,
                     f"output.dir={tmp_path / command}")
        assert result.returncode == 0, result.stderr
        results[command] = json.loads((tmp_path / command / "results.json").read_text())
    assert results["tokens"]["median"]["validation"]["f1"] >= 0.95
    assert results["qa"]["dev"]["exact_match"] >= 90
    assert results["choice"]["best_checkpoint"]["scores"]["dev"]["accuracy"] >= 0.85
    best = {"tokens": tmp_path / "tokens" / "best", "qa": tmp_path / "qa" / "qa" / "best",
            "choice": tmp_path / "choice" / "choice" / "best"}
    for command, head in (("tokens", "TokenClassification"), ("qa", "QuestionAnswering"), ("choice", "MultipleChoice")):
        assert json.loads((best[command] / "config.json").read_text())["architectures"] == [f"RobertaFor{head}"]

    sentences = [tagged_sentence(rng)[0] for _ in range(4)]
    answers = jsonl_answers(best["tokens"], [" ".join(words) for words in sentences])
    tokenizer = transformers.RobertaTokenizerFast.from_pretrained(best["tokens"], add_prefix_space=True)
    tagger = transformers.RobertaForTokenClassification.from_pretrained(best["tokens"]).eval()
    for words, answer in zip(sentences, answers, strict=True):
        encoding = tokenizer(words, is_split_into_words=True, return_tensors="pt")
        word_ids = encoding.word_ids()
        firsts = [i for i, word in enumerate(word_ids) if word is not None and word != word_ids[i - 1]]
        with torch.no_grad():
            tags = tagger(**encoding).logits[0, firsts].argmax(-1).tolist()
        assert answer["words"] == words and answer["tags"] == [tagger.config.id2label[tag] for tag in tags]

    contexts = [span_example(rng, i) for i in range(4)]
    answers = jsonl_answers(best["qa"], [json.dumps({"question": qa["question"], "context": context})
                                         for context, qa in contexts])
    assert [answer["answer"] for answer in answers] == [qa["answers"][0]["text"] for _, qa in contexts]

    context, choices = "the old lemon house.", ["It is a mango.", "It is a lemon.", "It is a kiwi."]
    [answer] = jsonl_answers(best["choice"], [json.dumps({"context": context, "choices": choices})])
    tokenizer = transformers.RobertaTokenizerFast.from_pretrained(best["choice"])
    chooser = transformers.RobertaForMultipleChoice.from_pretrained(best["choice"]).eval()
    pairs = tokenizer([context] * len(choices), choices, padding=True, return_tensors="pt")
    with torch.no_grad():
        scores = chooser(**{key: value[None] for key, value in pairs.items()}).logits[0].softmax(-1)
    assert answer["label"] == 1 and answer["scores"] == pytest.approx(scores.tolist(), abs=1e-5)
