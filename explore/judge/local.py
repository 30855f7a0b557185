"""A judge run by a local transformers causal LM (any model directory; `explore.llm.local.LocalCausalLM`).

Nothing is generated: the answers are read from the model's probabilities, in batches (on the GPU when
there is one), so every reply is "parseable" and a forward pass per batch is the whole cost.

- score: the score prompt (base.Judge.score_prompt) ends in "Answer:"; interestingness is
  P(" yes") / (P(" yes") + P(" no")) for the answer tokens (`yes`/`no` can be changed).
- choose_state: the prompt ends in "Answer: State"; the choice is the index i whose " i" is most
  likely.
- prefer: the preference prompt ends in "Answer: Option"; P(first) = P(" 0") / (P(" 0") + P(" 1")),
  batched and cached by prompt like the scores.
- choose_action: by the mean per-token likelihood of each action's text after "Answer:" (`action_by=
  "text"`, the default, which lets a model that learnt the game's commands use them) or of its
  index (`action_by="index"`).

Scores are cached by prompt. A model that raises (out of memory, a bad input) is answered by the
fallback judge like any other failure.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any

import torch

from explore.errors import ConfigError
from explore.judge.base import Judge, JudgeFailure


class LocalJudge(Judge):
    """A judge backed by a local causal LM (see the module docstring).

    Args:
        model_path: a local model directory (config, weights, tokenizer); or pass `lm`.
        lm: a loaded `LocalCausalLM` (overrides model_path).
        device: "cuda" when available, else "cpu".
        dtype: e.g. torch.bfloat16 on a GPU.
        batch_size: prompts per forward pass.
        yes, no: the answer strings compared by `score` (with their leading space).
        action_by: "text" or "index" (see the module docstring).
        cache_size: scores kept by prompt.
        threshold, fallback, seed, context_size, max_state_chars: see `Judge`.
    """

    kind = "local"

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        lm: Any = None,
        device: str | None = None,
        dtype: torch.dtype | None = None,
        batch_size: int = 16,
        yes: str = " yes",
        no: str = " no",
        action_by: str = "text",
        cache_size: int = 100_000,
        threshold: float = 0.5,
        fallback: str | Judge = "embedding",
        **kwargs: Any,
    ):
        if action_by not in ("text", "index"):
            raise ConfigError(f"action_by={action_by!r}: expected 'text' or 'index'")
        super().__init__(threshold=threshold, fallback=fallback, **kwargs)
        if lm is None:
            if model_path is None:
                raise ConfigError(
                    "the local judge needs a model directory: pass model_path=... (--judge-model-path)"
                )
            from explore.llm.local import LocalCausalLM

            device = device or ("cuda" if torch.cuda.is_available() else "cpu")
            lm = LocalCausalLM(model_path, device=device, dtype=dtype, batch_size=batch_size)
        self.lm = lm
        self.yes, self.no = yes, no
        self.action_by = action_by
        self.cache_size = cache_size
        self._cache: OrderedDict[str, float] = OrderedDict()

    def __repr__(self) -> str:
        return f"LocalJudge({str(getattr(self.lm, 'path', self.lm))!r})"

    def _count(self, prompts: list[str], options: int) -> None:
        self.counters["calls"] += len(prompts)
        tokens = sum(len(self.lm.tokenizer(p)["input_ids"]) for p in prompts)
        self.counters["tokens"] += tokens * options  # each option is a separate sequence in the batch

    def _score(self, states: list[str], archive: list[str]) -> list[float | JudgeFailure]:
        return self._binary([self.score_prompt(s, archive) for s in states], self.yes, self.no)

    def _prefer(self, pairs: list[tuple[str, str]], context: str) -> list[float | JudgeFailure]:
        return self._binary([self.preference_prompt(a, b, context) for a, b in pairs], " 0", " 1")

    def _binary(self, prompts: list[str], first: str, second: str) -> list[float | JudgeFailure]:
        """P(first) / (P(first) + P(second)) after each prompt, in batches, cached by prompt."""
        todo = [p for p in dict.fromkeys(prompts) if p not in self._cache]
        self.counters["cache_hits"] += len(prompts) - len(todo)
        if todo:
            self._count(todo, 2)
            logp = self.lm.choice_logprobs(todo, [first, second])  # (n, 2)
            p_first = torch.sigmoid(logp[:, 0] - logp[:, 1]).tolist()
            for p, value in zip(todo, p_first, strict=True):
                self._cache[p] = float(value)
                if len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return [self._cache.get(p, 0.5) for p in prompts]

    def _choose_state(self, states: list[str], context: str) -> int:
        prompt = self.state_prompt(states, context)
        self._count([prompt], len(states))
        logp = self.lm.choice_logprobs([prompt], [f" {i}" for i in range(len(states))])[0]
        return int(logp.argmax())

    def _choose_action(self, state: str, actions: list[str], context: str, tried: list[str]) -> int:
        prompt = self.action_prompt(state, actions, context, tried)
        self._count([prompt], len(actions))
        if self.action_by == "index":
            options = [f" {i}" for i in range(len(actions))]
            logp = self.lm.choice_logprobs([prompt], options)[0]
        else:
            logp = self.lm.choice_logprobs([prompt], [f" {a}" for a in actions], reduction="mean")[0]
        return int(logp.argmax())
