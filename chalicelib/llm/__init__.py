"""Calling a language model: the chat client, the shared circuit breaker, rate limits, budgets and what calls cost.

``chat`` (the openai SDK, its errors sorted into docpipe's), ``endpoint`` (where the endpoint is, its key, a chat
model per name), ``breaker`` (Powertools' circuit breaker, state in DynamoDB), ``ratelimit`` (requests and tokens
per minute), ``budget`` (a job's spend checked before each call), ``usage`` (tokens and money), ``prompts``
(document text always reaches a model as delimited data). The openai SDK is imported only when a call is made.
"""

from chalicelib.llm.breaker import CIRCUIT_NAME, GuardedChat
from chalicelib.llm.budget import Budget, MeteredChat
from chalicelib.llm.chat import ChatModel, Completion, ContextLengthExceeded, EndpointBusy, EndpointRefused, redact
from chalicelib.llm.endpoint import LLMEndpoint
from chalicelib.llm.prompts import DATA_RULE, as_data
from chalicelib.llm.ratelimit import OutOfTime, Throttle
from chalicelib.llm.usage import Usage, cost_usd, price_of, total_spend

__all__ = ["CIRCUIT_NAME", "DATA_RULE", "Budget", "ChatModel", "Completion", "ContextLengthExceeded", "EndpointBusy",
           "EndpointRefused", "GuardedChat", "LLMEndpoint", "MeteredChat", "OutOfTime", "Throttle", "Usage", "as_data",
           "cost_usd", "price_of", "redact", "total_spend"]
