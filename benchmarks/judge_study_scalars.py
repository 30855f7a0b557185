"""The judge/* scalars of a judge-reward study's runs: one CSV row per judge run, and a markdown table.

    python benchmarks/judge_study_scalars.py runs/judge_study/doorkey benchmarks/judge_study_doorkey_judge.csv

Per run (a directory <task>__<method>__<seed> written by `explore bench`): the mean and the largest
judge/wait_fraction (time the rollout was blocked on the judge and the embeddings over the time between
rollouts) and judge/bonus_fraction (all of the bonus, captions included) over the updates after the
first (which has no previous rollout), and the run's end totals of late answers, fallbacks, skipped
waits, preferences, fits and distinct captions, with the largest queue (judge/pending).
"""

from __future__ import annotations

import csv
import statistics
import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

FRACTIONS = ("wait_fraction", "bonus_fraction")
TOTALS = ("late", "fallback_zero", "fallback_cached", "skipped_waits", "preferences", "fits", "captions")


def run_row(run_dir: Path) -> dict[str, object] | None:
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    tags = set(events.Tags()["scalars"])
    if "judge/wait_fraction" not in tags:
        return None
    task, method, seed = run_dir.name.split("__")
    row: dict[str, object] = {"task": task, "method": method, "seed": int(seed)}
    for name in FRACTIONS:
        values = [e.value for e in events.Scalars(f"judge/{name}")][1:]
        row[f"{name}_mean"] = round(statistics.fmean(values), 4) if values else ""
        row[f"{name}_max"] = round(max(values), 4) if values else ""
    for name in TOTALS:
        row[name] = int(events.Scalars(f"judge/{name}")[-1].value) if f"judge/{name}" in tags else ""
    row["pending_max"] = int(max(e.value for e in events.Scalars("judge/pending")))
    row["sps_last"] = int(events.Scalars("charts/SPS")[-1].value)
    return row


def main(root: str, out: str) -> None:
    rows = [r for d in sorted(Path(root).iterdir()) if d.is_dir() and (r := run_row(d)) is not None]
    rows.sort(key=lambda r: (r["task"], r["method"], r["seed"]))
    if not rows:
        raise SystemExit(f"no judge runs with judge/* scalars under {root}")
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print("| " + " | ".join(rows[0]) + " |")
    print("|" + " --- |" * len(rows[0]))
    for r in rows:
        print("| " + " | ".join(str(v) for v in r.values()) + " |")


if __name__ == "__main__":
    main(*sys.argv[1:3])
