"""The language-model text agent (agents/llm): tries, constrained and batched generation, recomputation,
malformed actions, behaviour cloning and LoRA, on a tiny randomly initialized GPT-2-style model."""

from __future__ import annotations

import warnings

import pytest
import torch

pytest.importorskip("transformers")

from agents.llm.policy import PromptRenderer, TextPolicy, apply_lora, clean_action, left_pad, load_policy  # noqa: E402
from agents.llm.trie import BatchedTrie, TokenTrie, command_token_ids, mask_logits  # noqa: E402
from explore.errors import ConfigError  # noqa: E402

CORPUS = [
    "You are in the kitchen. In one part of the room you see a stove. To the East you see the pantry.\n"
    "Valid: inventory | look around | move east\n> move east\n",
    "You are in the pantry. You see a coin. To the West you see the kitchen.\n"
    "Valid: inventory | look around | move west | take coin\n> take coin\n",
    "You are in the corridor. To the North you see a closed door.\n"
    "Valid: open door to north | move south | look around\n> open door to north\n",
] * 8


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    load_policy(None, build_dir=path, corpus=CORPUS, tiny={"vocab_size": 320, "n_embd": 32, "n_head": 2})
    return path


def make_policy(tiny_dir, seed=0, **kwargs) -> TextPolicy:
    torch.manual_seed(seed)
    policy = load_policy(str(tiny_dir), **kwargs)
    with torch.no_grad():  # a non-trivial value head, so value checks mean something
        policy.value_head.weight.normal_()
        policy.value_head.bias.fill_(0.1)
    return policy


def test_trie_masks_to_command_prefixes():
    trie = TokenTrie([[5, 6], [5, 7, 8], [9]], terminator=0)
    assert trie.allowed([]) == [5, 9]
    assert trie.allowed([5]) == [6, 7]
    assert trie.allowed([5, 7]) == [8]
    assert trie.allowed([5, 7, 8]) == [0]
    assert trie.allowed([4]) == []
    batched = BatchedTrie.build([trie, TokenTrie([[3]], terminator=0)], "cpu")
    node = batched.root()
    assert batched.allowed(node)[1].tolist()[:1] == [3]
    node = batched.advance(node, torch.tensor([5, 3]))
    node = batched.advance(node, torch.tensor([7, 0]))
    assert sorted(x for x in batched.allowed(node)[0].tolist() if x >= 0) == [8]
    logits = torch.zeros(2, 12)
    masked = mask_logits(logits, torch.tensor([[1, 4, -1], [-1, -1, -1]]))
    assert torch.isfinite(masked[0]).tolist() == [i in (1, 4) for i in range(12)]
    assert torch.isfinite(masked[1]).all()  # nothing allowed: left unmasked, never NaN


def test_constrained_decoding_only_yields_admissible_commands(tiny_dir):
    policy = make_policy(tiny_dir)
    commands = [
        ["move east", "inventory", "look around"],
        ["take coin", "move west", "open door to north", "take coins from the table"],
        ["open door to north"],
        ["look around", "look"],
    ]
    prompts = [policy.renderer.ids(f"room {i}", cmds, []) for i, cmds in enumerate(commands)]
    seen = set()
    for _ in range(40):
        gen = policy.generate(prompts * 4, max_new_tokens=10, temperature=2.0, commands=commands * 4)
        for text, cmds in zip(gen.texts, commands * 4, strict=True):
            assert text in cmds
            seen.add(text)
        assert not any(gen.malformed)
    # sampling explores every command that fits in max_new_tokens - 1 tokens (+ the terminator)
    fits = {c for cmds in commands for c in cmds if len(command_token_ids(policy.tokenizer, [c], 9)) == 1}
    assert len(fits) >= 7 and seen == fits


def test_batched_generation_matches_single_prompts(tiny_dir):
    policy = make_policy(tiny_dir, seed=1)
    r = policy.renderer
    prompts = [
        r.ids("You are in the kitchen. To the East you see the pantry.", ["move east"], []),
        r.ids("You see a coin.", ["take coin", "move west"], [("You are in the kitchen.", "move east")]),
        r.ids("x", None, []),
    ]
    assert len({len(p) for p in prompts}) == 3  # really different lengths: left padding matters
    for commands in (None, [["move east", "inventory"], ["take coin", "move west"], ["look around"]]):
        batch = policy.generate(prompts, max_new_tokens=6, temperature=0.0, commands=commands)
        for i, p in enumerate(prompts):
            alone = policy.generate(
                [p], max_new_tokens=6, temperature=0.0, commands=None if commands is None else [commands[i]]
            )
            n = int(alone.mask[0].sum())
            assert torch.equal(batch.mask[i], alone.mask[0])
            assert torch.equal(batch.ids[i, :n], alone.ids[0, :n])
            torch.testing.assert_close(batch.logprobs[i, :n], alone.logprobs[0, :n], atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(batch.values[i, :n], alone.values[0, :n], atol=1e-4, rtol=1e-4)
            assert batch.texts[i] == alone.texts[0]


@pytest.mark.parametrize("constrained", [False, True])
def test_generation_values_and_logprobs_match_training_forward(tiny_dir, constrained):
    policy = make_policy(tiny_dir, seed=2)
    commands = [["move east", "inventory"], ["take coin", "move west", "look around"], ["open door to north"]]
    prompts = [
        policy.renderer.ids(f"observation number {i} " * (i + 1), c, []) for i, c in enumerate(commands)
    ]
    torch.manual_seed(3)
    gen = policy.generate(
        prompts, max_new_tokens=8, temperature=0.7, commands=commands if constrained else None
    )
    ids, mask = left_pad(
        prompts, policy.pad_id, max(map(len, prompts)) + 9
    )  # wider, as in the rollout buffer
    logp, ent, values = policy.evaluate_actions(
        ids, mask, gen.ids, gen.mask, allowed=gen.allowed, temperature=0.7
    )
    m = gen.mask
    torch.testing.assert_close(logp[m], gen.logprobs[m], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ent[m], gen.entropies[m], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(values[m], gen.values[m], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(policy.prompt_values(prompts), gen.values[:, 0], atol=1e-4, rtol=1e-4)


def test_generation_uses_the_current_cache_api_without_a_deprecation_warning(tiny_dir):
    policy = make_policy(tiny_dir, seed=4)
    prompts = [
        policy.renderer.ids("You are in the kitchen.", ["move east"], []),
        policy.renderer.ids("x", None, []),
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gen = policy.generate(prompts, max_new_tokens=6, temperature=0.0, stop_check_every=0)
    assert gen.ids.shape == (2, 6)
    deprecations = [
        str(w.message) for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))
    ]
    assert not [m for m in deprecations if "past_key_values" in m or "cache" in m], deprecations


def test_malformed_and_empty_actions_are_handled_and_counted(tiny_dir):
    policy = make_policy(tiny_dir, fallback_action="look around")
    prompt = policy.renderer.ids("You are in the kitchen.", ["move east"], [])
    # force the first token to be the terminator: an empty action
    with torch.no_grad():
        policy.model.lm_head.weight.zero_() if hasattr(policy.model, "lm_head") else None
        bias = torch.full((policy.model.config.vocab_size,), -50.0)
        bias[policy.eos_id] = 50.0
        policy.model.lm_head.register_forward_hook(lambda m, i, o: o + bias)
    gen = policy.generate([prompt, prompt], max_new_tokens=4, temperature=1.0)
    assert gen.raw_texts == ["", ""]
    assert gen.texts == ["look around", "look around"]
    assert gen.malformed == [True, True]
    assert gen.mask.sum(-1).tolist() == [1, 1]  # the terminator is the action's one token
    assert clean_action(" take\ufffd coin \nmore") == "take coin"
    assert clean_action("\n") == ""


def test_unterminated_action_is_malformed(tiny_dir):
    policy = make_policy(tiny_dir)
    with torch.no_grad():
        bias = torch.full((policy.model.config.vocab_size,), 0.0)
        bias[policy.stop_tokens.cpu()] = -1e4  # never stop
        policy.model.lm_head.register_forward_hook(lambda m, i, o: o + bias)
    gen = policy.generate([policy.renderer.ids("x", None, [])], max_new_tokens=3, temperature=1.0)
    assert gen.malformed == [True]
    assert int(gen.mask.sum()) == 3


def test_prompt_renderer_truncates_history_first(tiny_dir):
    policy = make_policy(tiny_dir)
    renderer = PromptRenderer(policy.tokenizer, max_tokens=60, history_turns=3)
    history = [(f"old room {i} " * 5, "move east") for i in range(3)]
    ids = renderer.ids("You are in the pantry.", ["take coin"], history)
    assert len(ids) <= 60
    text = policy.tokenizer.decode(ids)
    assert text.endswith("Valid: take coin\n>")
    assert "You are in the pantry." in text
    long_obs = "a very long observation " * 50
    ids = renderer.ids(long_obs + "END", ["take coin"], history)
    assert len(ids) == 60 and policy.tokenizer.decode(ids).endswith("END\nValid: take coin\n>")


def test_behaviour_cloning_lowers_loss_on_gold_commands(tiny_dir):
    from agents.llm.bc import behaviour_clone

    policy = make_policy(tiny_dir)
    records = [
        {
            "prompt": policy.renderer.render(
                "You are in the kitchen. To the East you see the pantry.", ["move east", "inventory"], []
            ),
            "completion": " move east",
        },
        {
            "prompt": policy.renderer.render(
                "You are in the pantry. You see a coin.", ["take coin", "move west"], []
            ),
            "completion": " take coin",
        },
    ] * 8
    result = behaviour_clone(policy, records, epochs=30, lr=1e-2, batch_size=8)
    assert result["loss_after"] < 0.1 * result["loss_before"]
    prompt = policy.renderer.ids("You are in the pantry. You see a coin.", ["take coin", "move west"], [])
    assert policy.generate([prompt], max_new_tokens=8, temperature=0.0).texts == ["take coin"]


def test_lora_wraps_model_and_value_head_stays_trainable(tiny_dir):
    pytest.importorskip("peft")
    policy = make_policy(tiny_dir)
    before = {n for n, p in policy.named_parameters() if p.requires_grad}
    apply_lora(policy, rank=4)
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert any("lora_" in n for n in trainable)
    assert {"value_head.weight", "value_head.bias"} <= trainable
    assert not any(("lora_" not in n and not n.startswith("value_head")) for n in trainable)
    assert len(trainable) < len(before) + 100
    state = policy.trainable_state_dict()
    assert set(state) == trainable
    # gradients reach the adapters and the value head through evaluate_actions
    prompts = [policy.renderer.ids("room", ["move east"], [])]
    gen = policy.generate(prompts, max_new_tokens=4, temperature=1.0, commands=[["move east"]])
    ids, mask = left_pad(prompts, policy.pad_id)
    logp, _, values = policy.evaluate_actions(ids, mask, gen.ids, gen.mask, allowed=gen.allowed)
    (logp.sum() + values.sum()).backward()
    assert policy.value_head.weight.grad is not None
    assert any(
        p.grad is not None and p.grad.abs().sum() > 0 for n, p in policy.named_parameters() if "lora_" in n
    )


def test_missing_model_path_names_the_path(tmp_path):
    with pytest.raises(ConfigError, match="nowhere"):
        load_policy(str(tmp_path / "nowhere"))
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="missing"):
        load_policy(str(tmp_path / "half"))


def test_command_token_ids_drops_commands_too_long(tiny_dir):
    policy = make_policy(tiny_dir)
    ids = command_token_ids(policy.tokenizer, ["move east", "x " * 40], max_tokens=5)
    assert len(ids) == 1
