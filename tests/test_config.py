"""Bad configuration is rejected with a clear message, before any environment starts."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap

import pytest
import torch

import agents.ppo as ppo
import envs
import envs.registration as registration
from explore.cli import main
from explore.errors import ConfigError, MissingDependencyError, UnknownEnvError

INSTALL_HINT = "pip install 'explore-rl[atari]'"


@pytest.fixture
def base(tmp_path) -> ppo.Config:
    """A valid tiny config; the tests break one field at a time."""
    return ppo.Config(
        num_envs=2,
        env_groups=1,
        num_steps=32,
        num_minibatches=2,
        update_epochs=1,
        total_timesteps=128,
        rnd_warmup_iterations=1,
        device="cpu",
        progress=False,
        run_dir=str(tmp_path / "run"),
    )


@pytest.fixture
def no_env_may_start(monkeypatch) -> list[str]:
    """Every way the trainer could build an environment raises AssertionError, and is recorded."""
    calls: list[str] = []

    def forbidden(name):
        def build(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"{name} was called: an environment started before validation failed")

        return build

    monkeypatch.setattr(registration, "make", forbidden("envs.registration.make"))
    monkeypatch.setattr(envs, "make", forbidden("envs.make"))
    guarded = [
        dataclasses.replace(
            suite,
            make_vec=forbidden(f"{suite.name}.make_vec"),
            make_single=forbidden(f"{suite.name}.make_single"),
        )
        for suite in registration.SUITES
    ]
    monkeypatch.setattr(registration, "SUITES", guarded)
    return calls


def test_the_guard_catches_environment_creation(base, no_env_may_start):
    """Sanity check of the fixture: a VALID config gets past validation and trips the guard."""
    with pytest.raises(AssertionError, match="environment started"):
        ppo.train(base)
    assert len(no_env_may_start) == 1  # the first environment the trainer builds is intercepted


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"num_envs": 0}, r"--num-envs 0 is invalid: it must be an integer >= 1"),
        ({"num_envs": -3}, r"--num-envs -3 is invalid"),
        (
            {"num_envs": 3, "num_steps": 5, "num_minibatches": 4},
            r"--num-minibatches 4 is invalid: it must divide the batch num_envs \* num_steps = 15",
        ),
        ({"ent_coef": -0.1}, r"--ent-coef -0\.1 is invalid: a coefficient must be >= 0"),
        ({"int_coef": -1}, r"--int-coef -1 is invalid: a coefficient must be >= 0"),
        (
            {"bonus": "icm"},
            r"bad bonus expression 'icm' at position 0: unknown bonus 'icm' \(registered: archive, count, count_e, count_e1, e3b, judge, noveld, rnd\)",
        ),
        ({"num_envs": 3, "env_groups": 2}, r"--env-groups 2 is invalid: it must divide --num-envs 3"),
        (
            {"total_timesteps": 10},
            r"--total-timesteps 10 is invalid: it must be at least one batch \(64 steps\)",
        ),
        ({"gamma": 1.5}, r"--gamma 1\.5 is invalid: it must lie in \[0, 1\]"),
        # the bonuses' own flags, declared and checked by each bonus's config
        ({"update_proportion": 0.0}, r"--update-proportion 0\.0 is invalid: it must lie in \(0, 1\]"),
        ({"rnd_warmup_iterations": -1}, r"--rnd-warmup-iterations -1 is invalid: it must be >= 0"),
        ({"e3b_lambda": 0.0}, r"--e3b-lambda 0\.0 is invalid: it must be > 0"),
        ({"noveld_alpha": -0.5}, r"--noveld-alpha -0\.5 is invalid: it must be >= 0"),
        ({"reward_norm": "std"}, r"--reward-norm 'std' is invalid: use one of 'reward', 'return', 'none'"),
        # a bonus that cannot read the suite's observations, naming the bonus and the env
        (
            {"bonus": "count", "state_key": "xy"},
            r"--bonus 'count': bonus 'count' cannot read the observations of MontezumaRevenge-v5 "
            r"\(\(C, 84, 84\) uint8 frame stacks \(Atari\)\): --state-key: state key 'xy' needs a dict",
        ),
        (
            {"bonus": "0.5*rnd+noveld", "rnd_input": "glyphs"},
            r"bonus 'rnd' cannot read the observations of MontezumaRevenge-v5 .*--rnd-input: state key 'glyphs'",
        ),
        (
            {"bonus": "archive", "env_id": "Bandit-Bernoulli-K5-Easy-v0"},
            r"bonus 'archive' cannot read the observations of Bandit-Bernoulli-K5-Easy-v0 \(flat float vectors "
            r"\(bandits\)\): the archive bonus has no cell function for vector observations",
        ),
        (
            {"bonus": "count_e*count", "env_id": "MiniGrid-DoorKey-5x5-v0", "state_key": "glyphs"},
            r"bonus 'count_e' cannot read the observations of MiniGrid-DoorKey-5x5-v0 .*'glyphs'",
        ),
        ({"device": "tpu"}, r"--device 'tpu' is invalid"),
    ],
)
def test_bad_values_raise_config_error_before_any_env(base, no_env_may_start, tmp_path, changes, expected):
    bad = dataclasses.replace(base, **changes)
    with pytest.raises(ConfigError, match=expected):
        ppo.validate(bad)
    with pytest.raises(ConfigError, match=expected):
        ppo.train(bad)
    assert no_env_may_start == []
    assert not (tmp_path / "run").exists()  # not even the run directory was written


def test_archive_and_state_keys_that_fit_the_suite_pass_validation(base):
    ppo.validate(dataclasses.replace(base, bonus="archive", env_id="MiniGrid-DoorKey-5x5-v0"))
    ppo.validate(
        dataclasses.replace(base, bonus="count_e", env_id="MiniGrid-DoorKey-5x5-v0", state_key="image")
    )
    ppo.validate(dataclasses.replace(base, bonus="archive+count"))  # Atari frames


def test_help_lists_every_registered_bonus_and_each_default_once(capsys, monkeypatch):
    from explore.cli import parse_train_config
    from explore.combine import bonus_names

    monkeypatch.setenv("COLUMNS", "400")  # one line per flag
    with pytest.raises(SystemExit):
        parse_train_config(["--help"])
    lines = capsys.readouterr().out.splitlines()

    def help_of(flag: str) -> str:
        """The help text of `flag`: its line and the continuation lines up to the next flag."""
        start = next(i for i, line in enumerate(lines) if line.lstrip("│ ").startswith(flag + " "))
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].lstrip("│ ").startswith("-")), len(lines)
        )
        return " ".join(lines[start:end])

    assert f"a name ({', '.join(bonus_names())})" in help_of("--bonus")
    assert "archive" in help_of("--bonus")
    assert help_of("--noveld-alpha").count("default") == 1, help_of("--noveld-alpha")
    for flag in ("--rnd-input", "--noveld-state-key", "--update-proportion", "--e3b-dim", "--state-key"):
        assert "(default: " in help_of(flag), flag


def test_help_lists_the_main_flags_first_and_declares_each_field_once(capsys, monkeypatch):
    from explore.cli import parse_train_config

    monkeypatch.setenv("COLUMNS", "400")  # one line per flag
    with pytest.raises(SystemExit):
        parse_train_config(["--help"])
    words = [line.lstrip("│ ").split() for line in capsys.readouterr().out.splitlines()]
    flags = [
        w[0] for w in words if w and w[0][:3].startswith("--") and w[0][2:3].isalpha() and w[0] != "--help"
    ]
    main_flags = ["--env-id", "--total-timesteps", "--seed", "--run-dir", "--preset", "--bonus"]
    assert flags[: len(main_flags)] == main_flags
    assert flags.index("--bonus") < flags.index("--update-proportion")  # before every bonus's own flags
    declared = [name for cls in ppo.Config.__mro__ for name in vars(cls).get("__annotations__", {})]
    assert sorted(name for name in set(declared) if declared.count(name) > 1) == []


def test_cuda_device_without_cuda(base, no_env_may_start, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same on a GPU machine
    for device in ("cuda", "cuda:1"):
        bad = dataclasses.replace(base, device=device)
        with pytest.raises(ConfigError, match=rf"--device '{device}': CUDA is not available.*--device cpu"):
            ppo.train(bad)
    assert no_env_may_start == []


def test_unknown_env_id_suggests_close_matches(base, no_env_may_start, tmp_path):
    bad = dataclasses.replace(base, env_id="MontezumRevenge-v5")
    # validate raises the registry's own error (a KeyError), not ConfigError; the CLI reports both
    with pytest.raises(UnknownEnvError) as excinfo:
        ppo.train(bad)
    assert "'MontezumRevenge-v5'" in str(excinfo.value)
    assert "Did you mean: MontezumaRevenge-v5" in str(excinfo.value)
    assert no_env_may_start == []
    assert not (tmp_path / "run").exists()


@pytest.fixture
def envpool_missing(monkeypatch):
    """TEST DOUBLE: hide the installed envpool, as if the 'atari' extra were not installed.

    A None entry in sys.modules makes `import envpool` (and its registry module) raise ImportError.
    """
    monkeypatch.setitem(sys.modules, "envpool", None)
    monkeypatch.setitem(sys.modules, "envpool.registration", None)


def test_missing_envpool_names_the_extra(base, no_env_may_start, envpool_missing, tmp_path):
    with pytest.raises(MissingDependencyError) as excinfo:
        envs.registration.find_suite("MontezumaRevenge-v5")
    assert INSTALL_HINT in str(excinfo.value)
    assert "'MontezumaRevenge-v5'" in str(excinfo.value)

    with pytest.raises(MissingDependencyError, match=r"pip install 'explore-rl\[atari\]'"):
        ppo.validate(base)
    with pytest.raises(MissingDependencyError, match=r"pip install 'explore-rl\[atari\]'"):
        ppo.train(base)
    assert no_env_may_start == []
    assert not (tmp_path / "run").exists()

    # listing ids leaves the missing suite out instead of failing
    assert "atari" not in envs.available_ids()


def test_missing_envpool_through_the_real_make(envpool_missing):
    with pytest.raises(MissingDependencyError, match=r"pip install 'explore-rl\[atari\]'"):
        envs.make("MontezumaRevenge-v5", num_envs=1)


def test_packages_import_without_envpool():
    """`import envs` registers gymnasium ids at import; without envpool that must not crash."""
    code = textwrap.dedent(
        """
        import sys
        sys.modules["envpool"] = None  # TEST DOUBLE: envpool not installed (fresh interpreter)
        import envs
        from explore.errors import MissingDependencyError
        ids = envs.available_ids()
        assert "atari" not in ids and "minigrid" not in ids, sorted(ids)  # envpool suites are left out
        try:
            envs.make("MontezumaRevenge-v5")
        except MissingDependencyError as exc:
            print(exc)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert INSTALL_HINT in result.stdout


def test_cli_reports_a_bad_flag_with_exit_code_2(no_env_may_start, tmp_path, capsys):
    code = main(
        [
            "train",
            "--num-envs",
            "0",
            "--device",
            "cpu",
            "--no-progress",
            "--run-dir",
            str(tmp_path / "run"),
        ]
    )
    captured = capsys.readouterr()
    assert code == 2
    assert "explore train: error:" in captured.err
    assert "--num-envs 0 is invalid" in captured.err
    assert "Traceback" not in captured.err
    assert no_env_may_start == []
    assert not (tmp_path / "run").exists()


def test_cli_reports_an_unknown_env_with_exit_code_2(no_env_may_start, tmp_path, capsys):
    code = main(["train", "--env-id", "MontezumRevenge-v5", "--device", "cpu", "--run-dir", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == 2
    assert "Did you mean: MontezumaRevenge-v5" in captured.err
    assert no_env_may_start == []


def test_cli_suggests_the_command(capsys):
    assert main(["trian"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'trian'" in err
    assert "Did you mean 'train'?" in err


def test_cli_rejects_an_unknown_preset(capsys):
    assert main(["train", "--preset", "fast"]) == 2
    err = capsys.readouterr().err
    assert "--preset 'fast' is invalid" in err
    assert "paper" in err and "quick" in err
