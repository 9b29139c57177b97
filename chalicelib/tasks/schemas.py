"""A client's JSON Schema is data: checked at submit, never a network client, and never an unbounded cost.

The extract task's schema comes from a client, and so does everything it makes docpipe do. Three guarantees:

* ``check_client_schema`` refuses at submit, naming the path: a dialect docpipe does not know, a schema its
  metaschema rejects, any reference (``$ref``, ``$dynamicRef``, ``$recursiveRef``) that does not resolve inside the
  schema itself — a URL, a dangling pointer or anchor, an ``$id`` that moves the base elsewhere — references that
  loop back without descending into the value (recursion without a base case) or that expand one value into more
  than ``MAX_EXPANSION`` subschemas, and a ``pattern`` the linear-time engine cannot run (backreferences,
  lookaround).
* Every validator docpipe builds, the worker's included, resolves references in a registry that cannot retrieve
  anything: an unknown URI is an error, never a request.
* Patterns (``pattern``, ``patternProperties``, ``format: regex``) run on RE2, in time linear in the text, and each
  validation has a budget of ``MAX_STEPS`` keyword evaluations; past it, ``SchemaUnusable`` fails that one answer::

    check_client_schema(schema)               # raises SchemaRefused(path, reason)
    validator = client_validator(schema)
    violations(validator, answer, limit=5)    # ["/items/0/price: 'x' is not of type 'number'"]; may raise
                                              # SchemaUnusable
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import Any

import referencing
import referencing.exceptions
import referencing.jsonschema
from jsonschema import (
    Draft4Validator,
    Draft6Validator,
    Draft7Validator,
    Draft201909Validator,
    Draft202012Validator,
    FormatChecker,
    SchemaError,
    ValidationError,
    validators,
)
from jsonschema.protocols import Validator

# Subschemas one value may be checked against through references and combinators (allOf, anyOf, not, …), and the
# longest chain of them: far above what real schemas need, far below what stalls a worker or Python's stack.
MAX_EXPANSION = 2_000
MAX_CHAIN = 32
# Keyword evaluations one validation may make: an answer of a few hundred values needs a few thousand.
MAX_STEPS = 100_000
_DIALECTS = (Draft4Validator, Draft6Validator, Draft7Validator, Draft201909Validator, Draft202012Validator)
_REFERENCES = ("$ref", "$dynamicRef", "$recursiveRef")
# Keywords whose subschemas apply to the same value (in place) or to a part of it (descending), and containers.
_IN_PLACE_ONE = ("not", "if", "then", "else")
_IN_PLACE_LISTS = ("allOf", "anyOf", "oneOf")
_IN_PLACE_MAPS = ("dependentSchemas", "dependencies")
_DESCEND_ONE = ("additionalProperties", "contains", "propertyNames", "unevaluatedProperties", "unevaluatedItems",
                "additionalItems", "items")
_DESCEND_LISTS = ("prefixItems", "items")
_DESCEND_MAPS = ("properties", "patternProperties")
_CONTAINERS = ("$defs", "definitions")
# ECMA-262 code point escapes, which RE2 spells \x{…}.
_ECMA_ESCAPE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|u\{([0-9a-fA-F]{1,6})\}|(.))", re.DOTALL)
# No resources and no way to fetch one: any reference outside the schema is unresolvable.
_NO_RETRIEVAL: referencing.Registry = referencing.Registry()
_steps: ContextVar[list[int] | None] = ContextVar("schema_steps", default=None)


class SchemaRefused(ValueError):
    """The schema cannot be used; ``path`` is a JSON pointer into it ("" for its root)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"task.schema{' at ' + path if path else ''}: {reason}")
        self.path = path
        self.reason = reason


class SchemaUnusable(Exception):
    """One validation could not finish within docpipe's limits; the answer it was checking is not used."""


def dialect_of(schema: dict[str, Any]) -> Any:
    """The validator class of the schema's ``$schema`` (2020-12 when it names none)."""
    declared = schema.get("$schema")
    if declared is None:
        return Draft202012Validator
    known = {cls.ID_OF(cls.META_SCHEMA).rstrip("#"): cls for cls in _DIALECTS}
    if not isinstance(declared, str) or declared.rstrip("#") not in known:
        raise SchemaRefused("/$schema", "docpipe knows JSON Schema drafts 4, 6, 7, 2019-09 and 2020-12; name one "
                                        "of their metaschema URIs, or leave $schema out for 2020-12")
    return known[declared.rstrip("#")]


def check_client_schema(schema: dict[str, Any]) -> None:
    """Refuse, with ``SchemaRefused``, a schema docpipe could not use safely (see the module's docstring)."""
    cls = dialect_of(schema)
    try:
        cls.check_schema(schema, format_checker=_format_checker(cls, metaschema=True))
    except SchemaError as exc:
        raise SchemaRefused(_pointer(exc.absolute_path), exc.message[:200]) from None
    graph = _Graph(cls)
    graph.walk(schema)
    graph.check_bounded()


def client_validator(schema: dict[str, Any]) -> Any:
    """A validator for ``schema`` that never fetches, runs patterns on RE2 and counts its steps."""
    cls = _bounded_class(dialect_of(schema))
    return cls(schema, registry=_NO_RETRIEVAL, format_checker=cls.FORMAT_CHECKER)


def violations(validator: Any, value: Any, *, limit: int = 5, steps: int = MAX_STEPS) -> list[str]:
    """Readable violations of ``value``, at most ``limit``: ``/items/0/price: 'x' is not of type 'number'``.

    Raises ``SchemaUnusable`` when checking takes more than ``steps`` keyword evaluations, recurses too deep or meets
    a reference that does not resolve.
    """
    budget = _steps.set([steps])
    try:
        errors = sorted(validator.iter_errors(value), key=lambda e: list(map(str, e.absolute_path)))
    except RecursionError:
        raise SchemaUnusable("checking the answer against the schema recursed too deeply") from None
    except referencing.exceptions.Unresolvable as exc:
        raise SchemaUnusable(f"the schema holds a reference that does not resolve: {str(exc)[:100]}") from None
    finally:
        _steps.reset(budget)
    return [f"{_pointer(e.absolute_path)}: {e.message[:200]}" for e in errors[:limit]]


def compiled_pattern(pattern: str) -> Any:
    """The RE2 program of an ECMA-262 pattern; raises ``ValueError`` for what RE2 cannot run in linear time."""
    try:
        return _compile(pattern)
    except Exception as exc:  # re2.error (its message in bytes), and TypeError for a pattern that is not a string
        reason = exc.args[0] if exc.args else exc
        text = reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
        raise ValueError(text[:200]) from None


@lru_cache(maxsize=1024)
def _compile(pattern: str) -> Any:
    import re2

    options = re2.Options()
    options.log_errors = False
    return re2.compile(_ECMA_ESCAPE.sub(_to_re2_escape, pattern), options)


def _to_re2_escape(match: re.Match[str]) -> str:
    code = match.group(1) or match.group(2)
    return f"\\x{{{code}}}" if code else match.group(0)


# --- the static check --------------------------------------------------------------------------------------------

@dataclass
class _Node:
    path: str
    # (target node id, the pointer of the keyword that leads there) for every subschema applied to the same value.
    in_place: list[tuple[int, str]] = field(default_factory=list)


class _Graph:
    """Every subschema reachable from the root, through keywords and through references, with its in-place edges."""

    def __init__(self, cls: type[Validator]) -> None:
        self._spec = referencing.jsonschema.specification_with(cls.ID_OF(cls.META_SCHEMA))
        self._nodes: dict[int, _Node] = {}
        self._keep: list[Any] = []  # the walked objects stay alive, so their ids stay theirs
        self._dynamic_anchors: dict[str, list[int]] = {}
        self._recursive_anchors: list[int] = []
        self._dynamic_refs: list[tuple[int, str, str]] = []
        self._recursive_refs: list[tuple[int, str]] = []

    def walk(self, schema: dict[str, Any]) -> None:
        root = _NO_RETRIEVAL.resolver_with_root(self._spec.create_resource(schema))
        trees: list[tuple[Any, Any, str]] = [(schema, root, "")]
        while trees:
            references = self._walk_tree(*trees.pop())
            for node_id, resolver, keyword, ref, where in references:
                target, target_resolver = self._resolve(resolver, keyword, ref, where)
                if isinstance(target, dict):
                    if id(target) not in self._nodes:
                        trees.append((target, target_resolver, f"{where} →"))
                    self._nodes[node_id].in_place.append((id(target), where))
        for node_id, name, where in self._dynamic_refs:
            self._nodes[node_id].in_place.extend((anchor, where) for anchor in self._dynamic_anchors.get(name, []))
        for node_id, where in self._recursive_refs:
            self._nodes[node_id].in_place.extend((anchor, where) for anchor in self._recursive_anchors)

    def _walk_tree(self, schema: Any, resolver: Any, path: str) -> list[tuple[int, Any, str, Any, str]]:
        """Register the subschemas under ``schema``; returns the references found, to resolve once all are known."""
        references = []
        stack = [(schema, resolver, path)]
        while stack:
            contents, resolver, path = stack.pop()
            if id(contents) in self._nodes:
                continue
            node = self._nodes[id(contents)] = _Node(path)
            self._keep.append(contents)
            self._check_keywords(contents, path)
            for keyword in _REFERENCES:
                if keyword in contents:
                    references.append((id(contents), resolver, keyword, contents[keyword], f"{path}/{keyword}"))
            for sub, where, in_place in _subschemas(contents, path):
                if isinstance(sub, dict):
                    if in_place:
                        node.in_place.append((id(sub), where))
                    stack.append((sub, resolver.in_subresource(self._spec.create_resource(sub)), where))
        return references

    def _check_keywords(self, contents: dict[str, Any], path: str) -> None:
        if path and "$schema" in contents:
            raise SchemaRefused(f"{path}/$schema", "$schema may only appear at the schema's root")
        if isinstance(contents.get("pattern"), str):
            _runnable(contents["pattern"], f"{path}/pattern")
        if isinstance(contents.get("patternProperties"), dict):
            for pattern in contents["patternProperties"]:
                _runnable(pattern, f"{path}/patternProperties/{_escape(pattern)}")
        if isinstance(contents.get("$dynamicAnchor"), str):
            self._dynamic_anchors.setdefault(contents["$dynamicAnchor"], []).append(id(contents))
        if contents.get("$recursiveAnchor") is True:
            self._recursive_anchors.append(id(contents))

    def _resolve(self, resolver: Any, keyword: str, ref: Any, where: str) -> tuple[Any, Any]:
        if not isinstance(ref, str):
            raise SchemaRefused(where, f"{keyword} must be a string")
        if keyword == "$recursiveRef" and ref != "#":
            raise SchemaRefused(where, '$recursiveRef may only be "#"')
        try:
            resolved = resolver.lookup(ref)
        except Exception:  # Unresolvable, and a pointer into a list with a non-number segment
            raise SchemaRefused(where, f"{ref[:100]!r} does not resolve inside the schema. docpipe never fetches a "
                                       "schema: a reference must point into this one (\"#/$defs/name\", or an "
                                       "anchor it defines)") from None
        if not isinstance(resolved.contents, (dict, bool)):
            raise SchemaRefused(where, f"{ref[:100]!r} points to something that is not a schema")
        node_id = id(resolved.contents)
        if keyword == "$dynamicRef" and "#" in ref and not ref.rsplit("#", 1)[1].startswith("/"):
            self._dynamic_refs.append((node_id, ref.rsplit("#", 1)[1], where))
        if keyword == "$recursiveRef":
            self._recursive_refs.append((node_id, where))
        return resolved.contents, resolved.resolver

    def check_bounded(self) -> None:
        """Refuse an in-place cycle (recursion without a base case), and expansions past the limits."""
        expansion: dict[int, int] = {}
        chain: dict[int, int] = {}
        visiting: set[int] = set()
        for start in self._nodes:
            if start in expansion:
                continue
            stack: list[tuple[int, Iterator[tuple[int, str]]]] = [(start, iter(self._nodes[start].in_place))]
            visiting.add(start)
            while stack:
                node, edges = stack[-1]
                edge = next(edges, None)
                if edge is None:
                    stack.pop()
                    visiting.discard(node)
                    children = [target for target, _ in self._nodes[node].in_place]
                    expansion[node] = min(MAX_EXPANSION + 1, 1 + sum(expansion[c] for c in children))
                    chain[node] = 1 + max((chain[c] for c in children), default=0)
                    if expansion[node] > MAX_EXPANSION:
                        raise SchemaRefused(self._nodes[node].path, f"its references and combinators apply more "
                                                                    f"than {MAX_EXPANSION} subschemas to one value")
                    if chain[node] > MAX_CHAIN:
                        raise SchemaRefused(self._nodes[node].path, f"its references and combinators nest more "
                                                                    f"than {MAX_CHAIN} subschemas deep on one value")
                    continue
                target, where = edge
                if target in visiting:
                    raise SchemaRefused(where, "recursion without a base case: this reference leads back to "
                                               "itself without descending into a property or item of the value")
                if target not in expansion:
                    visiting.add(target)
                    stack.append((target, iter(self._nodes[target].in_place)))


def _subschemas(contents: dict[str, Any], path: str) -> Iterator[tuple[Any, str, bool]]:
    """(subschema, its pointer, whether it applies to the same value) for every subschema keyword."""
    def each(keywords: tuple[str, ...], kind: type, in_place: bool) -> Iterator[tuple[Any, str, bool]]:
        for keyword in keywords:
            value = contents.get(keyword)
            if kind is dict and isinstance(value, dict):
                yield from ((sub, f"{path}/{keyword}/{_escape(name)}", in_place) for name, sub in value.items()
                            if isinstance(sub, (dict, bool)))
            elif kind is list and isinstance(value, list):
                yield from ((sub, f"{path}/{keyword}/{i}", in_place) for i, sub in enumerate(value))
            elif kind is object and isinstance(value, (dict, bool)):
                yield value, f"{path}/{keyword}", in_place

    yield from each(_IN_PLACE_ONE, object, True)
    yield from each(_IN_PLACE_LISTS, list, True)
    yield from each(_IN_PLACE_MAPS, dict, True)
    yield from each(_DESCEND_ONE, object, False)
    yield from each(_DESCEND_LISTS, list, False)
    yield from each(_DESCEND_MAPS, dict, False)
    yield from each(_CONTAINERS, dict, False)


def _runnable(pattern: str, where: str) -> None:
    try:
        compiled_pattern(pattern)
    except ValueError as exc:
        raise SchemaRefused(where, f"docpipe runs patterns on a linear-time engine (RE2), which cannot run this one "
                                   f"({exc}); backreferences and lookaround are not supported") from None


def _escape(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")


def _pointer(path: Any) -> str:
    return "/" + "/".join(_escape(str(part)) for part in path) if path else ""


# --- the bounded validator ---------------------------------------------------------------------------------------

# Cached per dialect: ``cls`` is a jsonschema Validator class, typed Any since the cache needs it hashable.
@cache
def _bounded_class(cls: Any) -> type[Validator]:
    checks = {keyword: _metered(check) for keyword, check in cls.VALIDATORS.items()}
    if "pattern" in checks:
        checks["pattern"] = _metered(_pattern)
    if "patternProperties" in checks:
        checks["patternProperties"] = _metered(_pattern_properties)
    return validators.extend(cls, checks, format_checker=_format_checker(cls, metaschema=False))


@cache
def _format_checker(cls: Any, *, metaschema: bool) -> FormatChecker:
    """The dialect's formats, with ``regex`` checked by RE2 — or, for the metaschema check, left to ``_Graph``."""
    checker = FormatChecker(formats=())
    checker.checkers = {name: check for name, check in cls.FORMAT_CHECKER.checkers.items() if name != "regex"}
    if not metaschema:
        checker.checks("regex", raises=ValueError)(lambda value: not isinstance(value, str)
                                                   or compiled_pattern(value) is not None)
    return checker


def _metered(check: Any) -> Any:
    def metered(validator: Any, value: Any, instance: Any, schema: Any) -> Any:
        left = _steps.get()
        if left is not None:
            left[0] -= 1
            if left[0] < 0:
                raise SchemaUnusable("checking the answer against the schema took more steps than docpipe allows")
        return check(validator, value, instance, schema)

    return metered


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and compiled_pattern(pattern).search(instance) is None:
        yield ValidationError(f"{instance[:100]!r} does not match {pattern[:100]!r}")


def _pattern_properties(validator: Any, patterns: dict[str, Any], instance: Any,
                        schema: Any) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        program = compiled_pattern(pattern)
        for key, value in instance.items():
            if program.search(key) is not None:
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)
