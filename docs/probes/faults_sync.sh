#!/usr/bin/env bash
# Issue 14, synchronous rows, as an operator meets them (launch.py, digits + mlp).
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
L="$PY launch.py --config configs/default.py --config.data.name=digits --config.model.name=mlp --config.train.batch_size=32 --config.train.eval_every=20 --config.checkpoint.every=20 --config.tensorboard=False --config.train.num_steps=60"
D=/tmp/demo14; rm -rf $D; mkdir -p $D
final() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print({k: d[k] for k in ('step','test_accuracy','test_loss')})" $1/final_metrics.json; }
echo "== straight run"; $L --workdir=$D/straight 2>/dev/null; echo "rc=$?"; final $D/straight
echo "== bit flip in the latest checkpoint (60), re-run"
$L --workdir=$D/flip 2>/dev/null; rm $D/flip/final_metrics.json
F=$(ls -S $D/flip/checkpoints/60/state/ocdbt.process_0/d/* | head -1)
python3 -c "import os,sys; f=sys.argv[1]; n=os.path.getsize(f)//2; b=open(f,'rb').read(); open(f,'r+b').write(b[:n]+bytes([b[n]^0x10])+b[n+1:])" $F
$L --workdir=$D/flip 2>&1 | grep -E "cannot be used|resumed from" | sed 's/^.*\] //' | cut -c1-260; echo "rc=${PIPESTATUS[0]}"; final $D/flip
cmp <(python3 -c "import json;d=json.load(open('$D/straight/final_metrics.json'));print({k:v for k,v in d.items() if 'time' not in k and 'per_second' not in k})") <(python3 -c "import json;d=json.load(open('$D/flip/final_metrics.json'));print({k:v for k,v in d.items() if 'time' not in k and 'per_second' not in k})") && echo "final metrics equal to the straight run (timing aside)"
echo "== every checkpoint unreadable"
$L --workdir=$D/all 2>/dev/null; rm $D/all/final_metrics.json; cp $D/all/metrics.jsonl $D/metrics.before
for s in 20 40 60; do F=$(ls -S $D/all/checkpoints/$s/state/ocdbt.process_0/d/* | head -1); python3 -c "import os,sys; f=sys.argv[1]; n=os.path.getsize(f)//2; b=open(f,'rb').read(); open(f,'r+b').write(b[:n]+bytes([b[n]^0x10])+b[n+1:])" $F; done
$L --workdir=$D/all 2>&1 | grep "error:" | cut -c1-400; echo "rc=${PIPESTATUS[0]}"
cmp $D/metrics.before $D/all/metrics.jsonl && echo "metrics.jsonl unchanged"
echo "== two launches at once"
L2="${L/num_steps=60/num_steps=100000}"
$L2 --workdir=$D/two > $D/first.log 2>&1 & FIRST=$!
while [ ! -s $D/two/metrics.jsonl ]; do sleep 0.5; done
$L2 --workdir=$D/two 2>&1 | grep "error:" | cut -c1-300; echo "second rc=${PIPESTATUS[0]}"
kill -TERM $FIRST; wait $FIRST; echo "first rc=$? (stopped by SIGTERM)"
python3 -c "import json; s=[json.loads(l)['step'] for l in open('$D/two/metrics.jsonl')]; print('metrics.jsonl steps', s, 'in order, no duplicates:', s==sorted(set(s)))"
echo "== a cut last metrics line"
$L --workdir=$D/cut 2>/dev/null; rm $D/cut/final_metrics.json; rm -rf $D/cut/checkpoints/60
python3 -c "p='$D/cut/metrics.jsonl'; t=open(p).read(); open(p,'w').write(t[:-40])"
$L --workdir=$D/cut 2>&1 | grep -E "is cut|resumed from" | sed 's/^.*\] //' | cut -c1-200; echo "rc=${PIPESTATUS[0]}"
python3 -c "import json; print('steps', [json.loads(l)['step'] for l in open('$D/cut/metrics.jsonl')])"; final $D/cut
