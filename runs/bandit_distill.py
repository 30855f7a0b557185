"""Algorithm distillation for bandits: fine-tune a small language model on UCB's choices, then let it play.

    python runs/bandit_distill.py --help
    python runs/bandit_distill.py                                   # a tiny GPT-2 built from a config
    python runs/bandit_distill.py --model-path /models/qwen2.5-0.5b  # any local causal LM directory
    python runs/bandit_distill.py --mode ucb --framing buttons --selection likelihood

Steps (BanditBench's "AD" recipe, small):
  1. run UCB (alpha 0.5) on a batch of Bernoulli bandit instances and write its trajectories as SFT
     data, out_dir/data.jsonl: {"prompt": the history as text, "completion": " <arm UCB chose>"};
  2. fine-tune a causal LM on it with a plain torch loop (loss on the completion tokens only) and save
     it to out_dir/model (a local path, or a tiny GPT-2 with a tokenizer trained on the prompts);
  3. play fresh instances with the fine-tuned model as an LLMBanditAgent, and with UCB and uniform on
     the very same instances and reward draws; print the cumulative regret of each (and write
     out_dir/results.json).

Nothing is downloaded: `--model-path` must be a local directory.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402
import tyro  # noqa: E402

from agents.bandits import UCB, BanditAgent, Uniform, run  # noqa: E402
from agents.llm_bandit import LLMBanditAgent, read_jsonl, write_distillation_data  # noqa: E402
from envs.bandit_text import completion_for  # noqa: E402
from envs.bandits import BANDIT_SPECS, BanditSpec, BatchedBandit, get_spec  # noqa: E402
from explore.llm.local import LocalCausalLM, build_tiny_causal_lm, finetune_sft, sft_loss  # noqa: E402

log = logging.getLogger("bandit_distill")


@dataclass
class DistillConfig:
    """Algorithm distillation of UCB into a language model, on Bernoulli bandits."""

    out_dir: str = "runs/bandit_distill"
    """where data.jsonl, model/ and results.json go"""
    framing: Literal["video", "clothes", "buttons", "ads"] = "video"
    mode: Literal["raw", "summary", "ucb"] = "summary"
    """how the history is shown in the prompt"""
    bandit_id: str | None = None
    """a registered bandit id (envs/bandits.py); otherwise a Bernoulli bandit from --num-arms and --delta"""
    num_arms: int = 5
    delta: float = 0.2
    """gap between the best arm's mean and the others' (0.2: means 0.4 / 0.6, the hard setting)"""
    train_instances: int = 32
    train_horizon: int = 100
    every: int = 1
    """keep every n-th round of each trajectory as a training example"""
    model_path: str | None = None
    """a local model directory to fine-tune; None builds a tiny GPT-2 from a config"""
    n_layer: int = 2
    n_embd: int = 64
    n_head: int = 2
    vocab_size: int = 512
    epochs: int = 2
    lr: float = 1e-3
    batch_size: int = 16
    max_steps: int | None = None
    eval_instances: int = 8
    eval_horizon: int = 50
    selection: Literal["generate", "likelihood"] = "generate"
    """generate: parse the model's text; likelihood: the arm name the model scores highest"""
    fallback: Literal["uniform", "ucb"] = "uniform"
    """policy for malformed replies (uniform, so that a poor model cannot borrow UCB's regret)"""
    seed: int = 0
    num_threads: int = 1
    """torch CPU threads (0: torch's default, one per core). 1 suits the tiny default model: more
    threads only contend, and on a busy 2-core machine torch's default ran many times slower"""
    device: str = "cpu"


# --- the bandit, the baselines and the rollout: envs/bandits.py and agents/bandits.py ----------------


def bandit_spec(cfg: DistillConfig) -> BanditSpec:
    """The task: `--bandit-id`, else the Bernoulli preset with `--num-arms` and `--delta` (a spec of the
    same family when no preset has them: BanditBench's one best arm at 0.5 + delta/2, the rest 0.5 - delta/2)."""
    if cfg.bandit_id:
        return get_spec(cfg.bandit_id)  # an unknown id lists the close matches
    for spec in BANDIT_SPECS.values():
        if spec.family == "bernoulli" and spec.num_arms == cfg.num_arms and spec.delta == cfg.delta:
            return spec
    return BanditSpec(
        id=f"Bandit-Bernoulli-K{cfg.num_arms}-Delta{cfg.delta:g}",
        family="bernoulli",
        num_arms=cfg.num_arms,
        horizon=cfg.train_horizon,
        delta=cfg.delta,
    )


def make_baseline(name: str, seed: int) -> BanditAgent:
    return UCB(alpha=0.5, seed=seed) if name == "ucb" else Uniform(seed=seed)


def play(bandit: BatchedBandit, agent: Any, horizon: int) -> dict[str, torch.Tensor]:
    """(T, B) arms, rewards and per-round regret."""
    traj = run(bandit, agent, horizon=horizon)
    return {"arms": traj.arms, "rewards": traj.rewards, "regret": traj.best_expected - traj.chosen_expected}


def agreement(lm: LocalCausalLM, records: list[dict[str, str]], framing: str, num_arms: int) -> float:
    """How often the model's most likely arm is the one UCB chose (chance: about 1 / num_arms).

    The SFT loss alone cannot tell a model that learned the policy from one that learned only how
    often each arm name appears; agreement can.
    """
    options = [completion_for(framing, num_arms, a) for a in range(num_arms)]
    scores = lm.choice_logprobs([r["prompt"] for r in records], options)
    target = torch.tensor([options.index(r["completion"]) for r in records])
    return (scores.argmax(1) == target).double().mean().item()


def summarize(regret: torch.Tensor) -> tuple[float, float]:
    """Mean and standard error over instances of the cumulative regret at the last round."""
    total = regret.double().sum(0)
    sem = total.std().item() / math.sqrt(len(total)) if len(total) > 1 else 0.0
    return total.mean().item(), sem


# --- the three steps -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    cfg = tyro.cli(DistillConfig, args=argv, prog="runs/bandit_distill.py")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    # 1. UCB trajectories -> SFT data
    spec = bandit_spec(cfg)
    bandit = BatchedBandit(spec, cfg.train_instances, seed=cfg.seed, device=cfg.device)
    teacher = play(bandit, make_baseline("ucb", cfg.seed), cfg.train_horizon)
    binary = spec.family == "bernoulli"
    horizon = cfg.eval_horizon  # the horizon the student will be told it plays
    n = write_distillation_data(
        out / "data.jsonl",
        teacher["arms"],
        teacher["rewards"],
        cfg.framing,
        bandit.num_arms,
        cfg.mode,
        horizon=horizon,
        binary=binary,
        every=cfg.every,
    )
    records = read_jsonl(out / "data.jsonl")
    log.info(
        "wrote %d SFT records (UCB on %d instances x %d rounds) to %s",
        n,
        cfg.train_instances,
        cfg.train_horizon,
        out / "data.jsonl",
    )

    # 2. fine-tune
    if cfg.model_path is None:
        corpus = [r["prompt"] + r["completion"] for r in records[:: max(1, len(records) // 2000)]]
        base = build_tiny_causal_lm(
            out / "base",
            corpus,
            vocab_size=cfg.vocab_size,
            n_layer=cfg.n_layer,
            n_embd=cfg.n_embd,
            n_head=cfg.n_head,
            seed=cfg.seed,
        )
    else:
        base = Path(cfg.model_path)
    lm = LocalCausalLM(base, device=cfg.device)
    held_out = records[-min(len(records) // 10, 256) :] if len(records) >= 20 else records
    train = records[: len(records) - len(held_out)] if held_out is not records else records
    loss_before = sft_loss(lm, held_out)
    agree_before = agreement(lm, held_out, cfg.framing, bandit.num_arms)
    t0 = time.perf_counter()
    losses = finetune_sft(
        lm,
        train,
        epochs=cfg.epochs,
        lr=cfg.lr,
        batch_size=cfg.batch_size,
        max_steps=cfg.max_steps,
        seed=cfg.seed,
        log_every=50,
    )
    train_s = time.perf_counter() - t0
    loss_after = sft_loss(lm, held_out)
    agree_after = agreement(lm, held_out, cfg.framing, bandit.num_arms)
    lm.save(out / "model")
    log.info(
        "fine-tuned %s for %d steps in %.1f s: held-out SFT loss %.3f -> %.3f, agreement with UCB's "
        "choice %.3f -> %.3f (chance %.3f); saved to %s",
        base,
        len(losses),
        train_s,
        loss_before,
        loss_after,
        agree_before,
        agree_after,
        1 / bandit.num_arms,
        out / "model",
    )

    # 3. evaluate on fresh instances, all three agents on the same instances and draws
    student = LLMBanditAgent(
        LocalCausalLM(out / "model", device=cfg.device),
        cfg.framing,
        cfg.mode,
        cfg.fallback,
        selection=cfg.selection,
        horizon=horizon,
        binary=binary,
        max_new_tokens=4,
        seed=cfg.seed,
    )  # told the horizon and reward kind its training prompts stated
    results: dict[str, Any] = {
        "config": asdict(cfg),
        "records": n,
        "train_steps": len(losses),
        "train_seconds": train_s,
        "sft_loss_before": loss_before,
        "sft_loss_after": loss_after,
        "agreement_before": agree_before,
        "agreement_after": agree_after,
        "agents": {},
    }
    eval_seed = cfg.seed + 1000
    agents = {
        "distilled LLM": student,
        "UCB": make_baseline("ucb", cfg.seed),
        "uniform": make_baseline("uniform", cfg.seed),
    }
    for name, agent in agents.items():
        bandit = BatchedBandit(spec, cfg.eval_instances, seed=eval_seed, device=cfg.device)
        t0 = time.perf_counter()
        traj = play(bandit, agent, cfg.eval_horizon)
        mean, sem = summarize(traj["regret"])
        entry = {
            "regret_mean": mean,
            "regret_sem": sem,
            "seconds": time.perf_counter() - t0,
            # share of all pulls that went to the agent's favourite arm index: 1.0 is a constant policy
            "top_arm_share": torch.bincount(traj["arms"].reshape(-1).cpu(), minlength=bandit.num_arms)
            .max()
            .item()
            / traj["arms"].numel(),
        }
        if agent is student:
            entry.update(student.stats())
            entry["malformed_examples"] = student.malformed_examples[:5]
        results["agents"][name] = entry

    print(
        f"\ncumulative regret after {cfg.eval_horizon} rounds, {cfg.eval_instances} instances "
        f"({cfg.framing}, {cfg.mode}, selection={cfg.selection}, fallback={cfg.fallback}):"
    )
    print(f"{'agent':<16}{'regret':>10}{'s.e.':>8}{'fallback rate':>15}{'top-arm share':>15}")
    for name, e in results["agents"].items():
        rate = f"{e['fallback_rate']:.3f}" if "fallback_rate" in e else "-"
        print(
            f"{name:<16}{e['regret_mean']:>10.2f}{e['regret_sem']:>8.2f}{rate:>15}{e['top_arm_share']:>15.2f}"
        )
    student_regret = results["agents"]["distilled LLM"]["regret_mean"]
    for name in ("UCB", "uniform"):
        print(f"distilled LLM - {name}: {student_regret - results['agents'][name]['regret_mean']:+.2f}")
    results["seconds"] = time.perf_counter() - started
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"results in {out / 'results.json'} ({results['seconds']:.0f} s in all)")
    return results


if __name__ == "__main__":
    main()
