"""How the workflow cuts a document's chunks into map batches (``pipeline.workflow.plan_batches``)."""

from __future__ import annotations

import heapq
import math

import pytest

from chalicelib.pipeline.workflow import batch_gate, map_concurrency, plan_batches


def _waves(plan: list[tuple[int, int]], llm_concurrency: int) -> int:
    """The Map's run in waves of calls: each batch goes to the first slot free, as Step Functions starts an item
    when one returns, and takes one wave per ``batch_gate`` of its chunks."""
    slots = [0] * map_concurrency(llm_concurrency)
    for _first, size in plan:
        heapq.heappush(slots, heapq.heappop(slots) + math.ceil(size / batch_gate(llm_concurrency)))
    return max(slots)


@pytest.mark.parametrize("llm_concurrency, max_batch", [(1, 4), (3, 4), (4, 16), (12, 16), (16, 4), (16, 16),
                                                        (16, 32), (16, 64), (32, 32), (32, 64)])
def test_every_chunk_is_in_one_batch_and_the_map_takes_the_fewest_waves_its_calls_allow(llm_concurrency, max_batch):
    for chunks in range(1, 700):
        plan = plan_batches(chunks, max_batch=max_batch, llm_concurrency=llm_concurrency)
        assert [first for first, _size in plan] == [sum(size for _f, size in plan[:i]) for i in range(len(plan))]
        assert sum(size for _first, size in plan) == chunks
        assert all(0 < size <= max_batch for _first, size in plan)
        assert _waves(plan, llm_concurrency) == math.ceil(chunks / llm_concurrency), (chunks, plan)


def test_the_book_is_four_rounds_of_one_size_each():
    plan = plan_batches(399, max_batch=32, llm_concurrency=16)
    assert [size for _first, size in plan] == [28] * 4 + [24] * 11 + [23]


def test_batches_smaller_than_a_batchs_calls_in_flight_are_cut_as_asked():
    assert plan_batches(10, max_batch=2, llm_concurrency=16) == [(0, 2), (2, 2), (4, 2), (6, 2), (8, 2)]
    assert plan_batches(0, max_batch=32, llm_concurrency=16) == []
