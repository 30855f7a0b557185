"""Judge throughput for the judge-reward bonus: captions (or caption pairs) judged per second, batched.

    python benchmarks/bench_judge_throughput.py                 # 512 captions, batches of 64
    python benchmarks/bench_judge_throughput.py --captions 2048 --batch-size 128

Measured, each on distinct captions (nothing is answered from a cache):
- embedding: all-MiniLM-L6-v2 sentence embeddings of captions (`CaptionEmbedder`, what every
  rollout needs for Motif's reward model and ELLM's similarities): captions/s.
- local: `LocalJudge.prefer` on a tiny GPT-2-style model built on the fly (2 layers, 64 wide; the
  machinery's cost, not a useful judge's): caption pairs/s, batched.
- oracle: `OracleJudge.prefer` (rules): caption pairs/s.
Captions are MiniHack-style event captions made distinct by a counter. One warm-up batch is left out
of each timing. Prints one JSON line per judge.

    python benchmarks/bench_judge_throughput.py --wait-fraction    # the rollout's wait, in training

--wait-fraction instead trains (`python -m explore train`, this checkout) with the judge bonus on a
BabyAI level, ellm and motif with the embedding judge, and reads the judge/* scalars the run logged:
judge/wait_fraction (the time the rollout was blocked on the judge and the embeddings over the time
between two rollouts; the target is <= 10 %), judge/bonus_fraction (all of the bonus's time, the
captions included), late answers, skipped waits and SPS. The first update (model loading, nothing
cached) is left out of the means. One JSON line per mode.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from explore.judge import LocalJudge, OracleJudge  # noqa: E402
from explore.judge_reward import CaptionEmbedder  # noqa: E402

EVENTS = ["You moved.", "You see here a key.", "This door is locked.", "It's a wall.", "A door is in view."]


def captions(n: int, offset: int = 0) -> list[str]:
    return [f"{EVENTS[i % len(EVENTS)]} You are on turn {offset + i}." for i in range(n)]


def timed(fn, items: list, batch_size: int) -> float:
    """Items per second of fn over `items` in batches (after one untimed warm-up batch)."""
    fn(items[:batch_size])
    rest = items[batch_size:]
    start = time.perf_counter()
    for i in range(0, len(rest), batch_size):
        fn(rest[i : i + batch_size])
    return len(rest) / (time.perf_counter() - start)


ROOT = Path(__file__).resolve().parents[1]
WAIT_SCALARS = ("wait_fraction", "bonus_fraction", "late", "fallback_zero", "skipped_waits", "pending")


def wait_fraction(args: argparse.Namespace) -> None:
    """Train briefly with the judge bonus (ellm, then motif) and print the judge/* scalars of the rollouts."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps = args.num_envs * args.num_steps * args.updates
    for mode in ("ellm", "motif"):
        with tempfile.TemporaryDirectory() as run_dir:
            command = [
                sys.executable, "-m", "explore", "train", "--preset", "minigrid", "--env-id", args.env_id,
                "--num-envs", str(args.num_envs), "--num-steps", str(args.num_steps),
                "--total-timesteps", str(steps), "--device", "cpu", "--torch-threads", "1", "--no-progress",
                "--bonus", "judge", "--judge-mode", mode, "--judge-kind", "embedding",
                "--judge-device", "cpu", "--run-dir", run_dir,
            ]  # fmt: skip
            subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
            events = EventAccumulator(run_dir, size_guidance={"scalars": 0})
            events.Reload()
            tags = set(events.Tags()["scalars"])
            row: dict[str, object] = {"mode": mode, "judge": "embedding", "env_id": args.env_id}
            row["updates"] = len(events.Scalars("charts/SPS"))
            row["sps"] = events.Scalars("charts/SPS")[-1].value
            for name in WAIT_SCALARS:
                values = [e.value for e in events.Scalars(f"judge/{name}")] if f"judge/{name}" in tags else []
                if name.endswith("fraction"):  # per rollout; the first has no previous rollout
                    rest = values[1:]
                    row[name] = round(sum(rest) / len(rest), 4) if rest else None
                    row[f"{name}_max"] = round(max(rest), 4) if rest else None
                else:  # counters: the run's total
                    row[name] = values[-1] if values else None
            row["load_average"] = [round(x, 2) for x in os.getloadavg()]
            print(json.dumps(row), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--captions", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--wait-fraction", action="store_true", help="measure the rollout's wait in training")
    parser.add_argument("--env-id", default="BabyAI-GoToLocal-v0", help="--wait-fraction: the level")
    parser.add_argument("--num-envs", type=int, default=4, help="--wait-fraction: envs")
    parser.add_argument("--num-steps", type=int, default=32, help="--wait-fraction: steps per rollout")
    parser.add_argument("--updates", type=int, default=12, help="--wait-fraction: rollouts")
    args = parser.parse_args()
    if args.wait_fraction:
        wait_fraction(args)
        return
    n, b = args.captions, args.batch_size
    results = []

    embed = CaptionEmbedder(device=args.device, batch_size=b)
    rate = timed(embed, captions(n + b), b)
    results.append({"judge": "embedding (all-MiniLM-L6-v2)", "unit": "captions/s", "rate": rate})

    from explore.llm.local import LocalCausalLM, build_tiny_causal_lm

    with tempfile.TemporaryDirectory() as tmp:
        texts = captions(n + b)
        path = build_tiny_causal_lm(tmp, texts[:256], seed=0)
        judge = LocalJudge(lm=LocalCausalLM(path, device=args.device, batch_size=b), fallback="uniform")
        pairs = list(zip(texts, texts[1:] + texts[:1], strict=True))
        rate = timed(judge.prefer, pairs, b)
        results.append({"judge": "local (tiny GPT-2, 2x64)", "unit": "pairs/s", "rate": rate})

    oracle = OracleJudge()
    rate = timed(oracle.prefer, pairs, b)
    results.append({"judge": "oracle (rules)", "unit": "pairs/s", "rate": rate})
    for r in results:
        print(
            json.dumps(
                {
                    **r,
                    "rate": round(r["rate"], 1),
                    "batch_size": b,
                    "n": n,
                    "threads": torch.get_num_threads(),
                }
            )
        )


if __name__ == "__main__":
    main()
