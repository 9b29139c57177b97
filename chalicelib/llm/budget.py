"""What a job may spend: refused before the first call when the estimate is over budget, stopped when spend reaches it.

The budget is the task's ``max_total_tokens`` (default ``DOCPIPE_DEFAULT_MAX_TOTAL_TOKENS``) and, when given, its
``max_cost_usd``. ``MeteredChat`` is the chat model as one job sees it: every call is added to the job's usage and
checked against the budget, and no call outlives the invocation's deadline::

    chat = MeteredChat(services.chat(model), usage=usage, budget=budget, prices=services.prices, deadline=deadline)
    completion = await chat.complete(messages, max_tokens=600)  # raises JobFailure("budget_exceeded") past it
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from chalicelib.errors import JobFailure
from chalicelib.llm.chat import Completion
from chalicelib.llm.usage import Usage, cost_usd


@dataclass(frozen=True)
class Budget:
    max_total_tokens: int
    max_cost_usd: float | None = None

    @classmethod
    def for_task(cls, task: dict[str, Any], default_max_total_tokens: int) -> Budget:
        return cls(task.get("max_total_tokens") or default_max_total_tokens, task.get("max_cost_usd"))

    def refusal(self, usage: Usage, prices: Mapping[str, tuple[float, float]], *, prompt_tokens: int,
                completion_tokens: int, calls: int) -> JobFailure | None:
        """Record the estimate on ``usage``; the ``budget_exceeded`` failure (before this attempt spends anything)
        when it and what earlier attempts spent are over the budget."""
        estimate = prompt_tokens + completion_tokens
        cost = cost_usd(prices, usage.model or "", prompt_tokens, completion_tokens)
        usage.estimated_tokens = estimate
        usage.estimated_cost_usd = cost
        spent_tokens = usage.total_tokens
        spent_cost = usage.cost_usd or 0.0
        earlier = (f" on top of the {spent_tokens} tokens (${spent_cost:.4f}) its earlier attempts spent"
                   if spent_tokens else "")
        nothing = "Nothing more was spent." if spent_tokens else "Nothing was spent."
        if spent_tokens + estimate > self.max_total_tokens:
            return JobFailure("budget_exceeded", f"the job would need about {estimate} tokens ({calls} model "
                                                 f"calls){earlier}; its budget is {self.max_total_tokens}. "
                                                 f"{nothing}")
        if self.max_cost_usd is not None and cost is not None and spent_cost + cost > self.max_cost_usd:
            return JobFailure("budget_exceeded", f"the job would cost about ${cost:.4f} ({estimate} tokens, {calls} "
                                                 f"model calls){earlier}; its budget is ${self.max_cost_usd}. "
                                                 f"{nothing}")
        return None

    def check_spent(self, usage: Usage) -> None:
        if usage.total_tokens >= self.max_total_tokens:
            raise JobFailure("budget_exceeded", f"the job spent {usage.total_tokens} tokens, reaching its budget of "
                                                f"{self.max_total_tokens}; it was stopped")
        if self.max_cost_usd is not None and usage.cost_usd is not None and usage.cost_usd >= self.max_cost_usd:
            raise JobFailure("budget_exceeded", f"the job spent ${usage.cost_usd:.4f}, reaching its budget of "
                                                f"${self.max_cost_usd}; it was stopped")


@dataclass
class MeteredChat:
    chat: Any
    usage: Usage
    budget: Budget
    prices: Mapping[str, tuple[float, float]]
    deadline: float | None = None
    latencies: list[float] = field(default_factory=list)

    async def complete(self, messages: list[dict[str, str]], *, max_tokens: int,
                       response_format: dict[str, Any] | None = None) -> Completion:
        # Checked before each call, not after: an answer already paid for is used, and no call starts past the budget.
        self.budget.check_spent(self.usage)
        options: dict[str, Any] = {"max_tokens": max_tokens}
        if response_format is not None:
            options["response_format"] = response_format
        if self.deadline is not None:
            options["deadline"] = self.deadline
        completion = await self.chat.complete(messages, **options)
        self.usage.add_call(completion.prompt_tokens, completion.completion_tokens, self.prices)
        self.usage.retries += completion.retries
        self.latencies.append(completion.latency_seconds)
        return completion
