"""A language model as a bandit agent, and the data to distill UCB into one.

`LLMBanditAgent` plays B bandit instances at once with the batched agent protocol of
agents/bandits.py (`reset`, `act`, `update`): each round it renders one prompt per instance from
that instance's own history (envs/bandit_text.py), sends the B prompts to the backend as one batch
and parses the replies. A reply that names no arm (or several), or a request that failed, falls back
to a stated policy, UCB or uniform, and is counted and logged, so a weak model is visible in the
report rather than silently replaced.

Backends are `explore.llm.TextGenerator`s: `explore.llm.LocalCausalLM` (a local transformers model)
or `explore.llm.OpenAIClient` (any OpenAI-compatible endpoint). With `selection="likelihood"` a
local model is not asked to write but scores every arm's name after the prompt and takes the most
likely: no reply can be malformed, which is how an untrained or distilled small model is best read.

Algorithm distillation (Laskin et al. 2022; BanditBench's "AD"): `distillation_records` turns UCB
trajectories into {"prompt", "completion"} pairs, prompt = the text of the history before a round,
completion = the arm UCB chose; runs/bandit_distill.py fine-tunes a model on them.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from envs.bandit_text import MODES, UCB_ALPHA, completion_for, get_framing, parse_arm, render_prompt
from explore.errors import ConfigError
from explore.llm import LLMError, TextGenerator

log = logging.getLogger(__name__)

FALLBACKS = ("ucb", "uniform")
SELECTIONS = ("generate", "likelihood")


def ucb_arms(
    counts: torch.Tensor, sums: torch.Tensor, alpha: float, generator: torch.Generator
) -> torch.Tensor:
    """UCB's choice per instance from (B, K) pull counts and reward sums; ties broken at random.

    Score = mean + sqrt(alpha ln N / n_a), N the instance's total pulls; arms never pulled score
    infinity, so each is tried once first. Random tie-breaking keeps UCB from favouring low indices.
    """
    total = counts.sum(1, keepdim=True).clamp(min=1)
    pulled = counts > 0
    safe = counts.clamp(min=1)
    scores = torch.where(pulled, sums / safe + torch.sqrt(alpha * torch.log(total) / safe), torch.inf)
    best = scores == scores.max(1, keepdim=True).values
    return torch.multinomial(best.double(), 1, generator=generator).squeeze(1)


def uniform_arms(num_instances: int, num_arms: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(num_arms, (num_instances,), generator=generator)


class LLMBanditAgent:
    """A batched bandit agent that asks a language model which arm to pull.

    Args:
        backend: a `TextGenerator` (`LocalCausalLM`, `OpenAIClient`, or anything with `generate`).
        framing: "video", "clothes", "buttons" or "ads" (envs/bandit_text.py).
        mode: how the history is shown: "raw", "summary" or "ucb" (algorithm-guided support).
        fallback: the policy for malformed replies and failed requests: "ucb" or "uniform".
        selection: "generate" (parse the model's text) or "likelihood" (the arm whose name the
            model scores highest after the prompt; needs a backend with `choice_logprobs`).
        spec: the bandit spec, if known: its horizon and reward family go into the prompt.
        horizon, binary: override the spec's (e.g. the horizon a distilled model was trained with).
        max_new_tokens, temperature: generation settings (greedy by default: reproducible and cacheable).
        alpha: UCB's coefficient, for the "ucb" prompt and the UCB fallback.
        max_rows: cap on the rounds a "raw" prompt shows (the latest ones).
        seed: seeds the fallback's randomness (uniform draws, UCB tie-breaks).
        warn_limit: malformed replies logged as warnings per run; later ones go to DEBUG.
    """

    def __init__(
        self,
        backend: TextGenerator,
        framing: str = "video",
        mode: str = "summary",
        fallback: str = "ucb",
        *,
        selection: str = "generate",
        spec: Any = None,
        horizon: int | None = None,
        binary: bool | None = None,
        max_new_tokens: int = 8,
        temperature: float = 0.0,
        alpha: float = UCB_ALPHA,
        max_rows: int | None = None,
        seed: int = 0,
        warn_limit: int = 5,
    ):
        self.framing = get_framing(framing)
        if mode not in MODES:
            raise ConfigError(f"unknown prompt mode {mode!r}; expected one of {', '.join(MODES)}")
        if fallback not in FALLBACKS:
            raise ConfigError(f"unknown fallback {fallback!r}; expected one of {', '.join(FALLBACKS)}")
        if selection not in SELECTIONS:
            raise ConfigError(f"unknown selection {selection!r}; expected one of {', '.join(SELECTIONS)}")
        if selection == "likelihood" and not callable(getattr(backend, "choice_logprobs", None)):
            raise ConfigError(
                f"selection='likelihood' needs a backend with choice_logprobs (a LocalCausalLM); "
                f"{type(backend).__name__} only generates text: use selection='generate'"
            )
        if not callable(getattr(backend, "generate", None)):
            raise ConfigError(f"backend {backend!r} has no generate(prompts, ...) method")
        self.backend = backend
        self.mode = mode
        self.fallback = fallback
        self.selection = selection
        self.spec = spec
        self.horizon: int | None = horizon if horizon is not None else getattr(spec, "horizon", None)
        family = getattr(spec, "family", None)
        self.binary: bool | None = (
            binary if binary is not None else (None if family is None else family == "bernoulli")
        )
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.alpha = alpha
        self.max_rows = max_rows
        self.seed = seed
        self.warn_limit = warn_limit
        self.num_instances = 0
        self.num_arms = 0
        self.device = torch.device("cpu")
        self.reset_counters()

    def __repr__(self) -> str:
        return (
            f"LLMBanditAgent({self.backend!r}, framing={self.framing.key!r}, mode={self.mode!r}, "
            f"fallback={self.fallback!r}, selection={self.selection!r})"
        )

    # --- the agent protocol -------------------------------------------------------------------------

    def reset(
        self, num_instances: int, num_arms: int, device: str | torch.device = "cpu", context_dim: int = 0
    ) -> None:
        """Start a run: empty histories, fresh counters, the fallback's generator reseeded."""
        if context_dim:
            raise ConfigError(
                "LLMBanditAgent plays multi-armed bandits only (the text framings have no contexts); "
                f"got context_dim={context_dim}"
            )
        self.names = self.framing.arm_names(num_arms)  # raises if the framing has too few names
        self.num_instances = num_instances
        self.num_arms = num_arms
        self.device = torch.device(device)
        self.histories: list[list[tuple[int, float]]] = [[] for _ in range(num_instances)]
        self.counts = torch.zeros(num_instances, num_arms, dtype=torch.float64)
        self.sums = torch.zeros(num_instances, num_arms, dtype=torch.float64)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.reset_counters()

    def reset_counters(self) -> None:
        self.decisions = 0
        self.fallback_count = 0
        self.malformed_count = 0  # replies that named no arm or several
        self.error_count = 0  # requests that failed (after the backend's retries)
        self.last_replies: list[str | None] = []
        self.last_fallback = torch.zeros(0, dtype=torch.bool)
        self.malformed_examples: list[str] = []  # the first few offending replies, for the report

    @property
    def fallback_rate(self) -> float:
        return self.fallback_count / self.decisions if self.decisions else 0.0

    def stats(self) -> dict[str, float]:
        return {
            "decisions": self.decisions,
            "fallback_count": self.fallback_count,
            "fallback_rate": self.fallback_rate,
            "malformed_count": self.malformed_count,
            "error_count": self.error_count,
        }

    def prompts(self) -> list[str]:
        """This round's prompt for every instance."""
        return [
            render_prompt(
                self.framing,
                self.num_arms,
                h,
                self.mode,
                horizon=self.horizon,
                binary=self.binary,
                alpha=self.alpha,
                max_rows=self.max_rows,
            )
            for h in self.histories
        ]

    def act(self, context: torch.Tensor | None = None) -> torch.Tensor:
        """One arm per instance, (B,) long on the agent's device."""
        del context
        if not self.num_instances:
            raise RuntimeError("call reset(num_instances, num_arms, device) before act()")
        prompts = self.prompts()
        round_ = len(self.histories[0])
        if self.selection == "likelihood":
            chosen, replies = self._by_likelihood(prompts)
        else:
            chosen, replies = self._by_generation(prompts, round_)
        need = torch.tensor([c is None for c in chosen], dtype=torch.bool)
        arms = torch.tensor([-1 if c is None else c for c in chosen], dtype=torch.long)
        if need.any():
            if self.fallback == "ucb":
                backup = ucb_arms(self.counts, self.sums, self.alpha, self.generator)
            else:
                backup = uniform_arms(self.num_instances, self.num_arms, self.generator)
            arms = torch.where(need, backup, arms)
        self.decisions += self.num_instances
        self.fallback_count += int(need.sum())
        self.last_replies = replies
        self.last_fallback = need
        return arms.to(self.device)

    def update(self, arms: torch.Tensor, rewards: torch.Tensor, context: torch.Tensor | None = None) -> None:
        """Append each instance's (arm, reward) to its history."""
        del context
        arm_list = [int(a) for a in arms.reshape(-1).tolist()]
        reward_list = [float(r) for r in rewards.reshape(-1).tolist()]
        if len(arm_list) != self.num_instances or len(reward_list) != self.num_instances:
            raise ConfigError(
                f"update() got {len(arm_list)} arms and {len(reward_list)} rewards "
                f"for {self.num_instances} instances"
            )
        for h, a, r in zip(self.histories, arm_list, reward_list, strict=True):
            h.append((a, r))
        index = torch.tensor(arm_list).unsqueeze(1)
        self.counts.scatter_add_(1, index, torch.ones(self.num_instances, 1, dtype=torch.float64))
        self.sums.scatter_add_(1, index, torch.tensor(reward_list, dtype=torch.float64).unsqueeze(1))

    # --- the two ways of asking -----------------------------------------------------------------------

    def _by_generation(self, prompts: list[str], round_: int) -> tuple[list[int | None], list[str | None]]:
        try:
            replies: list[Any] = self.backend.generate(
                prompts,
                max_new_tokens=self.max_new_tokens,
                temperature=self.temperature,
                return_exceptions=True,
            )
        except LLMError as exc:  # the whole batch failed: every instance falls back this round
            log.warning(
                "round %d: the backend failed for the whole batch (%s); falling back to %s",
                round_,
                exc,
                self.fallback,
            )
            self.error_count += len(prompts)
            return [None] * len(prompts), [None] * len(prompts)
        chosen: list[int | None] = []
        texts: list[str | None] = []
        for b, reply in enumerate(replies):
            if isinstance(reply, BaseException):
                self.error_count += 1
                self._log(
                    f"round {round_}, instance {b}: request failed ({reply}); falling back to {self.fallback}"
                )
                chosen.append(None)
                texts.append(None)
                continue
            arm = parse_arm(reply, self.framing, self.num_arms)
            if arm is None:
                self.malformed_count += 1
                if len(self.malformed_examples) < 20:
                    self.malformed_examples.append(reply)
                self._log(
                    f"round {round_}, instance {b}: malformed reply {reply!r} (no single "
                    f"{self.framing.unit} named); falling back to {self.fallback}"
                )
            chosen.append(arm)
            texts.append(reply)
        return chosen, texts

    def _by_likelihood(self, prompts: list[str]) -> tuple[list[int | None], list[str | None]]:
        options = [completion_for(self.framing, self.num_arms, a) for a in range(self.num_arms)]
        try:
            scores = self.backend.choice_logprobs(prompts, options)  # type: ignore[attr-defined]
        except LLMError as exc:
            log.warning("the backend failed to score the arms (%s); falling back to %s", exc, self.fallback)
            self.error_count += len(prompts)
            return [None] * len(prompts), [None] * len(prompts)
        best = torch.as_tensor(scores).argmax(1).tolist()
        return list(best), [self.names[a] for a in best]

    def _log(self, message: str) -> None:
        problems = self.malformed_count + self.error_count
        if problems <= self.warn_limit:
            suffix = " (further ones are logged at DEBUG)" if problems == self.warn_limit else ""
            log.warning("%s%s", message, suffix)
        else:
            log.debug("%s", message)


# --- algorithm distillation data ----------------------------------------------------------------------


def distillation_records(
    arms: torch.Tensor | Sequence[Sequence[int]],
    rewards: torch.Tensor | Sequence[Sequence[float]],
    framing: str,
    num_arms: int,
    mode: str = "summary",
    *,
    horizon: int | None = None,
    binary: bool | None = None,
    alpha: float = UCB_ALPHA,
    max_rows: int | None = None,
    every: int = 1,
) -> list[dict[str, str]]:
    """SFT pairs from (T, B) trajectories: for every instance b and round t (every `every`-th),
    prompt = the text of b's history before round t, completion = " <name of arms[t, b]>".

    The prompt is exactly what `LLMBanditAgent` shows at that point (same framing, mode, horizon),
    so a model fine-tuned on it plays from the distribution it was trained on.
    """
    arm_rows = arms.tolist() if isinstance(arms, torch.Tensor) else [list(r) for r in arms]
    reward_rows = rewards.tolist() if isinstance(rewards, torch.Tensor) else [list(r) for r in rewards]
    if len(arm_rows) != len(reward_rows) or any(
        len(a) != len(r) for a, r in zip(arm_rows, reward_rows, strict=True)
    ):
        raise ConfigError("arms and rewards must both have shape (T, B)")
    if every < 1:
        raise ConfigError(f"every must be >= 1, got {every}")
    num_rounds = len(arm_rows)
    num_instances = len(arm_rows[0]) if num_rounds else 0
    records = []
    for b in range(num_instances):
        history: list[tuple[int, float]] = []
        for t in range(num_rounds):
            arm = int(arm_rows[t][b])
            if t % every == 0:
                prompt = render_prompt(
                    framing,
                    num_arms,
                    history,
                    mode,
                    horizon=horizon,
                    binary=binary,
                    alpha=alpha,
                    max_rows=max_rows,
                )
                records.append({"prompt": prompt, "completion": completion_for(framing, num_arms, arm)})
            history.append((arm, float(reward_rows[t][b])))
    return records


def write_jsonl(path: str | os.PathLike[str], records: Iterable[Mapping[str, Any]]) -> int:
    """Write one JSON object per line (through a temp file, so a crash never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    n = 0
    with tmp.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            n += 1
    tmp.replace(path)
    return n


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_distillation_data(
    path: str | os.PathLike[str],
    arms: torch.Tensor | Sequence[Sequence[int]],
    rewards: torch.Tensor | Sequence[Sequence[float]],
    framing: str,
    num_arms: int,
    mode: str = "summary",
    **kwargs: Any,
) -> int:
    """UCB (or any teacher's) trajectories as SFT JSONL {"prompt", "completion"}; returns the line count."""
    return write_jsonl(path, distillation_records(arms, rewards, framing, num_arms, mode, **kwargs))
