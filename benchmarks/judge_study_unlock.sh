#!/usr/bin/env bash
# The judge-reward study's harder task (benchmarks/judge_reward_study.md): BabyAI-UnlockLocal, where plain
# PPO had no success in 98k steps, at 196k steps; 4 arms x 5 seeds, one `explore bench` per seed.
# Resumable: rerun it; finished runs are skipped, killed ones resume from their checkpoint.
# Rows land in benchmarks/judge_study_unlock_runs.csv; the table and curves are rewritten at each seed.
set -euo pipefail
cd "$(dirname "$0")/.."
ARGS=(--tasks BabyAI-UnlockLocal-v0 --preset minigrid-fast --total-timesteps 196608
  "--common=--num-envs 32 --env-groups 1 --device cpu"
  --methods ppo=none count_e=count_e "judge_oracle=judge --judge-kind oracle --judge-device cpu"
  "judge_embedding=judge --judge-kind embedding --judge-device cpu"
  --jobs 1 --torch-threads 1 --root runs/judge_study/unlock --out benchmarks/judge_study_unlock)
for seed in 1 2 3 4 5; do
  python -m explore bench "${ARGS[@]}" --seeds "$seed"
done
python -m explore bench "${ARGS[@]}" --seeds 1 2 3 4 5 --analyze-only
