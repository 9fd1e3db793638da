"""After every test here that has a store: the per-value sums views read agree with the buckets."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.events.support import assert_value_sums_agree


@pytest.fixture(autouse=True)
def _value_sums_agree_afterwards(request: pytest.FixtureRequest) -> Iterator[None]:
    # Asked for before the test runs, so that the store is still open when it ends.
    runtime = request.getfixturevalue("runtime") if "runtime" in request.fixturenames else None
    yield
    if runtime is not None:
        assert_value_sums_agree(runtime)
