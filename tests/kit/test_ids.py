"""Opaque ids: ULID layout, Crockford base32, time-ordered."""

from __future__ import annotations

import re

import pytest

from profilestore.kit import ids

ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def _reference(value: int) -> str:
    """Five bits at a time from the least significant end, written out plainly."""
    chars = []
    for _ in range(26):
        chars.append(ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


@pytest.mark.parametrize("random_bits", [0, 1, 2**80 - 1, 0x5A5A5A5A5A5A5A5A5A5A, 123456789012345678901234])
@pytest.mark.parametrize("millis", [0, 1, 1_764_000_000_000, 2**48 - 1])
def test_an_id_is_the_base32_of_its_milliseconds_and_random_bits(
    monkeypatch: pytest.MonkeyPatch, millis: int, random_bits: int
) -> None:
    monkeypatch.setattr(ids.time, "time_ns", lambda: millis * 1_000_000 + 999_999)
    monkeypatch.setattr(ids.secrets, "randbits", lambda bits: random_bits)

    assert ids.new_id("evt") == "evt_" + _reference(millis << 80 | random_bits)


def test_ids_are_unique_and_well_formed() -> None:
    made = [ids.new_id("sub") for _ in range(2000)]
    assert len(set(made)) == len(made)
    assert all(re.fullmatch(r"sub_[0-9a-hjkmnp-tv-z]{26}", m) for m in made)


def test_ids_made_together_are_unique_well_formed_and_of_their_moment(monkeypatch: pytest.MonkeyPatch) -> None:
    millis = 1_764_000_000_000
    monkeypatch.setattr(ids.time, "time_ns", lambda: millis * 1_000_000)
    made = ids.new_ids("evt", 1000)

    assert len(made) == len(set(made)) == 1000
    assert all(re.fullmatch(r"evt_[0-9a-hjkmnp-tv-z]{26}", m) for m in made)
    # the first ten characters carry the milliseconds, exactly as new_id writes them
    assert {m[4:14] for m in made} == {_reference(millis << 80)[:10]}


@pytest.mark.parametrize("millis", [0, 1_764_000_000_000, 2**48 - 1])
def test_ids_made_together_spell_their_bits_as_one_id_does(monkeypatch: pytest.MonkeyPatch, millis: int) -> None:
    randomness = bytes(range(10)) + b"\xff" * 10 + b"\x00" * 9 + b"\x01"
    monkeypatch.setattr(ids.time, "time_ns", lambda: millis * 1_000_000 + 5)
    monkeypatch.setattr(ids.secrets, "token_bytes", lambda n: randomness[:n])

    made = ids.new_ids("evt", 3)

    expected = ["evt_" + _reference(millis << 80 | int.from_bytes(randomness[i : i + 10])) for i in range(0, 30, 10)]
    assert made == expected
