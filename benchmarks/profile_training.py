"""Where the training time goes, by Python function: py-spy samples of a PPO run as one table (issue 16).

    python benchmarks/profile_training.py                          # PPO+RND, Montezuma, 8 envs, 1 thread
    python benchmarks/profile_training.py --updates 8 --out benchmarks/profile_before.md
    python benchmarks/profile_training.py --preset minigrid --num-envs 16

py-spy (a sampling profiler: the trainer runs unmodified) records the Python stacks of a training
run of the preset at `--num-envs` envs and `--updates` updates after one warm-up rollout. Only
samples inside `agents.ppo.train` count (imports and interpreter start-up are left out; env
creation and the RND warm-up are in, and show as their own rows; lazy imports are left out). Each row is a Python function
with its inclusive share (samples with the function anywhere on the stack: time in it and in what
it calls, native code such as convolutions included) and its self share (samples where it is the
innermost Python frame). Functions on nearly every stack (`train` and its callers) and torch's
module-call plumbing are left out. Written as Markdown, the "where the time goes" record that a
speed change should quote before and after.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# "function (path:line)" in py-spy's raw (collapsed) format; the line is where the frame is now
FRAME = re.compile(r"^(?P<function>.*) \((?P<path>.*?)(?::(?P<line>\d+))?\)$")
ROOT_FUNCTION = ("train", "agents/ppo.py")  # samples under this frame are the training run
NEARLY_ALL = 0.99  # frames on at least this share of the stacks say nothing about where time goes
PLUMBING = ("torch/nn/modules/module.py",)
IMPORT_FRAME = "_find_and_load"  # importlib's frame on the stack of every import  # Module.__call__ wrappers: on every forward pass


@dataclass
class Profile:
    preset: str = "paper"
    """training hyperparameters (agents.ppo.PRESETS) apart from the sizes below"""
    env_id: str | None = None
    """environment (default: the preset's)"""
    num_envs: int = 8
    """envs"""
    num_steps: int = 128
    """steps per env per rollout"""
    updates: int = 4
    """PPO updates of the profiled run"""
    torch_threads: int = 1
    """torch CPU threads"""
    rate: int = 100
    """py-spy samples per second"""
    top: int = 25
    """rows of the table"""
    out: str | None = None
    """write the Markdown table here (it is printed either way)"""


def frame_key(frame: str) -> tuple[str, str]:
    """(function, path) of a raw py-spy frame, without the line number."""
    match = FRAME.match(frame)
    if match is None:
        return frame, ""
    return match["function"], match["path"]


def where_time_goes(collapsed: str, root: tuple[str, str] = ROOT_FUNCTION) -> dict:
    """Inclusive and self sample counts per (function, path) over the stacks that pass through `root`.

    Stacks inside an import (a module that `root` imports lazily: a one-time cost) are counted
    apart, as import_samples, and left out of the shares.

    `collapsed`: py-spy's raw format, a line per distinct stack, `outer;...;inner COUNT`. A frame
    that recurs on one stack counts once for that stack. Root matching is by function name and
    the path's ending.
    """
    inclusive: Counter = Counter()
    innermost: Counter = Counter()
    total = imports = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [frame_key(frame) for frame in stack.split(";")]
        if not any(f == root[0] and p.endswith(root[1]) for f, p in frames):
            continue
        samples = int(count)
        if any(function == IMPORT_FRAME for function, _ in frames):
            imports += samples  # a module imported lazily inside train: a one-time cost
            continue
        total += samples
        for key in set(frames):
            inclusive[key] += samples
        innermost[frames[-1]] += samples
    return {"samples": total, "import_samples": imports, "inclusive": inclusive, "self": innermost}


def table_rows(counts: dict, top: int) -> list[dict]:
    """The `top` functions by inclusive share, without the near-universal frames and the plumbing."""
    total = max(counts["samples"], 1)
    rows = [
        {
            "function": function,
            "path": path,
            "inclusive": counts["inclusive"][(function, path)] / total,
            "self": counts["self"][(function, path)] / total,
        }
        for function, path in counts["inclusive"]
        if counts["inclusive"][(function, path)] / total < NEARLY_ALL and not path.endswith(PLUMBING)
    ]
    rows.sort(key=lambda row: (-row["inclusive"], row["function"]))
    return rows[:top]


def short_path(path: str) -> str:
    """The path from the repository or from site-packages on, for a readable table."""
    for marker in (str(ROOT) + "/", "site-packages/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def markdown(profile: Profile, counts: dict, rows: list[dict], command: str) -> str:
    lines = [
        f"Where the time goes -- {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, "
        f"{platform.node()}, {profile.preset} preset, {profile.num_envs} envs x {profile.num_steps} steps, "
        f"{profile.updates} updates, {profile.torch_threads} torch thread(s); py-spy, "
        f"{counts['samples']} samples inside train() ({counts['import_samples']} more in one-time imports, left out)",
        "",
        f"Command: `{command}`",
        "",
        "| function | file | inclusive | self |",
        "| --- | --- | --- | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row['function']} | {short_path(row['path'])} | {row['inclusive']:.1%} | {row['self']:.1%} |"
        )
    return "\n".join(lines) + "\n"


def run_training(settings: str) -> None:
    """The profiled process: train as the settings say."""
    import torch._dynamo  # noqa: F401  (imported lazily by the optimizer otherwise: seconds of one-time cost)

    from agents.ppo import PRESETS, train

    profile = Profile(**json.loads(settings))
    preset = PRESETS[profile.preset]
    with tempfile.TemporaryDirectory() as run_dir:
        train(
            dataclasses.replace(
                preset,
                env_id=profile.env_id or preset.env_id,
                num_envs=profile.num_envs,
                num_steps=profile.num_steps,
                total_timesteps=profile.updates * profile.num_envs * profile.num_steps,
                rnd_warmup_iterations=1,
                torch_threads=profile.torch_threads,
                device="cpu",
                run_dir=run_dir,
                progress=False,
                checkpoint_interval=10**9,
            )
        )


def main(profile: Profile) -> str:
    from agents.ppo import PRESETS

    if profile.preset not in PRESETS:
        raise SystemExit(f"--preset {profile.preset!r} is unknown; valid presets: {', '.join(PRESETS)}")
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        raise SystemExit("py-spy is not installed: pip install py-spy")
    settings = json.dumps(dataclasses.asdict(profile))
    with tempfile.TemporaryDirectory() as folder:
        raw = Path(folder) / "stacks.txt"
        completed = subprocess.run(
            [py_spy, "record", "--format", "raw", "--rate", str(profile.rate), "--output", str(raw), "--"]
            + [sys.executable, __file__, "_train", settings],
            capture_output=True,
            text=True,
        )
        if completed.returncode != 0 or not raw.exists():
            raise RuntimeError(f"py-spy or the training run failed:\n{completed.stderr[-3000:]}")
        counts = where_time_goes(raw.read_text())
    if counts["samples"] == 0:
        raise RuntimeError(
            "py-spy took no sample inside train(): the run was too short for the sampling rate"
        )
    command = "python benchmarks/profile_training.py " + " ".join(
        f"--{name.replace('_', '-')} {value}"
        for name, value in dataclasses.asdict(profile).items()
        if value is not None and name != "out"
    )
    text = markdown(profile, counts, table_rows(counts, profile.top), command)
    print(text)
    if profile.out:
        Path(profile.out).write_text(text)
    return text


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "_train":
        run_training(sys.argv[2])
    else:
        import tyro

        main(tyro.cli(Profile))
