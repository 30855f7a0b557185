"""Language-model backends: prompts in, texts out.

Two backends share one small protocol (`TextGenerator`) so that callers (the LLM bandit agent, the
Go-Explore judges) never care where the text comes from:

- `OpenAIClient` (explore/llm/openai_client.py): any OpenAI-compatible HTTP endpoint (OpenAI, vLLM,
  llama.cpp, Ollama, ...), standard library only, with batching, retries, a response cache and
  token accounting.
- `LocalCausalLM` (explore/llm/local.py): a transformers causal LM loaded from a local directory
  (the "llm" extra), with batched generation and likelihood scoring of given answers.

The submodules are imported lazily so that `import explore.llm` needs neither transformers nor a
network connection.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable


class LLMError(RuntimeError):
    """A backend could not produce text; callers catch it and fall back to a non-LLM policy."""


class LLMRequestError(LLMError):
    """An HTTP request that failed after every retry (or failed in a way retrying cannot fix).

    It carries what a caller needs to decide and to report: the URL, how many attempts were made,
    the HTTP status if there was one, and whether the failure was of a retryable kind.
    """

    def __init__(
        self,
        message: str,
        *,
        url: str = "",
        attempts: int = 0,
        status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
    ):
        super().__init__(message)
        self.url = url
        self.attempts = attempts
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after  # seconds the server asked us to wait (Retry-After), if any


@runtime_checkable
class TextGenerator(Protocol):
    """What an LLM agent needs from a backend: a batch of prompts in, one text per prompt out.

    With `return_exceptions=True` a prompt that failed yields its exception in place of a text, so
    one bad request does not cost the whole batch its answers.
    """

    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int = ...,
        temperature: float = ...,
        return_exceptions: bool = ...,
    ) -> list[Any]: ...


_EXPORTS = {
    "OpenAIClient": "explore.llm.openai_client",
    "ClientStats": "explore.llm.openai_client",
    "LocalCausalLM": "explore.llm.local",
    "LocalModelError": "explore.llm.local",
    "build_tiny_causal_lm": "explore.llm.local",
    "finetune_sft": "explore.llm.local",
    "sft_loss": "explore.llm.local",
}

__all__ = ["LLMError", "LLMRequestError", "TextGenerator", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'explore.llm' has no attribute {name!r}")
