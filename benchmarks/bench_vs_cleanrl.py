"""Our PPO+RND against a CleanRL-equivalent reference program, paired on the CPU (issue 16).

    python benchmarks/bench_vs_cleanrl.py                       # 8 envs, 16,384 steps, 1 and 2 threads, 3 pairs
    python benchmarks/bench_vs_cleanrl.py --threads 1 --pairs 5 --json-out /tmp/vs_cleanrl.json

The reference is NOT CleanRL's code. It is this project's own re-implementation of the program
that CleanRL's cleanrl/ppo_rnd_envpool.py runs (vwxyzjn/cleanrl, read at commit 0b8eaae), kept to
the same networks and the same work per step and per update, so that its speed stands for
CleanRL's on the same machine:
- one envpool pool of all the envs, stepped synchronously, with CleanRL's env settings (sticky
  actions 0.25, episodic life, reward clipping in the env);
- rollout storage in float32; per step two policy forwards (the values, then the action), the
  action copied to the host, and a target and predictor forward (with autograd recording, as
  CleanRL's) for the step's curiosity reward, normalized by float64 observation statistics;
  episode bookkeeping in numpy and a TensorBoard scalar per finished episode;
- after the rollout: the discounted-return filter and the reward std in numpy; GAE as a Python
  loop over the time steps on tensors; the observation statistics from the rollout's last frames
  (numpy, float64); the RND input of the whole batch normalized once;
- per minibatch (4 epochs x 4): target and predictor on all its samples with a random 25 %
  training the predictor, a policy forward, the clipped policy loss, the clipped extrinsic value
  loss, the intrinsic value loss and the entropy, one backward, the gradient norm clipped over
  the policy and the predictor together, Adam (eps 1e-5), and a `.item()` for the clip fraction;
  per update a few logged scalars and a linearly annealed learning rate.
The networks are ours to the layer (tests/test_bench_vs_cleanrl.py loads our policy's and RND's
weights into the reference's networks and compares their outputs). Where CleanRL's arithmetic
has a known bug (its return filter runs across envs, CleanRL issue #360) the reference filters
along time as ours does: the same cost, the right statistics.

Pairing: every run is a fresh process with the same torch thread count; the two programs
alternate (pair i runs ours first when i is even and the reference first when i is odd), and the
ratio ours / reference is taken within each pair, then summarized as min / median / max.
SPS is CleanRL's: int(steps / seconds) over the training updates, counted from the first rollout
(after the env is made and the one warm-up rollout that starts the RND observation statistics;
CleanRL's own clock also counts the warm-up); steady SPS leaves out the first update.
`process_seconds` is each whole process, imports and env creation included.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Categorical

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROGRAMS = ("ours", "reference")


@dataclass
class Bench:
    env_id: str = "MontezumaRevenge-v5"
    """Atari environment of both programs"""
    num_envs: int = 8
    """envs of both programs"""
    num_steps: int = 128
    """steps per env per rollout"""
    num_minibatches: int = 4
    """minibatches per epoch"""
    update_epochs: int = 4
    """epochs per update"""
    total_timesteps: int = 16_384
    """training steps of each run (16 updates at the defaults)"""
    warmup_rollouts: int = 1
    """random-agent rollouts that start the RND observation statistics (untimed)"""
    threads: tuple[int, ...] = (1, 2)
    """torch thread counts; every count gets its own pairs"""
    pairs: int = 3
    """runs of each program per thread count, alternating"""
    seed: int = 1
    """seed of both programs"""
    ours_cpu_bf16: bool = False
    """run ours with --cpu-bf16 (bf16 autocast on the CPU: other numerics than the float32 reference)"""
    json_out: str | None = None
    """also write the runs and the summary as JSON here"""

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps


@dataclass(frozen=True)
class ReferenceHyperparameters:
    """ppo_rnd_envpool.py's defaults (the speed does not depend on the values, only on the work)."""

    learning_rate: float = 1e-4
    gamma: float = 0.999
    int_gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_coef: float = 0.1
    ent_coef: float = 0.001
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    ext_coef: float = 2.0
    int_coef: float = 1.0
    update_proportion: float = 0.25
    obs_clip: float = 5.0


HYPER = ReferenceHyperparameters()


# --- the reference's networks: the Nature CNN policy with two value heads, RND's target/predictor ---


def _init(layer: nn.Module, std: float = math.sqrt(2)) -> nn.Module:
    nn.init.orthogonal_(layer.weight, std)
    nn.init.zeros_(layer.bias)
    return layer


def _conv_stack(in_channels: int, activation: type[nn.Module]) -> list[nn.Module]:
    return [
        _init(nn.Conv2d(in_channels, 32, 8, stride=4)),
        activation(),
        _init(nn.Conv2d(32, 64, 4, stride=2)),
        activation(),
        _init(nn.Conv2d(64, 64, 3, stride=1)),
        activation(),
        nn.Flatten(),
    ]


class ReferencePolicy(nn.Module):
    """Frames / 255 -> conv stack -> 256 -> 448; an actor MLP; a residual value layer and two critics."""

    def __init__(self, num_actions: int):
        super().__init__()
        self.trunk = nn.Sequential(
            *_conv_stack(4, nn.ReLU),
            _init(nn.Linear(3136, 256)),
            nn.ReLU(),
            _init(nn.Linear(256, 448)),
            nn.ReLU(),
        )
        self.actor = nn.Sequential(
            _init(nn.Linear(448, 448), 0.01), nn.ReLU(), _init(nn.Linear(448, num_actions), 0.01)
        )
        self.value_layer = nn.Sequential(_init(nn.Linear(448, 448), 0.1), nn.ReLU())
        self.critic_ext = _init(nn.Linear(448, 1), 0.01)
        self.critic_int = _init(nn.Linear(448, 1), 0.01)

    def values(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.trunk(frames / 255.0)
        features = self.value_layer(hidden) + hidden
        return self.critic_ext(features), self.critic_int(features)

    def act(self, frames: torch.Tensor, action: torch.Tensor | None = None):
        """(action, log-prob, entropy, v_ext, v_int); samples the action when none is given."""
        hidden = self.trunk(frames / 255.0)
        dist = Categorical(logits=self.actor(hidden))
        if action is None:
            action = dist.sample()
        features = self.value_layer(hidden) + hidden
        return (
            action,
            dist.log_prob(action),
            dist.entropy(),
            self.critic_ext(features),
            self.critic_int(features),
        )


class ReferenceRND(nn.Module):
    """A frozen random target (conv stack -> 512) and a trained predictor (conv stack -> 512 -> 512 -> 512)."""

    def __init__(self):
        super().__init__()
        self.target = nn.Sequential(*_conv_stack(1, nn.LeakyReLU), _init(nn.Linear(3136, 512)))
        self.predictor = nn.Sequential(
            *_conv_stack(1, nn.LeakyReLU),
            _init(nn.Linear(3136, 512)),
            nn.ReLU(),
            _init(nn.Linear(512, 512)),
            nn.ReLU(),
            _init(nn.Linear(512, 512)),
        )
        self.target.requires_grad_(False)


# --- the two programs ------------------------------------------------------------------------------


def reference_run(bench: Bench) -> dict[str, Any]:
    """Train the reference program; its SPS as CleanRL computes it, over the training updates."""
    import envpool
    from gymnasium.wrappers.utils import RunningMeanStd
    from torch.utils.tensorboard import SummaryWriter

    random.seed(bench.seed)
    np.random.seed(bench.seed)
    torch.manual_seed(bench.seed)
    T, N, B = bench.num_steps, bench.num_envs, bench.batch_size
    minibatch_size = B // bench.num_minibatches
    num_updates = bench.total_timesteps // B
    pool = envpool.make(
        bench.env_id,
        env_type="gymnasium",
        num_envs=N,
        episodic_life=True,
        reward_clip=True,
        seed=bench.seed,
        repeat_action_probability=0.25,
    )
    num_actions = int(pool.action_space.n)
    policy, rnd = ReferencePolicy(num_actions), ReferenceRND()
    trained = list(policy.parameters()) + list(rnd.predictor.parameters())
    optimizer = torch.optim.Adam(trained, lr=HYPER.learning_rate, eps=1e-5)
    obs_rms, reward_rms = RunningMeanStd(shape=(1, 1, 84, 84)), RunningMeanStd(shape=())
    return_filter = np.zeros(N)

    obs = torch.zeros((T, N, 4, 84, 84))
    actions, logprobs, rewards, curiosity, dones, values_ext, values_int = (
        torch.zeros((T, N)) for _ in range(7)
    )

    # warm-up: a random agent's last frames start the observation statistics
    next_frames, _ = pool.reset()
    for _rollout in range(bench.warmup_rollouts):
        frames = []
        for _ in range(T):
            next_frames, *_ = pool.step(np.random.randint(0, num_actions, size=N))
            frames.append(next_frames[:, 3:4])
        obs_rms.update(np.concatenate(frames).astype(np.float64))
    next_obs, next_done = torch.Tensor(next_frames), torch.zeros(N)
    episode_return, episode_length = np.zeros(N), np.zeros(N, dtype=np.int64)

    def rnd_input(last_frames: torch.Tensor) -> torch.Tensor:
        mean, var = torch.from_numpy(obs_rms.mean), torch.from_numpy(obs_rms.var)  # float64, as CleanRL's
        return ((last_frames - mean) / torch.sqrt(var)).clip(-HYPER.obs_clip, HYPER.obs_clip).float()

    with tempfile.TemporaryDirectory() as log_dir:
        writer = SummaryWriter(log_dir)
        global_step = 0
        start = time.time()
        steady_start, steady_step = start, 0
        for update in range(num_updates):
            optimizer.param_groups[0]["lr"] = (1.0 - update / num_updates) * HYPER.learning_rate
            for step in range(T):
                global_step += N
                obs[step], dones[step] = next_obs, next_done
                with torch.no_grad():
                    v_ext, v_int = policy.values(obs[step])
                    values_ext[step], values_int[step] = v_ext.flatten(), v_int.flatten()
                    action, logprob, *_ = policy.act(obs[step])
                actions[step], logprobs[step] = action, logprob
                frames_np, reward, terminated, truncated, info = pool.step(action.cpu().numpy())
                done = terminated | truncated
                rewards[step] = torch.tensor(reward).view(-1)
                next_obs, next_done = torch.Tensor(frames_np), torch.Tensor(done)
                rnd_in = rnd_input(next_obs[:, 3:4])
                curiosity[step] = (rnd.target(rnd_in) - rnd.predictor(rnd_in)).pow(2).sum(1).detach() / 2
                episode_return += info["reward"]
                episode_length += 1
                game_over = done & (info["lives"] == 0)
                for env in np.flatnonzero(game_over):
                    writer.add_scalar("charts/episodic_return", episode_return[env], global_step)
                    writer.add_scalar("charts/episodic_length", episode_length[env], global_step)
                episode_return[game_over], episode_length[game_over] = 0.0, 0

            # intrinsic rewards divided by the std of their discounted return (per env, along time)
            curiosity_np = curiosity.numpy()
            filtered = np.empty_like(curiosity_np, dtype=np.float64)
            for t in range(T):
                return_filter = return_filter * HYPER.int_gamma + curiosity_np[t]
                filtered[t] = return_filter
            reward_rms.update_from_moments(filtered.mean(), filtered.var(), filtered.size)
            curiosity /= float(np.sqrt(reward_rms.var))

            with torch.no_grad():
                last_ext, last_int = (v.reshape(1, -1) for v in policy.values(next_obs))
                adv_ext, adv_int = torch.zeros_like(rewards), torch.zeros_like(curiosity)
                gae_ext, gae_int = torch.zeros(N), torch.zeros(N)
                for t in reversed(range(T)):
                    not_done = 1.0 - (next_done if t == T - 1 else dones[t + 1])
                    after_ext = last_ext if t == T - 1 else values_ext[t + 1]
                    after_int = last_int if t == T - 1 else values_int[t + 1]
                    delta_ext = rewards[t] + HYPER.gamma * after_ext * not_done - values_ext[t]
                    delta_int = curiosity[t] + HYPER.int_gamma * after_int - values_int[t]  # non-episodic
                    gae_ext = delta_ext + HYPER.gamma * HYPER.gae_lambda * not_done * gae_ext
                    gae_int = delta_int + HYPER.int_gamma * HYPER.gae_lambda * gae_int
                    adv_ext[t], adv_int[t] = gae_ext, gae_int
                ret_ext, ret_int = adv_ext + values_ext, adv_int + values_int

            b_obs = obs.reshape(-1, 4, 84, 84)
            b_actions, b_logprobs = actions.reshape(-1).long(), logprobs.reshape(-1)
            b_adv = (HYPER.int_coef * adv_int + HYPER.ext_coef * adv_ext).reshape(-1)
            b_ret_ext, b_ret_int, b_val_ext = ret_ext.reshape(-1), ret_int.reshape(-1), values_ext.reshape(-1)
            obs_rms.update(b_obs[:, 3:4].numpy())
            b_rnd_in = rnd_input(b_obs[:, 3:4])

            order = np.arange(B)
            clipfracs = []
            for _ in range(bench.update_epochs):
                np.random.shuffle(order)
                for begin in range(0, B, minibatch_size):
                    mb = order[begin : begin + minibatch_size]
                    prediction, target = rnd.predictor(b_rnd_in[mb]), rnd.target(b_rnd_in[mb])
                    forward_error = F.mse_loss(prediction, target.detach(), reduction="none").mean(-1)
                    train_mask = (torch.rand(len(mb)) < HYPER.update_proportion).float()
                    forward_loss = (forward_error * train_mask).sum() / train_mask.sum().clamp(min=1.0)

                    _, new_logprob, entropy, new_ext, new_int = policy.act(b_obs[mb], b_actions[mb])
                    logratio = new_logprob - b_logprobs[mb]
                    ratio = logratio.exp()
                    with torch.no_grad():
                        approx_kl = ((ratio - 1) - logratio).mean()
                        clipfracs.append(((ratio - 1.0).abs() > HYPER.clip_coef).float().mean().item())
                    adv = b_adv[mb]
                    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                    clipped_ratio = ratio.clamp(1 - HYPER.clip_coef, 1 + HYPER.clip_coef)
                    pg_loss = torch.max(-adv * ratio, -adv * clipped_ratio).mean()
                    new_ext, new_int = new_ext.view(-1), new_int.view(-1)
                    ext_clipped = b_val_ext[mb] + (new_ext - b_val_ext[mb]).clamp(
                        -HYPER.clip_coef, HYPER.clip_coef
                    )
                    ext_loss = (
                        0.5
                        * torch.max((new_ext - b_ret_ext[mb]) ** 2, (ext_clipped - b_ret_ext[mb]) ** 2).mean()
                    )
                    int_loss = 0.5 * ((new_int - b_ret_int[mb]) ** 2).mean()
                    entropy_mean = entropy.mean()
                    loss = (
                        pg_loss
                        - HYPER.ent_coef * entropy_mean
                        + HYPER.vf_coef * (ext_loss + int_loss)
                        + forward_loss
                    )
                    optimizer.zero_grad()
                    loss.backward()
                    nn.utils.clip_grad_norm_(trained, HYPER.max_grad_norm)
                    optimizer.step()

            sps = int(global_step / (time.time() - start))
            for name, value in (
                ("charts/learning_rate", optimizer.param_groups[0]["lr"]),
                ("losses/value_loss", (ext_loss + int_loss).item()),
                ("losses/policy_loss", pg_loss.item()),
                ("losses/entropy", entropy_mean.item()),
                ("losses/approx_kl", approx_kl.item()),
                ("losses/fwd_loss", forward_loss.item()),
                ("losses/clipfrac", float(np.mean(clipfracs))),
                ("charts/SPS", sps),
            ):
                writer.add_scalar(name, value, global_step)
            if update == 0:
                steady_start, steady_step = time.time(), global_step
        steady_sps = (
            (global_step - steady_step) / (time.time() - steady_start) if num_updates > 1 else float("nan")
        )
        writer.close()
    pool.close()
    return {"sps": sps, "steady_sps": steady_sps, "global_step": global_step}


def ours_run(bench: Bench, threads: int) -> dict[str, Any]:
    """Train our PPO+RND (the paper preset at the bench's sizes); SPS as logged, over the training updates."""
    from agents.ppo import PRESETS, train

    with tempfile.TemporaryDirectory() as run_dir:
        config = dataclasses.replace(
            PRESETS["paper"],
            env_id=bench.env_id,
            num_envs=bench.num_envs,
            num_steps=bench.num_steps,
            num_minibatches=bench.num_minibatches,
            update_epochs=bench.update_epochs,
            total_timesteps=bench.total_timesteps,
            rnd_warmup_iterations=bench.warmup_rollouts,
            seed=bench.seed,
            cpu_bf16=bench.ours_cpu_bf16,
            device="cpu",
            torch_threads=threads,
            run_dir=run_dir,
            progress=False,
            checkpoint_interval=10**9,
        )
        result = train(config)
    return {
        "sps": result["charts/SPS"],
        "steady_sps": result.get("steady_sps", float("nan")),
        "global_step": result["global_step"],
    }


# --- pairing ---------------------------------------------------------------------------------------


def run_in_process(program: str, threads: int, bench: Bench) -> dict[str, Any]:
    """One run of `program` in a fresh process with `threads` torch threads; its figures."""
    settings = json.dumps(dataclasses.asdict(bench))
    start = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, __file__, "_run", program, str(threads), settings],
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    if completed.returncode != 0:
        raise RuntimeError(f"the {program} run failed:\n{completed.stderr[-3000:]}")
    figures = json.loads(completed.stdout.strip().splitlines()[-1])
    return {"program": program, "threads": threads, "process_seconds": round(seconds, 2), **figures}


def summarize(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def main(bench: Bench) -> dict[str, Any]:
    if bench.batch_size % bench.num_minibatches or bench.total_timesteps < 2 * bench.batch_size:
        raise SystemExit(
            f"--num-minibatches {bench.num_minibatches} must divide the batch {bench.batch_size} and "
            f"--total-timesteps {bench.total_timesteps} must cover two updates ({2 * bench.batch_size})"
        )
    report: dict[str, Any] = {"bench": dataclasses.asdict(bench), "by_threads": {}}
    for threads in bench.threads:
        pairs = []
        for index in range(bench.pairs):
            order = PROGRAMS if index % 2 == 0 else PROGRAMS[::-1]  # ABBA: drift in load cancels
            runs = {program: run_in_process(program, threads, bench) for program in order}
            pairs.append(
                {
                    "order": list(order),
                    **runs,
                    "ratio": runs["ours"]["sps"] / runs["reference"]["sps"],
                    "steady_ratio": runs["ours"]["steady_sps"] / runs["reference"]["steady_sps"],
                    "process_ratio": runs["reference"]["process_seconds"] / runs["ours"]["process_seconds"],
                }
            )
            print(
                f"threads {threads} pair {index + 1}: ours {runs['ours']['sps']} SPS, "
                f"reference {runs['reference']['sps']} SPS, ratio {pairs[-1]['ratio']:.3f}",
                flush=True,
            )
        report["by_threads"][str(threads)] = {
            "pairs": pairs,
            "ours_sps": summarize([p["ours"]["sps"] for p in pairs]),
            "reference_sps": summarize([p["reference"]["sps"] for p in pairs]),
            "ratio": summarize([p["ratio"] for p in pairs]),
            "steady_ratio": summarize([p["steady_ratio"] for p in pairs]),
            "process_ratio": summarize([p["process_ratio"] for p in pairs]),
        }
    print("| torch threads | ours SPS (min/median/max) | reference SPS | ours / reference (min/median/max) |")
    print("| --- | --- | --- | --- |")
    for threads, summary in report["by_threads"].items():
        ours, ref, ratio = summary["ours_sps"], summary["reference_sps"], summary["ratio"]
        print(
            f"| {threads} | {ours['min']} / {ours['median']} / {ours['max']} "
            f"| {ref['min']} / {ref['median']} / {ref['max']} "
            f"| {ratio['min']:.3f} / {ratio['median']:.3f} / {ratio['max']:.3f} |"
        )
    if bench.json_out:
        Path(bench.json_out).write_text(json.dumps(report, indent=2))
    return report


def run_here(program: str, threads: str, settings: str) -> None:
    """The run process: print one JSON line with the run's SPS."""
    torch.set_num_threads(int(threads))
    values = json.loads(settings)
    bench = Bench(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
    figures = ours_run(bench, int(threads)) if program == "ours" else reference_run(bench)
    print(json.dumps(figures))


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "_run":
        run_here(*sys.argv[2:])
    else:
        import tyro

        main(tyro.cli(Bench))
