"""Identifier normalisation: the same person's identifier always yields the same value, and a
refusal names the identifier, never its value."""

from __future__ import annotations

import pytest

from profilestore.identity.normalise import KINDS, MAX_LENGTH, normalise
from profilestore.kit.errors import InvalidInput


def _refusal(kind: str, value: str, *, default_region: str | None = None) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        normalise(kind, value, default_region=default_region)
    error = caught.value
    assert error.field == f"identifiers.{kind}"
    stripped = value.strip()
    if stripped:
        assert stripped not in error.message
        assert stripped not in str(error)
    return error


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (" Ada@Example.COM ", "ada@example.com"),
        ("ada@example.com", "ada@example.com"),
        ("\tADA.Lovelace+News@Example.co.uk\n", "ada.lovelace+news@example.co.uk"),
    ],
)
def test_email_is_trimmed_and_lower_cased_keeping_dots_and_tags(given: str, expected: str) -> None:
    assert normalise("email", given) == expected


@pytest.mark.parametrize(
    "given",
    ["+4915112345678", "+49 151 12345678", " +49 (151) 123-456-78 ", "+49-151-1234-5678"],
)
def test_phone_with_country_code_becomes_e164(given: str) -> None:
    assert normalise("phone", given) == "+4915112345678"


def test_phone_without_country_code_is_refused_without_a_default_region() -> None:
    error = _refusal("phone", "0151 12345678")
    assert "+country code" in error.message


def test_phone_without_country_code_uses_the_default_region() -> None:
    assert normalise("phone", "0151 12345678", default_region="DE") == "+4915112345678"
    assert normalise("phone", "(202) 555-0143", default_region="US") == "+12025550143"


def test_default_region_does_not_override_an_explicit_country_code() -> None:
    assert normalise("phone", "+44 20 7946 0958", default_region="DE") == "+442079460958"


@pytest.mark.parametrize("given", ["+1 555", "+49 151", "+999 123456789", "call-me-maybe", "+49 151 1234567890123"])
def test_invalid_phone_numbers_are_refused(given: str) -> None:
    _refusal("phone", given, default_region="DE")


@pytest.mark.parametrize("kind", ["user_id", "loyalty_id", "anonymous_id"])
def test_opaque_ids_are_trimmed_and_keep_their_case(kind: str) -> None:
    assert normalise(kind, "  AbC-123_xYz \n") == "AbC-123_xYz"
    assert normalise(kind, "AbC-123_xYz") != normalise(kind, "abc-123_xyz")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
def test_empty_identifiers_are_refused(kind: str, blank: str) -> None:
    _refusal(kind, blank)


@pytest.mark.parametrize("kind", ["user_id", "loyalty_id", "anonymous_id"])
def test_opaque_ids_of_the_maximum_length_are_kept_and_longer_ones_refused(kind: str) -> None:
    longest = "k" * MAX_LENGTH
    assert normalise(kind, longest) == longest
    error = _refusal(kind, "k" * (MAX_LENGTH + 1))
    assert str(MAX_LENGTH) in error.message


def test_too_long_email_is_refused_by_name() -> None:
    _refusal("email", "a" * 60 + "@" + "d" * (MAX_LENGTH - 60) + ".com")


def test_too_long_phone_is_refused_by_name() -> None:
    _refusal("phone", "+49" + "1" * MAX_LENGTH)


@pytest.mark.parametrize("kind", ["user_id", "loyalty_id", "anonymous_id"])
@pytest.mark.parametrize("value", ["abc def", "abc\tdef", "abc\ndef", "abc\x00def", "abc\u00a0def"])
def test_opaque_ids_with_whitespace_or_control_characters_inside_are_refused(kind: str, value: str) -> None:
    _refusal(kind, value)


@pytest.mark.parametrize(
    "value",
    [
        "ada example.com",
        "ada@example com",
        "ada@@example",
        "@example.com",
        "ada@",
        "ada@example",
        "ada@.example.com",
        "ada@example.com.",
        "a" * 65 + "@example.com",
    ],
)
def test_malformed_emails_are_refused(value: str) -> None:
    _refusal("email", value)


@pytest.mark.parametrize("kind", ["fax", "Email", "device_id", ""])
def test_unknown_kinds_are_refused_naming_the_kind(kind: str) -> None:
    error = _refusal(kind, "secret-value-42")
    assert "secret-value-42" not in error.message
