"""Go-Explore's exploration phase on an Atari game (default: Montezuma's Revenge, deterministic ALE).

    python runs/go_explore_atari.py --help
    python runs/go_explore_atari.py --frames 2_000_000                        # a few minutes on a CPU
    python runs/go_explore_atari.py --frames 100_000_000 --num-workers 15 --run-dir runs/ge_mr  # 16 cores
    python runs/go_explore_atari.py --resume runs/ge_mr --frames 200_000_000  # continue the run

Same config and flags as `explore go-explore`. The run directory gets progress.csv (frames, cells,
rooms, best score), TensorBoard events and archive.pkl (every cell's trajectory and ALE state).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from explore.archive.go_explore import main  # noqa: E402

if __name__ == "__main__":
    main(sys.argv[1:], prog="runs/go_explore_atari.py")
