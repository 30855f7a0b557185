"""Exact tests of explore.combine: products, sums, the expression grammar, the registry and the builders."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.testing import assert_close

from explore.bonus import BonusModule
from explore.combine import (
    BonusContext,
    BonusSettings,
    Factor,
    ProductBonus,
    SumBonus,
    Term,
    bonus_names,
    build_bonus,
    parse_bonus,
    register_bonus,
    unregister_bonus,
)
from explore.counts import EpisodicCount, GlobalCount
from explore.errors import ConfigError
from explore.noveld import NovelD, ObsRND, RewardNormalizer
from explore.rnd import RND

VALID = torch.tensor([[True, True], [True, False], [True, True]])


class FixedBonus(BonusModule):
    """Test double: a bonus that returns given (T, N) values, a given loss, and records its resets."""

    def __init__(self, name: str, kind: str, values: list[list[float]], loss: float | None = None):
        super().__init__()
        self.name, self.kind = name, kind
        self.values = torch.tensor(values)
        self.loss_value = loss
        self.resets: list[torch.Tensor] = []

    def bonus(self, batch):
        return self.values * batch["valid"]

    def loss(self, minibatch):
        if self.loss_value is None:
            return {}
        return {"loss": torch.tensor(self.loss_value), "accuracy": torch.tensor(0.5)}

    def reset(self, done):
        self.resets.append(done.clone())

    def metrics(self):
        return {"mean": float(self.values.mean())}


def episodic(loss: float | None = None) -> FixedBonus:
    return FixedBonus("ep", "episodic", [[1.0, 0.5], [0.25, 9.0], [2.0, 1.0]], loss)


def global_(loss: float | None = None) -> FixedBonus:
    return FixedBonus("gl", "global", [[3.0, 2.0], [4.0, 9.0], [0.0, 1.0]], loss)


BATCH = {"valid": VALID}


def masked_mean(x: torch.Tensor) -> float:
    return float((x * VALID).sum() / VALID.sum())


# --- products and sums ------------------------------------------------------------------------


def test_product_is_exact_on_given_child_outputs():
    product = ProductBonus(episodic(), global_())
    expected = torch.tensor([[3.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    assert_close(product.bonus(BATCH), expected)
    assert product.kind == "combined" and product.name == "ep_x_gl"
    parts = product.parts()
    assert parts["episodic"] == pytest.approx(masked_mean(episodic().values))
    assert parts["global"] == pytest.approx(masked_mean(global_().values))
    metrics = product.metrics()
    assert metrics["bonus_episodic"] == parts["episodic"] and metrics["ep/mean"] == pytest.approx(13.75 / 6)
    assert metrics["intrinsic_reward_mean"] == pytest.approx(masked_mean(expected))


def test_product_normalized_by_the_running_std_of_the_product():
    product = ProductBonus(episodic(), global_(), normalizer=RewardNormalizer(2, "reward"))
    raw = np.array([3.0, 1.0, 1.0, 0.0, 1.0])  # the valid products
    total = raw.size + 1e-4
    mean = raw.sum() / total
    var = (1e-4 + 1e-4 * mean**2 + ((raw - mean) ** 2).sum()) / total
    expected = torch.tensor([[3.0, 1.0], [1.0, 0.0], [0.0, 1.0]]) / float(np.sqrt(var + 1e-8))
    assert_close(product.bonus(BATCH), expected)
    assert product.metrics()["reward_std"] == pytest.approx(np.sqrt(var + 1e-8))


def test_sum_is_exact_on_given_child_outputs():
    total = SumBonus([(1.0, episodic()), (0.5, global_())])
    expected = (episodic().values + 0.5 * global_().values) * VALID
    assert_close(total.bonus(BATCH), expected)
    assert total.name == "ep_plus_gl" and total.coefficients == [1.0, 0.5]
    parts = total.parts()
    assert parts["episodic"] == pytest.approx(masked_mean(episodic().values))
    assert parts["global"] == pytest.approx(0.5 * masked_mean(global_().values))


def test_a_sum_of_a_product_adds_the_products_parts():
    total = SumBonus([(2.0, ProductBonus(episodic(), global_())), (1.0, global_())])
    expected = (2.0 * episodic().values * global_().values + global_().values) * VALID
    assert_close(total.bonus(BATCH), expected)
    g = masked_mean(global_().values)
    assert total.parts() == pytest.approx(
        {"episodic": 2.0 * masked_mean(episodic().values), "global": 3.0 * g}
    )


def test_losses_merge_by_summing_and_prefixing():
    product = ProductBonus(episodic(loss=1.5), global_(loss=0.25))
    out = product.loss({})
    assert set(out) == {"loss", "ep/loss", "ep/accuracy", "gl/loss", "gl/accuracy"}
    assert out["loss"].item() == pytest.approx(1.75)
    assert out["ep/loss"].item() == 1.5 and out["gl/accuracy"].item() == 0.5
    assert SumBonus([(1.0, episodic()), (1.0, global_(loss=2.0))]).loss({})["loss"].item() == 2.0
    assert ProductBonus(episodic(), global_()).loss({}) == {}  # nothing to learn: the trainer adds nothing


def test_reset_is_forwarded_to_every_child():
    ep, gl = episodic(), global_()
    combined = SumBonus([(1.0, ProductBonus(ep, gl)), (1.0, episodic())])
    done = torch.tensor([True, False])
    combined.reset(done)
    assert [d.tolist() for d in ep.resets] == [[True, False]] == [d.tolist() for d in gl.resets]


def test_repeated_names_get_distinct_labels():
    total = SumBonus([(1.0, global_()), (2.0, global_())])
    assert total.labels == ["gl_0", "gl_1"]
    assert {"gl_0/mean", "gl_1/mean"} <= set(total.metrics())


def test_negative_coefficient_is_a_config_error():
    with pytest.raises(ConfigError, match="must be finite and >= 0"):
        SumBonus([(-0.5, global_())])


# --- the grammar ------------------------------------------------------------------------------


def names(terms: tuple[Term, ...]) -> list[tuple[float, list[str]]]:
    return [(t.coefficient, [f.name for f in t.factors]) for t in terms]


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("rnd", [(1.0, ["rnd"])]),
        ("e3b*rnd", [(1.0, ["e3b", "rnd"])]),
        ("e3b*noveld", [(1.0, ["e3b", "noveld"])]),
        ("count_e+0.5*rnd", [(1.0, ["count_e"]), (0.5, ["rnd"])]),
        ("0.5*count_e + rnd", [(0.5, ["count_e"]), (1.0, ["rnd"])]),
        ("count_e1*count", [(1.0, ["count_e1", "count"])]),
        (" 2 * e3b * rnd + .5*count ", [(2.0, ["e3b", "rnd"]), (0.5, ["count"])]),
        ("1e-1*rnd+0*count", [(0.1, ["rnd"]), (0.0, ["count"])]),
    ],
)
def test_valid_expressions_parse_into_terms(expr: str, expected):
    assert names(parse_bonus(expr)) == expected


def test_terms_remember_positions_and_print_back():
    terms = parse_bonus("count_e + 0.5*e3b*rnd")
    assert terms[1].factors == (Factor("e3b", 14), Factor("rnd", 18))
    assert [str(t) for t in terms] == ["count_e", "0.5*e3b*rnd"]


@pytest.mark.parametrize(
    ("expr", "fragments"),
    [
        ("e3b**rnd", ["position 4", "expected a bonus name", "found '*'"]),
        ("+rnd", ["position 0", "expected a coefficient or a bonus name", "found '+'"]),
        ("rnd+", ["position 4", "found the end of the expression"]),
        ("-0.5*rnd", ["position 0", "negative coefficients are not supported", "must be >= 0"]),
        ("rdn", ["unknown bonus 'rdn'", "did you mean: rnd", "registered: archive, count, count_e"]),
        ("e3b*(rnd)", ["position 4", "found '('", "parentheses are not supported"]),
        ("", ["empty bonus expression", "'rnd', 'e3b*rnd'"]),
        ("   ", ["empty bonus expression"]),
        ("0.5", ["expected '*' after the coefficient 0.5"]),
        ("2*3*rnd", ["position 2", "a coefficient may only start a term", "found the number 3"]),
        ("rnd count", ["position 4", "expected '+', '*' or the end", "found the name 'count'"]),
        ("rnd-count", ["position 3", "found '-'"]),
        ("1e999*rnd", ["not finite"]),
    ],
)
def test_bad_expressions_are_config_errors_that_say_where_and_what(expr: str, fragments: list[str]):
    with pytest.raises(ConfigError) as info:
        parse_bonus(expr)
    message = str(info.value)
    assert repr(expr) in message
    for fragment in fragments:
        assert fragment in message


def test_error_message_points_at_the_position():
    with pytest.raises(ConfigError) as info:
        parse_bonus("count_e + 0.5*rdn")
    lines = str(info.value).splitlines()
    assert lines[-2].strip() == "count_e + 0.5*rdn"
    assert lines[-1].index("^") - lines[-2].index("c") == 14


# --- the registry and building ------------------------------------------------------------------

FRAMES = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
MINIHACK = gym.spaces.Dict(
    {
        "glyphs": gym.spaces.Box(0, 5976, (21, 79), np.int16),
        "blstats": gym.spaces.Box(-(2**31), 2**31 - 1, (27,), np.int64),
        "message": gym.spaces.Box(0, 255, (256,), np.uint8),
    }
)
ACTIONS = gym.spaces.Discrete(5)


def context(space: gym.Space = FRAMES, **settings) -> tuple[BonusContext, BonusSettings]:
    """The (context, settings) pair of build_bonus: two envs of `space`, bonus flags from `settings`."""
    return BonusContext(num_envs=2, observation_space=space, action_space=ACTIONS), BonusSettings(**settings)


def test_registered_names():
    assert {"rnd", "count", "count_e", "count_e1", "noveld", "e3b"} <= set(bonus_names())


def test_a_single_name_builds_that_module():
    rnd = build_bonus("rnd", *context())
    assert type(rnd) is RND and rnd.name == "rnd"
    count = build_bonus("count", *context(MINIHACK, state_key="xy"))
    assert isinstance(count, GlobalCount) and count.state_key.spec == "xy"
    count_e = build_bonus("count_e", *context(MINIHACK, count_mode="first_visit"))
    assert isinstance(count_e, EpisodicCount) and count_e.mode == "first_visit"


def test_noveld_alone_has_its_gate_alpha_and_normalization():
    noveld = build_bonus("noveld", *context())
    assert isinstance(noveld, NovelD) and noveld.alpha == 0.5
    assert noveld.episodic is not None and noveld.episodic.mode == "first_visit"
    assert isinstance(noveld.normalizer, RewardNormalizer) and noveld.normalizer.mode == "reward"


def test_e3b_times_noveld_is_the_studys_product():
    product = build_bonus("e3b*noveld", *context())
    assert isinstance(product, ProductBonus) and product.name == "e3b_x_noveld"
    e3b, noveld = product.bonuses
    assert type(e3b).__name__ == "E3B" and e3b.kind == "episodic"
    assert isinstance(noveld, NovelD) and noveld.alpha == 0.1
    assert noveld.episodic is None and noveld.normalizer is None  # the product gates and normalizes
    assert isinstance(product.normalizer, RewardNormalizer)
    assert build_bonus("e3b*noveld", *context(noveld_alpha=0.3)).bonuses[1].alpha == 0.3


def test_e3b_times_rnd_and_counts():
    product = build_bonus("e3b*rnd", *context())
    assert [type(b).__name__ for b in product.bonuses] == ["E3B", "RND"]
    counts = build_bonus("count_e1*count", *context(MINIHACK))
    assert isinstance(counts, ProductBonus)
    first, glob = counts.bonuses
    assert isinstance(first, EpisodicCount) and first.mode == "first_visit" and first.name == "count_e1"
    assert isinstance(glob, GlobalCount) and counts.labels == ["count_e1", "count"]


def test_sums_build_with_their_coefficients():
    total = build_bonus("count_e+0.5*rnd", *context())
    assert isinstance(total, SumBonus) and total.coefficients == [1.0, 0.5]
    assert isinstance(total.bonuses[0], EpisodicCount) and total.bonuses[0].mode == "sqrt"
    assert type(total.bonuses[1]) is RND
    other = build_bonus("0.5*count_e + count", *context())
    assert other.coefficients == [0.5, 1.0] and isinstance(other.bonuses[1], GlobalCount)


def test_a_lone_coefficient_builds_a_one_term_sum():
    total = build_bonus("0.5*count", *context(MINIHACK))
    assert isinstance(total, SumBonus) and total.coefficients == [0.5]


def test_rnd_on_a_dict_observation_is_obs_rnd():
    rnd = build_bonus("rnd", *context(MINIHACK, rnd_input="glyphs"))
    assert isinstance(rnd, ObsRND) and rnd.input_features == 21 * 79


def test_building_errors_are_config_errors():
    with pytest.raises(ConfigError, match="discrete action space"):
        build_bonus("e3b", BonusContext(num_envs=2, observation_space=FRAMES))
    with pytest.raises(ConfigError, match="needs BonusContext.observation_space"):
        build_bonus("rnd", BonusContext(num_envs=2))
    with pytest.raises(ConfigError, match="unknown state key 'glyps'"):
        build_bonus("count", *context(MINIHACK, state_key="glyps"))
    with pytest.raises(ConfigError, match="num_envs"):
        BonusContext(num_envs=0)
    with pytest.raises(ConfigError, match="--reward-norm 'std' is invalid"):
        build_bonus("noveld", *context(reward_norm="std"))


@pytest.fixture
def custom_bonus():
    register_bonus("fixed_g")(lambda ctx, config: global_())
    register_bonus("fixed_e", kind="episodic")(lambda ctx, config: episodic())
    yield
    unregister_bonus("fixed_g")
    unregister_bonus("fixed_e")


def test_registered_builders_are_used_by_expressions(custom_bonus):
    product = build_bonus("fixed_e*fixed_g", *context(reward_norm="none"))
    assert product.labels == ["fixed_e", "fixed_g"] and product.normalizer is None
    assert_close(product.bonus(BATCH), episodic().values * global_().values * VALID)
    total = build_bonus("fixed_g + 2*fixed_e*fixed_g", *context(reward_norm="none"))
    expected = (global_().values + 2 * episodic().values * global_().values) * VALID
    assert_close(total.bonus(BATCH), expected)


def test_registering_checks_the_name(custom_bonus):
    with pytest.raises(ConfigError, match="already registered"):
        register_bonus("fixed_g")
    with pytest.raises(ConfigError, match="bonus name '2x' is invalid"):
        register_bonus("2x")
    register_bonus("fixed_g", kind="episodic", replace=True)(lambda ctx, config: episodic())
    assert build_bonus("fixed_g", *context()).kind == "episodic"


def test_the_registry_checks_the_kind_instead_of_overwriting_it(custom_bonus):
    register_bonus("fixed_g", kind="episodic", replace=True)(lambda ctx, config: global_())
    with pytest.raises(TypeError, match="registered as 'episodic' but its module FixedBonus says 'global'"):
        build_bonus("fixed_g", *context())


def test_e3b_times_noveld_end_to_end_on_minihack():
    torch.manual_seed(0)
    bonus = build_bonus("e3b*noveld", *context(MINIHACK, e3b_dim=8, noveld_state_key="xy"))
    g = torch.Generator().manual_seed(0)
    obs = {
        "glyphs": torch.randint(0, 5976, (5, 2, 21, 79), generator=g, dtype=torch.int16),
        "blstats": torch.randint(0, 80, (5, 2, 27), generator=g, dtype=torch.int64),
        "message": torch.randint(0, 256, (5, 2, 256), generator=g, dtype=torch.uint8),
    }
    batch = {
        "obs": {k: v[:-1] for k, v in obs.items()},
        "next_obs": {k: v[1:] for k, v in obs.items()},
        "actions": torch.randint(0, 5, (4, 2), generator=g),
        "valid": torch.tensor([[1, 1], [1, 0], [1, 1], [1, 1]], dtype=torch.bool),
        "dones": torch.tensor([[0, 1], [0, 0], [0, 0], [0, 0]], dtype=torch.bool),
    }
    rewards = bonus.bonus(batch)
    assert rewards.shape == (4, 2) and rewards[1, 1] == 0 and (rewards >= 0).all()
    assert set(bonus.parts()) == {"episodic", "global"}
    flat = {
        k: ({kk: vv.flatten(0, 1) for kk, vv in v.items()} if isinstance(v, dict) else v.flatten())
        for k, v in batch.items()
    }
    losses = bonus.loss(flat)
    assert {"loss", "e3b/loss", "noveld/loss"} <= set(losses)
    assert_close(losses["loss"], losses["e3b/loss"] + losses["noveld/loss"])
    losses["loss"].backward()


def test_a_combined_bonus_saves_and_restores_its_global_table():
    space = gym.spaces.Dict({"cell": gym.spaces.Box(0, 9, (1,), np.int32)})
    bonus = build_bonus("count_e1*count", *context(space, reward_norm="none"))
    cells = torch.tensor([[1, 2], [1, 1], [3, 2]], dtype=torch.int32).unsqueeze(-1)
    batch = {"next_obs": {"cell": cells}, "valid": VALID, "dones": torch.zeros(3, 2, dtype=torch.bool)}
    bonus.bonus(batch)
    restored = build_bonus("count_e1*count", *context(space, reward_norm="none"))
    restored.load_state_dict(bonus.state_dict())
    assert torch.equal(restored.bonuses[1].table_counts, bonus.bonuses[1].table_counts)
    # episodes restart on resume: the first-visit memory is not restored, the global counts are
    # global counts continue from {1: 2, 2: 2, 3: 1}; first visits: steps 0 and 2 of env 0, step 0 of env 1
    expected = torch.tensor([[1 / 3**0.5, 1 / 3**0.5], [0.0, 0.0], [1 / 2**0.5, 0.0]])
    assert_close(restored.bonus(batch), expected)
