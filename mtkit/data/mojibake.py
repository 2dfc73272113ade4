"""Repairing the tweet corpus's damaged character encoding ("mojibake"): `repair_mojibake`.

The corpus file is not valid UTF-8: emoji, curly quotes and accents were damaged by being read
as Windows-1252 and written as Mac Roman, two to four times over, one source after a UTF-8
double encoding first. `repair_mojibake` replays that damage on candidate characters to look
the damaged bytes up (see `load_text` in text.py for what it recovers).
"""

from __future__ import annotations

import functools
from collections import defaultdict

# One round of the damage reads bytes as Windows-1252 and writes the characters as Mac Roman;
# a character Mac Roman lacks became "_", and the five bytes Windows-1252 leaves undefined were
# copied through unchanged. That maps each byte to exactly one byte, so one round is a
# bytes.translate table.

_CP1252_UNDEFINED = b"\x81\x8d\x8f\x90\x9d"


def _round_byte(byte: int) -> bytes:
    if byte in _CP1252_UNDEFINED:
        return bytes([byte])
    try:
        return bytes([byte]).decode("cp1252").encode("mac_roman")
    except UnicodeEncodeError:
        return b"_"


_DAMAGE_ROUND = b"".join(_round_byte(byte) for byte in range(256))


def _double_utf8(raw: bytes) -> bytes:
    """The other damage seen: bytes read as Windows-1252 and written back as UTF-8."""
    chars = [chr(b) if b in _CP1252_UNDEFINED else bytes([b]).decode("cp1252") for b in raw]
    return "".join(chars).encode("utf-8")


# The characters a tweet plausibly held: Latin-1 and Latin Extended-A letters, punctuation,
# currency, arrows and symbols, and the emoji blocks.
_CANDIDATE_RANGES = [
    (0x00A0, 0x0180),
    (0x2000, 0x2070),
    (0x20AC, 0x20AD),
    (0x2122, 0x2123),
    (0x2190, 0x2200),
    (0x2600, 0x27C0),
    (0xFE0F, 0xFE10),
    (0x1F300, 0x1F650),
    (0x1F680, 0x1F700),
    (0x1F900, 0x1FA00),
]
# When damage made several characters look alike, keep the first of these among them.
_PREFERRED = "…’‘“”–—•"
# The damage chains found in this file, as (UTF-8 double-encoded first?, rounds of damage).
# Different sources in the corpus went through different chains; each text has one.
_CHAINS = [(False, 2), (False, 3), (False, 4), (True, 4)]


@functools.lru_cache(maxsize=1)
def _reverse_tables() -> list[dict[bytes, str]]:
    """For each damage chain, a map from damaged bytes to the original character ("" when the
    damage made it ambiguous and no preferred character is among the candidates)."""
    tables = []
    for double, rounds in _CHAINS:
        candidates: dict[bytes, list[str]] = defaultdict(list)
        for start, stop in _CANDIDATE_RANGES:
            for code in range(start, stop):
                damaged = chr(code).encode("utf-8")
                if double:
                    damaged = _double_utf8(damaged)
                for _ in range(rounds):
                    damaged = damaged.translate(_DAMAGE_ROUND)
                if max(damaged) >= 0x80:  # all-ASCII results would eat genuine text like "__"
                    candidates[damaged].append(chr(code))
        tables.append({key: _pick(chars) for key, chars in candidates.items()})
    return tables


def _pick(chars: list[str]) -> str:
    if len(chars) == 1:
        return chars[0]
    return next((c for c in _PREFERRED if c in chars), "")


def repair_mojibake(raw: bytes) -> str:
    """Decode one damaged text. Returns the repaired string.

    ASCII passes through. Each run of damaged bytes is matched (longest first) against the
    reverse table of every damage chain; the chain explaining the most bytes wins (ties: the one
    giving the shortest text). Unexplained or ambiguous bytes become a space.
    """
    if raw.isascii():
        return raw.decode("ascii")
    best_text, best_score = "", None
    for table in _reverse_tables():
        text, explained = _decode_with(raw, table)
        score = (explained, -len(text))
        if best_score is None or score > best_score:
            best_text, best_score = text, score
    return best_text


_LONGEST_KEY = 10  # the longest damaged form of one candidate character, in bytes


def _decode_with(raw: bytes, table: dict[bytes, str]) -> tuple[str, int]:
    """Decode with one chain's table. Returns (text, number of non-ASCII bytes explained)."""
    pieces, explained, i = [], 0, 0
    while i < len(raw):
        byte = raw[i]
        if byte < 0x80 and byte != ord("_"):  # "_" may start a damaged character
            pieces.append(chr(byte))
            i += 1
            continue
        for length in range(min(_LONGEST_KEY, len(raw) - i), 1, -1):
            char = table.get(raw[i : i + length])
            if char is not None:
                pieces.append(char or " ")
                explained += sum(b >= 0x80 for b in raw[i : i + length])
                i += length
                break
        else:
            pieces.append("_" if byte == ord("_") else " ")
            i += 1
    return "".join(pieces), explained
