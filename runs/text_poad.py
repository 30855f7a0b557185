"""Token-level PPO for a language-model agent on a text game (default: POAD on a small coin collector).

    python runs/text_poad.py --help
    python runs/text_poad.py                                   # tiny model built on the fly, POAD, cpu
    python runs/text_poad.py --credit ntpo                     # naive token-level PPO
    python runs/text_poad.py --credit action --constrained     # action-level PPO, admissible commands only
    python runs/text_poad.py --credit grpo --group-size 4 --num-turns 20
    python runs/text_poad.py --bc-episodes 64                  # clone gold paths first (bc/success_rate_*)
    python runs/text_poad.py --model-path ~/models/Qwen2.5-0.5B --lora-rank 16 --dtype bfloat16 --device cuda
    python runs/text_poad.py --resume runs/<name>

One typed config (agents.llm.ppo.Config) drives it; copy this file to change the setup.
TensorBoard: tensorboard --logdir runs
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from agents.llm.ppo import main  # noqa: E402

if __name__ == "__main__":
    main(sys.argv[1:])
