"""An OpenAI-compatible chat/completions client: prompts in, texts out, standard library only.

Why not the openai SDK: the agents need four things it does not give together (batches over a
thread pool, a response cache that makes reruns free, retries that end in one clear exception the
caller turns into a fallback, and call/token accounting for the report), and every server we target
(OpenAI, vLLM, llama.cpp, Ollama, TGI) speaks the same small JSON protocol over plain HTTP.

Configuration comes from the arguments or the environment:
    OPENAI_BASE_URL    e.g. http://127.0.0.1:8000/v1   (default https://api.openai.com/v1)
    OPENAI_API_KEY     sent as a bearer token when set (required only for api.openai.com)
    EXPLORE_LLM_MODEL  the model name, e.g. gpt-4o-mini or the name a local server serves
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from functools import partial
from http.client import HTTPConnection, HTTPException, HTTPSConnection
from pathlib import Path
from typing import Any, Literal

from explore.errors import ConfigError
from explore.llm import LLMRequestError

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
# Status codes worth retrying: rate limits and server-side trouble. Other 4xx (bad key, unknown model,
# malformed request) fail the same way every time, so they raise at once.
_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}

CachePolicy = Literal["deterministic", "all", "off"]


@dataclass
class ClientStats:
    """Counters for the report: what was asked, what it cost, what failed."""

    requests: int = 0  # HTTP requests sent, retries included
    completions: int = 0  # requests that returned a usable answer
    cache_hits: int = 0  # prompts answered from the cache (or by an identical prompt in the same batch)
    retries: int = 0
    failures: int = 0  # prompts that failed after every retry
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    missing_usage: int = 0  # answers whose server sent no "usage" field (their tokens are not counted)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **deltas: int) -> None:
        with self._lock:
            for name, value in deltas.items():
                setattr(self, name, getattr(self, name) + value)

    def as_dict(self) -> dict[str, int]:
        # Read the fields directly: dataclasses.asdict deep-copies every field, the lock included,
        # and a lock cannot be copied.
        with self._lock:
            return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}


class _Watchdog:
    """Ends one HTTP attempt when its time is up, whatever the server does.

    A socket timeout bounds each read, not the whole answer: a server that sends one byte every half
    second never trips it. So a timer shuts the attempt's socket down at the limit, which makes the
    blocked read return at once; the attempt then reports a timeout.
    """

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.fired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()

    def attach(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.fired:  # connected just as the time ran out
                _shut(sock)

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            for sock in self._sockets:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed
        sock.shutdown(socket.SHUT_RDWR)


class _WatchedConnection:
    """An http.client connection that hands its socket to the attempt's watchdog once connected."""

    def __init__(self, *args: Any, watchdog: _Watchdog, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._watchdog = watchdog

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        self._watchdog.attach(self.sock)  # type: ignore[attr-defined]


class _WatchedHTTPConnection(_WatchedConnection, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_WatchedConnection, HTTPSConnection):
    pass


_WATCHED = {HTTPConnection: _WatchedHTTPConnection, HTTPSConnection: _WatchedHTTPSConnection}
# The watchdog of the attempt running in this thread. A thread-local rather than an attribute of the
# request, because urllib builds a new request to follow a redirect.
_current = threading.local()


def _watched(http_class: Any) -> Any:
    watchdog = getattr(_current, "watchdog", None)
    return http_class if watchdog is None else partial(_WATCHED[http_class], watchdog=watchdog)


class _WatchedHTTPHandler(urllib.request.HTTPHandler):
    def do_open(self, http_class: Any, req: Any, **kwargs: Any) -> Any:
        return super().do_open(_watched(http_class), req, **kwargs)


class _WatchedHTTPSHandler(urllib.request.HTTPSHandler):
    def do_open(self, http_class: Any, req: Any, **kwargs: Any) -> Any:
        return super().do_open(_watched(http_class), req, **kwargs)


class OpenAIClient:
    """A generic OpenAI-compatible text backend (`explore.llm.TextGenerator`).

    Args:
        model, base_url, api_key: override EXPLORE_LLM_MODEL, OPENAI_BASE_URL, OPENAI_API_KEY.
        api: "chat" posts to {base_url}/chat/completions with the prompt as one user message;
            "completions" posts to {base_url}/completions (base models served by vLLM, llama.cpp).
        system_prompt: an optional system message for the chat API.
        timeout: wall-clock seconds one HTTP attempt may take in all: connect, send, wait and read
            the whole answer (enforced by closing the connection, so a server that trickles bytes
            cannot stretch it).
        deadline: wall-clock seconds one request (one prompt) may take in all, its retries and the
            backoff waits between them included; default (max_retries + 1) * timeout. An attempt
            gets at most the time that is left, and a retry whose wait would end past the deadline
            is not made. So `complete` returns or raises within `deadline` (plus scheduling noise),
            and `generate` on n distinct uncached prompts within ceil(n / max_workers) * deadline.
        max_retries: retries after the first attempt, on connection errors, timeouts, 5xx and 429.
        backoff, backoff_max: the wait before retry i is backoff * 2**i (capped, with jitter, or the
            server's Retry-After when it sends one), so that a rate-limited server is not hammered.
        max_workers: concurrent requests per batch.
        cache: "deterministic" (default) caches answers to greedy (temperature 0) or seeded requests
            only, because caching a sampled answer would make every later sample of that prompt
            identical; "all" caches everything; "off" nothing.
        cache_path: a JSONL file that persists the cache across runs (appended to, loaded at start).
        max_tokens, temperature, top_p, stop, seed: default sampling parameters for `generate`.
    """

    def __init__(
        self,
        model: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        api: Literal["chat", "completions"] = "chat",
        system_prompt: str | None = None,
        timeout: float = 60.0,
        deadline: float | None = None,
        max_retries: int = 4,
        backoff: float = 1.0,
        backoff_max: float = 30.0,
        max_workers: int = 8,
        cache: CachePolicy = "deterministic",
        cache_path: str | os.PathLike[str] | None = None,
        cache_size: int = 100_000,
        max_tokens: int = 64,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
    ):
        self.model = model or os.environ.get("EXPLORE_LLM_MODEL", "")
        if not self.model:
            raise ConfigError(
                "no model name for the OpenAI-compatible client: pass model=... or set EXPLORE_LLM_MODEL"
            )
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        parsed = urllib.parse.urlparse(self.base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ConfigError(f"invalid base URL {self.base_url!r}: expected http(s)://host[:port]/v1")
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        if not self.api_key and parsed.hostname == "api.openai.com":
            raise ConfigError("api.openai.com needs an API key: pass api_key=... or set OPENAI_API_KEY")
        if api not in ("chat", "completions"):
            raise ConfigError(f"api={api!r}: expected 'chat' or 'completions'")
        if cache not in ("deterministic", "all", "off"):
            raise ConfigError(f"cache={cache!r}: expected 'deterministic', 'all' or 'off'")
        if not timeout > 0 or max_retries < 0 or max_workers < 1:
            raise ConfigError(
                f"timeout={timeout!r}, max_retries={max_retries!r}, max_workers={max_workers!r}: "
                "timeout must be > 0, max_retries >= 0 and max_workers >= 1"
            )
        if deadline is not None and not deadline > 0:
            raise ConfigError(f"deadline={deadline!r}: expected seconds > 0 (or None)")
        self.api = api
        self.url = f"{self.base_url}/{'chat/completions' if api == 'chat' else 'completions'}"
        self.system_prompt = system_prompt
        self.timeout = timeout
        self.deadline = deadline if deadline is not None else (max_retries + 1) * timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.max_workers = max_workers
        self.cache_policy: CachePolicy = cache
        self.cache_size = cache_size
        self.defaults: dict[str, Any] = {
            "max_tokens": max_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "stop": list(stop) if stop else None,
            "seed": seed,
        }
        self.stats = ClientStats()
        self._cache: OrderedDict[str, str] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._cache_path = Path(cache_path) if cache_path is not None else None
        if self._cache_path is not None and self._cache_path.exists():
            self._load_cache(self._cache_path)
        # Loopback servers are reached directly: a proxy set for the outside world cannot reach them.
        handlers: list[urllib.request.BaseHandler] = [_WatchedHTTPHandler(), _WatchedHTTPSHandler()]
        if parsed.hostname in _LOOPBACK:
            handlers.append(urllib.request.ProxyHandler({}))
        self._opener = urllib.request.build_opener(*handlers)

    def __repr__(self) -> str:
        return f"OpenAIClient(model={self.model!r}, url={self.url!r})"

    # --- the public interface -------------------------------------------------------------------

    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """One text per prompt, requested concurrently; cached answers make no request.

        A prompt that still fails after the retries raises `LLMRequestError` (after the rest of the
        batch has finished, so its answers are cached), or with `return_exceptions=True` leaves the
        exception in its slot of the returned list.
        """
        if isinstance(prompts, str):
            raise TypeError("generate() takes a sequence of prompts; wrap a single prompt in a list")
        params = dict(self.defaults)
        for name, value in (
            ("max_tokens", max_new_tokens),
            ("temperature", temperature),
            ("top_p", top_p),
            ("seed", seed),
        ):
            if value is not None:
                params[name] = value
        if stop is not None:
            params["stop"] = list(stop) or None
        cacheable = self.cache_policy == "all" or (
            self.cache_policy == "deterministic"
            and (params["temperature"] == 0 or params["seed"] is not None)
        )
        results: list[Any] = [None] * len(prompts)
        pending: dict[str, list[int]] = {}  # request key -> the prompt slots it answers
        for i, prompt in enumerate(prompts):
            key = self._cache_key(prompt, params)
            if cacheable:
                with self._cache_lock:
                    hit = self._cache.get(key)
                    if hit is not None:
                        self._cache.move_to_end(key)
                if hit is not None:
                    results[i] = hit
                    self.stats.add(cache_hits=1)
                    continue
                if key in pending:  # the same prompt twice in one batch: one request answers both
                    self.stats.add(cache_hits=1)
            else:
                key = f"{key}:{i}"  # sampled answers must be independent draws, never shared
            pending.setdefault(key, []).append(i)

        def work(slots: list[int]) -> str | LLMRequestError:
            try:
                return self._request(prompts[slots[0]], params)
            except LLMRequestError as exc:
                return exc

        jobs = list(pending.items())
        if len(jobs) <= 1 or self.max_workers == 1:
            answers = [work(slots) for _, slots in jobs]
        else:
            with ThreadPoolExecutor(max_workers=min(self.max_workers, len(jobs))) as pool:
                answers = list(pool.map(work, [slots for _, slots in jobs]))
        errors = []
        for (key, slots), answer in zip(jobs, answers, strict=True):
            if isinstance(answer, LLMRequestError):
                errors.append(answer)
            elif cacheable:
                self._store(key, prompts[slots[0]], params, answer)
            for i in slots:
                results[i] = answer
        if errors and not return_exceptions:
            first = errors[0]
            raise LLMRequestError(
                f"{len(errors)} of {len(jobs)} requests to {self.url} failed; the first: {first}",
                url=first.url,
                attempts=first.attempts,
                status=first.status,
                retryable=first.retryable,
            ) from first
        return results

    def complete(self, prompt: str, **kwargs: Any) -> str:
        """One prompt, one text (raises `LLMRequestError` after the retries)."""
        return self.generate([prompt], **kwargs)[0]

    def clear_cache(self) -> None:
        with self._cache_lock:
            self._cache.clear()

    # --- one request with retries -----------------------------------------------------------------

    def _payload(self, prompt: str, params: dict[str, Any]) -> dict[str, Any]:
        payload: dict[str, Any] = {"model": self.model}
        if self.api == "chat":
            messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
            payload["messages"] = [*messages, {"role": "user", "content": prompt}]
        else:
            payload["prompt"] = prompt
        payload.update({k: v for k, v in params.items() if v is not None})
        return payload

    def _request(self, prompt: str, params: dict[str, Any]) -> str:
        body = json.dumps(self._payload(prompt, params)).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        end = time.monotonic() + self.deadline
        last: LLMRequestError | None = None
        out_of_time = False
        for attempt in range(self.max_retries + 1):
            if attempt:
                wait = self._delay(attempt - 1, last)
                if time.monotonic() + wait >= end:
                    out_of_time = True
                    break
                self.stats.add(retries=1)
                time.sleep(wait)
            limit = min(self.timeout, end - time.monotonic())
            if limit <= 0:
                out_of_time = True
                break
            self.stats.add(requests=1)
            raw, last = self._attempt(body, headers, limit, attempt + 1)
            if last is None:
                return self._parse(raw)
            log.debug("attempt %d/%d failed: %s", attempt + 1, self.max_retries + 1, last)
            if not last.retryable:
                break
        assert last is not None
        self.stats.add(failures=1)
        tries = f"after {last.attempts} attempt{'s' if last.attempts > 1 else ''}"
        if out_of_time:
            tries += f"; the request's {self.deadline:g} s deadline left no time for another"
        raise LLMRequestError(
            f"{last} ({tries})",
            url=self.url,
            attempts=last.attempts,
            status=last.status,
            retryable=last.retryable,
        )

    def _attempt(
        self, body: bytes, headers: dict[str, str], limit: float, number: int
    ) -> tuple[bytes, LLMRequestError | None]:
        """One HTTP attempt that ends within `limit` seconds: (the body, None) or (b"", the error)."""
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        with _Watchdog(limit) as watchdog:
            _current.watchdog = watchdog  # read by _Watched*Handler when it opens the connection
            try:
                with self._opener.open(request, timeout=limit) as response:
                    raw = response.read()
                if not watchdog.fired:  # else the body may be cut short (a server that sends no length)
                    return raw, None
                error: BaseException = TimeoutError("the connection was closed at the limit")
            except urllib.error.HTTPError as exc:
                detail = _read_error_body(exc)  # still under the watchdog: the body may trickle too
                if not watchdog.fired:
                    return b"", LLMRequestError(
                        f"HTTP {exc.code} from {self.url}: {detail}",
                        url=self.url,
                        attempts=number,
                        status=exc.code,
                        retryable=exc.code in _RETRY_STATUS,
                        retry_after=_retry_after(exc),
                    )
                error = exc
            except urllib.error.URLError as exc:  # connection refused, DNS failure, TLS errors
                if not watchdog.fired and not isinstance(exc.reason, TimeoutError):
                    return b"", LLMRequestError(
                        f"request to {self.url} could not connect ({exc.reason})",
                        url=self.url,
                        attempts=number,
                        retryable=True,
                    )
                error = exc
            except (ConnectionError, HTTPException, OSError) as exc:  # reset, remote closed, short read
                # TimeoutError is an OSError: it and whatever the watchdog's shutdown caused are timeouts
                if not watchdog.fired and not isinstance(exc, TimeoutError):
                    return b"", LLMRequestError(
                        f"connection to {self.url} failed: {type(exc).__name__}: {exc}",
                        url=self.url,
                        attempts=number,
                        retryable=True,
                    )
                error = exc
            finally:
                _current.watchdog = None
        return b"", LLMRequestError(
            f"request to {self.url} timed out: no complete answer within {limit:g} s "
            f"({type(error).__name__}: {error})",
            url=self.url,
            attempts=number,
            retryable=True,
        )

    def _delay(self, retry: int, last: LLMRequestError | None) -> float:
        server_says = last.retry_after if last is not None else None
        if server_says is not None:
            return min(server_says, self.backoff_max)
        # Jitter spreads the retries of a batch that failed together, so they do not collide again.
        return min(self.backoff * 2**retry, self.backoff_max) * random.uniform(0.5, 1.0)

    def _parse(self, raw: bytes) -> str:
        """The answer's text; a body that is not an OpenAI-style answer is a configuration problem."""
        try:
            data = json.loads(raw)
            choice = data["choices"][0]
            text = choice["message"].get("content") if self.api == "chat" else choice["text"]
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            self.stats.add(failures=1)
            snippet = raw[:200].decode("utf-8", "replace")
            raise LLMRequestError(
                f"{self.url} did not return an OpenAI-style {self.api} answer ({type(exc).__name__}: {exc}); "
                f"the body begins: {snippet!r}. Is the base URL right (it usually ends in /v1)?",
                url=self.url,
                attempts=1,
            ) from exc
        usage = data.get("usage") or {}
        if usage:
            prompt_tokens = int(usage.get("prompt_tokens") or 0)
            completion_tokens = int(usage.get("completion_tokens") or 0)
            total = int(usage.get("total_tokens") or prompt_tokens + completion_tokens)
            self.stats.add(
                completions=1,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                total_tokens=total,
            )
        else:
            self.stats.add(completions=1, missing_usage=1)
        return text or ""  # a null content (refusal, tool call) reads as an empty, malformed answer

    # --- the cache --------------------------------------------------------------------------------

    def _cache_key(self, prompt: str, params: dict[str, Any]) -> str:
        material = [self.model, self.api, self.system_prompt, prompt, sorted(params.items())]
        return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()

    def _store(self, key: str, prompt: str, params: dict[str, Any], text: str) -> None:
        with self._cache_lock:
            self._cache[key] = text
            self._cache.move_to_end(key)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
            if self._cache_path is not None:
                record = {"key": key, "model": self.model, "prompt": prompt, "params": params, "text": text}
                with self._cache_path.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")

    def _load_cache(self, path: Path) -> None:
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    self._cache[record["key"]] = record["text"]
                except (ValueError, KeyError, TypeError):
                    log.warning("%s:%d: skipping an unreadable cache line", path, n)


def _read_error_body(exc: urllib.error.HTTPError) -> str:
    """The server's error message (OpenAI-style {"error": {"message": ...}} or the raw body)."""
    try:
        raw = exc.read()
    except (OSError, HTTPException):
        return exc.reason if isinstance(exc.reason, str) else ""
    try:
        data = json.loads(raw)
        message = data["error"]["message"] if isinstance(data.get("error"), dict) else data.get("error", data)
        return str(message)[:300]
    except (ValueError, KeyError, TypeError, AttributeError):
        return raw[:300].decode("utf-8", "replace").strip() or str(exc.reason)


def _retry_after(exc: urllib.error.HTTPError) -> float | None:
    value = exc.headers.get("Retry-After") if exc.headers else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: rare for these servers, and our own backoff is fine then
