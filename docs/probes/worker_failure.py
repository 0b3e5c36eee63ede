"""A worker killed mid-run (the test hook: worker 1 raises at its local step 7) in the threads
executor, with ``asynchrony.on_worker_failure`` = continue or stop. From the repository root:

    PYTHONPATH=. .venv/bin/python docs/probes/worker_failure.py OUT continue|stop
"""

import json
import os
import shutil
import sys

sys.path.insert(0, "tests")
import conftest  # noqa: E402, F401  (8 simulated devices)
from test_async_train import small  # noqa: E402

from easgd_jax.training import asynchronous  # noqa: E402


def hook(index: int, step: int) -> None:
    if index == 1 and step == 7:
        raise ValueError("worker boom")


def main(out: str, mode: str) -> None:
    shutil.rmtree(out, ignore_errors=True)
    config = small("async_easgd", timeout_s=120.0)
    config.executor = "threads"
    config.train.num_steps, config.train.eval_every, config.checkpoint.every = 40, 10, 20
    config.asynchrony.on_worker_failure = mode
    asynchronous.worker_hook = hook
    try:
        final = asynchronous.train_and_evaluate(config, out)
        with open(os.path.join(out, "final_metrics.json")) as f:
            saved = json.load(f)
        print(f"[{mode}] finished: test_accuracy {final['test_accuracy']:.4f}, exchanges "
              f"{final['exchanges']}, ledger_discrepancy {final['ledger_discrepancy']:.2e}, "
              f"worker_steps {saved['worker_steps']}, lost_workers {saved.get('lost_workers')}")
    except Exception as e:  # "stop": the error names the worker
        print(f"[{mode}] {type(e).__name__}: {e}")
    folder = os.path.join(out, "checkpoints")
    print(f"[{mode}] checkpoints: {sorted(os.listdir(folder)) if os.path.isdir(folder) else []}")
    if mode == "stop":
        asynchronous.worker_hook = None
        final = asynchronous.train_and_evaluate(config, out)
        print(f"[stop] re-run resumed: test_accuracy {final['test_accuracy']:.4f}, exchanges "
              f"{final['exchanges']}, ledger_discrepancy {final['ledger_discrepancy']:.2e}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
