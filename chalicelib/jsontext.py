"""JSON from outside docpipe (a client's body, a query parameter, object metadata, a model's answer), parsed safely.

Python's parser recurses once per nesting level, so JSON nested 10,000 deep raises RecursionError instead of a
ValueError; the nesting is therefore measured on the raw text first, without recursion, and refused past
``MAX_DEPTH``. A parsed value can also hold strings no store accepts — a lone UTF-16 surrogate (``"\\ud800"`` is
valid JSON but not Unicode text) or a NUL character — which ``unstorable_text`` finds, with their path::

    payload = loads_bounded(body)                  # raises TooDeep (a ValueError) past MAX_DEPTH levels
    problem = unstorable_text(payload, "body")     # e.g. "body.document.text holds a lone surrogate (U+D800)"
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

# Deep enough for any real document or schema (a schema spends about two levels per level of the data it describes),
# shallow enough that every recursive walk of a parsed value stays far below Python's recursion limit.
MAX_DEPTH = 64

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKETS = re.compile(rb"[^\[\]{}]+")
# +1 for an opening bracket, -1 for a closing one, indexed by byte value.
_STEP = [0] * 256
_STEP[ord("[")] = _STEP[ord("{")] = 1
_STEP[ord("]")] = _STEP[ord("}")] = -1
_SURROGATE = re.compile("[\ud800-\udfff]")


class TooDeep(ValueError):
    pass


def depth(data: bytes | str) -> int:
    """The deepest nesting of arrays and objects in JSON text, measured without parsing it (strings skipped)."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    brackets = _BRACKETS.sub(b"", _STRING.sub(b"", raw))
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def loads_bounded(data: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` for text from outside: raises ``TooDeep`` (a ValueError) when nested past ``max_depth``."""
    found = depth(data)
    if found > max_depth:
        raise TooDeep(f"JSON nested {found} levels deep; the limit is {max_depth}")
    return json.loads(data)


def unstorable_text(value: Any, path: str) -> str | None:
    """Where ``value`` (parsed JSON) holds a lone surrogate or a NUL character, as a sentence; None when it holds none.

    Such strings cannot be encoded as UTF-8 or are refused by the document reader, so they are refused on the way in.
    """
    stack = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            problem = _text_problem(item)
            if problem:
                return f"{where} holds {problem}"
        elif isinstance(item, dict):
            for key, sub in item.items():
                problem = _text_problem(key)
                if problem:
                    return f"a key in {where} holds {problem}"
                stack.append((sub, f"{where}.{key}" if _plain_name(key) else f"{where}[{json.dumps(key)[:40]}]"))
        elif isinstance(item, list):
            stack.extend((sub, f"{where}[{index}]") for index, sub in enumerate(item))
    return None


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return f"a NUL character (at character {text.index(chr(0))})"
    found = _SURROGATE.search(text)
    if found:
        return f"a lone surrogate (U+{ord(found.group()):04X} at character {found.start()}), which is not Unicode text"
    return None


def _plain_name(key: str) -> bool:
    return key.isidentifier() and len(key) <= 40
