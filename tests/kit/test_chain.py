"""An entry's hash from its canonical form made beforehand (``Canonical``) is the hash that
``verify_chain`` recomputes from the stored content (``entry_hash``), for any content."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from profilestore.kit.chain import Canonical, entry_hash

# JSON-like values as chain contents hold them, with the two kinds JSON has no form for.
_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
    | st.binary(max_size=8)
    | st.datetimes(timezones=st.just(UTC))
)
_values = st.recursive(
    _leaves, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
)
# Keys near "seq" in sort order, where the canonical form is cut, and any others.
_keys = st.sampled_from(["", "a", "s", "se", "sep", "seq0", "seqa", "sf", "subject_id", "z", "é"]) | st.text(max_size=6)


@given(
    content=st.dictionaries(_keys.filter(lambda k: k != "seq"), _values, max_size=8),
    prev=st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
    seq=st.integers(min_value=1, max_value=2**62),
)
def test_the_canonical_form_hashes_as_the_content_does(content: dict[str, Any], prev: str, seq: int) -> None:
    assert Canonical.of(content).hash(prev, seq) == entry_hash(prev, {"seq": seq, **content})


def test_content_that_names_its_own_sequence_number_is_refused() -> None:
    with pytest.raises(ValueError, match="seq"):
        Canonical.of({"seq": 1, "at": datetime.now(UTC)})
