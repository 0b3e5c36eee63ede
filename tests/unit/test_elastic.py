"""EASGD and EAMSGD against hand-written references, equivalences and a quadratic."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import easgd_jax
from easgd_jax.algorithms import elastic
from easgd_jax.parallel import make_round, make_worker_layout

P = 3  # workers in the vmapped tests
SHAPES = {"a": (2,), "b": (2, 3)}


def _tree(rng, leading=()):
    return {k: rng.normal(size=(*leading, *s)).astype(np.float32) for k, s in SHAPES.items()}


def _targets(seed=0):
    """Worker i minimises 0.5 * h * ||x - target_i||^2: its gradient depends on where it is."""
    return _tree(np.random.default_rng(seed), (P,))


H = 0.7


def _grad(x, target):
    return jax.tree.map(lambda xi, ti: H * (xi - ti), x, target)


def _init(tx, params):
    """The workers' states with ONE center, worker 0's params (the workers may start
    elsewhere: every exchange checks that the replicated centers agree)."""
    state = jax.vmap(tx.init)(params)
    if hasattr(state, "center"):
        state = state._replace(center=jax.tree.map(
            lambda a: jnp.broadcast_to(a[0], a.shape), params))
    return state


def _run(tx, params, targets, steps):
    """Runs ``steps`` updates of ``tx`` on P vmapped workers; returns params and states.

    The center starts at worker 0's parameters (the workers may start elsewhere).
    """
    state = _init(tx, params)

    def step(carry, _):
        params, state = carry
        grads = jax.vmap(_grad)(params, targets)

        def update(g, s, p):
            u, s = tx.update(g, s, p)
            return optax.apply_updates(p, u), s

        params, state = jax.vmap(update, axis_name="workers")(grads, state, params)
        return (params, state), (params, state)

    _, history = jax.lax.scan(step, (params, state), None, length=steps)
    return history


def _same_start(seed=1):
    x0 = _tree(np.random.default_rng(seed))
    return {k: np.broadcast_to(v, (P, *v.shape)).copy() for k, v in x0.items()}


def _reference_easgd(x0, targets, eta, alpha, tau, steps, delta=0.0):
    """Algorithm 2 of Zhang et al. (2015) in float64; delta = 0 is EASGD (eqs 5-6).

    Returns per step the worker variables x_i, velocities v_i and the center.
    """
    x = {k: np.asarray(v, np.float64) for k, v in x0.items()}
    v = {k: np.zeros_like(a) for k, a in x.items()}
    c = {k: a[0].copy() for k, a in x.items()}
    out = []
    for t in range(steps):
        snapshot = {k: a.copy() for k, a in x.items()}
        for k in x:
            lookahead = snapshot[k] + delta * v[k]
            g = H * (lookahead - targets[k])
            if t % tau == 0:
                diff = snapshot[k] - c[k]
                x[k] = x[k] - alpha * diff
                c[k] = c[k] + alpha * diff.sum(axis=0)
            v[k] = delta * v[k] - eta * g
            x[k] = x[k] + v[k]
        out.append(({k: a.copy() for k, a in x.items()}, {k: a.copy() for k, a in v.items()},
                    {k: a.copy() for k, a in c.items()}))
    return out


def _assert_tree_close(actual, expected, atol=1e-5):
    for k in expected:
        np.testing.assert_allclose(np.asarray(actual[k]), expected[k], rtol=1e-5, atol=atol,
                                   err_msg=k)


@pytest.mark.parametrize("tau", [1, 2, 3])
def test_easgd_matches_reference(tau):
    targets = _targets()
    x0 = _same_start()
    # Different starting points so the very first exchange is not trivial.
    x0 = {k: v + 0.3 * np.arange(P).reshape(-1, *[1] * (v.ndim - 1)) for k, v in x0.items()}
    steps, eta, alpha = 7, 0.1, 0.2
    tx = easgd_jax.easgd(eta, alpha, period=tau, axis_name="workers")
    params, states = _run(tx, x0, targets, steps)
    ref = _reference_easgd(x0, targets, eta, alpha, tau, steps)
    for t in range(steps):
        ref_x, _, ref_c = ref[t]
        _assert_tree_close(jax.tree.map(lambda a, t=t: a[t], params), ref_x)
        center = easgd_jax.center(jax.tree.map(lambda a, t=t: a[t], states))
        for k in ref_c:  # every worker holds the same center
            np.testing.assert_allclose(center[k], np.broadcast_to(ref_c[k], center[k].shape),
                                       rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("tau", [1, 3])
def test_eamsgd_matches_reference(tau):
    targets = _targets(2)
    x0 = _same_start(3)
    steps, eta, alpha, delta = 8, 0.05, 0.25, 0.9
    tx = easgd_jax.eamsgd(eta, delta, alpha, period=tau, axis_name="workers")
    params, states = _run(tx, x0, targets, steps)
    ref = _reference_easgd(x0, targets, eta, alpha, tau, steps, delta=delta)
    for t in range(steps):
        ref_x, ref_v, ref_c = ref[t]
        at_t = jax.tree.map(lambda a, t=t: a[t], (params, states))
        # params are the look-ahead points w = x + delta * v, where gradients are taken.
        _assert_tree_close(at_t[0], {k: ref_x[k] + delta * ref_v[k] for k in ref_x})
        worker = jax.vmap(easgd_jax.nesterov_origin(delta))(at_t[0], at_t[1].inner_state)
        _assert_tree_close(worker, ref_x)
        _assert_tree_close(at_t[1].inner_state.velocity, ref_v)
        _assert_tree_close(jax.tree.map(lambda a: a[0], easgd_jax.center(at_t[1])), ref_c)


def test_step_zero_communicates_and_period_is_respected():
    x0 = {k: v + np.arange(P).reshape(-1, *[1] * (v.ndim - 1)) for k, v in _same_start().items()}
    tx = easgd_jax.easgd(0.0, 0.1, period=4, axis_name="workers")  # eta = 0: only exchanges
    _, states = _run(tx, x0, _targets(), 9)
    centers = np.asarray(easgd_jax.center(states)["a"][:, 0])  # [step, 2]
    changed = [not np.allclose(centers[t], centers[t - 1]) for t in range(1, 9)]
    assert not np.allclose(centers[0], x0["a"][0])  # step 0 moved the center
    assert changed == [False, False, False, True, False, False, False, True]  # steps 4, 8


def test_center_is_affine_combination_after_exchange():
    """x~ <- (1 - beta) x~ + beta * mean_i x_i with beta = p * alpha."""
    rng = np.random.default_rng(4)
    x = _tree(rng, (P,))
    alpha = 0.9 / P
    tx = easgd_jax.easgd(0.0, alpha, period=1, axis_name="workers")
    state = jax.vmap(tx.init)(x)
    c0 = _tree(rng)
    state = state._replace(center={k: jnp.broadcast_to(v, (P, *v.shape)) for k, v in c0.items()})
    zeros = jax.tree.map(jnp.zeros_like, x)
    _, state = jax.jit(jax.vmap(tx.update, axis_name="workers"))(zeros, state, x)  # 1 program
    beta = P * alpha
    for k in c0:
        expected = (1 - beta) * c0[k] + beta * x[k].mean(axis=0)
        np.testing.assert_allclose(state.center[k][1], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make", ["easgd", "eamsgd"])
def test_zero_moving_rate_gives_independent_optimizers(make):
    targets = _targets(5)
    x0 = {k: v + np.arange(P).reshape(-1, *[1] * (v.ndim - 1)) for k, v in _same_start().items()}
    if make == "easgd":
        tx, solo = easgd_jax.easgd(0.1, 0.0, 2), optax.sgd(0.1)
    else:
        tx, solo = easgd_jax.eamsgd(0.1, 0.9, 0.0, 2), optax.sgd(0.1, 0.9, nesterov=True)
    params, states = _run(tx, x0, targets, 6)
    alone, _ = _run(solo, x0, targets, 6)
    _assert_tree_close(jax.tree.map(lambda a: a[-1], params),
                       jax.tree.map(lambda a: np.asarray(a[-1]), alone))
    # The center never moves from where it started (worker 0's start).
    _assert_tree_close(jax.tree.map(lambda a: a[-1], easgd_jax.center(states)),
                       {k: np.broadcast_to(v[0], v.shape) for k, v in x0.items()}, atol=0)


def test_delta_zero_turns_eamsgd_into_easgd():
    targets, x0 = _targets(6), _same_start(7)
    a, sa = _run(easgd_jax.easgd(0.1, 0.2, 3), x0, targets, 7)
    b, sb = _run(easgd_jax.eamsgd(0.1, 0.0, 0.2, 3), x0, targets, 7)
    _assert_tree_close(b, jax.tree.map(np.asarray, a), atol=1e-6)
    _assert_tree_close(easgd_jax.center(sb), jax.tree.map(np.asarray, easgd_jax.center(sa)),
                       atol=1e-6)


def test_single_worker_is_a_two_body_system():
    """p = 1: worker and center pull each other; the reference holds with P = 1 too."""
    x0 = {"w": np.array([[2.0, -1.0]], np.float32)}
    c0 = np.array([0.5, 0.5], np.float32)
    eta, alpha = 0.1, 0.3
    tx = easgd_jax.easgd(eta, alpha, 1, axis_name="workers")
    state = jax.vmap(tx.init)(x0)._replace(center={"w": jnp.asarray(c0)[None]})
    g = {"w": jnp.array([[1.0, 2.0]])}
    u, state = jax.jit(jax.vmap(tx.update, axis_name="workers"))(g, state, x0)
    x = x0["w"][0]
    np.testing.assert_allclose(x0["w"][0] + u["w"][0], x - eta * np.array([1.0, 2.0])
                               - alpha * (x - c0), rtol=1e-6)
    np.testing.assert_allclose(state.center["w"][0], c0 + alpha * (x - c0), rtol=1e-6)


def test_forces_point_toward_each_other_and_quadratic_converges():
    """Sign check: the elastic force pulls each worker toward the center and the center
    toward the workers; on f = h/2 ||x||^2 workers and center converge to 0."""
    x0 = {"w": np.array([[3.0], [-1.0], [5.0]], np.float32)}
    tx = easgd_jax.easgd(0.0, 0.2, 1, axis_name="workers")
    state = jax.vmap(tx.init)(x0)._replace(center={"w": jnp.zeros((P, 1))})
    u, state = jax.jit(jax.vmap(tx.update, axis_name="workers"))(
        jax.tree.map(jnp.zeros_like, x0), state, x0)
    # Each worker moves toward the old center (0): opposite sign of its position.
    assert np.all(np.sign(u["w"]) == -np.sign(x0["w"]))
    # The center moves toward the workers' mean (positive here).
    assert float(state.center["w"][0, 0]) > 0

    targets = {k: np.zeros((P, *s), np.float32) for k, s in SHAPES.items()}
    start = {k: v * 5 for k, v in _same_start(8).items()}
    for make in (easgd_jax.easgd(0.2, 0.3, 4), easgd_jax.eamsgd(0.05, 0.9, 0.3, 4)):
        params, states = _run(make, start, targets, 300)
        center = easgd_jax.center(states)
        for k in SHAPES:
            assert np.abs(center[k][-1]).max() < 1e-3 * np.abs(start[k]).max()
            assert np.abs(params[k][-1]).max() < 1e-3 * np.abs(start[k]).max()


def test_learning_rate_schedule():
    schedule = optax.linear_schedule(0.2, 0.0, 5)
    targets, x0 = _targets(9), _same_start(10)
    params, _ = _run(easgd_jax.easgd(schedule, 0.1, 2), x0, targets, 5)
    # Reference with eta_t = schedule(t).
    x = {k: np.asarray(v, np.float64) for k, v in x0.items()}
    c = {k: a[0].copy() for k, a in x.items()}
    for t in range(5):
        for k in x:
            g = H * (x[k] - targets[k])
            diff = x[k] - c[k] if t % 2 == 0 else np.zeros_like(x[k])
            c[k] = c[k] + 0.1 * diff.sum(axis=0)
            x[k] = x[k] - float(schedule(t)) * g - 0.1 * diff
    _assert_tree_close(jax.tree.map(lambda a: a[-1], params), x)


def _quadratic_round(tx):
    def step(carry, target):
        params, state = carry
        u, state = tx.update(_grad(params, target), state, params)
        return (optax.apply_updates(params, u), state), None
    return step


@pytest.mark.parametrize("devices", [4, 2, 1])
def test_same_result_on_devices_or_vmapped(devices):
    """4 workers on 4 devices, 2 per device on 2, or all 4 vmapped on 1: same numbers."""
    p, steps = 4, 9
    rng = np.random.default_rng(11)
    x0 = {k: rng.normal(size=(p, *s)).astype(np.float32) for k, s in SHAPES.items()}
    targets = {k: rng.normal(size=(p, steps, *s)).astype(np.float32) for k, s in SHAPES.items()}

    def run(layout_devices):
        layout = make_worker_layout(p, layout_devices)
        tx = easgd_jax.eamsgd(0.05, 0.9, 0.2, period=3, axis_name=layout.axis_name)
        round_fn = make_round(_quadratic_round(tx), layout, donate=False)
        (params, state), _ = round_fn((x0, _init(tx, x0)), targets)
        return jax.device_get((params, easgd_jax.center(state)))

    # Plain vmap, no shard_map, as the reference.
    tx = easgd_jax.eamsgd(0.05, 0.9, 0.2, period=3, axis_name="workers")
    scan = lambda carry, b: jax.lax.scan(_quadratic_round(tx), carry, b)  # noqa: E731
    (ref_params, ref_state), _ = jax.jit(jax.vmap(scan, axis_name="workers"))(
        (x0, _init(tx, x0)), targets)
    params, center = run(devices)
    _assert_tree_close(params, jax.device_get(ref_params), atol=1e-5)
    _assert_tree_close(center, jax.device_get(easgd_jax.center(ref_state)), atol=1e-5)


def test_dtypes_and_shardings_survive_a_jitted_round():
    layout = make_worker_layout(4, 4)
    tx = easgd_jax.eamsgd(0.05, 0.9, 0.2, period=2, axis_name=layout.axis_name)
    x0 = {"f32": jnp.ones((4, 3), jnp.float32), "bf16": jnp.ones((4, 2), jnp.bfloat16)}
    carry = jax.device_put((x0, jax.vmap(tx.init)(x0)), layout.worker_sharding())
    targets = {"f32": jnp.zeros((4, 5, 3), jnp.float32), "bf16": jnp.zeros((4, 5, 2), jnp.bfloat16)}
    round_fn = make_round(_quadratic_round(tx), layout, donate=False)
    new_carry, _ = round_fn(carry, targets)
    before, after = jax.tree.leaves(carry), jax.tree.leaves(new_carry)
    assert [a.dtype for a in before] == [a.dtype for a in after]
    assert [a.shape for a in before] == [a.shape for a in after]
    for a, b in zip(before, after, strict=True):
        assert b.sharding.is_equivalent_to(a.sharding, a.ndim), (a.sharding, b.sharding)
    assert new_carry[1].count.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(new_carry[1].count), [5, 5, 5, 5])


def test_one_all_reduce_inside_a_conditional_per_round():
    """With one worker per device the exchange is a real branch: the only collective of the
    round is a single all-reduce, inside the conditional taken every `period` steps."""
    layout = make_worker_layout(4, 4)
    tx = easgd_jax.eamsgd(0.05, 0.9, 0.2, period=10, axis_name=layout.axis_name)
    x0 = {"a": jnp.ones((4, 3)), "b": jnp.ones((4, 2, 2))}
    targets = {"a": jnp.zeros((4, 10, 3)), "b": jnp.zeros((4, 10, 2, 2))}
    round_fn = make_round(_quadratic_round(tx), layout, donate=False)
    # Compiled: the psum of the pytree is lowered one all-reduce per leaf, which XLA
    # combines into one.
    hlo = round_fn.lower((x0, jax.vmap(tx.init)(x0)), targets).compile().as_text()
    assert hlo.count(" all-reduce(") == 1
    assert "conditional(" in hlo


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(learning_rate=0.1, moving_rate=0.1, period=0), "period"),
        (dict(learning_rate=0.1, moving_rate=-0.1, period=1), "moving_rate"),
        (dict(learning_rate=-0.1, moving_rate=0.1, period=1), "learning_rate"),
        (dict(learning_rate=0.1, moving_rate=1.5, period=1), "moving_rate"),
        (dict(learning_rate=0.1, moving_rate=0.1, period=2.5), "period"),
        (dict(learning_rate=0.1, moving_rate=0.1, period=1, axis_name=""), "axis_name"),
    ],
)
def test_invalid_hyperparameters_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        easgd_jax.easgd(**kwargs)


@pytest.mark.parametrize("momentum", [1.0, -0.5, 1.2])
def test_invalid_momentum_raises(momentum):
    with pytest.raises(ValueError, match="momentum"):
        easgd_jax.eamsgd(0.1, momentum, 0.1, 1)


def test_elastic_exchange_is_symmetric():
    worker, center = {"w": jnp.array([1.0, 3.0])}, {"w": jnp.array([0.0, 1.0])}
    w_delta, c_delta = elastic.elastic_exchange(worker, center, 0.25)
    np.testing.assert_allclose(c_delta["w"], [0.25, 0.5])
    np.testing.assert_allclose(w_delta["w"], [-0.25, -0.5])


def test_registry_builds_by_name_and_rejects_bad_names():
    tx = easgd_jax.get_algorithm("eamsgd", axis_name="workers", learning_rate=0.1,
                                 momentum=0.9, moving_rate=0.2, period=4)
    assert isinstance(tx, optax.GradientTransformation)
    with pytest.raises(ValueError, match="unknown algorithm 'easdg'"):
        easgd_jax.get_algorithm("easdg", learning_rate=0.1)
    with pytest.raises(ValueError, match="does not take momentm"):
        easgd_jax.get_algorithm("eamsgd", learning_rate=0.1, momentm=0.9, moving_rate=0.2)
    with pytest.raises(ValueError, match="needs moving_rate"):
        easgd_jax.get_algorithm("easgd", learning_rate=0.1)


@pytest.mark.parametrize("devices, groups", [(4, 2), pytest.param(2, 2, marks=pytest.mark.slow),
                                            pytest.param(8, 4, marks=pytest.mark.slow)])
def test_grouped_layout_spans_all_workers(devices, groups):
    """On a 2-D (groups x workers) layout, axis_name spans every worker: same EAMSGD run."""
    p, steps = 8, 5
    rng = np.random.default_rng(12)
    x0 = {k: rng.normal(size=(p, *s)).astype(np.float32) for k, s in SHAPES.items()}
    targets = {k: rng.normal(size=(p, steps, *s)).astype(np.float32) for k, s in SHAPES.items()}
    results = []
    for layout in (make_worker_layout(p, devices, groups), make_worker_layout(p, 1)):
        tx = easgd_jax.eamsgd(0.05, 0.9, 0.1, period=2, axis_name=layout.axis_name)
        round_fn = make_round(_quadratic_round(tx), layout, donate=False)
        (params, state), _ = round_fn((x0, _init(tx, x0)), targets)
        results.append(jax.device_get((params, easgd_jax.center(state))))
    _assert_tree_close(results[0][0], results[1][0])
    _assert_tree_close(results[0][1], results[1][1])


def test_layout_rejects_groups_that_do_not_fit():
    with pytest.raises(ValueError, match="num_groups"):
        make_worker_layout(8, 4, 3)
    with pytest.raises(ValueError, match="multiple of num_devices"):
        make_worker_layout(6, 4)
