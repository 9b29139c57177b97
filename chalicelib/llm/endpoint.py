"""The LLM endpoint a worker calls: where it is, its key, and one chat model per job and model name.

Locally the endpoint comes from the standard ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL`` variables; on AWS the key
(and optionally the URL) come from the stage's secret, read again per job so that a rotated key is in use within
``DOCPIPE_LLM_SECRET_MAX_AGE_SECONDS``. Every attempt goes through the circuit breaker all workers share, and
through this worker's gate for the endpoint and model, which holds the worker's share of the deployment's limits
(``DOCPIPE_LLM_MAX_IN_FLIGHT``, ``DOCPIPE_LLM_RPM``, ``DOCPIPE_LLM_TPM``)::

    endpoint.refresh()                  # the secret's key, as it is now (cached by Powertools Parameters)
    if endpoint.uses_openai:
        chat = endpoint.chat("gpt-4o-mini")
    ...
    endpoint.settle()                   # the invocation ends: unused shares go back to the other workers
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

from chalicelib.aws.versioned import VersionedItems
from chalicelib.config import ConfigError, Settings, with_llm_secret
from chalicelib.errors import TransientError
from chalicelib.llm.breaker import CircuitGuard, circuit_state
from chalicelib.llm.gate import CallGate
from chalicelib.llm.sharedlimits import SharedLimits, pool_key
from chalicelib.observability import logger


class LLMEndpoint:
    """``settings`` describe the endpoint as the environment has it; ``secret`` reads the stage's secret (None where
    the environment alone serves); ``dynamodb`` (a boto3 client) reaches the circuit breaker's state, and ``limits``
    the items in which workers share the provider's limits (None: no shared limits)."""

    def __init__(self, settings: Settings, *, dynamodb: Any, secret: Callable[[], str | None] | None = None,
                 limits: VersionedItems | None = None) -> None:
        self._environment = settings
        self.settings = settings
        self._dynamodb = dynamodb
        self._secret = secret
        self._limits = limits
        self._gates: dict[tuple[str | None, str], CallGate] = {}
        self._gates_lock = threading.Lock()
        self._warned_no_key = False

    @property
    def uses_openai(self) -> bool:
        """An OpenAI-compatible endpoint is configured; otherwise the offline provider does the work."""
        return self.settings.uses_openai

    @property
    def base_url(self) -> str | None:
        return self.settings.llm_base_url

    def refresh(self) -> None:
        """Take the endpoint's key (and URL) from the stage's secret, as it is now.

        The secret is read through Powertools Parameters, which keeps it for ``llm_secret_max_age_seconds``: warm
        invocations do not call Secrets Manager, and a rotated key is in use within that time. A secret that holds no
        value yet leaves the offline provider in charge, with a warning; one that cannot be read is a transient error.
        """
        if self._secret is None:
            return
        name = self._environment.llm_secret_name
        try:
            secret = self._secret()
            settings = with_llm_secret(self._environment, secret)
        except ConfigError as exc:
            raise TransientError("llm_unavailable", str(exc)) from exc
        except Exception as exc:  # never the value: only what kind of failure it was
            raise TransientError("llm_unavailable", f"could not read the LLM secret {name}: "
                                                    f"{type(exc).__name__}") from exc
        if secret is None and not self._warned_no_key:
            self._warned_no_key = True
            logger.warning("the stage's LLM secret holds no key yet: jobs use the offline provider until one is set "
                           "(make llm-key)", extra={"secret": name})
        self.settings = settings

    def chat(self, model: str) -> Any:
        """A chat model for one job, for ``model`` on the endpoint: through this worker's gate and the circuit."""
        from chalicelib.documents import count_tokens
        from chalicelib.llm.chat import ChatModel

        s = self.settings
        # The breaker's state shares the idempotency table: both are Powertools records keyed by "id".
        guard = CircuitGuard(dynamodb=self._dynamodb, table_name=s.idempotency_table,
                             failure_threshold=s.breaker_failures, recovery_seconds=s.breaker_recovery_seconds,
                             concurrency=s.llm_concurrency)
        return ChatModel(model=model, api_key=s.llm_api_key, base_url=s.llm_base_url,
                         timeout=s.llm_timeout_seconds, max_retries=s.llm_max_attempts - 1, gate=self.gate(model),
                         guard=guard, count_tokens=functools.partial(count_tokens, model=model))

    def gate(self, model: str) -> CallGate:
        """This worker's gate for ``model`` on the endpoint, shared by every job (and thread) it runs."""
        key = (self.settings.llm_base_url, model)
        with self._gates_lock:
            if key not in self._gates:
                self._gates[key] = self._new_gate(model)
            return self._gates[key]

    def settle(self) -> None:
        """The invocation ends: every share of the deployment's limits this worker does not use goes back now."""
        with self._gates_lock:
            gates = list(self._gates.values())
        for gate in gates:
            gate.settle()

    def _new_gate(self, model: str) -> CallGate:
        s = self.settings
        shared = None
        if s.llm_max_in_flight and self._limits is not None:
            shared = SharedLimits(self._limits, pool_key(s.llm_base_url, model), capacity=s.llm_max_in_flight,
                                  fallback_units=s.llm_max_in_flight // s.worker_max_concurrency)
        return CallGate(requests_per_minute=s.llm_requests_per_minute, tokens_per_minute=s.llm_tokens_per_minute,
                        shared=shared)

    def circuit(self) -> str:
        """The shared LLM circuit's state, as every worker reads it (for the operator's dashboard)."""
        return circuit_state(self._dynamodb, self.settings.idempotency_table)
