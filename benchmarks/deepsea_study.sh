#!/bin/bash
# The DeepSea study (benchmarks/deepsea_study.md), one training process at a time (the 2-core CPU), the headline pair first. Rerunning it skips finished runs and resumes killed ones. N=20 shares the sweep's root: its seeds 1-2 of the chosen coefficients are the sweep's runs (same commands).
cd "$(dirname "$0")/.."  # the repository root
M=("ppo=none" "count0.3=count --int-coef 0.3" "rnd1=rnd --int-coef 1" "e3b1=e3b --int-episodic --int-coef 1" "noveld1=noveld --int-coef 1")
n20() { nice -n 10 python -m explore bench --tasks DeepSea-N20-v0 --preset deepsea --seeds 1 2 3 4 5 --total-timesteps 100000 --jobs 1 \
  --root runs/bench/deepsea_sweep --out benchmarks/deepsea_n20 --methods "$@"; }
other() { size=$1; shift; nice -n 10 python -m explore bench --tasks DeepSea-N$size-v0 --preset deepsea --seeds 1 2 3 4 5 --budget-episodes 4730 --jobs 1 \
  --root runs/bench/deepsea_study --out benchmarks/deepsea_n$size --methods "$@"; }
other 30 "${M[@]:0:2}"
other 10 "${M[@]:0:2}"
n20 "${M[@]}"
other 10 "${M[@]}"
# N=30 again at bsuite's own budget, 10,000 episodes (the 4,730-episode budget above found nothing)
nice -n 10 python -m explore bench --tasks DeepSea-N30-v0 --preset deepsea --seeds 1 2 3 4 5 --budget-episodes 10000 --jobs 1 \
  --root runs/bench/deepsea_study_10k --out benchmarks/deepsea_n30_10k --methods "${M[@]:1:1}" "${M[@]:0:1}"
# Follow-up (study page sections 2a, 2b): N=30 at 10,000 episodes, a 2-seed count-bonus sweep, then count0.1 and PPO on 5 seeds
S30() { nice -n 10 python -m explore bench --tasks DeepSea-N30-v0 --preset deepsea --budget-episodes 10000 --jobs 1 \
  --root runs/bench/deepsea30_sweep --out benchmarks/deepsea_n30_sweep "$@"; }
S30 --seeds 1 2 --methods "count0.1=count --int-coef 0.1" "count0.3ig999=count --int-coef 0.3 --int-gamma 0.999" \
  "count0.1ig999=count --int-coef 0.1 --int-gamma 0.999" "count0.3ent0=count --int-coef 0.3 --ent-coef 0"
S30 --seeds 1 2 --methods "ppo=none"
S30 --seeds 3 4 5 --methods "count0.1=count --int-coef 0.1"
S30 --seeds 3 4 5 --methods "ppo=none"
S30 --seeds 1 2 3 4 5 --analyze-only --methods "ppo=none" "count0.1=count --int-coef 0.1" "count0.3ig999=count --int-coef 0.3 --int-gamma 0.999" \
  "count0.1ig999=count --int-coef 0.1 --int-gamma 0.999" "count0.3ent0=count --int-coef 0.3 --ent-coef 0"
# RND at N=20: does a larger coefficient or a slower predictor find the treasure? (per-cell errors: benchmarks/deepsea_rnd_cells.py)
nice -n 10 python -m explore bench --tasks DeepSea-N20-v0 --preset deepsea --seeds 1 2 --total-timesteps 100000 --jobs 1 \
  --root runs/bench/deepsea_rnd --out benchmarks/deepsea_rnd_n20 \
  --methods "rnd30=rnd --int-coef 30" "rnd1up0.02=rnd --int-coef 1 --update-proportion 0.02"
