"""A language-model policy for text games: a causal LM, a token-level value head, prompts and generation.

`TextPolicy` wraps a transformers causal LM (loaded from a local directory, or a small GPT-2-style model
built on the fly) and adds a value head: a Linear layer on the last hidden state, one value per
position. The value at a position is V of the prefix that ends there, so the value before the first
action token is read at the prompt's last position, and the value before token j at the position of
token j-1 (what token-level credit, explore.credit.token_advantages, needs).

An action is free text generated after the prompt's final '>' and ended by a terminator: the EOS token
or any token whose text holds a newline. `generate` samples a batch of actions token by token with a KV
cache (left-padded prompts, attention mask and explicit position ids), and returns per-token ids,
log-probabilities, entropies and values from the same forward passes, plus the decoded commands. With
`commands` given, decoding is constrained to them through a prefix trie over token ids (agents/llm/trie.py).

`evaluate_actions` recomputes log-probabilities, entropies and values of stored actions in one forward
pass per minibatch (what the PPO update needs); with the same weights it gives what `generate` returned.

The policy distribution is softmax(logits / temperature), masked to the trie's tokens when decoding is
constrained; temperature 0 means greedy decoding (log-probabilities are then those at temperature 1).

Malformed actions: a generated text that is empty once cut at the first newline, stripped and cleaned of
undecodable bytes is replaced by the fallback command (default "look around", valid in TextWorldExpress;
"look" in TextWorld), so the game still answers; a text that did not terminate within max_new_tokens is
sent as generated (cut). Both count as malformed (`Generation.malformed`), which the trainer logs as
`charts/malformed_actions`. Non-empty text that is not an admissible command is sent as is: the game
answers with its own parser message and reports `invalid_action`.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from agents.llm.trie import BatchedTrie, TokenTrie, command_token_ids, mask_logits
from explore.errors import ConfigError, require
from explore.llm.local import LocalCausalLM, build_tiny_causal_lm

log = logging.getLogger(__name__)

PROMPT_END = ">"
"""Every prompt ends with this; an action is generated right after it (with a leading space)."""


# --- prompts -----------------------------------------------------------------------------------------


def clean_observation(text: str) -> str:
    return " ".join(str(text).split())


def clean_action(text: str) -> str:
    """The command in a generated text: up to the first newline, undecodable bytes and control
    characters removed, whitespace collapsed."""
    text = text.split("\n", 1)[0].replace("\ufffd", "")
    text = "".join(ch for ch in text if ch.isprintable())
    return " ".join(text.split())


class PromptRenderer:
    """Observation + (optionally) the admissible commands + a short history, fitted to a token budget.

    The prompt reads like a game transcript:

        <older observation>
        > <command>
        ...
        <latest observation>
        Valid: cmd1 | cmd2 | ...
        >

    When it exceeds `max_tokens`, the oldest history entries are dropped first; if the latest
    observation alone is still too long, the prompt is cut from the left (its end, with the commands
    and the final '>', always survives).
    """

    def __init__(self, tokenizer, max_tokens: int = 256, history_turns: int = 2, show_commands: bool = True):
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.history_turns = history_turns
        self.show_commands = show_commands

    def text(self, obs: str, commands: Sequence[str] | None, history: Sequence[tuple[str, str]]) -> str:
        """history: (observation, command) pairs of earlier turns, oldest first."""
        parts = [f"{clean_observation(o)}\n{PROMPT_END} {c}\n" for o, c in history]
        tail = clean_observation(obs) + "\n"
        if self.show_commands and commands:
            tail += "Valid: " + " | ".join(commands) + "\n"
        return "".join(parts) + tail + PROMPT_END

    def ids(self, obs: str, commands: Sequence[str] | None, history: Sequence[tuple[str, str]]) -> list[int]:
        history = list(history)[-self.history_turns :] if self.history_turns > 0 else []
        while True:
            ids = self.tokenizer(self.text(obs, commands, history))["input_ids"]
            if len(ids) <= self.max_tokens:
                return ids
            if not history:
                return ids[len(ids) - self.max_tokens :]
            history = history[1:]

    def render(self, obs: str, commands: Sequence[str] | None, history: Sequence[tuple[str, str]]) -> str:
        """The prompt as text, after fitting (for supervised data)."""
        return self.tokenizer.decode(self.ids(obs, commands, history))


def left_pad(rows: Sequence[Sequence[int]], pad_id: int, width: int | None = None) -> tuple[Tensor, Tensor]:
    """(ids, mask) with every row ending at the last column."""
    width = max(len(r) for r in rows) if width is None else width
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r) :] = torch.as_tensor(list(r), dtype=torch.long)
            mask[i, width - len(r) :] = True
    return ids, mask


def positions(mask: Tensor) -> Tensor:
    """Position ids of a left-padded attention mask: 0 at each row's first real token."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


# --- generation output -----------------------------------------------------------------------------


@dataclass
class Generation:
    """One turn of a batch of B envs; tensors stay on the policy's device except `texts`/`malformed`."""

    ids: Tensor  # (B, A) long: action tokens, pad after the terminator
    mask: Tensor  # (B, A) bool: which tokens were generated (the terminator included)
    logprobs: Tensor  # (B, A) log pi(token | prefix)
    entropies: Tensor  # (B, A) entropy of the (masked, tempered) next-token distribution
    values: Tensor  # (B, A) V(prefix before token j)
    allowed: Tensor | None  # (B, A, K) tokens the trie allowed at each step (-1 padded), constrained only
    texts: list[str]  # the commands to send (fallback applied)
    raw_texts: list[str]  # the decoded generations
    malformed: list[bool]  # empty (fallback sent) or not terminated within max_new_tokens


# --- the policy ------------------------------------------------------------------------------------


def cache_keyword(model: nn.Module) -> str:
    """The forward keyword of the KV cache: `cache` in current transformers 5.x releases,
    `past_key_values` in earlier ones (where later releases warn on every call that it is deprecated)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # under peft
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


class TextPolicy(nn.Module):
    """A causal LM with a token-level value head (see the module docstring).

    Args:
        lm: the LocalCausalLM holding model and tokenizer (its `model` may be wrapped by peft).
        max_prompt_tokens / history_turns / show_commands: prompt rendering (PromptRenderer).
        fallback_action: the command sent when a generated action is empty.
    """

    def __init__(
        self,
        lm: LocalCausalLM,
        *,
        max_prompt_tokens: int = 256,
        history_turns: int = 2,
        show_commands: bool = True,
        fallback_action: str = "look around",
    ):
        super().__init__()
        self.lm = lm
        self.model = lm.model
        self.tokenizer = lm.tokenizer
        hidden = self.model.config.get_text_config().hidden_size
        self.value_head = nn.Linear(hidden, 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)
        self.value_head.to(lm.device)
        self.renderer = PromptRenderer(self.tokenizer, max_prompt_tokens, history_turns, show_commands)
        self.fallback_action = fallback_action
        self._cache_keyword = cache_keyword(self.model)
        tok = self.tokenizer
        if tok.eos_token_id is None:
            raise ConfigError(f"the tokenizer of {lm.path} has no eos token: actions need a terminator")
        self.eos_id: int = tok.eos_token_id
        self.pad_id: int = tok.pad_token_id
        vocab = self.model.get_output_embeddings().weight.shape[0]
        stops = torch.zeros(vocab, dtype=torch.bool)
        pieces = tok.batch_decode([[i] for i in range(min(vocab, len(tok)))])
        for i, piece in enumerate(pieces):
            if "\n" in piece:
                stops[i] = True
        stops[self.eos_id] = True
        self.register_buffer("stop_tokens", stops.to(lm.device), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.value_head.weight.device

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """The parameters that training changes (all of them, or LoRA adapters + value head)."""
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        return {k: v for k, v in self.state_dict().items() if k in names}

    # --- forward ---

    def _forward(self, ids: Tensor, mask: Tensor, pos: Tensor, *, keep: int, cache: Any = None):
        """(logits, values) at the last `keep` positions; a KV `cache` (a transformers DynamicCache)
        is read and extended in place."""
        out = self.model(
            input_ids=ids,
            attention_mask=mask.long(),
            position_ids=pos,
            use_cache=cache is not None,
            output_hidden_states=True,
            logits_to_keep=keep,
            **({self._cache_keyword: cache} if cache is not None else {}),
        )
        values = self.value_head(out.hidden_states[-1][:, -keep:].float()).squeeze(-1)
        return out.logits.float(), values

    def prompt_values(self, prompts: Sequence[Sequence[int]]) -> Tensor:
        """V at the last position of each prompt (B,), e.g. of a final observation's prompt."""
        ids, mask = left_pad(prompts, self.pad_id)
        ids, mask = ids.to(self.device), mask.to(self.device)
        with torch.no_grad():
            _, values = self._forward(ids, mask, positions(mask), keep=1)
        return values[:, -1]

    def evaluate_actions(
        self,
        prompt_ids: Tensor,
        prompt_mask: Tensor,
        action_ids: Tensor,
        action_mask: Tensor,
        *,
        allowed: Tensor | None = None,
        temperature: float = 1.0,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(logprobs, entropies, values), each (B, A), of stored actions after left-padded prompts.

        One forward pass over [prompt, action]: the logits and hidden states at the prompt's last
        position and at action tokens 0..A-2 predict action tokens 0..A-1.
        """
        A = action_ids.shape[1]
        ids = torch.cat([prompt_ids, action_ids], 1)
        mask = torch.cat([prompt_mask, action_mask], 1)
        logits, values = self._forward(ids, mask, positions(mask), keep=A + 1)
        logits, values = logits[:, :-1], values[:, :-1]
        logp, ent = self._distribution(logits, allowed, temperature)
        logp = logp.gather(-1, action_ids[..., None]).squeeze(-1)
        zero = torch.zeros((), device=logp.device)
        return torch.where(action_mask, logp, zero), torch.where(action_mask, ent, zero), values

    @staticmethod
    def _distribution(logits: Tensor, allowed: Tensor | None, temperature: float) -> tuple[Tensor, Tensor]:
        """log-probabilities and entropy of the policy's next-token distribution."""
        if temperature > 0:
            logits = logits / temperature
        if allowed is not None:
            logits = mask_logits(logits, allowed)
        logp = F.log_softmax(logits, -1)
        # masked tokens have p = 0 and logp = -inf: zero their logp first (a where after the product
        # would still send NaN gradients through 0 * -inf)
        ent = -(logp.exp() * logp.masked_fill(torch.isinf(logp), 0.0)).sum(-1)
        return logp, ent

    # --- generation ---

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        max_new_tokens: int = 16,
        temperature: float = 1.0,
        commands: Sequence[Sequence[str]] | None = None,
        stop_check_every: int = 4,
    ) -> Generation:
        """Sample one action per prompt (token ids from `renderer.ids`), batched with a KV cache.

        commands: per prompt, the admissible commands to constrain decoding to (None: free text).
        stop_check_every: every this many tokens, stop early if every row has terminated (one host
        sync); 0 always generates max_new_tokens tokens.
        """
        B, A, dev = len(prompts), max_new_tokens, self.device
        trie = None
        if commands is not None:
            tries = []
            for i, cmds in enumerate(commands):
                seqs = command_token_ids(self.tokenizer, cmds, A - 1)
                if not seqs:
                    raise ValueError(
                        f"env {i}: no admissible command fits in max_new_tokens={A} tokens "
                        f"(commands: {list(cmds)[:5]}...); raise max_new_tokens"
                    )
                tries.append(TokenTrie(seqs, self.eos_id))
            trie = BatchedTrie.build(tries, dev)
            node = trie.root()
        ids, mask = left_pad(prompts, self.pad_id)
        ids, mask = ids.to(dev), mask.to(dev)
        pos = positions(mask)[:, -1:]
        out_ids = torch.full((B, A), self.pad_id, dtype=torch.long, device=dev)
        out_mask = torch.zeros((B, A), dtype=torch.bool, device=dev)
        logprobs = torch.zeros((B, A), device=dev)
        entropies = torch.zeros((B, A), device=dev)
        values = torch.zeros((B, A), device=dev)
        allowed_all = (
            None if trie is None else torch.full((B, A, trie.width), -1, dtype=torch.long, device=dev)
        )
        done = torch.zeros(B, dtype=torch.bool, device=dev)
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        logits, v = self._forward(ids, mask, positions(mask), keep=1, cache=cache)
        logits, v = logits[:, -1], v[:, -1]
        for j in range(A):
            allowed = None
            if trie is not None:
                allowed = trie.allowed(node)
                allowed_all[:, j] = torch.where(done[:, None], -1, allowed)
            logp, ent = self._distribution(logits, allowed, temperature)
            token = torch.multinomial(logp.exp(), 1).squeeze(-1) if temperature > 0 else logp.argmax(-1)
            active = ~done
            out_ids[:, j] = torch.where(active, token, self.pad_id)
            out_mask[:, j] = active
            logprobs[:, j] = torch.where(active, logp.gather(-1, token[:, None]).squeeze(-1), 0.0)
            entropies[:, j] = torch.where(active, ent, 0.0)
            values[:, j] = torch.where(active, v, 0.0)
            if trie is not None:
                node = trie.advance(node, token)
            done = done | self.stop_tokens[token]
            if j + 1 == A or (stop_check_every and (j + 1) % stop_check_every == 0 and bool(done.all())):
                break
            mask = torch.cat([mask, torch.ones((B, 1), dtype=torch.bool, device=dev)], 1)
            pos = pos + 1
            logits, v = self._forward(token[:, None], mask, pos, keep=1, cache=cache)
            logits, v = logits[:, -1], v[:, -1]
        # the one host transfer of the turn: token ids and whether each row terminated
        host = torch.cat([out_ids, done[:, None].long()], 1).cpu()
        raw, texts, malformed = [], [], []
        host_mask = host[:, :A] != self.pad_id
        for b in range(B):
            row = host[b, :A][host_mask[b]].tolist()
            text = self.tokenizer.decode([t for t in row if t != self.eos_id])
            raw.append(text)
            cmd = clean_action(text)
            finished = bool(host[b, A])
            malformed.append(not cmd or not finished)
            texts.append(cmd if cmd else self.fallback_action)
        return Generation(out_ids, out_mask, logprobs, entropies, values, allowed_all, texts, raw, malformed)


# --- loading ---------------------------------------------------------------------------------------


def _peft() -> Any:
    return require("peft", "llm", "LoRA fine-tuning (--lora-rank)")


def apply_lora(policy: TextPolicy, rank: int, alpha: float | None = None, dropout: float = 0.0) -> TextPolicy:
    """Wrap the policy's LM in peft LoRA adapters on every linear layer; the base weights freeze, the
    adapters and the value head train."""
    peft = _peft()
    config = peft.LoraConfig(
        r=rank,
        lora_alpha=alpha if alpha is not None else 2 * rank,
        lora_dropout=dropout,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    wrapped = peft.get_peft_model(policy.model, config)
    policy.model = wrapped
    policy.lm.model = wrapped
    for p in policy.value_head.parameters():
        p.requires_grad_(True)
    return policy


def load_policy(
    model_path: str | os.PathLike[str] | None,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    build_dir: str | os.PathLike[str] | None = None,
    corpus: Iterable[str] | None = None,
    tiny: dict[str, Any] | None = None,
    lora_rank: int = 0,
    **policy_kwargs,
) -> TextPolicy:
    """A TextPolicy from a local checkpoint directory, or a tiny GPT-2-style model built from `corpus`.

    model_path: a directory written by save_pretrained() (any Qwen/Llama/GPT-2 causal LM); a path
    that is missing or incomplete raises a ConfigError naming it. None: build (or reuse, if it already
    holds one) a small randomly initialized model in `build_dir`, its tokenizer trained on `corpus`,
    with `tiny` keyword arguments for build_tiny_causal_lm (vocab_size, n_layer, n_embd, ...).
    lora_rank > 0 wraps the model in LoRA adapters (peft); 0 trains every weight.
    """
    if model_path is None:
        if build_dir is None:
            raise ConfigError("without a model path, load_policy needs build_dir to build a tiny model in")
        build_dir = Path(build_dir)
        if not (build_dir / "config.json").is_file():
            if corpus is None:
                raise ConfigError(f"no model in {build_dir} and no corpus to build a tiny one from")
            build_tiny_causal_lm(build_dir, corpus, **(tiny or {}))
        model_path = build_dir
    lm = LocalCausalLM(model_path, device=device, dtype=dtype)
    policy = TextPolicy(lm, **policy_kwargs)
    if lora_rank > 0:
        apply_lora(policy, lora_rank)
    return policy
