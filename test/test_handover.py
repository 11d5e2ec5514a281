"""Chunk handover strategies and the boundary metric, without ROS or torch (genil_ros/control/)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from genil_ros.control import (
    ActionPlan,
    ConditionOnPrefix,
    DelayTicks,
    EnsemblePlan,
    InpaintPrefix,
    RecedingHorizon,
    TemporalEnsemble,
    boundary_metrics,
    check_handover,
    make_handover,
    resolve_handover,
    summarize,
)
from genil_ros.control.handover import committed_prefix
from genil_ros.errors import GenilError

T_O, T_P, T_A = 2, 16, 8


def tagged(tag: float, window_tick: int) -> np.ndarray:
    """A chunk whose entry for tick t holds (tag, t): which chunk an action came from, and for which tick."""
    ticks = window_tick - (T_O - 1) + np.arange(T_P)
    return np.stack([np.full(T_P, tag), ticks.astype(float)], axis=1)


def run_loop(strategy, delay: int, ticks: int = 60, model=None):
    """The control loop of the node / the evaluator, with a model that takes ``delay`` ticks: returns the
    command of every tick, the chunks (window tick, arrival tick, chunk, prefix) and the plan per tick."""
    model = model or (lambda k, prefix: tagged(k, k))
    plan, job, delays = None, None, DelayTicks()
    commands, chunks = [], []

    def arrive(t):
        nonlocal plan, job
        if job is not None and job[1] == t:
            w, arr, chunk, prefix = job
            if chunks:
                delays.add(arr - w)
            plan = strategy.switch(plan, ActionPlan(chunk, w, T_O, T_A), t).plan
            chunks.append((w, arr, chunk, prefix))
            job = None

    for t in range(ticks):  # the order of genil_ros/sim/latency_eval.py
        arrive(t)
        lead = delays.estimate(delay)
        if job is None and strategy.wants_next(plan, t, lead):
            prefix = strategy.prefix(plan, t, lead, T_O, T_P)
            job = (t, t if plan is None else t + delay, model(t, prefix), prefix)
        arrive(t)
        rows = plan.actions_from(t)
        assert rows is not None, f"tick {t}: the plan ran out"
        commands.append((rows[0], plan.source))
    return commands, chunks


# --------------------------------------------------------------------------- plans


def test_action_plan_remembers_what_was_executed_before_it():
    a = ActionPlan(tagged(1, 10), 10, T_O, T_A)
    b = ActionPlan(tagged(2, 13), 13, T_O, T_A)
    b.follow(a, 15)  # b arrived at tick 15: ticks before that were a's
    assert b.executed(14).tolist() == [1, 14] and b.executed(15).tolist() == [2, 15]
    assert b.entry(12).tolist() == [2, 12] and b.entry(9) is None  # entry 0 is the window's past tick 12
    c = ActionPlan(tagged(3, 17), 17, T_O, T_A)
    c.follow(b, 18)
    d = ActionPlan(tagged(4, 20), 20, T_O, T_A)
    d.follow(c, 21)
    assert d.executed(19).tolist() == [3, 19] and d.executed(17).tolist() == [2, 17]
    assert b.prev is None  # kept two plans deep, not a growing chain


def test_ensemble_plan_weights_older_chunks_as_act():
    old = ActionPlan(np.zeros((T_P, 1)), 0, T_O, T_A)
    new = ActionPlan(np.ones((T_P, 1)), 2, T_O, T_A)
    old.start, new.start = 0, 3
    plan = EnsemblePlan([old, new], weight=0.5)
    w = np.exp(-0.5 * np.arange(2))
    expect = w[1] / w.sum()  # the older chunk (0) gets the larger weight
    rows = plan.actions_from(3)
    assert rows[:, 0] == pytest.approx([expect] * len(rows))
    assert len(rows) == plan.nominal_end - 3 + 1 and plan.source == new.id
    assert EnsemblePlan([old], 0.5).actions_from(1)[0, 0] == 0.0


# --------------------------------------------------------------------------- strategies in a loop


@pytest.mark.parametrize("delay", [0, 1, 3, 5])
@pytest.mark.parametrize("name", ["receding_horizon", "inpaint", "prefix_conditioning"])
def test_every_tick_is_commanded_once_from_the_right_entry(name, delay):
    strategy = make_handover(name)
    commands, chunks = run_loop(strategy, delay)
    ticks = [int(c[0][1]) for c in commands]
    assert ticks == list(range(len(commands)))  # no tick duplicated, none skipped, each row for its own tick
    for w, arr, _, _ in chunks:
        assert arr - w == (0 if w == 0 else delay)
    used = {int(c[0][0]) for c in commands}
    assert used == {w for w, *_ in chunks}  # every chunk was executed
    # a chunk every T_a - d ticks; when that is shorter than the delay the one worker is the limit (each
    # chunk then runs past its T_a actions until the next one arrives)
    spacing = max(T_A - delay, delay, 1)
    assert all(b - a == spacing for (a, *_), (b, *_) in zip(chunks[1:], chunks[2:]))


@pytest.mark.parametrize("delay", [1, 3])
@pytest.mark.parametrize("name", ["inpaint", "prefix_conditioning"])
def test_the_prefix_is_what_the_loop_commands_meanwhile(name, delay):
    strategy = make_handover(name)
    commands, chunks = run_loop(strategy, delay)
    executed = np.array([c[0] for c in commands])
    for w, _, _, prefix in chunks[1:]:
        assert prefix is not None and prefix.method == strategy.prefix_method
        n = prefix.n_fixed
        assert n == T_O - 1 + delay  # the window's past tick + the ticks until the chunk can arrive
        assert np.array_equal(prefix.values[:n], executed[w - (T_O - 1): w - (T_O - 1) + n])
        soft = prefix.weights[n:n + strategy.soft_ticks]  # inpaint: 4 soft ticks by default, conditioning none
        assert len(soft) == strategy.soft_ticks and np.all((soft > 0) & (soft < 1))
        assert np.all(prefix.weights[n + strategy.soft_ticks:] == 0)


def test_soft_prefix_weights_decay_after_the_fixed_part():
    plan = ActionPlan(tagged(1, 0), 0, T_O, T_A)
    values, weights = committed_prefix(plan, 2, 2, T_O, T_P, soft_ticks=3)
    assert weights[:3].tolist() == [1, 1, 1]
    soft = weights[3:6]
    assert np.all(np.diff(soft) < 0) and 0 < soft[-1] < soft[0] < 1 and np.all(weights[6:] == 0)
    c = 1 - 1 / 4
    assert soft[0] == pytest.approx(c * (math.exp(c) - 1) / (math.e - 1))
    assert values[3:6, 1].tolist() == [4, 5, 6]  # the current plan's rows for ticks 4..6
    assert InpaintPrefix(soft_ticks=3).prefix(None, 0, 2, T_O, T_P) is None  # nothing committed yet
    assert ConditionOnPrefix().prefix(plan, 2, 2, T_O, T_P).weights.tolist().count(1.0) == 3


def test_receding_horizon_replaces_the_plan_and_skips_the_delay():
    commands, chunks = run_loop(RecedingHorizon(), 2)
    src = [int(c[0][0]) for c in commands]
    for w, arr, _, _ in chunks[1:]:
        assert src[arr] == w and src[arr - 1] != w  # the chunk's own action from its arrival on
    assert all(b - a == T_A - 2 for (a, *_), (b, *_) in zip(chunks[1:], chunks[2:]))  # T_a - d per chunk


@pytest.mark.parametrize("delay", [0, 1, 3, 5])
def test_temporal_ensemble_commands_every_tick_once_from_entries_for_that_tick(delay):
    commands, chunks = run_loop(TemporalEnsemble(weight=0.1), delay)
    # every member's entry for tick t holds t, so a mean of entries for the right tick is t exactly
    assert [c[0][1] for c in commands] == pytest.approx(list(range(len(commands))))
    assert all(arr - w == (0 if w == 0 else delay) for w, arr, *_ in chunks)
    assert all(b - a == max(delay, 1) for (a, *_), (b, *_) in zip(chunks[1:], chunks[2:]))  # worker never idle


def test_temporal_ensemble_averages_every_chunk_covering_the_tick():
    strategy = TemporalEnsemble(weight=0.3)
    commands, chunks = run_loop(strategy, 2, model=lambda k, prefix: np.full((T_P, 1), float(k)))
    assert all(arr - w == 2 for w, arr, *_ in chunks[1:])  # a new chunk whenever the last one came
    for t in range(10, 40):
        cover = [w for w, arr, *_ in chunks if arr <= t and w - (T_O - 1) + T_P - 1 >= t]  # oldest first
        wts = np.exp(-0.3 * np.arange(len(cover)))
        assert commands[t][0][0] == pytest.approx(np.dot(wts, cover) / wts.sum()), t


def test_make_handover_and_model_support():
    assert make_handover("temporal_ensemble", ensemble_weight=0.1).weight == 0.1
    assert make_handover("inpaint", soft_ticks=2, guidance=0.0).describe() == "inpaint (guidance 0, soft 2 ticks)"
    with pytest.raises(GenilError, match="handover 'rtc': not one of"):
        make_handover("rtc")
    # the default: the grids' winner, inpainting by replacement with 4 soft ticks, where the model can inpaint
    assert make_handover("inpaint").guidance == 0.0 and make_handover("inpaint").soft_ticks == 4
    assert resolve_handover("auto", ("inpaint",)) == "inpaint"
    assert resolve_handover("auto", ("inpaint", "condition")) == "inpaint"
    assert resolve_handover("auto", ()) == "receding_horizon"
    assert resolve_handover("temporal_ensemble", ()) == "temporal_ensemble"
    with pytest.raises(GenilError, match="resolve_handover"):
        make_handover("auto")
    with pytest.raises(GenilError, match="handover_soft_ticks"):
        make_handover("inpaint", soft_ticks=-1)
    check_handover(make_handover("receding_horizon"), (), "ck")
    check_handover(make_handover("inpaint"), ("inpaint",), "ck")
    with pytest.raises(GenilError, match="parameter handover: prefix_conditioning needs a checkpoint trained"):
        check_handover(make_handover("prefix_conditioning"), ("inpaint",), "ck")


def test_delay_ticks_is_the_most_of_the_recent():
    d = DelayTicks(n=3)
    assert d.estimate(4) == 4
    for v in (1, 5, 2, 2, 1):
        d.add(v)
    assert d.estimate(4) == 2  # 5 has left the window of 3


# --------------------------------------------------------------------------- boundary metric


def test_boundary_metric_separates_handovers_from_inside():
    q = np.cumsum(np.full((12, 2), 0.1), axis=0)  # 0.1 rad per tick on both joints
    q[6:, 1] += 0.5  # the chunk starting at tick 6 is 0.5 rad off on joint 1
    source = np.array([1] * 6 + [2] * 6)
    measured = np.vstack([q[:1], q[:-1]])  # the arm answers one tick later
    m = boundary_metrics(q, measured, source)
    assert m["handovers"] == 1
    cj = m["commanded"]["jump"]
    assert cj["handover"] == pytest.approx([0.6]) and max(cj["inside"]) == pytest.approx(0.1)
    assert len(cj["inside"]) == 10  # ticks 1..11 but the handover tick 6
    assert m["commanded"]["accel"]["handover"] == pytest.approx([0.5])  # the largest of the two spanning it
    assert m["commanded"]["jerk"]["handover"] == pytest.approx([1.0])
    assert m["measured"]["jump"]["handover"] == pytest.approx([0.6])  # at tick 7, one later
    assert max(m["measured"]["jump"]["inside"]) == pytest.approx(0.1)
    held = source.copy()
    held[3] = -1  # a hold: neither a handover nor inside a chunk
    mh = boundary_metrics(q, None, held)
    assert mh["handovers"] == 1 and len(mh["commanded"]["jump"]["inside"]) == 8
    s = summarize([m, m])
    assert s["handovers"] == 2 and s["commanded"]["jump"]["handover_p99"] == pytest.approx(0.6)
    assert s["commanded"]["jump"]["inside_max"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="one source per tick"):
        boundary_metrics(q, None, source[:-1])
