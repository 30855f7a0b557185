"""PPO with global and episodic bonuses on MiniHack (NLE) (default: the 'minihack' preset, E3B).

    python runs/minihack.py --help
    python runs/minihack.py --env-id MiniHack-MultiRoom-N4-Locked-v0 --bonus e3b
    python runs/minihack.py --bonus "e3b*rnd"            # episodic x global (Henaff et al. 2023)
    python runs/minihack.py --bonus "count_e+0.5*noveld" # a sum with a coefficient
    python runs/minihack.py --resume runs/<name>

Same config and flags as `explore train --preset minihack`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from explore.cli import train_main  # noqa: E402

if __name__ == "__main__":
    train_main(sys.argv[1:], prog="runs/minihack.py", default_preset="minihack")
