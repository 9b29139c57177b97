"""Answers in JSON that are checked, not trusted: validated against a schema, re-asked a bounded number of times.

Structured outputs (``response_format={"type": "json_schema", ...}``) are used where the endpoint supports them; an
endpoint that refuses the parameter is asked with JSON mode next, then with the schema in the prompt alone. The mode
that worked is remembered for the rest of the job, so only the first call pays for the discovery::

    answers = JsonAnswers(chat, schema=schema, name="extraction")
    value = await answers.ask(messages, max_tokens=600)  # raises UnusableAnswer after the last re-prompt
    answers.mode  # "json_schema" | "json_object" | "prompt"
"""

from __future__ import annotations

import re
from typing import Any

from chalicelib.errors import UnusableAnswer
from chalicelib.jsontext import loads_bounded
from chalicelib.llm import EndpointRefused
from chalicelib.tasks.schemas import SchemaUnusable, client_validator, violations

MODES = ("json_schema", "json_object", "prompt")
REPROMPTS = 2
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def parse_json(text: str) -> Any:
    """The JSON value of an answer, tolerating a Markdown code fence around it; raises ValueError (also when it is
    nested deeper than docpipe parses)."""
    text = text.strip()
    fenced = _FENCE.match(text)
    return loads_bounded(fenced.group(1) if fenced else text)


class JsonAnswers:
    """Asks for JSON valid against ``schema``; shared by the calls of one job so the working mode is learnt once."""

    def __init__(self, chat: Any, *, schema: dict[str, Any], name: str, reprompts: int = REPROMPTS) -> None:
        self._chat = chat
        self._schema = schema
        self._name = name
        self._reprompts = reprompts
        self._validator = client_validator(schema)
        self.mode = MODES[0]

    async def ask(self, messages: list[dict[str, str]], *, max_tokens: int) -> Any:
        conversation = list(messages)
        issues: list[str] = []
        for _attempt in range(self._reprompts + 1):
            completion = await self._complete(conversation, max_tokens)
            try:
                value = parse_json(completion.text)
            except ValueError:
                cut = " It was cut off: answer more briefly." if completion.finish_reason == "length" else ""
                issues = [f"the answer is not JSON.{cut}"]
            else:
                try:
                    issues = violations(self._validator, value)
                except SchemaUnusable as unusable:
                    # The schema makes this answer too costly to check: asking again would cost as much.
                    raise UnusableAnswer(str(unusable)) from None
                if not issues:
                    return value
            conversation += [
                {"role": "assistant", "content": completion.text},
                {"role": "user", "content": "That answer does not match the JSON Schema: " + "; ".join(issues)
                                            + ". Answer again with only the corrected JSON."},
            ]
        raise UnusableAnswer(f"no answer valid against the schema after {self._reprompts + 1} attempts "
                             f"({'; '.join(issues)[:300]})")

    async def _complete(self, conversation: list[dict[str, str]], max_tokens: int) -> Any:
        while True:
            mode = self.mode
            try:
                return await self._chat.complete(conversation, max_tokens=max_tokens,
                                                 response_format=self._response_format(mode))
            except EndpointRefused as refusal:
                if mode == MODES[-1] or not refusal.concerns("response_format"):
                    raise
                # Calls in flight may all be refused: only the first moves the job to the next mode.
                if self.mode == mode:
                    self.mode = MODES[MODES.index(mode) + 1]

    def _response_format(self, mode: str) -> dict[str, Any] | None:
        if mode == "json_schema":
            return {"type": "json_schema", "json_schema": {"name": self._name, "schema": self._schema,
                                                           "strict": False}}
        if mode == "json_object":
            return {"type": "json_object"}
        return None
