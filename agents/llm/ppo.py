"""Token-level PPO for language-model agents in text games (POAD, NTPO, action-level PPO, GRPO, TEMPO).

Read it top to bottom: config, validation, then `train`, which builds the policy (a local causal LM, or a
tiny GPT-2-style model built from game text), optionally clones the gold paths, then alternates
rollouts and PPO updates. A rollout is `num_turns` turns of `num_envs` text games; turn t of env n
generates an action of up to `max_new_tokens` tokens, stored in (T, N, A) tensors on the device
(token ids, log-probabilities, values, entropies and the mask of generated tokens) next to the
left-padded prompts (T, N, P). Credit (`--credit`):

- `poad`: POAD's Bellman backup with action decomposition (explore.credit.token_advantages, mode "bad"):
  discount 1 and trace lambda between the tokens of an action, reward and gamma at its last token;
  per-token ratio clipping, value loss on token returns.
- `ntpo`: naive token-level PPO, gamma and gamma * lambda between every token (mode "ntpo").
- `action`: TWOSOME-style: the action's log-probability is the mean of its token log-probabilities
  (token normalization), one value per action (at the prompt's last position), GAE over turns
  (explore.credit.action_advantages), ratio clipping per action.
- `grpo`: critic-free; groups of `group_size` envs play the same game seed, each env's first episode
  of the rollout is scored by its return, normalized within the group (explore.credit.group_advantages)
  and broadcast to every action token of the episode.
- `tempo`: GRPO plus TEMPO's prefix-tree term over each episode's concatenated action tokens
  (explore.credit.prefix_tree_advantages): it is non-zero where episodes of a group branch.

`--bonus` adds an intrinsic reward to every turn's reward, `--int-coef` times the bonus (after the
rollout, in one batched pass, like the grid trainer's; logged as charts/intrinsic_reward). A text
observation enters a bonus as the caption of the state (the goal, then the observation's lines as
sentences: `envs.text.babyai_text.caption`, which fits every text game), as a string and as an int64
key of it (explore.bonus documents the text batch). The bonuses that read text: count, count_e,
count_e1 (counts of the hashed caption) and judge (Motif/ELLM on the captions); the others are refused
by `validate`, naming the bonus (their networks and cells are for tensors).

`--forking-mask` keeps the policy-gradient term only on the 20 % highest-entropy action tokens of the
rollout (Wang et al. 2025). Autoreset is SAME_STEP (envs.text): when an episode ends on a turn, the
observation returned is already the next episode's; truncated turns bootstrap from the value of the
true final observation's prompt (which lists no commands: the final state's admissible commands are
not reported), terminated ones do not.

Host synchronization: text generation must decode the tokens to send them to the games, which is one
device-to-host transfer per turn (plus, every `stop_check_every` tokens, a check that every action has
ended); rewards and dones go to the device once per turn; episode statistics are read once per update.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from agents.llm.policy import TextPolicy, left_pad, load_policy
from agents.ppo_loss import masked_mean, ppo_loss
from explore.bonus import BonusContext, BonusModule
from explore.checkpoint import Checkpointer, given_fields, resolve_resume, save_config
from explore.combine import TextBonusSettings, build_bonus, check_bonus, check_bonus_reads
from explore.credit import (
    action_advantages,
    forking_token_mask,
    group_advantages,
    key_token_values,
    pack_tokens,
    prefix_tree_advantages,
    token_advantages,
    unpack_tokens,
)
from explore.device import resolve_device
from explore.errors import MAX_SEED, ConfigError, UnknownEnvError
from explore.logger import Logger
from explore.obs import text_keys
from explore.system import env_threads, set_torch_threads

CREDITS = ("action", "ntpo", "poad", "grpo", "tempo", "ktae")
EPISODIC_CREDITS = ("grpo", "tempo", "ktae")  # critic-free: whole episodes, groups of envs on one game seed
BASE_MODEL_DIR = "base_model"  # where a tiny model built on the fly is saved inside the run directory


@dataclass
class Config(TextBonusSettings):  # the flags of the bonuses that read text (--state-key, --judge-kind, ...)
    """Token-level PPO for a language-model agent on a text game (default: POAD on a small coin collector)."""

    # --- experiment ---
    env_id: str = "TWX-CoinCollector-v0"
    """text game id (envs.text): TWX-CoinCollector-v0, TextWorld-v0, BabyAI-Text-GoTo-v0, ..."""
    env_kwargs: str | None = None
    """game parameters as 'key=value,key=value' (ints, floats and true/false are converted), passed to
    envs.text.make_text_vec_env; TextWorldExpress takes its gameParams names (numLocations, includeDoors).
    Default: the game's own, except the coin collector's small game (numLocations=2,includeDoors=0,
    numDistractorItems=0)"""
    max_episode_steps: int = 20
    """episode cut in turns (truncation bootstraps)"""
    num_workers: int = 0
    """processes that run the games (0: in this process, fine for TextWorldExpress's ~1 ms steps)"""
    seed: int = 1
    """seed of torch, numpy, python and the games"""
    total_timesteps: int = 20_000
    """total environment steps (turns over all envs)"""
    device: str = "auto"
    """'auto' (cuda when available), 'cpu', 'cuda' or 'cuda:N'"""
    run_dir: str | None = None
    """where TensorBoard logs, config.json and checkpoint.pt go (None: runs/<env>__<credit>__<seed>__<t>)"""
    resume: str | None = None
    """a run directory to resume from its last checkpoint, with its saved config
    (flags given here override it)"""
    checkpoint_interval: int = 10
    """save a checkpoint every this many updates (and at the end)"""
    progress: bool = True
    """show a progress bar with SPS and the success rate"""
    torch_threads: int = 0
    """CPU threads for torch (0: the usable CPUs less the env worker processes, at least 1; logged)"""

    # --- credit ---
    credit: str = "poad"
    """credit assignment: poad (token-level Bellman backup with action decomposition), ntpo (naive token-level
    PPO), action (TWOSOME-style action-level PPO, mean token log-probability), grpo (group-normalized episode
    returns), tempo (GRPO + prefix-tree branching term), ktae (GRPO + key-token values; a positive episode return
    counts as correct)"""
    forking_mask: bool = False
    """train the policy only on the 20% highest-entropy action tokens of each rollout"""
    forking_fraction: float = 0.2
    """the fraction of tokens --forking-mask keeps"""
    group_size: int = 4
    """grpo/tempo: envs per group; a group plays the same game seed (must divide --num-envs)"""

    # --- intrinsic bonus ---
    bonus: str = "none"
    """an intrinsic bonus expression over the bonuses that read text (count, count_e, count_e1, judge; sums and
    products of them, e.g. count_e+0.5*judge), or 'none'"""
    int_coef: float = 0.1
    """the turn's reward is the game's (times --reward-scale) plus this times the intrinsic bonus"""

    # --- model ---
    model_path: str | None = None
    """a local directory with a causal LM (save_pretrained output: Qwen, Llama, GPT-2); none: build a tiny
    GPT-2-style model in <run_dir>/base_model, its tokenizer trained on game text"""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """weights' dtype (bfloat16 halves memory on a GPU; log-probabilities are computed in float32)"""
    lora_rank: int = 0
    """LoRA adapters of this rank on every linear layer (peft); 0 trains all weights.
    The value head always trains"""
    tiny_layers: int = 2
    """tiny model: transformer layers"""
    tiny_embd: int = 64
    """tiny model: hidden size"""
    tiny_heads: int = 2
    """tiny model: attention heads"""
    tiny_vocab: int = 512
    """tiny model: BPE vocabulary size"""
    tiny_corpus_episodes: int = 32
    """tiny model: gold-path episodes whose text trains the tokenizer"""

    # --- prompts and generation ---
    max_prompt_tokens: int = 192
    """prompt budget in tokens: older history is dropped first, then the prompt is cut from the left"""
    history_turns: int = 2
    """previous (observation, command) turns shown in the prompt"""
    show_commands: bool = True
    """list the admissible commands in the prompt"""
    constrained: bool = False
    """constrain decoding to the admissible commands (prefix trie over token ids)"""
    max_new_tokens: int = 12
    """token budget of an action (terminator included)"""
    temperature: float = 1.0
    """sampling temperature; the policy trained is softmax(logits / temperature)"""
    fallback_action: str = "look around"
    """command sent when a generated action is empty (counted in charts/malformed_actions)"""
    stop_check_every: int = 4
    """generation stops early when every action has ended, checked every this many tokens (one host sync;
    0: always generate max_new_tokens tokens)"""

    # --- behaviour cloning warm start ---
    bc_episodes: int = 0
    """gold-path episodes to clone before RL (0: none)"""
    bc_epochs: int = 3
    """epochs over the gold (prompt, command) pairs"""
    bc_lr: float = 1e-3
    """behaviour cloning learning rate"""
    bc_eval_episodes: int = 16
    """episodes to measure the success rate after cloning (sampled at --temperature, and greedy)"""

    # --- PPO ---
    num_envs: int = 8
    """parallel games"""
    num_turns: int = 16
    """turns per env per rollout (grpo/tempo: at most; the rollout ends when every env has ended
    its episode)"""
    learning_rate: float = 3e-4
    """AdamW learning rate"""
    weight_decay: float = 0.0
    """AdamW weight decay"""
    anneal_lr: bool = False
    """anneal the learning rate linearly to 0"""
    gamma: float = 0.95
    """discount per turn (POAD's reference default 0.95)"""
    gae_lambda: float = 0.95
    """GAE lambda (POAD's reference default 0.95)"""
    num_minibatches: int = 4
    """minibatches of turns per epoch"""
    update_epochs: int = 2
    """epochs over each rollout"""
    norm_adv: bool = True
    """normalize advantages per minibatch (action, ntpo, poad; grpo/tempo are group-normalized)"""
    clip_coef: float = 0.2
    """PPO ratio clipping"""
    ent_coef: float = 0.001
    """entropy bonus coefficient"""
    vf_coef: float = 0.5
    """value loss coefficient (0.5 * squared error; unused by grpo/tempo)"""
    max_grad_norm: float = 0.5
    """gradient norm clip"""
    reward_scale: float = 1.0
    """rewards are multiplied by this for learning (returns are logged unscaled)"""

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_turns


SMALL_COIN_COLLECTOR = "numLocations=2,includeDoors=0,numDistractorItems=0"


def env_kwargs_of(config: Config) -> dict[str, Any]:
    """The game parameters of a run: --env-kwargs, or the default described in Config.env_kwargs."""
    if config.env_kwargs is not None:
        return parse_env_kwargs(config.env_kwargs)
    return parse_env_kwargs(SMALL_COIN_COLLECTOR) if config.env_id == "TWX-CoinCollector-v0" else {}


def parse_env_kwargs(text: str) -> dict[str, Any]:
    """'numLocations=2,includeDoors=false' -> {'numLocations': 2, 'includeDoors': False}."""
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"--env-kwargs {text!r}: {part!r} is not key=value")
        value = value.strip()
        parsed: Any = value
        if value.lower() in ("true", "false"):
            parsed = value.lower() == "true"
        else:
            for cast in (int, float):
                try:
                    parsed = cast(value)
                    break
                except ValueError:
                    pass
        out[key.strip()] = parsed
    return out


def validate(config: Config) -> None:
    """Raise ConfigError naming the bad value and what is valid; called before any environment starts."""

    def fail(name: str, value, valid: str) -> None:
        raise ConfigError(f"--{name.replace('_', '-')} {value!r} is invalid: {valid}")

    from explore.errors import check_finite_floats

    check_finite_floats(config)  # first: nan passes every range comparison below
    if config.credit not in CREDITS:
        fail("credit", config.credit, f"choose one of {', '.join(CREDITS)}")
    for name in (
        "num_envs",
        "num_turns",
        "num_minibatches",
        "update_epochs",
        "checkpoint_interval",
        "max_new_tokens",
        "max_prompt_tokens",
        "max_episode_steps",
        "total_timesteps",
        "bc_epochs",
        "tiny_layers",
        "tiny_embd",
        "tiny_heads",
    ):
        if getattr(config, name) < 1:
            fail(name, getattr(config, name), "it must be an integer >= 1")
    for name in (
        "num_workers",
        "torch_threads",
        "tiny_corpus_episodes",
        "lora_rank",
        "bc_episodes",
        "bc_eval_episodes",
        "history_turns",
        "stop_check_every",
    ):
        if getattr(config, name) < 0:
            fail(name, getattr(config, name), "it must be >= 0")
    if config.max_new_tokens < 2:
        fail(
            "max_new_tokens",
            config.max_new_tokens,
            "an action needs >= 2 tokens (a command and the terminator)",
        )
    if config.num_minibatches > config.batch_size:
        fail("num_minibatches", config.num_minibatches, f"at most num_envs * num_turns = {config.batch_size}")
    for name in ("gamma", "gae_lambda"):
        if not 0.0 <= getattr(config, name) <= 1.0:
            fail(name, getattr(config, name), "it must lie in [0, 1]")
    if not 0.0 < config.forking_fraction <= 1.0:
        fail("forking_fraction", config.forking_fraction, "it must lie in (0, 1]")
    for name in ("learning_rate", "clip_coef", "max_grad_norm", "temperature", "bc_lr", "reward_scale"):
        if not getattr(config, name) > 0:
            fail(name, getattr(config, name), "it must be > 0")
    for name in ("ent_coef", "vf_coef", "weight_decay", "int_coef"):
        if getattr(config, name) < 0:
            fail(name, getattr(config, name), "a coefficient must be >= 0")
    if config.tiny_embd % config.tiny_heads:
        fail("tiny_heads", config.tiny_heads, f"it must divide --tiny-embd {config.tiny_embd}")
    if config.tiny_vocab < 300:
        fail("tiny_vocab", config.tiny_vocab, "it must be >= 300 (256 byte tokens, specials and merges)")
    if config.credit in EPISODIC_CREDITS:
        if config.group_size < 2 or config.num_envs % config.group_size:
            fail(
                "group_size",
                config.group_size,
                f"--credit {config.credit} needs groups of >= 2 envs that divide "
                f"--num-envs {config.num_envs}",
            )
        if config.env_id.startswith("BabyAI-Text-"):
            fail(
                "credit",
                config.credit,
                f"{config.env_id} cannot give a group one game: its envpool pool seeds env i with s + i; "
                "choose --credit action, poad or ntpo, or a TWX/TextWorld game",
            )
        if config.num_turns < config.max_episode_steps:
            fail(
                "num_turns",
                config.num_turns,
                f"--credit {config.credit} scores whole episodes: it must be >= --max-episode-steps "
                f"{config.max_episode_steps}",
            )
    if config.model_path is not None:
        from explore.llm.local import check_model_dir

        check_model_dir(config.model_path)  # names the path and what is missing
    env_kwargs_of(config)
    resolve_device(config.device)
    check_bonus(config.bonus, config)  # the bonus flags, and where the expression goes wrong
    import envs.text as text_envs

    if config.env_id not in text_envs.ALL_IDS:
        raise UnknownEnvError(config.env_id, text_envs.ALL_IDS)  # lists close matches
    if config.env_id not in text_envs.text_ids():
        fail("env_id", config.env_id, "its game package is not installed: pip install 'explore-rl[text]'")
    check_bonus_reads(config.bonus, config, "text", config.env_id)  # names the bonus and the game
    from explore.errors import check_seed, check_writable_dir

    # the envs play seed .. seed + num_envs - 1 and the tiny model is built from seed + 10_000
    check_seed(config.seed, span=max(config.num_envs, 10_001))
    # last, as it touches the disk: the run directory (or where it will be created) takes files
    if config.run_dir is not None:
        check_writable_dir(config.run_dir, flag="--run-dir")
    elif config.resume is not None:
        check_writable_dir(config.resume, flag="--resume")
    else:
        check_writable_dir("runs", flag="--run-dir")


def episode_game_seeds(seed: int, update: int, num_envs: int, group_size: int) -> list[int]:
    """The game seed of each env in rollout `update` of an episodic credit (grpo/tempo/ktae): the
    `group_size` envs of group g play seed start + g, start = seed * 1_000_003 + update * num_groups.

    Runs and updates get disjoint seed ranges while that stays below 2**31; past it (from --seed 2148)
    it wraps modulo, keeping the groups' seeds consecutive and every seed a valid int32, which the
    envpool simulators assert (a Python int of any size reached them before)."""
    num_groups = num_envs // group_size
    start = wrap_seed(seed * 1_000_003 + update * num_groups, num_groups)
    return [start + i // group_size for i in range(num_envs)]


def wrap_seed(start: int, span: int) -> int:
    """`start` modulo the seeds s with s .. s + span - 1 all valid (int32): unchanged when it fits."""
    return start % (MAX_SEED + 2 - span)


def default_run_dir(config: Config) -> Path:
    return Path("runs") / f"{config.env_id}__{config.credit}__{config.seed}__{int(time.time())}"


def make_envs(config: Config, seed: int):
    import envs.text as text_envs

    kwargs = env_kwargs_of(config)
    try:
        return text_envs.make_text_vec_env(
            config.env_id,
            config.num_envs,
            num_workers=config.num_workers,
            seed=seed,
            max_episode_steps=config.max_episode_steps,
            **kwargs,
        )
    except TypeError as exc:  # a parameter the game does not take
        raise ConfigError(f"--env-kwargs {sorted(kwargs)} do not fit {config.env_id}: {exc}") from exc


def build_policy(config: Config, run_dir: Path, device: torch.device, envs) -> TextPolicy:
    """The policy of `config`: a local model, or a tiny one built from gold-path text of `envs`
    (once: it is saved in <run_dir>/base_model and reloaded on resume)."""
    from agents.llm.bc import collect_gold
    from agents.llm.policy import PromptRenderer

    corpus = None
    build_dir = run_dir / BASE_MODEL_DIR
    if config.model_path is None and not (build_dir / "config.json").is_file():
        renderer = PromptRenderer(None, config.max_prompt_tokens, config.history_turns, config.show_commands)
        data = collect_gold(
            envs,
            config.tiny_corpus_episodes,
            lambda o, c, h: renderer.text(o, c, h),
            history_turns=config.history_turns,
            seed=config.seed + 10_000,
        )
        corpus = data.texts + [r["prompt"] + r["completion"] for r in data.records]
    policy = load_policy(
        config.model_path,
        device=device,
        dtype=torch.bfloat16 if config.dtype == "bfloat16" else None,
        build_dir=build_dir,
        corpus=corpus,
        tiny={
            "vocab_size": config.tiny_vocab,
            "n_layer": config.tiny_layers,
            "n_embd": config.tiny_embd,
            "n_head": config.tiny_heads,
            "n_positions": max(256, config.max_prompt_tokens + config.max_new_tokens),
            "seed": config.seed,
        },
        lora_rank=config.lora_rank,
        max_prompt_tokens=config.max_prompt_tokens,
        history_turns=config.history_turns,
        show_commands=config.show_commands,
        fallback_action=config.fallback_action,
    )
    limit = getattr(policy.model.config.get_text_config(), "max_position_embeddings", None)
    if limit is not None and config.max_prompt_tokens + config.max_new_tokens > limit:
        raise ConfigError(
            f"--max-prompt-tokens {config.max_prompt_tokens} + --max-new-tokens {config.max_new_tokens} "
            "exceeds "
            f"the model's {limit} positions"
        )
    return policy


# --- the intrinsic bonus ---------------------------------------------------------------------------

# what a bonus builder is told of text observations: strings (their batches carry keys and the strings)
TEXT_OBSERVATIONS = gym.spaces.Text(max_length=1 << 20)


def make_text_bonus(config: Config, device: torch.device, run_dir: Path | None = None) -> BonusModule | None:
    """The bonus expression of `config` for text observations, or None for 'none'."""
    if config.bonus == "none":
        return None
    context = BonusContext(
        config.num_envs,
        TEXT_OBSERVATIONS,
        None,
        device,
        gamma_int=config.gamma,
        run_dir=None if run_dir is None else str(run_dir),
    )
    bonus = build_bonus(config.bonus, context, config)
    trained = [name for name, p in bonus.named_parameters() if p.requires_grad]
    if trained:  # no optimizer here trains a bonus's networks; the text bonuses have none
        raise ConfigError(
            f"--bonus {config.bonus!r}: the text trainer does not train bonus networks ({trained[0]}, ...)"
        )
    return bonus


def state_captions(observations: Any, goals: Any) -> list[str]:
    """What a bonus reads of text states: the goal, then the observation's lines as sentences."""
    from envs.text.babyai_text import captions

    return captions([str(o) for o in observations], [str(g or "") for g in goals])


def bonus_batch(
    states: list[list[str]], next_states: list[list[str]], ro: Rollout, device: torch.device
) -> dict[str, Any]:
    """The text batch of the turns played (explore.bonus): keys of the captions and the captions, time-major."""
    turns, num_envs = len(states), len(states[0])
    flat_states = [s for row in states for s in row]
    flat_next = [s for row in next_states for s in row]
    return {
        "obs": text_keys(flat_states, device).view(turns, num_envs, 1),
        "next_obs": text_keys(flat_next, device).view(turns, num_envs, 1),
        "valid": ro.valid[:turns],
        "dones": (ro.terminated | ro.truncated)[:turns],
        "obs_text": flat_states,
        "next_obs_text": flat_next,
    }


# --- rollout storage ---------------------------------------------------------------------------------


@dataclass
class Rollout:
    """One rollout of T turns x N envs, on the device."""

    prompt_ids: Tensor  # (T, N, P) long, left-padded
    prompt_mask: Tensor  # (T, N, P) bool
    action_ids: Tensor  # (T, N, A) long
    token_mask: Tensor  # (T, N, A) bool: generated tokens (terminator included)
    logprobs: Tensor  # (T, N, A)
    values: Tensor  # (T, N, A): V before each token
    entropies: Tensor  # (T, N, A)
    allowed: Tensor | None  # (T, N, A, K) constrained decoding's allowed tokens, -1 padded
    rewards: Tensor  # (T, N)
    terminated: Tensor  # (T, N) bool
    truncated: Tensor  # (T, N) bool
    final_values: Tensor  # (T, N): V(final observation's prompt) where truncated, else 0
    valid: Tensor  # (T, N) bool: turns that count (grpo/tempo: each env's first episode)

    @classmethod
    def allocate(cls, T: int, N: int, P: int, A: int, pad_id: int, device: torch.device) -> Rollout:
        z = lambda *shape, dtype=torch.float32: torch.zeros(shape, dtype=dtype, device=device)  # noqa: E731
        return cls(
            prompt_ids=torch.full((T, N, P), pad_id, dtype=torch.long, device=device),
            prompt_mask=z(T, N, P, dtype=torch.bool),
            action_ids=torch.full((T, N, A), pad_id, dtype=torch.long, device=device),
            token_mask=z(T, N, A, dtype=torch.bool),
            logprobs=z(T, N, A),
            values=z(T, N, A),
            entropies=z(T, N, A),
            allowed=None,
            rewards=z(T, N),
            terminated=z(T, N, dtype=torch.bool),
            truncated=z(T, N, dtype=torch.bool),
            final_values=z(T, N),
            valid=z(T, N, dtype=torch.bool),
        )


# --- credit ----------------------------------------------------------------------------------------


def compute_advantages(
    config: Config, ro: Rollout, last_value: Tensor, episode_returns: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """(advantages, returns), both (T, N, A) token slots (action credit: broadcast over the action's tokens).

    episode_returns (N,): grpo/tempo's score of each env's episode in the rollout.
    """
    mask = ro.token_mask
    if config.credit in ("poad", "ntpo"):
        return token_advantages(
            ro.rewards,
            ro.values,
            mask,
            last_value,
            ro.terminated,
            ro.truncated,
            config.gamma,
            config.gae_lambda,
            mode="bad" if config.credit == "poad" else "ntpo",
            final_values=ro.final_values,
        )
    if config.credit == "action":
        adv, ret = action_advantages(
            ro.rewards,
            ro.values[..., 0],
            last_value,
            ro.terminated,
            ro.truncated,
            config.gamma,
            config.gae_lambda,
            final_values=ro.final_values,
        )
        m = mask.float()
        return adv.unsqueeze(-1) * m, ret.unsqueeze(-1) * m
    assert episode_returns is not None
    T, N, A = mask.shape
    group_ids = torch.arange(N, device=mask.device) // config.group_size
    episode_mask = mask & ro.valid.unsqueeze(-1)
    grpo = (
        group_advantages(episode_returns, group_ids).view(1, N, 1).to(ro.values.dtype) * episode_mask.float()
    )
    if config.credit == "grpo":
        return grpo, torch.zeros_like(ro.values)
    # tempo and ktae score tokens within a group: each env's episode is one response, its action
    # tokens concatenated in time order
    packed_ids = pack_tokens(ro.action_ids, episode_mask)  # (L, N)
    lengths = episode_mask.sum((0, 2))
    packed_mask = torch.arange(packed_ids.shape[0], device=mask.device)[:, None] < lengths[None, :]
    packed = torch.zeros(packed_ids.shape, device=mask.device)
    for g in range(N // config.group_size):
        cols = slice(g * config.group_size, (g + 1) * config.group_size)
        ids, valid, returns = packed_ids[:, cols].T, packed_mask[:, cols].T, episode_returns[cols]
        if config.credit == "tempo":
            packed[:, cols] = prefix_tree_advantages(ids, valid, returns).T.float()
        else:  # ktae: a positive episode return counts as a correct rollout
            packed[:, cols] = key_token_values(ids, valid, returns > 0).T.float()
    per_token = unpack_tokens(packed, episode_mask).to(ro.values.dtype)
    advantages = per_token if config.credit == "tempo" else grpo + per_token
    return advantages, torch.zeros_like(ro.values)


# --- the PPO update ------------------------------------------------------------------------------


def ppo_update(
    policy: TextPolicy,
    optimizer: torch.optim.Optimizer,
    ro: Rollout,
    advantages: Tensor,
    returns: Tensor,
    config: Config,
) -> dict[str, float]:
    """`update_epochs` epochs of `num_minibatches` minibatches of turns; returns the mean losses."""
    device = ro.action_ids.device
    flat = lambda x: x.reshape(-1, *x.shape[2:])  # noqa: E731  (T, N, ...) -> (T * N, ...)
    samples = ro.valid.reshape(-1).nonzero().squeeze(-1)
    policy_mask = ro.token_mask & ro.valid.unsqueeze(-1)
    if config.forking_mask:
        policy_mask = forking_token_mask(ro.entropies, policy_mask, config.forking_fraction)
    data = {
        "prompt_ids": flat(ro.prompt_ids),
        "prompt_mask": flat(ro.prompt_mask),
        "action_ids": flat(ro.action_ids),
        "token_mask": flat(ro.token_mask),
        "policy_mask": flat(policy_mask),
        "logprobs": flat(ro.logprobs),
        "values": flat(ro.values),
        "advantages": flat(advantages),
        "returns": flat(returns),
    }
    if ro.allowed is not None:
        data["allowed"] = flat(ro.allowed)
    action_level = config.credit == "action"
    use_critic = config.credit not in EPISODIC_CREDITS
    mb_size = math.ceil(samples.numel() / config.num_minibatches)
    sums: dict[str, float] = {}
    count = 0
    for _ in range(config.update_epochs):
        order = samples[torch.randperm(samples.numel(), device=device)]
        for start in range(0, order.numel(), mb_size):
            mb = {k: v[order[start : start + mb_size]] for k, v in data.items()}
            # trim the padding columns no sample of the minibatch uses (one sync per minibatch)
            first = int(mb["prompt_mask"].any(0).float().argmax())
            width = int(mb["token_mask"].any(0).sum())
            tmask = mb["token_mask"][:, :width]
            newlogp, entropy, newvalue = policy.evaluate_actions(
                mb["prompt_ids"][:, first:],
                mb["prompt_mask"][:, first:],
                mb["action_ids"][:, :width],
                tmask,
                allowed=mb["allowed"][:, :width] if "allowed" in mb else None,
                temperature=config.temperature,
            )
            oldlogp = mb["logprobs"][:, :width]
            adv = mb["advantages"][:, :width]
            pmask = mb["policy_mask"][:, :width]
            if action_level:
                # TWOSOME's token normalization: the action's log-probability is its tokens' mean
                pm = pmask.float()
                n_tok = pm.sum(-1).clamp(min=1)
                logratio = ((newlogp - oldlogp) * pm).sum(-1) / n_tok
                a = adv[:, 0]
                weights = (pm.sum(-1) > 0).float()
            else:
                logratio = newlogp - oldlogp
                a = adv
                weights = pmask.float()
            if config.norm_adv and config.credit not in EPISODIC_CREDITS:
                sel = weights > 0
                if bool(sel.sum() > 1):
                    a = torch.where(sel, (a - a[sel].mean()) / (a[sel].std() + 1e-8), a)
            token_mean = masked_mean(tmask)
            if not use_critic:
                values = []
            elif action_level:  # one value per action, at the prompt's last position
                values = [(newvalue[:, 0], mb["returns"][:, 0])]
            else:
                values = [(newvalue, mb["returns"][:, :width])]
            terms = ppo_loss(
                logratio,
                a,
                entropy,
                values,
                clip_coef=config.clip_coef,
                ent_coef=config.ent_coef,
                vf_coef=config.vf_coef,
                policy_mean=masked_mean(weights),
                entropy_mean=token_mean,
                value_mean=(lambda x: x.mean()) if action_level else token_mean,
            )
            loss = terms.loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(
                [p for g in optimizer.param_groups for p in g["params"]], config.max_grad_norm
            )
            optimizer.step()
            stats = torch.stack(
                [terms.policy, terms.value, terms.entropy, terms.approx_kl, terms.clipfrac]
            ).detach()
            for key, value in zip(
                ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac"), stats.tolist(), strict=True
            ):
                sums[key] = sums.get(key, 0.0) + value
            count += 1
    return {k: v / max(count, 1) for k, v in sums.items()}


# --- training ------------------------------------------------------------------------------------


def train(config: Config) -> dict[str, Any]:
    """Train (or resume) a run; returns the last logged scalars plus global_step and the BC results.

    With `config.resume` the run continues from its checkpoint with its saved config, the fields
    set in `config` on top (explore.checkpoint.resolve_resume; `main` passes the flags given)."""
    config = resolve_resume(config)
    validate(config)
    device = resolve_device(config.device)
    run_dir = Path(config.run_dir) if config.run_dir else default_run_dir(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpointer = Checkpointer(run_dir)
    resumed = checkpointer.load("cpu") if config.resume else None
    save_config(run_dir, dataclasses.replace(config, run_dir=str(run_dir), resume=None))
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)

    envs = make_envs(config, config.seed)
    try:
        return _train(config, run_dir, device, envs, resumed, checkpointer)
    finally:
        envs.close()


def _train(
    config: Config,
    run_dir: Path,
    device: torch.device,
    envs,
    resumed: dict | None,
    checkpointer: Checkpointer,
) -> dict[str, Any]:
    threads_note = set_torch_threads(config.torch_threads, env_threads([envs]))
    policy = build_policy(config, run_dir, device, envs)
    params = [p for p in policy.parameters() if p.requires_grad]
    bonus = make_text_bonus(config, device, run_dir)
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay, eps=1e-5)
    # events after the checkpoint's step are dropped (those at its step were logged before it was saved)
    logger = Logger(run_dir, resumed_step=resumed["global_step"] if resumed else None)
    checkpointer.before_save = logger.flush
    logger.text("system/torch_threads", threads_note)
    results: dict[str, Any] = {}

    global_step, start_update = 0, 0
    if resumed is not None:
        missing = policy.load_state_dict(resumed["policy"], strict=False)
        if missing.unexpected_keys:
            raise ConfigError(
                f"--resume {run_dir}: the checkpoint holds unknown weights {missing.unexpected_keys[:3]}"
            )
        optimizer.load_state_dict(resumed["optimizer"])
        if bonus is not None and resumed.get("bonus") is not None:
            bonus.load_state_dict(resumed["bonus"])
        global_step, start_update = resumed["global_step"], resumed["update"]
        checkpointer.restore_rng(resumed)
    else:
        logger.text("config", "\n".join(f"- {k}: {v}" for k, v in dataclasses.asdict(config).items()))
        if config.bc_episodes > 0:
            results.update(warm_start(config, policy, envs, logger))

    T, N, A, P = config.num_turns, config.num_envs, config.max_new_tokens, config.max_prompt_tokens
    ro = Rollout.allocate(T, N, P, A, policy.pad_id, device)
    renderer = policy.renderer
    episodic = config.credit in EPISODIC_CREDITS

    obs, infos = envs.reset(seed=wrap_seed(config.seed + 7919 * start_update, N))  # env i plays seed + i
    history: list[list[tuple[str, str]]] = [[] for _ in range(N)]
    episode_return = np.zeros(N)

    progress = tqdm(
        total=config.total_timesteps, initial=global_step, disable=not config.progress, unit="step"
    )
    start_time, start_step = time.time(), global_step
    logged: dict[str, float] = {}
    recent_success = float("nan")

    def prompts_for(observations, admissible) -> list[list[int]]:
        return [
            renderer.ids(observations[i], admissible[i] if config.show_commands else None, history[i])
            for i in range(N)
        ]

    update = start_update
    while global_step < config.total_timesteps:  # grpo/tempo rollouts end early: count steps, not updates
        if config.anneal_lr:
            optimizer.param_groups[0]["lr"] = config.learning_rate * max(
                0.0, 1.0 - global_step / config.total_timesteps
            )
        if episodic:
            # every group of group_size envs plays one game seed, from the start, once
            obs, infos = envs.reset(seed=episode_game_seeds(config.seed, update, N, config.group_size))
            history = [[] for _ in range(N)]
            episode_return[:] = 0.0
            if bonus is not None:  # every env starts a new episode: episodic counts restart
                bonus.reset(torch.ones(N, dtype=torch.bool, device=device))
        ro.valid.fill_(not episodic)
        ro.final_values.zero_()
        ro.token_mask.zero_()
        ro.rewards.zero_()
        ro.terminated.zero_()
        ro.truncated.zero_()
        alive = np.ones(N, dtype=bool)  # grpo/tempo: the env's first episode is still running
        finished: list[tuple[float, float, float]] = []  # (return, success, length) of finished episodes
        malformed = invalid = turns = 0
        steps_this_rollout = 0
        states: list[list[str]] = []  # the bonus's captions of each turn's state and of the state after
        next_states: list[list[str]] = []
        for t in range(T):
            admissible = [list(c) for c in infos["admissible_commands"]]
            goals = list(infos["goal"])
            prompts = prompts_for(obs, admissible)
            gen = policy.generate(
                prompts,
                max_new_tokens=A,
                temperature=config.temperature,
                commands=admissible if config.constrained else None,
                stop_check_every=config.stop_check_every,
            )
            pid, pmask = left_pad(prompts, policy.pad_id, P)
            ro.prompt_ids[t] = pid.to(device, non_blocking=True)
            ro.prompt_mask[t] = pmask.to(device, non_blocking=True)
            ro.action_ids[t] = gen.ids
            ro.token_mask[t] = gen.mask
            ro.logprobs[t] = gen.logprobs
            ro.values[t] = gen.values
            ro.entropies[t] = gen.entropies
            if gen.allowed is not None:
                if ro.allowed is None or ro.allowed.shape[-1] < gen.allowed.shape[-1]:
                    grown = torch.full((T, N, A, gen.allowed.shape[-1]), -1, dtype=torch.long, device=device)
                    if ro.allowed is not None:
                        grown[..., : ro.allowed.shape[-1]] = ro.allowed
                    ro.allowed = grown
                ro.allowed[t] = -1
                ro.allowed[t, :, :, : gen.allowed.shape[-1]] = gen.allowed
            if episodic:
                ro.valid[t] = torch.as_tensor(alive, device=device)
            next_obs, rewards, terminated, truncated, infos = envs.step(gen.texts)
            steps_this_rollout += N
            rewards = np.asarray(rewards, dtype=np.float32)
            terminated, truncated = np.asarray(terminated, bool), np.asarray(truncated, bool)
            ro.rewards[t] = torch.as_tensor(rewards * config.reward_scale, device=device)
            ro.terminated[t] = torch.as_tensor(terminated, device=device)
            ro.truncated[t] = torch.as_tensor(truncated, device=device)
            counted = alive if episodic else np.ones(N, dtype=bool)
            malformed += int(np.sum(np.asarray(gen.malformed) & counted))
            invalid += int(np.sum(np.asarray(infos["invalid_action"], bool) & counted))
            turns += int(counted.sum())
            episode_return += rewards * counted
            done = terminated | truncated
            if bonus is not None:  # the state after: the true final observation where the episode ended
                after = [infos["final_obs"][i] if done[i] else next_obs[i] for i in range(N)]
                states.append(state_captions(obs, goals))
                next_states.append(state_captions(after, np.where(done, goals, list(infos["goal"]))))
            if truncated.any() and not episodic:  # bootstrap from the true final observation
                idx = np.flatnonzero(truncated)
                final_prompts = [
                    renderer.ids(infos["final_obs"][i], None, history[i] + [(obs[i], gen.texts[i])])
                    for i in idx
                ]
                ro.final_values[t, torch.as_tensor(idx, device=device)] = policy.prompt_values(final_prompts)
            for i in range(N):
                history[i].append((obs[i], gen.texts[i]))
                if done[i]:
                    history[i] = []
                    if counted[i]:
                        success, length = float(bool(infos["success"][i])), float(infos["episode_length"][i])
                        finished.append((float(episode_return[i]), success, length))
                    episode_return[i] = 0.0
            obs = next_obs
            if episodic:
                alive &= ~done
                if not alive.any():
                    break
        global_step += steps_this_rollout
        intrinsic_mean = None
        if bonus is not None:  # one batched pass over the turns played, added to their rewards
            intrinsic = bonus.score(bonus_batch(states, next_states, ro, device))
            ro.rewards[: len(states)] += config.int_coef * intrinsic
            valid_turns = ro.valid[: len(states)]
            intrinsic_mean = (intrinsic * valid_turns).sum() / valid_turns.sum().clamp(min=1)

        # --- credit ---
        if episodic:
            returns_np = np.zeros(N, dtype=np.float32)
            # each env's first episode of the rollout; its return from the rewards of its valid turns
            returns_np[:] = (ro.rewards * ro.valid).sum(0).cpu().numpy()
            advantages, returns = compute_advantages(
                config, ro, torch.zeros(N, device=device), torch.as_tensor(returns_np, device=device)
            )
        else:
            last_value = policy.prompt_values(
                prompts_for(obs, [list(c) for c in infos["admissible_commands"]])
            )
            advantages, returns = compute_advantages(config, ro, last_value)

        # --- PPO update ---
        stats = ppo_update(policy, optimizer, ro, advantages, returns, config)

        # --- logging: one read of the rollout's statistics ---
        valid_mask = ro.token_mask & ro.valid.unsqueeze(-1)
        tokens_per_action = float(valid_mask.sum() / ro.valid.sum().clamp(min=1))
        if finished:
            recent_success = float(np.mean([s for _, s, _ in finished]))
        logger.episodes([(ret, length, success) for ret, success, length in finished], global_step)
        sps = int((global_step - start_step) / max(time.time() - start_time, 1e-9))
        logged = {
            "charts/SPS": sps,
            "charts/tokens_per_action": tokens_per_action,
            "charts/malformed_actions": malformed / max(turns, 1),
            "charts/invalid_actions": invalid / max(turns, 1),
            "charts/learning_rate": optimizer.param_groups[0]["lr"],
            **{f"losses/{k}": v for k, v in stats.items()},
        }
        if bonus is not None:
            logged["charts/intrinsic_reward"] = float(intrinsic_mean)
            logged.update({f"{bonus.name}/{k}": v for k, v in bonus.metrics().items()})
        logger.scalars(logged, global_step)
        progress.update(steps_this_rollout)
        progress.set_postfix(SPS=sps, success=recent_success, refresh=False)

        update += 1
        if update % config.checkpoint_interval == 0 or global_step >= config.total_timesteps:
            checkpointer.save(
                {
                    "policy": policy.trainable_state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "bonus": bonus.state_dict() if bonus is not None else None,
                    "global_step": global_step,
                    "update": update,
                }
            )

    progress.close()
    logger.close()
    results.update(logged)
    results.update(
        global_step=global_step, run_dir=str(run_dir), success_rate=recent_success, device=str(device)
    )
    return results


def warm_start(config: Config, policy: TextPolicy, envs, logger: Logger) -> dict[str, float]:
    """Behaviour cloning on `bc_episodes` gold paths, then the success rate sampled at --temperature and
    greedy (logged as bc/* at step 0)."""
    from agents.llm.bc import behaviour_clone, collect_gold, evaluate_success

    data = collect_gold(
        envs,
        config.bc_episodes,
        lambda o, c, h: policy.renderer.render(o, c if config.show_commands else None, h),
        history_turns=config.history_turns,
        seed=config.seed + 20_000,
    )
    bc = behaviour_clone(policy, data.records, epochs=config.bc_epochs, lr=config.bc_lr, seed=config.seed)
    out = {
        "bc/loss_before": bc["loss_before"],
        "bc/loss_after": bc["loss_after"],
        "bc/records": float(len(data.records)),
    }
    # the policy RL starts from (sampled at --temperature), and its greedy version (temperature 0):
    # they can differ widely, e.g. greedy decoding repeats one command in a loop where sampling moves on
    for suffix, temperature in (("_sampled", config.temperature), ("_greedy", 0.0)):
        evaluation = evaluate_success(
            policy,
            envs,
            config.bc_eval_episodes,
            max_new_tokens=config.max_new_tokens,
            temperature=temperature,
            constrained=config.constrained,
            seed=config.seed + 30_000,
        )
        out[f"bc/success_rate{suffix}"] = evaluation["success_rate"]
        out[f"bc/episodic_return{suffix}"] = evaluation["episodic_return"]
        out[f"bc/malformed_actions{suffix}"] = evaluation["malformed_actions"]
    logger.scalars(out, 0)
    logger.text("bc/evaluation", BC_EVALUATION_NOTE.format(temperature=config.temperature))
    return out


BC_EVALUATION_NOTE = (
    "After behaviour cloning, before RL: bc/*_sampled is the policy RL starts from, sampling at "
    "--temperature {temperature}; bc/*_greedy takes the most likely token (temperature 0), which can "
    "repeat one command in a loop where sampling moves on."
)


def parse_config(argv: list[str], prog: str = "explore text") -> Config:
    """Config from flags; with --resume DIR the saved config of DIR, the flags given on top (a flag
    set back to its default overrides the saved value too)."""
    import tyro

    config = tyro.cli(Config, args=argv, prog=prog)
    return resolve_resume(config, given=given_fields(argv, Config))


def main(argv: list[str] | None = None, prog: str = "runs/text_poad.py") -> dict:
    """The command line of `explore text` and runs/text_poad.py: flags -> Config -> train."""
    import sys

    config = parse_config(list(sys.argv[1:] if argv is None else argv), prog=prog)
    result = train(config)
    keys = (
        "global_step",
        "success_rate",
        "charts/SPS",
        "bc/success_rate_sampled",
        "bc/success_rate_greedy",
        "run_dir",
    )
    print("  ".join(f"{k}={result[k]}" for k in keys if k in result), flush=True)
    return result
