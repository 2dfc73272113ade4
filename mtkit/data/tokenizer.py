"""A word-level tokenizer for short social-media texts: normalise, split, map words to ids.

Ids 0-3 are special tokens with fixed meanings (<pad> <unk> <mask> <cls>), 4-6 stand for any
@mention, URL or number, and the rest are the most frequent words of the training texts.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path

import torch

from mtkit.core.checkpoint import write_atomically
from mtkit.core.files import load_json
from mtkit.core.utils import MtkitError, check_positive

SPECIAL_TOKENS = ("<pad>", "<unk>", "<mask>", "<cls>")
# Their ids: a token's id is its position in the vocabulary, and every vocabulary starts so.
PAD_ID, UNK_ID, MASK_ID, CLS_ID = range(len(SPECIAL_TOKENS))
SPECIAL_IDS = (PAD_ID, UNK_ID, MASK_ID, CLS_ID)
# Normalisation tokens: ordinary vocabulary entries that replace every mention, URL and number,
# so "@bob" and "@alice" share one learned embedding instead of two rare ones.
USER, URL, NUM = "<user>", "<url>", "<num>"
RESERVED_TOKENS = (*SPECIAL_TOKENS, USER, URL, NUM)
_FORMAT = "mtkit.Tokenizer"
_FORMAT_VERSION = 1

# One alternative per kind of token, tried in order at each position.
_TOKEN_PATTERN = re.compile(
    r"""
    (?P<url>(?:https?://|www\.)\S+)
    | (?P<user>@\w+)
    | (?P<num>\d+(?:[.,:]\d+)*\b)     # 42, 3.5, 10:30, 1,000 (but "2nd" is a word)
    | (?P<word>\w+(?:'\w+)*)          # words, keeping inner apostrophes: don't, it's
    | (?P<other>\S)                   # any other single character: punctuation, emoji
    """,
    re.VERBOSE,
)
_HASHTAG_SIGN = re.compile(r"#(?=\w)")
_CURLY_APOSTROPHES = str.maketrans({"’": "'", "‘": "'"})


class Tokenizer:
    """Maps texts to fixed-length id tensors and back.

    Build one with `Tokenizer.fit(texts)`; the id of a token is its position in `tokens`.
    """

    def __init__(self, tokens: list[str]):
        """tokens: the whole vocabulary in id order, starting with RESERVED_TOKENS."""
        _check_tokens(tokens)
        self.tokens = list(tokens)
        self.token_to_id = {token: i for i, token in enumerate(self.tokens)}

    @classmethod
    def fit(cls, texts, max_vocab: int = 20000, min_freq: int = 2) -> Tokenizer:
        """Build a vocabulary from training texts.

        Keeps words seen at least `min_freq` times, most frequent first (ties alphabetically,
        so the result is deterministic), up to `max_vocab` tokens in total including the
        reserved ones. Returns a Tokenizer.
        """
        texts = _check_texts(texts)
        check_positive("max_vocab", max_vocab, integer=True)
        check_positive("min_freq", min_freq, integer=True)
        if max_vocab < len(RESERVED_TOKENS):
            raise MtkitError(
                f"max_vocab must be at least {len(RESERVED_TOKENS)} (the reserved tokens "
                f"{list(RESERVED_TOKENS)}), got {max_vocab}"
            )
        counts = Counter(token for text in texts for token in tokenize(text))
        words = sorted(
            (word for word, count in counts.items() if count >= min_freq),
            key=lambda word: (-counts[word], word),
        )
        words = [word for word in words if word not in RESERVED_TOKENS]
        return cls([*RESERVED_TOKENS, *words[: max_vocab - len(RESERVED_TOKENS)]])

    def tokenize(self, text: str) -> list[str]:
        """The normalised tokens of one text (see `tokenize`)."""
        return tokenize(text)

    def encode(self, texts, max_length: int = 64, add_cls: bool = True) -> torch.Tensor:
        """Ids of a list of N texts as a LongTensor of shape (N, max_length).

        With add_cls, each row starts with <cls> (a slot a classifier can read its summary
        from). Longer texts are truncated, shorter ones padded with <pad> (id 0); words not in
        the vocabulary become <unk>.
        """
        texts = _check_texts(texts)
        check_positive("max_length", max_length, integer=True)
        ids = torch.full((len(texts), max_length), self.pad_id, dtype=torch.long)
        prefix = [self.cls_id] if add_cls else []
        for row, text in enumerate(texts):
            row_ids = prefix + [self.token_to_id.get(t, self.unk_id) for t in tokenize(text)]
            row_ids = row_ids[:max_length]
            ids[row, : len(row_ids)] = torch.tensor(row_ids, dtype=torch.long)
        return ids

    def decode(self, ids) -> list[str]:
        """Turn ids back into text: one string per row of a (N, L) tensor or nested list.

        A 1-D input counts as one row. Tokens are joined with single spaces; <pad> and <cls>
        are dropped. Returns a list of strings.
        """
        try:
            ids = torch.as_tensor(ids)
        except (TypeError, ValueError, RuntimeError):  # a string, ragged lists, ...
            raise MtkitError(
                f"ids must be integers of shape (N, L) or (L,), got {type(ids).__name__} "
                f"{ids!r:.60}"
            ) from None
        if ids.ndim == 1:
            ids = ids.unsqueeze(0)
        if ids.ndim != 2 or ids.is_floating_point():
            raise MtkitError(
                f"ids must be integers of shape (N, L) or (L,), got {ids.dtype} "
                f"of shape {tuple(ids.shape)}"
            )
        if ids.numel() and (ids.min() < 0 or ids.max() >= len(self)):
            raise MtkitError(
                f"ids must be in [0, {len(self)}), got values {int(ids.min())}..{int(ids.max())}"
            )
        skip = {self.pad_id, self.cls_id}
        return [" ".join(self.tokens[i] for i in row if i not in skip) for row in ids.tolist()]

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def pad_id(self) -> int:
        return PAD_ID

    @property
    def unk_id(self) -> int:
        return UNK_ID

    @property
    def mask_id(self) -> int:
        return MASK_ID

    @property
    def cls_id(self) -> int:
        return CLS_ID

    def to_dict(self) -> dict:
        """A JSON-serialisable description, e.g. to store with a model checkpoint."""
        return {"format": _FORMAT, "version": _FORMAT_VERSION, "tokens": list(self.tokens)}

    @classmethod
    def from_dict(cls, data: dict) -> Tokenizer:
        """Rebuild a Tokenizer from `to_dict()` output; MtkitError if it is not one."""
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise MtkitError(f"not a saved Tokenizer: expected a dict with format={_FORMAT!r}")
        if data.get("version") != _FORMAT_VERSION:
            raise MtkitError(
                f"saved Tokenizer has version {data.get('version')!r}; "
                f"this mtkit reads version {_FORMAT_VERSION}"
            )
        return cls(data.get("tokens"))

    def save(self, path: str | os.PathLike) -> None:
        """Write the tokenizer as JSON. The file is written next to `path` and then renamed over
        it, so a crash never leaves a half-written tokenizer behind."""
        data = self.to_dict()
        write_atomically(path, lambda file: json.dump(data, file, ensure_ascii=False), mode="w")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        """Read a tokenizer written by `save`; MtkitError if the file is not one."""
        if not Path(path).is_file():
            raise MtkitError(f"{path} does not exist (or is not a file): no tokenizer to load")
        try:  # bounded: too large or too deeply nested is an MtkitError, not a RecursionError
            data = load_json(path)
        except MtkitError as error:
            raise MtkitError(f"not a saved Tokenizer: {error}") from None
        try:
            return cls.from_dict(data)
        except MtkitError as error:
            raise MtkitError(f"{path}: {error}") from None

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size})"


def tokenize(text: str) -> list[str]:
    """Split one text into normalised tokens.

    Lowercases; @mentions become <user>, URLs <url>, numbers <num>; "#word" keeps just "word";
    curly apostrophes become straight ones so "don’t" and "don't" match; every other
    non-space character (punctuation, emoji) is a token of its own.
    """
    text = text.lower().translate(_CURLY_APOSTROPHES)
    text = _HASHTAG_SIGN.sub("", text)
    replacement = {"url": URL, "user": USER, "num": NUM}
    return [
        replacement.get(match.lastgroup, match.group()) for match in _TOKEN_PATTERN.finditer(text)
    ]


def _check_texts(texts) -> list[str]:
    if isinstance(texts, str):
        raise MtkitError("texts must be a list of strings; wrap a single text as [text]")
    if not isinstance(texts, (list, tuple)) or len(texts) == 0:
        raise MtkitError(f"texts must be a non-empty list of strings, got {texts!r:.80}")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise MtkitError(f"texts must all be strings, but texts[{i}] is {type(text).__name__}")
    return list(texts)


def _check_tokens(tokens) -> None:
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise MtkitError("tokens must be a list of strings")
    if tuple(tokens[: len(RESERVED_TOKENS)]) != RESERVED_TOKENS:
        raise MtkitError(
            f"tokens must start with {list(RESERVED_TOKENS)}, got {tokens[: len(RESERVED_TOKENS)]}"
        )
    if len(set(tokens)) != len(tokens):
        raise MtkitError("tokens must not repeat: each token needs exactly one id")
