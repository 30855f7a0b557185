"""PPO with global and episodic bonuses on MiniGrid / BabyAI (envpool) (default: the 'minigrid' preset, E3B).

    python runs/minigrid.py --help
    python runs/minigrid.py --env-id MiniGrid-DoorKey-8x8-v0 --bonus e3b
    python runs/minigrid.py --bonus "e3b*rnd"            # episodic x global (Henaff et al. 2023)
    python runs/minigrid.py --bonus "count_e+0.5*noveld" # a sum with a coefficient
    python runs/minigrid.py --resume runs/<name>

Same config and flags as `explore train --preset minigrid`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from explore.cli import train_main  # noqa: E402

if __name__ == "__main__":
    train_main(sys.argv[1:], prog="runs/minigrid.py", default_preset="minigrid")
