"""Data-parallel training on torch.distributed: 2 gloo ranks on this machine agree with 1 process.

One spawn of 2 ranks (tcp://127.0.0.1 on a free port) runs every in-process scenario and saves
its results; the tests compare them with a single process computing the same thing over the
union of both ranks' data. A torchrun job of `explore train` checks the launcher path and a
checkpoint saved by 2 ranks that resumes on 1.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp

import agents.ppo as ppo
from agents.grid_networks import make_policy
from explore import distributed
from explore.checkpoint import CONFIG_NAME, load_checkpoint
from explore.cli import parse_train_config
from explore.combine import BonusContext, build_bonus
from explore.counts import GlobalCount
from explore.normalize import DiscountedReturnFilter, RunningMeanStd
from explore.rnd import RNDConfig

WORLD = 2
N, T = 4, 8  # envs per rank, steps per rollout
OBS_DIM, ACTIONS = 6, 3
SPACE = gym.spaces.Box(-1.0, 1.0, (OBS_DIM,))


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Small tensors on a shared 2-core machine: one intra-op thread per process avoids oversubscription."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the fixed update case: per-rank batches and the combined batch ------------------------------


def update_config(num_envs: int, use_lstm: bool) -> ppo.Config:
    return ppo.Config(
        num_envs=num_envs,
        num_steps=T,
        num_minibatches=2,
        update_epochs=2,
        learning_rate=3e-3,
        max_grad_norm=0.1,  # small: the clip is active, so it must act on the all-reduced gradient
        update_proportion=1.0,  # RND trains on every valid sample: no random subsample
        use_lstm=use_lstm,
        amp=False,
        device="cpu",
    )


def make_models(use_lstm: bool, num_envs: int):
    torch.manual_seed(0)  # the same initial weights in every process
    agent = make_policy(SPACE, ACTIONS, use_lstm=use_lstm)
    bonus = build_bonus(
        "rnd", BonusContext(num_envs=num_envs, observation_space=SPACE), RNDConfig(update_proportion=1.0)
    )
    trainable = list(agent.parameters()) + [p for p in bonus.parameters() if p.requires_grad]
    return agent, bonus, torch.optim.Adam(trainable, lr=3e-3, eps=1e-5)


def combined_case(use_lstm: bool):
    """(combined (T, 2N) batch, initial LSTM state (1, 2N, H) or None), the same in every process."""
    g = torch.Generator().manual_seed(1)
    W = WORLD * N
    batch = {
        "obs": torch.rand(T, W, OBS_DIM, generator=g) * 2 - 1,
        "next_obs": torch.rand(T, W, OBS_DIM, generator=g) * 2 - 1,
        "actions": torch.randint(ACTIONS, (T, W), generator=g),
        "logprobs": torch.log(torch.full((T, W), 1.0 / ACTIONS)) + 0.3 * torch.randn(T, W, generator=g),
        "advantages": torch.randn(T, W, generator=g) + 0.5,
        "ret_ext": torch.randn(T, W, generator=g),
        "ret_int": torch.randn(T, W, generator=g),
        "valid": torch.rand(T, W, generator=g) > 0.2,
        "starts": torch.rand(T, W, generator=g) < 0.1,
    }
    batch["valid"][:, W - 1] = False  # rank 1 holds fewer valid samples: global denominators matter
    state = None
    if use_lstm:
        state = tuple(0.5 * torch.randn(1, W, 128, generator=g) for _ in range(2))
    return batch, state


def flat(batch: dict) -> dict:
    return {k: v.reshape(-1, *v.shape[2:]) for k, v in batch.items()}


def rank_minibatches(use_lstm: bool, rank: int) -> list[list[tuple]]:
    """Per epoch, the minibatches of rank `rank` (local indices into its (T * N) batch)."""
    g = torch.Generator().manual_seed(100 + rank)
    epochs = []
    for _ in range(2):
        if use_lstm:
            order = torch.randperm(N, generator=g)
            epochs.append(
                [
                    ((torch.arange(T)[:, None] * N + envs[None, :]).reshape(-1), envs)
                    for envs in order.chunk(2)
                ]
            )
        else:
            epochs.append([(index, None) for index in torch.randperm(T * N, generator=g).chunk(2)])
    return epochs


def union_minibatches(use_lstm: bool) -> list[list[tuple]]:
    """Minibatch k of the combined batch = the union of every rank's minibatch k."""
    per_rank = [rank_minibatches(use_lstm, r) for r in range(WORLD)]
    W = WORLD * N
    epochs = []
    for e in range(2):
        epoch = []
        for k in range(2):
            if use_lstm:
                envs = torch.cat([per_rank[r][e][k][1] + r * N for r in range(WORLD)])
                epoch.append(((torch.arange(T)[:, None] * W + envs[None, :]).reshape(-1), envs))
            else:
                parts = []
                for r in range(WORLD):
                    local = per_rank[r][e][k][0]
                    parts.append((local // N) * W + r * N + local % N)  # (t, n) of rank r -> (t, rN + n)
                epoch.append((torch.cat(parts), None))
        epochs.append(epoch)
    return epochs


def replay(epochs):
    it = iter(epochs)
    return lambda config, device: next(it)


def run_update(use_lstm: bool, rank: int | None, dist_context=None):
    """One ppo_update: of rank `rank`'s share, or (rank None) of the combined batch in one process."""
    batch, state = combined_case(use_lstm)
    if rank is None:
        num_envs, epochs = WORLD * N, union_minibatches(use_lstm)
    else:
        cols = slice(rank * N, (rank + 1) * N)
        batch = {k: v[:, cols] for k, v in batch.items()}
        state = None if state is None else tuple(x[:, cols] for x in state)
        num_envs, epochs = N, rank_minibatches(use_lstm, rank)
    agent, bonus, optimizer = make_models(use_lstm, num_envs)
    config = update_config(num_envs, use_lstm)
    stats = ppo.ppo_update(
        agent,
        bonus,
        optimizer,
        flat(batch),
        config,
        dist_context,
        initial_state=state,
        minibatches=replay(epochs),
    )
    params = {f"agent.{k}": v.detach().clone() for k, v in agent.state_dict().items()}
    params.update({f"bonus.{k}": v.detach().clone() for k, v in bonus.predictor.state_dict().items()})
    adam_steps = {float(s["step"]) for s in optimizer.state_dict()["state"].values()}
    return {"params": params, "stats": stats, "adam_steps": adam_steps}


# --- the other scenarios' data ---------------------------------------------------------------


def rms_data(rank: int):
    """Rank-specific batches of different sizes, with masks: (x, mask) per update, two updates."""
    g = torch.Generator().manual_seed(10 + rank)
    rows = (5, 9)[rank]
    return [
        (torch.randn(rows, 3, generator=g) * (rank + 1) + rank, torch.rand(rows, generator=g) > 0.3)
        for _ in range(2)
    ]


def count_rollouts(rank: int):
    """Two (T, N) rollouts of tiny integer observations (many repeats, across ranks too)."""
    g = torch.Generator().manual_seed(20 + rank)
    return [
        {"next_obs": torch.randint(3, (T, N, 2), generator=g), "valid": torch.rand(T, N, generator=g) > 0.15}
        for _ in range(2)
    ]


def rnd_rollouts(rank: int | None):
    """Two rollouts of observations for the RND statistics; rank None: both ranks' envs side by side."""
    out = []
    for i in range(2):
        g = torch.Generator().manual_seed(30 + i)
        obs = torch.rand(T, WORLD * N, OBS_DIM, generator=g) * torch.arange(1, WORLD * N + 1)[None, :, None]
        valid = torch.rand(T, WORLD * N, generator=g) > 0.1
        cols = slice(None) if rank is None else slice(rank * N, (rank + 1) * N)
        out.append({"next_obs": obs[:, cols], "obs": obs[:, cols], "valid": valid[:, cols]})
    return out


def cells_of(rank: int) -> dict:
    """An archive fragment: cell -> best trajectory found by this rank (score, length, actions)."""
    cells = {
        "a": {"score": 1.0, "length": 10, "traj": f"a{rank}"},
        "b": {"score": 2.0 + rank, "length": 5, "traj": f"b{rank}"},  # rank 1 better
        "c": {"score": 3.0, "length": 7 - rank, "traj": f"c{rank}"},  # tie: the shorter (rank 1) wins
    }
    cells[f"only{rank}"] = {"score": 0.5, "length": 1, "traj": f"only{rank}"}
    return cells


def archive_score(cell):
    return (cell["score"], -cell["length"])


# --- the spawned worker ----------------------------------------------------------------------


def _worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        context = distributed.setup("cpu")  # uses the running group, leaves it running
        assert (context.rank, context.world_size, context.active, context.owns_group) == (
            rank,
            WORLD,
            True,
            False,
        )
        results: dict = {"context": (context.rank, context.world_size, context.is_main)}

        for use_lstm in (False, True):
            results[f"update_lstm={use_lstm}"] = run_update(use_lstm, rank, context)

        rms = RunningMeanStd((3,))
        distributed.mark_for_sync(rms)
        for x, mask in rms_data(rank):
            rms.update(x, mask)
        results["rms"] = {k: v.clone() for k, v in rms.state_dict().items()}

        torch.manual_seed(0)  # the networks of the one-process reference
        rnd = build_bonus("rnd", BonusContext(num_envs=N, observation_space=SPACE))
        assert distributed.mark_for_sync(rnd) == 2  # obs_rms and reward_rms
        results["rnd_rewards"] = [rnd.bonus(b) for b in rnd_rollouts(rank)]
        results["rnd_stats"] = {k: v.clone() for k, v in rnd.state_dict().items() if "rms" in k}

        counts = GlobalCount("obs")
        distributed.mark_for_sync(counts)
        results["count_bonus"] = [counts.bonus(b) for b in count_rollouts(rank)]
        results["count_table"] = (counts.table_keys.clone(), counts.table_counts.clone())

        results["cells"] = distributed.merge_cells(cells_of(rank), archive_score, context)

        results["gathered"] = distributed.all_gather_variable(torch.arange(rank * 3 + 1).float())

        # a parameter with a gradient on rank 1 only: every rank gets rank 1's gradient
        a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(3))
        (a.sum() * (rank + 1) + (b.sum() if rank == 1 else 0)).backward()
        c = torch.nn.Parameter(torch.ones(1))  # no gradient anywhere: stays None
        distributed.all_reduce_gradients([a, b, c])
        results["grads"] = (a.grad.clone(), b.grad.clone(), c.grad)
        results["comm_calls"] = distributed.comm_calls()
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
        context.barrier()
    finally:
        tdist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out_dir = tmp_path_factory.mktemp("ranks")
    mp.spawn(_worker, args=(free_port(), str(out_dir)), nprocs=WORLD, join=True)
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


# --- tests: the update --------------------------------------------------------------------------


@pytest.mark.parametrize("use_lstm", [False, True])
def test_two_rank_update_equals_one_rank_update_of_the_combined_batch(ranks, use_lstm):
    single = run_update(use_lstm, None)
    for rank in range(WORLD):
        got = ranks[rank][f"update_lstm={use_lstm}"]
        assert got["params"].keys() == single["params"].keys()
        for name, value in single["params"].items():
            torch.testing.assert_close(got["params"][name], value, rtol=1e-4, atol=1e-5, msg=name)
        for name, value in single["stats"].items():
            assert got["stats"][name] == pytest.approx(value, rel=1e-4, abs=1e-6), name
        assert got["adam_steps"] == single["adam_steps"] == {4.0}  # 2 epochs x 2 minibatches
    # the update did move the weights (so the comparison above means something)
    agent, _, _ = make_models(use_lstm, WORLD * N)
    moved = max(
        (single["params"][f"agent.{k}"] - v).abs().max().item() for k, v in agent.state_dict().items()
    )
    assert moved > 1e-3
    # both ranks hold bit-identical weights: the same reduced gradient, the same step
    for name, value in ranks[0][f"update_lstm={use_lstm}"]["params"].items():
        assert torch.equal(value, ranks[1][f"update_lstm={use_lstm}"]["params"][name]), name


def test_gradient_all_reduce_handles_parameters_without_gradient(ranks):
    for rank in range(WORLD):
        a, b, c = ranks[rank]["grads"]
        assert torch.equal(a, torch.full((2,), 3.0))  # 1 + 2
        assert torch.equal(b, torch.ones(3))  # rank 1's only
        assert c is None


# --- tests: global state -------------------------------------------------------------------------


def test_synchronized_running_statistics_equal_the_union(ranks):
    union = RunningMeanStd((3,))
    for (x0, m0), (x1, m1) in zip(rms_data(0), rms_data(1), strict=True):
        union.update(torch.cat([x0, x1]), torch.cat([m0, m1]))
    for rank in range(WORLD):
        for name, value in union.state_dict().items():
            torch.testing.assert_close(ranks[rank]["rms"][name], value, rtol=1e-6, atol=1e-6, msg=name)


def test_synchronized_rnd_statistics_and_rewards_equal_one_process_over_all_envs(ranks):
    """Each rank's RND scores its own envs; its observation and reward statistics are those of all
    envs together, and its rewards are its columns of what one process stepping all envs computes
    (the per-env discounted-return filter stays rank-local: it is per env anyway)."""
    torch.manual_seed(0)
    single = build_bonus("rnd", BonusContext(num_envs=WORLD * N, observation_space=SPACE))
    rewards = [single.bonus(b) for b in rnd_rollouts(None)]
    stats = {k: v for k, v in single.state_dict().items() if "rms" in k}
    valid_steps = sum(float(b["valid"].sum()) for b in rnd_rollouts(None))
    assert float(stats["obs_rms.count"]) == pytest.approx(1e-4 + valid_steps)
    for rank in range(WORLD):
        got = ranks[rank]["rnd_stats"]
        assert got.keys() == stats.keys()
        for name, value in stats.items():
            torch.testing.assert_close(got[name], value, rtol=1e-5, atol=1e-6, msg=name)
        for got_rewards, expected in zip(ranks[rank]["rnd_rewards"], rewards, strict=True):
            torch.testing.assert_close(
                got_rewards, expected[:, rank * N : (rank + 1) * N], rtol=1e-5, atol=1e-6
            )
    for name in stats:  # and the ranks agree with each other exactly
        assert torch.equal(ranks[0]["rnd_stats"][name], ranks[1]["rnd_stats"][name]), name


def test_merged_global_counts_equal_the_counts_of_the_union(ranks):
    single = GlobalCount("obs")
    union_bonus = []
    for b0, b1 in zip(count_rollouts(0), count_rollouts(1), strict=True):
        union = {k: torch.cat([b0[k], b1[k]], dim=1) for k in b0}
        union_bonus.append(single.bonus(union))
    for rank in range(WORLD):
        keys, counts = ranks[rank]["count_table"]
        assert torch.equal(keys, single.table_keys)
        assert torch.equal(counts, single.table_counts)
        for got, expected in zip(ranks[rank]["count_bonus"], union_bonus, strict=True):
            assert torch.equal(got, expected[:, rank * N : (rank + 1) * N])
    total_valid = sum(int(b["valid"].sum()) for r in range(WORLD) for b in count_rollouts(r))
    assert int(single.table_counts.sum()) == total_valid


def test_merged_archive_equals_the_union_with_the_best_trajectory_winning(ranks):
    expected = {
        "a": cells_of(0)["a"],  # equal score and length: the first rank's cell stays
        "b": cells_of(1)["b"],
        "c": cells_of(1)["c"],
        "only0": cells_of(0)["only0"],
        "only1": cells_of(1)["only1"],
    }
    for rank in range(WORLD):
        assert ranks[rank]["cells"] == expected
    assert distributed.merge_cell_dicts([cells_of(0), cells_of(1)], archive_score) == expected
    assert set(expected) == set(cells_of(0)) | set(cells_of(1))


def test_all_gather_of_variable_length_tensors(ranks):
    for rank in range(WORLD):
        got = ranks[rank]["gathered"]
        assert [g.tolist() for g in got] == [[0.0], [0.0, 1.0, 2.0, 3.0]]
    assert ranks[0]["context"] == (0, WORLD, True) and ranks[1]["context"] == (1, WORLD, False)


# --- tests: single-process behaviour of the helpers ------------------------------------------------


def test_helpers_are_the_identity_in_one_process():
    assert not distributed.is_active()
    context = distributed.setup("cpu")
    assert (context.rank, context.world_size, context.is_main, context.active) == (0, 1, True, False)
    x = torch.arange(3.0)
    assert distributed.all_reduce_sum_(x) is x
    assert distributed.all_gather_variable(x)[0] is x
    assert context.broadcast_object("run") == "run"
    assert distributed.merge_cells({"a": {"score": 1}}) == {"a": {"score": 1}}
    context.close()


def test_shard_partitions_work_items_by_rank():
    items = list(range(10))
    shards = [distributed.shard(items, r, 3) for r in range(3)]
    assert shards == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert sorted(sum(shards, [])) == items
    with pytest.raises(ValueError):
        distributed.shard(items, 3, 3)


def test_return_filter_carry_is_reinitialized_when_the_env_count_differs():
    saved = DiscountedReturnFilter(4, 0.99)
    saved.returns.fill_(2.0)
    fresh = DiscountedReturnFilter(2, 0.99)
    fresh.load_state_dict(saved.state_dict())  # no size-mismatch error
    assert torch.equal(fresh.returns, torch.zeros(2))
    same = DiscountedReturnFilter(4, 0.99)
    same.load_state_dict(saved.state_dict())
    assert torch.equal(same.returns, torch.full((4,), 2.0))
    assert distributed.reset_rank_local_state(same) == 1
    assert torch.equal(same.returns, torch.zeros(4))


# --- a checkpoint of 2 ranks resumes on 1 ------------------------------------------------------

NUM_ENVS, NUM_STEPS, UPDATES = 2, 32, 2
TRAIN_FLAGS = [
    "--env-id", "MontezumaRevenge-v5",
    "--bonus", "rnd+0.5*count",
    "--num-envs", str(NUM_ENVS),
    "--env-groups", "1",
    "--num-steps", str(NUM_STEPS),
    "--num-minibatches", "2",
    "--update-epochs", "1",
    "--rnd-warmup-iterations", "1",
    "--max-episode-steps", "20",
    "--checkpoint-interval", "1",
    "--device", "cpu",
    "--no-progress",
]  # fmt: skip


def adam_steps(optimizer_state: dict) -> set[float]:
    return {float(s["step"]) for s in optimizer_state["state"].values()}


@pytest.mark.slow  # two torchrun ranks, then a resume: the two-rank update test stays in the fast tier
@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun is not on PATH")
def test_checkpoint_of_two_ranks_resumes_on_one(tmp_path):
    run_dir = tmp_path / "run"
    global_batch = WORLD * NUM_ENVS * NUM_STEPS
    # this checkout's packages, whatever is installed; no timeout (a busy machine may take long)
    pythonpath = os.pathsep.join(
        filter(None, [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")])
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": pythonpath}
    result = subprocess.run(
        [
            "torchrun",
            "--standalone",
            "--nproc-per-node",
            str(WORLD),
            "-m",
            "explore",
            "train",
            *TRAIN_FLAGS,
            "--total-timesteps",
            str(UPDATES * global_batch),
            "--run-dir",
            str(run_dir),
        ],  # fmt: skip
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert f"finished {UPDATES * global_batch} steps" in result.stdout  # global steps: both ranks' envs

    checkpoint = load_checkpoint(run_dir)
    assert (checkpoint["update"], checkpoint["global_step"]) == (UPDATES, UPDATES * global_batch)
    assert checkpoint["world_size"] == WORLD and len(checkpoint["rank_rng"]) == WORLD
    assert adam_steps(checkpoint["optimizer"]) == {UPDATES * 2}
    # the merged count table counted the valid steps of both ranks' envs
    table_total = int(checkpoint["bonus"]["bonuses.1.table_counts"].sum())
    assert UPDATES * global_batch * 0.8 < table_total <= UPDATES * global_batch
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1  # rank 0 alone logs
    assert json.loads((run_dir / CONFIG_NAME).read_text())["num_envs"] == NUM_ENVS  # per rank

    # --- resume in this process (one rank): the global step and Adam's state continue ---
    total = UPDATES * global_batch + 2 * NUM_ENVS * NUM_STEPS
    config = parse_train_config(["--resume", str(run_dir), "--total-timesteps", str(total)])
    resumed = ppo.train(config)
    assert resumed["global_step"] == total
    assert resumed["world_size"] == 1
    checkpoint = load_checkpoint(run_dir)
    assert (checkpoint["update"], checkpoint["global_step"]) == (UPDATES + 2, total)
    assert checkpoint["world_size"] == 1
    assert adam_steps(checkpoint["optimizer"]) == {(UPDATES + 2) * 2}
    assert int(checkpoint["bonus"]["bonuses.1.table_counts"].sum()) > table_total  # the table continued


def test_validate_counts_every_rank_in_the_smallest_run(monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    config = ppo.Config(
        num_envs=2, env_groups=1, num_steps=32, num_minibatches=2, total_timesteps=64, device="cpu"
    )
    with pytest.raises(ppo.ConfigError, match=r"at least one batch \(128 steps over 2 ranks"):
        ppo.validate(config)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
