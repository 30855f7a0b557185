"""The uniform judge: no opinion. The last-resort fallback and the baseline of the IGE study."""

from __future__ import annotations

from explore.judge.base import Judge, JudgeFailure


class UniformJudge(Judge):
    """Finds every state interesting and chooses states and actions uniformly at random.

    `score` returns `value` (1.0 by default) for every state, so with any threshold <= value every new
    cell is archived, as in the original Go-Explore; `prefer` has no preference (0.5); `choose_state` and `choose_action` draw uniformly
    from the judge's seeded generator. It cannot fail, so it is its own fallback.
    """

    kind = "uniform"

    def __init__(self, *, value: float = 1.0, seed: int = 0, threshold: float = 0.5, **kwargs):
        super().__init__(threshold=threshold, seed=seed, **kwargs)
        self.value = float(value)
        self._fallback = self

    def _score(self, states: list[str], archive: list[str]) -> list[float | JudgeFailure]:
        return [self.value] * len(states)

    def _prefer(self, pairs: list[tuple[str, str]], context: str) -> list[float | JudgeFailure]:
        return [0.5] * len(pairs)

    def _choose_state(self, states: list[str], context: str) -> int:
        return self.rng.randrange(len(states))

    def _choose_action(self, state: str, actions: list[str], context: str, tried: list[str]) -> int:
        return self.rng.randrange(len(actions))
