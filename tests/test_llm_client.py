"""The OpenAI-compatible client against a real HTTP server on loopback (no mocks of the HTTP layer).

`FakeOpenAI` is a small /v1/chat/completions + /v1/completions server in a thread; tests steer it
per prompt (fail N times with a status, sleep, return a broken body) and read back what it received.
tests/test_llm_bandit.py imports it for the agent's end-to-end run.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from explore.errors import ConfigError
from explore.llm import LLMRequestError
from explore.llm.openai_client import OpenAIClient


def echo(prompt: str) -> str:
    return f"echo: {prompt}"


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1 at a free port, serving `handler` while in a `with` block."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        # a short poll interval: shutdown() waits up to one interval
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class FakeOpenAI(LoopbackServer):
    """An OpenAI-compatible server on 127.0.0.1 with scripted failures.

    `fail[marker] = (status, n)`: a prompt containing marker gets `status` its first n times.
    `sleep[marker] = seconds`: a prompt containing marker is answered after a pause.
    `broken`: markers whose answer is not JSON.
    `reply(prompt) -> str`: the answer text. usage: one prompt token per word, 3 completion tokens.
    """

    def __init__(self, reply: Callable[[str], str] = echo):
        self.reply = reply
        self.fail: dict[str, tuple[int, int]] = {}
        self.sleep: dict[str, float] = {}
        self.broken: set[str] = set()
        self.payloads: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.paths: list[str] = []
        self.seen: Counter[str] = Counter()
        self.active = 0
        self.max_active = 0
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

            def do_POST(self) -> None:
                payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = payload["messages"][-1]["content"] if "messages" in payload else payload["prompt"]
                with fake.lock:
                    fake.payloads.append(payload)
                    fake.headers.append(dict(self.headers))
                    fake.paths.append(self.path)
                    fake.seen[prompt] += 1
                    count = fake.seen[prompt]
                    fake.active += 1
                    fake.max_active = max(fake.max_active, fake.active)
                try:
                    self._answer(payload, prompt, count)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                    pass
                finally:
                    with fake.lock:
                        fake.active -= 1

            def _answer(self, payload: dict[str, Any], prompt: str, count: int) -> None:
                for marker, seconds in fake.sleep.items():
                    if marker in prompt:
                        time.sleep(seconds)
                for marker, (status, times) in fake.fail.items():
                    if marker in prompt and count <= times:
                        body = json.dumps({"error": {"message": f"scripted {status} #{count}"}}).encode()
                        self.send_response(status)
                        if status == 429:
                            self.send_header("Retry-After", "0")
                        self._send(body)
                        return
                if any(marker in prompt for marker in fake.broken):
                    self.send_response(200)
                    self._send(b"<html>not an API</html>")
                    return
                text = fake.reply(prompt)
                choice = (
                    {"message": {"role": "assistant", "content": text}}
                    if "messages" in payload
                    else {"text": text}
                )
                usage = {
                    "prompt_tokens": len(prompt.split()),
                    "completion_tokens": 3,
                    "total_tokens": len(prompt.split()) + 3,
                }
                body = json.dumps({"id": "x", "model": payload["model"], "choices": [choice], "usage": usage})
                self.send_response(200)
                self._send(body.encode())

            def _send(self, body: bytes) -> None:
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        super().__init__(Handler)

    @property
    def requests(self) -> int:
        return len(self.payloads)


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


def client(server: FakeOpenAI, **kwargs: Any) -> OpenAIClient:
    options: dict[str, Any] = {
        "model": "tiny-test",
        "base_url": server.url,
        "api_key": "sk-test",
        "backoff": 0.001,
        "max_retries": 3,
        "timeout": 5.0,
    }
    options.update(kwargs)
    return OpenAIClient(**options)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_batch_returns_one_text_per_prompt_in_order_and_counts_tokens(server):
    c = client(server, max_workers=4)
    prompts = [f"prompt number {i}" for i in range(6)]
    assert c.generate(prompts, max_new_tokens=5) == [echo(p) for p in prompts]
    assert server.requests == 6
    payload = server.payloads[0]
    assert payload["model"] == "tiny-test" and payload["max_tokens"] == 5 and payload["temperature"] == 0.0
    assert payload["messages"][-1]["role"] == "user"
    assert server.headers[0]["Authorization"] == "Bearer sk-test"
    s = c.stats
    assert (s.requests, s.completions, s.failures, s.retries) == (6, 6, 0, 0)
    assert s.prompt_tokens == 6 * 3 and s.completion_tokens == 6 * 3 and s.total_tokens == 6 * 6


def test_batch_requests_run_concurrently(server):
    server.sleep["slow"] = 0.2
    c = client(server, max_workers=4)
    started = time.perf_counter()
    c.generate([f"slow {i}" for i in range(4)])
    assert server.max_active >= 2  # the server saw overlapping requests
    assert time.perf_counter() - started < 0.75  # four 0.2 s requests one after another take 0.8 s


def test_cache_answers_repeated_prompts_without_requests(server, tmp_path):
    c = client(server, cache_path=tmp_path / "cache.jsonl")
    first = c.generate(["a", "b", "a"])  # "a" twice in one batch: one request
    assert first == [echo("a"), echo("b"), echo("a")] and server.requests == 2
    assert c.generate(["b", "a"]) == [echo("b"), echo("a")]
    assert server.requests == 2 and c.stats.cache_hits == 3
    c.generate(["a"], max_new_tokens=7)  # other sampling parameters: another key
    assert server.requests == 3
    # sampled requests are not cached by default: each call is a fresh draw
    c.generate(["a"], temperature=0.8)
    c.generate(["a"], temperature=0.8)
    assert server.requests == 5
    # the cache file serves a new client (a rerun) without any request
    again = client(server, cache_path=tmp_path / "cache.jsonl")
    assert again.generate(["a", "b"]) == [echo("a"), echo("b")] and server.requests == 5
    # another model name is another key
    client(server, model="other").generate(["a"])
    assert server.requests == 6


def test_retries_server_errors_then_succeeds(server):
    server.fail["flaky"] = (500, 2)
    server.fail["limited"] = (429, 1)
    c = client(server, max_retries=3)
    assert c.generate(["flaky one", "limited one", "fine"]) == [
        echo("flaky one"),
        echo("limited one"),
        echo("fine"),
    ]
    assert server.seen["flaky one"] == 3 and server.seen["limited one"] == 2
    assert (c.stats.retries, c.stats.failures, c.stats.completions) == (3, 0, 3)


def test_persistent_server_errors_raise_after_the_retries(server):
    server.fail["down"] = (503, 100)
    c = client(server, max_retries=2)
    with pytest.raises(LLMRequestError, match="HTTP 503") as info:
        c.generate(["down"])
    assert info.value.attempts == 3 and info.value.status == 503 and server.seen["down"] == 3
    assert c.stats.failures == 1


def test_client_errors_are_not_retried(server):
    server.fail["bad key"] = (401, 100)
    c = client(server, max_retries=3)
    with pytest.raises(LLMRequestError, match="HTTP 401.*scripted 401") as info:
        c.complete("bad key")
    assert info.value.attempts == 1 and server.seen["bad key"] == 1


def test_timeout_then_error_that_the_caller_turns_into_a_fallback(server):
    server.sleep["stuck"] = 1.0
    c = client(server, timeout=0.2, max_retries=1)
    started = time.perf_counter()
    with pytest.raises(LLMRequestError, match="timed out") as info:
        c.generate(["stuck"])
    assert info.value.attempts == 2 and info.value.retryable
    assert time.perf_counter() - started < 0.9
    # with return_exceptions the rest of the batch is answered and the failure sits in its slot
    out = c.generate(["ok", "stuck"], return_exceptions=True)
    assert out[0] == echo("ok") and isinstance(out[1], LLMRequestError)
    assert c.stats.failures == 2


def test_unreachable_server_gives_a_clear_error_after_the_retries():
    url = f"http://127.0.0.1:{free_port()}/v1"
    c = OpenAIClient(model="m", base_url=url, max_retries=2, backoff=0.001, timeout=2.0)
    with pytest.raises(LLMRequestError, match="could not connect") as info:
        c.generate(["hello"])
    assert url in str(info.value) and "after 3 attempts" in str(info.value)
    assert c.stats.requests == 3 and c.stats.failures == 1


def test_a_body_that_is_not_an_api_answer_names_the_url(server):
    server.broken.add("html")
    c = client(server)
    with pytest.raises(LLMRequestError, match="did not return an OpenAI-style chat answer.*base URL"):
        c.generate(["html please"])
    assert server.seen["html please"] == 1  # a wrong endpoint stays wrong: not retried


def test_completions_api_and_system_prompt(server):
    c = client(server, api="completions")
    assert c.complete("raw text") == echo("raw text")
    assert server.paths[-1] == "/v1/completions" and server.payloads[-1]["prompt"] == "raw text"
    c = client(server, system_prompt="be brief", stop=["\n"], seed=3)
    c.complete("hi")
    payload = server.payloads[-1]
    assert server.paths[-1] == "/v1/chat/completions"
    assert payload["messages"][0] == {"role": "system", "content": "be brief"}
    assert payload["stop"] == ["\n"] and payload["seed"] == 3


def test_configuration_from_the_environment(server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", server.url + "/")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    monkeypatch.setenv("EXPLORE_LLM_MODEL", "env-model")
    c = OpenAIClient(backoff=0.001)
    assert c.complete("x") == echo("x")
    assert server.payloads[-1]["model"] == "env-model"
    assert server.headers[-1]["Authorization"] == "Bearer sk-env"
    monkeypatch.delenv("EXPLORE_LLM_MODEL")
    with pytest.raises(ConfigError, match="EXPLORE_LLM_MODEL"):
        OpenAIClient()
    monkeypatch.delenv("OPENAI_BASE_URL")
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        OpenAIClient(model="gpt-4o-mini")  # the default base URL is api.openai.com
    with pytest.raises(ConfigError, match="invalid base URL"):
        OpenAIClient(model="m", base_url="localhost:8000")


def test_a_single_prompt_string_is_rejected(server):
    with pytest.raises(TypeError, match="sequence of prompts"):
        client(server).generate("one prompt")  # type: ignore[arg-type]
