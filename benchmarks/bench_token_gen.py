"""Generated tokens per second of the text agent's batched rollout generation (agents.llm.policy).

Prompts are real TextWorldExpress coin-collector observations with their admissible commands (rendered
as in training). For every batch size and decoding mode (free text, or constrained to the admissible
commands by the token trie), `TextPolicy.generate` runs `--turns` timed turns after one warm-up turn;
the table reports generated action tokens per second (terminators included), actions per second and
the mean tokens per action.

    python benchmarks/bench_token_gen.py                         # tiny model built on the fly, cpu
    python benchmarks/bench_token_gen.py --device cuda --batch-sizes 1 8 32 128 512
    python benchmarks/bench_token_gen.py --device cuda --model-path ~/models/Qwen2.5-0.5B --dtype bfloat16

A randomly initialized tiny model rarely emits the terminator, so its free-text actions run to
--max-new-tokens; constrained actions stop after the command (2-4 tokens here).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402
import tyro  # noqa: E402


@dataclass
class Args:
    """Batched generation throughput of the text agent."""

    batch_sizes: list[int] = field(default_factory=lambda: [1, 8, 32, 128])
    """batch sizes (envs generating one action each per turn)"""
    modes: list[str] = field(default_factory=lambda: ["free", "constrained"])
    """decoding modes: free (text up to a terminator) and constrained (admissible commands only)"""
    turns: int = 3
    """timed turns per (batch size, mode)"""
    device: str = "cpu"
    """cpu or cuda"""
    model_path: str | None = None
    """a local causal LM directory; none: a tiny GPT-2-style model built from coin-collector text"""
    dtype: str = "float32"
    """float32 or bfloat16"""
    tiny_layers: int = 2
    """tiny model: layers"""
    tiny_embd: int = 64
    """tiny model: hidden size"""
    max_new_tokens: int = 12
    """token budget of an action"""
    max_prompt_tokens: int = 192
    """prompt budget"""
    temperature: float = 1.0
    """sampling temperature"""
    env_kwargs: str = "numLocations=4,includeDoors=1,numDistractorItems=0"
    """coin-collector parameters of the prompts"""
    threads: int = 1
    """torch threads on cpu (0: torch's default)"""
    seed: int = 0
    """seed"""
    states_file: str | None = None
    """read the prompts' game states (and the tiny model's corpus) from this JSON instead of playing
    TextWorldExpress, e.g. on a machine without Java; written by --save-states"""
    save_states: str | None = None
    """write the collected game states and corpus to this JSON"""


def collect_states(args: Args, n_prompts: int) -> tuple[list, list[str]]:
    """Game states along coin-collector gold paths, and the text a tiny model's tokenizer is trained on."""
    from agents.llm.bc import collect_gold
    from agents.llm.policy import PromptRenderer
    from agents.llm.ppo import parse_env_kwargs
    from envs.text import make_text_vec_env

    envs = make_text_vec_env(
        "TWX-CoinCollector-v0", 8, num_workers=0, seed=args.seed, **parse_env_kwargs(args.env_kwargs)
    )
    try:
        raw = PromptRenderer(None, args.max_prompt_tokens, history_turns=2)
        data = collect_gold(envs, max(16, n_prompts // 4), lambda o, c, h: raw.text(o, c, h), seed=args.seed)
        # states along the gold paths: (observation, admissible commands, history)
        states = []
        obs, infos = envs.reset(seed=args.seed + 1)
        history = [[] for _ in range(8)]
        while len(states) < n_prompts:
            commands = []
            for i in range(8):
                states.append((obs[i], list(infos["admissible_commands"][i]), list(history[i])))
                gold = infos["gold_path"][i]
                commands.append(gold[min(len(history[i]), len(gold) - 1)] if gold else "look around")
            next_obs, _, term, trunc, infos = envs.step(commands)
            for i in range(8):
                history[i] = [] if term[i] or trunc[i] else history[i] + [(obs[i], commands[i])]
            obs = next_obs
    finally:
        envs.close()
    return states, data.texts + [r["prompt"] + r["completion"] for r in data.records]


def main(args: Args) -> list[dict]:
    from agents.llm.policy import load_policy

    if args.threads > 0 and args.device == "cpu":
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    n_prompts = max(args.batch_sizes)
    if args.states_file:
        saved = json.loads(Path(args.states_file).read_text())
        states = [(o, c, [tuple(turn) for turn in h]) for o, c, h in saved["states"]]
        corpus = saved["corpus"]
        if len(states) < n_prompts:
            raise SystemExit(
                f"{args.states_file} holds {len(states)} states; --batch-sizes needs {n_prompts}"
            )
    else:
        states, corpus = collect_states(args, n_prompts)
    if args.save_states:
        Path(args.save_states).write_text(json.dumps({"states": states, "corpus": corpus}))
    with tempfile.TemporaryDirectory() as tmp:
        policy = load_policy(
            args.model_path,
            device=args.device,
            dtype=torch.bfloat16 if args.dtype == "bfloat16" else None,
            build_dir=tmp,
            corpus=corpus,
            tiny={"n_layer": args.tiny_layers, "n_embd": args.tiny_embd, "n_positions": 512},
            max_prompt_tokens=args.max_prompt_tokens,
        )
        policy.eval()
    prompts = [policy.renderer.ids(o, c, h) for o, c, h in states[:n_prompts]]
    commands = [c for _, c, _ in states[:n_prompts]]
    sync = torch.cuda.synchronize if policy.device.type == "cuda" else (lambda: None)
    rows = []
    for mode in args.modes:
        for b in args.batch_sizes:
            kwargs = {
                "max_new_tokens": args.max_new_tokens,
                "temperature": args.temperature,
                "commands": commands[:b] if mode == "constrained" else None,
            }
            policy.generate(prompts[:b], **kwargs)  # warm-up
            sync()
            tokens, start = 0, time.perf_counter()
            for _ in range(args.turns):
                gen = policy.generate(prompts[:b], **kwargs)
                tokens += int(gen.mask.sum())
            sync()
            wall = time.perf_counter() - start
            rows.append(
                {
                    "mode": mode,
                    "batch": b,
                    "tokens_per_s": tokens / wall,
                    "actions_per_s": b * args.turns / wall,
                    "tokens_per_action": tokens / (b * args.turns),
                    "ms_per_turn": 1000 * wall / args.turns,
                }
            )
            print(
                f"{mode:12s} batch {b:4d}: {rows[-1]['tokens_per_s']:9.0f} tokens/s, "
                f"{rows[-1]['actions_per_s']:8.1f} actions/s, {rows[-1]['ms_per_turn']:8.1f} ms/turn",
                flush=True,
            )
    model = args.model_path or f"tiny GPT-2 ({args.tiny_layers} layers, {args.tiny_embd} wide)"
    print(
        f"\nmodel: {model}; device: {policy.device}; dtype: {args.dtype}; "
        f"max_new_tokens {args.max_new_tokens}"
    )
    print("| mode | batch | tokens/s | actions/s | tokens/action | ms/turn |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['mode']} | {r['batch']} | {r['tokens_per_s']:.0f} | {r['actions_per_s']:.1f} | "
            f"{r['tokens_per_action']:.2f} | {r['ms_per_turn']:.1f} |"
        )
    return rows


if __name__ == "__main__":
    main(tyro.cli(Args))
