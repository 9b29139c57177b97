"""Calling a language model: the chat client, the shared circuit breaker, the provider's limits shared by every
worker, budgets and what calls cost.

``chat`` (the openai SDK, its errors sorted into docpipe's), ``endpoint`` (where the endpoint is, its key, a chat
model per job and name), ``breaker`` (Powertools' circuit breaker, state in DynamoDB), ``gate`` (which of a
worker's calls may start now), ``sharedlimits`` (the worker's share of the deployment's limits, in DynamoDB),
``fairshare`` (how capacity is divided), ``ratelimit`` (token buckets, the provider's rate-limit headers),
``budget`` (a job's spend checked before each call), ``usage`` (tokens and money), ``prompts`` (document text
always reaches a model as delimited data). The openai SDK is imported only when a call is made.
"""

from chalicelib.llm.breaker import CIRCUIT_NAME, CircuitGuard
from chalicelib.llm.budget import Budget, MeteredChat
from chalicelib.llm.chat import (
    ChatModel,
    Completion,
    ContextLengthExceeded,
    EndpointBusy,
    EndpointRefused,
    RequestTooLarge,
    redact,
)
from chalicelib.llm.endpoint import LLMEndpoint
from chalicelib.llm.gate import CallGate
from chalicelib.llm.prompts import DATA_RULE, as_data
from chalicelib.llm.ratelimit import OutOfTime, ProviderLimits
from chalicelib.llm.usage import Usage, cost_usd, price_of, total_spend

__all__ = ["CIRCUIT_NAME", "DATA_RULE", "Budget", "CallGate", "ChatModel", "CircuitGuard", "Completion",
           "ContextLengthExceeded", "EndpointBusy", "EndpointRefused", "LLMEndpoint", "MeteredChat", "OutOfTime",
           "ProviderLimits", "RequestTooLarge", "Usage", "as_data", "cost_usd", "price_of", "redact", "total_spend"]
