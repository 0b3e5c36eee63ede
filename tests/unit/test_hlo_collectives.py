"""Collectives per round, read from the compiled HLO (benchmarks/hlo.py); nothing is timed.

EASGD/EAMSGD: one all-reduce of parameter-count float32 elements plus 2 p checksums (the
agreement check of the replicated centers, ``collectives.tree_psum_checking``), inside a
conditional (taken every ``period`` steps); data-parallel SGD: one all-reduce per step,
unconditional; LSGD: the gather of the running losses plus one masked psum of the
parameters, both inside the conditional; the inner optimizer alone: none. With several
workers per device (vmap) the conditional becomes a select and the all-reduce is
unconditional.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks import hlo  # noqa: E402
from easgd_jax import models, parallel  # noqa: E402
from easgd_jax.algorithms import elastic, momentum  # noqa: E402
from easgd_jax.algorithms.baselines import data_parallel_sgd  # noqa: E402
from easgd_jax.algorithms.leader import lsgd_nesterov  # noqa: E402
from easgd_jax.training.sync import TrainState, make_local_step  # noqa: E402

STEPS = 20
LENGTH, CLASSES, BATCH = 12, 3, 4


def _round_hlo(make_tx, num_workers: int, num_devices: int,
               period: int | None = None) -> tuple[str, int]:
    """Compiled HLO of one round of ``STEPS`` local steps of a tiny MLP; and its size."""
    layout = parallel.make_worker_layout(num_workers, num_devices)
    tx = make_tx(layout.axis_name)
    model = models.MLP(num_classes=CLASSES, hidden=(8,))
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, LENGTH)))["params"]
    size = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(params))
    stacked = jax.tree.map(lambda a: jnp.broadcast_to(a, (num_workers, *a.shape)), params)
    state = TrainState(stacked, jax.vmap(tx.init)(stacked),
                       jax.random.split(jax.random.PRNGKey(1), num_workers))
    batches = (jnp.zeros((num_workers, STEPS, BATCH, LENGTH), jnp.float32),
               jnp.zeros((num_workers, STEPS, BATCH), jnp.int32))
    round_fn = parallel.make_round(make_local_step(model, tx, 0.0), layout, donate=False,
                                   period=period)
    return hlo.compiled_text(round_fn, state, batches), size


@pytest.mark.parametrize("algorithm", ["easgd", "eamsgd"])
@pytest.mark.parametrize("period", [pytest.param(1, marks=pytest.mark.slow), 10])
def test_elastic_one_conditional_allreduce_of_the_parameters(algorithm, period):
    checked = 2 * 4  # two checksums of each worker's center ride in the same all-reduce
    def make(axis):
        if algorithm == "easgd":
            return elastic.easgd(0.1, 0.2, period, axis_name=axis)
        return elastic.eamsgd(0.1, 0.9, 0.2, period, axis_name=axis)

    text, size = _round_hlo(make, num_workers=4, num_devices=4)
    collectives = hlo.parse_collectives(text)
    assert [c.op for c in collectives] == ["all-reduce"]
    (c,) = collectives
    assert c.inside_conditional and len(c.branches) == 1 and c.branches[0][2] == 2
    assert (c.dtype, c.elements, c.bytes) == ("f32", size + checked, 4 * (size + checked))
    assert c.group_size == 4 and c.trip_count == STEPS
    assert hlo.executions_per_round(c, 1 / period) == STEPS / period
    assert math.isclose(hlo.bytes_per_step(collectives, STEPS, 1 / period),
                        4 * (size + checked) / period)


def test_data_parallel_one_unconditional_allreduce_per_step():
    text, size = _round_hlo(lambda axis: data_parallel_sgd(0.1, 0.9, axis_name=axis), 4, 4)
    collectives = hlo.parse_collectives(text)
    assert [c.op for c in collectives] == ["all-reduce"]
    (c,) = collectives
    assert not c.inside_conditional
    assert (c.dtype, c.elements, c.trip_count) == ("f32", size, STEPS)
    assert hlo.executions_per_round(c, branch_rate=0.1) == STEPS
    assert hlo.bytes_per_step(collectives, STEPS) == 4 * size


def test_lsgd_gather_and_masked_psum_inside_the_conditional():
    period, p = 5, 4
    text, size = _round_hlo(lambda axis: lsgd_nesterov(0.1, 0.9, 0.1, period, axis_name=axis),
                            p, p)
    collectives = hlo.parse_collectives(text)
    assert sorted((c.op, c.elements) for c in collectives) == [
        ("all-reduce", p), ("all-reduce", size)]
    assert all(c.inside_conditional and c.trip_count == STEPS for c in collectives)
    assert math.isclose(hlo.bytes_per_step(collectives, STEPS, 1 / period),
                        4 * (size + p) / period)


def test_inner_optimizer_alone_has_no_collective():
    text, _ = _round_hlo(lambda axis: momentum.nesterov(0.1, 0.9), 4, 4)
    assert hlo.parse_collectives(text) == []


def test_vmapped_workers_turn_the_conditional_into_a_select():
    """Two workers per device: the all-reduce is no longer inside a conditional."""
    text, size = _round_hlo(lambda axis: elastic.eamsgd(0.1, 0.9, 0.2, 10, axis_name=axis), 4, 2)
    collectives = hlo.parse_collectives(text)
    assert [(c.op, c.elements, c.inside_conditional) for c in collectives] == [
        ("all-reduce", size + 2 * 4, False)]
    assert collectives[0].group_size == 2


@pytest.mark.parametrize("devices", [4, pytest.param(2, marks=pytest.mark.slow), 1])
def test_rounds_of_whole_periods_run_the_allreduce_once_per_period(devices):
    """make_round(period=tau) (what train.py builds): no conditional, and the all-reduce in
    the loop over periods runs STEPS / tau times per round, also with vmapped workers."""
    period = 5
    text, size = _round_hlo(lambda axis: elastic.eamsgd(0.1, 0.9, 0.2, period, axis_name=axis),
                            4, devices, period=period)
    collectives = hlo.parse_collectives(text)
    checked = 2 * 4  # the centers' checksums, in the same all-reduce
    assert [(c.op, c.elements, c.inside_conditional) for c in collectives] == [
        ("all-reduce", size + checked, False)]
    (c,) = collectives
    assert c.trip_count == STEPS // period and hlo.executions_per_round(c) == STEPS / period
    assert math.isclose(hlo.bytes_per_step(collectives, STEPS), 4 * (size + checked) / period)
    # No conditional on the clock; the one left is the agreement check's (raise only when
    # the centers differ), once per period.
    assert text.count(" conditional(") == 1


SYNTHETIC = """\
HloModule m, entry_computation_layout={(f32[8]{0})->f32[8]{0}}

%add (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %s = f32[] add(%a, %b)
}

%exchange (p: (f32[8])) -> (f32[8]) {
  %p = (f32[8]{0}) parameter(0)
  %x = f32[8]{0} get-tuple-element(%p), index=0
  %ar = f32[8]{0} all-reduce(%x), channel_id=1, replica_groups={{0,1},{2,3}}, to_apply=%add
  %ag = bf16[4,6]{1,0} all-gather(%x), channel_id=2, replica_groups=[2,2]<=[4], dimensions={0}
  ROOT %t = (f32[8]{0}) tuple(%ar)
}

%stay (p: (f32[8])) -> (f32[8]) {
  ROOT %p = (f32[8]{0}) parameter(0)
}

%body (c: (s32[], f32[8])) -> (s32[], f32[8]) {
  %c = (s32[], f32[8]{0}) parameter(0)
  %i = s32[] get-tuple-element(%c), index=0
  %v = f32[8]{0} get-tuple-element(%c), index=1
  %t = (f32[8]{0}) tuple(%v)
  %k = pred[] constant(true)
  %r = (f32[8]{0}) conditional(%k, %t, %t), true_computation=%exchange, false_computation=%stay
  %g = f32[16]{0} collective-permute(%v), channel_id=3, source_target_pairs={{0,1},{1,0}}
  ROOT %o = (s32[], f32[8]{0}) tuple(%i, %v)
}

%cond (c: (s32[], f32[8])) -> pred[] {
  %c = (s32[], f32[8]{0}) parameter(0)
  ROOT %k = pred[] constant(false)
}

ENTRY %main (x: f32[8]) -> f32[8] {
  %x = f32[8]{0} parameter(0)
  %z = s32[] constant(0)
  %t = (s32[], f32[8]{0}) tuple(%z, %x)
  %w = (s32[], f32[8]{0}) while(%t), condition=%cond, body=%body, backend_config=TRIP
  %top = f32[8]{0} all-reduce(%x), channel_id=4, replica_groups={}, to_apply=%add
  ROOT %y = f32[8]{0} get-tuple-element(%w), index=1
}
""".replace("TRIP", '{"known_trip_count":{"n":"7"}}')


def test_parser_on_handwritten_hlo():
    found = {c.name: c for c in hlo.parse_collectives(SYNTHETIC)}
    assert set(found) == {"ar", "ag", "g", "top"}
    ar, ag, cp, top = found["ar"], found["ag"], found["g"], found["top"]
    assert (ar.op, ar.bytes, ar.inside_conditional, ar.group_size, ar.trip_count) == (
        "all-reduce", 32, True, 2, 7)
    assert ar.branches == (("r", 0, 2),)
    # all-gather: each of the 2 participants contributes half of the bf16[4,6] result.
    assert (ag.op, ag.dtype, ag.elements, ag.bytes, ag.group_size) == (
        "all-gather", "bf16", 12, 24, 2)
    assert (cp.op, cp.bytes, cp.inside_conditional, cp.trip_count) == (
        "collective-permute", 64, False, 7)
    assert (top.bytes, top.inside_conditional, top.trip_count, top.group_size) == (
        32, False, 1, None)
    assert hlo.executions_per_round(ar, 0.5) == 3.5
    assert hlo.ring_allreduce_wire_bytes(100.0, 4) == 150.0
