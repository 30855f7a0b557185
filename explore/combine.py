"""Combinations of bonuses, the settings of every registered bonus, and a small expression grammar.

    build_bonus("e3b*noveld", BonusContext(num_envs=32, observation_space=..., action_space=...), settings)

Registering a bonus (see explore/bonus.py): its file holds the module, its networks, its config
dataclass and a builder decorated with `@register_bonus(name, ConfigClass, kind=...)`; the one line
here adds ConfigClass to the bases of `BonusSettings`, which imports (so registers) the bonus and
gives the trainer's Config its flags. That is 1 file plus 1 line; a bonus without hyperparameters
still takes its line (an import) so that it is registered. (Before this layout a bonus took 3 files
and 4 to 6 places: its module, a builder and a registration here, and each hyperparameter in
BonusContext, in the trainer's Config and in make_bonus.) `settings` is any object holding the
flags (the trainer's Config, a BonusSettings, or one bonus's config); missing fields take defaults.

Grammar (whitespace is ignored):

    sum    := term ('+' term)*
    term   := [number '*'] factor ('*' factor)*
    factor := name                     (a registered bonus: `bonus_names()`, e.g. rnd, count_e, e3b, archive)

so `count_e+0.5*rnd` is SumBonus([(1, count_e), (0.5, rnd)]) and `e3b*rnd` is
ProductBonus(e3b, rnd). No parentheses, no subtraction: coefficients are >= 0.

Combination rules, and why:
- A product r = prod_i b_i (Henaff et al. 2023: episodic x global) is divided by a running std
  (`reward_norm`, default "reward": the std of the product itself, as the study normalizes the
  intrinsic reward) since a product of differently scaled factors has no natural scale. Its
  factors are built as plain factors: inside a product with an episodic factor, `noveld` is the
  global novelty max(N(s') - alpha N(s), 0) without its own first-visit gate or normalization,
  with alpha 0.1 unless `noveld_alpha` says otherwise, so `e3b*noveld` is the study's
  E3B x NovelD and `e3b*rnd` its E3B x RND.
- A sum r = sum_i c_i b_i is not normalized again: each term keeps its own scale (counts in
  (0, 1], RND and NovelD normalized by their own statistics), which is what gives the
  coefficients a meaning.
- `rnd` and `noveld` take any observation: (C, 84, 84) frame stacks go to RND's CNNs, anything
  else to `explore.rnd.ObsRND` (the `rnd_input` part, flattened, with MLP networks). `e3b` gets a
  default encoder from `explore.networks.make_encoder` (Nature CNN for frames, an MLP otherwise).
- Composites forward `reset`, `warmup`, sum their children's "loss" entries and prefix every other
  loss or metric entry with the child's name; `parts()` gives the mean episodic and global parts
  of the last rollout for `charts/bonus_episodic` and `charts/bonus_global`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from explore.archive.bonus import ArchiveConfig
from explore.bonus import (  # noqa: F401 (the registry, re-exported from its home in explore.bonus)
    REGISTRY,
    Batch,
    BonusContext,
    BonusModule,
    bonus_names,
    build_named,
    config_from,
    masked_mean,
    register_bonus,
    unregister_bonus,
)
from explore.counts import CountConfig
from explore.e3b import E3BConfig
from explore.errors import ConfigError, close_matches
from explore.judge_reward import JudgeRewardConfig
from explore.normalize import RewardNormalizer, RewardNormConfig, make_normalizer
from explore.noveld import NovelDConfig
from explore.obs import OBSERVATION_KINDS


@dataclass
class BonusSettings(JudgeRewardConfig, ArchiveConfig, E3BConfig, NovelDConfig, CountConfig):
    """Every registered bonus's hyperparameters, flat (NovelDConfig holds RND's and reward_norm).

    One base per bonus file: listing a config here registers its bonus (by importing its file).
    """


@dataclass
class TextBonusSettings(JudgeRewardConfig, CountConfig):
    """The flags of the bonuses that read text observations (the text trainer's): the counts of the hashed
    observation strings (count, count_e, count_e1) and the judge. The others (rnd, noveld, e3b, archive)
    have networks or cells for tensors; `check_bonus_reads` refuses them for text games, naming them."""


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

    def warmup(self, *args: Any, **kwargs: Any) -> None:
        """Forward the random-agent warm-up to every child (those without statistics ignore it)."""
        for child in self.bonuses:
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

    def part_means(self) -> dict[str, Tensor]:
        """Mean episodic and global parts of the last rollout's bonus (only the kinds present)."""
        return dict(self._parts)

    def metrics(self) -> dict[str, float]:
        out = {**super().metrics(), "intrinsic_reward_mean": float(self._last_bonus_mean)}
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
            chosen = [b for b, c in zip(outputs, self.bonuses, strict=True) if c.kind == kind]
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
            child_parts = child.part_means() or {child.kind: masked_mean(b, valid)}
            for k, v in child_parts.items():
                parts[k] = parts.get(k, 0.0) + c * v
        rewards = rewards * valid
        self._parts = parts
        self._last_bonus_mean = masked_mean(rewards, valid)
        return rewards


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


# --- validation and building ---------------------------------------------------------------------


def check_bonus(expr: str, settings: Any = None) -> None:
    """ConfigError, before anything is built, for a bad bonus flag of `settings` or a bad expression."""
    config_from(BonusSettings, settings).validate_bonus_settings()
    if expr != "none":
        parse_bonus(expr)


def check_bonus_reads(expr: str, settings: Any, obs_kind: str | None, env_id: str = "this env") -> None:
    """ConfigError naming the bonus and `env_id` when a bonus of `expr` cannot read observations of
    kind `obs_kind` (the suite's, see `explore.obs.OBSERVATION_KINDS`; None: unknown, not checked)."""
    if expr == "none" or obs_kind is None:
        return
    kind = OBSERVATION_KINDS[obs_kind]
    for name in dict.fromkeys(f.name for term in parse_bonus(expr) for f in term.factors):
        config_class = REGISTRY[name].config
        problem = (
            None if config_class is None else config_from(config_class, settings).observation_problem(kind)
        )
        if problem:
            raise ConfigError(
                f"--bonus {expr!r}: bonus {name!r} cannot read the observations of {env_id} "
                f"({kind.description}): {problem}"
            )


def _normalizer(context: BonusContext, settings: Any) -> RewardNormalizer | None:
    return make_normalizer(
        config_from(RewardNormConfig, settings).reward_norm, context.num_envs, context.gamma_int
    )


def _build_term(term: Term, context: BonusContext, settings: Any) -> BonusModule:
    names = [f.name for f in term.factors]
    if len(names) == 1:
        module = build_named(names[0], context, settings)
        normalizer = _normalizer(context, settings)
        if REGISTRY[names[0]].self_normalized or normalizer is None:
            return module
        # a raw-scale bonus alone (E3B: |phi|^2 / lambda) gets the study's running-std normalization
        return ProductBonus(module, normalizer=normalizer)
    kinds = [REGISTRY[n].kind for n in names]
    has_episodic = "episodic" in kinds
    factors = [
        build_named(
            n, dataclasses.replace(context, episodic_partner=has_episodic and k != "episodic"), settings
        )
        for n, k in zip(names, kinds, strict=True)
    ]
    return ProductBonus(*factors, normalizer=_normalizer(context, settings))


def build_bonus(expr: str, context: BonusContext, settings: Any = None) -> BonusModule:
    """Parse `expr` and build its bonus on `context.device`, with hyperparameters from `settings`.

    `settings`: any object with the bonus flags as attributes (the trainer's Config, a
    BonusSettings, one bonus's config); missing ones take their defaults. One name gives that
    module itself; a product term gives a ProductBonus; several terms, or a coefficient other
    than 1, give a SumBonus.
    """
    check_bonus(expr, settings)
    terms = parse_bonus(expr)
    modules = [_build_term(t, context, settings) for t in terms]
    if len(terms) == 1 and terms[0].coefficient == 1.0:
        module = modules[0]
    else:
        module = SumBonus([(t.coefficient, m) for t, m in zip(terms, modules, strict=True)])
    return module.to(context.device)
