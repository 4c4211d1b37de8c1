"""The master's garbage collector, set for the order drain (issue 15).

CPython's cyclic collector runs a young collection every 700 container
allocations and a full one, over every object of the process, whenever the
objects that survived have grown by a quarter. The drain reads thousands of
stream entries at once (a master restarted with a full queue: 20,000), each a
few containers that live until the entry is decided, so the collector ran
dozens of times per drain, several of them over the whole heap: 30 to 60 % of
the CPU the master spent reading and checking the entries (measured with the
collector on, frozen, less frequent and off: bench/README.md).

Nothing in the drain depends on cycles being collected promptly: reference
counting frees every entry when the drain forgets it. So the master, once
started, freezes what it built at start-up (modules, settings, pools: they live
as long as the process, and full collections stop walking them) and collects
the young generation every 20,000 container allocations instead of 700; the
older generations keep CPython's own ratios.
"""

from __future__ import annotations

import gc

#: Container allocations between young collections (CPython's default: 700).
YOUNG_THRESHOLD = 20_000


def tune() -> None:
    """Freeze the objects alive now and collect the young generation less often."""
    _young, middle, old = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)


__all__ = ["YOUNG_THRESHOLD", "tune"]
