#!/bin/bash
# DeepSea N=30 follow-up (helper deepsea, 2026-12-03 16:20-18:30 UTC; benchmarks/deepsea_study.md section 2c):
# a 2-seed sweep at a fixed budget of 20,000 episodes (twice bsuite's 10,000; 619,520 steps at N=30).
# The runs were started one bench call at a time in this order (the last two concurrently, as two --jobs 1 chains).
S() { nice -n 15 python -m explore bench --tasks DeepSea-N30-v0 --preset deepsea --budget-episodes 20000 --jobs 1 \
  --root runs/bench/ds30_sweep20k --out benchmarks/deepsea_n30_sweep20k --seeds 1 2 "$@"; }
S --methods "count0.1=count --int-coef 0.1"
S --methods "count0.1noadvnorm=count --int-coef 0.1 --no-norm-adv"
S --methods "count1noadvnorm=count --int-coef 1 --no-norm-adv"
S --methods "count0.3noadvnorm=count --int-coef 0.3 --no-norm-adv"
# the table of all of them (rows benchmarks/deepsea_n30_sweep20k_runs.csv):
S --analyze-only --methods "count0.1=count --int-coef 0.1" "count0.1noadvnorm=count --int-coef 0.1 --no-norm-adv" \
  "count1noadvnorm=count --int-coef 1 --no-norm-adv" "count0.3noadvnorm=count --int-coef 0.3 --no-norm-adv"
# the diagnosis of a run (visits of the diagonal cells, the policy's P(right) along the treasure path):
#   python benchmarks/deepsea_frontier.py runs/bench/ds30_sweep20k/DeepSea-N30__count0.1__1
