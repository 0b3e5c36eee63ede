"""Adaptive-moment methods: APAM, asynchronous parallel AMSGrad (Xu et al., arXiv
2002.09095), and its synchronous baseline.

(The family module is ``adaptive``, not ``amsgrad``, so that ``easgd_jax.algorithms.amsgrad``
is the transformation and shadows no module.)

The master alone holds x, m, v and v_hat. Every gradient g that arrives (computed by some
worker at the master iterate it last read, possibly stale) is applied at once, one at a
time, in arrival order, with no delay compensation; k counts the master's updates:

    m <- b1 m + (1 - b1) g;   v <- b2 v + (1 - b2) g^2;   v_hat <- max(v_hat, v)
    x <- x - a_k m / sqrt(v_hat)                                  (form "paper")

and the worker reads the new x. Three forms of the step (``form``):

- ``"paper"``: as above, no bias correction and no epsilon; a coordinate whose gradients
  were all exactly 0 has m = v_hat = 0 and does not move (0/0 is taken as 0).
- ``"authors"``: the authors' code (github.com/RPI-OPT/APAM, ``APAM.step``): Adam's bias
  correction folded into the step size, epsilon outside the root, v_hat = max of the
  UNcorrected v:  x <- x - a_k sqrt(1 - b2^k) / (1 - b1^k) * m / (sqrt(v_hat) + eps).
- ``"optax"``: ``optax.amsgrad``: m_hat = m / (1 - b1^k), v_hat = max(v_hat, v / (1 - b2^k))
  (the max of the CORRECTED v), x <- x - a_k m_hat / (sqrt(v_hat) + eps).

The authors add the l2 term at the master (at the current x); here, as for every algorithm of
this package, the training loop adds it to the gradient where the gradient is taken.

:func:`amsgrad` is the same step as an optax transformation, and :func:`amsgrad_sync` the
synchronous parallel baseline of the paper: all-reduce (mean) of the p workers' gradients,
then one AMSGrad step, so every worker holds the same x.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from easgd_jax.algorithms import base, checks
from easgd_jax.algorithms.base import AsyncRule, AsyncWorkerState, AxisName, fresh_copy
from easgd_jax.algorithms.collectives import check_on_disagreement, tree_pmean

FORMS = ("paper", "authors", "optax")


class AmsgradMoments(NamedTuple):
    """AMSGrad's buffers: m, v, v_hat (shaped like the params) and k, the step count."""

    count: jax.Array
    m: optax.Updates
    v: optax.Updates
    v_hat: optax.Updates


class ApamMasterState(NamedTuple):
    """The APAM master: the iterate x (``center``, what is evaluated) and its moments."""

    center: optax.Params
    moments: AmsgradMoments


def _check(b1: float, b2: float, eps: float, form: str) -> None:
    checks.check_interval("b1", b1, 0.0, 1.0)
    checks.check_interval("b2", b2, 0.0, 1.0)
    if checks.is_concrete(b1, b2) and (float(b1) == 1.0 or float(b2) == 1.0):
        raise ValueError(f"b1 and b2 must be < 1, got {b1}, {b2}.")
    try:
        if callable(eps):
            raise ValueError
        checks.check_rate("eps", eps)
    except ValueError:
        raise ValueError(f"eps must be a number >= 0, got {eps!r}.") from None
    if form not in FORMS:
        raise ValueError(f"form must be one of {', '.join(FORMS)}; got {form!r}.")


def init_moments(params: optax.Params) -> AmsgradMoments:
    def zeros():
        return jax.tree.map(jnp.zeros_like, params)

    return AmsgradMoments(jnp.zeros([], jnp.int32), zeros(), zeros(), zeros())


def amsgrad_step(
    moments: AmsgradMoments,
    grad: optax.Updates,
    learning_rate: Any,
    b1: float,
    b2: float,
    eps: float,
    form: str,
) -> tuple[optax.Updates, AmsgradMoments]:
    """One AMSGrad step on ``grad``: returns the update (to ADD to x) and the new moments.

    ``learning_rate`` is a_k, already evaluated; k = ``moments.count + 1`` after the step.
    Elementwise in the params, so it applies to any slice of them.
    """
    count = optax.safe_int32_increment(moments.count)
    m = jax.tree.map(lambda m, g: (b1 * m + (1 - b1) * g).astype(m.dtype), moments.m, grad)
    v = jax.tree.map(lambda v, g: (b2 * v + (1 - b2) * g * g).astype(v.dtype), moments.v, grad)
    if form == "optax":
        correction1, correction2 = 1 - b1 ** count, 1 - b2 ** count
        v_hat = jax.tree.map(lambda h, v: jnp.maximum(h, v / correction2), moments.v_hat, v)
        updates = jax.tree.map(
            lambda m, h: -learning_rate * ((m / correction1) / (jnp.sqrt(h) + eps)), m, v_hat)
    else:
        v_hat = jax.tree.map(jnp.maximum, moments.v_hat, v)
        if form == "paper":
            def direction(m, h):
                return m / jnp.where(h > 0, jnp.sqrt(h), 1)
            step_size = learning_rate
        else:  # authors
            def direction(m, h):
                return m / (jnp.sqrt(h) + eps)
            step_size = learning_rate * jnp.sqrt(1 - b2 ** count) / (1 - b1 ** count)
        updates = jax.tree.map(lambda m, h: -step_size * direction(m, h), m, v_hat)
    updates = jax.tree.map(lambda u, m: u.astype(m.dtype), updates, moments.m)
    return updates, AmsgradMoments(count, m, v, v_hat)


def amsgrad(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    form: str = "paper",
) -> optax.GradientTransformationExtraArgs:
    """AMSGrad (Reddi et al., ICLR 2018) in one of the three forms of the module docstring.

    ``form="optax"`` is ``optax.amsgrad(learning_rate, b1, b2, eps)``; ``form="paper"`` is
    ``optax.amsgrad(..., eps=0, bias_correction_mu=False, bias_correction_nu=False)`` except
    that 0/0 gives 0. ``learning_rate`` may be a schedule of the step count k (from 0).
    ``update`` ignores extra arguments (optax's ``GradientTransformationExtraArgs``).
    """
    checks.check_rate("learning_rate", learning_rate)
    _check(b1, b2, eps, form)
    rate = checks.schedule_value(learning_rate)

    def init_fn(params):
        return init_moments(params)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        return amsgrad_step(state, updates, rate(state.count), b1, b2, eps, form)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def amsgrad_sync(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    form: str = "paper",
    axis_name: AxisName = "workers",
    on_disagreement: str = "nan",
) -> optax.GradientTransformationExtraArgs:
    """Synchronous parallel AMSGrad, APAM's baseline: gbar = (1/p) sum_i g_i (one all-reduce
    over ``axis_name``), then one :func:`amsgrad` step on gbar on every worker.

    Workers that start at the same point stay identical. Args as :func:`amsgrad`;
    ``on_disagreement`` is accepted for uniformity with the algorithms that keep a
    replicated center (checked, unused). ``update`` ignores extra arguments.
    """
    checks.check_axis_name(axis_name)
    check_on_disagreement(on_disagreement)
    inner = amsgrad(learning_rate, b1, b2, eps, form)

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        return inner.update(tree_pmean(updates, axis_name), state, params)

    return optax.GradientTransformationExtraArgs(inner.init, update_fn)


def apam(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    form: str = "paper",
) -> AsyncRule[base.NoExtra, ApamMasterState]:
    """APAM as an asynchronous rule: every step of every worker pushes its gradient, the
    master applies one AMSGrad step to it and the worker reads the new x.

        worker:  g = grad f(x_read)                (x_read: the master's x at its last read)
        master:  m, v, v_hat, x <- AMSGrad step on g  (a_k: ``learning_rate`` at k = count)
        worker:  x_read <- x

    The staleness of a gradient is the number of master updates between the worker's read
    and its push. Args as :func:`amsgrad`.
    """
    checks.check_rate("learning_rate", learning_rate)
    _check(b1, b2, eps, form)
    rate = checks.schedule_value(learning_rate)

    def init_master(params):
        return ApamMasterState(fresh_copy(params), init_moments(params))

    def message(worker, grad, index):
        del worker, index
        return (grad,), ()

    def exchange(master, vectors, scalars):
        del scalars
        (grad,) = vectors
        delta, moments = amsgrad_step(
            master.moments, grad, rate(master.moments.count), b1, b2, eps, form)
        center = base.tree_add(master.center, delta)
        return ApamMasterState(center, moments), delta, (center,)

    def receive(worker, replies):
        return worker._replace(params=replies[0])

    def after(worker, grad, communicated):
        del grad, communicated
        return AsyncWorkerState(worker.params, optax.safe_int32_increment(worker.count),
                                worker.extra)

    return AsyncRule(
        name="apam", init_worker=base.init_worker, init_master=init_master,
        gradient_point=lambda worker: worker.params,
        communicates=lambda count, total: count >= 0,
        before=base.keep_worker, message=message, exchange=exchange,
        receive=receive, after=after, stateless_worker=True)
