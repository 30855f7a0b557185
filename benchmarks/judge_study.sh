#!/usr/bin/env bash
# The judge-reward study (benchmarks/judge_reward_study.md): one MiniGrid/BabyAI level, 4 arms x 5 seeds,
# one `explore bench` per seed so that an unfinished study has every arm at the seeds it reached.
#   bash benchmarks/judge_study.sh MiniGrid-DoorKey-5x5-v0 98304 doorkey
#   bash benchmarks/judge_study.sh BabyAI-UnlockLocal-v0 196608 unlock
#   bash benchmarks/judge_study.sh BabyAI-UnlockLocal-v0 196608 unlock --analyze-only   # tables of what landed
#   JOBS=2 runs two at a time. JUDGE_EXTRA_METHOD="judge_oracle0.1=judge --judge-kind oracle --judge-device cpu --int-coef 0.1" \
#     bash benchmarks/judge_study.sh MiniGrid-MultiRoom-N4-S5-v0 499712 multiroom      # a fifth arm
# Resumable: rerun it; finished runs are skipped, killed ones resume from their checkpoint. Rows land in
# benchmarks/judge_study_<name>_runs.csv, the table and curves in benchmarks/judge_study_<name>.md/_success.png,
# the judge/* scalars in benchmarks/judge_study_<name>_judge.csv.
set -euo pipefail
cd "$(dirname "$0")/.."
TASK=$1 STEPS=$2 NAME=$3
ARGS=(--tasks "$TASK" --preset minigrid-fast --total-timesteps "$STEPS"
  "--common=--num-envs 32 --env-groups 1 --device cpu"
  --methods ppo=none count_e=count_e "judge_oracle=judge --judge-kind oracle --judge-device cpu"
  "judge_embedding=judge --judge-kind embedding --judge-device cpu" ${JUDGE_EXTRA_METHOD:+"$JUDGE_EXTRA_METHOD"}
  --jobs "${JOBS:-1}" --torch-threads 1 --root "runs/judge_study/$NAME" --out "benchmarks/judge_study_$NAME")
if [[ "${4:-}" != "--analyze-only" ]]; then
  for seed in 1 2 3 4 5; do
    python -m explore bench "${ARGS[@]}" --seeds "$seed"
    python benchmarks/judge_study_scalars.py "runs/judge_study/$NAME" "benchmarks/judge_study_${NAME}_judge.csv"
  done
fi
python -m explore bench "${ARGS[@]}" --seeds 1 2 3 4 5 --analyze-only
python benchmarks/judge_study_scalars.py "runs/judge_study/$NAME" "benchmarks/judge_study_${NAME}_judge.csv"
