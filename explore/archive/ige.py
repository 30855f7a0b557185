"""Intelligent Go-Explore (Lu et al. 2024) on text games: a judge chooses, Go-Explore remembers.

The archive holds text states: cell key = `text_cell(obs)`, payload = the command trajectory from the
seeded reset, score = the game score, state = the observation text. Each iteration:

1. select an archived state: `select="judge"` shows the judge up to `candidates` archived states
   (drawn by the archive's count-based weights, without replacement) and it picks one;
   `"weights"` draws one by the weights alone; `"uniform"` draws one uniformly. Cells whose
   admissible commands have all been tried are left out while others remain.
2. return to it by replaying its commands from `env.reset(seed=seed)` (a selected cell whose
   trajectory extends the env's current one only replays the missing suffix);
3. explore `explore_steps` commands from it: each time the judge (`action="judge"`) or the rng
   (`"uniform"`) picks one of the current state's admissible commands not yet tried from that cell;
4. archive what was found: a state whose cell is new is archived if the judge scores it as
   interesting (`is_interesting`: score >= the judge's threshold, relative to the archived states;
   the new states of one iteration are judged in one batch), and always when its game score beats
   the best archived score (`filter="none"` archives every new cell, Go-Explore's rule). A known
   cell reached by a better trajectory (higher score, or same score and shorter) is updated.

The run stops when a step reaches `info["success"]`, when the step budget is spent, or when every
archived state has had all its commands tried (`exhausted`: a judge that archives too little can
leave nothing to explore). Env steps are
counted separately for exploration and replay; the budget counts both (`count_replay=True`) or
exploration only. The judge never stops the run: its failures are answered by its fallback.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from explore.archive.archive import Archive
from explore.archive.cells import text_cell
from explore.archive.replay import replay
from explore.errors import ConfigError

log = logging.getLogger(__name__)

SELECT_MODES = ("judge", "weights", "uniform")
ACTION_MODES = ("judge", "uniform")
FILTER_MODES = ("judge", "none")


@dataclass
class IGEConfig:
    """Settings of one IGE run."""

    budget: int = 2000
    """env steps the run may take (exploration, plus replay when count_replay)"""
    count_replay: bool = True
    """whether the steps spent replaying trajectories count against the budget"""
    select: str = "judge"
    """how the state to return to is chosen: judge, weights (archive counts) or uniform"""
    candidates: int = 8
    """archived states shown to the judge when select=judge"""
    action: str = "judge"
    """how a command is chosen among the untried ones: judge or uniform"""
    filter: str = "judge"
    """which new cells are archived: judge (the judge finds them interesting) or none (all)"""
    explore_steps: int = 4
    """commands taken after each return before selecting again"""
    weight_power: float = 0.5
    """archive selection weight 1 / (visits + 1) ** weight_power"""
    seed: int = 0
    """the game seed (every reset uses it, so replay returns to the same states) and the rng seed"""
    verify_replay: bool = True
    """check that a replay ends at the archived observation (mismatches are counted and logged)"""
    log_every: int = 25
    """iterations between TensorBoard writes"""

    def validate(self) -> None:
        for name, value, valid in (
            ("select", self.select, SELECT_MODES),
            ("action", self.action, ACTION_MODES),
            ("filter", self.filter, FILTER_MODES),
        ):
            if value not in valid:
                raise ConfigError(f"{name}={value!r}: expected one of {', '.join(valid)}")
        if self.budget < 1 or self.candidates < 1 or self.explore_steps < 1:
            raise ConfigError("budget, candidates and explore_steps must be >= 1")


@dataclass
class IGEResult:
    """What one run found and what it cost."""

    seed: int
    success: bool
    steps_to_solve: int | None  # env steps (exploration + replay) when solved
    explore_steps_to_solve: int | None
    total_steps: int
    explore_steps: int
    replay_steps: int
    iterations: int
    archive_size: int
    best_score: float
    max_score: float
    judged: int  # new cells shown to the judge
    rejected: int  # of them, found uninteresting (not archived)
    replay_mismatches: int
    exhausted: bool  # stopped early: every command of every archived state had been tried
    wall_s: float
    solution: list[str] = field(default_factory=list)
    judge_metrics: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class IGE:
    """Intelligent Go-Explore over one text env (see the module docstring).

    Args:
        env: a text env (`envs.text.make_text_env(...)`): string observations and commands, info with
            "admissible_commands", "score", "success" and optionally "goal"; deterministic given the
            reset seed. Give it a time limit longer than the trajectories (or none).
        judge: an `explore.judge.Judge`.
        config: `IGEConfig`.
        writer: a TensorBoard SummaryWriter (optional).
        progress: called with the running stats every iteration (e.g. a progress bar's update).
    """

    def __init__(
        self,
        env: Any,
        judge: Any,
        config: IGEConfig | None = None,
        writer: Any = None,
        progress: Callable[[dict[str, Any]], None] | None = None,
    ):
        self.env = env
        self.judge = judge
        self.config = config or IGEConfig()
        self.config.validate()
        self.writer = writer
        self.progress = progress
        self.archive = Archive(weight_power=self.config.weight_power)
        self.rng = np.random.default_rng(self.config.seed)
        self.tried: dict[str, set[str]] = {}  # cell -> commands tried from it
        self.admissible: dict[str, list[str]] = {}  # archived cell -> admissible commands there
        self.explore_steps = 0
        self.replay_steps = 0
        self.iterations = 0
        self.judged = 0
        self.rejected = 0
        self.replay_mismatches = 0
        self.exhausted = False  # the run stopped because every archived cell was fully tried
        self.goal = ""
        self.max_score = 0.0
        self._trajectory: list[str] | None = None  # the env's current trajectory (None: needs a reset)
        self._obs = ""
        self._info: dict[str, Any] = {}

    # --- bookkeeping -------------------------------------------------------------------------------

    @property
    def steps_used(self) -> int:
        return self.explore_steps + (self.replay_steps if self.config.count_replay else 0)

    @property
    def total_steps(self) -> int:
        return self.explore_steps + self.replay_steps

    def _budget_left(self) -> bool:
        return self.steps_used < self.config.budget

    def _archive(self, key: str, obs: str, score: float, trajectory: list[str], info: dict[str, Any]) -> bool:
        changed = self.archive.add(key, score, list(trajectory), state=obs)
        if changed:
            self.admissible[key] = list(info.get("admissible_commands", []))
        return changed

    def _untried(self, key: str, commands: list[str]) -> list[str]:
        tried = self.tried.get(key, ())
        return [c for c in commands if c not in tried]

    # --- the three steps ----------------------------------------------------------------------------

    def _select(self) -> str | None:
        """The cell to return to; None when every archived cell has had all its commands tried."""
        keys = self.archive.keys()
        open_rows = [i for i, k in enumerate(keys) if self._untried(k, self.admissible.get(k, []))]
        if not open_rows:
            return None
        rows = np.asarray(open_rows)
        mode = self.config.select
        if mode == "uniform":
            return keys[int(self.rng.choice(rows))]
        weights = self.archive.weights()[rows]
        p = weights / weights.sum()
        if mode == "weights":
            return keys[int(self.rng.choice(rows, p=p))]
        n = min(self.config.candidates, len(rows))
        picked = [keys[int(r)] for r in self.rng.choice(rows, size=n, replace=False, p=p)]
        states = [self.archive.cell(k).state for k in picked]
        return picked[self.judge.choose_state(states, context=self.goal)]

    def _return_to(self, key: str) -> bool:
        """Put the env in the archived state `key`; False when the replay ended the episode early."""
        record = self.archive.cell(key)
        target = [str(c) for c in np.asarray(record.trajectory).tolist()]
        current = self._trajectory
        if current is not None and target == current:
            return True
        if current is not None and len(target) > len(current) and target[: len(current)] == current:
            suffix = target[len(current) :]  # continue from where the env is
            for command in suffix:
                obs, _, terminated, truncated, info = self.env.step(command)
                self.replay_steps += 1
                if terminated or truncated:
                    break
        else:
            result = replay(self.env, target, seed=self.config.seed, strict=False)
            self.replay_steps += result.steps
            obs, info, terminated, truncated = result.obs, result.info, result.terminated, result.truncated
        if (terminated or truncated) and not info.get("success"):
            log.warning("replaying the trajectory of a cell ended the episode (%d commands)", len(target))
            self.replay_mismatches += 1
            self._trajectory = None
            return False
        if self.config.verify_replay and text_cell(obs) != key:
            if not self.replay_mismatches:
                log.warning(
                    "replay did not return to the archived observation (is the env deterministic under "
                    "seed %d?); expected %r, got %r", self.config.seed, key[:80], text_cell(obs)[:80]
                )
            self.replay_mismatches += 1
        self._trajectory, self._obs, self._info = target, obs, info
        return True

    def _choose_command(self, key: str, obs: str, commands: list[str]) -> str:
        untried = self._untried(key, commands)
        if self.config.action == "uniform":
            return untried[int(self.rng.integers(len(untried)))]
        tried = sorted(self.tried.get(key, ()))
        return untried[self.judge.choose_action(obs, untried, context=self.goal, tried=tried)]

    # --- the run -------------------------------------------------------------------------------------

    def run(self) -> IGEResult:
        cfg = self.config
        started = time.perf_counter()
        obs, info = self.env.reset(seed=cfg.seed)
        self.goal = str(info.get("goal") or "")
        self.max_score = float(info.get("max_score", 0.0))
        root = text_cell(obs)
        self._archive(root, obs, float(info.get("score", 0.0)), [], info)
        self.judge.observe([obs])
        self._trajectory, self._obs, self._info = [], obs, info
        solution: list[str] | None = None
        solved_at = explore_solved_at = None
        while solution is None and self._budget_left():
            key = self._select()
            if key is None:  # nothing left to try from any archived state: more steps cannot help
                self.exhausted = True
                break
            self.iterations += 1
            self.archive.visit([key])
            if not self._return_to(key):
                self.tried.setdefault(key, set()).update(self.admissible.get(key, []))  # a dead end
                continue
            pending: dict[str, tuple[str, float, list[str], dict[str, Any]]] = {}
            cur_key, obs, info, traj = key, self._obs, self._info, list(self._trajectory or [])
            for _ in range(cfg.explore_steps):
                commands = list(info.get("admissible_commands", []))
                if not self._untried(cur_key, commands) or not self._budget_left():
                    break
                command = self._choose_command(cur_key, obs, commands)
                self.tried.setdefault(cur_key, set()).add(command)
                obs, _, terminated, truncated, info = self.env.step(command)
                self.explore_steps += 1
                traj = [*traj, command]
                self._trajectory, self._obs, self._info = traj, obs, info
                cur_key = text_cell(obs)
                score = float(info.get("score", 0.0))
                if info.get("success"):
                    self._archive(cur_key, obs, score, traj, info)
                    solution, solved_at, explore_solved_at = traj, self.total_steps, self.explore_steps
                    break
                if terminated or truncated:  # lost, or out of time: nothing to explore from here
                    self._trajectory = None
                    break
                if cur_key in self.archive:
                    self._archive(cur_key, obs, score, traj, info)  # kept only if better
                    self.archive.visit([cur_key])
                elif cur_key not in pending:
                    pending[cur_key] = (obs, score, traj, info)
            if pending:
                self._judge_and_archive(pending)
            if self.progress is not None:
                self.progress(self.stats())
            if self.writer is not None and self.iterations % cfg.log_every == 0:
                self._log()
        if self.writer is not None:
            self._log()
        best = self.archive.best()
        return IGEResult(
            seed=cfg.seed,
            success=solution is not None,
            steps_to_solve=solved_at,
            explore_steps_to_solve=explore_solved_at,
            total_steps=self.total_steps,
            explore_steps=self.explore_steps,
            replay_steps=self.replay_steps,
            iterations=self.iterations,
            archive_size=len(self.archive),
            best_score=float(best.score) if best is not None else 0.0,
            max_score=self.max_score,
            judged=self.judged,
            rejected=self.rejected,
            replay_mismatches=self.replay_mismatches,
            exhausted=self.exhausted,
            wall_s=time.perf_counter() - started,
            solution=list(solution or []),
            judge_metrics=self.judge.metrics(),
        )

    def _judge_and_archive(self, pending: dict[str, tuple[str, float, list[str], dict[str, Any]]]) -> None:
        best = float(self.archive.scores.max()) if len(self.archive) else float("-inf")
        always = [k for k, (_, score, _, _) in pending.items() if score > best]
        ask = [k for k in pending if k not in always]
        keep = list(always)
        if self.config.filter == "none":
            keep += ask
        elif ask:
            self.judged += len(ask)
            verdicts = self.judge.is_interesting([pending[k][0] for k in ask])
            for k, ok in zip(ask, verdicts, strict=True):
                if ok:
                    keep.append(k)
                else:
                    self.rejected += 1
        for k in keep:
            obs, score, traj, info = pending[k]
            self._archive(k, obs, score, traj, info)
        self.judge.observe([pending[k][0] for k in keep])

    def stats(self) -> dict[str, Any]:
        return {
            "steps": self.total_steps,
            "explore_steps": self.explore_steps,
            "replay_steps": self.replay_steps,
            "cells": len(self.archive),
            "best_score": float(self.archive.scores.max()) if len(self.archive) else 0.0,
            "iterations": self.iterations,
        }

    def _log(self) -> None:
        step = self.total_steps
        s = self.stats()
        self.writer.add_scalar("exploration/cells_in_archive", s["cells"], step)
        self.writer.add_scalar("charts/best_score", s["best_score"], step)
        self.writer.add_scalar("ige/explore_steps", s["explore_steps"], step)
        self.writer.add_scalar("ige/replay_steps", s["replay_steps"], step)
        self.writer.add_scalar("ige/rejected", self.rejected, step)
        for name, value in self.judge.metrics().items():
            self.writer.add_scalar(name, value, step)


def run_ige(env: Any, judge: Any, config: IGEConfig | None = None, **kwargs: Any) -> IGEResult:
    """Run IGE once (see `IGE`)."""
    return IGE(env, judge, config, **kwargs).run()
