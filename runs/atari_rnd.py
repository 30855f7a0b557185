"""PPO + RND on an Atari game, written out: every piece is built here, edit any (default: Montezuma's
Revenge with the RND paper's settings, Burda et al. 2018).

    python runs/atari_rnd.py --help
    python runs/atari_rnd.py --preset quick                 # a few minutes on a CPU
    python runs/atari_rnd.py --num-envs 128 --device cuda   # the paper's settings on a GPU

The same loop as `explore train` (agents/ppo.py), without checkpoints and torchrun: use
`explore train` to resume a run or to train on several GPUs.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402

import envs  # noqa: E402
from agents.grid_networks import make_policy  # noqa: E402
from agents.ppo import (  # noqa: E402
    ProgressMeter,
    assign_credit,
    make_bonus,
    ppo_update,
    rollout_summary,
    score,
    update_scalars,
    uses_autocast,
    validate,
)
from agents.rollout import RolloutBuffer, as_policy_step  # noqa: E402
from explore.cli import parse_train_config  # noqa: E402
from explore.device import resolve_device  # noqa: E402
from explore.distributed import DistContext  # noqa: E402
from explore.errors import ConfigError  # noqa: E402
from explore.logger import Logger  # noqa: E402


def main(argv: list[str] | None = None) -> dict[str, float]:
    argv = sys.argv[1:] if argv is None else argv
    if any(flag.split("=")[0] == "--resume" for flag in argv):
        raise ConfigError("runs/atari_rnd.py keeps no checkpoints: resume with `explore train --resume DIR`")
    config = parse_train_config(argv, prog="runs/atari_rnd.py", default_preset="paper")  # --preset quick, ...
    validate(config)
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    run_dir = Path(
        config.run_dir or f"runs/{config.env_id}__{config.bonus}__{config.seed}__{int(time.time())}"
    )

    # --- environments: envpool's Atari with the RND paper's settings (sticky actions, 4 stacked
    # 84x84 frames, 4500-step episodes), in groups stepped asynchronously ---
    suite = envs.find_suite(config.env_id)
    size = config.num_envs // config.env_groups
    env_kwargs = suite.config_kwargs(config)  # --sticky-action-prob, --full-action-space, --max-episode-steps
    groups = [
        envs.make(config.env_id, num_envs=size, seed=config.seed + g * size, **env_kwargs)
        for g in range(config.env_groups)
    ]
    obs_space, action_space = groups[0].single_observation_space, groups[0].single_action_space
    rooms = suite.info_metrics(config.env_id, device)  # Montezuma: the rooms visited (RAM byte 3)

    # --- the conv policy (two value heads: extrinsic, intrinsic) and RND (a random target network and
    # a predictor trained to match it: the prediction error on a new frame is its novelty) ---
    agent = make_policy(obs_space, int(action_space.n), network=config.network).to(device)
    bonus = make_bonus(config, obs_space, action_space, device)  # RND unless --bonus says otherwise
    trainable = list(agent.parameters())
    if bonus is not None:
        bonus.to(device)
        trainable += [p for p in bonus.parameters() if p.requires_grad]
        bonus.reset(torch.ones(config.num_envs, dtype=torch.bool, device=device))
        if config.rnd_warmup_iterations > 0:  # RND normalizes frames by a random agent's statistics
            for g, group in enumerate(groups):
                bonus.warmup(
                    group, config.rnd_warmup_iterations * config.num_steps, device, seed=config.seed + g
                )
    optimizer = torch.optim.Adam(trainable, lr=config.learning_rate, eps=1e-5)

    rollout = RolloutBuffer(
        groups,
        as_policy_step(agent),
        config.num_steps,
        device,
        reward_clip=config.reward_clip,  # extrinsic rewards clipped to [-1, 1], as in RND
        use_amp=uses_autocast(config, device),  # bf16 forwards: cuda (--amp), CPU (--cpu-bf16)
        info_metrics=rooms,
    )
    rollout.reset()
    logger = Logger(run_dir)
    meter = ProgressMeter(config, DistContext(), 0, total=config.num_updates * config.batch_size)
    global_step, logged = 0, {}
    for _ in range(config.num_updates):
        rollout.collect()  # num_steps steps of every env, on the device
        global_step += config.batch_size
        next_obs = rollout.next_obs_sequence()
        int_rewards = score(bonus, rollout, next_obs)  # RND's error on every next frame, one batched pass
        # GAE per stream: extrinsic episodic (gamma 0.999), intrinsic non-episodic (int_gamma 0.99)
        advantages, ret_ext, ret_int = assign_credit(config, rollout, int_rewards)
        batch = rollout.flat(next_obs, advantages=advantages, ret_ext=ret_ext, ret_int=ret_int)
        # PPO's epochs of minibatches; RND's predictor trains on --update-proportion of each minibatch
        stats = ppo_update(agent, bonus, optimizer, batch, config)
        summary = rollout_summary(rollout, int_rewards, rooms)
        logged = update_scalars(meter, optimizer, stats, bonus, summary, rooms, global_step)
        logger.episodes(summary["episodes"], global_step)
        logger.scalars(logged, global_step)  # exploration/rooms_visited on Montezuma's Revenge
        meter.advance(global_step, config.batch_size, summary["episodes"], logged)
    meter.close()
    logger.close()
    for group in groups:
        group.close()
    return {**logged, **meter.summary(global_step), "run_dir": str(run_dir)}


if __name__ == "__main__":
    result = main()
    print(f"finished {result['global_step']} steps; run directory: {result['run_dir']}")
