#!/bin/bash
# DeepSea N=30 follow-up (helper deepsea, 2026-12-03 16:20-18:10 UTC; benchmarks/deepsea_study.md section 2c):
# a fixed budget of 20,000 episodes per run (twice bsuite's 10,000; 619,520 steps at N=30).
# In the session the bench calls ran in this order, at most two --jobs 1 chains at once, each with its own
# --out (merged into benchmarks/deepsea_n30_sweep20k_runs.csv afterwards); run one after another they
# write the same rows. count1noadvnorm ran seed 1 only.
S() { nice -n 15 python -m explore bench --tasks DeepSea-N30-v0 --preset deepsea --budget-episodes 20000 --jobs 1 \
  --root runs/bench/ds30_sweep20k --out benchmarks/deepsea_n30_sweep20k "$@"; }
C01="count0.1=count --int-coef 0.1"
C01N="count0.1noadvnorm=count --int-coef 0.1 --no-norm-adv"
C1N="count1noadvnorm=count --int-coef 1 --no-norm-adv"
C03N="count0.3noadvnorm=count --int-coef 0.3 --no-norm-adv"
PPON="ppo_noadvnorm=none --no-norm-adv"
# sweep, 2 seeds (chosen: count0.3noadvnorm, after its seed 1)
S --seeds 1 2 --methods "$C01"
S --seeds 1 2 --methods "$C01N"
S --seeds 1 --methods "$C1N"
S --seeds 1 2 --methods "$C03N"
# main runs: the chosen setting on seeds 3-5, plain PPO with the same flag on seeds 1-5 (equal steps)
S --seeds 3 4 5 --methods "$C03N"
S --seeds 1 2 3 4 5 --methods "$PPON"
# the table of all of them
S --seeds 1 2 3 4 5 --analyze-only --methods "$C01" "$C01N" "$C1N" "$C03N" "$PPON"
# the diagnosis of a run (visits of the diagonal cells, the policy's P(right) along the treasure path):
#   python benchmarks/deepsea_frontier.py runs/bench/ds30_sweep20k/DeepSea-N30__count0.1__1
