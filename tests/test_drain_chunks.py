"""How a drain cuts its orders into chunks (``_chunks``): every order once, in stamp
order, none too big; one interval's orders with its oldest eighth first, alone, so
the orders that waited longest are answered first."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from papertrader.master.transactions import CHUNK_SIZE, HEAD_CHUNK_MIN, _chunks


@given(st.integers(0, 60_000), st.sampled_from([20, 1000, CHUNK_SIZE]))
def test_chunks_cover_every_order_once_in_order_and_none_is_too_big(count: int, size: int) -> None:
    bounds = _chunks(count, size)
    assert [i for start, end in bounds for i in range(start, end)] == list(range(count))
    assert all(0 < end - start <= size for start, end in bounds)


def test_one_interval_answers_its_oldest_eighth_first() -> None:
    # One interval of 1,000 orders: the 125 oldest are committed and answered first.
    assert _chunks(1000, CHUNK_SIZE) == [(0, 125), (125, 1000)]
    assert _chunks(CHUNK_SIZE, CHUNK_SIZE) == [(0, 500), (500, CHUNK_SIZE)]


def test_a_backlog_goes_in_full_chunks_the_last_ones_smaller() -> None:
    # A restarted master with 20,000 queued: chunks of 4,000 (the oldest first), the
    # last 4,000 as a half and two quarters.
    assert _chunks(20_000, CHUNK_SIZE) == [
        (0, 4000), (4000, 8000), (8000, 12000), (12000, 16000),
        (16000, 18000), (18000, 19000), (19000, 20000),
    ]  # fmt: skip


def test_a_small_drain_is_one_chunk() -> None:
    assert _chunks(0, CHUNK_SIZE) == []
    assert _chunks(2 * HEAD_CHUNK_MIN - 1, CHUNK_SIZE) == [(0, 2 * HEAD_CHUNK_MIN - 1)]
    assert _chunks(2 * HEAD_CHUNK_MIN, CHUNK_SIZE) == [
        (0, HEAD_CHUNK_MIN),
        (HEAD_CHUNK_MIN, 2 * HEAD_CHUNK_MIN),
    ]
