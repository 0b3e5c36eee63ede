"""A worker that spans devices, from a researcher's own code: the public transformations under
a ``shard_map`` manual over the worker axes only, on meshes whose axes are ``Explicit``, and
the center-agreement check reported on the host (the traced update holds no host callback).
The contract (tests/unit/test_contract.py, ``worker_spanning_devices``) runs every registered
algorithm on an automatic model axis; here the Explicit meshes and the disagreement."""

from __future__ import annotations

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import HPARAMS, P
from jax.sharding import NamedSharding, PartitionSpec

import easgd_jax
from easgd_jax.algorithms import registry

PARAMS = {"w": np.linspace(-1.0, 2.0, 8).reshape(4, 2), "b": np.array([0.25, -0.5])}


def _run(name: str, explicit: bool, params=None, steps: int = 3):
    """``steps`` steps of the user's step on P workers each spanning 2 devices (mesh axes
    Explicit or Auto), and the vmapped run from the same start; in float64."""
    grouped = registry.is_grouped(name)
    tx = helpers.build(name, **HPARAMS[name])
    params = helpers.stacked(PARAMS, jnp.float64) if params is None else params
    mesh, workers = helpers.spanning_mesh(grouped, model=2, explicit=explicit)
    sharded = jax.device_put(params, NamedSharding(mesh, PartitionSpec(workers, "model")))
    with jax.set_mesh(mesh):
        state = jax.jit(helpers.lift(tx.init, grouped))(sharded)
        step = helpers.per_worker_on(mesh, workers, helpers.user_step(tx))
        c = jnp.linspace(0.5, 1.5, P)
        got = (sharded, state)
        for _ in range(steps):
            got = step(*got, c)
    vmapped = jax.jit(helpers.lift(helpers.user_step(tx), grouped))
    expected = (params, helpers.lift(tx.init, grouped)(params))
    for _ in range(steps):
        expected = vmapped(*expected, c)
    return got, expected


@pytest.mark.parametrize("name", ["eamsgd", "diloco", "downpour", "lsgd_multi_nesterov"])
def test_init_update_and_center_on_an_explicit_mesh(name):
    with jax.enable_x64(True):
        (params, state), (want_params, want_state) = _run(name, explicit=True)
        assert params["w"].sharding.spec[1] == "model"
        np.testing.assert_allclose(params["w"], want_params["w"], rtol=1e-12)
        if name != "lsgd_multi_nesterov":  # LSGD keeps no center
            for worker in range(P):
                copy = easgd_jax.center(state, worker=worker)  # a gather on an Explicit mesh
                np.testing.assert_allclose(copy["w"], easgd_jax.center(want_state)["w"][worker],
                                           rtol=1e-12)


@pytest.mark.parametrize("explicit", [False, True], ids=["auto", "explicit"])
@pytest.mark.parametrize("name", ["eamsgd", "mdownpour"])
def test_a_disagreeing_start_is_stopped_with_the_explanatory_error(name, explicit):
    """Workers initialised apart: the first exchange turns the center NaN (nothing trains on
    silently) and the host-side readers raise the error that says why and what to do."""
    with jax.enable_x64(True):
        apart = helpers.stacked(PARAMS, jnp.float64)
        apart = {"w": apart["w"] + jnp.arange(P, dtype=jnp.float64)[:, None, None],
                 "b": apart["b"]}
        (_, state), _ = _run(name, explicit=explicit, params=apart, steps=1)
        assert np.all(np.isnan(np.asarray(state.center["w"])))
        with pytest.raises(ValueError, match=r"copies of the center differ.*"
                                             r"easgd_jax\.replicate\(params, num_workers\)"):
            easgd_jax.center(state, worker=0)
        with pytest.raises(ValueError, match="copies of the center differ"):
            easgd_jax.check_agreement(state)


def test_the_training_loop_names_a_disagreement_as_the_cause_of_a_nan_center():
    """A round whose state records that the workers' copies of the center differed stops the
    synchronous loop with the explanatory error, not a bare 'non-finite value'."""
    import types

    from easgd_jax.training import sync
    from easgd_jax.training.common import NonFiniteError

    run = types.SimpleNamespace(plan=types.SimpleNamespace(round_steps=4, round_period=2),
                                checkpoints=types.SimpleNamespace(steps=lambda: [8]),
                                workdir="/tmp/w")
    record = types.SimpleNamespace(pending_losses=[], history=[])
    p = 2
    summary = (np.ones(p), -np.ones(p, int), np.zeros(p, bool), np.array([False, False]), {})
    with pytest.raises(NonFiniteError, match=r"from step 8: the workers' copies of the center "
                                             r"differ \(recorded by workers \[0, 1\]\)"):
        sync._absorb(run, record, 8, summary)
    agreeing = (np.ones(p), -np.ones(p, int), np.ones(p, bool), np.ones(p, bool), {})
    sync._absorb(run, record, 8, agreeing)
    assert record.pending_losses == [1.0]
