"""IGE on TextWorldExpress coin collector: which judge helps Go-Explore find the coin sooner?

    OMP_NUM_THREADS=1 python benchmarks/ige_text_study.py --seeds 30 --budget 6000 --machine "2-core dev VM" --publish
    python benchmarks/ige_text_study.py --seeds 100 --budget 8000 --num-locations 11 --workers 16
    python benchmarks/ige_text_study.py --seeds 2 --budget 500       # a trial: results/ige_text_study/

Methods (all the same IGE loop, explore/archive/ige.py, same budget and seeds):
- uniform:        UniformJudge: random state among the weighted candidates, random untried
                  command, every new cell archived (Go-Explore with uniform choices);
- embedding:      EmbeddingJudge (all-MiniLM-L6-v2): picks isolated, rarely chosen states and the
                  command least like those already tried; archives new cells at least 0.05 from
                  their nearest archived state;
- local-untrained: LocalJudge on a randomly initialised tiny GPT-2 (2 layers, 64 dims): its yes/no
                  and option likelihoods are near-constant, so it is a control, not a judge;
- local-tuned:    the same tiny model fine-tuned (a few CPU minutes) on judge prompts from random walks
                  in training games (TWX train-fold seeds 500-579, disjoint from the evaluation seeds
                  0..N-1), labelled by simple game rules: a state is interesting ("yes") when it
                  shows a room not seen before, the coin, or a door being opened; the state to return
                  to is the one showing the coin, else the one found last; the command is "take coin"
                  when offered, else opening a closed door, else a move.

Calibration (both local judges): the rules label about 3 "no" per "yes", and a model trained on that
learns to say "no" to almost everything, which leaves IGE's archive at one or two cells. So the
fine-tuning set has equal numbers of "yes" and "no" score prompts (the "no" ones subsampled), and the
yes/no threshold of each local judge is the one with the best balanced accuracy on the IGE-like score
prompts (states whose cell is new) of calibration seeds 580-599; its balanced accuracy is then measured
on test seeds 600-619. No evaluation seed is used for training, calibration or testing the judge.

Each run stops at success or when the budget (exploration + replay steps) is spent. Results, in
results/ige_text_study/ (or, with --publish, benchmarks/): ige_text_study.md (a table; the reading
paragraph at the end of the published one is written by hand after a run), ige_text_study.csv
(every run) and ige_text_study.png.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import logging
import math
import os
import platform
import random
import shlex
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: study_output

from study_output import output_folder  # noqa: E402

from explore.archive.cells import text_cell  # noqa: E402
from explore.archive.ige import IGEConfig, run_ige  # noqa: E402
from explore.judge import UniformJudge, make_judge  # noqa: E402

log = logging.getLogger("ige_text_study")
METHODS = ("uniform", "embedding", "local-untrained", "local-tuned")
TRAIN_SEEDS = range(500, 580)  # fine-tuning data
CALIB_SEEDS = range(580, 600)  # choosing the yes/no threshold
TEST_SEEDS = range(600, 620)  # the held-out balanced accuracy


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


def judge_records(args: argparse.Namespace, seeds: range = TRAIN_SEEDS) -> list[dict[str, Any]]:
    """Judge prompts with rule-based answers from random walks in training games (see the docstring).

    Every record has "prompt", "completion", "kind" (score, action or state) and "seed"; score records
    also keep "state", "archive" (the states the prompt was built from) and "new_cell" (whether the
    state's cell was not archived yet: the only states IGE asks the judge to score).
    """
    prompts = UniformJudge()  # only its prompt templates are used
    rng = random.Random(1234)
    env = make_env(args)
    records: list[dict[str, Any]] = []
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
                    {
                        "prompt": prompts.action_prompt(obs, commands, goal),
                        "completion": f" {label}",
                        "kind": "action",
                        "seed": seed,
                    }
                )
                command = label if rng.random() < 0.5 else rng.choice(commands)
                obs, _, terminated, _, info = env.step(command)
                room = _room(obs)
                interesting = (room is not None and room not in rooms) or "coin" in obs or "You open" in obs
                new_cell = text_cell(obs) not in {text_cell(a) for a in archive}
                records.append(
                    {
                        "prompt": prompts.score_prompt(obs, archive),
                        "completion": " yes" if interesting else " no",
                        "kind": "score",
                        "seed": seed,
                        "state": obs,
                        "archive": list(archive),
                        "new_cell": new_cell,
                    }
                )
                if terminated:
                    break
                if new_cell:
                    archive.append(obs)
                    found.append(obs)
                rooms.add(room)
                if len(found) >= 3 and rng.random() < 0.3:
                    candidates = rng.sample(found, min(len(found), rng.randrange(2, 5)))
                    coin = [i for i, s in enumerate(candidates) if "coin" in s]
                    order = [found.index(c) for c in candidates]
                    target = coin[0] if coin else order.index(max(order))
                    prompt = prompts.state_prompt(candidates, goal)
                    records.append(
                        {"prompt": prompt, "completion": f" {target}", "kind": "state", "seed": seed}
                    )
    finally:
        env.close()
    return records


def balanced_training_set(
    records: list[dict[str, Any]], total: int, rng: random.Random
) -> list[dict[str, Any]]:
    """Equal numbers of "yes" and "no" score records (the larger class subsampled), at most half of
    `total`; the rest of `total` is filled with action and state records. Shuffled."""
    score = [r for r in records if r["kind"] == "score"]
    yes = [r for r in score if r["completion"] == " yes"]
    no = [r for r in score if r["completion"] == " no"]
    n = min(len(yes), len(no), total // 4)
    balanced = rng.sample(yes, n) + rng.sample(no, n)
    others = [r for r in records if r["kind"] != "score"]
    rng.shuffle(others)
    out = balanced + others[: max(0, total - len(balanced))]
    rng.shuffle(out)
    return out


def p_yes(lm: Any, records: list[dict[str, Any]]) -> list[float]:
    """The local judge's score (P(yes) / (P(yes) + P(no)), as LocalJudge._score) of each score record."""
    import torch

    logp = lm.choice_logprobs([r["prompt"] for r in records], [" yes", " no"])
    return torch.sigmoid(logp[:, 0] - logp[:, 1]).tolist()


def balanced_accuracy(scores: list[float], labels: list[bool], threshold: float) -> float:
    pos = [s >= threshold for s, y in zip(scores, labels, strict=True) if y]
    neg = [s < threshold for s, y in zip(scores, labels, strict=True) if not y]
    tpr = sum(pos) / len(pos) if pos else 0.0
    tnr = sum(neg) / len(neg) if neg else 0.0
    return 0.5 * (tpr + tnr)


def calibrate(scores: list[float], labels: list[bool]) -> float:
    """The threshold maximising balanced accuracy (midpoints between sorted scores; ties: the lowest)."""
    u = sorted(set(scores))
    candidates = [0.0, *[(a + b) / 2 for a, b in zip(u, u[1:], strict=False)], min(1.0, u[-1] + 1e-9)]
    best = max(balanced_accuracy(scores, labels, t) for t in candidates)
    return next(t for t in candidates if balanced_accuracy(scores, labels, t) == best)


def build_local_models(args: argparse.Namespace, out: Path) -> dict[str, tuple[Path, float]]:
    """The untrained tiny model and its fine-tuned copy, each with its calibrated threshold.

    Fine-tuning uses training seeds only (TRAIN_SEEDS) with balanced yes/no labels; the threshold of
    each model is the one with the best balanced accuracy on IGE-like score prompts (new cells) of
    CALIB_SEEDS, and it is tested on those of TEST_SEEDS. All three seed sets are disjoint from each
    other and from the evaluation seeds 0..N-1 (train fold; game seed g plays TWX seed g mod 1000).
    """
    import torch

    from explore.llm.local import LocalCausalLM, build_tiny_causal_lm, finetune_sft, sft_loss

    started = time.perf_counter()
    train_all = judge_records(args, TRAIN_SEEDS)
    calib_all = judge_records(args, CALIB_SEEDS)
    test_all = judge_records(args, TEST_SEEDS)
    log.info(
        "judge records: %d train / %d calibration / %d test (%.0f s)",
        len(train_all),
        len(calib_all),
        len(test_all),
        time.perf_counter() - started,
    )
    rng = random.Random(0)
    train = balanced_training_set(train_all, args.finetune_records, rng)
    held_out = rng.sample(calib_all, min(200, len(calib_all)))  # for the completion loss only
    calib = [r for r in calib_all if r["kind"] == "score" and r["new_cell"]]
    test = [r for r in test_all if r["kind"] == "score" and r["new_cell"]]
    n_yes = sum(r["completion"] == " yes" for r in train if r["kind"] == "score")
    n_no = sum(r["completion"] == " no" for r in train if r["kind"] == "score")
    raw_yes = sum(r["completion"] == " yes" for r in train_all if r["kind"] == "score")
    raw_no = sum(r["completion"] == " no" for r in train_all if r["kind"] == "score")
    corpus = [r["prompt"] + r["completion"] for r in train]
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
    lines = [
        f"fine-tuning: {len(train)} records from training seeds {TRAIN_SEEDS.start}-{TRAIN_SEEDS.stop - 1} "
        f"({n_yes} yes / {n_no} no score prompts, balanced by subsampling from {raw_yes} yes / {raw_no} no; "
        f"the rest action and state prompts), {len(losses)} steps, completion loss on held-out "
        f"calibration-seed prompts {before:.3f} -> {after:.3f}.",
        f"Threshold calibration: IGE-like score prompts (new cells only) of calibration seeds "
        f"{CALIB_SEEDS.start}-{CALIB_SEEDS.stop - 1} ({sum(r['new_cell'] for r in calib)} prompts, "
        f"{sum(r['completion'] == ' yes' for r in calib)} yes); balanced accuracy tested on those of test seeds "
        f"{TEST_SEEDS.start}-{TEST_SEEDS.stop - 1} ({len(test)} prompts, "
        f"{sum(r['completion'] == ' yes' for r in test)} yes):",
    ]
    models: dict[str, tuple[Path, float]] = {}
    for name, path in (("local-untrained", untrained), ("local-tuned", tuned)):
        model = LocalCausalLM(path, batch_size=16)
        cs, ts = p_yes(model, calib), p_yes(model, test)
        cy = [r["completion"] == " yes" for r in calib]
        ty = [r["completion"] == " yes" for r in test]
        t = calibrate(cs, cy)
        models[name] = (path, t)
        lines.append(
            f"{name}: threshold {t:.3f} (calibration balanced accuracy {balanced_accuracy(cs, cy, t):.3f}); "
            f"held-out test balanced accuracy {balanced_accuracy(ts, ty, t):.3f} at it, "
            f"{balanced_accuracy(ts, ty, 0.5):.3f} at 0.5; test P(yes) range "
            f"{min(ts):.3f}-{max(ts):.3f}."
        )
        log.info(lines[-1])
    (out / "finetune.txt").write_text("\n".join(lines) + "\n")
    return models


# --- the runs ------------------------------------------------------------------------------------------


def run_one(job: tuple[argparse.Namespace, str, int, str | None, float]) -> dict[str, Any]:
    args, method, seed, model_dir, threshold = job
    import torch

    torch.set_num_threads(1)
    if method == "uniform":
        judge = make_judge("uniform", seed=seed)
    elif method == "embedding":
        judge = make_judge("embedding", seed=seed, device="cpu")
    else:
        judge = make_judge(
            "local",
            model_path=model_dir,
            seed=seed,
            device=args.device,
            fallback="uniform",
            threshold=threshold,
        )
    env = make_env(args)
    try:
        r = run_ige(
            env,
            judge,
            IGEConfig(
                budget=args.budget, seed=seed, explore_steps=args.explore_steps, candidates=args.candidates
            ),
        )
    finally:
        env.close()
    skip = ("solution", "judge_metrics")
    row = {"method": method, **{k: v for k, v in r.as_dict().items() if k not in skip}}
    row["judge_calls"] = r.judge_metrics.get("judge/calls", 0.0)
    row["judge_fallbacks"] = r.judge_metrics.get("judge/fallbacks", 0.0)
    row["threshold"] = judge.threshold
    log.info(
        "%-16s seed %2d: %s %s steps, %d cells, %d/%d rejected",
        method,
        seed,
        r.success,
        r.steps_to_solve,
        r.archive_size,
        r.rejected,
        r.judged,
    )
    return row


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a success rate k/n (95% by default)."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def iqm(xs: list[float]) -> float:
    """Interquartile mean: the mean of the middle half (a quarter of the runs cut from each end)."""
    xs = sorted(xs)
    k = len(xs) // 4
    return statistics.fmean(xs[k : len(xs) - k])


def table(rows: list[dict[str, Any]], args: argparse.Namespace, header: str, note: str) -> str:
    lines = [
        "# IGE on TextWorldExpress coin collector",
        "",
        header,
        "",
        f"Game: TWX-CoinCollector-v0, {args.num_locations} locations, doors {'on' if args.doors else 'off'}, "
        f"{args.distractors} distractor items; evaluation seeds 0..{args.seeds - 1} (train fold); "
        f"budget {args.budget} env "
        f"steps per run (exploration + replay); {args.explore_steps} commands per return; "
        f"{args.candidates} candidate states per selection.",
        "",
        "Steps to solve count exploration + replay env steps. In the median and IQM columns an unsolved "
        f"run counts as the budget ({args.budget}), a lower bound on its cost (so a median or IQM equal to "
        "the budget means at least half / the middle runs did not solve); the solved-only median is the "
        "median over solved runs alone.",
        "",
        "| method | solved | success rate [95% Wilson CI] | median steps (unsolved = budget) | "
        "IQM steps (unsolved = budget) | median steps (solved only) | mean archive size | "
        "runs stopped early (exhausted) | mean judge calls / run | mean judge rejections / run | wall s / run |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for method in METHODS:
        rs = [r for r in rows if r["method"] == method]
        if not rs:
            continue
        solved = [r["steps_to_solve"] for r in rs if r["success"]]
        censored = [r["steps_to_solve"] if r["success"] else args.budget for r in rs]
        lo, hi = wilson(len(solved), len(rs))
        med_solved = f"{statistics.median(solved):.0f}" if solved else "-"
        lines.append(
            f"| {method} | {len(solved)}/{len(rs)} | {len(solved) / len(rs):.2f} [{lo:.2f}, {hi:.2f}] | "
            f"{statistics.median(censored):.0f} | {iqm(censored):.0f} | {med_solved} | "
            f"{statistics.fmean(r['archive_size'] for r in rs):.1f} | "
            f"{sum(bool(r['exhausted']) for r in rs)} | "
            f"{statistics.fmean(r['judge_calls'] for r in rs):.0f} | "
            f"{statistics.fmean(r['rejected'] for r in rs):.1f} | "
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
        ax1.step(
            [0, *xs, args.budget],
            [0, *[(k + 1) / len(rs) for k in range(len(xs))], len(xs) / len(rs)],
            where="post",
            label=m,
        )
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
    p.add_argument(
        "--finetune-records",
        type=int,
        default=2000,
        help="judge prompts to train on (at most; at most half of them balanced yes/no score prompts)",
    )
    p.add_argument("--candidates", type=int, default=4, help="archived states shown per selection")
    p.add_argument("--workers", type=int, default=1, help="runs in parallel (processes)")
    p.add_argument("--device", default="cpu", help="the local judge's device")
    p.add_argument(
        "--out", default=None, help="where the table, CSV and plot go (default: results/ige_text_study/)"
    )
    p.add_argument(
        "--publish", action="store_true", help="write them into benchmarks/, over the tracked results"
    )
    p.add_argument("--work-dir", default="runs/ige_text_study", help="where the tiny models are written")
    p.add_argument(
        "--machine", default=f"{os.cpu_count()}-core {platform.system()}", help="named in the table"
    )
    args = p.parse_args()
    t_start = time.perf_counter()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("explore.judge.base").setLevel(logging.ERROR)  # fallbacks are counted in the table
    out = Path(args.out) if args.out else output_folder("ige_text_study", args.publish)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    models: dict[str, tuple[Path, float]] = {}
    if any(m.startswith("local") for m in args.methods):
        models = build_local_models(args, work)
    jobs = [
        (args, m, s, str(models[m][0]) if m in models else None, models[m][1] if m in models else 0.5)
        for m in args.methods
        for s in range(args.seeds)
    ]
    started = time.perf_counter()
    if args.workers > 1:
        with ProcessPoolExecutor(args.workers) as pool:
            rows = list(pool.map(run_one, jobs))
    else:
        rows = [run_one(j) for j in jobs]
    runs_s = time.perf_counter() - started
    log.info("all runs: %.0f s", runs_s)
    with (out / "ige_text_study.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    finetune = (work / "finetune.txt").read_text().strip() if (work / "finetune.txt").exists() else ""
    command = "python benchmarks/ige_text_study.py " + shlex.join(sys.argv[1:])
    header = (
        f"Command: `{command}` (with OMP_NUM_THREADS=1), run {datetime.date.today().isoformat()} on a "
        f"{args.machine}; total wall time {time.perf_counter() - t_start:.0f} s ({runs_s:.0f} s of IGE runs)."
    )
    note = (
        "Judges. uniform: every new cell archived, uniform choices. embedding: all-MiniLM-L6-v2 novelty. "
        "local-untrained: a randomly initialised tiny GPT-2 (2 layers, 64 dims), a control. local-tuned: the "
        "same model fine-tuned on rule-labelled judge prompts from training seeds. Both local judges use "
        "a yes/no threshold calibrated on held-out training-fold seeds (never evaluation seeds):\n\n"
        + "\n".join(f"- {line}" for line in finetune.splitlines())
    )
    text = table(rows, args, header, note)
    (out / "ige_text_study.md").write_text(text)
    plot(rows, args, out / "ige_text_study.png")
    print(text)


if __name__ == "__main__":
    main()
