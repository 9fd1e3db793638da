"""The garbage collector, set up for a long-running server process."""

from __future__ import annotations

import gc

# Container allocations between two young-generation collections (CPython's default is 700). An
# event batch allocates a few hundred thousand objects that live until its response is sent; at
# 700 they were promoted to the old generation within the batch, and a full collection walking
# them all took 40-80 ms, in the middle of a request.
YOUNG_THRESHOLD = 50_000


def settle() -> None:
    """Freeze what exists once the app has started (modules, routes, metadata: never garbage), so
    that collections stop walking it, and let the young generation grow to a batch's size.
    Reference counting still frees almost everything; the collector is for cycles."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
