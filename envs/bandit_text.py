"""Multi-armed bandits as text: four framings, three ways to show the history, and a tolerant parser.

BanditBench (Krishnamurthy et al. 2024; EVOLvE) asks a language model to play a bandit dressed up as
a familiar task: recommending videos, suggesting clothes, pressing buttons, showing ads. The same
bandit can be shown to the model in three ways (`mode`):

- "raw": every round so far, oldest first (what the model must summarize itself);
- "summary": per-arm pulls and mean reward (the summarization done for it);
- "ucb": algorithm-guided support, UCB's per-arm exploitation value (the mean) and exploration
  bonus sqrt(alpha ln N / n_a) with alpha = 0.5, plus their sum; untried arms are flagged.

Every prompt ends with an instruction to answer with one arm's name and the cue "Answer:", so the
same prompt serves chat models and plain completion models (and distillation, whose completion is
" <name>").

`parse_arm` reads the answer back, tolerant of case, punctuation, markdown and surrounding words,
and returns None for a reply that names no arm or several different arms, so that the caller can
fall back to a stated policy and count it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from explore.errors import ConfigError, close_matches

MODES = ("raw", "summary", "ucb")
UCB_ALPHA = 0.5


@dataclass(frozen=True)
class Framing:
    """One story around the same bandit: what the arms are called and what a reward means.

    The `*_word` fields are phrased so that one template fits all four stories.
    """

    key: str
    unit: str  # the noun for one arm: "video"
    units: str  # its plural
    round_word: str  # the noun for one round: "visit"
    intro: str  # the scenario; {k}, {units} and {names} are filled in
    pulled: str  # past tense of choosing an arm: "recommended"
    success: str  # a reward of 1: "watched"
    failure: str  # a reward of 0: "not watched"
    success_count: str  # how often a reward of 1 came: "watched" (3 times)
    rate: str  # the mean of binary rewards: "watch rate"
    real_reward: str  # the name of a real-valued reward: "engagement score"
    question: str  # the closing question
    goal: str  # what to maximize when rewards are 0/1
    names: tuple[str, ...] = ()  # fixed names; empty: spreadsheet letters A, B, ..., Z, AA, AB, ...

    def arm_names(self, num_arms: int) -> list[str]:
        """The first `num_arms` names; raises when the framing has fewer."""
        if num_arms < 1:
            raise ConfigError(f"num_arms must be >= 1, got {num_arms}")
        if not self.names:
            return [_letters(i) for i in range(num_arms)]
        if num_arms > len(self.names):
            raise ConfigError(
                f"framing {self.key!r} names at most {len(self.names)} arms, got num_arms={num_arms}; "
                "use a letter-named framing ('video' or 'ads') for more"
            )
        return list(self.names[:num_arms])

    @property
    def letter_names(self) -> bool:
        return not self.names

    def label(self, name: str) -> str:
        """How the prompt refers to an arm: "video C", "blue button", "jeans"."""
        if self.letter_names:
            return f"{self.unit} {name}"
        return f"{name} {self.unit}" if self.key == "buttons" else name


def _letters(i: int) -> str:
    """0 -> A, 25 -> Z, 26 -> AA: spreadsheet column names, unbounded."""
    name = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        name = chr(65 + r) + name
    return name


# Single words, none inside another, so that a name found in a reply is never part of a longer one.
_COLORS = (
    "blue", "green", "red", "yellow", "orange", "purple", "pink", "brown", "black", "white",
    "gray", "cyan", "magenta", "maroon", "olive", "lime", "teal", "navy", "indigo", "violet",
    "gold", "silver", "coral", "turquoise", "lavender", "beige", "ivory", "crimson", "khaki", "amber",
)  # fmt: skip
_CLOTHES = (
    "jacket", "dress", "jeans", "scarf", "sneakers", "blouse", "trousers", "coat", "gown", "shirt",
    "skirt", "blazer", "boots", "hoodie", "sweater", "cardigan", "vest", "shorts", "sandals", "loafers",
    "poncho", "parka", "tunic", "romper", "leggings", "beanie", "gloves", "kimono", "overalls", "tuxedo",
)  # fmt: skip

FRAMINGS: dict[str, Framing] = {
    f.key: f
    for f in (
        Framing(
            key="video",
            unit="video",
            units="videos",
            round_word="visit",
            intro=(
                "You are the recommendation system of a video streaming platform. The library has {k} "
                "{units}, named {names}. Each time a user visits, you recommend one video and see whether "
                "the user watches it. Each video has its own fixed chance of being watched, unknown to you."
            ),
            pulled="recommended",
            success="watched",
            failure="not watched",
            success_count="watched",
            rate="watch rate",
            real_reward="engagement score",
            question="Which video do you recommend next?",
            goal="as many videos watched as possible",
        ),
        Framing(
            key="clothes",
            unit="item",
            units="items",
            round_word="customer",
            intro=(
                "You are the shopping assistant of an online clothing store with {k} {units} for sale: "
                "{names}. Each time a customer arrives, you suggest one item and see whether the customer "
                "buys it. Each item has its own fixed chance of being bought, unknown to you."
            ),
            pulled="suggested",
            success="bought",
            failure="not bought",
            success_count="bought",
            rate="purchase rate",
            real_reward="satisfaction score",
            question="Which item do you suggest next?",
            goal="as many items bought as possible",
            names=_CLOTHES,
        ),
        Framing(
            key="buttons",
            unit="button",
            units="buttons",
            round_word="round",
            intro=(
                "You are in a room with {k} {units}, colored {names}. In each round you press one button "
                "and receive a reward. Each button pays out according to its own fixed distribution, "
                "unknown to you."
            ),
            pulled="pressed",
            success="reward 1",
            failure="reward 0",
            success_count="paid out",
            rate="mean reward",
            real_reward="reward",
            question="Which button do you press next?",
            goal="as many rewards of 1 as possible",
            names=_COLORS,
        ),
        Framing(
            key="ads",
            unit="ad",
            units="ads",
            round_word="page view",
            intro=(
                "You choose which advertisement a website shows. There are {k} {units}, named {names}. "
                "Each time a visitor opens the page, you show one ad and see whether the visitor clicks "
                "it. Each ad has its own fixed click rate, unknown to you."
            ),
            pulled="shown",
            success="clicked",
            failure="not clicked",
            success_count="clicked",
            rate="click rate",
            real_reward="revenue",
            question="Which ad do you show next?",
            goal="as many clicks as possible",
        ),
    )
}

_ALIASES = {
    "video_watching": "video", "videos": "video", "vid": "video", "movies": "video",
    "clothes_shopping": "clothes", "clothing": "clothes", "shopping": "clothes",
    "button": "buttons", "button_pushing": "buttons", "btn": "buttons",
    "ad": "ads", "online_ads": "ads", "advertising": "ads",
}  # fmt: skip


def get_framing(framing: str | Framing) -> Framing:
    """A framing by key or alias ("video", "clothes_shopping", "btn", ...)."""
    if isinstance(framing, Framing):
        return framing
    key = framing.lower().replace("-", "_").replace(" ", "_")
    key = _ALIASES.get(key, key)
    if key not in FRAMINGS:
        hints = close_matches(framing, [*FRAMINGS, *_ALIASES])
        hint = f" Did you mean: {', '.join(hints)}?" if hints else ""
        raise ConfigError(f"unknown bandit framing {framing!r}; expected one of {', '.join(FRAMINGS)}.{hint}")
    return FRAMINGS[key]


# --- statistics ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArmStats:
    """Per-arm pulls and reward sums of one history; what "summary" and "ucb" show."""

    counts: tuple[int, ...]
    sums: tuple[float, ...]

    @classmethod
    def from_history(cls, history: Sequence[tuple[int, float]], num_arms: int) -> ArmStats:
        counts = [0] * num_arms
        sums = [0.0] * num_arms
        for arm, reward in history:
            if not 0 <= int(arm) < num_arms:
                raise ConfigError(f"history holds arm {arm}, outside 0..{num_arms - 1}")
            counts[int(arm)] += 1
            sums[int(arm)] += float(reward)
        return cls(tuple(counts), tuple(sums))

    @property
    def total(self) -> int:
        return sum(self.counts)

    def means(self) -> list[float | None]:
        return [s / n if n else None for n, s in zip(self.counts, self.sums, strict=True)]

    def ucb_bonus(self, alpha: float = UCB_ALPHA) -> list[float]:
        """sqrt(alpha ln N / n_a), infinite for an arm never pulled (UCB tries those first)."""
        log_n = math.log(self.total) if self.total > 0 else 0.0
        return [math.sqrt(alpha * log_n / n) if n else math.inf for n in self.counts]


def _num_arms(spec: int | Any) -> int:
    num = spec if isinstance(spec, int) else getattr(spec, "num_arms", None)
    if not isinstance(num, int):
        raise ConfigError(f"expected a number of arms or a bandit spec with num_arms, got {spec!r}")
    return num


def _is_binary(history: Sequence[tuple[int, float]], spec: Any) -> bool:
    family = getattr(spec, "family", None)
    if family is not None:
        return family == "bernoulli"
    return all(float(r) in (0.0, 1.0) for _, r in history)


def _list(names: Sequence[str], conjunction: str = "and") -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} {conjunction} {names[-1]}"


def _times(n: int) -> str:
    return "1 time" if n == 1 else f"{n} times"


def _fmt(x: float) -> str:
    return f"{x:.2f}"


# --- prompts -------------------------------------------------------------------------------------


def render_prompt(
    framing: str | Framing,
    spec: int | Any,
    history: Sequence[tuple[int, float]],
    mode: str = "summary",
    *,
    horizon: int | None = None,
    binary: bool | None = None,
    alpha: float = UCB_ALPHA,
    max_rows: int | None = None,
) -> str:
    """The prompt for the next decision after `history`, a sequence of (arm index, reward).

    Args:
        spec: the number of arms, or a bandit spec (its num_arms, horizon and family are used).
        mode: "raw", "summary" or "ucb" (see the module docstring).
        horizon: the number of rounds in total, mentioned when known (taken from spec otherwise).
        binary: whether rewards are 0/1 ("watched" / "not watched") or real numbers; by default
            from spec.family, or from the history's values.
        alpha: UCB's exploration coefficient in "ucb" mode.
        max_rows: "raw" mode shows at most this many latest rounds (long histories overflow small
            context windows; the omission is stated in the prompt).
    """
    f = get_framing(framing)
    if mode not in MODES:
        raise ConfigError(f"unknown prompt mode {mode!r}; expected one of {', '.join(MODES)}")
    k = _num_arms(spec)
    names = f.arm_names(k)
    if horizon is None:
        horizon = getattr(spec, "horizon", None) if not isinstance(spec, int) else None
    if binary is None:
        binary = _is_binary(history, spec)
    labels = [f.label(n) for n in names]
    goal = f.goal if binary else f"as high a total {f.real_reward} as possible"
    lines = [f.intro.format(k=k, units=f.units if k > 1 else f.unit, names=_list(names))]
    span = f" over {horizon} {f.round_word}s" if horizon else ""
    lines.append(
        f"Your goal is to get {goal}{span}: balance trying {f.units} you know little about "
        f"against choosing the ones that have done well."
    )
    lines.append("")
    t = len(history)
    plural = "s" if t != 1 else ""
    if t == 0:
        lines.append(f"There have been no {f.round_word}s yet.")
    elif mode == "raw":
        start = 0 if max_rows is None or t <= max_rows else t - max_rows
        head = f"History of the {t} {f.round_word}{plural} so far"
        lines.append(
            f"{head} (the first {start} omitted), oldest first:" if start else f"{head}, oldest first:"
        )
        for i in range(start, t):
            arm, reward = history[i]
            if binary:
                outcome = f.success if float(reward) >= 0.5 else f.failure
            else:
                outcome = f"{f.real_reward} {_fmt(float(reward))}"
            lines.append(f"{f.round_word.capitalize()} {i + 1}: {labels[int(arm)]}, {outcome}")
    else:
        stats = ArmStats.from_history(history, k)
        means = stats.means()
        if mode == "summary":
            lines.append(f"Summary of the {t} {f.round_word}{plural} so far:")
            for a in range(k):
                n = stats.counts[a]
                if n == 0:
                    lines.append(f"{labels[a]}: {f.pulled} 0 times")
                elif binary:
                    wins = round(stats.sums[a])
                    lines.append(
                        f"{labels[a]}: {f.pulled} {_times(n)}, {f.success_count} {_times(wins)} "
                        f"({f.rate} {_fmt(means[a])})"
                    )
                else:
                    lines.append(
                        f"{labels[a]}: {f.pulled} {_times(n)}, average {f.real_reward} {_fmt(means[a])}"
                    )
        else:
            bonus = stats.ucb_bonus(alpha)
            lines.append(
                f"Statistics from the UCB algorithm after {t} {f.round_word}{plural} (exploitation value = "
                f"mean reward; exploration bonus = sqrt({alpha:g} * ln({t}) / times {f.pulled})):"
            )
            for a in range(k):
                n = stats.counts[a]
                if n == 0:
                    lines.append(
                        f"{labels[a]}: {f.pulled} 0 times, exploitation value unknown, "
                        "exploration bonus infinite (not tried yet)"
                    )
                else:
                    lines.append(
                        f"{labels[a]}: {f.pulled} {_times(n)}, exploitation value {_fmt(means[a])}, "
                        f"exploration bonus {_fmt(bonus[a])}, sum {_fmt(means[a] + bonus[a])}"
                    )
    lines.append("")
    lines.append(f"{f.question} Answer with the name of one {f.unit} only ({_list(names, 'or')}).")
    lines.append("Answer:")
    return "\n".join(lines)


def completion_for(framing: str | Framing, num_arms: int, arm: int) -> str:
    """The completion that answers a prompt with `arm`: " <name>" (the space follows "Answer:")."""
    return " " + get_framing(framing).arm_names(num_arms)[int(arm)]


# --- parsing replies -------------------------------------------------------------------------------

_CONJUNCTIONS = {"and", "or", "nor", "but", "vs", "versus", "then", "than"}
_STRIP = re.compile(r"[\s*_`\"'.,!?:;()\[\]{}<>#-]+")


@lru_cache(maxsize=256)
def _patterns(key: str, num_arms: int) -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str], list[str]]:
    """Regexes for one framing and arm count (cached: the agent parses every round)."""
    f = FRAMINGS[key]
    names = f.arm_names(num_arms)
    alt = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    unit = re.escape(f.unit) + "s?"
    # A whole reply that is just the answer, e.g. "c", "Video C", "the blue button", "Answer: jeans".
    whole = re.compile(
        rf"^(?:(?:final\s+)?answer(?:\s+is)?\s*)?(?:i\s+(?:choose|pick|recommend|suggest|press|show)\s+)?"
        rf"(?:the\s+)?(?:{unit}\s+)?({alt})(?:\s+{unit})?$",
        re.IGNORECASE,
    )
    # A name tied to the arm noun anywhere in the text: "video C", "the blue button".
    anchored = re.compile(rf"\b{unit}\s+({alt})\b|\b({alt})\s+{unit}\b", re.IGNORECASE)
    # A bare name: letters must be capitals (so that "a" and "I" in prose are not arms); words any case.
    bare = re.compile(rf"\b({alt})\b", 0 if f.letter_names else re.IGNORECASE)
    return whole, anchored, bare, names


def parse_arm(reply: str | None, framing: str | Framing, num_arms: int) -> int | None:
    """The arm a reply names, or None if it names none or several different ones.

    Tried in order, the first rule that finds any arm decides (several different arms: None):
      1. the whole reply, or its first line, stripped of case, punctuation and markdown, is an answer
         ("c", "**Video C**.", "Video C" followed by more lines);
      2. names tied to the arm noun ("I would recommend video C next");
      3. bare names (capital letters for letter-named framings), where a lone "A" or "I" followed by
         a lowercase word reads as English ("I think C" is C, "A good pick is D" is D);
      4. bare names including those.
    """
    if not reply or not reply.strip():
        return None
    f = get_framing(framing)
    whole, anchored, bare, names = _patterns(f.key, num_arms)
    index = {n.lower(): i for i, n in enumerate(names)}
    first_line = next(line for line in reply.splitlines() if line.strip())
    for candidate in (reply, first_line):  # a model may answer, then go on writing
        m = whole.match(_STRIP.sub(" ", candidate).strip())
        if m:
            return index[m.group(1).lower()]

    found = {index[(m.group(1) or m.group(2)).lower()] for m in anchored.finditer(reply)}
    if found:
        return found.pop() if len(found) == 1 else None
    matches = list(bare.finditer(reply))
    if f.letter_names:
        found = {index[m.group(1).lower()] for m in matches if not _is_prose(m, reply)}
        if found:
            return found.pop() if len(found) == 1 else None
    found = {index[m.group(1).lower()] for m in matches}
    return found.pop() if len(found) == 1 else None


def _is_prose(match: re.Match[str], text: str) -> bool:
    """A capital "A" or "I" followed by a lowercase word is the article or the pronoun, not an arm.

    Except before a conjunction: in "A or C" the "A" is an arm (and the reply is ambiguous).
    """
    if match.group(1) not in ("A", "I"):
        return False
    follow = re.match(r"\s+([a-z]+)", text[match.end() :])
    return follow is not None and follow.group(1) not in _CONJUNCTIONS
