"""PPO with two value heads (extrinsic, intrinsic) and an intrinsic bonus, on cpu or cuda.

Read it top to bottom: config, validation, then `train`, which sets up, collects a rollout,
scores it with the bonus, assigns credit, and updates. Design choices for speed:
- the envs are split into `env_groups` groups stepped asynchronously: while one group
  simulates on envpool's threads, the policy runs for the next group;
- rollout buffers live on the device; the only host sync per step is the action copy that
  the environments need; episode statistics are accumulated on the device and read once
  per update;
- the bonus scores the whole rollout in one batched pass after collection.

Under `torchrun --nproc-per-node N` (several GPUs or machines) the same code runs data-parallel:
each rank steps its own `num_envs` environments (seeds offset by rank), the PPO update
(`ppo_update`) sums gradients over ranks, the bonus's global statistics and count tables are
merged across ranks, and rank 0 alone logs and writes checkpoints. See explore/distributed.py
and docs/distributed.md; without torchrun every collective is the identity.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
import tyro
from torch import Tensor, nn
from torch.distributions import Categorical
from tqdm import tqdm

import envs as env_registry
from agents.grid_networks import NETWORKS, make_policy
from agents.ppo_loss import masked_mean, ppo_loss
from agents.rollout import RolloutBuffer, as_policy_step
from envs.metrics import DistinctIds
from envs.registration import EnvSuite
from explore import distributed
from explore.bonus import BonusModule
from explore.checkpoint import Checkpointer, resolve_resume, save_config
from explore.combine import (
    BonusContext,
    BonusSettings,
    bonus_names,
    build_bonus,
    check_bonus,
    check_bonus_reads,
)
from explore.credit import rollout_advantages
from explore.device import resolve_device
from explore.distributed import DistContext
from explore.errors import ConfigError
from explore.logger import Logger
from explore.obs import Obs, map_obs
from explore.progress import progress_fields
from explore.system import env_threads, set_torch_threads

BONUS_HELP = (
    f"intrinsic bonus expression: a name ({', '.join(bonus_names())}), a product of an episodic and a "
    "global bonus (e3b*rnd, e3b*noveld), a sum with coefficients (count_e+0.5*rnd), or 'none'"
)


@dataclass
class ExperimentSettings:
    """The flags most runs set, first in `explore train --help`: Config lists this base's fields before
    the bonus flags it inherits from BonusSettings (a dataclass lists its last base's fields first)."""

    env_id: str = "MontezumaRevenge-v5"
    """environment id (`explore list-envs` lists them; `Explore/` prefix optional)"""
    total_timesteps: int = 2_000_000_000
    """total agent steps over all envs (of all ranks under torchrun)"""
    seed: int = 1
    """seed of torch, numpy and the environments (under torchrun, rank r seeds its envs from
    seed + r * num_envs and its sampling from seed + r)"""
    run_dir: str | None = None
    """where TensorBoard logs, config.json and checkpoint.pt go; None: runs/<env>__<bonus>__<seed>__<time>"""
    preset: Literal["paper", "quick", "minihack", "minigrid", "minigrid-fast", "deepsea"] = "paper"
    """defaults to start from: 'paper' (RND on Atari, 128 envs, for a GPU), 'quick' (the same, a few minutes on
    a CPU), 'minihack' or 'minigrid' (E3B settings for the grid suites)"""
    bonus: Annotated[str, tyro.conf.arg(help=BONUS_HELP)] = "rnd"
    """BONUS_HELP: an intrinsic bonus expression over the registered bonus names, or 'none'"""
    device: str = "auto"
    """'auto' (cuda when available), 'cpu', 'cuda' or 'cuda:N'"""
    resume: str | None = None
    """a run directory to resume from its last checkpoint, with its saved config (flags given here override it)"""
    checkpoint_interval: int = 10
    """save a checkpoint every this many updates (and at the end)"""
    progress: bool = True
    """show a progress bar with SPS and the latest return"""


@dataclass
class Config(
    BonusSettings, ExperimentSettings
):  # the bonus flags (--update-proportion, ...) come from the bonuses
    """PPO with an intrinsic bonus (default: PPO + RND on Montezuma's Revenge, the RND paper's settings)."""

    # --- environments ---
    num_envs: int = 128
    """number of parallel environments PER PROCESS: under torchrun each rank runs this many, so a step
    of the job is num_envs * WORLD_SIZE env steps and the batch of an update num_envs * num_steps * WORLD_SIZE"""
    env_groups: int = 2
    """split the envs into this many groups stepped asynchronously (overlaps simulation with inference)"""
    sticky_action_prob: float = 0.25
    """probability of repeating the previous action (Atari)"""
    max_episode_steps: int | None = None
    """episode cut in agent steps (default: the suite's own; Atari: 4500 = 18000 frames, as in RND)"""
    full_action_space: bool = True
    """use all 18 Atari actions"""

    # --- PPO ---
    num_steps: int = 128
    """steps per env per rollout"""
    learning_rate: float = 1e-4
    """Adam learning rate"""
    anneal_lr: bool = False
    """anneal the learning rate linearly to 0"""
    gamma: float = 0.999
    """discount of the extrinsic (episodic) stream"""
    int_gamma: float = 0.99
    """discount of the intrinsic stream"""
    int_episodic: bool = False
    """cut the intrinsic stream at episode ends (episodic bonuses such as E3B); RND's is non-episodic"""
    gae_lambda: float = 0.95
    """GAE lambda for both streams"""
    num_minibatches: int = 4
    """minibatches per epoch"""
    update_epochs: int = 4
    """epochs over each rollout"""
    norm_adv: bool = True
    """normalize advantages per minibatch"""
    clip_coef: float = 0.1
    """PPO ratio clipping"""
    ent_coef: float = 0.001
    """entropy bonus coefficient"""
    vf_coef: float = 1.0
    """value loss coefficient (the loss is 0.5 * squared error, summed over both heads)"""
    max_grad_norm: float = 0.5
    """gradient norm clip"""
    ext_coef: float = 2.0
    """weight of the extrinsic advantage"""
    int_coef: float = 1.0
    """weight of the intrinsic advantage"""
    reward_clip: float = 1.0
    """clip extrinsic rewards to [-reward_clip, reward_clip] for learning (returns are logged unclipped)"""

    # --- policy ---
    use_lstm: bool = False
    """an LSTM core in the policy (MiniGrid/MiniHack policies; minibatches then hold whole env sequences)"""
    network: Literal["default", "compact"] = "default"
    """the policy network: 'default' (per space, agents.grid_networks.make_policy) or 'compact' (MiniGrid/BabyAI:
    a few small convolutions, as rl-starter-files; the fast CPU path)"""

    # --- speed ---
    amp: bool = True
    """bf16 autocast for network forward passes on cuda"""
    cpu_bf16: bool = False
    """bf16 autocast for network forward passes on the CPU too (oneDNN's AMX / AVX512-BF16 kernels: 1.5-2x
    faster convolutions where the CPU has them, slower where it has not); off by default, as it changes
    the numerics (benchmarks/compare_cpu_bf16.py compares the loss curves)"""
    compile: bool = False
    """torch.compile the policy"""
    torch_threads: int = 0
    """CPU threads for torch (0: the usable CPUs less the env threads, at least 1; logged at start).
    torch's own default oversubscribes the cores the env threads use (18 -> 158 SPS on 2 cores)"""

    @property
    def batch_size(self) -> int:
        """samples per update of ONE rank (times WORLD_SIZE under torchrun)"""
        return self.num_envs * self.num_steps

    @property
    def minibatch_size(self) -> int:
        return self.batch_size // self.num_minibatches

    @property
    def num_updates(self) -> int:
        return self.total_timesteps // self.batch_size


PRESETS: dict[str, Config] = {
    "paper": Config(),
    "quick": Config(
        preset="quick",
        num_envs=8,
        num_steps=128,
        total_timesteps=49_152,
        rnd_warmup_iterations=4,
        checkpoint_interval=8,
        device="cpu",
    ),
}
# Henaff et al. 2023 compare bonuses on MiniHack with intrinsic coefficient 1.0; PPO settings in the
# range CleanRL uses for grid worlds. The intrinsic stream of an episodic bonus is episodic.
PRESETS["minihack"] = Config(
    preset="minihack",
    env_id="MiniHack-MultiRoom-N4-Locked-v0",
    bonus="e3b",
    total_timesteps=50_000_000,
    num_envs=32,
    learning_rate=3e-4,
    gamma=0.99,
    int_episodic=True,
    clip_coef=0.2,
    ent_coef=0.01,
    ext_coef=1.0,
    int_coef=1.0,
    vf_coef=0.5,
)
PRESETS["minigrid"] = dataclasses.replace(
    PRESETS["minihack"], preset="minigrid", env_id="MiniGrid-DoorKey-8x8-v0", total_timesteps=10_000_000
)
# the fast grid-world path on a CPU (benchmarks/bench_grid.py): the compact rl-starter-files network, PPO
# without a bonus, 64 envs in two async groups, rl-starter-files' learning rate
PRESETS["minigrid-fast"] = dataclasses.replace(
    PRESETS["minigrid"],
    preset="minigrid-fast",
    env_id="MiniGrid-MultiRoom-N4-S5-v0",
    bonus="none",
    network="compact",
    num_envs=64,
    num_steps=128,
    learning_rate=1e-3,
    rnd_warmup_iterations=4,
    device="cpu",
    torch_threads=1,
)
# bsuite's DeepSea on a CPU (benchmarks/deepsea_study.md): the grid-world PPO settings, 64 copies of the
# run's one MDP in one batched env group (a batch of 1024 steps in short rollouts: less Python per
# sample), a global (non-episodic) count bonus; episodic bonuses add --int-episodic
PRESETS["deepsea"] = dataclasses.replace(
    PRESETS["minigrid"],
    preset="deepsea",
    env_id="DeepSea-N20-v0",
    bonus="count",
    total_timesteps=1_000_000,
    num_envs=64,
    env_groups=1,
    num_steps=16,
    int_episodic=False,
    rnd_warmup_iterations=4,
    device="cpu",
    torch_threads=1,
)


def validate(config: Config) -> None:
    """Raise ConfigError naming the bad value; called before any environment starts."""

    def fail(name: str, value, valid: str) -> None:
        raise ConfigError(f"--{name.replace('_', '-')} {value!r} is invalid: {valid}")

    from explore.errors import check_finite_floats

    check_finite_floats(config)  # first: nan passes every range comparison below
    for name in (
        "num_envs",
        "num_steps",
        "num_minibatches",
        "update_epochs",
        "env_groups",
        "checkpoint_interval",
    ):
        if getattr(config, name) < 1:
            fail(name, getattr(config, name), "it must be an integer >= 1")
    if config.num_envs % config.env_groups:
        fail("env_groups", config.env_groups, f"it must divide --num-envs {config.num_envs}")
    if config.batch_size % config.num_minibatches:
        fail(
            "num_minibatches",
            config.num_minibatches,
            f"it must divide the batch num_envs * num_steps = {config.batch_size}",
        )
    world_size = distributed.env_world_size()
    if config.total_timesteps < config.batch_size * world_size:
        ranks = f" over {world_size} ranks: num_envs * num_steps * WORLD_SIZE" if world_size > 1 else ""
        fail(
            "total_timesteps",
            config.total_timesteps,
            f"it must be at least one batch ({config.batch_size * world_size} steps{ranks})",
        )
    for name in ("learning_rate", "clip_coef", "max_grad_norm", "reward_clip"):
        if not getattr(config, name) > 0:
            fail(name, getattr(config, name), "it must be > 0")
    for name in ("ent_coef", "vf_coef", "ext_coef", "int_coef"):
        if getattr(config, name) < 0:
            fail(name, getattr(config, name), "a coefficient must be >= 0")
    for name in ("gamma", "int_gamma", "gae_lambda", "sticky_action_prob"):
        if not 0.0 <= getattr(config, name) <= 1.0:
            fail(name, getattr(config, name), "it must lie in [0, 1]")
    if config.torch_threads < 0:
        fail("torch_threads", config.torch_threads, "it must be >= 0")
    if config.use_lstm and config.num_envs % config.num_minibatches:
        fail(
            "num_minibatches",
            config.num_minibatches,
            f"with --use-lstm it must divide --num-envs {config.num_envs}",
        )
    if config.max_episode_steps is not None and config.max_episode_steps < 1:
        fail("max_episode_steps", config.max_episode_steps, "it must be >= 1")
    check_bonus(config.bonus, config)  # the bonus flags, and where the expression goes wrong
    if config.network not in NETWORKS:
        fail("network", config.network, f"valid networks: {', '.join(NETWORKS)}")
    if config.preset not in PRESETS:
        fail("preset", config.preset, f"valid presets: {', '.join(PRESETS)}")
    resolve_device(config.device)
    suite = env_registry.find_suite(config.env_id)  # unknown id (with close matches) or a missing extra
    check_bonus_reads(config.bonus, config, suite.observation_kind, config.env_id)  # names bonus and env
    from explore.errors import check_seed, check_writable_dir

    # every env of every rank gets its own seed: seed .. seed + num_envs * WORLD_SIZE - 1
    check_seed(config.seed, span=config.num_envs * world_size)
    # last, as it touches the disk: the run directory (or where it will be created) takes files
    if config.resume is not None:
        check_writable_dir(config.resume, flag="--resume")
    else:
        check_writable_dir(config.run_dir or "runs", flag="--run-dir")


# bonus metrics that are exploration measures in their own right: logged again as exploration/<name>
EXPLORATION_METRICS = {"cells": "cells", "distinct_states": "unique_states"}


def default_run_dir(config: Config) -> Path:
    name = f"{env_registry.registration.strip_namespace(config.env_id)}__{config.bonus}__{config.seed}__{int(time.time())}"
    return Path("runs") / name


def minibatch_indices(config: Config, device: torch.device):
    """Yield (flat indices into the (T * N) batch, env ids) per minibatch of one epoch.

    Feed-forward: a random permutation of all samples. Recurrent: whole env sequences, a random
    num_envs / num_minibatches envs each, indexed time-major so the LSTM replays them in order.
    """
    T, N = config.num_steps, config.num_envs
    if not config.use_lstm:
        order = torch.randperm(config.batch_size, device=device)
        for start in range(0, config.batch_size, config.minibatch_size):
            yield order[start : start + config.minibatch_size], None
        return
    envs_per_minibatch = N // config.num_minibatches
    env_order = torch.randperm(N, device=device)
    for start in range(0, N, envs_per_minibatch):
        mb_envs = env_order[start : start + envs_per_minibatch]
        yield (torch.arange(T, device=device)[:, None] * N + mb_envs[None, :]).reshape(-1), mb_envs


def make_bonus(config: Config, observation_space, action_space, device: torch.device) -> BonusModule | None:
    """The bonus expression of `config` (e.g. 'rnd', 'e3b*rnd', 'count_e+0.5*rnd'), or None for 'none'."""
    if config.bonus == "none":
        return None
    context = BonusContext(
        num_envs=config.num_envs,
        observation_space=observation_space,
        action_space=action_space,
        device=device,
        gamma_int=config.int_gamma,
        run_dir=config.run_dir,  # train() has resolved it by now
        network=config.network,
    )
    return build_bonus(config.bonus, context, config)  # the bonus flags are Config's own fields


def uses_autocast(config: Config, device: torch.device) -> bool:
    """bf16 autocast of the forward passes: on cuda with --amp (the default), on the CPU with --cpu-bf16."""
    return (device.type == "cuda" and config.amp) or (device.type == "cpu" and config.cpu_bf16)


def make_optimizer(
    params: list[nn.Parameter], learning_rate: float, device: torch.device
) -> torch.optim.Adam:
    """The trainer's Adam (eps 1e-5, as the reference); on the CPU the fused kernel.

    Fused Adam is the same update up to rounding (last-bit differences), and on a 2-core CPU its
    step is about 4x faster than the default per-tensor loop (18.6 -> 4.3 ms for the Atari agent
    plus RND's predictor, 3.6M parameters). Elsewhere torch's default is kept (foreach on CUDA).
    """
    fused = True if device.type == "cpu" else None
    return torch.optim.Adam(params, lr=learning_rate, eps=1e-5, fused=fused)


def ppo_update(
    agent: nn.Module,
    bonus: BonusModule | None,
    optimizer: torch.optim.Optimizer,
    flat: dict[str, Any],
    config: Config,
    dist: DistContext | None = None,
    *,
    initial_state: tuple[Tensor, ...] | None = None,
    policy: nn.Module | None = None,
    minibatches: Callable[[Config, torch.device], Iterable] = minibatch_indices,
) -> dict[str, float]:
    """The PPO update of one rollout: `update_epochs` epochs of `num_minibatches` minibatches.

    `flat` holds this rank's flattened (T * N) batch: obs, next_obs, actions, logprobs, advantages,
    ret_ext, ret_int, valid, starts. `initial_state` is the LSTM state at the rollout's start;
    `policy` a compiled `agent`; `minibatches(config, device)` yields (indices, env ids) per epoch.
    Returns the mean losses (policy_loss, value_loss, entropy, approx_kl, clipfrac, bonus_loss).

    Over several ranks, each holding its own share of every minibatch, the update equals the
    one-process update over the union of the ranks' minibatches:
    - masked means divide by the GLOBAL number of valid samples of the minibatch (the counts are
      all-reduced), so each rank's loss is its share (local sum / global count) of the global loss;
    - advantages are normalized with the minibatch's global mean and std;
    - gradients are summed over ranks (one all-reduce of a flat buffer) BEFORE the norm is clipped,
      so every rank clips the same gradient and takes the same step: weights and optimizer state
      stay identical without a broadcast;
    - the bonus's loss, a mean over this rank's samples, is weighted by this rank's share of the
      minibatch's valid samples (exact when the bonus averages over the valid samples, e.g. RND
      with update_proportion 1; otherwise its subsample mean is weighted by the same share).
    """
    policy = policy if policy is not None else agent  # a compiled module has no truth value
    multi_rank = dist is not None and dist.active
    device = flat["actions"].device
    use_amp = uses_autocast(config, device)
    trainable = [p for group in optimizer.param_groups for p in group["params"]]
    stats = torch.zeros(6, device=device)  # pg, v, entropy, approx_kl, clipfrac, bonus loss
    num_minibatches = 0
    for _ in range(config.update_epochs):
        for index, mb_envs in minibatches(config, device):
            # index_select, not x[index]: the same rows, and on the CPU ~5x faster for frame stacks
            mb = {
                key: map_obs(lambda x, index=index: x.index_select(0, index), value)
                for key, value in flat.items()
            }
            mask = mb["valid"].float()
            adv = mb["advantages"]
            # the minibatch's global valid count and advantage sum, in one all-reduce
            sums = distributed.all_reduce_sum_(torch.stack([mask.sum(), (adv * mask).sum()]))
            count = sums[0].clamp(min=1)

            share = masked_mean(mask, count)  # this rank's share of the global masked mean

            mb_state = None if initial_state is None else tuple(x[:, mb_envs] for x in initial_state)
            with torch.autocast(device.type, torch.bfloat16, enabled=use_amp):
                if mb_state is None:
                    logits, v_ext, v_int = policy(mb["obs"])
                else:
                    logits, v_ext, v_int, _ = policy(mb["obs"], mb_state, mb["starts"])
            pi = Categorical(logits=logits.float())
            logratio = pi.log_prob(mb["actions"]) - mb["logprobs"]
            if config.norm_adv:
                adv_mean = sums[1] / count
                adv_var = distributed.all_reduce_sum_(share((adv - adv_mean) ** 2))
                adv = (adv - adv_mean) / (adv_var.sqrt() + 1e-8)
            terms = ppo_loss(
                logratio,
                adv,
                pi.entropy(),
                [(v_ext.float(), mb["ret_ext"]), (v_int.float(), mb["ret_int"])],
                clip_coef=config.clip_coef,
                ent_coef=config.ent_coef,
                vf_coef=config.vf_coef,
                policy_mean=share,
            )
            loss = terms.loss
            bonus_loss = torch.zeros((), device=device)
            if bonus is not None:
                with torch.autocast(device.type, torch.bfloat16, enabled=use_amp):
                    bonus_terms = bonus.loss(mb)
                if "loss" in bonus_terms:
                    bonus_loss = bonus_terms["loss"].float() * (mask.sum() / count if multi_rank else 1.0)
                    loss = loss + bonus_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            distributed.all_reduce_gradients(trainable)  # sum of the ranks' shares: the global gradient
            torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
            optimizer.step()
            stats += torch.stack(
                [terms.policy, terms.value, terms.entropy, terms.approx_kl, terms.clipfrac, bonus_loss]
            ).detach()
            num_minibatches += 1
    distributed.all_reduce_sum_(stats)  # the ranks' shares add up to the global means
    names = ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac", "bonus_loss")
    return dict(zip(names, (stats / max(num_minibatches, 1)).tolist(), strict=True))


# --- the pieces of `train`, in the order it uses them ----------------------------------------------


def seed_everything(config: Config, dist: DistContext) -> None:
    """Rank r: its own sampling seed (rank 0 is the single-process run)."""
    random.seed(config.seed + dist.rank)
    np.random.seed(config.seed + dist.rank)
    torch.manual_seed(config.seed + dist.rank)


def make_env_groups(config: Config, dist: DistContext) -> tuple[list[env_registry.VecEnv], EnvSuite]:
    """`env_groups` vector envs of num_envs / env_groups each (seeds offset by rank), and their suite."""
    suite = env_registry.find_suite(config.env_id)
    env_kwargs = suite.config_kwargs(config)
    group_size = config.num_envs // config.env_groups
    env_seed = config.seed + dist.rank * config.num_envs
    groups = [
        env_registry.make(config.env_id, num_envs=group_size, seed=env_seed + g * group_size, **env_kwargs)
        for g in range(config.env_groups)
    ]
    return groups, suite


def training_state(
    agent: nn.Module,
    optimizer: torch.optim.Optimizer,
    bonus: BonusModule | None,
    info_metrics: list[DistinctIds],
    global_step: int,
    update: int,
) -> dict[str, Any]:
    """What a checkpoint holds besides the RNG states (explore.checkpoint.Checkpointer adds those)."""
    return {
        "agent": agent.state_dict(),
        "optimizer": optimizer.state_dict(),
        "bonus": bonus.state_dict() if bonus is not None else None,
        "info_metrics": {metric.name: metric.state_dict() for metric in info_metrics},
        "global_step": global_step,
        "update": update,
    }


def load_training_state(
    resumed: dict[str, Any],
    agent: nn.Module,
    optimizer: torch.optim.Optimizer,
    bonus: BonusModule | None,
    info_metrics: list[DistinctIds],
    dist: DistContext,
) -> None:
    agent.load_state_dict(resumed["agent"])
    optimizer.load_state_dict(resumed["optimizer"])
    if bonus is not None:
        bonus.load_state_dict(resumed["bonus"])
        if dist.active or resumed.get("world_size", 1) != dist.world_size:
            distributed.reset_rank_local_state(bonus)  # the checkpoint holds rank 0's carries only
    saved_metrics = resumed.get("info_metrics", {})
    if "rooms_seen" in resumed:  # checkpoints written before the suites owned their metrics
        saved_metrics = {"rooms_visited": resumed["rooms_seen"]}
    for metric in info_metrics:
        if metric.name in saved_metrics:
            metric.load_state_dict(saved_metrics[metric.name])


def score(bonus: BonusModule | None, rollout: RolloutBuffer, next_obs: Obs) -> Tensor:
    """The intrinsic reward of every step of the rollout (zeros without a bonus)."""
    if bonus is None:
        return torch.zeros_like(rollout.rewards)
    batch = {
        "obs": rollout.obs,
        "next_obs": next_obs,
        "actions": rollout.actions,
        "valid": rollout.valid,
        "dones": rollout.terminated | rollout.truncated,
    }
    return bonus.score(batch)  # the boundary: NaN/inf observations enter no statistic


def assign_credit(
    config: Config, rollout: RolloutBuffer, int_rewards: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """(advantages, extrinsic returns, intrinsic returns): GAE per stream, the advantages weighted
    ext_coef * A_ext + int_coef * A_int. The extrinsic stream is episodic; the intrinsic one only
    with --int-episodic."""
    last_v_ext, last_v_int = rollout.bootstrap_values()
    flags = (rollout.terminated, rollout.truncated, rollout.valid)
    adv_ext, ret_ext = rollout_advantages(
        rollout.rewards, rollout.values_ext, last_v_ext, *flags, config.gamma, config.gae_lambda
    )
    adv_int, ret_int = rollout_advantages(
        int_rewards,
        rollout.values_int,
        last_v_int,
        *flags,
        config.int_gamma,
        config.gae_lambda,
        episodic=config.int_episodic,
    )
    return config.ext_coef * adv_ext + config.int_coef * adv_int, ret_ext, ret_int


def rollout_summary(
    rollout: RolloutBuffer, int_rewards: Tensor, info_metrics: list[DistinctIds]
) -> dict[str, Any]:
    """The rollout's figures over every rank: the one host sync of an update (under torchrun one
    all-reduce of the sums and one all-gather of the finished episodes). Merges the info metrics."""
    valid = rollout.valid
    sums = [torch.stack([(int_rewards * valid).sum(), valid.sum().float()])]
    totals = distributed.all_reduce_sum_(
        torch.cat(sums + [metric.table_as_counts() for metric in info_metrics])
    )
    offset = 2
    for metric in info_metrics:
        size = metric.table_as_counts().numel()
        metric.merge_counts(totals[offset : offset + size])
        offset += size
    episodes = torch.cat(distributed.all_gather_variable(rollout.finished_episodes())).tolist()
    return {"intrinsic_reward": float(totals[0] / totals[1].clamp(min=1)), "episodes": episodes}


def update_scalars(
    meter: ProgressMeter,
    optimizer: torch.optim.Optimizer,
    stats: dict[str, float],
    bonus: BonusModule | None,
    summary: dict[str, Any],
    info_metrics: list[DistinctIds],
    global_step: int,
) -> dict[str, float]:
    """The scalars logged once per update (besides each finished episode's return and length)."""
    logged = {
        "charts/SPS": meter.sps(global_step),
        "charts/learning_rate": optimizer.param_groups[0]["lr"],
        "charts/intrinsic_reward": summary["intrinsic_reward"],
        **{
            f"losses/{name}": stats[name]
            for name in ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac")
        },
    }
    if bonus is not None:
        logged[f"losses/{bonus.name}_loss"] = stats["bonus_loss"]
        for key, value in bonus.metrics().items():
            logged[f"{bonus.name}/{key}"] = value
            short = key.rsplit("/", 1)[-1]
            if short in EXPLORATION_METRICS:  # also under the exploration/ names DESIGN.md lists
                logged[f"exploration/{EXPLORATION_METRICS[short]}"] = value
        parts = bonus.parts() or {bonus.kind: logged["charts/intrinsic_reward"]}  # one kind: all of it
        logged.update({f"charts/bonus_{kind}": value for kind, value in parts.items()})
    for metric in info_metrics:  # the suite's own exploration measures
        logged[f"exploration/{metric.name}"] = metric.value()
    return logged


class ProgressMeter:
    """The progress bar and the speed figures: SPS, steady-state SPS (without the first update's
    allocation and compilation), seconds in ppo_update and in its collectives."""

    def __init__(self, config: Config, dist: DistContext, global_step: int, total: int):
        self.bar = tqdm(
            total=total,
            initial=global_step,
            disable=not (config.progress and dist.is_main),
            unit="step",
            dynamic_ncols=True,
        )
        self.start_time, self.start_step = time.time(), global_step
        self.steady_start, self.steady_step = self.start_time, self.start_step
        self.update_seconds, self.comm_seconds = 0.0, 0.0
        self.latest_return = float("nan")
        self.updates = 0

    @contextmanager
    def timing_update(self) -> Iterator[None]:
        update_start, comm_start = time.perf_counter(), distributed.comm_seconds()
        yield
        self.update_seconds += time.perf_counter() - update_start
        self.comm_seconds += distributed.comm_seconds() - comm_start

    def sps(self, global_step: int) -> int:
        return int((global_step - self.start_step) / (time.time() - self.start_time))

    def advance(self, global_step: int, steps: int, episodes: list, logged: dict[str, float]) -> None:
        if episodes:
            self.latest_return = episodes[-1][0]
        self.updates += 1
        if self.updates == 1:
            self.steady_start, self.steady_step = time.time(), global_step
        self.bar.update(steps)
        successes = [success for _, _, success in episodes if success == success]  # not NaN
        self.bar.set_postfix(
            progress_fields(logged["charts/SPS"], self.latest_return, logged, successes), refresh=False
        )

    def close(self) -> None:
        self.bar.close()

    def summary(self, global_step: int) -> dict[str, float]:
        out = {
            "global_step": global_step,
            "latest_return": self.latest_return,
            "update_seconds": self.update_seconds,
            "comm_seconds": self.comm_seconds,
        }
        if self.updates > 1:
            out["steady_sps"] = (global_step - self.steady_step) / (time.time() - self.steady_start)
        return out


def train(config: Config) -> dict[str, float]:
    """Train PPO (+ bonus) as `config` says; returns the final logged scalars.

    With `config.resume` the run continues from its checkpoint with its saved config, the fields
    set in `config` on top (explore.checkpoint.resolve_resume, as the CLI does). Under torchrun it
    starts the process group (nccl on cuda, gloo on cpu) and ends it on return.
    """
    config = resolve_resume(config)
    validate(config)
    dist = distributed.setup(resolve_device(config.device))
    try:
        return _train(config, dist)
    finally:
        dist.close()


def _train(config: Config, dist: DistContext) -> dict[str, float]:
    device = dist.device
    # a default run directory holds a time stamp: rank 0's name is everyone's
    run_dir = Path(dist.broadcast_object(str(config.resume or config.run_dir or default_run_dir(config))))
    config = dataclasses.replace(config, run_dir=str(run_dir))
    checkpointer = Checkpointer(run_dir, dist)
    resumed = checkpointer.load(device) if config.resume else None
    if dist.is_main:
        save_config(run_dir, config)
    seed_everything(config, dist)
    use_amp = uses_autocast(config, device)

    # --- environments, agent, bonus, optimizer ---
    groups, suite = make_env_groups(config, dist)
    threads_note = set_torch_threads(config.torch_threads, env_threads(groups), log=dist.is_main)
    obs_space, action_space = groups[0].single_observation_space, groups[0].single_action_space
    policy_kwargs = {"use_lstm": True} if config.use_lstm else {}
    agent = make_policy(obs_space, int(action_space.n), network=config.network, **policy_kwargs).to(device)
    policy = torch.compile(agent) if config.compile else agent
    bonus = make_bonus(config, obs_space, action_space, device)
    trainable = list(agent.parameters())
    if bonus is not None:
        bonus.to(device)
        trainable += [p for p in bonus.parameters() if p.requires_grad]
        if dist.active:
            distributed.mark_for_sync(bonus)  # running statistics and count tables merge across ranks
    optimizer = make_optimizer(trainable, config.learning_rate, device)
    info_metrics = suite.info_metrics(config.env_id, device)  # e.g. Montezuma's rooms

    global_step, start_update = 0, 0
    if resumed is not None:  # every rank loads the same global state
        global_step, start_update = resumed["global_step"], resumed["update"]
        load_training_state(resumed, agent, optimizer, bonus, info_metrics, dist)
        checkpointer.restore_rng(resumed)
    else:
        distributed.broadcast_module_(agent)  # rank 0's initial weights everywhere
        if bonus is not None:
            distributed.broadcast_module_(bonus)  # e.g. RND's random target
        if bonus is not None and config.rnd_warmup_iterations > 0:
            for g, envs in enumerate(groups):  # observation statistics from a random agent (of all ranks)
                seed = config.seed + dist.rank * config.num_envs + g
                bonus.warmup(envs, config.rnd_warmup_iterations * config.num_steps, device, seed=seed)
    logger = Logger(run_dir, dist, resumed_step=global_step if resumed else None)
    checkpointer.before_save = logger.flush  # what a checkpoint's step logged is on disk with it
    if resumed is None:
        logger.text("config", "\n".join(f"- {k}: {v}" for k, v in dataclasses.asdict(config).items()))
    logger.text("system/torch_threads", threads_note)

    rollout = RolloutBuffer(
        groups,
        as_policy_step(policy),
        config.num_steps,
        device,
        reward_clip=config.reward_clip,
        use_amp=use_amp,
        initial_state=agent.initial_state(config.num_envs, device) if config.use_lstm else None,
        info_metrics=info_metrics,
    )
    rollout.reset()
    if bonus is not None:  # every env starts a new episode (also on resume: episodic memory is stale)
        bonus.reset(torch.ones(config.num_envs, dtype=torch.bool, device=device))

    steps_per_update = config.batch_size * dist.world_size  # every rank's envs
    num_updates = start_update + max(0, (config.total_timesteps - global_step) // steps_per_update)
    meter = ProgressMeter(
        config, dist, global_step, total=global_step + (num_updates - start_update) * steps_per_update
    )
    logged: dict[str, float] = {}
    for update in range(start_update, num_updates):
        if config.anneal_lr:
            optimizer.param_groups[0]["lr"] = config.learning_rate * (1.0 - update / num_updates)

        # --- collect a rollout ---
        rollout.collect()
        global_step += steps_per_update

        # --- score: the intrinsic reward of the whole rollout in one batched pass ---
        next_obs = rollout.next_obs_sequence()
        int_rewards = score(bonus, rollout, next_obs)

        # --- credit: extrinsic episodic; intrinsic non-episodic unless --int-episodic ---
        advantages, ret_ext, ret_int = assign_credit(config, rollout, int_rewards)

        # --- PPO update ---
        flat = rollout.flat(next_obs, advantages=advantages, ret_ext=ret_ext, ret_int=ret_int)
        with meter.timing_update():
            stats = ppo_update(
                agent, bonus, optimizer, flat, config, dist, initial_state=rollout.start_state, policy=policy
            )

        # --- log (rank 0, every rank's episodes) and checkpoint ---
        summary = rollout_summary(rollout, int_rewards, info_metrics)
        logged = update_scalars(meter, optimizer, stats, bonus, summary, info_metrics, global_step)
        logger.episodes(summary["episodes"], global_step)
        logger.scalars(logged, global_step)
        meter.advance(global_step, steps_per_update, summary["episodes"], logged)
        if (update + 1) % config.checkpoint_interval == 0 or update + 1 == num_updates:
            checkpointer.save(training_state(agent, optimizer, bonus, info_metrics, global_step, update + 1))

    meter.close()
    logger.close()
    for envs in groups:
        envs.close()
    dist.barrier()  # every rank returns after rank 0's last checkpoint is on disk
    return {
        **logged,
        **meter.summary(global_step),
        "run_dir": str(run_dir),
        "device": str(device),
        "rank": dist.rank,
        "world_size": dist.world_size,
    }
