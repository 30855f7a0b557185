#!/bin/bash
# DeepSea N=30 follow-up (helper deepsea, 2026-12-03 16:20-18:20 UTC; benchmarks/deepsea_study.md section 2c):
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
# N=10 and N=20 at the same setting and budget (18:05-18:20 UTC; one bench call each, seeds 1-5, count's N=20 runs first)
for n in 20 10; do
  nice -n 15 python -m explore bench --tasks DeepSea-N$n-v0 --preset deepsea --budget-episodes 20000 --jobs 1 --seeds 1 2 3 4 5 \
    --root runs/bench/ds_noadvnorm --out benchmarks/deepsea_n${n}_20k --methods "$PPON" "$C03N"
done
# the scaling table and log-log plot of the two methods at the one setting and budget
python benchmarks/deepsea_study.py --runs benchmarks/deepsea_n10_20k_runs.csv benchmarks/deepsea_n20_20k_runs.csv \
  benchmarks/deepsea_n30_sweep20k_runs.csv --methods ppo_noadvnorm count0.3noadvnorm --out benchmarks/deepsea_study_20k
