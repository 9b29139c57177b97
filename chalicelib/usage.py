"""Tokens and money: what a job spent, and what it would spend before it spends anything."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Mapping

# USD per million tokens (input, output), from the providers' public price lists. DOCPIPE_PRICES adds or
# overrides entries, e.g. {"my-vllm-model": [0, 0]}.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
}


def price_table(env: Mapping[str, str]) -> dict[str, tuple[float, float]]:
    prices = dict(DEFAULT_PRICES)
    raw = env.get("DOCPIPE_PRICES", "").strip()
    if raw:
        try:
            extra = json.loads(raw)
            prices.update({str(k): (float(v[0]), float(v[1])) for k, v in extra.items()})
        except (ValueError, TypeError, IndexError, AttributeError):
            raise ValueError('DOCPIPE_PRICES must be JSON like {"model": [input_usd_per_million, '
                             'output_usd_per_million]}') from None
    return prices


def cost_usd(prices: Mapping[str, tuple[float, float]], model: str, prompt_tokens: int,
             completion_tokens: int) -> float | None:
    price = prices.get(model)
    if price is None:
        return None
    return round((prompt_tokens * price[0] + completion_tokens * price[1]) / 1_000_000, 6)


@dataclass
class Usage:
    """Running totals for one job; ``cost_usd`` is None when the model has no known price.

    ``cache_hits`` counts chunks answered from the map cache (no call, no tokens); ``retries`` the attempts repeated
    after transient errors; ``estimated_*`` the pre-flight estimate the budget was checked against.
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

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add_call(self, prompt_tokens: int, completion_tokens: int, prices: Mapping[str, tuple[float, float]]) -> None:
        self.calls += 1
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        self.cost_usd = cost_usd(prices, self.model or "", self.prompt_tokens, self.completion_tokens)

    def to_dict(self) -> dict:
        return {**asdict(self), "total_tokens": self.total_tokens}
