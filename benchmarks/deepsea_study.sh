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
