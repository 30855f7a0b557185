"""Everything the next GPU session measures, in one call: one JSON and one Markdown table.

    bash benchmarks/gpu_session.sh session            # on the device: install carried wheels, then this
    python benchmarks/gpu_session.py --device cuda --out "$OUT"
    python benchmarks/gpu_session.py --device cpu --env-counts 4 8 --num-steps 16 --updates 1 \
        --raw-steps 50 --profile-envs 4 --out /tmp/gpu_session_cpu     # the CPU check, tiny sizes

Phases, each in its own process with its own time budget, so that one slow or crashing phase
(a hung env pool, a compiler that takes too long, CUDA missing) records its error and the next
phase still runs; the JSON and the Markdown are rewritten after every phase, so a call that is
cut off still returns what it measured:
- `environment`: Python, torch, CUDA, GPU, envpool and numpy versions, and whether the ROMs load;
- `raw_envpool`: random-action steps/s of the vector env alone, sync and async (two half
  batches: what the trainer's two env groups can use), at every env count;
- `train_<N>`: PPO+RND training SPS with the preset's hyperparameters at N envs (steady state:
  the first update, allocation and RND's warm-up are left out), and the share of the time spent
  in the PPO update;
- `profile_eager`, `profile_compiled`: torch.profiler over ONE PPO update (the third: the first
  compiles and allocates, the second is timed without the profiler), with `--compile` off and on:
  the top kernels by self device time (on the CPU, ops by self CPU time), the device's busy time,
  the kernel launches and the CPU time in their launch calls, and the time outside torch ops
  (the trainer's Python and the interpreter) against the update's wall time.

The profile wraps `agents.ppo.ppo_update` in the phase's own process (a pass-through that times
and profiles one call; the library has no profiling hook of its own).
"""

from __future__ import annotations

import dataclasses
import datetime
import faulthandler
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

JSON_NAME = "gpu_session.json"
MARKDOWN_NAME = "gpu_session.md"
LOG_NAME = "gpu_session.log"
TOP_KERNELS = 10
LOG_TAIL_LINES = 30
# A phase dumps its stacks this many seconds before its budget runs out, and only when its budget is
# at least STACK_DUMP_MIN_BUDGET_S: faulthandler's timed dump reads the running thread's frames
# without the GIL and can itself crash the phase (seen here: SIGSEGV mid-import, 1 s into a 2 s budget).
STACK_DUMP_LEAD_S = 3.0
STACK_DUMP_MIN_BUDGET_S = 10.0
MIN_PHASE_SECONDS = 5.0  # a phase is skipped when less than this is left of the total budget
# the CUDA runtime and driver calls that put work on the device (their CPU time is launch overhead)
LAUNCH_CALLS = (
    "cudaLaunchKernel",
    "cuLaunchKernel",
    "cudaLaunchKernelExC",
    "cuLaunchKernelEx",
    "cudaMemcpyAsync",
)


@dataclass
class Session:
    device: str = "cuda"
    """training device ('cuda' on the GPU machine, 'cpu' for the CPU check)"""
    out: str | None = None
    """folder for gpu_session.json, gpu_session.md and gpu_session.log (default: $OUT, else
    benchmarks/gpu_session_out)"""
    env_id: str = "MontezumaRevenge-v5"
    """environment of every phase"""
    preset: str = "paper"
    """training hyperparameters (agents.ppo.PRESETS) apart from the env count and rollout length"""
    env_counts: tuple[int, ...] = (128, 256)
    """env counts of the raw and training phases (one train_<N> phase each)"""
    num_steps: int = 128
    """steps per env per rollout"""
    updates: int = 8
    """timed PPO updates per training phase, after one untimed"""
    raw_steps: int = 1000
    """random-action steps per env in the raw phase (per env count, sync and async each)"""
    profile_envs: int = 128
    """env count of the profiled update"""
    torch_threads: int = 0
    """CPU threads for torch (0: torch's default)"""
    phases: tuple[str, ...] | None = None
    """phases to run (default: all); e.g. --phases environment raw_envpool train_128"""
    total_budget: float = 480.0
    """seconds for the whole session; a phase gets at most what is left (the device call allows 600,
    installing the wheels takes some)"""
    budget_environment: float = 60.0
    """seconds for the environment phase"""
    budget_raw: float = 90.0
    """seconds for the raw envpool phase (all env counts)"""
    budget_train: float = 110.0
    """seconds for each train_<N> phase"""
    budget_profile_eager: float = 70.0
    """seconds for the profile without torch.compile"""
    budget_profile_compiled: float = 150.0
    """seconds for the profile with torch.compile (compilation included)"""


# --- the phases, each run in its own process -------------------------------------------------------


def phase_environment(session: Session) -> dict[str, Any]:
    import numpy as np
    import torch

    import envs

    figures: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "cpu_count": os.cpu_count(),
        "cuda_available": torch.cuda.is_available(),
        "envpool_assets_path": os.environ.get("ENVPOOL_ASSETS_PATH", ""),
    }
    if torch.cuda.is_available():
        figures["cuda"] = torch.version.cuda
        figures["gpu"] = torch.cuda.get_device_name(0)
        figures["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    try:
        import envpool

        figures["envpool"] = envpool.__version__
    except ImportError as exc:
        figures["envpool"] = f"missing: {exc}"
    venv = envs.make(session.env_id, num_envs=2, seed=0)  # raises if the ROM or envpool is missing
    obs, _ = venv.reset()
    figures["obs_shape"] = list(obs.shape)
    venv.close()
    return figures


def phase_raw_envpool(session: Session) -> dict[str, Any]:
    from bench_training import raw_sps

    figures: dict[str, Any] = {}
    for n in session.env_counts:
        figures[f"raw_sync_sps_{n}"] = round(
            raw_sps(session.env_id, n, session.raw_steps, asynchronous=False)
        )
        figures[f"raw_async_sps_{n}"] = round(
            raw_sps(session.env_id, n, session.raw_steps, asynchronous=True)
        )
    return figures


def training_config(session: Session, num_envs: int, updates: int, run_dir: str, compile_policy: bool):
    """The preset's config at `num_envs` envs, `updates` updates, one warm-up rollout, no progress bar."""
    from agents.ppo import PRESETS

    preset = PRESETS[session.preset]
    return dataclasses.replace(
        preset,
        env_id=session.env_id,
        num_envs=num_envs,
        num_steps=session.num_steps,
        total_timesteps=updates * num_envs * session.num_steps,
        device=session.device,
        run_dir=run_dir,
        rnd_warmup_iterations=1,
        progress=False,
        checkpoint_interval=10**9,
        compile=compile_policy,
        torch_threads=session.torch_threads,
    )


def phase_train(session: Session, num_envs: int) -> dict[str, Any]:
    from agents.ppo import train

    total_updates = session.updates + 1
    with tempfile.TemporaryDirectory() as run_dir:
        config = training_config(session, num_envs, total_updates, run_dir, compile_policy=False)
        start = time.perf_counter()
        result = train(config)
        wall = time.perf_counter() - start
    return {
        "num_envs": num_envs,
        "updates": total_updates,
        "device": result["device"],
        "steady_sps": round(result["steady_sps"], 1),
        "sps_all_updates": result["charts/SPS"],
        "update_seconds_per_update": round(result["update_seconds"] / total_updates, 4),
        "wall_seconds": round(wall, 2),
    }


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _union_us(intervals: list[tuple[float, float]]) -> float:
    """Total length of a union of [start, end) intervals (overlapping ops or kernels counted once)."""
    total, current_end = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end <= current_end:
            continue
        total += end - max(start, current_end)
        current_end = end
    return total


OP_PARTS = ("backward", "optimizer", "forward_and_other")


def op_part(name: str) -> str:
    """Which part of an update a top-level op belongs to, by the names torch's profiler gives them."""
    if name.startswith("autograd::engine::evaluate_function"):
        return "backward"
    if name.startswith("Optimizer."):  # Optimizer.step#Adam.step, Optimizer.zero_grad#Adam.zero_grad
        return "optimizer"
    return "forward_and_other"  # forward passes, losses, gradient clipping, indexing


def summarize_profile(prof: Any, wall_s: float, on_cuda: bool) -> dict[str, Any]:
    """Where one update's time goes, from a torch.profiler run over it.

    - device_busy_ms: the union of the kernels' intervals on the GPU; on the CPU the CPU is the
      device, and it is the union of the top-level torch ops' intervals.
    - torch_ops_ms: the union of the top-level CPU op intervals (every thread): time inside torch,
      kernel launches included. outside_ops_ms = wall - torch_ops_ms: the trainer's Python, the
      interpreter, and waits outside any op. ops_<part>_ms splits torch_ops_ms into the backward
      pass, the optimizer, and the rest (forward passes, losses, clipping), on the CPU side.
    - launch_calls / launch_api_ms: the CUDA launch and async-copy calls and their CPU time.
    - top: the TOP_KERNELS kernels (CPU: ops) by self device (CPU: self CPU) time.
    """
    from torch.autograd import DeviceType

    events = prof.events()
    cpu_events = [e for e in events if e.device_type == DeviceType.CPU]
    top_level = [e for e in cpu_events if e.cpu_parent is None]
    torch_ops_us = _union_us([(e.time_range.start, e.time_range.end) for e in top_level])
    parts_us = {
        part: _union_us(
            [(e.time_range.start, e.time_range.end) for e in top_level if op_part(e.name) == part]
        )
        for part in OP_PARTS
    }
    kernels = [(e.time_range.start, e.time_range.end) for e in events if e.device_type == DeviceType.CUDA]
    launches = [e for e in cpu_events if e.name in LAUNCH_CALLS]
    device_busy_us = _union_us(kernels) if on_cuda else torch_ops_us

    def self_us(row: Any) -> float:
        return row.self_device_time_total if on_cuda else row.self_cpu_time_total

    rows = [row for row in prof.key_averages() if self_us(row) > 0]
    if on_cuda:
        rows = [row for row in rows if row.device_type == DeviceType.CUDA]
    rows.sort(key=self_us, reverse=True)
    total_self = sum(self_us(row) for row in rows) or 1.0
    wall_ms = wall_s * 1e3
    return {
        "profiled_wall_ms": round(wall_ms, 2),
        "device_busy_ms": round(device_busy_us / 1e3, 2),
        "device_idle_share": round(max(0.0, 1.0 - device_busy_us / 1e3 / wall_ms), 3),
        "torch_ops_ms": round(torch_ops_us / 1e3, 2),
        "outside_ops_ms": round(max(0.0, wall_ms - torch_ops_us / 1e3), 2),
        "outside_ops_share": round(max(0.0, 1.0 - torch_ops_us / 1e3 / wall_ms), 3),
        **{f"ops_{part}_ms": round(us / 1e3, 2) for part, us in parts_us.items()},
        "kernel_launches": len(kernels) if on_cuda else 0,
        "launch_calls": len(launches),
        "launch_api_ms": round(sum(e.self_cpu_time_total for e in launches) / 1e3, 2),
        "top": [
            {
                "name": row.key[:120],
                "calls": row.count,
                "self_ms": round(self_us(row) / 1e3, 3),
                "share": round(self_us(row) / total_self, 3),
            }
            for row in rows[:TOP_KERNELS]
        ],
    }


def phase_profile(session: Session, compile_policy: bool) -> dict[str, Any]:
    """Profile the third PPO update of a short run (1: compile/allocate, 2: timed, 3: profiled)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    import agents.ppo as ppo

    if not callable(getattr(ppo, "ppo_update", None)):
        raise RuntimeError("agents.ppo.ppo_update is gone: the profile needs the PPO update as a function")
    device = ppo.resolve_device(session.device)
    on_cuda = device.type == "cuda"
    original = ppo.ppo_update
    timed: dict[str, Any] = {}
    calls = 0

    def timed_update(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            return original(*args, **kwargs)
        _sync(device)
        start = time.perf_counter()
        if calls == 2:
            result = original(*args, **kwargs)
            _sync(device)
            timed["update_wall_ms"] = round((time.perf_counter() - start) * 1e3, 2)
            return result
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
        with profile(activities=activities) as prof:
            result = original(*args, **kwargs)
            _sync(device)
        timed["profile"] = (prof, time.perf_counter() - start)
        return result

    ppo.ppo_update = timed_update
    try:
        with tempfile.TemporaryDirectory() as run_dir:
            config = training_config(session, session.profile_envs, 3, run_dir, compile_policy)
            ppo.train(config)
    finally:
        ppo.ppo_update = original
    if "profile" not in timed:
        raise RuntimeError(f"the run made {calls} PPO updates, expected 3")
    prof, wall = timed.pop("profile")
    samples = session.profile_envs * session.num_steps
    return {
        "num_envs": session.profile_envs,
        "compile": compile_policy,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "samples_per_update": samples,
        "minibatches_per_update": config.update_epochs * config.num_minibatches,
        **timed,
        **summarize_profile(prof, wall, on_cuda),
    }


def phase_table(session: Session) -> dict[str, tuple[Callable[[], dict[str, Any]], float]]:
    """Every phase: (what it runs, its time budget in seconds), in running order."""
    table: dict[str, tuple[Callable[[], dict[str, Any]], float]] = {
        "environment": (lambda: phase_environment(session), session.budget_environment),
        "raw_envpool": (lambda: phase_raw_envpool(session), session.budget_raw),
    }
    for n in session.env_counts:
        table[f"train_{n}"] = (lambda n=n: phase_train(session, n), session.budget_train)
    table["profile_eager"] = (lambda: phase_profile(session, False), session.budget_profile_eager)
    table["profile_compiled"] = (lambda: phase_profile(session, True), session.budget_profile_compiled)
    return table


def run_phase_here(name: str, settings: str, result_path: str, budget: str) -> None:
    """The phase process: run one phase and write {"result": ...} or {"error": ...} to result_path."""
    # the stacks go to the log shortly before the driver kills a phase that outruns its budget
    if float(budget) >= STACK_DUMP_MIN_BUDGET_S:
        faulthandler.dump_traceback_later(float(budget) - STACK_DUMP_LEAD_S, exit=False)
    session = Session(**{k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(settings).items()})
    if session.torch_threads > 0:
        import torch

        torch.set_num_threads(session.torch_threads)
    try:
        outcome: dict[str, Any] = {"result": phase_table(session)[name][0]()}
    except Exception as exc:  # recorded in the session's JSON; the next phase still runs
        outcome = {"error": f"{type(exc).__name__}: {exc}"}
    Path(result_path).write_text(json.dumps(outcome))


# --- the driver ----------------------------------------------------------------------------------


def run_phase(name: str, session: Session, budget: float, log: Path) -> dict[str, Any]:
    """Run one phase in a fresh process within `budget` seconds; its status, time and result or error."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        result_path = handle.name
    settings = json.dumps(dataclasses.asdict(session))
    command = [sys.executable, __file__, "_phase", name, settings, result_path, str(budget)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    with log.open("a") as log_file:
        log_start = log_file.tell()
        log_file.write(
            f"\n===== {name} (budget {budget:.0f} s) {datetime.datetime.now().isoformat()} =====\n"
        )
        log_file.flush()
        # a session of its own, so that a timeout ends the phase's env threads and compiler workers too
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        try:
            returncode = process.wait(timeout=budget)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            returncode = None
    seconds = round(time.perf_counter() - start, 1)
    record: dict[str, Any] = {"budget_s": round(budget, 1), "seconds": seconds}
    text = Path(result_path).read_text() if Path(result_path).exists() else ""
    Path(result_path).unlink(missing_ok=True)
    dump_was_due = budget >= STACK_DUMP_MIN_BUDGET_S and seconds >= budget - STACK_DUMP_LEAD_S
    if returncode is None:
        record.update(status="timeout", error=f"stopped after its budget of {budget:.0f} s")
    elif returncode < 0 and not text and dump_was_due:  # the phase was about to be stopped anyway
        record.update(
            status="timeout",
            error=f"stopped after its budget of {budget:.0f} s "
            f"(it died of signal {-returncode} while its stacks were dumped)",
        )
    elif not text:
        record.update(status="error", error=f"the phase process exited with code {returncode}")
    else:
        outcome = json.loads(text)
        if "error" in outcome:
            record.update(status="error", error=outcome["error"])
        else:
            record.update(status="ok", result=outcome["result"])
    if record["status"] != "ok":  # what the phase printed last (with the stacks, after a timeout)
        with log.open() as log_file:
            log_file.seek(log_start)
            record["log_tail"] = log_file.read().splitlines()[-LOG_TAIL_LINES:]
    return record


def markdown(report: dict[str, Any]) -> str:
    """One table: a row per figure of every phase, and a row per phase that failed."""
    lines = [
        f"GPU session {report['started']} -- device {report['session']['device']}, "
        f"{report['session']['env_id']}, preset {report['session']['preset']}",
        "",
        "| phase | status (s / budget) | figure | value |",
        "| --- | --- | --- | --- |",
    ]
    for name, record in report["phases"].items():
        status = f"{record['status']} ({record.get('seconds', 0)} / {record.get('budget_s', 0)})"
        if record["status"] != "ok":
            lines.append(f"| {name} | {status} | error | {str(record.get('error', '')).replace('|', '/')} |")
            continue
        for key, value in record["result"].items():
            if key == "top":
                for rank, row in enumerate(value, 1):
                    figure = f"top {rank}: {row['name'].replace('|', '/')}"
                    lines.append(
                        f"| {name} | {status} | {figure} | {row['self_ms']} ms, {row['calls']} calls, "
                        f"{row['share']:.1%} |"
                    )
                continue
            shown = f"{value:,}" if isinstance(value, int | float) and not isinstance(value, bool) else value
            lines.append(f"| {name} | {status} | {key} | {shown} |")
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], out: Path) -> None:
    (out / JSON_NAME).write_text(json.dumps(report, indent=2))
    (out / MARKDOWN_NAME).write_text(markdown(report))


def main(session: Session) -> dict[str, Any]:
    table = phase_table(session)
    names = list(session.phases or table)
    unknown = [name for name in names if name not in table]
    if unknown:
        raise SystemExit(f"--phases {' '.join(unknown)}: unknown; valid phases: {', '.join(table)}")
    out = Path(session.out or os.environ.get("OUT") or ROOT / "benchmarks" / "gpu_session_out")
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "session": dataclasses.asdict(session),
        "phases": {},
    }
    deadline = time.perf_counter() + session.total_budget
    for name in names:
        left = deadline - time.perf_counter()
        budget = min(table[name][1], left)
        if left < MIN_PHASE_SECONDS:
            report["phases"][name] = {"status": "skipped", "error": "the session's total budget is spent"}
        else:
            print(f"[gpu_session] {name}: budget {budget:.0f} s", flush=True)
            report["phases"][name] = run_phase(name, session, budget, out / LOG_NAME)
            print(f"[gpu_session] {name}: {report['phases'][name]['status']}", flush=True)
        write_report(report, out)  # after every phase: a call cut off still returns what it measured
    print(markdown(report))
    return report


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "_phase":
        run_phase_here(*sys.argv[2:])
    else:
        import tyro

        main(tyro.cli(Session))
