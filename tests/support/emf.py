"""CloudWatch EMF lines, read back as CloudWatch reads them: the values of a metric a piece of code printed."""

from __future__ import annotations

import json


def emf_values(output: str, name: str) -> list[float]:
    """Every value of metric ``name`` in the EMF lines of ``output``, in the order printed."""
    values: list[float] = []
    for line in output.splitlines():
        if '"_aws"' not in line:
            continue
        document = json.loads(line)
        names = {m["Name"] for d in document["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}
        if name in names:
            value = document[name]
            values.extend(value if isinstance(value, list) else [value])
    return values
