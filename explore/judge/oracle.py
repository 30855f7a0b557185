"""The rule-based ORACLE judge: not a model. It prefers text that mentions progress.

It exists to test the judge machinery (batching, caching, faults, the judge-reward bonus) where no
strong language model can be downloaded, and to separate, in a study, what the machinery does from
what a judge's quality adds. Its knowledge is a fixed list of progress terms (`PROGRESS_TERMS`): keys,
doors, stairs and new rooms or levels, each counted once per text (whole words, any case). A leading
goal sentence ("Mission: ... .", how BabyAI/MiniGrid captions begin) is not read: a goal that names a
key and a door is not progress, and counting it would make every caption of such a level tie.

- score: progress(text) / (progress(text) + 1), so 0 for no progress term, 0.5 for one, 2/3 for two.
- prefer: 1.0 when the first text mentions more progress terms, 0.0 when fewer, 0.5 on a tie.
- choose_state, choose_action: the text with the most progress terms; ties go to the seeded rng.
"""

from __future__ import annotations

import re

from explore.judge.base import Judge, JudgeFailure

PROGRESS_TERMS: dict[str, re.Pattern[str]] = {
    "key": re.compile(r"\bkeys?\b", re.IGNORECASE),
    "door": re.compile(r"\bdoors?\b", re.IGNORECASE),
    "stairs": re.compile(r"\b(?:stairs?|staircases?|ladders?|descend\w*)\b", re.IGNORECASE),
    "new room": re.compile(r"\bnew (?:room|level|area)s?\b", re.IGNORECASE),
}


# the caption's goal, as envs.text.babyai_text.caption writes it (BabyAI missions hold no period)
MISSION_SENTENCE = re.compile(r"^\s*Mission:[^.]*\.\s*")


def progress(text: str) -> int:
    """How many of the progress terms (key, door, stairs, new room) `text` mentions, after its goal."""
    state = MISSION_SENTENCE.sub("", text, count=1)
    return sum(bool(pattern.search(state)) for pattern in PROGRESS_TERMS.values())


class OracleJudge(Judge):
    """The rule-based oracle (see the module docstring); it cannot fail, so it is its own fallback."""

    kind = "oracle"

    def __init__(self, *, threshold: float = 0.5, seed: int = 0, **kwargs):
        super().__init__(threshold=threshold, seed=seed, **kwargs)
        self._fallback = self

    def _score(self, states: list[str], archive: list[str]) -> list[float | JudgeFailure]:
        return [p / (p + 1.0) for p in map(progress, states)]

    def _prefer(self, pairs: list[tuple[str, str]], context: str) -> list[float | JudgeFailure]:
        out: list[float | JudgeFailure] = []
        for a, b in pairs:
            gap = progress(a) - progress(b)
            out.append(0.5 if gap == 0 else float(gap > 0))
        return out

    def _best(self, texts: list[str]) -> int:
        values = [progress(t) for t in texts]
        best = max(values)
        return self.rng.choice([i for i, v in enumerate(values) if v == best])

    def _choose_state(self, states: list[str], context: str) -> int:
        return self._best(states)

    def _choose_action(self, state: str, actions: list[str], context: str, tried: list[str]) -> int:
        return self._best(actions)
