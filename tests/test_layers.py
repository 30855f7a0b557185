"""The layer rule, checked in fresh interpreters: base (explore/errors.py, explore/obs.py,
explore/networks.py) -> envs/ and the bonus modules (siblings) -> agents/. Lower layers never import
higher ones: envs imports no bonus and no agent, and no bonus module or shared network imports agents."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BONUS_MODULES = (
    "explore.bonus",
    "explore.rnd",
    "explore.noveld",
    "explore.e3b",
    "explore.counts",
    "explore.normalize",
    "explore.combine",
    "explore.archive.bonus",
)


def modules_after_import(module: str) -> set[str]:
    """The names in sys.modules after `import <module>` in a fresh interpreter run from the repository root."""
    code = f"import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def test_envs_imports_no_bonus_and_no_agent():
    loaded = modules_after_import("envs")
    assert not {m for m in loaded if m == "agents" or m.startswith("agents.")}
    assert not loaded & set(BONUS_MODULES)
    assert "explore.networks" not in loaded  # base modules come in only when used: errors, obs


@pytest.mark.parametrize("module", [*BONUS_MODULES, "explore.networks"])
def test_bonus_modules_and_shared_networks_import_no_agent(module):
    # (envs may be loaded: importing the `explore` package registers the env ids with gymnasium)
    loaded = modules_after_import(module)
    above = {m for m in loaded if m.split(".")[0] == "agents"}
    assert above == set(), f"{module} imports {sorted(above)}"
