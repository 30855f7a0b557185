"""Behaviour cloning on gold paths, and a success-rate evaluation of a text policy.

TextWorldExpress and TextWorld generate a walkthrough with every game (`infos["gold_path"]`). Replaying
it in the vector env gives (prompt, command) pairs rendered exactly as the policy sees them during RL
(same history, same admissible commands); supervised fine-tuning on them (cross-entropy on the command
tokens and the terminator, `explore.llm.local.finetune_sft`) makes a small model competent-ish before
reinforcement learning starts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from agents.llm.policy import PromptRenderer, TextPolicy
from explore.llm.local import finetune_sft, sft_loss

Render = Callable[[str, Sequence[str], Sequence[tuple[str, str]]], str]


@dataclass
class GoldData:
    records: list[dict[str, str]]  # {"prompt", "completion"}: the completion is " <command>"
    episodes: int  # finished episodes replayed
    success_rate: float  # of the replayed gold paths (1.0 unless a walkthrough fails)
    texts: list[str]  # every observation and admissible command seen (a tokenizer corpus)


def collect_gold(
    envs, episodes: int, render: Render, *, history_turns: int = 2, seed: int | None = None
) -> GoldData:
    """Replay the gold path of `episodes` episodes across the vector env's envs.

    `render(obs, admissible_commands, history)` makes the prompt (history: (observation, command)
    pairs, oldest first). A step whose gold path has run out (it should not) sends "look around" and
    records nothing. Episodes still running when enough have finished are dropped.
    """
    obs, infos = envs.reset(seed=seed)
    n = len(obs)
    gold = [list(g) for g in infos["gold_path"]]
    index = [0] * n
    history: list[list[tuple[str, str]]] = [[] for _ in range(n)]
    pending: list[list[dict[str, str]]] = [[] for _ in range(n)]
    records: list[dict[str, str]] = []
    texts: list[str] = []
    finished, successes = 0, 0
    while finished < episodes:
        commands = []
        for i in range(n):
            admissible = list(infos["admissible_commands"][i])
            texts.append(obs[i])
            texts.append(" | ".join(admissible))
            if index[i] < len(gold[i]):
                cmd = gold[i][index[i]]
                pending[i].append(
                    {
                        "prompt": render(obs[i], admissible, history[i][-history_turns:]),
                        "completion": " " + cmd,
                    }
                )
            else:
                cmd = "look around"
            commands.append(cmd)
        next_obs, _, terminated, truncated, infos = envs.step(commands)
        for i in range(n):
            history[i].append((obs[i], commands[i]))
            index[i] += 1
            if terminated[i] or truncated[i]:
                if finished < episodes:
                    finished += 1
                    successes += bool(infos["success"][i])
                    records.extend(pending[i])
                pending[i], history[i], index[i] = [], [], 0
                gold[i] = list(infos["gold_path"][i])
        obs = next_obs
    return GoldData(records, finished, successes / max(finished, 1), texts)


def behaviour_clone(
    policy: TextPolicy,
    records: Sequence[dict[str, str]],
    *,
    epochs: int = 3,
    lr: float = 1e-3,
    batch_size: int = 16,
    seed: int = 0,
) -> dict[str, float]:
    """Fine-tune the policy's LM on gold (prompt, command) records; returns the loss before and after."""
    before = sft_loss(policy.lm, records, batch_size=batch_size)
    losses = finetune_sft(policy.lm, records, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
    after = sft_loss(policy.lm, records, batch_size=batch_size)
    return {"loss_before": before, "loss_after": after, "steps": float(len(losses))}


def evaluate_success(
    policy: TextPolicy,
    envs,
    episodes: int,
    *,
    max_new_tokens: int = 16,
    temperature: float = 0.0,
    constrained: bool = False,
    seed: int | None = None,
    max_turns: int = 10_000,
) -> dict[str, float]:
    """Success rate, mean return and malformed-action rate of the policy over `episodes` episodes."""
    obs, infos = envs.reset(seed=seed)
    n = len(obs)
    renderer: PromptRenderer = policy.renderer
    history: list[list[tuple[str, str]]] = [[] for _ in range(n)]
    returns, successes, malformed, turns = [], [], 0, 0
    for _ in range(max_turns):
        if len(returns) >= episodes:
            break
        admissible = [list(c) for c in infos["admissible_commands"]]
        prompts = [
            renderer.ids(obs[i], admissible[i] if renderer.show_commands else None, history[i])
            for i in range(n)
        ]
        gen = policy.generate(
            prompts,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            commands=admissible if constrained else None,
        )
        malformed += sum(gen.malformed)
        turns += n
        next_obs, _, terminated, truncated, infos = envs.step(gen.texts)
        for i in range(n):
            history[i].append((obs[i], gen.texts[i]))
            if terminated[i] or truncated[i]:
                history[i] = []
                if len(returns) < episodes:
                    returns.append(float(infos["episode_return"][i]))
                    successes.append(bool(infos["success"][i]))
        obs = next_obs
    return {
        "success_rate": float(np.mean(successes)) if successes else float("nan"),
        "episodic_return": float(np.mean(returns)) if returns else float("nan"),
        "episodes": float(len(returns)),
        "malformed_actions": malformed / max(turns, 1),
    }
