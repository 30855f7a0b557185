#!/bin/bash
# DeepSea, the other bonuses without advantage normalization (second session of 2026-12-03;
# benchmarks/deepsea_study.md section 2d). The same budget and flag as section 2c (20,000 episodes,
# --no-norm-adv in every arm), two runs at a time. Rerunning skips finished runs.
cd "$(dirname "$0")/.."  # the repository root
B() { n=$1; shift; python -m explore bench --tasks DeepSea-N$n-v0 --preset deepsea --budget-episodes 20000 --jobs 2 \
  --root runs/bench/ds_noadvnorm_more --out benchmarks/deepsea_n${n}_20k_more "$@"; }
# 1. sweep at N=20, 2 seeds: RND and NovelD (global novelty, as in section 2) at 0.1 and 1
B 20 --seeds 1 2 --methods "rnd0.1noadvnorm=rnd --int-coef 0.1 --no-norm-adv" "rnd1noadvnorm=rnd --int-coef 1 --no-norm-adv" \
  "noveld0.1noadvnorm=noveld --int-coef 0.1 --no-norm-adv" "noveld1noadvnorm=noveld --int-coef 1 --no-norm-adv"
# 2. E3B (episodic, as its paper) at N=10, 5 seeds: section 2 found it below plain PPO there
B 10 --seeds 1 2 3 4 5 --methods "e3b1noadvnorm=e3b --int-episodic --int-coef 1 --no-norm-adv"
# 3. the sweep's choice per bonus (highest success AUC, as the MiniGrid study chooses): rnd1 and noveld1, 5 seeds
#    at N=20 (seeds 1-2 are the sweep's), then N=30
B 20 --seeds 1 2 3 4 5 --methods "rnd1noadvnorm=rnd --int-coef 1 --no-norm-adv" "noveld1noadvnorm=noveld --int-coef 1 --no-norm-adv"
B 30 --seeds 1 2 3 4 5 --methods "rnd1noadvnorm=rnd --int-coef 1 --no-norm-adv" "noveld1noadvnorm=noveld --int-coef 1 --no-norm-adv"
# 4. N=10 for the same two (so that every size has every method)
B 10 --seeds 1 2 3 4 5 --methods "rnd1noadvnorm=rnd --int-coef 1 --no-norm-adv" "noveld1noadvnorm=noveld --int-coef 1 --no-norm-adv"
