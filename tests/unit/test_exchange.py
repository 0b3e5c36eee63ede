"""Streaming fragments and the compressed exchange (issue 17), for DiLoCo and elastic
averaging: against float64 references written from the rules (the fragments' slices and
shifted clocks, the cast to bfloat16, the error-feedback residual), F = 1 and no
compression equal to the plain algorithms bitwise, the executor's known-phase rounds, and
the bytes per step read from the compiled HLO."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import ml_dtypes
import numpy as np
import optax
import pytest
from helpers import CURVATURE, quadratic_rounds
from helpers import quadratic_start as _start
from helpers import quadratic_targets as _targets
from helpers import run_quadratic as _run
from jax.flatten_util import ravel_pytree

import easgd_jax
from easgd_jax import parallel
from easgd_jax.algorithms import exchange, registry
from easgd_jax.training import config as config_lib

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks import hlo  # noqa: E402

BF16 = ml_dtypes.bfloat16


def _flat(tree):
    """[p, n] float64: each worker's leaves raveled in ravel_pytree's order."""
    return np.asarray(jax.vmap(lambda t: ravel_pytree(t)[0])(tree), np.float64)


def _bf16(a):
    """The cast of the implementation: float32 first, then bfloat16 (round to nearest)."""
    return np.asarray(a, np.float32).astype(BF16).astype(np.float64)


def _wire_sum(w):
    """The all-reduce of p = 2 bfloat16 messages: their exact sum rounded once."""
    assert w.shape[0] == 2
    return _bf16(w.sum(axis=0))


class _Exchange:
    """The reference exchange: fragment f's slice, the cast and the residual e_i."""

    def __init__(self, n, p, fragments, compressed, feedback):
        self.bounds = exchange.fragment_bounds(n, fragments)
        self.compressed, self.feedback = compressed, feedback
        self.residual = np.zeros((p, n))

    def sum(self, message, sl):
        """sum_i of the workers' messages [p, len] on slice ``sl``, as it arrives."""
        if not self.compressed:
            return message.sum(axis=0)
        r = message + (self.residual[:, sl] if self.feedback else 0.0)
        w = _bf16(r)
        if self.feedback:
            self.residual[:, sl] = r - w
        return _wire_sum(w)


def _reference_diloco(x0, targets, eta, mu, period, oeta, omu, steps, fragments, compressed,
                      feedback):
    """Streaming, compressed DiLoCo in float64 from the rule: Nesterov SGD inside; at
    (t + 1) mod s == 0 (s = H / F) fragment f = ((t + 1) / s) mod F takes its outer Nesterov
    step on delta_f = x~_f - mean x_{i,f} (compressed: -sum_i cast(x_{i,f} - x~_f + e_i) / p)
    and its workers restart from x~_f."""
    x, t_ = _flat(x0), _flat(targets)
    p, n = x.shape
    ex = _Exchange(n, p, fragments, compressed, feedback)
    m, c = np.zeros_like(x), x[0].copy()
    mc = [np.zeros(hi - lo) for lo, hi in ex.bounds]
    s = period // fragments
    xs, cs = [], []
    for t in range(steps):
        g = CURVATURE * (x - t_)
        m = g + mu * m
        x = x - eta * (g + mu * m)
        if (t + 1) % s == 0:
            f = ((t + 1) // s) % fragments
            lo, hi = ex.bounds[f]
            sl = slice(lo, hi)
            if compressed:
                delta = -ex.sum(x[:, sl] - c[sl], sl) / p
            else:
                delta = c[sl] - x[:, sl].mean(axis=0)
            mc[f] = delta + omu * mc[f]
            c[sl] = c[sl] - oeta * (delta + omu * mc[f])
            x[:, sl] = c[sl]
        xs.append(x.copy())
        cs.append(c.copy())
    return np.stack(xs), np.stack(cs), ex.residual


def _reference_elastic(x0, targets, eta, alpha, tau, oeta, omu, steps, fragments, compressed,
                       feedback):
    """Streaming, compressed EASGD with an outer Nesterov step in float64 from the rule: at
    t mod s == 0 (s = tau / F) fragment f = (t / s) mod F: x_{i,f} -= alpha d_i with
    d_i = x_{i,f} - x~_f, and x~_f takes an outer step on -sum_i alpha d_i (compressed: on
    -sum_i cast(alpha d_i + e_i)); then the SGD step on the gradient at the old x_i."""
    x, t_ = _flat(x0), _flat(targets)
    p, n = x.shape
    ex = _Exchange(n, p, fragments, compressed, feedback)
    c = x[0].copy()
    mc = [np.zeros(hi - lo) for lo, hi in ex.bounds]
    s = tau // fragments
    xs, cs = [], []
    for t in range(steps):
        g = CURVATURE * (x - t_)
        if t % s == 0:
            f = (t // s) % fragments
            lo, hi = ex.bounds[f]
            sl = slice(lo, hi)
            d = x[:, sl] - c[sl]
            x[:, sl] = x[:, sl] - alpha * d
            gradient = -ex.sum(alpha * d, sl)
            mc[f] = gradient + omu * mc[f]
            c[sl] = c[sl] - oeta * (gradient + omu * mc[f])
        x = x - eta * g
        xs.append(x.copy())
        cs.append(c.copy())
    return np.stack(xs), np.stack(cs), ex.residual


DILOCO = dict(learning_rate=0.1, momentum=0.9, period=4, outer_learning_rate=0.7,
              outer_momentum=0.9)
ELASTIC = dict(learning_rate=0.2, momentum=0.0, moving_rate=0.3, period=2,
               outer_learning_rate=0.6, outer_momentum=0.8)
STEPS = 12
CASES = [  # (num_fragments, exchange_dtype, error_feedback, workers)
    pytest.param(2, None, False, 3, id="fragments"),
    pytest.param(None, "bfloat16", True, 2, id="bf16-feedback"),
    pytest.param(2, "bfloat16", True, 2, id="fragments-bf16-feedback"),
]


def _check(params, state, xs, cs, residual, fragments, feedback):
    def ravel(tree):  # [steps, p, n]
        return np.asarray(jax.vmap(jax.vmap(lambda t: ravel_pytree(t)[0]))(tree))

    got_x, got_c = ravel(params), ravel(state.center)
    np.testing.assert_allclose(got_x, xs, rtol=1e-5, atol=1e-6)
    for i in range(got_c.shape[1]):  # every worker holds the same center
        np.testing.assert_allclose(got_c[:, i], cs, rtol=1e-5, atol=1e-6)
    if fragments:  # one outer state per fragment
        assert isinstance(state.outer_state, tuple) and len(state.outer_state) == fragments
    if feedback:
        got_e = np.asarray(jax.vmap(lambda t: ravel_pytree(t)[0])(
            jax.tree.map(lambda a: a[-1], state.residual)))
        assert np.abs(residual).max() > 0
        np.testing.assert_allclose(got_e, residual, rtol=1e-3, atol=2e-6)  # f32 r - w


@pytest.mark.parametrize("fragments,dtype,feedback,p", CASES)
def test_diloco_fragments_and_compression_match_the_float64_reference(fragments, dtype,
                                                                      feedback, p):
    x0, targets = _start(p=p), _targets(p=p)
    tx = registry.get_algorithm("diloco", **DILOCO, num_fragments=fragments,
                                exchange_dtype=dtype, error_feedback=feedback)
    params, state = _run(tx, x0, targets, STEPS)
    args = (x0, targets, 0.1, 0.9, 4, 0.7, 0.9, STEPS, fragments or 1)
    xs, cs, residual = _reference_diloco(*args, dtype is not None, feedback)
    _check(params, state, xs, cs, residual, fragments, feedback)
    # The features change the run: the plain reference differs.
    plain = _reference_diloco(*args[:-1], 1, False, False)[1]
    assert not np.allclose(cs, plain, rtol=1e-5, atol=1e-6)
    if feedback:  # and so does the cast without feedback
        assert not np.allclose(cs, _reference_diloco(*args, True, False)[1], rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("fragments,dtype,feedback,p", CASES)
def test_elastic_fragments_and_compression_match_the_float64_reference(fragments, dtype,
                                                                       feedback, p):
    x0, targets = _start(p=p), _targets(p=p)
    tx = registry.get_algorithm("eamsgd_outer", **ELASTIC, num_fragments=fragments,
                                exchange_dtype=dtype, error_feedback=feedback)
    params, state = _run(tx, x0, targets, STEPS)
    args = (x0, targets, 0.2, 0.3, 2, 0.6, 0.8, STEPS, fragments or 1)
    xs, cs, residual = _reference_elastic(*args, dtype is not None, feedback)
    _check(params, state, xs, cs, residual, fragments, feedback)
    plain = _reference_elastic(*args[:-1], 1, False, False)[1]
    assert not np.allclose(cs, plain, rtol=1e-5, atol=1e-6)
    if feedback:
        assert not np.allclose(cs, _reference_elastic(*args, True, False)[1], rtol=1e-5,
                               atol=1e-6)


def test_easgd_fragments_without_an_outer_optimizer():
    """Plain EASGD (no outer state): fragment f's center moves by the elastic sum alone."""
    x0, targets = _start(p=3), _targets(p=3)
    tx = registry.get_algorithm("easgd", learning_rate=0.2, moving_rate=0.3, period=4,
                                num_fragments=4)
    params, state = _run(tx, x0, targets, STEPS)
    xs, cs, _ = _reference_elastic(x0, targets, 0.2, 0.3, 4, 1.0, 0.0, STEPS, 4, False, False)
    _check(params, state, xs, cs, None, None, False)


@pytest.mark.parametrize("name,hparams", [("diloco", DILOCO), ("eamsgd_outer", ELASTIC)])
def test_one_fragment_and_no_compression_are_the_plain_algorithm_bitwise(name, hparams):
    x0, targets = _start(), _targets()
    plain = _run(registry.get_algorithm(name, **hparams), x0, targets, 9)
    one = _run(registry.get_algorithm(name, **hparams, num_fragments=1, exchange_dtype=None,
                                      error_feedback=False), x0, targets, 9)
    assert jax.tree.structure(one) == jax.tree.structure(plain)
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(plain), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_fragments=3), "num_fragments \\(3\\) must divide the period \\(4\\)"),
    (dict(num_fragments=0), "num_fragments must be None or an integer >= 1"),
    (dict(error_feedback=True), "error_feedback=True needs an exchange_dtype"),
    (dict(exchange_dtype="int8"), "exchange_dtype must be a floating dtype with at least"),
    (dict(exchange_dtype="float8_e4m3fn"), "at least 8 significant bits"),
    (dict(exchange_dtype="nope"), "exchange_dtype must be a floating dtype such as"),
])
@pytest.mark.parametrize("name,hparams", [("diloco", DILOCO), ("eamsgd", dict(
    learning_rate=0.1, momentum=0.9, moving_rate=0.2, period=4))])
def test_bad_exchange_options_are_refused(name, hparams, kwargs, match):
    with pytest.raises(ValueError, match=match):
        registry.get_algorithm(name, **hparams, **kwargs)


@pytest.mark.parametrize("name,hparams", [("diloco", DILOCO), ("eamsgd_outer", ELASTIC)])
def test_centers_that_differ_stop_the_compressed_exchange_too(name, hparams):
    """The agreement check rides in the bfloat16 all-reduce as exact bytes: centers that
    differ by far less than a bfloat16 rounding are still caught; equal ones pass."""
    tx = registry.get_algorithm(name, **hparams, num_fragments=2, exchange_dtype="bfloat16",
                                error_feedback=True)
    x0 = {"w": np.ones((2, 3), np.float32)}
    state = jax.vmap(tx.init)(x0)

    def steps(params, state):
        def step(carry, _):
            params, state = carry
            u, state = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
            return (optax.apply_updates(params, u), state), None
        return jax.lax.scan(step, (params, state), None, length=4)[0]

    run = jax.jit(jax.vmap(steps, axis_name="workers"))
    _, good = run(x0, state)
    assert np.all(np.isfinite(np.asarray(good.center["w"])))
    easgd_jax.check_agreement(good)
    nudged = state._replace(center={"w": state.center["w"].at[1, 0].add(1e-6)})
    with pytest.raises(ValueError, match="copies of the center differ"):
        easgd_jax.check_agreement(run(x0, nudged)[1])


def test_fragment_bounds_are_contiguous_and_equal_sized():
    assert exchange.fragment_bounds(10, 4) == [(0, 3), (3, 6), (6, 8), (8, 10)]
    assert exchange.fragment_bounds(8, 1) == [(0, 8)]


def test_round_period_is_the_fragment_clock():
    config = ml_collections.ConfigDict({
        "num_workers": 4, "algorithm": {"name": "diloco", "period": 8, "num_fragments": 4},
        "train": {"steps_per_round": 16}})
    assert config_lib.round_period(config) == 2
    config.algorithm.num_fragments = None
    assert config_lib.round_period(config) == 8
    del config.algorithm["num_fragments"]
    assert config_lib.round_period(config) == 8


@pytest.mark.parametrize("name,hparams,exchange_step", [
    ("diloco", DILOCO, "last"), ("eamsgd_outer", ELASTIC, "first")])
def test_known_phase_rounds_of_the_fragment_clock_match_the_unrolled_run(name, hparams,
                                                                         exchange_step):
    """make_round(period=H / F) (what round_period gives the executor), one worker per
    device, the fragment chosen by a switch: equal to steps deciding at run time."""
    layout = parallel.make_worker_layout(4, 4)
    tx = registry.get_algorithm(name, axis_name=layout.axis_name, **hparams, num_fragments=2,
                                exchange_dtype="bfloat16", error_feedback=True)
    run = quadratic_rounds(tx, layout, steps=8)
    known, decided = run(hparams["period"] // 2, exchange_step), run(None)
    for x, y in zip(jax.tree.leaves(known), jax.tree.leaves(decided), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------- compiled HLO

ROUND, PERIOD, P, SIZE = 16, 8, 4, 1027


def _round_collectives(period_of_round: int, **options):
    """The all-reduces of one compiled round of ROUND steps of DiLoCo (H = PERIOD) on a
    quadratic of SIZE parameters in two leaves, P workers on P devices, traced as the
    executor does (outer step last): the compiled collectives, and the (dtype, elements) of
    the all-reduces of the program as lowered."""
    layout = parallel.make_worker_layout(P, P)
    tx = registry.get_algorithm("diloco", axis_name=layout.axis_name, **{
        **DILOCO, "period": PERIOD}, **options)
    params = {"w": jnp.ones((P, SIZE - 3)), "b": jnp.ones((P, 3))}

    def step(carry, target, communicate=None):
        params, state = carry
        u, state = tx.update(jax.tree.map(lambda x: x - target, params), state, params,
                             communicate=communicate)
        return (optax.apply_updates(params, u), state), ()

    round_fn = parallel.make_round(step, layout, donate=False, period=period_of_round,
                                   exchange_step="last")
    lowered = round_fn.lower((params, jax.vmap(tx.init)(params)), jnp.zeros((P, ROUND)))
    # As lowered, one all-reduce per leaf (JAX's psum of a pytree), side by side in one
    # computation, which XLA combines into one when it compiles: per computation, the dtype
    # and the numbers sent.
    exchanges: dict[str, tuple[str, int]] = {}
    computation = ""
    for line in lowered.as_text(dialect="hlo").splitlines():
        if line.endswith("{") and "=" not in line:
            computation = line
        elif " all-reduce(" in line:
            (dtype, elements), = hlo.shapes(line.split("=", 1)[1].split(" all-reduce(")[0])
            exchanges[computation] = (dtype, exchanges.get(computation, ("", 0))[1] + elements)
    wire = [(dtype, str(elements)) for dtype, elements in exchanges.values()]
    return hlo.parse_collectives(lowered.compile().as_text()), wire, SIZE


CHECKED = 2 * P  # the centers' two float32 checksums per worker, in the same all-reduce


def test_hlo_diloco_sends_the_parameters_once_per_period():
    """Bytes per worker per step: P / H numbers (float32, plus the 2 p checksums), one
    all-reduce at the last step of each period, no conditional (known-phase rounds)."""
    (plain,), wire, size = _round_collectives(PERIOD)
    assert wire == [("f32", str(size + CHECKED))]
    assert (plain.op, plain.dtype, plain.elements) == ("all-reduce", "f32", size + CHECKED)
    assert not plain.inside_conditional and plain.trip_count == ROUND // PERIOD
    assert math.isclose(hlo.bytes_per_step([plain], ROUND), 4 * (size + CHECKED) / PERIOD)


def test_hlo_bfloat16_exchange_halves_the_bytes():
    """With ``exchange_dtype="bfloat16"`` the one all-reduce is bfloat16 (the checksums ride
    as 8 p exact bytes): about half the bytes per step.

    The dtype on the wire is read from the program as lowered: XLA's CPU backend widens a
    bfloat16 all-reduce to float32 when it compiles it (its reducer is ``..._promoted``);
    GPU and TPU all-reduce bfloat16 as such. Counts and sizes come from the compiled HLO.
    """
    (narrow,), wire, size = _round_collectives(PERIOD, exchange_dtype="bfloat16",
                                               error_feedback=True)
    assert wire == [("bf16", str(size + 8 * P))]
    assert narrow.elements == size + 8 * P and narrow.trip_count == ROUND // PERIOD
    assert not narrow.inside_conditional
    half = hlo.bytes_per_step([narrow._replace(bytes=2 * narrow.elements)], ROUND)
    assert math.isclose(half, 2 * (size + 8 * P) / PERIOD)
    assert 0.5 <= half / (4 * (size + CHECKED) / PERIOD) < 0.52


def test_hlo_fragments_send_f_pieces_of_a_fth_per_period():
    """F = 4 fragments: a period holds F all-reduces of about P / F numbers, one per
    exchange (one branch of a switch over the fragments), an exchange every H / F steps:
    the bytes per step of the plain exchange, the peak per exchange F-fold smaller."""
    fragments = 4
    pieces, wire, size = _round_collectives(PERIOD // fragments, num_fragments=fragments)
    assert len(pieces) == len(wire) == fragments
    assert sorted(c.branches[-1][1] for c in pieces) == list(range(fragments))
    for c in pieces:
        assert (c.op, c.dtype, c.inside_conditional) == ("all-reduce", "f32", True)
        assert c.branches[-1][2] == fragments  # one branch of a switch over the F fragments
        assert abs(c.elements - CHECKED - size / fragments) <= 1
        assert c.trip_count == ROUND // (PERIOD // fragments)  # an exchange every H / F steps
    # Each exchange takes one branch: the bytes per step are those of the plain exchange.
    assert math.isclose(hlo.bytes_per_step(pieces, ROUND, branch_rate=1 / fragments),
                        4 * (size + fragments * CHECKED) / PERIOD)
    assert max(c.bytes for c in pieces) <= 4 * (size / fragments + 1 + CHECKED)
