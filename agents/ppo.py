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
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.distributions import Categorical
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

import envs as env_registry
from agents.grid_networks import NETWORKS, make_policy
from explore import distributed
from explore.bonus import BonusModule
from explore.checkpoint import load_checkpoint, save_checkpoint, save_config
from explore.combine import BonusContext, build_bonus, parse_bonus
from explore.credit import rollout_advantages
from explore.distributed import DistContext
from explore.errors import ConfigError
from explore.obs import allocate_obs, cat_obs, map_obs, obs_to_tensor, write_obs
from explore.progress import progress_fields
from explore.system import env_threads, set_torch_threads

MONTEZUMA_ROOM_RAM_INDEX = 3


@dataclass
class Config:
    """PPO with an intrinsic bonus (default: PPO + RND on Montezuma's Revenge, the RND paper's settings)."""

    # --- experiment ---
    env_id: str = "MontezumaRevenge-v5"
    """environment id (`explore list-envs` lists them; `Explore/` prefix optional)"""
    bonus: str = "rnd"
    """intrinsic bonus expression: a name (rnd, noveld, e3b, count, count_e, count_e1), a product of an
    episodic and a global bonus (e3b*rnd, e3b*noveld), a sum with coefficients (count_e+0.5*rnd), or 'none'"""
    seed: int = 1
    """seed of torch, numpy and the environments (under torchrun, rank r seeds its envs from
    seed + r * num_envs and its sampling from seed + r)"""
    total_timesteps: int = 2_000_000_000
    """total agent steps over all envs (of all ranks under torchrun)"""
    device: str = "auto"
    """'auto' (cuda when available), 'cpu', 'cuda' or 'cuda:N'"""
    run_dir: str | None = None
    """where TensorBoard logs, config.json and checkpoint.pt go; None: runs/<env>__<bonus>__<seed>__<time>"""
    resume: str | None = None
    """a run directory to resume from its last checkpoint, with its saved config (flags given here override it)"""
    preset: Literal["paper", "quick", "minihack", "minigrid", "minigrid-fast", "deepsea"] = "paper"
    """defaults to start from: 'paper' (RND on Atari, 128 envs, for a GPU), 'quick' (the same, a few minutes on
    a CPU), 'minihack' or 'minigrid' (E3B settings for the grid suites)"""
    checkpoint_interval: int = 10
    """save a checkpoint every this many updates (and at the end)"""
    progress: bool = True
    """show a progress bar with SPS and the latest return"""

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

    # --- RND ---
    update_proportion: float = 0.25
    """fraction of each minibatch that trains the RND predictor"""
    rnd_warmup_iterations: int = 50
    """random-agent rollouts of num_steps steps that initialize the observation statistics"""

    # --- novelty bonuses (counts, E3B, NovelD, products) ---
    state_key: str = "obs"
    """what the count bonuses count: obs (the whole observation), xy (MiniHack position), glyphs, message,
    or any observation key"""
    count_mode: Literal["sqrt", "first_visit"] = "sqrt"
    """count_e rewards 1/sqrt(N_e(s)) or 1{N_e(s) = 1}"""
    noveld_alpha: float | None = None
    """NovelD's alpha (default 0.5 alone, 0.1 as the global factor of a product)"""
    e3b_lambda: float = 0.1
    """E3B ridge: C_0 = lambda * I"""
    e3b_dim: int = 128
    """E3B embedding size (the reference uses 1024; memory num_envs * dim^2)"""
    reward_norm: Literal["reward", "return", "none"] = "reward"
    """running-std normalization of products, NovelD and E3B (RND keeps its own return-based one)"""

    # --- policy ---
    use_lstm: bool = False
    """an LSTM core in the policy (MiniGrid/MiniHack policies; minibatches then hold whole env sequences)"""
    network: Literal["default", "compact"] = "default"
    """the policy network: 'default' (per space, agents.grid_networks.make_policy) or 'compact' (MiniGrid/BabyAI:
    a few small convolutions, as rl-starter-files; the fast CPU path)"""

    # --- speed ---
    amp: bool = True
    """bf16 autocast for network forward passes on cuda"""
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
    if not 0.0 < config.update_proportion <= 1.0:
        fail("update_proportion", config.update_proportion, "it must lie in (0, 1]")
    for name in ("rnd_warmup_iterations", "torch_threads"):
        if getattr(config, name) < 0:
            fail(name, getattr(config, name), "it must be >= 0")
    if config.use_lstm and config.num_envs % config.num_minibatches:
        fail(
            "num_minibatches",
            config.num_minibatches,
            f"with --use-lstm it must divide --num-envs {config.num_envs}",
        )
    if config.max_episode_steps is not None and config.max_episode_steps < 1:
        fail("max_episode_steps", config.max_episode_steps, "it must be >= 1")
    if config.bonus != "none":
        parse_bonus(config.bonus)  # ConfigError showing where the expression goes wrong
    if config.network not in NETWORKS:
        fail("network", config.network, f"valid networks: {', '.join(NETWORKS)}")
    if config.preset not in PRESETS:
        fail("preset", config.preset, f"valid presets: {', '.join(PRESETS)}")
    resolve_device(config.device)
    env_registry.find_suite(config.env_id)  # unknown id (with close matches) or a missing extra
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


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"--device {name!r} is invalid: use 'auto', 'cpu', 'cuda' or 'cuda:N'") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name!r}: CUDA is not available on this machine; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {name!r} is invalid: use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    return device


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


def flatten_time(x: Tensor) -> Tensor:
    """(T, N, ...) -> (T * N, ...)"""
    return x.reshape(-1, *x.shape[2:])


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
        update_proportion=config.update_proportion,
        state_key=config.state_key,
        count_mode=config.count_mode,
        noveld_alpha=config.noveld_alpha,
        e3b_lambda=config.e3b_lambda,
        e3b_dim=config.e3b_dim,
        reward_norm=config.reward_norm,
    )
    return build_bonus(config.bonus, context)


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
    use_amp = config.amp and device.type == "cuda"
    trainable = [p for group in optimizer.param_groups for p in group["params"]]
    stats = torch.zeros(6, device=device)  # pg, v, entropy, approx_kl, clipfrac, bonus loss
    num_minibatches = 0
    for _ in range(config.update_epochs):
        for index, mb_envs in minibatches(config, device):
            mb = {key: map_obs(lambda x, index=index: x[index], value) for key, value in flat.items()}
            mask = mb["valid"].float()
            adv = mb["advantages"]
            # the minibatch's global valid count and advantage sum, in one all-reduce
            sums = distributed.all_reduce_sum_(torch.stack([mask.sum(), (adv * mask).sum()]))
            count = sums[0].clamp(min=1)

            def share(x: Tensor) -> Tensor:
                """This rank's share of the global masked mean of x (the mean itself in one process)."""
                return (x * mask).sum() / count  # noqa: B023 (used inside this iteration only)

            mb_state = None if initial_state is None else tuple(x[:, mb_envs] for x in initial_state)
            with torch.autocast(device.type, torch.bfloat16, enabled=use_amp):
                if mb_state is None:
                    logits, v_ext, v_int = policy(mb["obs"])
                else:
                    logits, v_ext, v_int, _ = policy(mb["obs"], mb_state, mb["starts"])
            pi = Categorical(logits=logits.float())
            logratio = pi.log_prob(mb["actions"]) - mb["logprobs"]
            ratio = logratio.exp()
            if config.norm_adv:
                adv_mean = sums[1] / count
                adv_var = distributed.all_reduce_sum_(share((adv - adv_mean) ** 2))
                adv = (adv - adv_mean) / (adv_var.sqrt() + 1e-8)
            pg_loss = share(
                torch.max(-adv * ratio, -adv * ratio.clamp(1 - config.clip_coef, 1 + config.clip_coef))
            )
            v_loss = 0.5 * (
                share((v_ext.float() - mb["ret_ext"]) ** 2) + share((v_int.float() - mb["ret_int"]) ** 2)
            )
            entropy = share(pi.entropy())
            loss = pg_loss - config.ent_coef * entropy + config.vf_coef * v_loss
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
            with torch.no_grad():
                approx_kl = share((ratio - 1) - logratio)
                clipfrac = share(((ratio - 1.0).abs() > config.clip_coef).float())
                stats += torch.stack([pg_loss, v_loss, entropy, approx_kl, clipfrac, bonus_loss]).detach()
            num_minibatches += 1
    distributed.all_reduce_sum_(stats)  # the ranks' shares add up to the global means
    names = ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac", "bonus_loss")
    return dict(zip(names, (stats / max(num_minibatches, 1)).tolist(), strict=True))


class _NoWriter:
    """Stands in for the SummaryWriter on ranks other than 0: they log nothing."""

    def add_scalar(self, *args, **kwargs) -> None:
        pass

    def add_text(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


def _load_resumed(run_dir: Path, device: torch.device, dist: DistContext) -> dict[str, Any]:
    """The checkpoint of `run_dir`; under several ranks rank 0 reads it and broadcasts it (no shared
    file system needed for resuming) and every rank raises the same error when it is missing."""
    if not dist.active:
        return load_checkpoint(run_dir, map_location=device)
    loaded: Any = None
    if dist.is_main:
        try:
            loaded = load_checkpoint(run_dir, map_location="cpu")
        except FileNotFoundError as exc:
            loaded = exc
    loaded = dist.broadcast_object(loaded)
    if isinstance(loaded, FileNotFoundError):
        raise FileNotFoundError(str(loaded))
    return loaded


def train(config: Config) -> dict[str, float]:
    """Train PPO (+ bonus) as `config` says; returns the final logged scalars.

    Under torchrun it starts the process group (nccl on cuda, gloo on cpu) and ends it on return.
    """
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
    resumed = _load_resumed(run_dir, device, dist) if config.resume else None
    if dist.is_main:
        save_config(run_dir, config)

    # rank r: its own sampling seed and env seeds (rank 0 is the single-process run)
    random.seed(config.seed + dist.rank)
    np.random.seed(config.seed + dist.rank)
    torch.manual_seed(config.seed + dist.rank)
    env_seed = config.seed + dist.rank * config.num_envs
    use_amp = config.amp and device.type == "cuda"

    # --- environments: `env_groups` vector envs of num_envs / env_groups each ---
    group_size = config.num_envs // config.env_groups
    env_kwargs = env_registry.find_suite(config.env_id).config_kwargs(config)
    groups = [
        env_registry.make(config.env_id, num_envs=group_size, seed=env_seed + g * group_size, **env_kwargs)
        for g in range(config.env_groups)
    ]
    group_slices = [slice(g * group_size, (g + 1) * group_size) for g in range(config.env_groups)]
    threads_note = set_torch_threads(config.torch_threads, env_threads(groups), log=dist.is_main)
    obs_space = groups[0].single_observation_space
    num_actions = int(groups[0].single_action_space.n)
    track_rooms = "MontezumaRevenge" in config.env_id

    # --- agent, bonus, optimizer ---
    policy_kwargs = {"use_lstm": True} if config.use_lstm else {}
    agent = make_policy(obs_space, num_actions, network=config.network, **policy_kwargs).to(device)
    bonus = make_bonus(config, obs_space, groups[0].single_action_space, device)
    trainable = list(agent.parameters())
    if bonus is not None:
        bonus.to(device)
        trainable += [p for p in bonus.parameters() if p.requires_grad]
        if dist.active:
            distributed.mark_for_sync(bonus)  # running statistics and count tables merge across ranks
    optimizer = torch.optim.Adam(trainable, lr=config.learning_rate, eps=1e-5)
    policy = torch.compile(agent) if config.compile else agent

    global_step, start_update = 0, 0
    rooms_seen = torch.zeros(256, dtype=torch.bool, device=device)
    if resumed is not None:  # every rank loads the same global state
        agent.load_state_dict(resumed["agent"])
        optimizer.load_state_dict(resumed["optimizer"])
        if bonus is not None:
            bonus.load_state_dict(resumed["bonus"])
            if dist.active or resumed.get("world_size", 1) != dist.world_size:
                distributed.reset_rank_local_state(bonus)  # the checkpoint holds rank 0's carries only
        rooms_seen.copy_(resumed["rooms_seen"])
        global_step, start_update = resumed["global_step"], resumed["update"]
        rank_rng = resumed.get("rank_rng") or [(resumed["torch_rng"], resumed["numpy_rng"])]
        if dist.rank < len(rank_rng):  # a rank the saving run did not have keeps its fresh seed
            torch.set_rng_state(rank_rng[dist.rank][0])
            np.random.set_state(rank_rng[dist.rank][1])
    else:
        distributed.broadcast_module_(agent)  # rank 0's initial weights everywhere
        if bonus is not None:
            distributed.broadcast_module_(bonus)  # e.g. RND's random target
        if bonus is not None and hasattr(bonus, "warmup") and config.rnd_warmup_iterations > 0:
            for g, envs in enumerate(groups):  # observation statistics from a random agent (of all ranks)
                bonus.warmup(envs, config.rnd_warmup_iterations * config.num_steps, device, seed=env_seed + g)

    # on resume, TensorBoard drops the events of steps >= purge_step (written after the checkpoint); the
    # checkpoint's own update logged at global_step, so the purge starts one step later
    writer = (
        SummaryWriter(str(run_dir), purge_step=global_step + 1 if resumed else None, flush_secs=20)
        if dist.is_main
        else _NoWriter()
    )
    if resumed is None:
        writer.add_text("config", "\n".join(f"- {k}: {v}" for k, v in dataclasses.asdict(config).items()))
    writer.add_text("system/torch_threads", threads_note)

    # --- rollout storage, on the device ---
    T, N = config.num_steps, config.num_envs
    obs = allocate_obs(obs_space, (T, N), device)
    actions = torch.zeros((T, N), dtype=torch.long, device=device)
    logprobs = torch.zeros((T, N), device=device)
    rewards = torch.zeros((T, N), device=device)
    terminated = torch.zeros((T, N), dtype=torch.bool, device=device)
    truncated = torch.zeros((T, N), dtype=torch.bool, device=device)
    valid = torch.zeros((T, N), dtype=torch.bool, device=device)
    values_ext = torch.zeros((T, N), device=device)
    values_int = torch.zeros((T, N), device=device)
    finished_returns = torch.full((T, N), float("nan"), device=device)
    finished_lengths = torch.zeros((T, N), dtype=torch.long, device=device)
    finished_success = torch.full((T, N), float("nan"), device=device)

    next_obs = allocate_obs(obs_space, (N,), device)
    next_valid = torch.ones(N, dtype=torch.bool, device=device)
    # recurrent policies: starts[t] marks obs[t] as an episode's first (the obs after a dummy step)
    starts = torch.zeros((T, N), dtype=torch.bool, device=device)
    next_start = torch.ones(N, dtype=torch.bool, device=device)
    core_state = agent.initial_state(N, device) if config.use_lstm else None

    def evaluate(observation, state, episode_start):
        """(logits, v_ext, v_int, new_state) of the policy, feed-forward or recurrent alike."""
        if state is None:
            return (*policy(observation), None)
        return policy(observation, state, episode_start)

    episode_return = torch.zeros(N, device=device)
    episode_length = torch.zeros(N, dtype=torch.long, device=device)
    for envs, sl in zip(groups, group_slices, strict=True):
        first_obs, _ = envs.reset()
        write_obs(next_obs, sl, obs_to_tensor(first_obs, device))
    if bonus is not None:  # every env starts a new episode (also on resume: episodic memory is stale)
        bonus.reset(torch.ones(N, dtype=torch.bool, device=device))

    def act(g: int, step: int) -> None:
        """Choose actions for group g from its latest observation and send them to its envs."""
        sl = group_slices[g]
        group_obs = map_obs(lambda x: x[sl], next_obs)
        write_obs(obs, (step, sl), group_obs)
        valid[step, sl] = next_valid[sl]
        starts[step, sl] = next_start[sl]
        group_state = None if core_state is None else tuple(x[:, sl] for x in core_state)
        with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=use_amp):
            logits, v_ext, v_int, group_state = evaluate(group_obs, group_state, next_start[sl])
        if core_state is not None:
            for full, part in zip(core_state, group_state, strict=True):
                full[:, sl] = part.float()
        dist = Categorical(logits=logits.float())
        action = dist.sample()
        actions[step, sl] = action
        logprobs[step, sl] = dist.log_prob(action)
        values_ext[step, sl] = v_ext.float()
        values_int[step, sl] = v_int.float()
        groups[g].send(action.cpu().numpy())  # the one host copy per step: the envs need the actions

    def observe(g: int, step: int) -> None:
        """Receive group g's step results and record them on the device."""
        sl = group_slices[g]
        o, r, term, trunc, info = groups[g].recv()
        r = torch.as_tensor(r, device=device)
        term = torch.as_tensor(term, device=device)
        trunc = torch.as_tensor(trunc, device=device)
        rewards[step, sl] = r.clamp(-config.reward_clip, config.reward_clip)
        terminated[step, sl] = term
        truncated[step, sl] = trunc
        write_obs(next_obs, sl, obs_to_tensor(o, device))
        done = term | trunc
        next_valid[sl] = ~done
        next_start[sl] = ~valid[step, sl]  # the obs after a dummy step is a reset observation
        episode_return[sl] += r
        episode_length[sl] += valid[step, sl].long()
        finished_returns[step, sl] = torch.where(done, episode_return[sl], torch.nan)
        finished_lengths[step, sl] = episode_length[sl]
        if "success" in info:
            success = torch.as_tensor(info["success"], device=device)
            finished_success[step, sl] = torch.where(done, success.float(), torch.nan)
        episode_return[sl] *= ~done
        episode_length[sl] *= ~done
        if track_rooms:
            rooms_seen[torch.as_tensor(info["ram"][:, MONTEZUMA_ROOM_RAM_INDEX], device=device).long()] = True

    steps_per_update = config.batch_size * dist.world_size  # every rank's envs
    num_updates = start_update + max(0, (config.total_timesteps - global_step) // steps_per_update)
    progress = tqdm(
        total=global_step + (num_updates - start_update) * steps_per_update,
        initial=global_step,
        disable=not (config.progress and dist.is_main),
        unit="step",
        dynamic_ncols=True,
    )
    latest_return = float("nan")
    logged: dict[str, float] = {}
    start_time, start_step = time.time(), global_step
    steady_start, steady_step = start_time, start_step
    update_seconds, comm_seconds = 0.0, 0.0  # time in ppo_update, and in its collectives

    for update in range(start_update, num_updates):
        if config.anneal_lr:
            optimizer.param_groups[0]["lr"] = config.learning_rate * (1.0 - update / num_updates)

        # --- collect a rollout; group g simulates while the policy acts for group g+1 ---
        rollout_start_state = None if core_state is None else tuple(x.clone() for x in core_state)
        for step in range(T):
            for g in range(config.env_groups):
                if step > 0:
                    observe(g, step - 1)
                act(g, step)
        for g in range(config.env_groups):
            observe(g, T - 1)
        global_step += steps_per_update

        # --- intrinsic reward for the whole rollout in one batched pass ---
        # the observation after each step (the true final observation at a done)
        next_obs_seq = cat_obs(map_obs(lambda x: x[1:], obs), map_obs(lambda x: x.unsqueeze(0), next_obs))
        batch = {
            "obs": obs,
            "next_obs": next_obs_seq,
            "actions": actions,
            "valid": valid,
            "dones": terminated | truncated,
        }
        int_rewards = bonus.bonus(batch) if bonus is not None else torch.zeros_like(rewards)

        # --- credit: extrinsic episodic; intrinsic non-episodic unless --int-episodic ---
        with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=use_amp):
            _, last_v_ext, last_v_int, _ = evaluate(next_obs, core_state, next_start)
        adv_ext, ret_ext = rollout_advantages(
            rewards,
            values_ext,
            last_v_ext.float(),
            terminated,
            truncated,
            valid,
            config.gamma,
            config.gae_lambda,
        )
        adv_int, ret_int = rollout_advantages(
            int_rewards,
            values_int,
            last_v_int.float(),
            terminated,
            truncated,
            valid,
            config.int_gamma,
            config.gae_lambda,
            episodic=config.int_episodic,
        )
        advantages = config.ext_coef * adv_ext + config.int_coef * adv_int

        # --- PPO update ---
        flat = {
            "obs": map_obs(flatten_time, obs),
            "next_obs": map_obs(flatten_time, next_obs_seq),
            "actions": actions.reshape(-1),
            "logprobs": logprobs.reshape(-1),
            "advantages": advantages.reshape(-1),
            "ret_ext": ret_ext.reshape(-1),
            "ret_int": ret_int.reshape(-1),
            "valid": valid.reshape(-1),
            "starts": starts.reshape(-1),
        }
        update_start, comm_start = time.perf_counter(), distributed.comm_seconds()
        stats = ppo_update(
            agent, bonus, optimizer, flat, config, dist, initial_state=rollout_start_state, policy=policy
        )
        update_seconds += time.perf_counter() - update_start
        comm_seconds += distributed.comm_seconds() - comm_start

        # --- logging, by rank 0, of every rank's episodes: the one sync per update ---
        # (under torchrun: one all-reduce of the sums below and one all-gather of finished episodes)
        totals = distributed.all_reduce_sum_(
            torch.cat([torch.stack([(int_rewards * valid).sum(), valid.sum().float()]), rooms_seen.float()])
        )
        rooms_seen |= totals[2:] > 0
        done_mask = ~torch.isnan(finished_returns)
        episodes = torch.stack(
            [finished_returns[done_mask], finished_lengths[done_mask].float(), finished_success[done_mask]], 1
        )
        episodes = torch.cat(distributed.all_gather_variable(episodes)).tolist()
        successes = [success for _, _, success in episodes if success == success]  # not NaN
        if successes:
            writer.add_scalar("charts/success_rate", sum(successes) / len(successes), global_step)
        for ret, length, _ in episodes:
            writer.add_scalar("charts/episodic_return", ret, global_step)
            writer.add_scalar("charts/episodic_length", length, global_step)
        if episodes:
            latest_return = episodes[-1][0]
        sps = int((global_step - start_step) / (time.time() - start_time))
        logged = {
            "charts/SPS": sps,
            "charts/learning_rate": optimizer.param_groups[0]["lr"],
            "charts/intrinsic_reward": float(totals[0] / totals[1].clamp(min=1)),
            "losses/policy_loss": stats["policy_loss"],
            "losses/value_loss": stats["value_loss"],
            "losses/entropy": stats["entropy"],
            "losses/approx_kl": stats["approx_kl"],
            "losses/clipfrac": stats["clipfrac"],
        }
        if bonus is not None:
            logged[f"losses/{bonus.name}_loss"] = stats["bonus_loss"]
            for key, value in bonus.metrics().items():
                logged[f"{bonus.name}/{key}"] = value
                short = key.rsplit("/", 1)[-1]
                if short in EXPLORATION_METRICS:  # also under the exploration/ names DESIGN.md lists
                    logged[f"exploration/{EXPLORATION_METRICS[short]}"] = value
            parts = (
                bonus.parts() if hasattr(bonus, "parts") else {bonus.kind: logged["charts/intrinsic_reward"]}
            )
            logged.update({f"charts/bonus_{kind}": value for kind, value in parts.items()})
        if track_rooms:
            logged["exploration/rooms_visited"] = int(rooms_seen.sum())
        for key, value in logged.items():
            writer.add_scalar(key, value, global_step)
        if update == start_update:  # steady-state SPS leaves out the first update (allocation, compilation)
            steady_start, steady_step = time.time(), global_step
        progress.update(steps_per_update)
        progress.set_postfix(progress_fields(sps, latest_return, logged, successes), refresh=False)
        finished_returns.fill_(float("nan"))
        finished_success.fill_(float("nan"))

        if (update + 1) % config.checkpoint_interval == 0 or update + 1 == num_updates:
            # weights, optimizer and bonus statistics are identical on every rank: rank 0 saves them,
            # with every rank's RNG states (rank-local carries are rank 0's; see docs/distributed.md)
            rank_rng = dist.all_gather_object((torch.get_rng_state(), np.random.get_state()))
            if dist.is_main:
                state = {
                    "agent": agent.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "bonus": bonus.state_dict() if bonus is not None else None,
                    "rooms_seen": rooms_seen.cpu(),
                    "global_step": global_step,
                    "update": update + 1,
                    "torch_rng": torch.get_rng_state(),
                    "numpy_rng": np.random.get_state(),
                    "world_size": dist.world_size,
                    "rank_rng": rank_rng,
                }
                save_checkpoint(run_dir, state)

    progress.close()
    writer.close()
    for envs in groups:
        envs.close()
    dist.barrier()  # every rank returns after rank 0's last checkpoint is on disk
    logged["global_step"] = global_step
    logged["latest_return"] = latest_return
    logged["run_dir"] = str(run_dir)
    logged["device"] = str(device)
    logged["rank"], logged["world_size"] = dist.rank, dist.world_size
    logged["update_seconds"], logged["comm_seconds"] = update_seconds, comm_seconds
    if num_updates - start_update > 1:
        logged["steady_sps"] = (global_step - steady_step) / (time.time() - steady_start)
    return logged
