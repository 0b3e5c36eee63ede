#!/usr/bin/env bash
cd "$(dirname "$0")/../.."; PY=$PWD/.venv/bin/python; D=/tmp/demo15; rm -rf $D; mkdir -p $D/elsewhere
S="--config.data.name=digits --config.model.name=mlp --config.train.batch_size=32 --config.tensorboard=False"
run() { echo "\$ launch.py $*" | cut -c1-160; $PY launch.py "$@" 2>&1 | grep -E "error:|Warning|final:|stopped at" | sed 's/^.*\] //' | cut -c1-330; echo "  -> exit ${PIPESTATUS[0]}"; }
run --config configs/default.py --workdir $D/a --config.algorithm.moving_rat=0.1
run --config configs/default.py --workdir $D/a --config.algorithm.period=0
run --config /nonexist/c.py --workdir $D/a
run --config configs/default.py --workdir $D/a --config.data.name=digits
run --config configs/default.py --workdir $D/a --config.algorithm.moving_rate=0.9
run --config configs/default.py --workdir $D/a --config.data.name=mnist --config.model.name=mlp --config.data.data_dir=$D/empty
echo "\$ (cd $D/elsewhere && easgd-launch --config <repo>/configs/lsgd.py ...)"
(cd $D/elsewhere && timeout 300 $(dirname $PY)/easgd-launch --config $OLDPWD/configs/lsgd.py --workdir $D/lsgd $S --config.train.num_steps=200 --config.train.eval_every=100 --config.checkpoint.every=100 2>&1 | grep -E "error|final:|leader_per_round" | sed 's/^.*\] //' | cut -c1-240; echo "  -> exit ${PIPESTATUS[0]}")
python3 -c "import json; print('  config.json launch:', json.load(open('$D/lsgd/config.json'))['launch'])" | cut -c1-300
echo "\$ launch.py ... (SIGINT after the first checkpoint)"
$PY launch.py --config configs/default.py --workdir $D/sig $S --config.train.num_steps=100000 --config.train.eval_every=20 --config.checkpoint.every=20 > $D/sig.log 2>&1 & P=$!
while [ ! -d $D/sig/checkpoints/20 ]; do sleep 0.5; done; kill -INT $P; wait $P; echo "  -> exit $? ; $(grep -o 'stopped at step.*' $D/sig.log | head -1)"
