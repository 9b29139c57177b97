"""Tokens and money: what a job spent, and what it would spend before it spends anything.

Prices are settings (``Settings.prices``: the built-in table with ``DOCPIPE_PRICES`` laid over it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

# A DOCPIPE_PRICES entry under this name prices every model the table does not list (config.price_table).
DEFAULT_PRICE_KEY = "*"


def price_of(prices: Mapping[str, tuple[float, float]], model: str) -> tuple[float, float] | None:
    """(input, output) USD per million tokens of ``model``: its own entry, else the "*" default, else None."""
    return prices.get(model) or prices.get(DEFAULT_PRICE_KEY)


def cost_usd(prices: Mapping[str, tuple[float, float]], model: str, prompt_tokens: int,
             completion_tokens: int) -> float | None:
    price = price_of(prices, model)
    if price is None:
        return None
    return round((prompt_tokens * price[0] + completion_tokens * price[1]) / 1_000_000, 6)


# What an attempt spends, kept per attempt on the job's row so a redelivered job counts — and budgets — it all.
SPENT_FIELDS = ("prompt_tokens", "completion_tokens", "calls", "retries")


def total_spend(spends: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The sum of attempts' spends; ``cost_usd`` is None when any of them had no known price."""
    total: dict[str, Any] = {name: sum(int(spend.get(name, 0)) for spend in spends.values()) for name in SPENT_FIELDS}
    costs = [spend.get("cost_usd") for spend in spends.values()]
    total["cost_usd"] = None if None in costs else round(sum(float(c) for c in costs if c is not None), 6)
    total["total_tokens"] = total["prompt_tokens"] + total["completion_tokens"]
    return total


@dataclass
class Usage:
    """Running totals for one job, over all its attempts; ``cost_usd`` is None when the model has no known price.

    ``cache_hits`` counts chunks the last attempt found answered in the map cache (no call, no tokens); ``retries``
    the calls repeated after transient errors; ``estimated_*`` the pre-flight estimate of what was left to spend,
    which the budget was checked against. ``earlier`` is what earlier attempts of the job spent, already included.
    ``ocr`` is this attempt's OCR: provider, pages billed, cost (absent when no page was sent to OCR).
    """

    model: str | None
    provider: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0
    retries: int = 0
    cache_hits: int = 0
    document_tokens: int = 0
    cost_usd: float | None = 0.0
    estimated_tokens: int | None = None
    estimated_cost_usd: float | None = None
    earlier: dict[str, Any] = field(default_factory=dict)
    ocr: dict[str, Any] | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add_call(self, prompt_tokens: int, completion_tokens: int, prices: Mapping[str, tuple[float, float]]) -> None:
        self.calls += 1
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        self.cost_usd = self._cost(prices)

    def include_earlier(self, earlier: Mapping[str, Any], prices: Mapping[str, tuple[float, float]]) -> None:
        """Start from what earlier attempts spent (``total_spend`` of their records): in a workflow, also what the
        job's other stages and tasks spent, whatever their model."""
        if not any(earlier.get(name) for name in SPENT_FIELDS):
            return
        self.earlier = {name: int(earlier.get(name, 0)) for name in SPENT_FIELDS}
        for name in SPENT_FIELDS:
            setattr(self, name, getattr(self, name) + self.earlier[name])
        self.earlier["cost_usd"] = earlier.get("cost_usd")
        self.cost_usd = self._cost(prices)

    def _cost(self, prices: Mapping[str, tuple[float, float]]) -> float | None:
        """What was spent so far: this model's price for this run's own tokens, plus what the earlier ones cost."""
        own = cost_usd(prices, self.model or "", self.prompt_tokens - self.earlier.get("prompt_tokens", 0),
                       self.completion_tokens - self.earlier.get("completion_tokens", 0))
        if not self.earlier:
            return own
        earlier = self.earlier.get("cost_usd")
        return None if own is None or earlier is None else round(own + float(earlier), 6)

    def attempt_spend(self, prices: Mapping[str, tuple[float, float]]) -> dict[str, Any]:
        """What this attempt alone has spent so far: the record kept for it on the job's row."""
        spend: dict[str, Any] = {name: getattr(self, name) - self.earlier.get(name, 0) for name in SPENT_FIELDS}
        tokens = (spend["prompt_tokens"], spend["completion_tokens"])
        spend["cost_usd"] = cost_usd(prices, self.model or "", *tokens) if any(tokens) else 0.0
        return spend

    def to_dict(self) -> dict:
        data = {**asdict(self), "total_tokens": self.total_tokens}
        earlier = data.pop("earlier")
        if data["ocr"] is None:
            del data["ocr"]
        if earlier:
            data["spent_by_earlier_attempts"] = earlier
        return data
