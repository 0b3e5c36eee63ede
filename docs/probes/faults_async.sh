#!/bin/bash
# usage: docs/probes/faults_async.sh CODE_DIR OUT_DIR   (runs launch.py of CODE_DIR)
CODE=$1; OUT=$2; rm -rf $OUT; mkdir -p $OUT
PY=$(cd "$(dirname "$0")/../.." && pwd)/.venv/bin/python
FLAGS="--config.data.name=digits --config.model.name=mlp --config.num_workers=3 --config.algorithm.moving_rate=0.3 --config.train.batch_size=32 --config.train.eval_every=10 --config.checkpoint.every=20 --config.tensorboard=False --config.train.num_steps=400"
cd $CODE
waitstep() { for i in $(seq 1 1200); do [ -f $1/metrics.jsonl ] && [ "$(tail -1 $1/metrics.jsonl | $PY -c 'import json,sys; print(json.loads(sys.stdin.read() or "{\"step\":0}")["step"] >= '$2')' 2>/dev/null)" = True ] && return; sleep 0.1; done; }
steps() { $PY -c "import json;r=[json.loads(l)['step'] for l in open('$1/metrics.jsonl')];print(len(r), 'lines:', r[:4], '...', r[-3:])"; }
cmp() { $PY -c "
import json; T=('steps_per_second','wall_time_s','compile_time_s')
a,b=[{k:v for k,v in json.load(open(f'{w}/final_metrics.json')).items() if k not in T} for w in ('$1','$2')]
print('  final_metrics equal to a straight run (timing aside):', a==b, {k:a[k] for k in ('test_accuracy','exchanges','ledger_discrepancy','staleness_mean') if k in a})
if a!=b: print('  straight:', {k:b[k] for k in ('test_accuracy','exchanges','ledger_discrepancy') if k in b})"; }
for ex in simulated_async threads; do
  W=$OUT/kill9_$ex
  $PY launch.py --config configs/async_eamsgd.py --workdir=$W --config.executor=$ex $FLAGS > $W.log1 2>&1 &
  PID=$!; waitstep $W 50; kill -9 $PID; wait $PID 2>/dev/null
  echo "[$ex] kill -9 of launch.py at $(tail -1 $W/metrics.jsonl | cut -c1-13); checkpoints: $(ls $W/checkpoints 2>/dev/null | tr '\n' ' ')"
  timeout 300 $PY launch.py --config configs/async_eamsgd.py --workdir=$W --config.executor=$ex $FLAGS > $W.log2 2>&1; echo "[$ex] same command again: exit $?; $(grep -h -o 'resumed from the checkpoint at step [0-9]*' $W.log2 | head -1)"
  echo "  metrics.jsonl: $(steps $W)"
  timeout 300 $PY launch.py --config configs/async_eamsgd.py --workdir=$OUT/straight_$ex --config.executor=$ex $FLAGS > /dev/null 2>&1
  cmp $W $OUT/straight_$ex
done
for ex in simulated_async threads; do
  W=$OUT/sigterm_$ex
  $PY launch.py --config configs/async_eamsgd.py --workdir=$W --config.executor=$ex $FLAGS > $W.log 2>&1 &
  PID=$!; waitstep $W 30; kill -TERM $PID; wait $PID; RC=$?
  echo "[$ex] SIGTERM: exit $RC; $(grep -h -o 'signal 15 received.*\|Traceback.*' $W.log | head -1 | cut -c1-110); checkpoints: $(ls $W/checkpoints 2>/dev/null | tr '\n' ' ')"
done
for ex in simulated_async threads; do
  W=$OUT/nan_$ex
  timeout 300 $PY launch.py --config configs/async_eamsgd.py --workdir=$W --config.executor=$ex $FLAGS --config.algorithm.learning_rate=1e30 > $W.log 2>&1; RC=$?
  echo "[$ex] NaN (lr 1e30): exit $RC; $(grep -h -o 'NonFiniteError:.*\|AssertionError:.*' $W.log | tail -1 | cut -c1-230); final_metrics: $(grep -h -o '"test_loss": [^,]*' $W/final_metrics.json 2>/dev/null)"
done
