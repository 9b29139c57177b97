"""``make bench``: run every benchmark module and print its table.

Each module in ``MODULES`` exposes ``run() -> str`` (a ready-to-print table). ``python -m bench chunking`` runs one.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
MODULES = ("chunking", "extraction", "gate", "coldstart", "mapreduce", "burst", "workflow", "lambdasize")


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(PROJECT))
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(PROJECT / ".local" / "tiktoken"))
    wanted = argv or list(MODULES)
    for name in wanted:
        module = importlib.import_module(f"bench.{name}")
        started = time.monotonic()
        print(f"\n== {name} ==", flush=True)
        print(module.run(), flush=True)
        print(f"({time.monotonic() - started:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
