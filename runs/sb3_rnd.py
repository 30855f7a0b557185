"""Stable-Baselines3 PPO (CnnPolicy) with our RND bonus on an Atari game (default: Montezuma's Revenge).

    python runs/sb3_rnd.py --threads 1                      # tiny default: a minute or two on a 2-core CPU
    python runs/sb3_rnd.py --help                           # every flag
    python runs/sb3_rnd.py --num-envs 128 --total-timesteps 10000000 --device cuda
    python runs/sb3_rnd.py --bonus "e3b*rnd" --env-id Breakout-v5
    tensorboard --logdir runs

The stack, bottom up: our envpool Atari env with RND's settings (sticky actions 0.25, the full
action space, 4500-step episodes, 84x84x4 frames) -> `SB3VecEnv` (SB3's same-step autoreset)
-> `VecMonitor` (SB3 logs the extrinsic episode returns) -> `BonusVecEnvWrapper` (adds the
intrinsic reward, trains RND's predictor every `n_steps` steps) -> SB3's PPO, whose
`ExplorationMetricsCallback` logs the bonus's statistics under `explore/`.

The defaults follow the RND paper (and our `--preset paper`) where SB3 allows: lr 1e-4, 4 epochs
x 4 minibatches, clip 0.1, entropy 0.001, lambda 0.95, reward = 2 * clip(r_ext) + 1 * r_int,
25% of samples train the predictor. The differences that remain are SB3's (see explore/sb3.py):
one value head and one discount (`--gamma`, 0.99 for both streams here, where the paper uses
0.999 extrinsic and 0.99 intrinsic), the intrinsic stream cut at episode ends, and RND's
observation statistics initialized from `--warmup-steps` random steps per env (the paper: 50 x 128).
The run directory gets TensorBoard logs, `args.json` and the trained `model.zip`.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import envs  # noqa: E402
from explore.sb3 import BonusVecEnvWrapper, ExplorationMetricsCallback, SB3VecEnv  # noqa: E402


@dataclass
class Args:
    """SB3 PPO + an intrinsic bonus from explore on an Atari game."""

    env_id: str = "MontezumaRevenge-v5"
    """Atari id (envpool's, e.g. Breakout-v5)"""
    bonus: str = "rnd"
    """bonus expression (rnd, e3b*rnd, count_e+0.5*rnd, ...)"""
    seed: int = 1
    """seed of SB3, the envs and the bonus"""
    total_timesteps: int = 4096
    """agent steps over all envs (the default, 4 PPO iterations, is a smoke run of a minute or two on a CPU)"""
    num_envs: int = 8
    """parallel envs"""
    n_steps: int = 128
    """steps per env per rollout (also the bonus's training window)"""
    num_minibatches: int = 4
    """minibatches per epoch (SB3's batch_size = num_envs * n_steps / num_minibatches)"""
    batch_size: int | None = None
    """SB3's minibatch size (overrides num_minibatches)"""
    n_epochs: int = 4
    """epochs per rollout, for PPO and for the bonus"""
    learning_rate: float = 1e-4
    """Adam learning rate of the policy and of the bonus"""
    gamma: float = 0.99
    """SB3's one discount, for the summed reward"""
    gae_lambda: float = 0.95
    """GAE lambda"""
    clip_range: float = 0.1
    """PPO ratio clipping"""
    ent_coef: float = 0.001
    """entropy coefficient"""
    vf_coef: float = 0.5
    """value loss coefficient (SB3's loss is the plain squared error: 0.5 matches our 1.0 x 0.5 x error)"""
    max_grad_norm: float = 0.5
    """gradient norm clip (policy and bonus separately)"""
    ext_coef: float = 2.0
    """weight of the clipped extrinsic reward"""
    int_coef: float = 1.0
    """weight of the intrinsic reward"""
    reward_clip: float = 1.0
    """clip the extrinsic reward to [-reward_clip, reward_clip] (episode returns are logged unclipped)"""
    warmup_steps: int = 128
    """random-agent steps per env that initialize RND's observation statistics"""
    sticky_action_prob: float = 0.25
    """probability of repeating the previous action"""
    max_episode_steps: int | None = None
    """episode cut in agent steps (default 4500, RND's)"""
    device: str = "cpu"
    """'cpu', 'cuda' or 'auto' (policy and bonus)"""
    threads: int | None = None
    """torch CPU threads (default: torch's choice; 1 is faster on a small CPU shared with other work)"""
    run_dir: str | None = None
    """TensorBoard logs, args.json and model.zip (default runs/sb3_<env>__<bonus>__<seed>__<time>)"""
    progress: bool = True
    """show SB3's progress bar"""


def make_env(args: Args) -> BonusVecEnvWrapper:
    """Our Atari env -> SB3VecEnv -> VecMonitor -> BonusVecEnvWrapper."""
    from stable_baselines3.common.vec_env import VecMonitor

    env_kwargs: dict[str, Any] = {"repeat_action_probability": args.sticky_action_prob}
    if args.max_episode_steps is not None:
        env_kwargs["max_episode_steps"] = args.max_episode_steps
    venv = VecMonitor(SB3VecEnv(envs.make(args.env_id, num_envs=args.num_envs, seed=args.seed, **env_kwargs)))
    return BonusVecEnvWrapper(
        venv,
        args.bonus,
        int_coef=args.int_coef,
        ext_coef=args.ext_coef,
        reward_clip=args.reward_clip,
        n_steps=args.n_steps,
        update_epochs=args.n_epochs,
        num_minibatches=args.num_minibatches,
        learning_rate=args.learning_rate,
        max_grad_norm=args.max_grad_norm,
        warmup_steps=args.warmup_steps,
        device=_device(args.device),
        seed=args.seed,
    )


def _device(name: str) -> str:
    if name == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def make_model(args: Args, venv: BonusVecEnvWrapper, tensorboard_log: str | None = None):
    """SB3's PPO with CnnPolicy (NatureCNN, one value head) on `venv`."""
    from stable_baselines3 import PPO

    batch_size = args.batch_size or args.num_envs * args.n_steps // args.num_minibatches
    return PPO(
        "CnnPolicy",
        venv,
        learning_rate=args.learning_rate,
        n_steps=args.n_steps,
        batch_size=batch_size,
        n_epochs=args.n_epochs,
        gamma=args.gamma,
        gae_lambda=args.gae_lambda,
        clip_range=args.clip_range,
        ent_coef=args.ent_coef,
        vf_coef=args.vf_coef,
        max_grad_norm=args.max_grad_norm,
        tensorboard_log=tensorboard_log,
        seed=args.seed,
        device=_device(args.device),
        verbose=0,
    )


def main(args: Args) -> dict[str, Any]:
    """Train and save; returns the step count, wall time, SPS and the last logged values."""
    run_dir = Path(
        args.run_dir or Path("runs") / f"sb3_{args.env_id}__{args.bonus}__{args.seed}__{int(time.time())}"
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    (run_dir / "args.json").write_text(json.dumps(dataclasses.asdict(args), indent=2))
    venv = make_env(args)
    model = make_model(args, venv, tensorboard_log=str(run_dir))
    callback = ExplorationMetricsCallback(venv)
    start = time.perf_counter()
    model.learn(
        args.total_timesteps,
        callback=callback,
        tb_log_name="ppo",
        progress_bar=args.progress,
    )
    elapsed = time.perf_counter() - start
    model.save(run_dir / "model.zip")
    episodes = list(model.ep_info_buffer)
    result = {
        "timesteps": int(model.num_timesteps),
        "seconds": round(elapsed, 1),
        "sps": round(model.num_timesteps / elapsed, 1),
        "episodes_in_buffer": len(episodes),
        "mean_return": float(sum(e["r"] for e in episodes) / len(episodes)) if episodes else None,
        "bonus_last_rollout": {k: round(float(v), 5) for k, v in callback.last_metrics.items()},
        "run_dir": str(run_dir),
    }
    venv.close()
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
