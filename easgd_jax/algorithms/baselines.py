"""Sequential baselines of the EASGD paper and synchronous data-parallel SGD.

The sequential (p = 1) comparators of Zhang, Choromanska & LeCun (NIPS 2015, arXiv
1412.6651, Section 5), with eta the learning rate, delta the momentum and g = g(x_t) the
stochastic gradient at the params:

    SGD:     x_{t+1} = x_t - eta * g
    MSGD:    v_{t+1} = delta * v_t - eta * g(x_t + delta * v_t);  x_{t+1} = x_t + v_{t+1}
             (Nesterov, in look-ahead form: params are w = x + delta * v, see ``momentum``)
    ASGD:    SGD, and z_t = (1 - a_t) z_{t-1} + a_t x_t with a_t = 1 / (t + 1), z_0 = x_0,
             so that z_t = (x_0 + ... + x_t) / (t + 1) is the Polyak average of the iterates
    MVASGD:  SGD, and the same recursion with a constant rate a in (0, 1] (paper: 0.001)

with t the number of SGD steps taken so far (t = 1 after the first). ASGD and MVASGD
average the SGD iterate x_t itself, the point where the gradient is taken (plain SGD has
no look-ahead point), after its update; z is stored in the state field ``average``, which
is what the training loop evaluates (the running averages are in ``averages``).

Each worker runs its own copy: with p > 1 these are p independent runs and ``axis_name``
is unused (it is accepted so that every algorithm is built the same way).

``data_parallel_sgd`` is the reference every communication-saving method is compared with:
synchronous data-parallel (Nesterov) SGD, with ONE all-reduce per step of the gradients,

    gbar = (1/p) * sum_i g_i(x);   x <- x - eta * gbar           (delta = 0)
                                   Nesterov step on gbar          (delta > 0)

so every worker applies the same update and the workers stay identical.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from easgd_jax.algorithms import checks
from easgd_jax.algorithms.averages import constant_rate, polyak_rate, running_average
from easgd_jax.algorithms.base import CENTER_DTYPE, AxisName, center_copy, check_center_dtype
from easgd_jax.algorithms.collectives import check_on_disagreement, tree_pmean
from easgd_jax.algorithms.momentum import nesterov


class AveragedSGDState(NamedTuple):
    """State of :func:`asgd` and :func:`mvasgd`.

    Attributes:
        count: the step count t (int32), the number of SGD steps taken.
        average: z_t, the (moving) average of the iterates x_0..x_t.
    """

    count: jax.Array
    average: optax.Params


def sgd(
    learning_rate: optax.ScalarOrSchedule, axis_name: AxisName = "workers",
    on_disagreement: str = "nan",
) -> optax.GradientTransformationExtraArgs:
    """Sequential SGD: x <- x - eta * g(x). ``axis_name`` is unused (no communication).

    Args:
        learning_rate: eta, a number or an optax schedule.
        axis_name: accepted for uniformity with the distributed algorithms; unused.
        on_disagreement: accepted for uniformity with the algorithms that keep a replicated
            center (checked, unused).
    """
    checks.check_rate("learning_rate", learning_rate)
    checks.check_axis_name(axis_name)
    check_on_disagreement(on_disagreement)
    return optax.sgd(learning_rate)


def msgd(
    learning_rate: optax.ScalarOrSchedule, momentum: float, axis_name: AxisName = "workers",
    on_disagreement: str = "nan",
) -> optax.GradientTransformationExtraArgs:
    """Sequential Nesterov momentum SGD (the paper's MSGD), in look-ahead form.

        v <- delta * v - eta * g(x + delta * v);   x <- x + v

    ``params`` are the look-ahead point w = x + delta * v (where the gradient is taken, and
    what the training loop evaluates); delta = 0 is :func:`sgd`. ``axis_name`` is unused.

    Args:
        learning_rate: eta, a number or an optax schedule.
        momentum: delta in [0, 1).
        axis_name: accepted for uniformity with the distributed algorithms; unused.
        on_disagreement: accepted for uniformity with the algorithms that keep a replicated
            center (checked, unused).
    """
    checks.check_axis_name(axis_name)
    check_on_disagreement(on_disagreement)
    return nesterov(learning_rate, momentum)


def _averaged_sgd(
    learning_rate: optax.ScalarOrSchedule, average_rate: Callable[[jax.Array], jax.Array | float],
    center_dtype: Any,
) -> optax.GradientTransformationExtraArgs:
    """SGD whose state also tracks z_t = (1 - a_t) z_{t-1} + a_t x_t, z_0 = x_0 (z in at
    least ``center_dtype``); ``update`` ignores extra arguments."""
    check_center_dtype(center_dtype)
    rate = checks.schedule_value(learning_rate)

    def init_fn(params: optax.Params) -> AveragedSGDState:
        return AveragedSGDState(
            count=jnp.zeros([], jnp.int32), average=center_copy(params, center_dtype))

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError("averaged SGD needs params: call update(grads, state, params).")
        eta = rate(state.count)
        new_updates = jax.tree.map(lambda g: (-eta * g).astype(g.dtype), updates)
        # The new iterate exactly as optax.apply_updates will form it.
        new_params = optax.apply_updates(params, new_updates)
        count = optax.safe_int32_increment(state.count)
        average = running_average(state.average, new_params, average_rate(count))
        return new_updates, AveragedSGDState(count=count, average=average)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def asgd(
    learning_rate: optax.ScalarOrSchedule, axis_name: AxisName = "workers",
    center_dtype: Any = CENTER_DTYPE, on_disagreement: str = "nan",
) -> optax.GradientTransformationExtraArgs:
    """ASGD: SGD plus the Polyak average of its iterates (field ``average``, evaluated).

        x_t = x_{t-1} - eta * g(x_{t-1});   z_t = (1 - a_t) z_{t-1} + a_t x_t,  a_t = 1/(t+1)

    with z_0 = x_0, so z_t is the mean of x_0..x_t. ``axis_name`` is unused.

    Args:
        learning_rate: eta, a number or an optax schedule.
        axis_name: accepted for uniformity with the distributed algorithms; unused.
        center_dtype: z is kept in at least this dtype (float32: bfloat16 params get a
            float32 average); None: the params'.
        on_disagreement: accepted for uniformity with the algorithms that keep a replicated
            center (checked, unused).
    """
    checks.check_rate("learning_rate", learning_rate)
    checks.check_axis_name(axis_name)
    check_on_disagreement(on_disagreement)
    return _averaged_sgd(learning_rate, polyak_rate, center_dtype)


def mvasgd(
    learning_rate: optax.ScalarOrSchedule,
    moving_average_rate: float,
    axis_name: AxisName = "workers",
    center_dtype: Any = CENTER_DTYPE,
    on_disagreement: str = "nan",
) -> optax.GradientTransformationExtraArgs:
    """MVASGD: SGD plus a moving average of its iterates (field ``average``, evaluated).

        x_t = x_{t-1} - eta * g(x_{t-1});   z_t = (1 - a) z_{t-1} + a x_t,  z_0 = x_0

    Args:
        learning_rate: eta, a number or an optax schedule.
        moving_average_rate: a in (0, 1] (paper: 0.001); a = 1 makes z the iterate.
        axis_name: accepted for uniformity with the distributed algorithms; unused.
        center_dtype: z is kept in at least this dtype (float32: a bfloat16 z with
            a = 0.001 would never move); None: the params'.
        on_disagreement: accepted for uniformity with the algorithms that keep a replicated
            center (checked, unused).
    """
    checks.check_rate("learning_rate", learning_rate)
    checks.check_moving_average_rate(moving_average_rate)
    checks.check_axis_name(axis_name)
    check_on_disagreement(on_disagreement)
    return _averaged_sgd(learning_rate, constant_rate(checks.scalar(moving_average_rate)),
                         center_dtype)


def mean_over_workers(axis_name: AxisName = "workers") -> optax.GradientTransformationExtraArgs:
    """Replaces each worker's gradient by the mean over ``axis_name`` (one all-reduce);
    ``update`` ignores extra arguments."""
    checks.check_axis_name(axis_name)

    def init_fn(params: optax.Params) -> optax.EmptyState:
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        return tree_pmean(updates, axis_name), state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def data_parallel_sgd(
    learning_rate: optax.ScalarOrSchedule,
    momentum: float = 0.0,
    axis_name: AxisName = "workers",
    on_disagreement: str = "nan",
) -> optax.GradientTransformationExtraArgs:
    """Synchronous data-parallel SGD: all-reduce mean of the gradients, then the SGD step::

        gbar = (1/p) sum_i g_i;   x <- x - eta * gbar                     (delta = 0)
        v <- delta * v - eta * gbar;   w <- w - eta * gbar + delta * v    (delta > 0, Nesterov
                                                                         on w = x + delta v)

    One all-reduce per step; workers that start equal stay equal, and p workers with batch
    size b follow single-worker SGD with batch size p * b.

    Args:
        learning_rate: eta, a number or an optax schedule.
        momentum: delta in [0, 1); 0 is plain SGD (no velocity buffer).
        axis_name: the worker axis of the all-reduce.
        on_disagreement: accepted for uniformity with the algorithms that keep a replicated
            center (checked, unused).
    """
    checks.check_rate("learning_rate", learning_rate)
    checks.check_momentum(momentum)
    checks.check_axis_name(axis_name)
    check_on_disagreement(on_disagreement)
    # A Python 0 needs no velocity buffer; an array (optax.inject_hyperparams, which passes
    # one to init and to every update, possibly traced) always gets one, so that the
    # state's structure never depends on a value.
    plain = isinstance(momentum, numbers.Real) and momentum == 0
    local = optax.sgd(learning_rate) if plain else nesterov(learning_rate, momentum)
    return optax.chain(mean_over_workers(axis_name), local)


def warmup_cosine(learning_rate: float, warmup_steps: int = 0,
                  decay_steps: int = 0) -> optax.Schedule:
    """The language-model rate schedule of the step count t: a linear warm-up from 0 over
    ``warmup_steps`` W, then a cosine decay to ``learning_rate / 10`` at step ``decay_steps``
    D (counted from 0, warm-up included; optax's ``warmup_cosine_decay_schedule``, written
    here in array arithmetic so that ``optax.inject_hyperparams`` may trace any argument)::

        eta_t = eta t / W                                            t < W
        eta_t = eta (0.1 + 0.45 (1 + cos(pi min(t - W, D - W) / (D - W))))    t >= W

    ``decay_steps`` 0: no decay (``eta`` after the warm-up)."""
    checks.check_rate("learning_rate", learning_rate)
    for name, value in (("warmup_steps", warmup_steps), ("decay_steps", decay_steps)):
        number = checks._number(value, integral=True)
        if number is None or (checks.is_concrete(value) and number < 0):
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}.")
    if checks.is_concrete(warmup_steps, decay_steps) and 0 < decay_steps <= warmup_steps:
        raise ValueError(f"decay_steps ({decay_steps}) must exceed warmup_steps "
                         f"({warmup_steps}), or be 0 (no decay).")

    def schedule(count: jax.Array) -> jax.Array:
        dtype = jnp.result_type(float)  # float64 under jax_enable_x64, else float32
        t = jnp.asarray(count, dtype)
        w, d = jnp.asarray(warmup_steps, dtype), jnp.asarray(decay_steps, dtype)
        warm = learning_rate * t / jnp.maximum(w, 1.0)
        progress = jnp.clip((t - w) / jnp.maximum(d - w, 1.0), 0.0, 1.0)
        decayed = learning_rate * (0.1 + 0.45 * (1.0 + jnp.cos(jnp.pi * progress)))
        return jnp.where(t < w, warm, jnp.where(d > 0, decayed, learning_rate))

    return schedule


def data_parallel_adamw(
    learning_rate: float,
    warmup_steps: int = 0,
    decay_steps: int = 0,
    b1: float = 0.9,
    b2: float = 0.95,
    weight_decay: float = 0.1,
    axis_name: AxisName = "workers",
    on_disagreement: str = "nan",
) -> optax.GradientTransformationExtraArgs:
    """Synchronous data-parallel AdamW (Loshchilov & Hutter 2019, arXiv 1711.05101), the
    language-model baseline of DiLoCo (Douillard et al. 2023, arXiv 2311.08105)::

        gbar = (1/p) sum_i g_i;   m <- b1 m + (1 - b1) gbar;   v <- b2 v + (1 - b2) gbar^2
        x <- x - eta_t (m_hat / (sqrt(v_hat) + eps) + lambda x)

    with ``eta_t`` :func:`warmup_cosine`. One all-reduce per step; workers that start equal
    stay equal (p workers with batch b follow one with batch p b).

    Args:
        learning_rate: the peak rate eta.
        warmup_steps, decay_steps: the schedule (:func:`warmup_cosine`).
        b1, b2: Adam's moment decay rates in [0, 1).
        weight_decay: lambda >= 0, decoupled (set ``train.weight_decay`` 0 beside it).
        axis_name: the worker axis of the all-reduce.
        on_disagreement: accepted for uniformity with the algorithms that keep a replicated
            center (checked, unused).
    """
    checks.check_momentum(b1, "b1")
    checks.check_momentum(b2, "b2")
    checks.check_interval("weight_decay", weight_decay, 0.0, float("inf"))
    checks.check_axis_name(axis_name)
    check_on_disagreement(on_disagreement)
    rate = warmup_cosine(learning_rate, warmup_steps, decay_steps)
    return optax.chain(mean_over_workers(axis_name),
                       optax.adamw(rate, b1, b2, weight_decay=weight_decay))
