"""Go-Explore's exploration phase on Atari: select a cell, return to it, explore from it, archive.

    explore go-explore --env-id MontezumaRevenge-v5 --frames 20_000_000 --num-workers 15 --run-dir runs/ge
    explore go-explore --resume runs/ge --frames 40_000_000      # continue from the archive checkpoint

Loop (asynchronous over workers, so no worker waits for another): each idle worker gets
`tasks_per_message` cells drawn from the archive with probability proportional to
1 / (visits + 1) ** 0.5; it restores each cell's ALE state, explores `explore_steps` agent steps
with random repeated actions (see explore.archive.ale), and sends back the cells it reached first
or with a better score (with their cloned states) and the cells it passed through. The archive
keeps, per cell, the best trajectory (score, then length), and counts visits (once per exploration
that passes through the cell). Exploring with a policy instead (`GoExplore(config, policy=fn)`,
fn: frames (N, 210, 160) uint8 -> actions (N,)) steps all emulators in lockstep.

Frames: every emulator frame stepped while exploring counts (4 per agent step); restoring a state
costs none. Outputs in the run directory: config.json, archive.pkl (the archive with every cell's
trajectory and ALE state, and the run's counters; written atomically every `checkpoint_interval`
seconds and at the end), progress.csv (frames, cells, rooms, best score, explorations, seconds:
plot it against PPO+RND's `exploration/rooms_visited` at equal frames) and TensorBoard events
(`exploration/cells`, `exploration/rooms` (Montezuma: distinct values of RAM byte 3 seen),
`charts/best_score`, `charts/FPS`, `charts/frames`), all against frames.
"""

from __future__ import annotations

import csv
import dataclasses
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from explore.archive.ale import (
    ALEBatch,
    ALESettings,
    Emulator,
    ExploreResult,
    ExploreTask,
    _compress,
    decompress_frame,
)
from explore.archive.archive import Archive
from explore.archive.cells import Downscale, DynamicDownscale
from explore.checkpoint import given_fields, resolve_resume, save_config
from explore.errors import ConfigError, check_finite_floats, check_seed, check_writable_dir

ARCHIVE_NAME = "archive.pkl"
PROGRESS_NAME = "progress.csv"
PROGRESS_FIELDS = ("frames", "cells", "rooms", "best_score", "explorations", "seconds")


@dataclass
class GoExploreConfig:
    """Go-Explore exploration phase on an Atari game (ale-py emulators, deterministic by default)."""

    env_id: str = "MontezumaRevenge-v5"
    """Atari game (envpool-style id, e.g. MontezumaRevenge-v5, Pitfall-v5)"""
    frames: int = 10_000_000
    """emulator frames to explore in total (4 per agent step, summed over all workers)"""
    num_workers: int = 0
    """worker processes stepping emulators (0: explore in this process); on N cores use N - 1"""
    tasks_per_message: int = 4
    """explorations sent to a worker at a time (more: less messaging, coarser scheduling)"""
    explore_steps: int = 100
    """agent steps per exploration from a cell"""
    repeat_prob: float = 0.95
    """probability of repeating the previous random action at each agent step (mean run 20 steps)"""
    sticky_actions: float = 0.0
    """ALE repeat_action_probability (0: deterministic exploration, as in Go-Explore)"""
    frameskip: int = 4
    """emulator frames per agent step (the observation is the max of the last two)"""
    end_on_life_loss: bool = True
    """end an exploration when a life is lost (the state that lost it is not archived)"""
    weight_power: float = 0.5
    """selection weight 1 / (count + 1) ** weight_power"""
    weight_count: Literal["visits", "chosen"] = "visits"
    """which count the selection weight uses: visits (explorations through the cell) or times chosen"""
    cell_width: int = 11
    """cell: downscaled frame width"""
    cell_height: int = 8
    """cell: downscaled frame height"""
    cell_levels: int = 8
    """cell: intensity levels"""
    dynamic_cells: bool = False
    """re-choose the downscale (width, height, levels) periodically (Go-Explore's dynamic representation)"""
    dynamic_target: int = 64
    """dynamic cells: target number of distinct cells in the sample of recent frames"""
    dynamic_interval: int = 2_000_000
    """dynamic cells: frames between re-choices"""
    seed: int = 0
    """seed of the selection and exploration random numbers"""
    run_dir: str | None = None
    """where archive.pkl, progress.csv, config.json and TensorBoard events go
    (default runs/<game>__go_explore__<seed>__<time>)"""
    resume: str | None = None
    """continue the run in this directory from its archive checkpoint (flags given override its config)"""
    checkpoint_interval: float = 120.0
    """seconds between archive checkpoints (one is also written at the end)"""
    log_interval: float = 10.0
    """seconds between progress rows / TensorBoard points"""
    progress: bool = True
    """show a progress bar"""

    def validate(self) -> None:
        check_finite_floats(self)  # first: nan passes every range comparison below
        for name in ("frames", "explore_steps", "tasks_per_message", "frameskip", "cell_width",
                     "cell_height", "dynamic_target", "dynamic_interval"):
            if getattr(self, name) < 1:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"{flag} {getattr(self, name)!r} is invalid: it must be >= 1")
        if self.num_workers < 0:
            raise ConfigError(f"--num-workers {self.num_workers!r} is invalid: it must be >= 0")
        if not 2 <= self.cell_levels <= 256:
            raise ConfigError(f"--cell-levels {self.cell_levels!r} is invalid: use 2..256")
        if not 0 <= self.repeat_prob < 1:
            raise ConfigError(f"--repeat-prob {self.repeat_prob!r} is invalid: use [0, 1)")
        if not 0 <= self.sticky_actions < 1:
            raise ConfigError(f"--sticky-actions {self.sticky_actions!r} is invalid: use [0, 1)")
        if self.weight_power < 0:
            raise ConfigError(f"--weight-power {self.weight_power!r} is invalid: it must be >= 0")
        for name in ("checkpoint_interval", "log_interval"):
            if getattr(self, name) < 0:  # 0: at every chance
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"{flag} {getattr(self, name)!r} is invalid: seconds >= 0")
        check_seed(self.seed)
        # last, as it touches the disk: the run directory (or where it will be created) takes files
        if self.resume is not None:
            check_writable_dir(self.resume, flag="--resume")
        else:
            check_writable_dir(self.run_dir or "runs", flag="--run-dir")

    def settings(self) -> ALESettings:
        return ALESettings(
            env_id=self.env_id,
            frameskip=self.frameskip,
            repeat_action_probability=self.sticky_actions,
            end_on_life_loss=self.end_on_life_loss,
        )


def explore_with_policy(
    batch: ALEBatch,
    starts: list[tuple[bytes | None, float, int, np.ndarray]],
    policy: Callable[[np.ndarray], np.ndarray],
    steps: int,
    cell: Downscale,
) -> list[ExploreResult]:
    """Explore from `starts` [(state, score, length, frame)] (one per emulator) with `policy` in lockstep.

    `policy` maps the (N, 210, 160) uint8 frames to N actions; an emulator that loses a life (with
    `end_on_life_loss`) or whose game ends stops being recorded (it keeps stepping, ignored)."""
    n = batch.num_envs
    batch.restore_states([s[0] for s in starts])
    _, _, _, lives, _ = batch.step(np.zeros(n, np.int64))  # read lives; this no-op step is recorded
    frames = np.stack([s[3] for s in starts])
    scores = np.array([s[1] for s in starts], np.float64)
    alive = np.ones(n, bool)
    actions = np.zeros((n, steps + 1), np.uint8)  # column 0: the NOOP step above
    best: list[dict[int, float]] = [{} for _ in range(n)]
    results = [ExploreResult(actions=np.zeros(0, np.uint8), frames=0) for _ in range(n)]
    visited: list[list[int]] = [[] for _ in range(n)]
    rooms: list[set[int]] = [set() for _ in range(n)]
    room_at = batch.settings.room_index()
    used = np.full(n, batch.settings.frameskip)
    taken = np.ones(n, np.int64)
    for t in range(1, steps + 1):
        a = np.asarray(policy(frames)).reshape(n)
        actions[:, t] = a
        frames, rewards, over, now_lives, ram = batch.step(a)
        used += batch.settings.frameskip * alive
        scores += rewards * alive
        dead = over | (batch.settings.end_on_life_loss & (now_lives < lives))
        newly_dead = alive & dead
        for i in np.nonzero(newly_dead)[0]:
            results[i].died = True
            taken[i] = t + 1
        alive &= ~dead
        if not alive.any():
            break
        keys = cell(frames)
        live = np.nonzero(alive)[0]
        states = None
        for i in live:
            key = int(keys[i])
            if room_at is not None:
                rooms[i].add(int(ram[i, room_at]))
            prev = best[i].get(key)
            if prev is None:
                visited[i].append(key)
            if prev is None or scores[i] > prev:
                best[i][key] = scores[i]
                states = batch.clone_states() if states is None else states
                results[i].cells.append((key, float(scores[i]), t + 1, states[i], _compress(frames[i])))
        taken[live] = t + 1
    for i, r in enumerate(results):
        r.actions = actions[i, : taken[i]]
        r.frames = int(used[i])
        r.visited = np.asarray(visited[i], np.int64)
        r.rooms = np.asarray(sorted(rooms[i]), np.int64)
    return results


class GoExplore:
    """The exploration-phase runner; `run()` explores until `config.frames` and returns a summary."""

    def __init__(self, config: GoExploreConfig, policy: Callable[[np.ndarray], np.ndarray] | None = None):
        config = resolve_resume(config)  # --resume: the saved config, the fields set here on top
        config.validate()
        self.config = config
        self.policy = policy
        self.settings = config.settings()
        resume = config.resume
        if resume is not None:
            self.run_dir = Path(resume)
        elif config.run_dir is not None:
            self.run_dir = Path(config.run_dir)
        else:
            game = config.env_id.split("/")[-1].split("-v")[0]
            self.run_dir = Path("runs") / f"{game}__go_explore__{config.seed}__{int(time.time())}"
        self.dynamic = (
            DynamicDownscale(config.dynamic_target,
                             current=Downscale(config.cell_width, config.cell_height, config.cell_levels))
            if config.dynamic_cells else None
        )
        self.representation = Downscale(config.cell_width, config.cell_height, config.cell_levels)
        self.rng = np.random.default_rng(config.seed)
        self.frames = 0
        self.explorations = 0
        self.rooms: set[int] = set()
        self.elapsed = 0.0
        self.next_dynamic = config.dynamic_interval
        self.samples: deque[np.ndarray] = deque(maxlen=2000)
        if resume is not None and (self.run_dir / ARCHIVE_NAME).is_file():
            self._load()
        else:
            self.archive = Archive(config.weight_power, config.weight_count)
            self._add_start_cell()

    # --- state ---

    def _add_start_cell(self) -> None:
        emu = Emulator(self.settings, self.config.seed)
        frame = emu.reset()
        key = int(self.representation(frame[None])[0])
        keep = self.dynamic is not None or self.policy is not None
        self.archive.add(key, 0.0, np.zeros(0, np.uint8), emu.clone(), _compress(frame) if keep else None)

    def _load(self) -> None:
        self.archive = Archive.load(self.run_dir / ARCHIVE_NAME)
        self.archive.weight_power = self.config.weight_power
        self.archive.weight_count = self.config.weight_count
        meta = self.archive.meta
        self.frames = int(meta["frames"])
        self.explorations = int(meta["explorations"])
        self.rooms = set(meta["rooms"])
        self.elapsed = float(meta["elapsed"])
        self.rng.bit_generator.state = meta["rng"]
        self.representation = Downscale(*meta["representation"])
        self.next_dynamic = int(meta.get("next_dynamic", self.next_dynamic))
        if self.dynamic is not None:
            self.dynamic.current = self.representation
            if any(r.frame is None for r in self.archive.records()):
                raise ConfigError(
                    "--dynamic-cells needs each cell's frame; this archive was made without them"
                )

    def _meta(self) -> dict:
        r = self.representation
        return {
            "frames": self.frames,
            "explorations": self.explorations,
            "rooms": sorted(self.rooms),
            "elapsed": self.elapsed,
            "rng": self.rng.bit_generator.state,
            "representation": (r.width, r.height, r.levels),
            "next_dynamic": self.next_dynamic,
        }

    def checkpoint(self) -> Path:
        self.archive.meta = self._meta()
        self.archive.step = self.frames
        return self.archive.save(self.run_dir / ARCHIVE_NAME)

    # --- one exploration batch ---

    def make_tasks(self, n: int) -> tuple[list[ExploreTask], list[np.ndarray]]:
        rows = self.archive.select(n, self.rng, rows=True)
        tasks, prefixes = [], []
        for row in rows:
            r = self.archive.record(row)
            tasks.append(
                ExploreTask(
                    state=r.state,
                    score=r.score,
                    length=r.length,
                    steps=self.config.explore_steps,
                    seed=int(self.rng.integers(2**63)),
                    repeat_prob=self.config.repeat_prob,
                    cell=self.representation,
                    keep_frames=self.dynamic is not None,
                    sample_frame=self.dynamic is not None,
                )
            )
            prefixes.append(r.trajectory)
        return tasks, prefixes

    def absorb(
        self, results: list[ExploreResult], prefixes: list[np.ndarray], representation: Downscale
    ) -> int:
        """Merge exploration results into the archive; returns the number of new or improved cells."""
        changed = 0
        for res, prefix in zip(results, prefixes, strict=True):
            self.frames += res.frames
            self.explorations += 1
            self.archive.step = self.frames
            # results computed under a replaced representation only count their frames
            if representation == self.representation:
                for key, score, t, state, frame in res.cells:
                    trajectory = np.concatenate([prefix, res.actions[:t]]).astype(np.uint8)
                    changed += self.archive.add(key, score, trajectory, state, frame)
                self.archive.visit(res.visited)
            self.rooms.update(res.rooms.tolist())
            if res.sample is not None:
                self.samples.append(res.sample)
        return changed

    def maybe_rechoose_cells(self) -> bool:
        """Dynamic cells: pick a new representation from recent frames and re-key the archive."""
        if self.dynamic is None or self.frames < self.next_dynamic or len(self.samples) < 100:
            return False
        self.next_dynamic = self.frames + self.config.dynamic_interval
        chosen = self.dynamic.choose(np.stack(self.samples), self.rng)
        if chosen == self.representation:
            return False
        self.representation = chosen
        frames = np.stack([decompress_frame(r.frame) for r in self.archive.records()])
        keys = np.concatenate([chosen(frames[i : i + 512]) for i in range(0, len(frames), 512)])
        self.archive = self.archive.rekey(keys)
        return True

    # --- the loop ---

    def run(self) -> dict[str, float]:
        from torch.utils.tensorboard import SummaryWriter
        from tqdm.auto import tqdm

        cfg = self.config
        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_config(self.run_dir, dataclasses.replace(cfg, resume=None, run_dir=str(self.run_dir)))
        progress_path = self.run_dir / PROGRESS_NAME
        self._trim_progress(progress_path)
        writer = SummaryWriter(str(self.run_dir))
        track_rooms = self.settings.room_index() is not None
        per_worker = cfg.tasks_per_message
        num_envs = max(1, cfg.num_workers) * (per_worker if self.policy is None else 1)
        if self.policy is not None:
            num_envs = max(num_envs, per_worker)
        batch = ALEBatch(self.settings, num_envs, cfg.num_workers, seed=cfg.seed)
        bar = tqdm(total=cfg.frames, initial=min(self.frames, cfg.frames), unit="frame",
                   disable=not cfg.progress, dynamic_ncols=True)
        start = time.time()
        base_elapsed, base_frames = self.elapsed, self.frames
        last_log = last_ckpt = last_bar = start
        in_flight: dict[int, tuple[list[np.ndarray], Downscale]] = {}
        try:
            with open(progress_path, "a", newline="") as csv_file:
                rows = csv.writer(csv_file)
                if csv_file.tell() == 0:
                    rows.writerow(PROGRESS_FIELDS)
                self._log(writer, rows, csv_file, track_rooms, 0.0)
                while self.frames < cfg.frames or in_flight:
                    before = self.frames
                    if self.policy is not None:
                        self._policy_round(batch)
                    else:
                        if self.frames < cfg.frames:
                            for w in batch.idle_workers():
                                tasks, prefixes = self.make_tasks(per_worker)
                                batch.submit(w, tasks)
                                in_flight[w] = (prefixes, self.representation)
                        for w, results in batch.receive(timeout=1.0):
                            prefixes, rep = in_flight.pop(w)
                            self.absorb(results, prefixes, rep)
                    self.maybe_rechoose_cells()
                    bar.update(min(self.frames, cfg.frames) - min(before, cfg.frames))
                    now = time.time()
                    self.elapsed = base_elapsed + now - start
                    if now - last_log >= cfg.log_interval:
                        last_log = now
                        fps = (self.frames - base_frames) / max(now - start, 1e-9)
                        self._log(writer, rows, csv_file, track_rooms, fps)
                    if now - last_bar >= 1.0:  # the bar's fields once a second, not once per log interval
                        last_bar = now
                        bar.set_postfix(cells=len(self.archive), rooms=len(self.rooms),
                                        best=float(self.archive.scores.max()) if len(self.archive) else 0.0,
                                        refresh=False)
                    if now - last_ckpt >= cfg.checkpoint_interval:
                        last_ckpt = now
                        self.checkpoint()
                fps = (self.frames - base_frames) / max(time.time() - start, 1e-9)
                self._log(writer, rows, csv_file, track_rooms, fps)
            self.checkpoint()
        finally:
            bar.close()
            writer.close()
            batch.close()
        best = self.archive.best()
        return {
            "frames": self.frames,
            "cells": len(self.archive),
            "rooms": len(self.rooms),
            "best_score": best.score if best else 0.0,
            "explorations": self.explorations,
            "seconds": self.elapsed,
            "fps": fps,
        }

    def _policy_round(self, batch: ALEBatch) -> None:
        rows = self.archive.select(batch.num_envs, self.rng, rows=True)
        records = [self.archive.record(r) for r in rows]
        frames = [decompress_frame(r.frame) if isinstance(r.frame, bytes) else np.zeros((210, 160), np.uint8)
                  for r in records]
        starts = [(r.state, r.score, r.length, f) for r, f in zip(records, frames, strict=True)]
        steps, rep = self.config.explore_steps, self.representation
        results = explore_with_policy(batch, starts, self.policy, steps, rep)
        self.absorb(results, [r.trajectory for r in records], self.representation)

    def _log(self, writer, rows, csv_file, track_rooms: bool, fps: float) -> None:
        best = self.archive.best()
        best_score = best.score if best else 0.0
        writer.add_scalar("exploration/cells", len(self.archive), self.frames)
        if track_rooms:
            writer.add_scalar("exploration/rooms", len(self.rooms), self.frames)
        writer.add_scalar("charts/best_score", best_score, self.frames)
        writer.add_scalar("charts/frames", self.frames, self.frames)
        writer.add_scalar("charts/FPS", fps, self.frames)
        writer.flush()
        rows.writerow([self.frames, len(self.archive), len(self.rooms), best_score, self.explorations,
                       round(self.elapsed, 2)])
        csv_file.flush()

    def _trim_progress(self, path: Path) -> None:
        """On resume, drop progress rows written after the checkpoint (they would repeat)."""
        if not path.is_file():
            return
        with open(path, newline="") as f:
            lines = list(csv.reader(f))
        if not lines:
            return
        header, body = lines[0], [r for r in lines[1:] if r and int(r[0]) <= self.frames]
        with open(path, "w", newline="") as f:
            csv.writer(f).writerows([header, *body])


def parse_config(argv, prog: str = "explore go-explore") -> GoExploreConfig:
    """Config from flags; `--resume DIR` starts from DIR's saved config (the flags given override it)."""
    import tyro

    config = tyro.cli(GoExploreConfig, args=list(argv), prog=prog)
    return resolve_resume(config, given=given_fields(argv, GoExploreConfig))


def main(argv, prog: str = "explore go-explore") -> dict[str, float]:
    config = parse_config(argv, prog)
    runner = GoExplore(config)
    summary = runner.run()
    print(
        f"go-explore: {summary['frames']} frames, {summary['cells']} cells, {summary['rooms']} rooms, "
        f"best score {summary['best_score']:g}, {summary['fps']:.0f} frames/s; "
        f"run directory: {runner.run_dir}"
    )
    return summary
