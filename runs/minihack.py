"""PPO with an episodic bonus on MiniHack (NLE), written out: every piece is built here, edit any
(default: the 'minihack' preset, E3B on MultiRoom-N4-Locked, Henaff et al. 2022/2023).

    python runs/minihack.py --help
    python runs/minihack.py --env-id MiniHack-MultiRoom-N4-Locked-v0 --bonus e3b
    python runs/minihack.py --bonus "e3b*rnd" --rnd-input glyphs   # episodic x global (Henaff et al. 2023)
    python runs/minihack.py --bonus count_e --state-key xy          # count the positions in an episode

The same loop as `explore train --preset minihack` (agents/ppo.py), without checkpoints and torchrun:
use `explore train` to resume a run or to train on several GPUs.
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
from explore.cli import parse_train_config  # noqa: E402
from explore.device import resolve_device  # noqa: E402
from explore.distributed import DistContext  # noqa: E402
from explore.errors import ConfigError  # noqa: E402
from explore.logger import Logger  # noqa: E402


def main(argv: list[str] | None = None) -> dict[str, float]:
    argv = sys.argv[1:] if argv is None else argv
    if any(flag.split("=")[0] == "--resume" for flag in argv):
        raise ConfigError("runs/minihack.py keeps no checkpoints: resume with `explore train --resume DIR`")
    config = parse_train_config(argv, prog="runs/minihack.py", default_preset="minihack")
    validate(config)
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    run_dir = Path(
        config.run_dir or f"runs/{config.env_id}__{config.bonus}__{config.seed}__{int(time.time())}"
    )

    # --- environments: NLE games in worker processes (MiniHackVecEnv), each worker stepping its envs,
    # in groups stepped asynchronously; observations are a dict (glyphs, blstats, message, ...) ---
    size = config.num_envs // config.env_groups
    env_kwargs = envs.find_suite(config.env_id).config_kwargs(config)  # --max-episode-steps, when set
    groups = [
        envs.make(config.env_id, num_envs=size, seed=config.seed + g * size, **env_kwargs)
        for g in range(config.env_groups)
    ]
    try:
        return train(config, groups, device, run_dir)
    finally:  # the workers are processes: stop them whatever happens
        for group in groups:
            group.close()


def train(config: Config, groups: list[envs.VecEnv], device: torch.device, run_dir: Path) -> dict[str, float]:
    obs_space, action_space = groups[0].single_observation_space, groups[0].single_action_space

    # --- the policy over the glyph map and the agent's stats (two value heads), and the bonus: E3B
    # rewards a state embedding far from those of this episode (an inverse-dynamics encoder, trained with
    # PPO); --int-episodic (the preset) cuts its stream at episode ends ---
    agent = make_policy(obs_space, int(action_space.n), network=config.network).to(device)
    bonus = make_bonus(config, obs_space, action_space, device)  # None for --bonus none
    trainable = list(agent.parameters())
    if bonus is not None:
        bonus.to(device)
        trainable += [p for p in bonus.parameters() if p.requires_grad]
        bonus.reset(torch.ones(config.num_envs, dtype=torch.bool, device=device))
        if config.rnd_warmup_iterations > 0:  # random-agent statistics (RND, NovelD; E3B ignores it)
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
        reward_clip=config.reward_clip,
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
        # GAE per stream; the intrinsic one episodic too with --int-episodic (E3B's memory is per episode)
        advantages, ret_ext, ret_int = assign_credit(config, rollout, int_rewards)
        batch = rollout.flat(next_obs, advantages=advantages, ret_ext=ret_ext, ret_int=ret_int)
        # PPO's epochs of minibatches; the bonus's networks (E3B's encoder, RND's predictor) train with it
        stats = ppo_update(agent, bonus, optimizer, batch, config)
        summary = rollout_summary(rollout, int_rewards, [])
        logged = update_scalars(meter, optimizer, stats, bonus, summary, [], global_step)
        logger.episodes(summary["episodes"], global_step)
        logger.scalars(logged, global_step)  # charts/success_rate: the episodes that reached the goal
        meter.advance(global_step, config.batch_size, summary["episodes"], logged)
    meter.close()
    logger.close()
    return {**logged, **meter.summary(global_step), "run_dir": str(run_dir)}


if __name__ == "__main__":
    result = main()
    print(f"finished {result['global_step']} steps; run directory: {result['run_dir']}")
