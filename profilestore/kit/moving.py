"""Moving a merged subject's rows to the survivor.

Tables that hold a subject's data carry ``subject_id`` in their primary key (so they can be
distributed by it), and each row's ciphertext is bound to its subject by associated data. Moving
a row is therefore delete, re-encrypt under the survivor's key, insert.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import inspect, select
from sqlalchemy.orm import Session

from profilestore.crypto.service import SubjectCipher

Row = TypeVar("Row")


def move_subject_rows(
    session: Session,
    model: type[Row],
    source: SubjectCipher,
    target: SubjectCipher,
    *,
    table: str,
    column: str,
    row_key: Callable[[Row], str],
) -> list[Row]:
    """Move every ``model`` row of ``source``'s subject to ``target``'s, re-encrypting ``column``
    (named by its attribute) with each row's associated-data key. Returns the moved rows."""
    subject_col = model.subject_id  # type: ignore[attr-defined]
    attributes = [a.key for a in inspect(model).column_attrs]
    moved = []
    for row in session.scalars(select(model).where(subject_col == source.subject_id)).all():
        key = row_key(row)
        plaintext = source.decrypt(table, column.removesuffix("_ct"), key, getattr(row, column))
        values: dict[str, Any] = {name: getattr(row, name) for name in attributes}
        values["subject_id"] = target.subject_id
        values[column] = target.encrypt(table, column.removesuffix("_ct"), key, plaintext)
        session.delete(row)
        session.flush()
        replacement = model(**values)
        session.add(replacement)
        moved.append(replacement)
    session.flush()
    return moved
