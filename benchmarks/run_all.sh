#!/usr/bin/env bash
# Reruns every benchmark behind benchmarks/RESULTS.md, one after the other (never in
# parallel: they would time each other). Tables go to stdout and to $OUT (default
# /tmp/easgd_benchmarks). Each timed script first waits (up to --wait seconds) for the
# 1-minute load average to fall to 2.5; the load is printed next to each table.
#
#   bash benchmarks/run_all.sh            # from the repository root
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-/tmp/easgd_benchmarks}
WAIT=${WAIT:-900}
mkdir -p "$OUT"

run() {
  local name=$1
  shift
  echo "+ $PY $*" | tee "$OUT/$name.md"
  "$PY" "$@" 2> "$OUT/$name.err" | tee -a "$OUT/$name.md"
}

run comm_volume benchmarks/comm_volume.py
run step_cost_cnn1d_p4 benchmarks/step_cost.py --wait "$WAIT"
run step_cost_cnn1d_p1 benchmarks/step_cost.py --workers 1 --wait "$WAIT"
run step_cost_mlp_p4 benchmarks/step_cost.py --model mlp --wait "$WAIT"
run step_cost_cnn1d_p4_vmap benchmarks/step_cost.py --devices 1 --wait "$WAIT"
run step_cost_cifar_cnn_p4 benchmarks/step_cost.py --model cifar_cnn --batch-size 16 \
  --steps 40 --periods 1 4 10 --repetitions 8 --wait "$WAIT"
run scaling_cnn1d benchmarks/scaling.py --wait "$WAIT"
run scaling_mlp benchmarks/scaling.py --model mlp --steps 20 --wait "$WAIT"
run scaling_cifar_cnn benchmarks/scaling.py --model cifar_cnn --batch-size 16 --steps 10 \
  --workers 1 2 4 --repetitions 5 --wait "$WAIT"
run local_reduce benchmarks/local_reduce.py
run loop_overhead_devices -m benchmarks.loop_overhead --devices 4 --batch_sizes 128 32 --reps 40
run loop_overhead_vmap -m benchmarks.loop_overhead --devices 1 --batch_sizes 128 32 --reps 20
run profile_step_devices -m benchmarks.profile_step --devices 4
run profile_step_vmap -m benchmarks.profile_step --devices 1
run unrolled_workers -m benchmarks.unrolled_workers --reps 8
if "$PY" -c "import torch" 2> /dev/null; then  # the optional bench extra
  run vs_pytorch -m benchmarks.vs_pytorch --reps 3 --alone_threads 1 2
  run lm_speed -m benchmarks.lm_speed
else
  run lm_speed -m benchmarks.lm_speed --no-torch
fi
