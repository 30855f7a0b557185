"""Data-parallel training on torch.distributed, launched by torchrun; a no-op in a single process.

    torchrun --nproc-per-node 2 -m explore train --preset quick      # 2 ranks on one machine
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 ...

`setup(device)` reads torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
MASTER_ADDR/PORT), starts the default process group (nccl on cuda, gloo on cpu) and returns a
`DistContext`. Without WORLD_SIZE (a plain `python`/`explore` run) it returns the single-process
context: every helper below is then the identity, so the trainer has one code path.

All communication goes through torch.distributed collectives; nothing here opens a socket.

What each helper is for:
- `all_reduce_gradients`: the PPO update's gradient sum, ONE all-reduce over a flat buffer per
  dtype (not a call per parameter); parameters without a gradient on every rank stay without one.
- `all_reduce_sum_`: scalars packed in one tensor (sample counts, loss sums, logging sums).
- `all_reduce_moments`: (mean, var, count) of each rank's batch -> the moments of the union
  (RunningMeanStd calls it when marked with `mark_for_sync`).
- `all_gather_variable`: tensors whose leading dim differs per rank (finished episodes, count keys).
- `merge_cells` / `merge_cell_dicts`: a dict of cells merged across ranks, the best score winning
  (the Go-Explore archive's per-iteration merge).
- `shard`: a deterministic split of a list of work items by rank (bandit instances).
- `broadcast_module_`, `broadcast_object`: rank 0's initial weights / run directory / checkpoint.

Consistency rules (see docs/distributed.md): everything that is GLOBAL (weights, optimizer
state, running statistics, count tables) is updated on every rank from the same reduced data, so
it stays bit-identical without being re-broadcast; everything RANK-LOCAL (environments, episodic
memories, the per-env discounted-return carry) is never communicated.

Communication time is accumulated in `comm_seconds()` (with `EXPLORE_PROFILE_COMM=1` each
collective is bracketed by a device synchronization so that GPU time is counted honestly).
"""

from __future__ import annotations

import datetime
import os
import time
import warnings
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)

BACKEND_ENV = "EXPLORE_DIST_BACKEND"
"""overrides the backend chosen by `setup` (nccl on cuda, gloo on cpu or when ranks share a GPU)"""
PROFILE_ENV = "EXPLORE_PROFILE_COMM"
"""set to 1 to synchronize the device around each collective, so `comm_seconds()` includes GPU time"""


# --- communication timing ---------------------------------------------------------------------

_comm = {"seconds": 0.0, "calls": 0}


def comm_seconds() -> float:
    """Seconds spent in this module's collectives since the process started (or `reset_comm_stats`)."""
    return _comm["seconds"]


def comm_calls() -> int:
    return int(_comm["calls"])


def reset_comm_stats() -> None:
    _comm["seconds"], _comm["calls"] = 0.0, 0


@contextmanager
def _timed(device: torch.device | None = None) -> Iterator[None]:
    sync = os.environ.get(PROFILE_ENV) == "1" and device is not None and device.type == "cuda"
    if sync:
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    try:
        yield
    finally:
        if sync:
            torch.cuda.synchronize(device)
        _comm["seconds"] += time.perf_counter() - start
        _comm["calls"] += 1


# --- the process group ------------------------------------------------------------------------


def is_active() -> bool:
    """True when a process group of more than one rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def env_world_size() -> int:
    """WORLD_SIZE as torchrun sets it (1 without torchrun), readable before any group starts."""
    return int(os.environ.get("WORLD_SIZE", "1"))


@dataclass
class DistContext:
    """Where this process stands in the job. The single-process context has rank 0 of 1."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None
    owns_group: bool = False  # setup() started the group, so close() ends it

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that logs, prints and writes checkpoints."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.active:
            with _timed(self.device):
                if self.backend == "nccl":
                    dist.barrier(device_ids=[self.device.index or 0])
                else:
                    dist.barrier()

    def broadcast_object(self, obj: T) -> T:
        """Rank 0's `obj` on every rank (pickled through torch.distributed)."""
        if not self.active:
            return obj
        box = [obj if self.is_main else None]
        with _timed(self.device):
            dist.broadcast_object_list(box, src=0, device=self.device if self.backend == "nccl" else None)
        return box[0]

    def all_gather_object(self, obj: T) -> list[T]:
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world_size
        with _timed(self.device):
            dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        """End the process group if `setup` started it (waiting for every rank first)."""
        if self.owns_group and dist.is_initialized():
            try:
                self.barrier()
            finally:
                dist.destroy_process_group()
            self.owns_group = False


def choose_backend(device: torch.device, local_world_size: int) -> str:
    """nccl for one GPU per rank; gloo on cpu, and when ranks share a GPU (NCCL refuses that)."""
    override = os.environ.get(BACKEND_ENV)
    if override:
        return override
    if device.type != "cuda":
        return "gloo"
    if local_world_size > torch.cuda.device_count() or not dist.is_nccl_available():
        return "gloo"
    return "nccl"


def rank_device(device: torch.device, local_rank: int, world_size: int) -> torch.device:
    """The device of this rank: with several ranks, cuda means cuda:(LOCAL_RANK mod #GPUs)."""
    if device.type == "cuda" and world_size > 1:
        return torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
    return device


def setup(device: torch.device | str = "cpu", timeout_s: float = 1800.0) -> DistContext:
    """The context of this process; starts the process group when torchrun launched several ranks.

    An already started group (e.g. `init_process_group` called by a test or an outer launcher) is
    used as it is and left running at `close()`.
    """
    device = torch.device(device)
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        device = rank_device(device, local_rank, world)
        return DistContext(rank, world, local_rank, local_world, device, dist.get_backend(), owns_group=False)
    world = env_world_size()
    if world <= 1:
        return DistContext(device=device)
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    device = rank_device(device, local_rank, world)
    backend = choose_backend(device, local_world)
    kwargs: dict[str, Any] = {}
    if device.type == "cuda":
        torch.cuda.set_device(device)
        if backend == "nccl":
            kwargs["device_id"] = device
    dist.init_process_group(
        backend, rank=rank, world_size=world, timeout=datetime.timedelta(seconds=timeout_s), **kwargs
    )
    return DistContext(rank, world, local_rank, local_world, device, backend, owns_group=True)


# --- collectives on tensors --------------------------------------------------------------------


def all_reduce_sum_(tensor: Tensor) -> Tensor:
    """Sum `tensor` over ranks in place (identity in a single process); returns it."""
    if is_active():
        with _timed(tensor.device):
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_gradients(parameters: Iterable[nn.Parameter]) -> None:
    """Sum the gradients of `parameters` over ranks: one all-reduce of one flat buffer per dtype.

    Each rank's loss is its share of the global loss (local sums / GLOBAL counts), so the sum of
    the gradients is the gradient of the global loss, and every rank ends with the same `.grad`.
    A parameter that has no gradient on one rank contributes zeros there; it gets the summed
    gradient on every rank if any rank had one, and stays None if none had.
    """
    if not is_active():
        return
    params = [p for p in parameters if p.requires_grad]
    groups: dict[tuple[torch.dtype, torch.device], list[nn.Parameter]] = {}
    for p in params:
        groups.setdefault((p.dtype, p.device), []).append(p)
    for (dtype, device), group in groups.items():
        present = torch.tensor([p.grad is not None for p in group], dtype=dtype, device=device)
        pieces = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in group]
        flat = torch.cat([*pieces, present])
        with _timed(device):
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        # every gradient present here means present in the sum (no host sync); else read the flags
        local_all = all(p.grad is not None for p in group)
        flags = [1.0] * len(group) if local_all else flat[-len(group) :].tolist()
        offset = 0
        for p, flag in zip(group, flags, strict=True):
            n = p.numel()
            if flag > 0:
                grad = flat[offset : offset + n].view_as(p)
                if p.grad is None:
                    p.grad = grad.clone()
                else:
                    p.grad.copy_(grad)
            offset += n


def all_reduce_moments(mean: Tensor, var: Tensor, count: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The (mean, population variance, count) of the union of every rank's batch.

    Two small all-reduces in the dtype given (float64 in RunningMeanStd): first the counts and
    sums, then the squared deviations from the GLOBAL mean, which is exact (no E[x^2] - E[x]^2
    cancellation). `count` may be a scalar or broadcast against `mean`. A union with no sample
    gives count 0, mean 0, var 0 (merging it changes nothing).
    """
    if not is_active():
        return mean, var, count
    count_b = torch.broadcast_to(count, mean.shape)
    sums = torch.cat([count_b.reshape(-1), (mean * count_b).reshape(-1)])
    all_reduce_sum_(sums)
    total, total_sum = sums.chunk(2)
    total, total_sum = total.view(mean.shape), total_sum.view(mean.shape)
    global_mean = total_sum / total.clamp(min=1.0)
    m2 = ((var + (mean - global_mean) ** 2) * count_b).contiguous()
    all_reduce_sum_(m2)
    global_var = m2 / total.clamp(min=1.0)
    return global_mean, global_var, total


def all_gather_variable(tensor: Tensor) -> list[Tensor]:
    """Every rank's `tensor`, in rank order; leading dims may differ, trailing dims must agree.

    Two collectives: the sizes, then the data padded to the largest. Single process: [tensor].
    """
    if not is_active():
        return [tensor]
    world = dist.get_world_size()
    device = tensor.device
    size = torch.tensor([tensor.shape[0]], dtype=torch.int64, device=device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    with _timed(device):
        dist.all_gather(sizes, size)
    lengths = [int(s) for s in sizes]
    longest = max(lengths)
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    gathered = [torch.empty_like(padded) for _ in range(world)]
    with _timed(device):
        dist.all_gather(gathered, padded.contiguous())
    return [g[:n] for g, n in zip(gathered, lengths, strict=True)]


def broadcast_module_(module: nn.Module, src: int = 0) -> None:
    """Copy rank `src`'s parameters and floating-point buffers into every rank's `module` (once, at
    the start). Integer and boolean buffers (count tables, reset flags) start equal or rank-local."""
    if not is_active():
        return
    with torch.no_grad():
        tensors = [*module.parameters(), *(b for b in module.buffers() if b.is_floating_point())]
        for tensor in tensors:
            if tensor.numel():
                with _timed(tensor.device):
                    dist.broadcast(tensor.data, src=src)


# --- global state: statistics, counts, archives, work partitions --------------------------------


def mark_for_sync(module: nn.Module) -> int:
    """Mark every submodule that can keep its state global (RunningMeanStd, GlobalCount) for sync.

    They declare it with an attribute `sync_across_ranks`; once True, their updates merge the data
    of all ranks whenever a process group is active. Returns how many were marked.
    """
    marked = 0
    for m in module.modules():
        if hasattr(m, "sync_across_ranks"):
            m.sync_across_ranks = True
            marked += 1
    return marked


def reset_rank_local_state(module: nn.Module) -> int:
    """Re-initialize the rank-local carries (modules with `rank_local = True` and a `reset_carry()`).

    Used on resume when they cannot be restored for this rank (several ranks saved, or a different
    number of ranks resumes): the checkpoint holds rank 0's carry only. Returns how many were reset.
    """
    reset = 0
    for m in module.modules():
        if getattr(m, "rank_local", False) and hasattr(m, "reset_carry"):
            m.reset_carry()
            reset += 1
    return reset


def merge_cell_dicts(
    cell_dicts: Sequence[dict[K, T]], score: Callable[[T], Any] = lambda cell: cell["score"]
) -> dict[K, T]:
    """The union of several cell dicts; where a key appears more than once the best `score` wins.

    `score` returns anything comparable; larger is better (Go-Explore: `(score, -trajectory_length)`
    so that among equal scores the shorter trajectory wins). Ties keep the first dict's cell, so
    the result is the same whatever rank computes it. Keys come out in first-seen order.
    """
    merged: dict[K, T] = {}
    best: dict[K, Any] = {}
    for cells in cell_dicts:
        for key, cell in cells.items():
            s = score(cell)
            if key not in merged or s > best[key]:
                merged[key], best[key] = cell, s
    return merged


def merge_cells(
    cells: dict[K, T],
    score: Callable[[T], Any] = lambda cell: cell["score"],
    context: DistContext | None = None,
) -> dict[K, T]:
    """Every rank's `cells` merged, best score winning, identical on every rank.

    Pass the cells added or improved since the last merge to keep the traffic small, then merge
    the result into the local archive with `merge_cell_dicts([archive, merged], score)`.
    Gathers with `all_gather_object` (the cells may hold trajectories of any type).
    """
    if context is not None:
        gathered = context.all_gather_object(cells)
    elif is_active():
        gathered = [None] * dist.get_world_size()
        with _timed():
            dist.all_gather_object(gathered, cells)
    else:
        gathered = [cells]
    return merge_cell_dicts(gathered, score)


def shard(items: Sequence[T], rank: int | None = None, world_size: int | None = None) -> list[T]:
    """This rank's share of `items`: items[rank::world_size] (round robin, disjoint, covering all).

    The bandit suite partitions its instances this way: each rank runs its own instances, and the
    per-instance results are gathered (all_gather_object) on rank 0 for the summary.
    """
    rank = get_rank() if rank is None else rank
    world_size = get_world_size() if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    return list(items[rank::world_size])


def warn_main(message: str) -> None:
    """A warning printed by rank 0 only."""
    if get_rank() == 0:
        warnings.warn(message, stacklevel=2)
