#!/bin/bash
# The MiniGrid hard-exploration study (benchmarks/minigrid_study.md, issue 12), one training process at a
# time (the 2-core shared CPU). Every stage is an `explore bench` call: rerunning it skips finished runs and
# resumes killed ones, so a later session continues with the same command.
#
#   benchmarks/minigrid_study.sh pilot      # done 2026-12-03: 500k / 1M steps, seed 1, which task and bonus
#   benchmarks/minigrid_study.sh sweep      # coefficients: 3 values x 2 seeds per bonus, MultiRoom-N4-S5, 1M steps
#   benchmarks/minigrid_study.sh pilot2     # the candidates not piloted yet: PPO and NovelD, seed 1, 2M steps
#   benchmarks/minigrid_study.sh pos        # done 2026-12-03: position counts/gates (envs/minigrid.py agent_pos), 1M
#   benchmarks/minigrid_study.sh diag       # 2026-12-03 (2nd session): variants of NovelD-pos, 2 seeds x 1M
#   benchmarks/minigrid_study.sh pilot3     # DoorKey-8x8 and KeyCorridorS3R1: PPO and three bonuses, seed 1, 1M
#   benchmarks/minigrid_study.sh doorkey8   # DoorKey-8x8: PPO and NovelD-pos 0.03, 5 seeds x 1M
#   benchmarks/minigrid_study.sh pilot4     # KeyCorridorS3R2/S3R3, ObstructedMaze-1Dl, DoorKey-16x16: PPO, NovelD-pos
#   benchmarks/minigrid_study.sh keycorridor  # KeyCorridorS3R2: PPO and NovelD-pos 0.03, 5 seeds x 1M
#   benchmarks/minigrid_study.sh obstructed   # ObstructedMaze-1Dl: PPO and NovelD-pos 0.03, 5 seeds x 1M
#   benchmarks/minigrid_study.sh rows3      # (RND, E3B x RND done) the other bonuses on the three qualifying tasks, 5 seeds x 1M
#   benchmarks/minigrid_study.sh lstm       # MultiRoom-N4-S5 with an LSTM policy: PPO and NovelD-pos, 2 seeds x 1M
#   benchmarks/minigrid_study.sh table1m    # every bonus and E3B x RND, 5 seeds x 1M (the CPU-scale table)
#   benchmarks/minigrid_study.sh baseline   # plain PPO, 5 seeds x 5M steps, on the main tasks (needs no sweep)
#   benchmarks/minigrid_study.sh main       # every bonus and e3b*rnd, 5 seeds x 5M: set the chosen coefficients first
#   benchmarks/minigrid_study.sh analyze    # tables and curves from the rows that have landed
#
# `nohup nice -n 15 benchmarks/minigrid_study.sh sweep pilot2 baseline > runs/bench/minigrid_study.log 2>&1 &`
# runs stages in order. Rows land in benchmarks/minigrid_<stage or task>_runs.csv as each run finishes.

cd "$(dirname "$0")/.."  # the repository root
MR4=MiniGrid-MultiRoom-N4-S5-v0
bench() { python -m explore bench --preset minigrid-fast --jobs 1 "$@"; }

# Bonuses as each paper runs them on top of `--preset minigrid-fast` (whose stream is episodic by default):
# count_e, E3B and NovelD episodic (NovelD's code adds its reward to the episodic extrinsic one), RND
# non-episodic. count_e is raw 1/sqrt(N_e); RND, NovelD and E3B are divided by a running std.
SWEEP=("noveld1=noveld --int-episodic --int-coef 1" "count_e0.3=count_e --int-episodic --int-coef 0.3"
  "rnd1=rnd --no-int-episodic --int-coef 1"
  "noveld0.3=noveld --int-episodic --int-coef 0.3" "noveld0.1=noveld --int-episodic --int-coef 0.1"
  "count_e0.1=count_e --int-episodic --int-coef 0.1" "count_e0.03=count_e --int-episodic --int-coef 0.03"
  "rnd0.3=rnd --no-int-episodic --int-coef 0.3" "rnd0.1=rnd --no-int-episodic --int-coef 0.1")
# (values below the pilot's 1, not above: NovelD at 1 found the goal but its success fell back to ~0.5 %)

# The main tasks (chosen by the pilot; see the study page) and their budget: the issue's cap, 5M steps.
TASKS=("$MR4")
BUDGET=5000000
# Chosen after the sweep (edit before `main`): one label=flags per bonus, then the product.
MAIN=("ppo=none" "noveld0.03_pos=noveld --int-episodic --int-coef 0.03 --noveld-state-key agent_pos"
  "noveld1=noveld --int-episodic --int-coef 1" "count_e0.3=count_e --int-episodic --int-coef 0.3"
  "rnd1=rnd --no-int-episodic --int-coef 1" "e3b1=e3b --int-episodic --int-coef 1"
  "e3bxrnd1=e3b*rnd --int-episodic --int-coef 1")

main_task() {  # one bench per task: root runs/bench/minigrid_main, rows benchmarks/minigrid_<task>_runs.csv
  task=$1; shift
  short=$(echo "${task#MiniGrid-}" | sed 's/-v0$//' | tr 'A-Z-' 'a-z_')
  bench --tasks "$task" --seeds 1 2 3 4 5 --total-timesteps $BUDGET --root runs/bench/minigrid_main \
    --out "benchmarks/minigrid_$short" "$@"
}

for stage in "$@"; do
  case $stage in
  pilot)
    bench --seeds 1 --total-timesteps 500000 --root runs/bench/minigrid_pilot --out benchmarks/minigrid_pilot \
      --tasks $MR4 MiniGrid-KeyCorridorS3R2-v0 MiniGrid-KeyCorridorS3R3-v0 \
      --methods ppo=none "count_e0.05=count_e --int-episodic --int-coef 0.05"
    # pilot B (1M steps) shares the sweep's root: its seed-1 runs are the sweep's
    bench --seeds 1 --total-timesteps 1000000 --root runs/bench/minigrid_pilot_b --out benchmarks/minigrid_pilot_b \
      --tasks $MR4 --methods "${SWEEP[@]:0:3}"
    ;;
  pilot2)
    bench --seeds 1 --total-timesteps 2000000 --root runs/bench/minigrid_pilot2 --out benchmarks/minigrid_pilot2 \
      --tasks MiniGrid-ObstructedMaze-1Dlh-v0 MiniGrid-MultiRoom-N6-v0 MiniGrid-DoorKey-16x16-v0 \
      --methods ppo=none "${SWEEP[0]}"
    ;;
  sweep)
    bench --seeds 1 2 --total-timesteps 1000000 --root runs/bench/minigrid_pilot_b --out benchmarks/minigrid_sweep \
      --tasks $MR4 --methods "${SWEEP[@]}"
    ;;
  pos)  # study page sections 4 and 5
    bench --seeds 1 --total-timesteps 1000000 --root runs/bench/minigrid_pos --out benchmarks/minigrid_pos_pilot \
      --tasks $MR4 --methods "count_e_pos0.1=count_e --int-episodic --int-coef 0.1 --state-key agent_pos" \
      "count_pos0.1=count --no-int-episodic --int-coef 0.1 --state-key agent_pos" "e3b1=e3b --int-episodic --int-coef 1" \
      "noveld1_pos=noveld --int-episodic --int-coef 1 --noveld-state-key agent_pos" \
      "count_e_pos0.3=count_e --int-episodic --int-coef 0.3 --state-key agent_pos"
    bench --seeds 1 2 --total-timesteps 1000000 --root runs/bench/minigrid_pos --out benchmarks/minigrid_pos_noveld \
      --tasks $MR4 --methods "noveld0.3_pos=noveld --int-episodic --int-coef 0.3 --noveld-state-key agent_pos" \
      "noveld0.1_pos=noveld --int-episodic --int-coef 0.1 --noveld-state-key agent_pos" \
      "noveld0.03_pos=noveld --int-episodic --int-coef 0.03 --noveld-state-key agent_pos"
    bench --seeds 1 2 --total-timesteps 1000000 --root runs/bench/minigrid_pos --out benchmarks/minigrid_pos_ppo \
      --tasks $MR4 --methods ppo=none
    ;;
  baseline)
    for task in "${TASKS[@]}"; do main_task "$task" --methods "${MAIN[0]}"; done
    ;;
  main)
    for task in "${TASKS[@]}"; do main_task "$task" --methods "${MAIN[@]}"; done
    ;;
  diag)  # study page section 6: why NovelD-pos plateaus at ~12 %; 2 seeds, 1M, two runs at a time
    python -m explore bench --preset minigrid-fast --jobs 2 --seeds 1 2 --total-timesteps 1000000 \
      --root runs/bench/minigrid_pos --out benchmarks/minigrid_diag --tasks $MR4 --methods \
      "noveld0.01_pos=noveld --int-episodic --int-coef 0.01 --noveld-state-key agent_pos" \
      "noveld0.03_pos_noadvnorm=noveld --int-episodic --int-coef 0.03 --noveld-state-key agent_pos --no-norm-adv" \
      "noveldraw0.05_pos=noveld --int-episodic --int-coef 0.05 --reward-norm none --noveld-state-key agent_pos" \
      "ppo_noadvnorm=none --no-norm-adv"
    ;;
  pilot3)  # study page section 7: smaller candidates where plain PPO may fail, seed 1, 1M, two at a time
    python -m explore bench --preset minigrid-fast --jobs 2 --seeds 1 --total-timesteps 1000000 \
      --root runs/bench/minigrid_pilot3 --out benchmarks/minigrid_pilot3 \
      --tasks MiniGrid-DoorKey-8x8-v0 MiniGrid-KeyCorridorS3R1-v0 --methods "ppo=none" \
      "noveld0.03_pos=noveld --int-episodic --int-coef 0.03 --noveld-state-key agent_pos" \
      "count_e_pos0.1=count_e --int-episodic --int-coef 0.1 --state-key agent_pos" \
      "rnd1=rnd --no-int-episodic --int-coef 1"
    ;;
  doorkey8)  # study page section 8: DoorKey-8x8, PPO against NovelD-pos 0.03, 5 seeds x 1M (pilot3 seed 1 reused)
    python -m explore bench --preset minigrid-fast --jobs 2 --seeds 1 2 3 4 5 --total-timesteps 1000000 \
      --root runs/bench/minigrid_pilot3 --out benchmarks/minigrid_doorkey8 --tasks MiniGrid-DoorKey-8x8-v0 \
      --methods "ppo=none" "noveld0.03_pos=noveld --int-episodic --int-coef 0.03 --noveld-state-key agent_pos"
    ;;
  pilot4)  # study page section 10: NovelD-pos 0.03 on four more candidates, seed 1, 1M, two at a time
    python -m explore bench --preset minigrid-fast --jobs 2 --seeds 1 --total-timesteps 1000000 \
      --root runs/bench/minigrid_pilot4 --out benchmarks/minigrid_pilot4 \
      --tasks MiniGrid-KeyCorridorS3R2-v0 MiniGrid-KeyCorridorS3R3-v0 MiniGrid-ObstructedMaze-1Dl-v0 MiniGrid-DoorKey-16x16-v0 \
      --methods "ppo=none" "noveld0.03_pos=noveld --int-episodic --int-coef 0.03 --noveld-state-key agent_pos"
    ;;
  keycorridor)  # study page section 10: KeyCorridorS3R2, PPO against NovelD-pos 0.03, 5 seeds x 1M (pilot4 seed 1 reused)
    python -m explore bench --preset minigrid-fast --jobs 2 --seeds 1 2 3 4 5 --total-timesteps 1000000 \
      --root runs/bench/minigrid_pilot4 --out benchmarks/minigrid_keycorridor_s3r2 --tasks MiniGrid-KeyCorridorS3R2-v0 \
      --methods "ppo=none" "noveld0.03_pos=noveld --int-episodic --int-coef 0.03 --noveld-state-key agent_pos"
    ;;
  obstructed)  # study page section 10: ObstructedMaze-1Dl, the same pair, 5 seeds x 1M (pilot4 seed 1 reused)
    python -m explore bench --preset minigrid-fast --jobs 2 --seeds 1 2 3 4 5 --total-timesteps 1000000 \
      --root runs/bench/minigrid_pilot4 --out benchmarks/minigrid_obstructedmaze_1dl --tasks MiniGrid-ObstructedMaze-1Dl-v0 \
      --methods "ppo=none" "noveld0.03_pos=noveld --int-episodic --int-coef 0.03 --noveld-state-key agent_pos"
    ;;
  rows3)  # every other bonus on the three tasks of section 10, 5 seeds x 1M (as section 9's rows);
    # RND and E3B x RND ran 2026-12-03 (section 10b), count_e-pos and E3B not yet
    python -m explore bench --preset minigrid-fast --jobs 2 --seeds 1 2 3 4 5 --total-timesteps 1000000 \
      --root runs/bench/minigrid_rows3 --out benchmarks/minigrid_rows3 \
      --tasks MiniGrid-DoorKey-8x8-v0 MiniGrid-KeyCorridorS3R2-v0 MiniGrid-ObstructedMaze-1Dl-v0 --methods \
      "count_e_pos0.1=count_e --int-episodic --int-coef 0.1 --state-key agent_pos" \
      "rnd1=rnd --no-int-episodic --int-coef 1" "e3b1=e3b --int-episodic --int-coef 1" \
      "e3bxrnd1=e3b*rnd --int-episodic --int-coef 1"
    ;;
  lstm)  # study page section 11: the recurrent-policy hypothesis of section 6, 2 seeds x 1M, two at a time
    python -m explore bench --preset minigrid-fast --jobs 2 --seeds 1 2 --total-timesteps 1000000 \
      --root runs/bench/minigrid_pos --out benchmarks/minigrid_lstm --tasks $MR4 --methods "ppo_lstm=none --use-lstm" \
      "noveld0.03_pos_lstm=noveld --int-episodic --int-coef 0.03 --noveld-state-key agent_pos --use-lstm"
    ;;
  table1m)  # study page section 9: the row of every bonus and E3B x RND at the CPU's scale, 5 seeds x 1M.
    # Coefficients: the best success AUC of each bonus's sweep/pilot rows (sections 2, 4-6); PPO and
    # NovelD-pos 0.03 are section 5's runs (same root, skipped).
    python -m explore bench --preset minigrid-fast --jobs 2 --seeds 1 2 3 4 5 --total-timesteps 1000000 \
      --root runs/bench/minigrid_pos --out benchmarks/minigrid_table_1m --tasks $MR4 --methods "ppo=none" \
      "noveld0.03_pos=noveld --int-episodic --int-coef 0.03 --noveld-state-key agent_pos" \
      "count_e_pos0.1=count_e --int-episodic --int-coef 0.1 --state-key agent_pos" \
      "rnd1=rnd --no-int-episodic --int-coef 1" "e3b1=e3b --int-episodic --int-coef 1" \
      "e3bxrnd1=e3b*rnd --int-episodic --int-coef 1"
    ;;
  analyze)
    bench --seeds 1 --total-timesteps 2000000 --root runs/bench/minigrid_pilot2 --out benchmarks/minigrid_pilot2 \
      --tasks MiniGrid-ObstructedMaze-1Dlh-v0 MiniGrid-MultiRoom-N6-v0 MiniGrid-DoorKey-16x16-v0 \
      --methods ppo=none "${SWEEP[0]}" --analyze-only
    bench --seeds 1 2 --total-timesteps 1000000 --root runs/bench/minigrid_pilot_b --out benchmarks/minigrid_sweep \
      --tasks $MR4 --methods "${SWEEP[@]}" --analyze-only
    for task in "${TASKS[@]}"; do main_task "$task" --methods "${MAIN[@]}" --analyze-only; done
    ;;
  *) echo "unknown stage $stage: pilot, pilot2, sweep, pos, diag, pilot3, doorkey8, pilot4, keycorridor, obstructed, rows3, lstm, table1m, baseline, main or analyze" >&2; exit 2 ;;
  esac
done
