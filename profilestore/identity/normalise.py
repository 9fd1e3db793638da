"""Identifier normalisation: the same person's identifier always yields the same blind index.

| kind | normalisation |
|---|---|
| email | trimmed, lower-cased (whole address; dots and +tags are kept: they may be different mailboxes) |
| phone | parsed and formatted E.164 (``+4915112345678``); without a ``+`` the configured default region applies |
| user_id, loyalty_id, anonymous_id | trimmed; case kept |

Invalid values are refused with the identifier's name, never its value.
"""

from __future__ import annotations

import phonenumbers

from profilestore.kit.errors import InvalidInput

KINDS = ("email", "phone", "user_id", "loyalty_id", "anonymous_id")
MAX_LENGTH = 256


def normalise(kind: str, value: str, *, default_region: str | None = None) -> str:
    field = f"identifiers.{kind}"
    if kind not in KINDS:
        raise InvalidInput(f"unknown identifier kind '{kind}'", field=field)
    text = value.strip()
    if not text:
        raise InvalidInput("identifier is empty", field=field)
    if len(text) > MAX_LENGTH:
        raise InvalidInput(f"identifier is longer than {MAX_LENGTH} characters", field=field)
    if kind == "email":
        return _email(text, field)
    if kind == "phone":
        return _phone(text, field, default_region)
    if any(ch.isspace() or not ch.isprintable() for ch in text):
        raise InvalidInput("identifier contains whitespace or control characters", field=field)
    return text


def _email(text: str, field: str) -> str:
    local, at, domain = text.lower().rpartition("@")
    if not at or not local or "." not in domain or domain.startswith(".") or domain.endswith("."):
        raise InvalidInput("not an email address", field=field)
    if any(ch.isspace() for ch in text) or len(local) > 64:
        raise InvalidInput("not an email address", field=field)
    return f"{local}@{domain}"


def _phone(text: str, field: str, default_region: str | None) -> str:
    try:
        number = phonenumbers.parse(text, None if text.startswith("+") else default_region)
    except phonenumbers.NumberParseException as exc:
        hint = "" if text.startswith("+") or default_region else " (write it with +country code)"
        raise InvalidInput(f"not a phone number{hint}", field=field) from exc
    if not phonenumbers.is_valid_number(number):
        raise InvalidInput("not a valid phone number", field=field)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
