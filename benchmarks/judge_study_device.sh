#!/usr/bin/env bash
# Issue 15's two experiments that need a GPU machine (benchmarks/judge_reward_study.md, "Device study"):
#   keyroom: MiniHack-KeyRoom-S5 with the grid trainer (`explore train --preset minihack`), 1M steps a run;
#   text:    BabyAI-Text-UnlockLocal with the text trainer (`explore bench --trainer text`), 200k turns a run;
#   multiroom: MiniGrid-MultiRoom-N4-S5 (`--preset minigrid-fast`), 1M steps a run: the CPU study (section
#            "MultiRoom-N4-S5") had the judge starved by CPU sentence embeddings; here they run on the GPU.
# Six arms each, 5 seeds: ppo, count_e (MiniHack: counts of the message), the motif judge reward with the
# oracle and with the offline embedding judge, and ELLM (--judge-mode ellm) with the same two judges.
#
#   bash benchmarks/judge_study_device.sh                  # both experiments, --device cuda, JOBS=$(nproc) runs at once
#   bash benchmarks/judge_study_device.sh full keyroom     # one of them (keyroom, text or multiroom)
#   bash benchmarks/judge_study_device.sh full both --analyze-only   # tables and curves of what has landed
#   nice -n 15 bash benchmarks/judge_study_device.sh tiny  # every command path at CPU size: cpu, seed 1, a few
#                                                          # updates a run, 12 runs (about 2 min on 2 loaded cores)
#
# Resumable: rerun the same command; finished runs are skipped, killed ones resume from their checkpoint.
# full: runs in runs/judge_study/{keyroom,text_unlock}/, rows in benchmarks/judge_study_{keyroom,text_unlock}_runs.csv,
# IQM tables (.md), curves (_success.png) and judge/* scalars (_judge.csv) next to them.
# tiny: everything under runs/judge_study_device_tiny/ (ignored by git).
# Exits non-zero when a planned run has no row (a failed run: its train.log says why).
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-full} WHICH=${2:-both} ANALYZE=${3:-}
case "$MODE" in
  full)
    DEVICE=cuda SEEDS=(1 2 3 4 5) JOBS=${JOBS:-$(nproc)} JUDGE_TINY=""
    KEYROOM_STEPS=1000000 TEXT_TURNS=200000 MULTIROOM_STEPS=1000000
    KEYROOM_COMMON="--num-envs 16" MULTIROOM_COMMON="--num-envs 32 --env-groups 1"
    TEXT_COMMON="--int-coef 0.1"
    ROOT=runs/judge_study OUT=benchmarks/judge_study ;;
  tiny)  # sizes that only check the commands: two updates of 32 steps, five of 8 turns
    DEVICE=cpu SEEDS=(1) JOBS=${JOBS:-2}
    JUDGE_TINY="--judge-min-pairs 2 --judge-fit-steps 20"  # the motif arms fit a reward model within a tiny run
    KEYROOM_STEPS=64 TEXT_TURNS=40 MULTIROOM_STEPS=64
    KEYROOM_COMMON="--num-envs 2 --num-steps 16 --env-groups 1 --max-episode-steps 8"
    MULTIROOM_COMMON="--num-envs 2 --num-steps 16 --env-groups 1 --max-episode-steps 8"
    TEXT_COMMON="--int-coef 0.1 --num-envs 2 --num-turns 4 --num-minibatches 1 --max-episode-steps 4 --tiny-corpus-episodes 4"
    ROOT=runs/judge_study_device_tiny OUT=runs/judge_study_device_tiny/judge_study ;;
  *) echo "usage: $0 [full|tiny] [both|all|keyroom|text|multiroom] [--analyze-only]" >&2; exit 2 ;;
esac
case "$WHICH" in both|all|keyroom|text|multiroom) ;;
  *) echo "$0: unknown experiment '$WHICH': keyroom, text, multiroom, both (keyroom and text) or all" >&2; exit 2 ;;
esac
case "$ANALYZE" in ""|--analyze-only) ;; *) echo "$0: unknown option '$ANALYZE': --analyze-only or nothing" >&2; exit 2 ;; esac

JUDGE="--judge-device $DEVICE $JUDGE_TINY"
JUDGE_ARMS=("judge_oracle=judge --judge-kind oracle $JUDGE" "judge_embedding=judge --judge-kind embedding $JUDGE"
  "ellm_oracle=judge --judge-mode ellm --judge-kind oracle $JUDGE"
  "ellm_embedding=judge --judge-mode ellm --judge-kind embedding $JUDGE")
ARMS=6
status=0

# one grid through `explore bench`, its judge/* scalars, and the check that every planned run has its row
study() {  # name, then explore bench's arguments
  local name=$1; shift
  python -m explore bench "$@" --seeds "${SEEDS[@]}" --jobs "$JOBS" --root "$ROOT/$name" --out "${OUT}_$name" $ANALYZE
  python benchmarks/judge_study_scalars.py "$ROOT/$name" "${OUT}_${name}_judge.csv"
  local rows
  rows=$(python -c "import csv, sys; print(sum(1 for _ in csv.DictReader(open(sys.argv[1]))))" "${OUT}_${name}_runs.csv" 2>/dev/null || echo 0)
  if [[ "$rows" -ne $((ARMS * ${#SEEDS[@]})) ]]; then
    echo "$name: $rows of $((ARMS * ${#SEEDS[@]})) runs have a row in ${OUT}_${name}_runs.csv; see $ROOT/$name/*/train.log" >&2
    status=1
  fi
}

if [[ "$WHICH" == both || "$WHICH" == all || "$WHICH" == keyroom ]]; then
  study keyroom --tasks MiniHack-KeyRoom-S5-v0 --preset minihack --total-timesteps "$KEYROOM_STEPS" \
    "--common=$KEYROOM_COMMON --device $DEVICE" \
    --methods ppo=none "count_e_message=count_e --state-key message" "${JUDGE_ARMS[@]}"
fi
if [[ "$WHICH" == both || "$WHICH" == all || "$WHICH" == text ]]; then
  study text_unlock --trainer text --tasks BabyAI-Text-UnlockLocal-v0 --total-timesteps "$TEXT_TURNS" \
    "--common=$TEXT_COMMON --device $DEVICE" \
    --methods ppo=none count_e=count_e "${JUDGE_ARMS[@]}"
fi
if [[ "$WHICH" == all || "$WHICH" == multiroom ]]; then
  study multiroom --tasks MiniGrid-MultiRoom-N4-S5-v0 --preset minigrid-fast --total-timesteps "$MULTIROOM_STEPS" \
    "--common=$MULTIROOM_COMMON --device $DEVICE" \
    --methods ppo=none count_e=count_e "${JUDGE_ARMS[@]}"
fi
exit $status
