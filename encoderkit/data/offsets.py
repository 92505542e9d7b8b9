"""Character offsets of SentencePiece pieces in the original text, as transformers' fast ALBERT tokenizer gives them.

SentencePiece reports where each piece's bytes sit in the text it was given, which here is the text after
ALBERT's normalisation (tokenizer.normalize_text: whitespace runs collapsed, `` and '' to ", accents stripped,
lowercased). So the normalisation is redone here one original character at a time, remembering where each
normalised character came from, and SentencePiece's spans are mapped back through that. The conventions are
those of transformers' fast tokenizer (`offset_mapping`): a piece's span leaves out the whitespace its "▁"
stands for; a piece that is only "▁" spans the first character of the piece after it; characters that come
from one original character (a ligature, an accented letter) all span that character; the " that replaces
`` or '' spans the second of the two.
"""

from __future__ import annotations

import unicodedata

Span = tuple[int, int]


def normalize_with_origins(text: str, start: int, do_lower_case: bool, keep_accents: bool) -> tuple[str, list[Span]]:
    """tokenizer.normalize_text of `text`, and for each of its characters the span of `text` (shifted by `start`)
    it comes from."""
    chars: list[str] = []
    unlowered: list[str] = []
    origins: list[Span] = []
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():  # a whitespace run between words becomes one space; none at either end
            while i < n and text[i].isspace():
                i += 1
            if chars and i < n:
                chars.append(" ")
                unlowered.append(" ")
                origins.append((start + i - 1, start + i))
            continue
        if text.startswith(("``", "''"), i):
            chars.append('"')
            unlowered.append('"')
            origins.append((start + i + 1, start + i + 2))
            i += 2
            continue
        piece = text[i]
        if not keep_accents and not piece.isascii():
            piece = "".join(c for c in unicodedata.normalize("NFKD", piece) if not unicodedata.combining(c))
        for char in piece.lower() if do_lower_case else piece:
            chars.append(char)
            origins.append((start + i, start + i + 1))
        unlowered.append(piece)
        i += 1
    normalized = "".join(chars)
    if do_lower_case:  # lowercasing in one go knows the context (a word-final sigma), character by character not
        whole = "".join(unlowered).lower()
        normalized = whole if len(whole) == len(normalized) else normalized
    return normalized, origins


def piece_spans(serialized: bytes) -> list[tuple[int, int, int]]:
    """(id, begin, end) of each piece of a serialized SentencePieceText: byte offsets into the encoded text.

    SentencePiece's `out_type="serialized_proto"` read without protobuf: SentencePieceText.pieces is field 2,
    and each SentencePiece has id (2), begin (4) and end (5) as varints.
    """
    pieces = []
    for field, value in _fields(serialized):
        if field == 2:
            values = {f: v for f, v in _fields(value) if f in (2, 4, 5)}
            pieces.append((values.get(2, 0), values.get(4, 0), values.get(5, 0)))
    return pieces


def _fields(buffer: bytes):
    """(field number, value) of a protobuf message: ints for varints, bytes for length-delimited fields."""
    position = 0
    while position < len(buffer):
        key, position = _varint(buffer, position)
        field, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, position = _varint(buffer, position)
        elif wire_type == 2:
            length, position = _varint(buffer, position)
            value, position = buffer[position : position + length], position + length
        elif wire_type == 5:  # fixed32 (SentencePieceText.score)
            value, position = buffer[position : position + 4], position + 4
        elif wire_type == 1:
            value, position = buffer[position : position + 8], position + 8
        else:
            raise ValueError(f"unexpected protobuf wire type {wire_type}")
        yield field, value


def _varint(buffer: bytes, position: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        byte = buffer[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, position
        shift += 7


def map_spans(normalized: str, origins: list[Span], spans: list[tuple[int, int, int]]) -> list[Span]:
    """Original-text spans of pieces given as (id, begin byte, end byte) in `normalized`."""
    char_at_byte = {}
    position = 0
    for index, char in enumerate(normalized):
        char_at_byte[position] = index
        position += len(char.encode("utf-8"))
    char_at_byte[position] = len(normalized)
    # The normalised characters of each piece, whitespace (what its "▁" stands for) left out.
    piece_chars = []
    for _, begin, end in spans:
        first, last = char_at_byte[begin], char_at_byte[end]
        piece_chars.append([i for i in range(first, last) if not normalized[i].isspace()])
    offsets = []
    for k, chars in enumerate(piece_chars):
        if not chars:  # "▁" alone: the first character of the next piece that has one
            following = next((c for c in piece_chars[k + 1 :] if c), None)
            chars = following[:1] if following else []
        if not chars:
            offsets.append((origins[-1][1], origins[-1][1]) if origins else (0, 0))
            continue
        offsets.append((min(origins[i][0] for i in chars), max(origins[i][1] for i in chars)))
    return offsets
