"""How the provider's capacity is divided between workers: max-min fair by jobs, never more than a worker can use.

Each worker claims what it wants (``demand``: calls it would run at once) for some number of jobs. Capacity is
poured out in proportion to jobs, and a worker that wants less than its portion gets what it wants, the rest going
to the others (water-filling). A 1,000-chunk job therefore holds the whole provider while it is alone, and gives
way at once to a one-chunk job that arrives beside it: the small job's worker wants one call, and gets it::

    fair_shares(16, {"a": Claim(demand=16, jobs=1), "b": Claim(demand=1, jobs=1)})   # {"a": 15, "b": 1}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Claim:
    """What one worker asks for: ``demand`` calls at once, for ``jobs`` jobs; ``held`` is what it holds now."""

    demand: int
    jobs: int = 1
    held: int = 0


def fair_shares(capacity: int, claims: Mapping[str, Claim]) -> dict[str, int]:
    """Whole units of ``capacity`` per claimant: weighted by jobs, capped by demand, and summing to at most
    ``capacity``. A unit left over by rounding goes to the larger fraction, then to whoever holds more already (so
    shares do not flap between workers from one reading to the next), then by name."""
    shares = dict.fromkeys(claims, 0)
    active = {name for name, claim in claims.items() if claim.demand > 0}
    left = capacity
    while active and left > 0:
        weights = {name: max(1, claims[name].jobs) for name in active}
        total = sum(weights.values())
        portion = {name: left * weights[name] / total for name in active}
        content = [name for name in active if claims[name].demand - shares[name] <= portion[name]]
        if content:
            for name in content:
                given = claims[name].demand - shares[name]
                shares[name] += given
                left -= given
                active.discard(name)
            continue
        for name in active:
            shares[name] += math.floor(portion[name])
        left -= sum(math.floor(portion[name]) for name in active)
        order = sorted(active, key=lambda n: (-(portion[n] - math.floor(portion[n])), -claims[n].held, n))
        for name in order[:left]:
            shares[name] += 1
        break
    return shares
