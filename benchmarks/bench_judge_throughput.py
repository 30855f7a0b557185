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
"""

from __future__ import annotations

import argparse
import json
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--captions", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
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
