"""One JSON object from many: the per-chunk answers of the extract task, merged with provenance.

Each chunk reports only what its excerpt states, so the merge is deterministic and needs no model call:

* objects merge key by key (the schema's property order first);
* lists are united in document order without duplicates (strings compared case- and whitespace-insensitively);
* scalars that disagree are reconciled by majority — the value most chunks reported, the earliest on a tie — and
  the alternatives are kept in the provenance with their pages, so nothing is silently dropped.

``provenance`` maps a JSON pointer of the merged object to the pages its value came from::

    merged, provenance = merge_answers([({"title": "Q3 report", "people": ["Ada"]}, [1]),
                                        ({"title": "Q3 Report", "people": ["Ada", "Bo"]}, [2, 3])], schema)
    # merged == {"title": "Q3 report", "people": ["Ada", "Bo"]}
    # provenance["/title"] == {"pages": [1, 2, 3]}; provenance["/people/1"] == {"pages": [2, 3]}
"""

from __future__ import annotations

import json
from typing import Any

Pages = list[int]


def _normal(value: Any) -> Any:
    if isinstance(value, str):
        return " ".join(value.split()).casefold()
    if isinstance(value, list):
        return [_normal(v) for v in value]
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    return value


def fingerprint(value: Any) -> str:
    """Equal for values that differ only in letter case or whitespace."""
    return json.dumps(_normal(value), sort_keys=True, ensure_ascii=False)


def _union(pages: Pages, more: Pages) -> Pages:
    return sorted(set(pages) | set(more))


class _Merger:
    def __init__(self, root: dict[str, Any]) -> None:
        self._root = root
        self.provenance: dict[str, dict[str, Any]] = {}
        self.truncated: list[str] = []

    def resolve(self, schema: Any) -> dict[str, Any]:
        """The schema itself, following local ``$ref``s (``#/$defs/x``); {} when there is none."""
        seen = 0
        while isinstance(schema, dict) and isinstance(schema.get("$ref"), str) and schema["$ref"].startswith("#"):
            target: Any = self._root
            for part in schema["$ref"][1:].split("/")[1:]:
                target = target.get(part.replace("~1", "/").replace("~0", "~"), {}) if isinstance(target,
                                                                                                     dict) else {}
            schema, seen = target, seen + 1
            if seen > 20:
                return {}
        return schema if isinstance(schema, dict) else {}

    def merge(self, items: list[tuple[Any, Pages]], schema: Any, path: str) -> Any:
        schema = self.resolve(schema)
        present = [(v, p) for v, p in items if v is not None]
        if not present:
            return None
        if all(isinstance(v, dict) for v, _p in present):
            return self._objects(present, schema, path)
        if all(isinstance(v, list) for v, _p in present):
            return self._lists(present, schema, path)
        return self._scalars(present, path)

    def _objects(self, items: list[tuple[dict, Pages]], schema: dict[str, Any], path: str) -> dict[str, Any]:
        found = schema.get("properties")
        properties: dict[str, Any] = found if isinstance(found, dict) else {}
        keys = [k for k in properties if any(k in v for v, _p in items)]
        keys += [k for v, _p in items for k in v if k not in properties]
        merged: dict[str, Any] = {}
        for key in dict.fromkeys(keys):
            sub_schema = properties.get(key, schema.get("additionalProperties"))
            value = self.merge([(v[key], p) for v, p in items if key in v], sub_schema, f"{path}/{_escape(key)}")
            # No chunk found a value: say null only where the schema allows it, otherwise leave the key out.
            if value is not None or _allows_null(self.resolve(sub_schema)):
                merged[key] = value
        return merged

    def _lists(self, items: list[tuple[list, Pages]], schema: dict[str, Any], path: str) -> list[Any]:
        merged: list[Any] = []
        positions: dict[str, int] = {}
        for values, pages in items:
            for value in values:
                key = fingerprint(value)
                if key in positions:
                    entry = self.provenance[f"{path}/{positions[key]}"]
                    entry["pages"] = _union(entry["pages"], pages)
                    continue
                positions[key] = len(merged)
                self.provenance[f"{path}/{len(merged)}"] = {"pages": list(pages)}
                merged.append(value)
        limit = schema.get("maxItems")
        if isinstance(limit, int) and len(merged) > limit:
            self.truncated.append(f"{path or '/'} had {len(merged)} distinct items; the schema allows {limit}, "
                                  f"so the first {limit} in document order were kept")
            for index in range(limit, len(merged)):
                self.provenance.pop(f"{path}/{index}", None)
            merged = merged[:limit]
        return merged

    def _scalars(self, items: list[tuple[Any, Pages]], path: str) -> Any:
        tally: dict[str, dict[str, Any]] = {}
        for value, pages in items:
            entry = tally.setdefault(fingerprint(value), {"value": value, "count": 0, "pages": []})
            entry["count"] += 1
            entry["pages"] = _union(entry["pages"], pages)
        ranked = sorted(tally.values(), key=lambda e: -e["count"])  # stable: the earliest wins a tie
        winner = ranked[0]
        record: dict[str, Any] = {"pages": winner["pages"]}
        if len(ranked) > 1:
            record["alternatives"] = [{"value": e["value"], "pages": e["pages"]} for e in ranked[1:]]
        self.provenance[path or "/"] = record
        return winner["value"]


def _allows_null(schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    if kind is None:
        return not any(k in schema for k in ("anyOf", "oneOf", "enum", "const")) or any(
            isinstance(s, dict) and s.get("type") == "null" for s in schema.get("anyOf", []) + schema.get("oneOf", []))
    return kind == "null" or (isinstance(kind, list) and "null" in kind)


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def merge_answers(answers: list[tuple[Any, Pages]], schema: dict[str, Any]) -> tuple[Any, dict[str, Any], list[str]]:
    """(merged value, provenance by JSON pointer, notes about items dropped to respect ``maxItems``)."""
    merger = _Merger(schema)
    merged = merger.merge(answers, schema, "")
    return merged, merger.provenance, merger.truncated
