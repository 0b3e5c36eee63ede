"""DiLoCo (outer optimizers) against a float64 reference, its equivalences (local SGD,
data-parallel SGD, optax.lookahead), the sign of the outer step, and the executor's rounds
with the outer step on the last step of each period."""

import jax
import numpy as np
import optax
import pytest
from helpers import (
    CURVATURE,
    QUADRATIC_SHAPES,
    quadratic_rounds,
    quadratic_start,
    quadratic_targets,
    run_quadratic,
)

import easgd_jax
from easgd_jax.algorithms import outer, registry
from easgd_jax.parallel import make_worker_layout

P = 3
SHAPES, H = QUADRATIC_SHAPES, CURVATURE  # worker i minimises 0.5 H ||x - target_i||^2


def _start(p=P, seed=1):
    return quadratic_start(p, seed)


def _targets(p=P, seed=0):
    return quadratic_targets(p, seed)


_run = run_quadratic


def _reference(x0, targets, eta, mu, period, outer_eta, outer_mu, steps):
    """DiLoCo with Nesterov SGD inside and out (optax's form: m <- g + mu m, u = -eta (g +
    mu m)), in float64, written from the rule: inner step on every worker; after the
    (t + 1) mod H == 0 step, delta = x~ - mean x_i, outer Nesterov step on x~, x_i <- x~."""
    x = {k: np.asarray(v, np.float64) for k, v in x0.items()}
    m = {k: np.zeros_like(v) for k, v in x.items()}
    c = {k: v[0].copy() for k, v in x.items()}
    mc = {k: np.zeros_like(v) for k, v in c.items()}
    xs, cs = [], []
    for t in range(steps):
        for k in x:
            g = H * (x[k] - targets[k])
            m[k] = g + mu * m[k]
            x[k] = x[k] - eta * (g + mu * m[k])
        if (t + 1) % period == 0:
            for k in x:
                delta = c[k] - x[k].mean(axis=0)
                mc[k] = delta + outer_mu * mc[k]
                c[k] = c[k] - outer_eta * (delta + outer_mu * mc[k])
                x[k] = np.broadcast_to(c[k], x[k].shape).copy()
        xs.append({k: v.copy() for k, v in x.items()})
        cs.append({k: v.copy() for k, v in c.items()})
    return xs, cs


@pytest.mark.parametrize("momentum", [0.9, 0.5])
def test_diloco_matches_the_float64_reference(momentum):
    """(momentum 0.5 inside, 0.9 outside: an outer step wired to the inner momentum is
    caught; issue 28, item 10)"""
    x0, targets = _start(), _targets()
    tx = registry.get_algorithm("diloco", learning_rate=0.1, momentum=momentum, period=3,
                                outer_learning_rate=0.7, outer_momentum=0.9)
    params, state = _run(tx, x0, targets, steps=10)
    xs, cs = _reference(x0, targets, 0.1, momentum, 3, 0.7, 0.9, steps=10)
    for t in range(10):
        for k in SHAPES:
            np.testing.assert_allclose(params[k][t], xs[t][k], rtol=1e-5, atol=1e-6)
            for i in range(P):  # every worker holds the same center
                np.testing.assert_allclose(state.center[k][t, i], cs[t][k], rtol=1e-5,
                                           atol=1e-6)
    # The outer steps closed the blocks after steps 3, 6, 9 (t = 2, 5, 8): the workers equal
    # the center there and differ from it in between.
    for t in (2, 5, 8):
        np.testing.assert_allclose(params["b"][t], np.broadcast_to(
            state.center["b"][t, 0], params["b"][t].shape), atol=1e-6)
    assert not np.allclose(params["b"][3], state.center["b"][3])
    np.testing.assert_array_equal(state.count[-1], np.full(P, 10))


def test_outer_sgd_1_is_periodic_model_averaging():
    x0, targets = _start(), _targets()
    tx = easgd_jax.diloco(optax.sgd(0.2), optax.sgd(1.0), period=4)
    params, state = _run(tx, x0, targets, steps=8)
    x = {k: np.asarray(v, np.float64) for k, v in x0.items()}
    for t in range(8):
        x = {k: v - 0.2 * H * (v - targets[k]) for k, v in x.items()}
        if (t + 1) % 4 == 0:
            x = {k: np.broadcast_to(v.mean(axis=0), v.shape) for k, v in x.items()}
        for k in SHAPES:
            np.testing.assert_allclose(params[k][t], x[k], rtol=1e-5, atol=1e-6)


def test_period_1_with_outer_sgd_1_is_data_parallel_sgd():
    x0, targets = _start(), _targets()
    a, _ = _run(easgd_jax.diloco(optax.sgd(0.3), optax.sgd(1.0), period=1), x0, targets, 6)
    b, _ = _run(easgd_jax.data_parallel_sgd(0.3), x0, targets, 6)
    for k in SHAPES:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_one_worker_is_optax_lookahead_with_an_sgd_slow_step():
    x0, targets = _start(p=1), _targets(p=1)
    params, state = _run(easgd_jax.diloco(optax.sgd(0.2), optax.sgd(0.5), period=3), x0,
                         targets, 9)
    look = optax.lookahead(optax.sgd(0.2), sync_period=3, slow_step_size=0.5)
    start = {k: v[0] for k, v in x0.items()}
    lp = optax.LookaheadParams(fast=start, slow=start)
    ls = look.init(lp)
    for t in range(9):
        grads = {k: H * (lp.fast[k] - targets[k][0]) for k in SHAPES}  # at the fast params
        u, ls = look.update(grads, ls, lp)
        lp = optax.apply_updates(lp, u)
        for k in SHAPES:
            np.testing.assert_allclose(params[k][t, 0], lp.fast[k], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(state.center[k][t, 0], lp.slow[k], rtol=1e-5,
                                       atol=1e-6)


def test_one_outer_sgd_step_moves_the_center_downhill():
    """The classic sign bug: delta = x~ - mean x_i is a gradient of the outer problem; a
    descent step must move x~ toward the workers (downhill on the quadratic), not away."""
    x0 = _start()
    targets = {k: np.broadcast_to(v[:1], v.shape).copy() for k, v in _targets().items()}
    tx = easgd_jax.diloco(optax.sgd(0.1), optax.sgd(0.5), period=2)
    _, state = _run(tx, x0, targets, steps=2)

    def loss(c):
        return sum(0.5 * H * np.sum((np.asarray(c[k]) - targets[k][0]) ** 2) for k in SHAPES)

    before = loss({k: v[0] for k, v in x0.items()})
    after = loss({k: v[1, 0] for k, v in state.center.items()})
    assert after < before, (before, after)


def test_rounds_trace_the_outer_step_last_and_match_the_unrolled_run():
    """The executor's rounds of whole periods trace the communication step LAST for DiLoCo
    (its Spec says so); a round of 2 periods equals 2 * H single steps with the clock
    deciding at run time (period=None)."""
    assert registry.get_spec("diloco").exchange_step == "last"
    layout = make_worker_layout(4, 4)
    tx = registry.get_algorithm("diloco", axis_name=layout.axis_name, learning_rate=0.1,
                                momentum=0.9, period=3, outer_learning_rate=0.7,
                                outer_momentum=0.9)
    run = quadratic_rounds(tx, layout, steps=6)
    known, decided = run(3, "last"), run(None)
    for x, y in zip(jax.tree.leaves(known), jax.tree.leaves(decided), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)
    wrong, _ = run(3, "first")
    assert not np.allclose(np.asarray(wrong["b"]), np.asarray(decided[0]["b"]), atol=1e-4)


@pytest.mark.parametrize("field,value,match", [
    ("period", 0, "period must be an integer >= 1"),
    ("outer_learning_rate", -0.1, "outer_learning_rate must be >= 0"),
    ("outer_momentum", 1.0, "outer_momentum must be < 1"),
])
def test_bad_hyperparameters_are_refused(field, value, match):
    hparams = dict(learning_rate=0.1, momentum=0.9, period=3)
    hparams[field] = value
    with pytest.raises(ValueError, match=match):
        outer.nesterov_diloco(**hparams)


# --------------------------------------------------------------------------- elastic + outer


def test_elastic_averaging_with_outer_sgd_1_is_eamsgd_exactly():
    x0, targets = _start(), _targets()
    hp = dict(learning_rate=0.1, momentum=0.9, moving_rate=0.2, period=2)
    a, sa = _run(registry.get_algorithm("eamsgd_outer", **hp), x0, targets, 7)
    b, sb = _run(registry.get_algorithm("eamsgd", **hp), x0, targets, 7)
    for x, y in zip(jax.tree.leaves((a, sa.center)), jax.tree.leaves((b, sb.center)),
                    strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _reference_easgd_outer(x0, targets, eta, alpha, tau, outer_eta, outer_mu, steps):
    """EASGD (eqs 5-6) whose center takes an outer Nesterov step (optax's form) on the
    outer gradient -alpha sum_i (x_i - x~), in float64."""
    x = {k: np.asarray(v, np.float64) for k, v in x0.items()}
    c = {k: v[0].copy() for k, v in x.items()}
    m = {k: np.zeros_like(v) for k, v in c.items()}
    xs, cs = [], []
    for t in range(steps):
        for k in x:
            g = H * (x[k] - targets[k])  # at the worker before the exchange
            if t % tau == 0:
                d = x[k] - c[k]
                x[k] = x[k] - alpha * d
                gradient = -alpha * d.sum(axis=0)
                m[k] = gradient + outer_mu * m[k]
                c[k] = c[k] - outer_eta * (gradient + outer_mu * m[k])
            x[k] = x[k] - eta * g
        xs.append({k: v.copy() for k, v in x.items()})
        cs.append({k: v.copy() for k, v in c.items()})
    return xs, cs


def test_easgd_with_an_outer_nesterov_step_matches_the_float64_reference():
    x0, targets = _start(), _targets()
    tx = registry.get_algorithm("eamsgd_outer", learning_rate=0.2, momentum=0.0,
                                moving_rate=0.25, period=2, outer_learning_rate=0.6,
                                outer_momentum=0.8)
    params, state = _run(tx, x0, targets, steps=9)
    xs, cs = _reference_easgd_outer(x0, targets, 0.2, 0.25, 2, 0.6, 0.8, steps=9)
    for t in range(9):
        for k in SHAPES:
            np.testing.assert_allclose(params[k][t], xs[t][k], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(state.center[k][t, 0], cs[t][k], rtol=1e-5, atol=1e-6)
    assert not np.allclose(cs[-1]["b"], _reference_easgd_outer(
        x0, targets, 0.2, 0.25, 2, 1.0, 0.0, steps=9)[1][-1]["b"])  # the outer step matters


def test_the_elastic_outer_step_moves_the_center_toward_the_workers():
    x0 = _start()
    x0 = {k: v + np.arange(P, dtype=np.float32).reshape(-1, *[1] * (v.ndim - 1))
          for k, v in x0.items()}  # workers apart from worker 0, where the center starts
    tx = easgd_jax.elastic_averaging(optax.sgd(0.0), 0.2, 1, outer=optax.sgd(0.5))
    zero = {k: np.zeros_like(v) for k, v in x0.items()}
    _, state = _run(tx, x0, zero, steps=1)  # curvature irrelevant: the inner rate is 0
    for k in SHAPES:
        mean = x0[k].mean(axis=0)
        before = np.abs(x0[k][0] - mean).sum()
        after = np.abs(np.asarray(state.center[k][0, 0]) - mean).sum()
        assert after < before, (k, before, after)


# --------------------------------------------------------------------------- asynchronous


def test_one_worker_async_diloco_equals_sync():
    from test_schedules import assert_trees_close, noise_problem, run_async, run_sync

    hp = dict(learning_rate=0.05, momentum=0.5, period=3, outer_learning_rate=0.7,
              outer_momentum=0.9)  # unequal momenta: neither wired to the other
    grad_loss, noise = noise_problem(6)
    params, state = run_sync(outer.nesterov_diloco(**hp), grad_loss, noise)
    worker, master = run_async(outer.async_diloco(**hp), grad_loss, noise)
    assert_trees_close(worker.params, params)
    assert_trees_close(master.center, state.center)
    assert_trees_close(master.outer_state[0].trace, state.outer_state[0].trace)
    assert_trees_close(worker.extra.inner_state[0].trace, state.inner_state[0].trace)


def test_async_diloco_round_robin_applies_one_outer_step_per_arrival():
    """p = 2 round robin on f = h x^2 / 2 (noise-free), float64 by hand: each worker's block
    closes at its own (t_i + 1) mod H == 0 and the master takes one outer step per arrival,
    on the center as the previous arrival left it, with the displacement counted 1/p."""
    from test_schedules import quadratic, simulate

    from easgd_jax.parallel import schedules

    h, eta, mu, period, oeta, omu, p, ticks = 0.8, 0.1, 0.5, 2, 0.7, 0.9, 2, 12
    rule = outer.async_diloco(eta, mu, period, oeta, omu, num_workers=p)
    x0 = np.array([1.0, -2.0], np.float32)
    state, _ = simulate(rule, quadratic(h), x0, schedules.round_robin(p, ticks))
    x = [np.array([1.0, -2.0]) for _ in range(p)]
    m = [np.zeros(2) for _ in range(p)]
    s = [np.zeros(2) for _ in range(p)]
    t = [0] * p
    c, trace = np.array([1.0, -2.0]), np.zeros(2)
    for tick in range(ticks):
        i = tick % p
        g = h * x[i]
        m[i] = g + mu * m[i]
        u = -eta * (g + mu * m[i])
        x[i], s[i] = x[i] + u, s[i] + u
        if (t[i] + 1) % period == 0:
            d = -s[i] / p
            trace = d + omu * trace
            c = c - oeta * (d + omu * trace)
            x[i], s[i] = c.copy(), np.zeros(2)
        t[i] += 1
    np.testing.assert_allclose(state.master.center, c, rtol=1e-5)
    for i in range(p):
        np.testing.assert_allclose(state.workers.params[i], x[i], rtol=1e-5, atol=1e-7)
