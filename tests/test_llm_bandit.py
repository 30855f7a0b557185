"""The LLM bandit agent end to end: a tiny local transformers model (built from a config, saved to a
temp dir, loaded back by path), the OpenAI-compatible client against a loopback server, fallbacks,
and algorithm-distillation data and fine-tuning. No downloads.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from test_llm_client import FakeOpenAI, free_port  # tests/ is on sys.path under pytest

from agents.llm_bandit import (
    LLMBanditAgent,
    distillation_records,
    read_jsonl,
    ucb_arms,
    write_distillation_data,
)
from envs.bandit_text import FRAMINGS, completion_for, render_prompt
from explore.errors import ConfigError, MissingDependencyError
from explore.llm import LLMRequestError
from explore.llm.local import LocalCausalLM, LocalModelError, build_tiny_causal_lm, finetune_sft, sft_loss

needs_transformers = pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None, reason="the 'llm' extra (transformers) is not installed"
)

B, K, T = 4, 5, 8


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread, above all on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A 2-layer, 64-wide GPT-2 with a byte-level BPE trained on rendered prompts, saved to a temp dir."""
    corpus = [
        render_prompt(f, K, [(a % K, float(a % 2)) for a in range(n)], mode) + completion_for(f, K, n % K)
        for f in FRAMINGS
        for mode in ("raw", "summary", "ucb")
        for n in (0, 3, 7)
    ]
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny_lm"), corpus, vocab_size=400)


@pytest.fixture(scope="module")
def tiny_lm(tiny_path: Any) -> LocalCausalLM:
    return LocalCausalLM(tiny_path)


class Bernoulli:
    """A stand-in for envs.bandits.BatchedBandit (developer A): B instances, K Bernoulli arms."""

    def __init__(self, num_instances: int, num_arms: int, seed: int = 0):
        self.num_instances, self.num_arms, self.context_dim = num_instances, num_arms, 0
        self.generator = torch.Generator().manual_seed(seed)
        self.means = torch.full((num_instances, num_arms), 0.4)
        self.means[
            torch.arange(num_instances), torch.randint(num_arms, (num_instances,), generator=self.generator)
        ] = 0.6

    def reset(self) -> None:
        return None

    def expected_rewards(self) -> torch.Tensor:
        return self.means

    def step(self, arms: torch.Tensor) -> tuple[torch.Tensor, None]:
        p = self.means.gather(1, arms.view(-1, 1)).squeeze(1)
        return (torch.rand(self.num_instances, generator=self.generator) < p).float(), None


def make_bandit(num_instances: int = B, num_arms: int = K) -> Any:
    try:
        from envs.bandits import BANDIT_SPECS, BatchedBandit
    except ImportError:
        return Bernoulli(num_instances, num_arms)
    spec = next(s for s in BANDIT_SPECS.values() if s.family == "bernoulli" and s.num_arms == num_arms)
    return BatchedBandit(spec, num_instances, seed=0)


def play(agent: LLMBanditAgent, bandit: Any, rounds: int = T) -> torch.Tensor:
    """The batched agent protocol by hand: (T, B) arms."""
    context = bandit.reset()
    agent.reset(bandit.num_instances, bandit.num_arms, "cpu")
    chosen = []
    for _ in range(rounds):
        arms = agent.act(context)
        assert arms.dtype == torch.long and arms.shape == (bandit.num_instances,)
        rewards, context = bandit.step(arms)
        agent.update(arms, rewards, context)
        chosen.append(arms)
    return torch.stack(chosen)


class Scripted:
    """A backend stub: fixed replies per call; an Exception in the list is a failed request."""

    def __init__(self, reply: Any):
        self.reply = reply
        self.calls: list[list[str]] = []

    def generate(self, prompts: list[str], **kwargs: Any) -> list[Any]:
        self.calls.append(list(prompts))
        return [self.reply(i, p) for i, p in enumerate(prompts)]


# --- the local backend ---------------------------------------------------------------------------------


@needs_transformers
def test_local_model_loads_from_its_path_and_generates_in_batches(tiny_lm):
    prompts = [
        "Visit 1: video A",
        "Which video do you recommend next? Answer with the name of one video only.\nAnswer:",
        "A",
    ]
    batch = tiny_lm.generate(prompts, max_new_tokens=4)
    assert len(batch) == 3 and all(isinstance(t, str) for t in batch)
    # left padding: a prompt's continuation does not depend on the other prompts in its batch
    assert batch == [tiny_lm.generate([p], max_new_tokens=4)[0] for p in prompts]
    sampled = tiny_lm.generate(prompts, max_new_tokens=4, temperature=1.0, seed=7)
    assert sampled == tiny_lm.generate(prompts, max_new_tokens=4, temperature=1.0, seed=7)


@needs_transformers
def test_choice_logprobs_score_answers_by_likelihood(tiny_lm):
    prompts = ["Which video? Answer:", "Which button do you press next? Answer:"]
    choices = [" A", " B", " blue"]
    scores = tiny_lm.choice_logprobs(prompts, choices)
    assert scores.shape == (2, 3) and (scores < 0).all()
    # the same number from one plain forward pass
    tok, model = tiny_lm.tokenizer, tiny_lm.model
    p, a = tok(prompts[1])["input_ids"], tok(" blue", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = model(torch.tensor([p + a])).logits.log_softmax(-1)[0]
    expected = sum(logp[len(p) - 1 + j, t].item() for j, t in enumerate(a))
    assert scores[1, 2].item() == pytest.approx(expected, abs=1e-4)
    per_prompt = tiny_lm.choice_logprobs(prompts, [[" A", " B"], [" blue", " red"]], reduction="mean")
    assert per_prompt.shape == (2, 2)
    assert torch.isfinite(tiny_lm.choice_logprobs([""], [" A"])).all()  # an empty prompt starts at bos


@needs_transformers
def test_missing_model_files_are_named(tmp_path):
    with pytest.raises(LocalModelError, match="does not exist"):
        LocalCausalLM(tmp_path / "nowhere")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(LocalModelError) as info:
        LocalCausalLM(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message and "model weights" in message and "tokenizer files" in message
    assert "config.json (the model configuration)" not in message  # that one is there


def test_missing_transformers_names_the_llm_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers now raises ImportError
    with pytest.raises(MissingDependencyError, match=r"explore-rl\[llm\]"):
        LocalCausalLM(tmp_path)


# --- the agent ---------------------------------------------------------------------------------------------


@needs_transformers
def test_agent_plays_a_batched_bandit_with_the_tiny_local_model(tiny_lm, caplog):
    agent = LLMBanditAgent(tiny_lm, "video", "summary", fallback="ucb", max_new_tokens=4)
    with caplog.at_level(logging.WARNING, logger="agents.llm_bandit"):
        arms = play(agent, make_bandit())
    assert arms.shape == (T, B) and arms.min() >= 0 and arms.max() < K
    assert agent.decisions == T * B
    # an untrained model writes junk: its replies fall back, and are counted and logged
    assert agent.fallback_count > 0 and agent.malformed_count == agent.fallback_count
    assert agent.fallback_rate == agent.fallback_count / (T * B) and agent.error_count == 0
    assert any("malformed reply" in r.getMessage() for r in caplog.records)
    assert len(agent.histories[0]) == T and agent.counts.sum().item() == T * B


@needs_transformers
@pytest.mark.parametrize("framing", ["video", "clothes"])  # letter names and word names
def test_likelihood_selection_never_falls_back(tiny_lm, framing):
    agent = LLMBanditAgent(tiny_lm, framing, "ucb", selection="likelihood")
    arms = play(agent, make_bandit(), rounds=2)
    assert arms.min() >= 0 and arms.max() < K
    assert agent.fallback_count == 0 and agent.last_replies[0] in FRAMINGS[framing].arm_names(K)


def test_ucb_fallback_tries_every_arm_first_and_matches_ucb():
    agent = LLMBanditAgent(Scripted(lambda i, p: "no idea"), "buttons", "raw", fallback="ucb", seed=3)
    arms = play(agent, make_bandit(), rounds=K)
    for b in range(B):  # UCB tries each untried arm before any arm twice
        assert sorted(arms[:, b].tolist()) == list(range(K))
    assert agent.fallback_count == K * B and agent.malformed_count == K * B
    # the next choice is UCB's on the agent's statistics (same generator state for the tie-break)
    state = agent.generator.get_state()
    expected = ucb_arms(agent.counts, agent.sums, 0.5, torch.Generator().set_state(state))
    assert torch.equal(agent.act(), expected)


def test_uniform_fallback_and_failed_requests_are_counted_apart():
    def reply(i: int, prompt: str) -> Any:
        return LLMRequestError("boom") if i == 0 else ("blue" if i == 1 else "???")

    agent = LLMBanditAgent(Scripted(reply), "buttons", "summary", fallback="uniform")
    arms = play(agent, make_bandit(), rounds=6)
    assert (arms[:, 1] == 0).all()  # the parsed answer "blue" is followed
    assert agent.error_count == 6 and agent.malformed_count == 6 * (B - 2)
    assert agent.fallback_count == 6 * (B - 1)


def test_agent_rejects_what_it_cannot_play():
    backend = Scripted(lambda i, p: "A")
    with pytest.raises(ConfigError, match="multi-armed bandits only"):
        LLMBanditAgent(backend).reset(2, K, "cpu", context_dim=4)
    with pytest.raises(ConfigError, match="unknown fallback"):
        LLMBanditAgent(backend, fallback="greedy")
    with pytest.raises(ConfigError, match="unknown prompt mode"):
        LLMBanditAgent(backend, mode="story")
    with pytest.raises(ConfigError, match="choice_logprobs"):
        LLMBanditAgent(backend, selection="likelihood")
    with pytest.raises(ConfigError, match="at most 30 arms"):
        LLMBanditAgent(backend, "clothes").reset(2, 40)
    with pytest.raises(RuntimeError, match="reset"):
        LLMBanditAgent(backend).act()


def test_openai_compatible_backend_end_to_end():
    from explore.llm.openai_client import OpenAIClient

    def reply(prompt: str) -> str:  # a "model" that answers well only before the first visit
        return "I recommend **video C**." if "no visits yet" in prompt else "Hmm, hard to say."

    with FakeOpenAI(reply) as server:
        client = OpenAIClient(model="m", base_url=server.url, backoff=0.001, max_retries=1)
        agent = LLMBanditAgent(client, "video", "raw", fallback="ucb")
        arms = play(agent, make_bandit(), rounds=4)
        assert (arms[0] == 2).all()  # round 0: every instance follows the model
        assert agent.fallback_count == 3 * B and agent.malformed_count == 3 * B and agent.error_count == 0
        assert server.payloads[0]["messages"][-1]["content"].endswith("Answer:")
        # greedy requests are cached: the B identical round-0 prompts cost one request
        assert client.stats.cache_hits >= B - 1 and server.requests <= 1 + 3 * B
        assert client.stats.total_tokens > 0


def test_unreachable_endpoint_falls_back_every_round(caplog):
    from explore.llm.openai_client import OpenAIClient

    client = OpenAIClient(
        model="m", base_url=f"http://127.0.0.1:{free_port()}/v1", max_retries=1, backoff=0.001
    )
    agent = LLMBanditAgent(client, "ads", "summary", fallback="uniform")
    with caplog.at_level(logging.WARNING, logger="agents.llm_bandit"):
        arms = play(agent, make_bandit(), rounds=2)
    assert arms.min() >= 0 and arms.max() < K
    assert agent.error_count == 2 * B and agent.fallback_rate == 1.0
    assert any("could not connect" in r.getMessage() for r in caplog.records)


# --- algorithm distillation ---------------------------------------------------------------------------------


def test_distillation_writer_produces_the_expected_jsonl(tmp_path):
    arms = torch.tensor([[0, 1], [2, 1], [0, 3]])  # (T = 3, B = 2)
    rewards = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    n = write_distillation_data(
        tmp_path / "ad" / "data.jsonl", arms, rewards, "video", 4, "summary", horizon=3
    )
    lines = (tmp_path / "ad" / "data.jsonl").read_text().splitlines()
    assert n == 6 and len(lines) == 6
    records = [json.loads(line) for line in lines]
    assert records == read_jsonl(tmp_path / "ad" / "data.jsonl")
    assert [r["completion"] for r in records] == [" A", " C", " A", " B", " B", " D"]  # instance 0, then 1
    assert records[2]["prompt"] == render_prompt("video", 4, [(0, 1.0), (2, 0.0)], "summary", horizon=3)
    assert records[3]["prompt"] == render_prompt("video", 4, [], "summary", horizon=3)
    assert set(records[0]) == {"prompt", "completion"}
    assert len(distillation_records(arms, rewards, "video", 4, "raw", every=2)) == 4  # rounds 0 and 2


@needs_transformers
def test_short_distillation_finetune_lowers_the_sft_loss(tiny_path, tmp_path):
    lm = LocalCausalLM(tiny_path)  # a fresh copy: the module's shared model stays untrained
    generator = torch.Generator().manual_seed(0)
    counts = torch.zeros(2, K, dtype=torch.float64)
    sums = torch.zeros(2, K, dtype=torch.float64)
    arms, rewards = [], []
    for _ in range(6):  # UCB on two instances, arm 1 best
        a = ucb_arms(counts, sums, 0.5, generator)
        r = (a == 1).double()
        counts[torch.arange(2), a] += 1
        sums[torch.arange(2), a] += r
        arms.append(a)
        rewards.append(r)
    records = distillation_records(torch.stack(arms), torch.stack(rewards), "video", K, "summary")
    before = sft_loss(lm, records)
    losses = finetune_sft(lm, records, epochs=5, lr=3e-3, batch_size=6)
    after = sft_loss(lm, records)
    assert len(losses) == 5 * 2 and after < before - 0.5
    saved = lm.save(tmp_path / "distilled")
    assert sft_loss(LocalCausalLM(saved), records) == pytest.approx(after, abs=1e-4)  # reloads by path


@needs_transformers
def test_distillation_script_runs_end_to_end(tmp_path, capsys, monkeypatch):
    """runs/bandit_distill.py at toy size: data, fine-tune, save, evaluate against UCB and uniform."""
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "runs" / "bandit_distill.py"
    spec = importlib.util.spec_from_file_location("bandit_distill", script)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bandit_distill", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    out = tmp_path / "ad"
    results = module.main(
        [
            "--out-dir",
            str(out),
            "--train-instances",
            "2",
            "--train-horizon",
            "6",
            "--eval-instances",
            "2",
            "--eval-horizon",
            "4",
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--n-embd",
            "32",
            "--vocab-size",
            "300",
        ]
    )
    assert (out / "data.jsonl").exists() and (out / "model" / "config.json").exists()
    assert len(read_jsonl(out / "data.jsonl")) == results["records"] == 12
    assert set(results["agents"]) == {"distilled LLM", "UCB", "uniform"}
    assert results["agents"]["distilled LLM"]["decisions"] == 2 * 4
    assert json.loads((out / "results.json").read_text())["records"] == 12
    assert "distilled LLM - UCB" in capsys.readouterr().out
