"""A local transformers causal LM as a text backend, plus the small SFT loop algorithm distillation needs.

Everything loads from a local directory with `local_files_only=True`: runs never download, so a
model has to be placed on disk first (or built from a config, `build_tiny_causal_lm`, which is what
the tests and the distillation smoke run do). transformers is the optional "llm" extra.

Why left padding: a batch of prompts of different lengths must end at the same position so that
generation continues every prompt right after its last token. Why left truncation: the prompts
here end with the question (and raw bandit histories grow at the front), so the end must survive.
"""

from __future__ import annotations

import logging
import math
import os
import random
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from explore.errors import ConfigError, require

log = logging.getLogger(__name__)

_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


class LocalModelError(ConfigError):
    """A local model path that cannot be loaded: names the path and what is missing."""


def _transformers() -> Any:
    return require("transformers", "llm", "The local LLM backend (explore.llm.local)")


def check_model_dir(path: str | os.PathLike[str]) -> Path:
    """The path if it holds a config, weights and a tokenizer; otherwise an error naming what is missing.

    Checked up front because transformers, given a bad local path, tries the hub and fails with a
    message about repository ids that hides the real problem.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise LocalModelError(
            f"local model path {str(path)!r} does not exist. This backend loads local directories only "
            "(no downloads): save a model there with save_pretrained() or build one with build_tiny_causal_lm()."
        )
    if not path.is_dir():
        raise LocalModelError(f"local model path {str(path)!r} is not a directory")
    names = {p.name for p in path.iterdir()}
    missing = []
    if "config.json" not in names:
        missing.append("config.json (the model configuration)")
    if not names.intersection(_WEIGHT_FILES):
        missing.append(f"model weights (one of {', '.join(_WEIGHT_FILES)})")
    if not names.intersection(_TOKENIZER_FILES):
        missing.append(f"tokenizer files (one of {', '.join(_TOKENIZER_FILES)})")
    if missing:
        present = ", ".join(sorted(names)) or "nothing"
        raise LocalModelError(
            f"local model path {str(path)!r} is missing: {'; '.join(missing)}. It holds: {present}."
        )
    return path


class LocalCausalLM:
    """A causal LM from a local directory, as an `explore.llm.TextGenerator`.

    Args:
        path: a directory written by save_pretrained() (config.json, weights, tokenizer files).
        device: where the model runs.
        dtype: e.g. torch.bfloat16 on a GPU; the checkpoint's dtype when None.
        batch_size: prompts per forward pass (bounds memory; larger batches are split).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        batch_size: int = 16,
    ):
        transformers = _transformers()
        self.path = check_model_dir(path)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        kwargs: dict[str, Any] = {"local_files_only": True}
        if dtype is not None:
            kwargs["dtype"] = dtype
        self.model = transformers.AutoModelForCausalLM.from_pretrained(self.path, **kwargs).to(self.device)
        self.model.eval()
        tok = self.tokenizer
        tok.padding_side = "left"
        tok.truncation_side = "left"
        if tok.pad_token_id is None:
            if tok.eos_token_id is None:
                raise LocalModelError(
                    f"the tokenizer in {str(self.path)!r} has neither a pad nor an eos token"
                )
            tok.pad_token = tok.eos_token  # the usual choice for decoder-only models; masked out anyway
        self.max_length: int | None = getattr(self.model.config, "max_position_embeddings", None)

    def __repr__(self) -> str:
        return f"LocalCausalLM({str(self.path)!r}, device={str(self.device)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write model and tokenizer so that `LocalCausalLM(path)` loads them back."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        return path

    # --- generation -------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int = 16,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """One continuation per prompt: greedy when temperature is 0, sampled otherwise.

        `seed` makes sampling reproducible without touching the caller's global torch RNG. `stop`
        cuts each text at the first stop string. `return_exceptions` is accepted for the
        `TextGenerator` protocol; a local model has no per-prompt failures to return.
        """
        del return_exceptions
        if isinstance(prompts, str):
            raise TypeError("generate() takes a sequence of prompts; wrap a single prompt in a list")
        tok = self.tokenizer
        limit = None if self.max_length is None else max(1, self.max_length - max_new_tokens)
        texts: list[str] = []
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            if seed is not None:
                torch.manual_seed(seed)
            for start in range(0, len(prompts), self.batch_size):
                chunk = list(prompts[start : start + self.batch_size])
                enc = tok(
                    chunk, return_tensors="pt", padding=True, truncation=limit is not None, max_length=limit
                ).to(self.device)
                kwargs: dict[str, Any] = {
                    "max_new_tokens": max_new_tokens,
                    "pad_token_id": tok.pad_token_id,
                    "eos_token_id": tok.eos_token_id,
                    "do_sample": temperature > 0,
                }
                if temperature > 0:
                    kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
                out = self.model.generate(
                    input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], **kwargs
                )
                new = out[:, enc["input_ids"].shape[1] :]
                texts.extend(tok.batch_decode(new, skip_special_tokens=True))
        if stop:
            texts = [_cut(t, stop) for t in texts]
        return texts

    # --- scoring given answers --------------------------------------------------------------------

    def _pair_ids(self, prompt: str, answer: str) -> tuple[list[int], list[int]]:
        """Token ids of prompt and answer, tokenized apart (as in SFT), prompt cut from the left to fit."""
        prompt_ids = self.tokenizer(prompt)["input_ids"]
        answer_ids = self.tokenizer(answer, add_special_tokens=False)["input_ids"]
        if not prompt_ids:  # the first answer token needs a position to be predicted from
            start = (
                self.tokenizer.bos_token_id
                if self.tokenizer.bos_token_id is not None
                else self.tokenizer.eos_token_id
            )
            if start is None:
                raise ConfigError("an empty prompt needs a tokenizer with a bos or eos token")
            prompt_ids = [start]
        if self.max_length is not None and len(prompt_ids) + len(answer_ids) > self.max_length:
            keep = max(1, self.max_length - len(answer_ids))
            prompt_ids = prompt_ids[len(prompt_ids) - keep :]
        return prompt_ids, answer_ids

    def _answer_logprobs(self, pairs: Sequence[tuple[list[int], list[int]]]) -> list[torch.Tensor]:
        """Per-token log-probabilities of each answer given its prompt (right padding, batched)."""
        out: list[torch.Tensor] = []
        for start in range(0, len(pairs), self.batch_size):
            chunk = pairs[start : start + self.batch_size]
            ids, mask, _ = _right_pad(chunk, self.tokenizer.pad_token_id, self.device)
            logits = self.model(input_ids=ids, attention_mask=mask).logits.float()
            logp = F.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
            for row, (p, a) in enumerate(chunk):
                # token j of the answer sits at position len(p)+j and is predicted from position len(p)+j-1
                out.append(logp[row, len(p) - 1 : len(p) - 1 + len(a)])
        return out

    @torch.no_grad()
    def choice_logprobs(
        self,
        prompts: Sequence[str],
        choices: Sequence[str] | Sequence[Sequence[str]],
        *,
        reduction: str = "sum",
    ) -> torch.Tensor:
        """log p(choice | prompt) for every prompt and choice, shape (len(prompts), num_choices).

        `choices` is one list shared by all prompts or one list per prompt (all of one length).
        Include the separator the model expects, e.g. " A" after a prompt ending in "Answer:".
        reduction "sum" is the sequence log-likelihood; "mean" divides by the answer's token count,
        which removes the bias towards short answers when choices differ in length.
        """
        if reduction not in ("sum", "mean"):
            raise ConfigError(f"reduction={reduction!r}: expected 'sum' or 'mean'")
        per_prompt = [list(c) for c in choices] if choices and not isinstance(choices[0], str) else None
        if per_prompt is not None and len(per_prompt) != len(prompts):
            raise ConfigError(f"{len(per_prompt)} choice lists for {len(prompts)} prompts")
        num = len(per_prompt[0]) if per_prompt else len(choices)
        pairs = []
        for i, prompt in enumerate(prompts):
            options = per_prompt[i] if per_prompt else choices
            if len(options) != num:
                raise ConfigError("every prompt needs the same number of choices")
            pairs.extend(self._pair_ids(prompt, str(c)) for c in options)
        if any(not a for _, a in pairs):
            raise ConfigError("a choice tokenizes to nothing; choices must be non-empty strings")
        scores = [lp.sum() if reduction == "sum" else lp.mean() for lp in self._answer_logprobs(pairs)]
        return torch.stack(scores).view(len(prompts), num).cpu() if scores else torch.zeros(len(prompts), num)


# --- supervised fine-tuning on {"prompt", "completion"} records -------------------------------------


def _right_pad(
    rows: Sequence[tuple[list[int], list[int]]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """input ids, attention mask and labels (-100 outside the completion) for prompt+completion rows."""
    width = max(len(p) + len(a) for p, a in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for r, (p, a) in enumerate(rows):
        n = len(p) + len(a)
        ids[r, :n] = torch.tensor(p + a, dtype=torch.long)
        mask[r, :n] = 1
        labels[r, len(p) : n] = torch.tensor(a, dtype=torch.long)
    return ids.to(device), mask.to(device), labels.to(device)


def _sft_rows(lm: LocalCausalLM, records: Iterable[Mapping[str, str]]) -> list[tuple[list[int], list[int]]]:
    """Tokenized (prompt, completion + eos) rows; the eos teaches the model to stop after the answer."""
    eos = [lm.tokenizer.eos_token_id] if lm.tokenizer.eos_token_id is not None else []
    rows = []
    for rec in records:
        p, a = lm._pair_ids(rec["prompt"], rec["completion"])
        rows.append((p, a + eos))
    return rows


def _completion_loss(lm: LocalCausalLM, rows: Sequence[tuple[list[int], list[int]]]) -> torch.Tensor:
    ids, mask, labels = _right_pad(rows, lm.tokenizer.pad_token_id, lm.device)
    logits = lm.model(input_ids=ids, attention_mask=mask).logits.float()
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100
    )


@torch.no_grad()
def sft_loss(lm: LocalCausalLM, records: Sequence[Mapping[str, str]], batch_size: int = 16) -> float:
    """Mean token cross-entropy of the completions given their prompts (the SFT objective)."""
    rows = _sft_rows(lm, records)
    lm.model.eval()
    total, tokens = 0.0, 0
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        n = sum(len(a) for _, a in chunk)
        total += _completion_loss(lm, chunk).item() * n
        tokens += n
    return total / max(tokens, 1)


def finetune_sft(
    lm: LocalCausalLM,
    records: Sequence[Mapping[str, str]],
    *,
    epochs: int = 1,
    lr: float = 5e-4,
    batch_size: int = 16,
    max_steps: int | None = None,
    weight_decay: float = 0.0,
    max_grad_norm: float = 1.0,
    seed: int = 0,
    log_every: int = 0,
) -> list[float]:
    """Fine-tune `lm.model` in place on prompt/completion records; returns the loss of every step.

    Plain torch (AdamW, linear warm-up then cosine decay, gradient clipping): the data sets here are
    small, and the loop is short enough to read, so the Trainer and its dependencies are not needed.
    The loss covers the completion tokens only: the model learns the answer, not the prompt.
    """
    rows = _sft_rows(lm, records)
    if not rows:
        raise ConfigError("no records to fine-tune on")
    order_rng = random.Random(seed)
    steps_per_epoch = math.ceil(len(rows) / batch_size)
    total = steps_per_epoch * epochs if max_steps is None else min(max_steps, steps_per_epoch * epochs)
    warmup = max(1, total // 10)
    opt = torch.optim.AdamW(lm.model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            (s + 1) / warmup
            if s < warmup
            else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total - warmup)))
        ),
    )
    lm.model.train()
    losses: list[float] = []
    try:
        for _ in range(epochs):
            order = list(range(len(rows)))
            order_rng.shuffle(order)
            for start in range(0, len(order), batch_size):
                if len(losses) >= total:
                    return losses
                loss = _completion_loss(lm, [rows[i] for i in order[start : start + batch_size]])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(lm.model.parameters(), max_grad_norm)
                opt.step()
                sched.step()
                losses.append(loss.item())
                if log_every and len(losses) % log_every == 0:
                    log.info("step %d/%d  loss %.4f", len(losses), total, losses[-1])
    finally:
        lm.model.eval()
    return losses


# --- a tiny model that needs no download -----------------------------------------------------------


def build_tiny_causal_lm(
    path: str | os.PathLike[str],
    corpus: Iterable[str],
    *,
    vocab_size: int = 512,
    n_layer: int = 2,
    n_embd: int = 64,
    n_head: int = 2,
    n_positions: int = 1024,
    seed: int = 0,
) -> Path:
    """Write a randomly initialized GPT-2-style model and a byte-level BPE tokenizer to `path`.

    The tokenizer is trained on `corpus` (e.g. rendered prompts) so that prompts take few tokens;
    being byte-level it still encodes any text. Load it back with `LocalCausalLM(path)`, the same
    code path a downloaded model takes. For tests, smoke runs and distillation from scratch.
    """
    transformers = _transformers()
    tokenizers = require("tokenizers", "llm", "Building a tokenizer")
    special = ["<|endoftext|>", "<|pad|>"]
    bpe = tokenizers.Tokenizer(tokenizers.models.BPE())
    bpe.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(list(corpus), trainer=trainer)
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|endoftext|>", bos_token="<|endoftext|>", pad_token="<|pad|>"
    )
    config = transformers.GPT2Config(
        vocab_size=len(tok),
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.GPT2LMHeadModel(config)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _cut(text: str, stop: Sequence[str]) -> str:
    cuts = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return text[: min(cuts)] if cuts else text
