"""DynamoDB items that many workers read and replace at once, each write conditional on the version it read.

Optimistic concurrency: a worker reads an item (its JSON state and a version number), decides, and writes the new
state as the next version only if nobody wrote in between. A refused write comes back with the item as it is now
(``ReturnValuesOnConditionCheckFailure``), so deciding again costs no extra read. Items carry the table's TTL
attribute, so one nobody writes any more disappears by itself::

    items = VersionedItems(dynamodb, "docpipe-dev-idempotency")
    current = items.read("llm-limits#…")                          # Versioned(state={}, version=0) when absent
    written, current = items.replace("llm-limits#…", {"holders": …}, version=current.version, expires_at=…)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Versioned:
    """An item's state and the version it was written as (0: there is no item)."""

    state: dict[str, Any] = field(default_factory=dict)
    version: int = 0


class VersionedItems:
    """Items keyed by ``id`` in ``table_name`` (the records table: its key is ``id`` and its TTL ``expiration``),
    reached through ``dynamodb``, a boto3 client."""

    def __init__(self, dynamodb: Any, table_name: str) -> None:
        self._dynamodb = dynamodb
        self.table_name = table_name

    def read(self, key: str) -> Versioned:
        item = self._dynamodb.get_item(TableName=self.table_name, Key={"id": {"S": key}},
                                       ConsistentRead=True).get("Item")
        return _versioned(item)

    def replace(self, key: str, state: dict[str, Any], *, version: int, expires_at: int) -> tuple[bool, Versioned]:
        """Write ``state`` as ``version + 1`` if the item is still at ``version``: (True, what was written), or
        (False, the item as it is now) when another worker wrote first."""
        item = {"id": {"S": key}, "state": {"S": json.dumps(state, separators=(",", ":"))},
                "version": {"N": str(version + 1)}, "expiration": {"N": str(int(expires_at))}}
        try:
            self._dynamodb.put_item(TableName=self.table_name, Item=item,
                                    ConditionExpression="attribute_not_exists(id) OR version = :read",
                                    ExpressionAttributeValues={":read": {"N": str(version)}},
                                    ReturnValuesOnConditionCheckFailure="ALL_OLD")
        except self._dynamodb.exceptions.ConditionalCheckFailedException as refused:
            current = refused.response.get("Item")
            return False, _versioned(current) if current else self.read(key)
        return True, Versioned(state, version + 1)


def _versioned(item: dict[str, Any] | None) -> Versioned:
    if not item:
        return Versioned()
    return Versioned(json.loads(item["state"]["S"]), int(item["version"]["N"]))
