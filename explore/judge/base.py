"""The judge interface, the prompts and answer parsers the language-model judges share, and fallback.

A judge answers the three questions Intelligent Go-Explore (Lu et al. 2024) asks a foundation model:

- `score(states, archive_states=None) -> list[float]`: how interestingly new each state is, in [0, 1],
  relative to the states already archived (the judge's own `observe`d archive by default);
  `is_interesting(...)` compares those scores with the judge's `threshold`.
- `choose_state(states, context="") -> int`: which archived state to return to.
- `choose_action(state, actions, context="", tried=()) -> int`: which untried action to take.

and one that Motif (Klissarov et al. 2023) asks about pairs of event captions:

- `prefer(pairs, context="") -> list[float]`: P(the first caption of each pair is the more
  interesting one), in [0, 1]; 0.5 is no preference. Batched where the backend can batch.

Failure handling lives here, once, for every backend: a backend marks a state or a question it could
not answer (an unreachable server, a timeout, a 5xx after the retries, an unparseable reply after
its retry, a local model that raised) with a `JudgeFailure`, and the base class answers it with the
stated fallback judge instead ("uniform" or "embedding"). Each kind of failure is logged once (the
logging module, warning level), every fallback is counted in `metrics()["judge/fallbacks"]`, and no
failure of the judge ends a run.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from typing import Any

from explore.errors import ConfigError

log = logging.getLogger(__name__)

PREFERENCE_CONTEXT = (
    "explore, make progress (find keys, open doors, take stairs, enter new rooms) and learn about the world"
)
METRIC_NAMES = ("judge/calls", "judge/tokens", "judge/cache_hits", "judge/fallbacks", "judge/parse_failures")


class JudgeFailure(Exception):
    """A question a backend could not answer; `kind` groups failures for the once-per-kind log."""

    def __init__(self, kind: str, message: str = ""):
        super().__init__(message or kind)
        self.kind = kind


class Judge(ABC):
    """Base class of every judge: the archive context, the fallback and the metrics.

    Args:
        threshold: `is_interesting` is `score >= threshold`.
        fallback: the judge that answers what this one cannot: "uniform", "embedding" (built on first
            use; if it cannot be built, for example without sentence-transformers, "uniform" is
            used and that is logged) or a `Judge` instance.
        seed: seeds the judge's own random generator (tie-breaking, uniform choices).
        context_size: how many archived states an LLM prompt shows next to a new state (the ones
            sharing the most words with it).
        max_state_chars: states are cut to this many characters inside prompts.
    """

    kind = "base"

    def __init__(
        self,
        *,
        threshold: float = 0.5,
        fallback: str | Judge = "uniform",
        seed: int = 0,
        context_size: int = 5,
        max_state_chars: int = 1000,
    ):
        if not 0.0 <= threshold <= 1.0:
            raise ConfigError(f"threshold={threshold!r}: expected a number in [0, 1]")
        if isinstance(fallback, str) and fallback not in ("uniform", "embedding"):
            raise ConfigError(f"fallback={fallback!r}: expected 'uniform', 'embedding' or a Judge instance")
        self.threshold = threshold
        self.rng = random.Random(seed)
        self.seed = seed
        self.context_size = context_size
        self.max_state_chars = max_state_chars
        self.archive_states: list[str] = []
        self._archive_set: set[str] = set()
        self._fallback_spec: str | Judge = fallback
        self._fallback: Judge | None = fallback if isinstance(fallback, Judge) else None
        if self._fallback is not None:
            self._fallback.observe(self.archive_states)
        self.counters: Counter[str] = Counter()
        self.fallback_kinds: Counter[str] = Counter()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(threshold={self.threshold})"

    # --- the archive context ----------------------------------------------------------------------

    def observe(self, states: Sequence[str]) -> None:
        """Tell the judge about archived states: `score` measures novelty against them."""
        new = []
        for s in states:
            if s not in self._archive_set:
                self._archive_set.add(s)
                self.archive_states.append(s)
                new.append(s)
        if new:
            self._on_observe(new)
            if self._fallback is not None and self._fallback is not self:
                self._fallback.observe(new)

    def reset_archive(self) -> None:
        """Forget the observed archive (a new run)."""
        self.archive_states = []
        self._archive_set = set()
        self._on_reset()
        if self._fallback is not None and self._fallback is not self:
            self._fallback.reset_archive()

    def _on_observe(self, new_states: list[str]) -> None:  # noqa: B027 - an optional hook
        """Hook for backends that index the archive (the embedding judge)."""

    def _on_reset(self) -> None:  # noqa: B027 - an optional hook
        """Hook for backends that index the archive."""

    # --- the three questions ----------------------------------------------------------------------

    def score(self, states: Sequence[str], archive_states: Sequence[str] | None = None) -> list[float]:
        """Interestingness of each state in [0, 1] relative to the archive (the observed one by default)."""
        if isinstance(states, str):
            raise TypeError("score() takes a sequence of states; wrap a single state in a list")
        states = list(states)
        if not states:
            return []
        archive = self.archive_states if archive_states is None else list(archive_states)
        out: list[Any] = self._guard(lambda: self._score(states, archive), len(states))
        bad = [i for i, v in enumerate(out) if isinstance(v, JudgeFailure)]
        if bad:
            fallback = self._use_fallback([out[i] for i in bad])
            for i, value in zip(bad, fallback.score([states[i] for i in bad], archive), strict=True):
                out[i] = value
        return [min(1.0, max(0.0, float(v))) for v in out]

    def is_interesting(
        self, states: Sequence[str], archive_states: Sequence[str] | None = None
    ) -> list[bool]:
        return [s >= self.threshold for s in self.score(states, archive_states)]

    def choose_state(self, states: Sequence[str], context: str = "") -> int:
        """Index of the state to return to and explore from."""
        states = list(states)
        if not states:
            raise ValueError("choose_state() needs at least one state")
        if len(states) == 1:
            return 0
        answer = self._guard(lambda: [self._choose_state(states, context)], 1)[0]
        if isinstance(answer, JudgeFailure) or not 0 <= answer < len(states):
            failure = answer if isinstance(answer, JudgeFailure) else JudgeFailure("out_of_range")
            return self._use_fallback([failure]).choose_state(states, context)
        return int(answer)

    def choose_action(
        self, state: str, actions: Sequence[str], context: str = "", tried: Sequence[str] = ()
    ) -> int:
        """Index (into `actions`) of the action to take from `state`; `tried` lists actions taken before."""
        actions = list(actions)
        if not actions:
            raise ValueError("choose_action() needs at least one action")
        if len(actions) == 1:
            return 0
        answer = self._guard(lambda: [self._choose_action(state, actions, context, list(tried))], 1)[0]
        if isinstance(answer, JudgeFailure) or not 0 <= answer < len(actions):
            failure = answer if isinstance(answer, JudgeFailure) else JudgeFailure("out_of_range")
            return self._use_fallback([failure]).choose_action(state, actions, context, tried)
        return int(answer)

    def prefer(self, pairs: Sequence[tuple[str, str]], context: str = "") -> list[float]:
        """P(a is more interesting than b) for each pair (a, b), in [0, 1]; 0.5 means no preference."""
        pairs = [(str(a), str(b)) for a, b in pairs]
        if not pairs:
            return []
        out: list[Any] = self._guard(lambda: self._prefer(pairs, context), len(pairs))
        bad = [i for i, v in enumerate(out) if isinstance(v, JudgeFailure)]
        if bad:
            fallback = self._use_fallback([out[i] for i in bad])
            for i, value in zip(bad, fallback.prefer([pairs[i] for i in bad], context), strict=True):
                out[i] = value
        return [min(1.0, max(0.0, float(v))) for v in out]

    def _prefer(self, pairs: list[tuple[str, str]], context: str) -> list[float | JudgeFailure]:
        """Default: `choose_state` between the two captions of each pair (1.0: the first, 0.0: the second)."""
        out: list[float | JudgeFailure] = []
        for a, b in pairs:
            if a == b:
                out.append(0.5)
                continue
            answer = self._choose_state([a, b], context or PREFERENCE_CONTEXT)
            if isinstance(answer, JudgeFailure):
                out.append(answer)
            else:
                out.append({0: 1.0, 1: 0.0}.get(int(answer), JudgeFailure("out_of_range")))
        return out

    @abstractmethod
    def _score(self, states: list[str], archive: list[str]) -> list[float | JudgeFailure]: ...

    @abstractmethod
    def _choose_state(self, states: list[str], context: str) -> int | JudgeFailure: ...

    @abstractmethod
    def _choose_action(
        self, state: str, actions: list[str], context: str, tried: list[str]
    ) -> int | JudgeFailure: ...

    # --- metrics ----------------------------------------------------------------------------------

    def metrics(self) -> dict[str, float]:
        """Counters for TensorBoard: judge/calls, tokens, cache_hits, fallbacks, parse_failures, ..."""
        out = {name: 0.0 for name in METRIC_NAMES}
        out.update({f"judge/{k}": float(v) for k, v in self.counters.items()})
        out.update(self._backend_metrics())
        out["judge/archive_states"] = float(len(self.archive_states))
        return out

    def _backend_metrics(self) -> dict[str, float]:
        return {}

    # --- failures and the fallback ----------------------------------------------------------------

    def _guard(self, fn: Any, n: int) -> list[Any]:
        """Run a backend call; an exception a backend may raise becomes a failure of every slot."""
        try:
            return list(fn())
        except JudgeFailure as exc:
            return [exc] * n
        except (RuntimeError, OSError, ValueError) as exc:  # a local model or tokenizer that raised
            failure = JudgeFailure(f"error:{type(exc).__name__}", str(exc))
            return [failure] * n

    @property
    def fallback(self) -> Judge:
        """The fallback judge (built on first use)."""
        if self._fallback is None:
            self._fallback = self._build_fallback()
            self._fallback.observe(self.archive_states)
        return self._fallback

    def _build_fallback(self) -> Judge:
        from explore.judge.uniform import UniformJudge

        if self._fallback_spec == "embedding":
            try:
                from explore.judge.embedding import EmbeddingJudge

                return EmbeddingJudge(seed=self.seed)
            except (ImportError, OSError, RuntimeError, ConfigError) as exc:
                log.warning("%s: the embedding fallback judge is unavailable (%s); using uniform", self, exc)
        return UniformJudge(seed=self.seed)

    def _use_fallback(self, failures: Sequence[JudgeFailure]) -> Judge:
        """Count and log the failures (each kind once), then hand back the judge that answers instead."""
        fallback = self.fallback
        for failure in failures:
            self.counters["fallbacks"] += 1
            if self.fallback_kinds[failure.kind] == 0:
                log.warning(
                    "%s could not answer (%s: %s); falling back to %s. Later failures of this kind are "
                    "counted in metrics()['judge/fallbacks'] and not logged again.",
                    self,
                    failure.kind,
                    failure,
                    type(fallback).__name__,
                )
            self.fallback_kinds[failure.kind] += 1
        return fallback

    # --- prompts (shared by the language-model backends) ------------------------------------------

    def _cut(self, text: str) -> str:
        text = " ".join(text.split())
        return text if len(text) <= self.max_state_chars else text[: self.max_state_chars - 3] + "..."

    def context_for(self, state: str, archive: Sequence[str]) -> list[str]:
        """The `context_size` archived states that share the most words with `state` (ties: newest first).

        Showing the nearest archived states (rather than the newest) puts the states a new one could
        be a repeat of in front of the model, and keeps prompts, and so cache keys, stable.
        """
        if not archive or self.context_size <= 0:
            return []
        words = set(_words(state))
        scored = []
        for i, other in enumerate(archive):
            if other == state:
                continue
            ow = set(_words(other))
            overlap = len(words & ow) / max(1, len(words | ow))
            scored.append((-overlap, -i, other))
        scored.sort()
        return [s for _, _, s in scored[: self.context_size]]

    def score_prompt(self, state: str, archive: Sequence[str]) -> str:
        context = self.context_for(state, archive)
        lines = [
            "You are helping an agent explore a text game. It keeps an archive of the states it has found."
        ]
        if context:
            lines.append("The archived states most similar to the new one:")
            lines += [f"- {self._cut(s)}" for s in context]
        else:
            lines.append("The archive is empty.")
        lines += [
            f"New state: {self._cut(state)}",
            "Is the new state interestingly new compared with the archived states, that is, worth "
            "keeping as a place to explore from? Answer yes or no.",
            "Answer:",
        ]
        return "\n".join(lines)

    def state_prompt(self, states: Sequence[str], context: str = "") -> str:
        lines = ["You are helping an agent explore a text game."]
        if context:
            lines.append(f"Goal: {self._cut(context)}")
        lines.append("Archived states it can return to:")
        lines += [f"State {i}: {self._cut(s)}" for i, s in enumerate(states)]
        lines += [
            "Which state is the most promising to return to and explore from? "
            "Answer with the number of the state.",
            "Answer: State",
        ]
        return "\n".join(lines)

    def preference_prompt(self, first: str, second: str, context: str = "") -> str:
        """Motif's question about two event captions; the reply names option 0 or 1."""
        lines = [
            "You are helping an agent explore a game. Two events it caused are described below.",
            f"Goal: {self._cut(context or PREFERENCE_CONTEXT)}",
            f"Option 0: {self._cut(first)}",
            f"Option 1: {self._cut(second)}",
            "Which event shows more progress or a more interesting discovery? Answer with the number of "
            "the option.",
            "Answer: Option",
        ]
        return "\n".join(lines)

    def action_prompt(
        self, state: str, actions: Sequence[str], context: str = "", tried: Sequence[str] = ()
    ) -> str:
        lines = ["You are helping an agent explore a text game."]
        if context:
            lines.append(f"Goal: {self._cut(context)}")
        lines.append(f"Current state: {self._cut(state)}")
        if tried:
            lines.append(f"Actions already tried here: {', '.join(tried)}")
        lines.append("Actions not tried yet:")
        lines += [f"{i}: {a}" for i, a in enumerate(actions)]
        lines += [
            "Which action is the most promising for discovering something new? Answer with its number.",
            "Answer:",
        ]
        return "\n".join(lines)


# --- parsing replies --------------------------------------------------------------------------------

_WORD = re.compile(r"[a-z0-9]+")
_YES_NO = re.compile(r"\b(yes|no|true|false|y|n)\b")
_NUMBER = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)(?:\s*/\s*(\d+))?")
_LABELLED = re.compile(r"\b(?:state|action|option|number|index|choice|#)\s*[:#]?\s*(\d+)\b")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _json_value(text: str) -> Any:
    """The JSON value in a reply (bare or inside a ```json fence or other text), or None."""
    candidates = [text.strip()]
    match = re.search(r"\{.*\}", text, flags=re.DOTALL)
    if match:
        candidates.append(match.group(0))
    for c in candidates:
        try:
            return json.loads(c)
        except ValueError:
            continue
    return None


def _to_score(value: Any) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float) and math.isfinite(value):
        if 0 <= value <= 1 and (isinstance(value, float) or value in (0, 1)):
            return float(value) if isinstance(value, float) else float(value) / 10.0
        if 0 <= value <= 10:
            return float(value) / 10.0
        return None
    if isinstance(value, str):
        return parse_score(value)
    return None


def parse_score(text: str) -> float | None:
    """An interestingness in [0, 1] from a reply, or None when it says nothing readable.

    Reads, in this order: JSON ({"interesting": true}, {"score": 7}, 0.8, "yes"), then the first yes/no
    (true/false) word or number in the text: "Yes." -> 1, "no" -> 0, "7" or "7/10" -> 0.7 (a 0-10
    rating), "0.8" -> 0.8. An integer 1 reads as 1 out of 10: ask for yes/no or a rating, not both.
    """
    if not text or not text.strip():
        return None
    value = _json_value(text)
    if isinstance(value, dict):
        for key in ("interesting", "interestingness", "score", "answer", "novel", "rating", "value"):
            if key in value:
                parsed = _to_score(value[key])
                if parsed is not None:
                    return parsed
    elif value is not None:
        parsed = _to_score(value)
        if parsed is not None or not isinstance(value, str):
            return parsed
    lower = text.lower()
    word = _YES_NO.search(lower)
    number = _NUMBER.search(lower)
    if word and (number is None or word.start() < number.start()):
        return 1.0 if word.group(1) in ("yes", "true", "y") else 0.0
    if number:
        x = float(number.group(1))
        if number.group(2):
            denom = float(number.group(2))
            return x / denom if denom > 0 and 0 <= x <= denom else None
        if "." in number.group(1) and 0 <= x <= 1:
            return x
        return x / 10.0 if 0 <= x <= 10 else None
    return None


def parse_index(text: str, n: int, options: Sequence[str] | None = None) -> int | None:
    """A choice among n options from a reply, or None.

    Reads JSON ({"state": 3}, {"action": "take coin"}, 3), then a labelled number ("State 3",
    "action #2"), then the first bare number, then (given `options`) the longest option text the reply
    contains. Numbers outside 0..n-1 are not a choice.
    """
    if not text or not text.strip():
        return None
    lower = text.lower()

    def valid(i: Any) -> int | None:
        if isinstance(i, bool):
            return None
        if isinstance(i, int | float) and float(i).is_integer() and 0 <= int(i) < n:
            return int(i)
        if isinstance(i, str):
            return parse_index(i, n, options)
        return None

    value = _json_value(text)
    if isinstance(value, dict):
        for key in ("state", "action", "index", "choice", "answer", "option"):
            if key in value and (got := valid(value[key])) is not None:
                return got
    elif isinstance(value, int | float) and not isinstance(value, bool):
        return valid(value)
    labelled = _LABELLED.search(lower)
    if labelled and (got := valid(int(labelled.group(1)))) is not None:
        return got
    bare = re.search(r"\b(\d+)\b", lower)
    if bare and (got := valid(int(bare.group(1)))) is not None:
        return got
    if options:
        found = [(len(o), i) for i, o in enumerate(options) if o and o.lower() in lower]
        if found:
            return max(found)[1]
    return None
