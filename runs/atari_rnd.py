"""PPO + RND on an Atari game (default: Montezuma's Revenge with the RND paper's settings).

    python runs/atari_rnd.py --help
    python runs/atari_rnd.py --preset quick                 # a few minutes on a CPU
    python runs/atari_rnd.py --num-envs 128 --device cuda   # the paper's settings on a GPU
    python runs/atari_rnd.py --resume runs/<name>           # continue the run

Same config and flags as `explore train`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from explore.cli import train_main  # noqa: E402

if __name__ == "__main__":
    train_main(sys.argv[1:], prog="runs/atari_rnd.py")
