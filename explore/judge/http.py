"""A judge served by any OpenAI-compatible endpoint (vLLM, llama.cpp server, Ollama, OpenAI).

Built on `explore.llm.openai_client.OpenAIClient`, which does the HTTP: batches over a thread pool,
a wall-clock timeout per attempt and a deadline per request (retries and their waits included, so a
server that trickles bytes or never answers costs at most the deadline), retries with exponential
backoff on connection errors, timeouts, 429 and 5xx, a
response cache keyed by (model, prompt, sampling parameters) and token accounting. This module adds
what makes it a judge: the prompts, robust parsing of the replies, one re-ask of a reply that cannot
be parsed, the fallback, and a circuit breaker.

Configuration (arguments first, then the environment):
    url      EXPLORE_JUDGE_URL, else OPENAI_BASE_URL   e.g. http://127.0.0.1:8000/v1
    model    EXPLORE_JUDGE_MODEL, else EXPLORE_LLM_MODEL
    api_key  EXPLORE_JUDGE_API_KEY, else OPENAI_API_KEY (sent as a bearer token when set)

Faults: a request the client gave up on (unreachable, timed out, 5xx after its retries), a body that
is not an API answer, or a reply still unreadable after `parse_retries` re-asks is answered by the
fallback judge (base.Judge). After `breaker_failures` consecutive failed batches the judge stops
asking the server for `breaker_cooldown` seconds (every question goes straight to the fallback,
counted as `judge/fallbacks` and `judge/breaker_skips`), so a dead server does not cost a timeout per
step; then it tries again.

Time: a question about n states takes at most ceil(n / max_workers) * deadline when the server
fails or stalls (a transport failure is not re-asked; only a reply that cannot be parsed is), and
(1 + parse_retries) times that when every reply is unreadable.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from explore.errors import ConfigError
from explore.judge.base import Judge, JudgeFailure, parse_index, parse_score
from explore.llm import LLMRequestError
from explore.llm.openai_client import OpenAIClient


def _failure_kind(exc: LLMRequestError) -> str:
    text = str(exc)
    if exc.status is not None:
        return f"http_{exc.status}"
    if "timed out" in text:
        return "timeout"
    if "could not connect" in text:
        return "unreachable"
    if "did not return" in text:
        return "bad_response"
    return "request_error"


class HTTPJudge(Judge):
    """A judge that asks an OpenAI-compatible server (see the module docstring).

    Args:
        url, model, api_key: the endpoint (see the module docstring for the environment variables).
        client: an `OpenAIClient` to use instead of building one (url/model/... are then ignored).
        api: "chat" or "completions".
        timeout: wall-clock seconds per HTTP attempt (connect, wait and read the whole reply).
        deadline: wall-clock seconds per request, its retries and their waits included (default
            (max_retries + 1) * timeout); see the module docstring for what a question costs.
        max_retries, backoff: the client's retries of failed requests (exponential backoff).
        max_workers: concurrent requests per batch.
        cache_path: a JSONL file persisting the response cache across runs.
        max_tokens: the reply length asked for.
        parse_retries: re-asks of a reply that cannot be parsed, sampled (temperature
            `retry_temperature`, a fixed seed per re-ask, so that they are cached too).
        breaker_failures, breaker_cooldown: the circuit breaker (0 failures disables it).
        threshold, fallback, seed, context_size, max_state_chars: see `Judge`.
    """

    kind = "http"

    def __init__(
        self,
        url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        *,
        client: OpenAIClient | None = None,
        api: str = "chat",
        timeout: float = 30.0,
        deadline: float | None = None,
        max_retries: int = 2,
        backoff: float = 0.5,
        max_workers: int = 8,
        cache_path: str | os.PathLike[str] | None = None,
        max_tokens: int = 16,
        parse_retries: int = 1,
        retry_temperature: float = 0.7,
        breaker_failures: int = 3,
        breaker_cooldown: float = 60.0,
        threshold: float = 0.5,
        fallback: str | Judge = "embedding",
        **kwargs: Any,
    ):
        super().__init__(threshold=threshold, fallback=fallback, **kwargs)
        if client is None:
            url = url or os.environ.get("EXPLORE_JUDGE_URL") or None
            model = model or os.environ.get("EXPLORE_JUDGE_MODEL") or os.environ.get("EXPLORE_LLM_MODEL")
            if not model:
                raise ConfigError(
                    "the HTTP judge needs a model name: pass model=... (--judge-model) or set "
                    "EXPLORE_JUDGE_MODEL (or EXPLORE_LLM_MODEL)"
                )
            if api_key is None:
                api_key = os.environ.get("EXPLORE_JUDGE_API_KEY")  # else the client reads OPENAI_API_KEY
            client = OpenAIClient(
                model,
                url,
                api_key,
                api=api,  # type: ignore[arg-type]
                timeout=timeout,
                deadline=deadline,
                max_retries=max_retries,
                backoff=backoff,
                max_workers=max_workers,
                cache_path=cache_path,
                max_tokens=max_tokens,
                temperature=0.0,
            )
        if parse_retries < 0 or breaker_failures < 0 or breaker_cooldown < 0:
            raise ConfigError("parse_retries, breaker_failures and breaker_cooldown must be >= 0")
        self.client = client
        self.parse_retries = parse_retries
        self.retry_temperature = retry_temperature
        self.breaker_failures = breaker_failures
        self.breaker_cooldown = breaker_cooldown
        self._consecutive_failures = 0
        self._open_until = 0.0

    def __repr__(self) -> str:
        return f"HTTPJudge(model={self.client.model!r}, url={self.client.url!r})"

    # --- asking with parsing, re-asks and the breaker --------------------------------------------

    def _ask(self, prompts: list[str], parse: Callable[[str, int], Any]) -> list[Any]:
        """One parsed answer (or a JudgeFailure) per prompt."""
        if self.breaker_failures and time.monotonic() < self._open_until:
            self.counters["breaker_skips"] += len(prompts)
            return [JudgeFailure("breaker_open", f"{self.client.url} failed repeatedly; not asked")] * len(
                prompts
            )
        out: list[Any] = [None] * len(prompts)
        todo = list(range(len(prompts)))
        for attempt in range(self.parse_retries + 1):
            kwargs: dict[str, Any] = {}
            if attempt:  # a fresh (sampled, seeded and so still cached) draw, not the cached reply
                kwargs = {"temperature": self.retry_temperature, "seed": attempt}
            replies = self.client.generate([prompts[i] for i in todo], return_exceptions=True, **kwargs)
            again = []
            for i, reply in zip(todo, replies, strict=True):
                if isinstance(reply, LLMRequestError):
                    out[i] = JudgeFailure(_failure_kind(reply), str(reply))  # the client already retried
                    continue
                value = parse(reply, i)
                if value is None:
                    self.counters["parse_failures"] += 1
                    out[i] = JudgeFailure("unparseable", f"could not read an answer from {reply[:80]!r}")
                    again.append(i)
                else:
                    out[i] = value
            todo = again
            if not todo:
                break
        transport = sum(isinstance(v, JudgeFailure) and v.kind != "unparseable" for v in out)
        if transport == len(prompts):
            self._consecutive_failures += 1
            if self.breaker_failures and self._consecutive_failures >= self.breaker_failures:
                self._open_until = time.monotonic() + self.breaker_cooldown
                self._consecutive_failures = 0
        else:
            self._consecutive_failures = 0
        return out

    def _score(self, states: list[str], archive: list[str]) -> list[float | JudgeFailure]:
        prompts = [self.score_prompt(s, archive) for s in states]
        return self._ask(prompts, lambda reply, i: parse_score(reply))

    def _prefer(self, pairs: list[tuple[str, str]], context: str) -> list[float | JudgeFailure]:
        prompts = [self.preference_prompt(a, b, context) for a, b in pairs]  # one batch of requests
        return self._ask(prompts, lambda reply, i: {0: 1.0, 1: 0.0}.get(parse_index(reply, 2)))

    def _choose_state(self, states: list[str], context: str) -> int | JudgeFailure:
        return self._ask([self.state_prompt(states, context)], lambda r, i: parse_index(r, len(states)))[0]

    def _choose_action(
        self, state: str, actions: list[str], context: str, tried: list[str]
    ) -> int | JudgeFailure:
        prompt = self.action_prompt(state, actions, context, tried)
        return self._ask([prompt], lambda r, i: parse_index(r, len(actions), actions))[0]

    def _backend_metrics(self) -> dict[str, float]:
        s = self.client.stats
        return {
            "judge/calls": float(s.requests),
            "judge/tokens": float(s.total_tokens),
            "judge/cache_hits": float(s.cache_hits),
            "judge/retries": float(s.retries),
            "judge/request_failures": float(s.failures),
        }
