"""The simulated cluster the sweeps' times are reported on (``config.cluster``, the cost model of
``easgd_jax/parallel/cluster.py``): the EASGD paper's setting, one GPU per worker training the
paper's CIFAR-10 net (Zhang, Choromanska & LeCun, NIPS 2015, arXiv 1412.6651, Section 5.1),
workers joined by 10 Gb/s Ethernet.

- ``compute_s_per_step = 0.010``: one batch-128 step of the paper's CIFAR net
  (``models.CifarCNN``, 28 x 28 x 3 crops) is 11.85 GFLOP forward and backward (XLA's cost
  analysis of the compiled gradient); at 1.2 TFLOP/s, about 28% of the 4.3 TFLOP/s float32
  peak of a Tesla K40-class GPU of the paper's time, it takes 10 ms. An assumption, stated:
  no GPU was measured.
- ``model_bytes = 1_407_784``: the CIFAR net's 351,946 float32 parameters. Each run's
  exchanges move the bytes its own algorithm's lowered program moves per parameter byte
  (the elastic difference and its checksums, bfloat16 or a fragment where set), scaled to
  this size: the MNIST-1D runs' steps and exchanges are charged what the CIFAR net's cost.
- ``bandwidth_gbit_s = 10``, ``latency_us = 50``: 10 Gb/s Ethernet, a typical TCP latency.

With these, a ring all-reduce of the net among 4 workers takes 2.0 ms (a fifth of a step)
and DOWNPOUR's parameter server serves 4 pushes and pulls in 9.4 ms per exchange.
"""

CIFAR_NET_BYTES = 1_407_784


def overrides() -> dict:
    """``config.cluster`` for the sweeps (module docstring)."""
    return {"compute_s_per_step": 0.010, "bandwidth_gbit_s": 10.0, "latency_us": 50.0,
            "model_bytes": CIFAR_NET_BYTES, "topology": "auto"}
