"""A sweep split across processes (easgd_jax/experiments/shards.py): whole settings per
part, balanced, the same parts in every process; the locks of one split and of another."""

from __future__ import annotations

import os

import pytest

from easgd_jax.experiments import shards
from easgd_jax.training.lock import WorkdirBusyError, held_by, workdir_lock


def test_parse_takes_k_of_n_and_refuses_the_rest():
    assert shards.parse("1/3") == (1, 3) and shards.parse(None) is None and shards.parse("") is None
    for bad, message in (("3/3", "K must be in 0..N-1"), ("-1/2", "K must be in"),
                         ("1", "takes K/N"), ("a/b", "takes K/N")):
        with pytest.raises(ValueError, match=message):
            shards.parse(bad)


def test_parts_are_whole_settings_balanced_on_work_and_cover_every_item_once():
    # (setting, work): setting "a" is heavy (3 x 4), "b".."e" light; seeds of a setting
    # interleaved with other settings in the plan's order, which each part keeps.
    items = [("a", 4), ("b", 1), ("a", 4), ("c", 1), ("d", 2), ("a", 4), ("e", 2), ("b", 1)]
    parts = [shards.split(items, (k, 2), key=lambda t: t[0], work=lambda t: t[1])
             for k in range(2)]
    assert sorted(parts[0] + parts[1]) == sorted(items)
    assert {s for s, _ in parts[0]}.isdisjoint({s for s, _ in parts[1]})
    assert parts[0] == [("a", 4), ("a", 4), ("a", 4)]  # the heaviest alone
    assert parts[1] == [("b", 1), ("c", 1), ("d", 2), ("e", 2), ("b", 1)]
    assert [sum(w for _, w in p) for p in parts] == [12, 7]
    assert shards.split(items, None, key=lambda t: t[0], work=lambda t: t[1]) == items
    three = [shards.split(items, (k, 3), key=lambda t: t[0], work=lambda t: t[1])
             for k in range(3)]
    assert [sum(w for _, w in p) for p in three] == [12, 4, 3]


def test_shards_of_one_split_share_a_workdir_and_another_split_is_refused(tmp_path):
    workdir = str(tmp_path)
    with shards.sweep_lock(workdir, (0, 2)):
        with shards.sweep_lock(workdir, (1, 2)):  # the other part: beside it
            assert held_by(os.path.join(workdir, ".sweep.lock.shard-0-of-2")) is not None
            with pytest.raises(WorkdirBusyError, match="is in use by pid"):
                with shards.sweep_lock(workdir, (1, 2)):  # the same part twice
                    pass
            for other in (None, (0, 3)):  # unsharded, or split another way: overlap
                with pytest.raises(WorkdirBusyError, match="a sweep of another split"):
                    with shards.sweep_lock(workdir, other):
                        pass
    assert held_by(os.path.join(workdir, ".sweep.lock.shard-0-of-2")) is None  # released
    with shards.sweep_lock(workdir, None):  # the shards ended: a whole sweep may run
        with pytest.raises(WorkdirBusyError, match="a sweep of another split"):
            with shards.sweep_lock(workdir, (0, 2)):
                pass
    with workdir_lock(workdir, ".sweep.lock.shard-1-of-2"):  # a stale file, held: refused
        with pytest.raises(WorkdirBusyError):
            with shards.sweep_lock(workdir, (0, 4)):
                pass
