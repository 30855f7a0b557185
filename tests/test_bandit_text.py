"""Bandit framings as text: what each prompt mode shows, and reading an arm back from a reply."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from envs.bandit_text import (
    FRAMINGS,
    ArmStats,
    completion_for,
    get_framing,
    parse_arm,
    render_prompt,
)
from explore.errors import ConfigError

# arm 0 twice (reward 1 then 0), arm 2 once (reward 1), arm 3 once (reward 0); K = 5, so arms 1 and 4 unpulled
HISTORY = [(0, 1.0), (2, 1.0), (0, 0.0), (3, 0.0)]
LABELS = {
    "video": ["video A", "video B", "video C", "video D", "video E"],
    "clothes": ["jacket", "dress", "jeans", "scarf", "sneakers"],
    "buttons": ["blue button", "green button", "red button", "yellow button", "orange button"],
    "ads": ["ad A", "ad B", "ad C", "ad D", "ad E"],
}
WORDS = {  # (pulled, success count word, rate name, success, failure)
    "video": ("recommended", "watched", "watch rate", "watched", "not watched"),
    "clothes": ("suggested", "bought", "purchase rate", "bought", "not bought"),
    "buttons": ("pressed", "paid out", "mean reward", "reward 1", "reward 0"),
    "ads": ("shown", "clicked", "click rate", "clicked", "not clicked"),
}


def lines_of(prompt: str) -> list[str]:
    return prompt.splitlines()


@pytest.mark.parametrize("framing", list(FRAMINGS))
@pytest.mark.parametrize("mode", ["raw", "summary", "ucb"])
def test_every_prompt_names_the_arms_and_ends_with_the_instruction(framing, mode):
    prompt = render_prompt(framing, 5, HISTORY, mode, horizon=100)
    names = get_framing(framing).arm_names(5)
    assert prompt.endswith("Answer:")
    instruction = lines_of(prompt)[-2]
    assert "Answer with the name of one" in instruction
    assert instruction.endswith(f"({', '.join(names[:-1])} or {names[-1]}).")
    assert "over 100" in prompt  # the horizon is stated
    assert ", ".join(names[:-1]) in lines_of(prompt)[0]  # the scenario lists every arm


@pytest.mark.parametrize("framing", list(FRAMINGS))
def test_raw_mode_shows_every_round_in_order(framing):
    prompt = render_prompt(framing, 5, HISTORY, "raw")
    _, _, _, success, failure = WORDS[framing]
    labels = LABELS[framing]
    step = get_framing(framing).round_word.capitalize()  # Visit, Customer, Round, Page view
    expected = [
        f"{step} 1: {labels[0]}, {success}",
        f"{step} 2: {labels[2]}, {success}",
        f"{step} 3: {labels[0]}, {failure}",
        f"{step} 4: {labels[3]}, {failure}",
    ]
    lines = lines_of(prompt)
    start = lines.index(expected[0])
    assert lines[start : start + 4] == expected
    assert "so far, oldest first:" in lines[start - 1]
    assert "times" not in prompt  # no per-arm statistics


@pytest.mark.parametrize("framing", list(FRAMINGS))
def test_summary_mode_shows_pulls_and_means_per_arm(framing):
    prompt = render_prompt(framing, 5, HISTORY, "summary")
    pulled, wins, rate, _, _ = WORDS[framing]
    labels = LABELS[framing]
    lines = lines_of(prompt)
    assert f"{labels[0]}: {pulled} 2 times, {wins} 1 time ({rate} 0.50)" in lines
    assert f"{labels[1]}: {pulled} 0 times" in lines
    assert f"{labels[2]}: {pulled} 1 time, {wins} 1 time ({rate} 1.00)" in lines
    assert f"{labels[3]}: {pulled} 1 time, {wins} 0 times ({rate} 0.00)" in lines
    assert f"{labels[4]}: {pulled} 0 times" in lines
    assert "Visit 1" not in prompt and "Round 1" not in prompt  # no raw history


@pytest.mark.parametrize("framing", list(FRAMINGS))
def test_ucb_mode_shows_exploitation_value_and_exploration_bonus(framing):
    prompt = render_prompt(framing, 5, HISTORY, "ucb")
    pulled = WORDS[framing][0]
    labels = LABELS[framing]
    bonus2 = math.sqrt(0.5 * math.log(4) / 2)  # arm 0: N = 4 rounds, n = 2 pulls, alpha 0.5
    bonus1 = math.sqrt(0.5 * math.log(4) / 1)
    lines = lines_of(prompt)
    assert "sqrt(0.5 * ln(4) / times" in prompt
    assert (
        f"{labels[0]}: {pulled} 2 times, exploitation value 0.50, exploration bonus {bonus2:.2f}, "
        f"sum {0.5 + bonus2:.2f}"
    ) in lines
    assert (
        f"{labels[2]}: {pulled} 1 time, exploitation value 1.00, exploration bonus {bonus1:.2f}, "
        f"sum {1 + bonus1:.2f}"
    ) in lines
    assert any(line.startswith(f"{labels[1]}: {pulled} 0 times") and "infinite" in line for line in lines)


def test_arm_stats_and_ucb_bonus():
    stats = ArmStats.from_history(HISTORY, 5)
    assert stats.counts == (2, 0, 1, 1, 0) and stats.total == 4
    assert stats.means() == [0.5, None, 1.0, 0.0, None]
    bonus = stats.ucb_bonus(0.5)
    assert bonus[0] == pytest.approx(math.sqrt(0.5 * math.log(4) / 2)) and bonus[1] == math.inf


def test_real_valued_rewards_are_shown_as_numbers():
    history = [(0, 1.234), (1, -0.5), (0, 2.0)]
    raw = render_prompt("buttons", 3, history, "raw")
    assert "Round 1: blue button, reward 1.23" in raw and "Round 2: green button, reward -0.50" in raw
    summary = render_prompt("video", 3, history, "summary")
    assert "video A: recommended 2 times, average engagement score 1.62" in summary
    assert "as high a total engagement score as possible" in summary
    # binary rewards can be forced either way
    assert "watched" in render_prompt("video", 2, [(0, 1.0)], "raw", binary=True)
    assert "engagement score 1.00" in render_prompt("video", 2, [(0, 1.0)], "raw", binary=False)


def test_a_spec_object_supplies_arms_horizon_and_reward_family():
    @dataclass(frozen=True)
    class Spec:
        num_arms: int = 3
        horizon: int = 300
        family: str = "gaussian"

    prompt = render_prompt("ads", Spec(), [(1, 1.0)], "raw")
    assert "3 ads, named A, B and C" in prompt and "over 300 page views" in prompt
    assert "Page view 1: ad B, revenue 1.00" in prompt  # gaussian: a number, even for 1.0


def test_empty_history_and_max_rows():
    assert "There have been no visits yet." in render_prompt("video", 5, [], "raw")
    prompt = render_prompt("video", 2, [(0, 1.0)] * 10, "raw", max_rows=3)
    assert "(the first 7 omitted)" in prompt and "Visit 8: video A" in prompt and "Visit 7:" not in prompt


def test_bad_arguments_name_what_is_valid():
    with pytest.raises(ConfigError, match="unknown bandit framing 'vidoe'.*Did you mean: video"):
        render_prompt("vidoe", 5, [], "raw")
    with pytest.raises(ConfigError, match="unknown prompt mode"):
        render_prompt("video", 5, [], "fancy")
    with pytest.raises(ConfigError, match="at most 30 arms"):
        render_prompt("clothes", 31, [], "raw")
    with pytest.raises(ConfigError, match="outside 0..4"):
        render_prompt("video", 5, [(7, 1.0)], "summary")
    assert get_framing("button_pushing").key == "buttons" and get_framing("Online-Ads").key == "ads"


def test_letter_names_continue_past_z():
    names = get_framing("video").arm_names(30)
    assert names[:3] == ["A", "B", "C"] and names[25:] == ["Z", "AA", "AB", "AC", "AD"]
    assert parse_arm("AB", "video", 30) == 27 and parse_arm("A", "video", 30) == 0


# --- parsing -----------------------------------------------------------------------------------


@pytest.mark.parametrize("framing", list(FRAMINGS))
def test_every_name_and_completion_parses_back(framing):
    for k in (5, 20):
        for arm, name in enumerate(get_framing(framing).arm_names(k)):
            assert parse_arm(name, framing, k) == arm
            assert parse_arm(completion_for(framing, k, arm), framing, k) == arm


@pytest.mark.parametrize(
    ("framing", "reply", "arm"),
    [
        ("video", "c", 2),  # a lone lowercase letter is an answer (the whole reply is the name)
        ("video", "I choose b", 1),
        ("video", "  **Video C**.  ", 2),
        ("video", "Answer: c", 2),
        ("video", "I would recommend video D to this user.", 3),
        ("video", "I think C", 2),  # "I" is the pronoun, not video I
        ("video", "A good choice is E.", 4),  # "A" is the article
        ("video", "A is the best so far", 0),
        ("video", "`B`", 1),
        ("ads", "Show ad B!", 1),
        ("ads", "AD b", 1),
        ("buttons", "Red", 2),
        ("buttons", "I'll press the YELLOW button.", 3),
        ("buttons", '"green"', 1),
        ("clothes", "Jeans.", 2),
        ("clothes", "I suggest the scarf; it sold well.", 3),
        ("video", "Video C\nVisit 5: video A, watched", 2),  # the noun-tied name wins over later text
    ],
)
def test_valid_and_padded_replies(framing, reply, arm):
    assert parse_arm(reply, framing, 5) == arm


@pytest.mark.parametrize(
    ("framing", "reply"),
    [
        ("video", ""),
        ("video", "   "),
        ("video", None),
        ("video", "I am not sure."),
        ("video", "maybe e is good"),  # lowercase letters inside prose are not arms
        ("video", "F"),  # not among the 5 videos
        ("video", "video 3"),
        ("buttons", "purple"),  # the 6th color, K = 5
        ("buttons", "press a button"),
        ("clothes", "item 2"),
        ("ads", "\x00\x01 ~~"),
    ],
)
def test_malformed_replies_give_none(framing, reply):
    assert parse_arm(reply, framing, 5) is None


@pytest.mark.parametrize(
    ("framing", "reply"),
    [
        ("video", "video A or video B"),
        ("video", "A and C"),
        ("video", "Either B or D"),
        ("ads", "ad A, then ad C"),
        ("buttons", "blue or red"),
        ("buttons", "the blue button, no, the red button"),
        ("clothes", "jeans and a scarf"),
    ],
)
def test_ambiguous_replies_give_none(framing, reply):
    assert parse_arm(reply, framing, 5) is None


def test_repeating_the_same_arm_is_not_ambiguous():
    assert parse_arm("C. Video C is my pick: C", "video", 5) == 2
    assert parse_arm("blue, blue, blue", "buttons", 5) == 0
