"""The pipeline's core: a claimed job run to its outcome, knowing nothing of Lambda, SQS or HTTP.

``run`` (extract → chunk → map → reduce → store, with the map cache, the budget and progress) and ``mapreduce``
(the shape every task type fills: map in parallel, halve a chunk too long for the model, reduce level by level).
"""

from chalicelib.pipeline.mapreduce import (
    PARTIAL_TAG_TOKENS,
    ChunkTask,
    Partial,
    ReduceBudget,
    estimate_reduce,
    halve_chunk,
    map_chunks,
    merged_span,
    reduce_hierarchically,
    reduce_step,
)
from chalicelib.pipeline.run import FINISH_SECONDS, Outcome, run_job

__all__ = ["FINISH_SECONDS", "PARTIAL_TAG_TOKENS", "ChunkTask", "Outcome", "Partial", "ReduceBudget", "estimate_reduce",
           "halve_chunk", "map_chunks", "merged_span", "reduce_hierarchically", "reduce_step", "run_job"]
