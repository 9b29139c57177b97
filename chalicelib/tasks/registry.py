"""Which implementation runs a task type: the LLM one when an endpoint is configured, else the offline one.

Each task type is one module (``summarize``, ``extract``, ``classify``, ``prompt``) with the shape the map-reduce
needs (``pipeline.mapreduce.ChunkTask``); this is the only place that knows all of them, and it imports only the
one a job needs::

    task = task_for(job.task, chat=metered_chat_or_none, settings=settings, document=document, chunks=chunks,
                    count_tokens=count, warn=warnings.append)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from chalicelib.config import Settings

if TYPE_CHECKING:
    from chalicelib.documents import Chunk, Document
    from chalicelib.pipeline import ChunkTask


def task_for(task: dict[str, Any], *, chat: Any, settings: Settings, document: Document, chunks: list[Chunk],
             count_tokens: Callable[[str], int], warn: Callable[[str], None]) -> ChunkTask:
    """The implementation of ``task`` (as ``spec.parse_task`` stored it); ``chat`` is None for the offline one."""
    kind = task["type"]
    if chat is None:
        if kind == "classify":
            from chalicelib.tasks.classify import KeywordClassifier

            return KeywordClassifier(labels=task["labels"])
        from chalicelib.tasks.summarize import DEFAULT_TARGET_WORDS, ExtractiveSummarizer, map_words_for

        target_words = task.get("target_words", DEFAULT_TARGET_WORDS)
        summarizer = ExtractiveSummarizer(map_words=map_words_for(target_words, len(chunks)),
                                          page_at=document.page_at, target_words=target_words)
        summarizer.prepare(document.text, chunks)
        return summarizer
    if kind == "extract":
        from chalicelib.tasks.extract import SchemaExtractor

        return SchemaExtractor(chat, schema=task["schema"], answer_tokens=settings.map_output_tokens,
                               count_tokens=count_tokens, warn=warn)
    if kind == "classify":
        from chalicelib.tasks.classify import LLMClassifier

        return LLMClassifier(chat, labels=task["labels"], count_tokens=count_tokens)
    if kind == "prompt":
        from chalicelib.tasks.prompt import PromptTask

        return PromptTask(chat, map_instruction=task["map"], reduce_instruction=task["reduce"],
                          map_tokens=settings.map_output_tokens, reduce_tokens=settings.reduce_output_tokens,
                          context_tokens=settings.reduce_context_tokens, count_tokens=count_tokens)
    from chalicelib.tasks.summarize import DEFAULT_TARGET_WORDS, LLMSummarizer

    return LLMSummarizer(chat, target_words=task.get("target_words", DEFAULT_TARGET_WORDS),
                         chunk_count=len(chunks), count_tokens=count_tokens,
                         context_tokens=settings.reduce_context_tokens)
