"""Combinations of bonuses, a registry of named bonuses, and a small expression grammar over them.

    build_bonus("e3b*noveld", BonusContext(num_envs=32, observation_space=..., action_space=...))

Grammar (whitespace is ignored):

    sum    := term ('+' term)*
    term   := [number '*'] factor ('*' factor)*
    factor := name                     (a registered bonus: rnd, count, count_e, count_e1, noveld, e3b)

so `count_e+0.5*rnd` is SumBonus([(1, count_e), (0.5, rnd)]) and `e3b*rnd` is
ProductBonus(e3b, rnd). No parentheses, no subtraction: coefficients are >= 0.

Combination rules, and why:
- A product r = prod_i b_i (Henaff et al. 2023: episodic x global) is divided by a running std
  (`context.reward_norm`, default "reward": the std of the product itself, as the study
  normalizes the intrinsic reward) since a product of differently scaled factors has no natural
  scale. Its factors are built as plain factors: inside a product with an episodic factor,
  `noveld` is the global novelty max(N(s') - alpha N(s), 0) without its own first-visit gate or
  normalization, with alpha 0.1 unless `context.noveld_alpha` says otherwise, so `e3b*noveld` is
  the study's E3B x NovelD and `e3b*rnd` its E3B x RND.
- A sum r = sum_i c_i b_i is not normalized again: each term keeps its own scale (counts in
  (0, 1], RND and NovelD normalized by their own statistics), which is what gives the
  coefficients a meaning.
- `rnd` and `noveld` take any observation: (C, 84, 84) frame stacks go to RND's CNNs, anything
  else to `explore.noveld.ObsRND` (the `context.rnd_input` part, flattened, with MLP networks).
  `e3b` gets a default encoder from `make_encoder` (Nature CNN for frames, an MLP otherwise).
- Composites forward `reset`, `warmup`, sum their children's "loss" entries and prefix every other
  loss or metric entry with the child's name; `parts()` gives the mean episodic and global parts
  of the last rollout for `charts/bonus_episodic` and `charts/bonus_global`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import gymnasium as gym
import torch
from torch import Tensor, nn

from explore.archive.bonus import ArchiveBonus
from explore.bonus import Batch, BonusModule, masked_mean
from explore.counts import EpisodicCount, GlobalCount
from explore.errors import ConfigError, close_matches
from explore.judge_reward import build_judge_reward
from explore.noveld import (
    NovelD,
    RewardNorm,
    RewardNormalizer,
    make_normalizer,
    make_rnd,
)

Kind = Literal["episodic", "global", "combined"]


def bonus_kind(module: nn.Module) -> str:
    """The kind of a bonus: episodic, global or combined; modules that do not say are global (RND)."""
    return getattr(module, "kind", "global")


def _labels(children: Sequence[nn.Module]) -> list[str]:
    """Children's names, made unique with a suffix where a name repeats (`rnd+rnd`)."""
    names = [getattr(c, "name", "bonus") for c in children]
    return [f"{n}_{i}" if names.count(n) > 1 else n for i, n in enumerate(names)]


# --- combinations -----------------------------------------------------------------------------


class _Composite(BonusModule):
    """What products and sums share: forwarding to children, merging losses and metrics, parts."""

    kind = "combined"

    def __init__(self, children: Sequence[BonusModule]):
        super().__init__()
        if not children:
            raise ConfigError("a combined bonus needs at least one child bonus")
        self.bonuses = nn.ModuleList(children)
        self.labels = _labels(children)
        self._parts: dict[str, Tensor] = {}
        self._last_bonus_mean = torch.zeros(())

    def reset(self, done: Tensor) -> None:
        for child in self.bonuses:
            child.reset(done)

    def warmup(self, *args, **kwargs) -> None:
        """Forward an observation-statistics warm-up to the children that have one (RND, NovelD)."""
        for child in self.bonuses:
            if hasattr(child, "warmup"):
                child.warmup(*args, **kwargs)

    def loss(self, minibatch: Batch) -> dict[str, Tensor]:
        """Sum of the children's "loss" entries; each child's entries also logged as "<child>/<entry>"."""
        out: dict[str, Tensor] = {}
        total: Tensor | None = None
        for label, child in zip(self.labels, self.bonuses, strict=True):
            for key, value in child.loss(minibatch).items():
                if key == "loss":
                    total = value if total is None else total + value
                    out[f"{label}/loss"] = value.detach()
                else:
                    out[f"{label}/{key}"] = value
        if total is not None:
            out["loss"] = total
        return out

    def parts(self) -> dict[str, float]:
        """Mean episodic and global parts of the last rollout's bonus (only the kinds present)."""
        return {k: float(v) for k, v in self._parts.items()}

    def metrics(self) -> dict[str, float]:
        out = {"intrinsic_reward_mean": float(self._last_bonus_mean)}
        out.update({f"bonus_{k}": v for k, v in self.parts().items()})
        for label, child in zip(self.labels, self.bonuses, strict=True):
            out.update({f"{label}/{k}": v for k, v in child.metrics().items()})
        return out


class ProductBonus(_Composite):
    """r = b_episodic * b_global (more generally the product of its factors), optionally normalized.

    `ProductBonus(episodic, global_)` is the study's form; any number of factors multiplies. The
    recorded parts are the mean of the product of the episodic factors and of the global factors.
    A std normalizer divides by the spread of the product: a product that is nearly constant at
    first (bounded counts while every state is new, e.g. `count_e1*count`) is scaled up a lot
    until its statistics fill in; such products may prefer `reward_norm="none"`.
    """

    def __init__(self, *factors: BonusModule, normalizer: RewardNormalizer | None = None):
        super().__init__(factors)
        self.name = "_x_".join(self.labels)
        self.normalizer = normalizer

    @torch.no_grad()
    def bonus(self, batch: Batch) -> Tensor:
        valid = batch["valid"]
        outputs = [child.bonus(batch) for child in self.bonuses]
        for kind in ("episodic", "global"):
            chosen = [b for b, c in zip(outputs, self.bonuses, strict=True) if bonus_kind(c) == kind]
            if chosen:
                self._parts[kind] = masked_mean(math.prod(chosen), valid)
        rewards = math.prod(outputs) * valid
        if self.normalizer is not None:
            rewards = self.normalizer(rewards, valid)
        self._last_bonus_mean = masked_mean(rewards, valid)
        return rewards

    def metrics(self) -> dict[str, float]:
        out = super().metrics()
        if self.normalizer is not None:
            out["reward_std"] = float(self.normalizer.std)
        return out


class SumBonus(_Composite):
    """r = sum_i c_i b_i with coefficients c_i >= 0; not normalized again (each term keeps its scale).

    The recorded parts are the coefficient-weighted means of the episodic terms and of the global
    terms; a combined term (a product) adds its own parts, weighted by its coefficient.
    """

    def __init__(self, terms: Sequence[tuple[float, BonusModule]]):
        coefficients = [float(c) for c, _ in terms]
        for c in coefficients:
            if not (c >= 0 and math.isfinite(c)):
                raise ConfigError(f"bonus coefficient {c!r} is invalid: coefficients must be finite and >= 0")
        super().__init__([m for _, m in terms])
        self.coefficients = coefficients
        self.name = "_plus_".join(self.labels)

    @torch.no_grad()
    def bonus(self, batch: Batch) -> Tensor:
        valid = batch["valid"]
        rewards = torch.zeros(valid.shape, device=valid.device)
        parts: dict[str, Tensor] = {}
        for c, child in zip(self.coefficients, self.bonuses, strict=True):
            b = child.bonus(batch)
            rewards = rewards + c * b
            kind = bonus_kind(child)
            child_parts = child._parts if isinstance(child, _Composite) else {kind: masked_mean(b, valid)}
            for k, v in child_parts.items():
                parts[k] = parts.get(k, 0.0) + c * v
        rewards = rewards * valid
        self._parts = parts
        self._last_bonus_mean = masked_mean(rewards, valid)
        return rewards


# --- context and registry ---------------------------------------------------------------------


@dataclass
class BonusContext:
    """What a bonus builder may need: the env's shapes, the device and the bonus hyperparameters."""

    num_envs: int
    observation_space: gym.Space | None = None
    action_space: gym.Space | None = None
    device: torch.device | str = "cpu"
    gamma_int: float = 0.99
    """discount of the intrinsic stream (RND's and the "return" normalization's)"""
    update_proportion: float = 0.25
    """fraction of each minibatch that trains an RND predictor"""
    state_key: str = "obs"
    """state key of the count bonuses (obs, xy, glyphs, message or a dict key)"""
    count_mode: Literal["sqrt", "first_visit"] = "sqrt"
    """what `count_e` rewards: 1/sqrt(N_e) or 1{N_e = 1} (`count_e1` is always first visit)"""
    noveld_alpha: float | None = None
    """NovelD's alpha; None: 0.5 alone, 0.1 as the global factor of a product with an episodic factor"""
    noveld_state_key: str | None = None
    """state key of NovelD's first-visit count (None: `state_key`)"""
    rnd_input: str = "obs"
    """what RND sees of a non-frame observation (a state-key spec); frame stacks use the newest frame"""
    e3b_lambda: float = 0.1
    """E3B's ridge: C_0 = lambda I"""
    e3b_dim: int = 128
    """E3B's feature size d (the reference uses 1024; C^-1 costs num_envs * d^2 floats)"""
    reward_norm: RewardNorm = "reward"
    """normalization of NovelD's and every product's reward: 'reward', 'return' or 'none'"""
    episodic_partner: bool = False
    """set by build_bonus for the non-episodic factors of a product that has an episodic factor"""

    def __post_init__(self) -> None:
        if self.num_envs < 1:
            raise ConfigError(f"num_envs {self.num_envs!r} is invalid: it must be >= 1")
        make_normalizer(self.reward_norm, 1, self.gamma_int)  # validates the mode


Builder = Callable[[BonusContext], BonusModule]


@dataclass(frozen=True)
class _Entry:
    builder: Builder
    kind: str
    self_normalized: bool = True  # False: alone, its raw scale is normalized like a product's


_REGISTRY: dict[str, _Entry] = {}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def register_bonus(
    name: str, builder: Builder, kind: Kind = "global", replace: bool = False, self_normalized: bool = True
) -> None:
    """Make `name` usable in bonus expressions; `builder(context)` constructs the module.

    `kind` ("episodic" or "global") tells products which factors are episodic before anything is
    built. Registering a taken name raises unless `replace`.
    """
    if not _NAME.match(name):
        raise ConfigError(
            f"bonus name {name!r} is invalid: use letters, digits and '_', not starting with a digit"
        )
    if kind not in ("episodic", "global", "combined"):
        raise ConfigError(f"bonus kind {kind!r} is invalid: use 'episodic', 'global' or 'combined'")
    if name in _REGISTRY and not replace:
        raise ConfigError(f"bonus {name!r} is already registered (pass replace=True to replace it)")
    _REGISTRY[name] = _Entry(builder, kind, self_normalized)


def unregister_bonus(name: str) -> None:
    """Remove a registered bonus (for tests and plugins that register temporary names)."""
    if name not in _REGISTRY:
        raise ConfigError(f"bonus {name!r} is not registered")
    del _REGISTRY[name]


def bonus_names() -> list[str]:
    """The registered bonus names, sorted."""
    return sorted(_REGISTRY)


# --- the expression grammar -------------------------------------------------------------------


@dataclass(frozen=True)
class Factor:
    name: str
    position: int


@dataclass(frozen=True)
class Term:
    coefficient: float
    factors: tuple[Factor, ...]

    def __str__(self) -> str:
        names = "*".join(f.name for f in self.factors)
        return names if self.coefficient == 1.0 else f"{self.coefficient:g}*{names}"


@dataclass(frozen=True)
class _Token:
    kind: str  # "number", "name", "op", "other", "end"
    text: str
    position: int

    def describe(self) -> str:
        if self.kind == "end":
            return "the end of the expression"
        if self.kind == "number":
            return f"the number {self.text}"
        if self.kind == "name":
            return f"the name {self.text!r}"
        return repr(self.text)


_TOKEN = re.compile(
    r"\s*(?:(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<op>[+*])|(?P<other>\S))"
)
_HINTS = {
    "-": "subtraction and negative coefficients are not supported; coefficients must be >= 0",
    "(": "parentheses are not supported",
    ")": "parentheses are not supported",
}


def _tokenize(expr: str) -> list[_Token]:
    """Every token with its position; never fails (unknown characters become "other" tokens)."""
    tokens = []
    for match in _TOKEN.finditer(expr):
        kind = match.lastgroup
        if kind is not None:  # a match of trailing whitespace only has no group
            tokens.append(_Token(kind, match.group(kind), match.start(kind)))
    tokens.append(_Token("end", "", len(expr)))
    return tokens


class _Parser:
    """Recursive descent over the token list; errors name the position and what was expected."""

    def __init__(self, expr: str, names: Sequence[str]):
        self.expr = expr
        self.names = list(names)
        self.tokens = _tokenize(expr)
        self.index = 0

    def peek(self) -> _Token:
        return self.tokens[self.index]

    def advance(self) -> _Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def fail(self, token: _Token, message: str) -> ConfigError:
        hint = _HINTS.get(token.text) if token.kind == "other" else None
        text = f"{message}, found {token.describe()}" + (f" ({hint})" if hint else "")
        return expression_error(self.expr, token.position, text)

    def parse(self) -> tuple[Term, ...]:
        if not self.expr.strip():
            raise ConfigError(
                f"empty bonus expression {self.expr!r}: expected a bonus name or an expression such as "
                f"'rnd', 'e3b*rnd' or 'count_e+0.5*rnd' (registered: {', '.join(sorted(self.names))})"
            )
        terms = [self.term()]
        while self.peek().text == "+" and self.peek().kind == "op":
            self.advance()
            terms.append(self.term())
        if self.peek().kind != "end":
            raise self.fail(self.peek(), "expected '+', '*' or the end of the expression")
        return tuple(terms)

    def term(self) -> Term:
        coefficient = 1.0
        token = self.peek()
        if token.kind == "number":
            self.advance()
            coefficient = float(token.text)
            if not math.isfinite(coefficient):
                raise expression_error(
                    self.expr, token.position, f"the coefficient {token.text} is not finite"
                )
            if not (self.peek().kind == "op" and self.peek().text == "*"):
                raise self.fail(self.peek(), f"expected '*' after the coefficient {token.text}")
            self.advance()
        elif token.kind != "name":
            raise self.fail(token, "expected a coefficient or a bonus name")
        factors = [self.factor()]
        while self.peek().kind == "op" and self.peek().text == "*":
            self.advance()
            factors.append(self.factor())
        return Term(coefficient, tuple(factors))

    def factor(self) -> Factor:
        token = self.peek()
        if token.kind == "number":
            raise self.fail(token, "expected a bonus name (a coefficient may only start a term)")
        if token.kind != "name":
            raise self.fail(token, "expected a bonus name")
        self.advance()
        if token.text not in self.names:
            suggestions = close_matches(token.text, self.names)
            hint = f"; did you mean: {', '.join(suggestions)}?" if suggestions else ""
            raise expression_error(
                self.expr,
                token.position,
                f"unknown bonus {token.text!r}{hint} (registered: {', '.join(sorted(self.names))})",
            )
        return Factor(token.text, token.position)


def expression_error(expr: str, position: int, message: str) -> ConfigError:
    """A ConfigError that shows the expression with a caret under `position`."""
    return ConfigError(
        f"bad bonus expression {expr!r} at position {position}: {message}\n  {expr}\n  {' ' * position}^"
    )


def parse_bonus(expr: str, names: Sequence[str] | None = None) -> tuple[Term, ...]:
    """Parse a bonus expression into its terms; ConfigError with the position on a bad one.

    `names` are the valid bonus names (default: the registered ones).
    """
    return _Parser(expr, bonus_names() if names is None else names).parse()


# --- building -----------------------------------------------------------------------------------


def _build_named(name: str, context: BonusContext) -> BonusModule:
    entry = _REGISTRY[name]
    module = entry.builder(context)
    if not isinstance(module, BonusModule):
        raise TypeError(f"the builder of bonus {name!r} returned {type(module).__name__}, not a BonusModule")
    module.name = name  # the registered name labels its losses and metrics (count_e1, not count_e)
    module.kind = entry.kind  # the registered kind planned the product; the module must agree (RND says none)
    return module


def _build_term(term: Term, context: BonusContext) -> BonusModule:
    names = [f.name for f in term.factors]
    if len(names) == 1:
        module = _build_named(names[0], context)
        normalizer = make_normalizer(context.reward_norm, context.num_envs, context.gamma_int)
        if _REGISTRY[names[0]].self_normalized or normalizer is None:
            return module
        # a raw-scale bonus alone (E3B: |phi|^2 / lambda) gets the study's running-std normalization
        return ProductBonus(module, normalizer=normalizer)
    kinds = [_REGISTRY[n].kind for n in names]
    has_episodic = "episodic" in kinds
    factors = [
        _build_named(n, dataclasses.replace(context, episodic_partner=has_episodic and k != "episodic"))
        for n, k in zip(names, kinds, strict=True)
    ]
    return ProductBonus(
        *factors, normalizer=make_normalizer(context.reward_norm, context.num_envs, context.gamma_int)
    )


def build_bonus(expr: str, context: BonusContext) -> BonusModule:
    """Parse `expr` and build its bonus on `context.device`.

    One name gives that module itself; a product term gives a ProductBonus; several terms, or a
    coefficient other than 1, give a SumBonus.
    """
    terms = parse_bonus(expr)
    modules = [_build_term(t, context) for t in terms]
    if len(terms) == 1 and terms[0].coefficient == 1.0:
        module = modules[0]
    else:
        module = SumBonus([(t.coefficient, m) for t, m in zip(terms, modules, strict=True)])
    return module.to(context.device)


# --- builders of the registered bonuses -----------------------------------------------------


def _require_space(context: BonusContext, name: str) -> gym.Space:
    if context.observation_space is None:
        raise ConfigError(f"bonus {name!r} needs BonusContext.observation_space (its networks depend on it)")
    return context.observation_space


def _build_rnd(context: BonusContext) -> BonusModule:
    space = _require_space(context, "rnd")
    return make_rnd(context.num_envs, space, context.rnd_input, context.gamma_int, context.update_proportion)


def _build_noveld(context: BonusContext) -> BonusModule:
    space = _require_space(context, "noveld")
    gated = not context.episodic_partner
    alpha = context.noveld_alpha if context.noveld_alpha is not None else (0.5 if gated else 0.1)
    rnd = make_rnd(context.num_envs, space, context.rnd_input, context.gamma_int, context.update_proportion)
    return NovelD(
        rnd,
        context.num_envs,
        alpha=alpha,
        state_key=context.noveld_state_key or context.state_key,
        episodic_gate=gated,
        reward_norm=context.reward_norm if gated else "none",
        gamma_int=context.gamma_int,
        observation_space=space if gated else None,
    )


def _build_count(context: BonusContext) -> BonusModule:
    return GlobalCount(context.state_key, context.observation_space)


def _build_count_e(context: BonusContext) -> BonusModule:
    return EpisodicCount(context.num_envs, context.state_key, context.count_mode, context.observation_space)


def _build_count_e1(context: BonusContext) -> BonusModule:
    return EpisodicCount(context.num_envs, context.state_key, "first_visit", context.observation_space)


def _build_e3b(context: BonusContext) -> BonusModule:
    try:
        from explore.e3b import E3B  # lazily: written alongside this module
    except ModuleNotFoundError as exc:
        if exc.name != "explore.e3b":
            raise
        raise ConfigError("bonus 'e3b' needs explore/e3b.py, which this installation lacks") from exc
    space = _require_space(context, "e3b")
    if not isinstance(context.action_space, gym.spaces.Discrete):
        raise ConfigError(
            f"bonus 'e3b' needs a discrete action space in BonusContext (its inverse dynamics classify "
            f"actions); got {context.action_space!r}"
        )
    from agents.grid_networks import make_encoder  # the policy's torso architecture, its own weights

    encoder = make_encoder(space, context.e3b_dim)
    return E3B(
        context.num_envs, encoder, context.e3b_dim, int(context.action_space.n), ridge=context.e3b_lambda
    )


register_bonus("rnd", _build_rnd, "global")
register_bonus("noveld", _build_noveld, "global")
register_bonus("count", _build_count, "global")
register_bonus("count_e", _build_count_e, "episodic")
register_bonus("count_e1", _build_count_e1, "episodic")
register_bonus("e3b", _build_e3b, "episodic", self_normalized=False)
register_bonus("archive", ArchiveBonus.from_context, "global")  # Go-Explore cells: 1 on a first visit
register_bonus("judge", build_judge_reward, "episodic")  # Motif / ELLM: explore/judge_reward.py
