"""IGE on TextWorldExpress coin collector: which judge helps Go-Explore find the coin sooner?

    python benchmarks/ige_text_study.py          # the small version (5 seeds, minutes on 2 cores)
    python benchmarks/ige_text_study.py --seeds 20 --budget 8000 --num-locations 11 --workers 16

Methods (all the same IGE loop, explore/archive/ige.py, same budget and seeds):
- uniform:        UniformJudge: random state among the weighted candidates, random untried
                  command, every new cell archived (Go-Explore with uniform choices);
- embedding:      EmbeddingJudge (all-MiniLM-L6-v2): picks isolated, rarely chosen states and the
                  command least like those already tried; archives new cells at least 0.05 from
                  their nearest archived state;
- local-untrained: LocalJudge on a randomly initialised tiny GPT-2 (2 layers, 64 dims): its yes/no
                  and option likelihoods are near-constant, so it is a control, not a judge;
- local-tuned:    the same tiny model fine-tuned for ~1 minute of CPU on judge prompts from
                  training games (TWX train-fold seeds 500-539, disjoint from the evaluation seeds
                  0..N-1), labelled by simple game rules: a state is interesting ("yes") when it
                  shows a room not in the archive context, the coin, or a door being opened; the
                  state to return to is the one showing the coin, else the one found last; the
                  command is "take coin" when offered, else opening a closed door, else a move.

Each run stops at success or when the budget (exploration + replay steps) is spent. Results:
benchmarks/ige_text_study.md (a table), ige_text_study.csv (every run) and ige_text_study.png.
"""

from __future__ import annotations

import argparse
import csv
import logging
import random
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from explore.archive.cells import text_cell  # noqa: E402
from explore.archive.ige import IGEConfig, run_ige  # noqa: E402
from explore.judge import UniformJudge, make_judge  # noqa: E402

log = logging.getLogger("ige_text_study")
HERE = Path(__file__).resolve().parent
METHODS = ("uniform", "embedding", "local-untrained", "local-tuned")
TRAIN_SEEDS = range(500, 540)


def make_env(args: argparse.Namespace) -> Any:
    from envs.text import make_text_env

    return make_text_env(
        "TWX-CoinCollector-v0",
        max_episode_steps=100_000,
        numLocations=args.num_locations,
        includeDoors=int(args.doors),
        numDistractorItems=args.distractors,
    )


# --- fine-tuning data for the tiny local judge, from training games ------------------------------------


def _room(obs: str) -> str | None:
    head = obs.strip().lower()
    if head.startswith("you are in the "):
        return head[len("you are in the ") :].split(".")[0]
    return None


def _command_label(commands: list[str], rng: random.Random) -> str:
    for c in commands:
        if c == "take coin":
            return c
    doors = [c for c in commands if c.startswith("open door")]
    moves = [c for c in commands if c.startswith("move")]
    return rng.choice(doors or moves or commands)


def judge_records(args: argparse.Namespace, seeds: range = TRAIN_SEEDS) -> list[dict[str, str]]:
    """Judge prompts with rule-based answers from random walks in training games (see the docstring)."""
    prompts = UniformJudge()  # only its prompt templates are used
    rng = random.Random(1234)
    env = make_env(args)
    records: list[dict[str, str]] = []
    try:
        for seed in seeds:
            obs, info = env.reset(seed=seed)
            goal = info.get("goal", "")
            archive = [obs]
            rooms = {_room(obs)}
            found: list[str] = [obs]
            for _ in range(30):
                commands = info["admissible_commands"]
                label = _command_label(commands, rng)
                records.append(
                    {"prompt": prompts.action_prompt(obs, commands, goal), "completion": f" {label}"}
                )
                command = label if rng.random() < 0.5 else rng.choice(commands)
                obs, _, terminated, _, info = env.step(command)
                room = _room(obs)
                interesting = (room is not None and room not in rooms) or "coin" in obs or "You open" in obs
                records.append(
                    {
                        "prompt": prompts.score_prompt(obs, archive),
                        "completion": " yes" if interesting else " no",
                    }
                )
                if terminated:
                    break
                if text_cell(obs) not in {text_cell(a) for a in archive}:
                    archive.append(obs)
                    found.append(obs)
                rooms.add(room)
                if len(found) >= 3 and rng.random() < 0.3:
                    candidates = rng.sample(found, min(len(found), rng.randrange(2, 5)))
                    coin = [i for i, s in enumerate(candidates) if "coin" in s]
                    order = [found.index(c) for c in candidates]
                    target = coin[0] if coin else order.index(max(order))
                    prompt = prompts.state_prompt(candidates, goal)
                    records.append({"prompt": prompt, "completion": f" {target}"})
    finally:
        env.close()
    return records


def build_local_models(args: argparse.Namespace, out: Path) -> dict[str, Path]:
    """The untrained tiny model and its fine-tuned copy (seconds to a minute on a CPU)."""
    import torch

    from explore.llm.local import LocalCausalLM, build_tiny_causal_lm, finetune_sft, sft_loss

    records = judge_records(args)
    rng = random.Random(0)
    rng.shuffle(records)
    records = records[: args.finetune_records]
    held_out, train = records[:100], records[100:]
    corpus = [r["prompt"] + r["completion"] for r in records]
    untrained = build_tiny_causal_lm(out / "tiny-untrained", corpus, n_positions=2048, seed=0)
    tuned = build_tiny_causal_lm(out / "tiny-tuned", corpus, n_positions=2048, seed=0)
    torch.manual_seed(0)
    lm = LocalCausalLM(tuned, batch_size=16)
    before = sft_loss(lm, held_out)
    started = time.perf_counter()
    losses = finetune_sft(lm, train, epochs=args.finetune_epochs, lr=3e-3, batch_size=16, seed=0)
    after = sft_loss(lm, held_out)
    lm.save(tuned)
    log.info(
        "fine-tuned the tiny judge on %d records (%d steps, %.0f s): held-out loss %.3f -> %.3f",
        len(train),
        len(losses),
        time.perf_counter() - started,
        before,
        after,
    )
    (out / "finetune.txt").write_text(
        f"records {len(train)} train / {len(held_out)} held out, steps {len(losses)}, "
        f"held-out completion loss {before:.3f} -> {after:.3f}\n"
    )
    return {"local-untrained": untrained, "local-tuned": tuned}


# --- the runs ------------------------------------------------------------------------------------------


def run_one(job: tuple[argparse.Namespace, str, int, str | None]) -> dict[str, Any]:
    args, method, seed, model_dir = job
    import torch

    torch.set_num_threads(1)
    if method == "uniform":
        judge = make_judge("uniform", seed=seed)
    elif method == "embedding":
        judge = make_judge("embedding", seed=seed, device="cpu")
    else:
        judge = make_judge("local", model_path=model_dir, seed=seed, device=args.device, fallback="uniform")
    env = make_env(args)
    try:
        r = run_ige(env, judge, IGEConfig(
            budget=args.budget, seed=seed, explore_steps=args.explore_steps, candidates=args.candidates
        ))
    finally:
        env.close()
    skip = ("solution", "judge_metrics")
    row = {"method": method, **{k: v for k, v in r.as_dict().items() if k not in skip}}
    row["judge_calls"] = r.judge_metrics.get("judge/calls", 0.0)
    row["judge_fallbacks"] = r.judge_metrics.get("judge/fallbacks", 0.0)
    log.info(
        "%-16s seed %2d: %s %s steps, %d cells", method, seed, r.success, r.steps_to_solve, r.archive_size
    )
    return row


def table(rows: list[dict[str, Any]], args: argparse.Namespace, note: str) -> str:
    lines = [
        "# IGE on TextWorldExpress coin collector",
        "",
        f"Game: TWX-CoinCollector-v0, {args.num_locations} locations, doors {'on' if args.doors else 'off'}, "
        f"{args.distractors} distractor items; evaluation seeds 0..{args.seeds - 1}; "
        f"budget {args.budget} env "
        f"steps per run (exploration + replay); {args.explore_steps} commands per return; "
        f"{args.candidates} candidate states per selection.",
        "",
        "| method | solved | median steps to solve | mean steps to solve (solved) | mean explore steps | "
        "mean archive size | judge calls / run | wall s / run |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for method in METHODS:
        rs = [r for r in rows if r["method"] == method]
        if not rs:
            continue
        solved = [r["steps_to_solve"] for r in rs if r["success"]]
        med = f"{statistics.median(solved):.0f}" if solved else "-"
        mean = f"{statistics.fmean(solved):.0f}" if solved else "-"
        lines.append(
            f"| {method} | {len(solved)}/{len(rs)} | {med} | {mean} | "
            f"{statistics.fmean(r['explore_steps'] for r in rs):.0f} | "
            f"{statistics.fmean(r['archive_size'] for r in rs):.1f} | "
            f"{statistics.fmean(r['judge_calls'] for r in rs):.0f} | "
            f"{statistics.fmean(r['wall_s'] for r in rs):.1f} |"
        )
    lines += ["", note, ""]
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], args: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for i, m in enumerate(methods):
        rs = [r for r in rows if r["method"] == m]
        steps = sorted(r["steps_to_solve"] if r["success"] else float("inf") for r in rs)
        xs = [s for s in steps if s != float("inf")]
        ax1.step([0, *xs, args.budget], [0, *[(k + 1) / len(rs) for k in range(len(xs))], len(xs) / len(rs)],
                 where="post", label=m)
        ax2.scatter([i] * len(xs), xs, alpha=0.7)
        if xs:
            ax2.hlines(statistics.median(xs), i - 0.3, i + 0.3, color="k")
    ax1.set_xlabel("env steps (exploration + replay)")
    ax1.set_ylabel("fraction of seeds solved")
    ax1.set_title("success vs. budget")
    ax1.legend()
    ax2.set_xticks(range(len(methods)), methods, rotation=15)
    ax2.set_ylabel("steps to solve (solved runs; bar: median)")
    ax2.set_title(f"coin collector, {args.num_locations} rooms")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=5, help="evaluation seeds 0..N-1 per method")
    p.add_argument("--budget", type=int, default=3000, help="env steps per run (exploration + replay)")
    p.add_argument("--num-locations", type=int, default=11, help="rooms in the coin-collector map")
    p.add_argument("--doors", type=int, default=1, help="1: rooms are separated by doors to open")
    p.add_argument("--distractors", type=int, default=0, help="distractor items per room")
    p.add_argument("--explore-steps", type=int, default=4, help="commands after each return")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--finetune-epochs", type=int, default=2, help="epochs over the tiny judge's data")
    p.add_argument("--finetune-records", type=int, default=1000, help="judge prompts to train on (at most)")
    p.add_argument("--candidates", type=int, default=4, help="archived states shown per selection")
    p.add_argument("--workers", type=int, default=1, help="runs in parallel (processes)")
    p.add_argument("--device", default="cpu", help="the local judge's device")
    p.add_argument("--out", default=str(HERE), help="where the table, CSV and plot go")
    p.add_argument("--work-dir", default="runs/ige_text_study", help="where the tiny models are written")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("explore.judge.base").setLevel(logging.ERROR)  # fallbacks are counted in the table
    out, work = Path(args.out), Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    models: dict[str, Path] = {}
    if any(m.startswith("local") for m in args.methods):
        models = build_local_models(args, work)
    jobs = [
        (args, m, s, str(models[m]) if m in models else None) for m in args.methods for s in range(args.seeds)
    ]
    started = time.perf_counter()
    if args.workers > 1:
        with ProcessPoolExecutor(args.workers) as pool:
            rows = list(pool.map(run_one, jobs))
    else:
        rows = [run_one(j) for j in jobs]
    log.info("all runs: %.0f s", time.perf_counter() - started)
    with (out / "ige_text_study.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    finetune = (work / "finetune.txt").read_text().strip() if (work / "finetune.txt").exists() else ""
    note = (
        "local-untrained is a randomly initialised tiny GPT-2: near-constant likelihoods, a control. "
        f"local-tuned is the same model fine-tuned on rule-labelled judge prompts from training seeds "
        f"({finetune}). Command: `python benchmarks/ige_text_study.py "
        f"--seeds {args.seeds} --budget {args.budget} --num-locations {args.num_locations} "
        f"--doors {args.doors} --distractors {args.distractors}`."
    )
    (out / "ige_text_study.md").write_text(table(rows, args, note))
    plot(rows, args, out / "ige_text_study.png")
    print(table(rows, args, note))


if __name__ == "__main__":
    main()
