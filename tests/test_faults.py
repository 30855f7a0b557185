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
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from test_llm_client import LoopbackServer  # tests/ is on sys.path under pytest

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


class FaultServer(LoopbackServer):
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

        super().__init__(Handler)

    def __exit__(self, *exc: object) -> None:
        self.closed.set()  # ends every hold first, so shutdown() does not wait on a trickle
        super().__exit__(*exc)


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


# --- the CLI: every flag, bad values ------------------------------------------------------------------
#
# For each command, every field of its config dataclass gets:
# - a wrong type derived from its annotation ("abc" for numbers, an unknown choice for a Literal), and
# - the semantically bad values listed below (negative, zero, out of range, non-finite, unknown names).
# A field with no bad value must be listed in the command's `anything_goes` with the reason, so a new flag
# cannot join the CLI without being thought about here. Runs in-process through explore.cli.main.

FILE_IN_PATH = "<tmp>/a_file/run"  # a run directory below a regular file: cannot be created
MISSING_DIR = "<tmp>/no_such_run"

# the judge bonus's flags, of `explore train` and `explore text`
JUDGE_BAD: dict[str, list[str]] = {
    "judge_timeout": ["0", "-1", "nan"],
    "judge_max_wait_fraction": ["-0.1", "1.5", "nan"],
    "judge_device": ["tpu"],
    "judge_beta": ["-1", "nan", "inf"],
    "judge_threshold_quantile": ["-0.1", "1.5", "nan"],
    "judge_pairs_per_rollout": ["0"],
    "judge_min_pairs": ["0"],
    "judge_refit_every": ["0"],
    "judge_hidden": ["-1"],
    "judge_fit_steps": ["0"],
    "judge_learning_rate": ["0", "nan"],
    "judge_weight_decay": ["-1", "inf"],
    "judge_max_captions": ["0"],
    "judge_goals_per_state": ["0"],
    "judge_goal_vocabulary": ["0"],
    "judge_goal_similarity": ["1.5", "nan"],
    "judge_cache_size": ["0"],
    "judge_max_queued": ["0"],
    "judge_deadline_s": ["-1", "inf"],
    "judge_batch_size": ["0"],
    "judge_reward_model": [MISSING_DIR],
    "judge_save_dir": [FILE_IN_PATH],
    "judge_seed": ["-1"],
}
TRAIN_BAD: dict[str, list[str]] = {
    "env_id": ["NoSuchGame-v5"],
    "bonus": ["rnd*", "no_such_bonus"],
    "seed": ["-1", "2147483647"],
    "total_timesteps": ["0", "-5"],
    "device": ["tpu"],
    "run_dir": [FILE_IN_PATH],
    "resume": [MISSING_DIR],
    "checkpoint_interval": ["0", "-1"],
    "num_envs": ["0", "-1"],
    "env_groups": ["0", "3"],
    "sticky_action_prob": ["-0.1", "1.5", "nan"],
    "max_episode_steps": ["0", "-1"],
    "num_steps": ["0"],
    "learning_rate": ["0", "-1", "nan", "inf"],
    "gamma": ["-0.1", "1.5", "nan"],
    "int_gamma": ["1.5", "nan"],
    "gae_lambda": ["1.5", "nan"],
    "num_minibatches": ["0", "7"],
    "update_epochs": ["0"],
    "clip_coef": ["0", "nan"],
    "ent_coef": ["-1", "nan", "inf"],
    "vf_coef": ["-1", "nan"],
    "max_grad_norm": ["0", "nan"],
    "ext_coef": ["-1", "nan"],
    "int_coef": ["-1", "inf"],
    "reward_clip": ["0", "nan"],
    "update_proportion": ["0", "1.5", "nan"],
    "rnd_warmup_iterations": ["-1"],
    "rnd_input": ["glyphs"],  # the quick preset's Atari frames have no entries
    "noveld_alpha": ["-0.5", "nan"],
    "e3b_lambda": ["0", "-1", "nan"],
    "e3b_dim": ["0", "-3"],
    "torch_threads": ["-1"],
    **JUDGE_BAD,  # checked whatever --bonus says (as every bonus's flags are)
}
JUDGE_ANYTHING_GOES = {
    "judge_mode": "a Literal",
    "judge_kind": "a Literal",
    "judge_url": "read by --judge-kind http only; an unreachable server falls back (counted), never fails a run",
    "judge_model": "read by --judge-kind http only: any model name the server knows",
    "judge_model_path": "read by --judge-kind local only (required there: checked)",
    "judge_embedding_model_path": "read when --bonus judge builds its embedder (None: the packaged model)",
    "judge_freeze": "a boolean",
}
TRAIN_ANYTHING_GOES = {
    **JUDGE_ANYTHING_GOES,
    "preset": "a Literal: only the wrong-type case applies",
    "count_mode": "a Literal",
    "reward_norm": "a Literal",
    "network": "a Literal",
    "state_key": "any observation key of the env; checked against the env once it exists",
    "noveld_state_key": "read by --bonus noveld only (then checked against the suite's observations)",
    "progress": "a boolean",
    "full_action_space": "a boolean",
    "anneal_lr": "a boolean",
    "int_episodic": "a boolean",
    "norm_adv": "a boolean",
    "use_lstm": "a boolean",
    "amp": "a boolean",
    "compile": "a boolean",
    "cpu_bf16": "a boolean",
}
# values that make a run that slips through validation tiny (the test then fails on the run directory)
TRAIN_BASE = [
    "--preset", "quick", "--num-envs", "2", "--num-steps", "8", "--env-groups", "1",
    "--total-timesteps", "16", "--rnd-warmup-iterations", "0", "--no-progress", "--run-dir", "<tmp>/run",
]  # fmt: skip

TEXT_BAD: dict[str, list[str]] = {
    "env_id": ["NoSuchGame-v0"],
    "env_kwargs": ["numLocations"],
    "max_episode_steps": ["0"],
    "num_workers": ["-1"],
    "seed": ["-1"],
    "total_timesteps": ["0"],
    "device": ["tpu"],
    "run_dir": [FILE_IN_PATH],
    "resume": [MISSING_DIR],
    "checkpoint_interval": ["0"],
    "torch_threads": ["-1"],
    "credit": ["no_such_credit"],
    "forking_fraction": ["0", "1.5", "nan"],
    "group_size": ["-1"],
    "model_path": [MISSING_DIR],
    "lora_rank": ["-1"],
    "tiny_layers": ["0"],
    "tiny_embd": ["0"],
    "tiny_heads": ["0", "3"],
    "tiny_vocab": ["10"],
    "tiny_corpus_episodes": ["-1"],
    "max_prompt_tokens": ["0"],
    "history_turns": ["-1"],
    "max_new_tokens": ["1"],
    "temperature": ["0", "nan"],
    "stop_check_every": ["-1"],
    "bc_episodes": ["-1"],
    "bc_epochs": ["0"],
    "bc_lr": ["0", "nan"],
    "bc_eval_episodes": ["-1"],
    "num_envs": ["0"],
    "num_turns": ["0"],
    "learning_rate": ["0", "nan"],
    "weight_decay": ["-1", "nan"],
    "gamma": ["1.5", "nan"],
    "gae_lambda": ["-0.1"],
    "num_minibatches": ["0", "1000"],
    "update_epochs": ["0"],
    "clip_coef": ["0"],
    "ent_coef": ["-1", "inf"],
    "vf_coef": ["-1"],
    "max_grad_norm": ["0"],
    "reward_scale": ["0", "nan"],
    "bonus": ["rnd", "count_e*", "no_such_bonus"],  # rnd cannot read text
    "int_coef": ["-1", "nan"],
    **JUDGE_BAD,
}
TEXT_ANYTHING_GOES = {
    **JUDGE_ANYTHING_GOES,
    "count_mode": "a Literal",
    "state_key": "read by the count bonuses only (then text must be counted whole: obs)",
    "dtype": "a Literal",
    "fallback_action": "any text command",
    "progress": "a boolean",
    "forking_mask": "a boolean",
    "show_commands": "a boolean",
    "constrained": "a boolean",
    "anneal_lr": "a boolean",
    "norm_adv": "a boolean",
}
TEXT_BASE = [
    "--num-envs", "2", "--num-turns", "4", "--num-minibatches", "1", "--total-timesteps", "8",
    "--no-progress", "--run-dir", "<tmp>/run",
]  # fmt: skip

BANDITS_BAD: dict[str, list[str]] = {
    "suite": ["no_such_suite"],
    "env_ids": ["Bandit-NoSuch-v0"],
    "agents": ["no_such_agent"],
    "num_instances": ["0"],
    "horizon": ["1", "-1"],
    "seed": ["-1"],
    "device": ["tpu"],
    "out_dir": [FILE_IN_PATH],
    "num_resamples": ["0"],
    "confidence": ["0", "1.5", "nan"],
    "threads": ["0"],
}
BANDITS_ANYTHING_GOES = {"plots": "a boolean"}
BANDITS_BASE = ["--num-instances", "2", "--num-resamples", "2", "--no-plots", "--out-dir", "<tmp>/run"]

GO_EXPLORE_BAD: dict[str, list[str]] = {
    "env_id": ["NoSuchGame-v5"],
    "frames": ["0"],
    "num_workers": ["-1"],
    "tasks_per_message": ["0"],
    "explore_steps": ["0"],
    "repeat_prob": ["1.0", "-0.1", "nan"],
    "sticky_actions": ["1.0", "nan"],
    "frameskip": ["0"],
    "weight_power": ["-1", "nan"],
    "cell_width": ["0"],
    "cell_height": ["0"],
    "cell_levels": ["1", "300"],
    "dynamic_target": ["0"],
    "dynamic_interval": ["0"],
    "seed": ["-1"],
    "run_dir": [FILE_IN_PATH],
    "resume": [MISSING_DIR],
    "checkpoint_interval": ["-1", "nan"],
    "log_interval": ["-1", "nan"],
}
GO_EXPLORE_ANYTHING_GOES = {
    "weight_count": "a Literal",
    "end_on_life_loss": "a boolean",
    "dynamic_cells": "a boolean",
    "progress": "a boolean",
}
GO_EXPLORE_BASE = ["--frames", "200", "--no-progress", "--run-dir", "<tmp>/run"]

BENCH_BAD: dict[str, list[str]] = {
    "methods": ["x=--int-coef 1", "no_such_bonus"],
    "seeds": ["-1"],
    "preset": ["fast"],
    "total_timesteps": ["0"],
    "budget_episodes": ["0"],
    "torch_threads": ["-1"],
    "jobs": ["-1"],
    "root": [FILE_IN_PATH],
    "out": [FILE_IN_PATH],
    "solve_threshold": ["0", "1.5", "nan"],
    "solve_min_episodes": ["0"],
    "final_fraction": ["0", "1.5", "nan"],
    "reps": ["0"],
    "curve_bins": ["0"],
}
BENCH_ANYTHING_GOES = {
    "trainer": "a Literal (the text trainer's refusals: tests/test_bench.py)",
    "tasks": "env ids: an unknown one raises UnknownEnvError naming the id, not the flag (tests/test_bench.py)",
    "common": "flags of every run: `explore train` checks them in each run, --trainer text before any run",
    "analyze_only": "a boolean",
}
# a tiny DeepSea grid: a bad value that slips through trains one short run
BENCH_BASE = [
    "--tasks", "DeepSea-N5-v0", "--preset", "deepsea", "--methods", "ppo=none", "--seeds", "1",
    "--total-timesteps", "64", "--common=--num-envs 4 --num-steps 16", "--jobs", "1",
    "--root", "<tmp>/runs", "--out", "<tmp>/out/grid", "--reps", "10",
]  # fmt: skip


def _config_class(command: str) -> type:
    if command == "train":
        from agents.ppo import Config

        return Config
    if command == "text":
        from agents.llm.ppo import Config as TextConfig

        return TextConfig
    if command == "bench":
        from explore.bench import Args as BenchArgs

        return BenchArgs
    if command == "bandits":
        from explore.bandit_report import BanditsConfig

        return BanditsConfig
    from explore.archive.go_explore import GoExploreConfig

    return GoExploreConfig


COMMANDS = {
    "train": (TRAIN_BAD, TRAIN_ANYTHING_GOES, TRAIN_BASE),
    "text": (TEXT_BAD, TEXT_ANYTHING_GOES, TEXT_BASE),
    "bandits": (BANDITS_BAD, BANDITS_ANYTHING_GOES, BANDITS_BASE),
    "go-explore": (GO_EXPLORE_BAD, GO_EXPLORE_ANYTHING_GOES, GO_EXPLORE_BASE),
    "bench": (BENCH_BAD, BENCH_ANYTHING_GOES, BENCH_BASE),
}
# flags whose bad value only shows with another flag: (extra flags)
CONTEXT = {("text", "group_size"): ["--credit", "grpo"], ("text", "num_minibatches"): []}


def _wrong_type(annotation: Any) -> str | None:
    import typing

    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    base = (
        args[0]
        if typing.get_origin(annotation) in (typing.Union, __import__("types").UnionType)
        else annotation
    )
    if typing.get_origin(annotation) is typing.Literal:
        return "no_such_choice"
    if base is bool or base is str or typing.get_origin(base) is list:
        return None  # a boolean flag takes no value; any string is a string
    return "abc" if base in (int, float) else None


def _cases() -> list[Any]:
    import dataclasses
    import typing

    cases = []
    for command, (bad, _, _) in COMMANDS.items():
        config_cls = _config_class(command)
        hints = typing.get_type_hints(config_cls)
        for field in dataclasses.fields(config_cls):
            values = list(bad.get(field.name, []))
            wrong = _wrong_type(hints[field.name])
            if wrong is not None and wrong not in values:
                values.append(wrong)
            if hints[field.name] is int:
                values.append("1.5")
            for value in values:
                cases.append(pytest.param(command, field.name, value, id=f"{command}--{field.name}={value}"))
    return cases


def test_every_flag_of_every_command_is_fuzzed_or_explained():
    import dataclasses

    for command, (bad, anything_goes, _) in COMMANDS.items():
        names = {f.name for f in dataclasses.fields(_config_class(command))}
        assert set(bad) | set(anything_goes) == names, (
            f"explore {command}: flags without bad values or a reason: {sorted(names - set(bad) - set(anything_goes))}; "
            f"listed but gone: {sorted((set(bad) | set(anything_goes)) - names)}"
        )
        assert not set(bad) & set(anything_goes)


def _run_cli(argv: list[str], capsys: Any) -> tuple[int, str]:
    from explore.cli import main

    try:
        code = main(argv)
    except SystemExit as exc:  # tyro's parse errors
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.parametrize(("command", "name", "value"), _cases())
def test_a_bad_flag_value_names_the_flag_and_writes_nothing(
    command, name, value, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)  # a default run directory (runs/...) would land here
    (tmp_path / "a_file").write_text("not a directory")
    flag = "--" + name.replace("_", "-")
    base = COMMANDS[command][2]
    argv = [command, *base, *CONTEXT.get((command, name), []), flag, value]
    argv = [a.replace("<tmp>", str(tmp_path)) for a in argv]
    code, output = _run_cli(argv, capsys)
    assert code != 0, f"{argv} was accepted:\n{output[-2000:]}"
    assert "Traceback" not in output, output[-3000:]
    # the flag, or its name in words ("unknown env id 'X'")
    assert flag in output or name.replace("_", " ") in output, (
        f"the error does not name {flag}:\n{output[-2000:]}"
    )
    left = sorted(p.name for p in tmp_path.iterdir() if p.name != "a_file")
    assert left == [], f"{argv} wrote {left}"


# --- the tests themselves: no subprocess may time out because the machine is busy -------------------

MIN_SUBPROCESS_TIMEOUT_S = 600


def test_no_test_gives_a_subprocess_a_tight_timeout():
    """A subprocess timeout in a test guards against a hang; on a loaded machine a tight one fails a test
    that is fine (tests/test_cli.py's 240 s smoke run did). Calls of subprocess.* with a literal timeout
    must allow at least MIN_SUBPROCESS_TIMEOUT_S."""
    import ast
    from pathlib import Path

    tight = []
    for path in sorted(Path(__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            owner = node.func.value
            if not (isinstance(owner, ast.Name) and owner.id == "subprocess"):
                continue
            for keyword in node.keywords:
                value = keyword.value
                literal = isinstance(value, ast.Constant) and isinstance(value.value, int | float)
                if keyword.arg == "timeout" and literal and value.value < MIN_SUBPROCESS_TIMEOUT_S:
                    tight.append(f"{path.name}:{node.lineno}: timeout={value.value}")
    assert tight == [], tight


# --- unwritable run directories, for real --------------------------------------------------------------


@pytest.mark.slow  # a fresh interpreter in a namespace: tens of seconds on a loaded machine
def test_a_run_directory_on_a_read_only_file_system_is_refused(tmp_path):
    """A real read-only tmpfs, mounted in a private user and mount namespace (`unshare -rm`), so the test
    needs no privileges and leaves no mount behind; skipped where user namespaces are not allowed."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    mount_point = tmp_path / "read_only"
    mount_point.mkdir()
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1)")
    probe = subprocess.run(
        ["unshare", "-rm", "mount", "-t", "tmpfs", "-o", "ro", "tmpfs", str(mount_point)], capture_output=True
    )
    if probe.returncode != 0:
        pytest.skip(f"user namespaces are not available here: {probe.stderr.decode().strip()}")
    command = (
        f"mount -t tmpfs -o ro tmpfs {mount_point} && exec {sys.executable} -m explore train --preset quick "
        f"--seed 3 --run-dir {mount_point}/run"
    )
    result = subprocess.run(
        ["unshare", "-rm", "sh", "-c", command],
        cwd=Path(__file__).resolve().parents[1],  # this checkout's explore
        capture_output=True,
        text=True,
        timeout=1800,  # a hang guard only
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "--run-dir" in result.stderr and "file system is read-only" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_a_run_directory_without_write_permission_is_refused(tmp_path, monkeypatch, capsys):
    import os

    if os.geteuid() == 0:
        pytest.skip("root writes through permissions (the read-only file system test covers root)")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    monkeypatch.chdir(tmp_path)
    code, output = _run_cli(["train", "--preset", "quick", "--run-dir", str(locked / "run")], capsys)
    assert code == 2 and "--run-dir" in output and "permission denied" in output
    assert list(locked.iterdir()) == []
