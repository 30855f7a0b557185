"""PPO with an intrinsic bonus on MiniGrid / BabyAI, written out: every piece is built here, edit any.

    python runs/minigrid.py --help
    python runs/minigrid.py --env-id MiniGrid-DoorKey-8x8-v0 --bonus e3b
    python runs/minigrid.py --bonus "e3b*rnd"            # episodic x global (Henaff et al. 2023)
    python runs/minigrid.py --bonus "count_e+0.5*noveld" # a sum with a coefficient

The same loop as `explore train --preset minigrid` (agents/ppo.py), without checkpoints and torchrun:
use `explore train` to resume a run or to train on several GPUs.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402
import tyro  # noqa: E402

import envs  # noqa: E402
from agents.grid_networks import make_policy  # noqa: E402
from agents.ppo import (  # noqa: E402
    PRESETS,
    Config,
    ProgressMeter,
    assign_credit,
    make_bonus,
    ppo_update,
    rollout_summary,
    score,
    update_scalars,
    validate,
)
from agents.rollout import RolloutBuffer, as_policy_step  # noqa: E402
from explore.device import resolve_device  # noqa: E402
from explore.distributed import DistContext  # noqa: E402
from explore.logger import Logger  # noqa: E402


def main(argv: list[str] | None = None) -> dict[str, float]:
    config = tyro.cli(Config, default=PRESETS["minigrid"], args=argv, prog="runs/minigrid.py")
    validate(config)
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    run_dir = Path(
        config.run_dir or f"runs/{config.env_id}__{config.bonus}__{config.seed}__{int(time.time())}"
    )

    # --- environments: groups stepped asynchronously (one simulates while the policy acts for the next) ---
    size = config.num_envs // config.env_groups
    env_kwargs = envs.find_suite(config.env_id).config_kwargs(config)  # e.g. --max-episode-steps
    groups = [
        envs.make(config.env_id, num_envs=size, seed=config.seed + g * size, **env_kwargs)
        for g in range(config.env_groups)
    ]
    obs_space, action_space = groups[0].single_observation_space, groups[0].single_action_space

    # --- the policy (two value heads: extrinsic, intrinsic) and the bonus expression ---
    recurrent = {"use_lstm": True} if config.use_lstm else {}
    agent = make_policy(obs_space, int(action_space.n), network=config.network, **recurrent).to(device)
    bonus = make_bonus(config, obs_space, action_space, device)  # None for --bonus none
    trainable = list(agent.parameters())
    if bonus is not None:
        bonus.to(device)
        trainable += [p for p in bonus.parameters() if p.requires_grad]
        bonus.reset(torch.ones(config.num_envs, dtype=torch.bool, device=device))
        if config.rnd_warmup_iterations > 0:  # random-agent statistics (RND, NovelD; others ignore it)
            for g, group in enumerate(groups):
                bonus.warmup(
                    group, config.rnd_warmup_iterations * config.num_steps, device, seed=config.seed + g
                )
    optimizer = torch.optim.Adam(trainable, lr=config.learning_rate, eps=1e-5)

    initial_state = agent.initial_state(config.num_envs, device) if config.use_lstm else None  # LSTM core
    policy_step = as_policy_step(agent)  # (obs, state, starts) -> (logits, v_ext, v_int, new state)
    rollout = RolloutBuffer(
        groups,
        policy_step,
        config.num_steps,
        device,
        reward_clip=config.reward_clip,
        initial_state=initial_state,
    )
    rollout.reset()
    logger = Logger(run_dir)
    meter = ProgressMeter(config, DistContext(), 0, total=config.num_updates * config.batch_size)
    global_step, logged = 0, {}
    for _ in range(config.num_updates):
        rollout.collect()  # num_steps steps of every env, on the device
        global_step += config.batch_size
        next_obs = rollout.next_obs_sequence()
        int_rewards = score(bonus, rollout, next_obs)  # the bonus of every step, one batched pass
        advantages, ret_ext, ret_int = assign_credit(config, rollout, int_rewards)  # GAE per stream
        batch = rollout.flat(next_obs, advantages=advantages, ret_ext=ret_ext, ret_int=ret_int)
        # PPO's epochs of minibatches; the bonus's networks (RND predictor, E3B encoder) train with it
        stats = ppo_update(agent, bonus, optimizer, batch, config, initial_state=rollout.start_state)
        summary = rollout_summary(rollout, int_rewards, [])
        logged = update_scalars(meter, optimizer, stats, bonus, summary, [], global_step)
        logger.episodes(summary["episodes"], global_step)
        logger.scalars(logged, global_step)
        meter.advance(global_step, config.batch_size, summary["episodes"], logged)
    meter.close()
    logger.close()
    for group in groups:
        group.close()
    return {**logged, **meter.summary(global_step), "run_dir": str(run_dir)}


if __name__ == "__main__":
    result = main()
    print(f"finished {result['global_step']} steps; run directory: {result['run_dir']}")
