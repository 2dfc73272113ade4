import json

import pytest
import torch

from mtkit.core.utils import MtkitError
from mtkit.data import Tokenizer
from mtkit.data import tokenizer as T

TEXTS = [
    "I don't like this flight!",
    "@united I don't like delays 😂",
    "Great flight, thanks @united http://t.co/abc",
    "great crew great flight #happy 2 hours early",
    "happy happy 10:30 landing",
]


@pytest.fixture
def tokenizer():
    return Tokenizer.fit(TEXTS, min_freq=1)


def test_special_and_normalisation_token_ids(tokenizer):
    assert tokenizer.tokens[:7] == ["<pad>", "<unk>", "<mask>", "<cls>", "<user>", "<url>", "<num>"]
    assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.mask_id, tokenizer.cls_id) == (0, 1, 2, 3)
    ids = (T.PAD_ID, T.UNK_ID, T.MASK_ID, T.CLS_ID)
    assert ids == T.SPECIAL_IDS == tuple(T.RESERVED_TOKENS.index(t) for t in T.SPECIAL_TOKENS)
    assert tokenizer.tokens[T.MASK_ID] == "<mask>"


def test_tokenize_normalises_users_urls_numbers_and_hashtags(tokenizer):
    tokens = tokenizer.tokenize("@Bob Don’t miss HTTPS://x.co/Ab at 10:30, #GoodVibes!!")
    assert tokens == ["<user>", "don't", "miss", "<url>", "at", "<num>", ",", "goodvibes", "!", "!"]
    tokens = tokenizer.tokenize("www.example.com costs $3.50 😂")
    assert tokens == ["<url>", "costs", "$", "<num>", "😂"]


def test_vocabulary_order_is_by_frequency_then_alphabet(tokenizer):
    # 3 uses each, then 2 each, then 1 each; ties in alphabetical (code point) order.
    assert tokenizer.tokens[7:] == [
        *["flight", "great", "happy"],
        *["don't", "i", "like"],
        *["!", ",", "crew", "delays", "early", "hours", "landing", "thanks", "this", "😂"],
    ]
    assert len(tokenizer) == tokenizer.vocab_size == 23


def test_min_freq_and_max_vocab_limit_the_vocabulary():
    tokenizer = Tokenizer.fit(TEXTS, min_freq=3)
    assert tokenizer.tokens[7:] == ["flight", "great", "happy"]
    assert len(Tokenizer.fit(TEXTS, max_vocab=9, min_freq=1)) == 9


def test_encode_pads_truncates_and_marks_unknown_words(tokenizer):
    ids = tokenizer.encode(["great flight", "zebra"], max_length=5)
    assert ids.dtype == torch.long and ids.shape == (2, 5)
    great, flight = tokenizer.token_to_id["great"], tokenizer.token_to_id["flight"]
    assert ids[0].tolist() == [tokenizer.cls_id, great, flight, 0, 0]
    assert ids[1].tolist() == [tokenizer.cls_id, tokenizer.unk_id, 0, 0, 0]
    without_cls = tokenizer.encode(["great flight"], max_length=2, add_cls=False)
    assert without_cls.tolist() == [[great, flight]]
    assert tokenizer.encode(["great great great"], max_length=2).tolist() == [[3, great]]


def test_decode_inverts_encode_for_known_words(tokenizer):
    texts = TEXTS[:3]
    decoded = tokenizer.decode(tokenizer.encode(texts, max_length=32))
    assert decoded == [" ".join(tokenizer.tokenize(text)) for text in texts]
    assert tokenizer.decode([3, 1, 2, 0]) == ["<unk> <mask>"]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda t: t.encode("just one string"), r"\[text\]"),
        (lambda t: t.encode([]), "non-empty"),
        (lambda t: t.encode(["ok"], max_length=0), "max_length"),
        (lambda t: t.decode([0, 999]), "ids must be in"),
        (lambda t: Tokenizer.fit([]), "non-empty"),
        (lambda t: Tokenizer.fit(["a", None]), r"texts\[1\]"),
    ],
)
def test_bad_inputs_raise_clear_errors(tokenizer, call, message):
    with pytest.raises(MtkitError, match=message):
        call(tokenizer)


def test_save_load_round_trip_gives_identical_encodings(tokenizer, tmp_path):
    path = tmp_path / "tokenizer.json"
    tokenizer.save(path)
    loaded = Tokenizer.load(path)
    assert loaded.tokens == tokenizer.tokens
    assert torch.equal(loaded.encode(TEXTS), tokenizer.encode(TEXTS))
    assert [p.name for p in tmp_path.iterdir()] == ["tokenizer.json"]  # no temporary file left
    as_json = json.dumps(tokenizer.to_dict())  # e.g. stored in a checkpoint's metadata
    assert Tokenizer.from_dict(json.loads(as_json)).tokens == tokenizer.tokens


SAVED = {"format": "mtkit.Tokenizer", "version": 1, "tokens": []}


@pytest.mark.parametrize(
    "content, message",
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe\x00", "not valid JSON"),
        (json.dumps({"model": "weights"}).encode(), "not a saved Tokenizer"),
        (json.dumps({**SAVED, "version": 99}).encode(), "version"),
        (json.dumps({**SAVED, "tokens": ["a"]}).encode(), "start"),
        # Nested thousands deep: a RecursionError without the loader's bound.
        (b"[" * 5000 + b"]" * 5000, r"not a saved Tokenizer: .*bad\.json is nested more than"),
        (b'{"tokens": ' + b"[" * 101 + b"]" * 101 + b"}", "nested more than 100 levels"),
        (b'{"a": 1', r"bad\.json is not valid JSON: .* at line 1, column"),
    ],
)
def test_loading_a_corrupt_or_foreign_file_fails_clearly(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(MtkitError, match=message):
        Tokenizer.load(path)


def test_empty_and_blank_texts_encode_to_cls_then_padding(tokenizer):
    ids = tokenizer.encode(["", "   \n\t"], max_length=4)
    assert ids.tolist() == [[tokenizer.cls_id, 0, 0, 0]] * 2
    assert tokenizer.tokenize("") == [] and tokenizer.decode(ids) == ["", ""]


def test_a_huge_text_is_truncated_to_max_length(tokenizer):
    ids = tokenizer.encode(["great flight " * 50_000], max_length=6)
    great, flight = tokenizer.token_to_id["great"], tokenizer.token_to_id["flight"]
    assert ids.tolist() == [[tokenizer.cls_id, great, flight, great, flight, great]]


def test_non_ascii_words_emoji_and_scripts_are_kept_as_tokens():
    tokenizer = Tokenizer.fit(["café naïve 😂 東京", "café 東京"], min_freq=1)
    assert tokenizer.tokenize("Café — 東京!😂") == ["café", "—", "東京", "!", "😂"]
    ids = tokenizer.encode(["naïve 😂 東京"], max_length=5)
    assert tokenizer.decode(ids) == ["naïve 😂 東京"]
    assert tokenizer.unk_id not in ids.tolist()[0]
