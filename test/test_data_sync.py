"""Timeline synchronisation (zero-order hold, staleness, spans, gaps) without bags."""

import numpy as np

from genil_ros.data.sync import find_spans, make_ticks, plan_timeline, zoh

S = 1_000_000_000


def test_zoh_holds_latest_and_marks_stale():
    stamps = np.array([0, 100, 200, 600]) * 1_000_000  # ms -> ns
    ticks = np.array([-50, 0, 150, 250, 450, 600, 700]) * 1_000_000
    idx, ok = zoh(stamps, ticks, 300_000_000)
    assert idx.tolist() == [-1, 0, 1, 2, 2, 3, 3]
    assert ok.tolist() == [False, True, True, True, True, True, True]
    idx, ok = zoh(stamps, ticks, 200_000_000)
    assert ok.tolist() == [False, True, True, True, False, True, True]
    idx, _ = zoh(stamps, ticks, S, strict=True)  # strictly before the tick
    assert idx.tolist() == [-1, -1, 1, 2, 2, 2, 3]


def test_make_ticks_and_spans():
    assert make_ticks(0, S, 10.0).tolist() == [k * 100_000_000 for k in range(11)]
    assert make_ticks(5, 4, 10.0).size == 0
    v = np.array([0, 1, 1, 0, 1, 1, 1, 0], bool)
    assert find_spans(v) == [(1, 3), (4, 7)]
    br = np.zeros(8, bool)
    br[5] = True
    assert find_spans(v, br) == [(1, 3), (4, 5), (5, 7)]


def test_plan_cuts_on_stale_streams_and_joint_gaps():
    js = np.arange(0, 3 * S, S // 50)  # 50 Hz for 3 s
    js = js[(js < 1 * S) | (js > 1_400_000_000)]  # 0.4 s without joint states
    cam = np.arange(0, 3 * S, S // 20)
    act = np.arange(S // 1000, 3 * S, S // 10)  # 1 ms after each tick
    spans = lambda p: [(p.ticks[a] / S, p.ticks[b - 1] / S) for a, b in p.spans]  # noqa: E731
    # 0.25 s staleness: ticks 1.3 and 1.4 have no fresh joint state
    plan = plan_timeline({"js": js, "cam": cam, "act": act}, 10.0, 0.25, 0.3, 2, reference="js", action="act")
    assert spans(plan) == [(0.0, 1.2), (1.5, 2.9)] and plan.stale["js"] == 2
    # 0.5 s staleness holds 0.98 s over 1.3 and 1.4, but the 0.44 s gap (> episode_gap_s 0.3) still cuts
    plan = plan_timeline({"js": js, "cam": cam, "act": act}, 10.0, 0.5, 0.3, 2, reference="js", action="act")
    assert spans(plan) == [(0.0, 1.4), (1.5, 2.9)]
    for a, b in plan.spans:
        # the action of tick t is the command published just after t (held until the next tick)
        ai = plan.index["act"][a:b]
        np.testing.assert_array_equal(act[ai] - plan.ticks[a:b], np.full(b - a, S // 1000))
    # next_state drops spans that would be too short once the last tick is gone
    plan2 = plan_timeline({"js": js[:3]}, 10.0, 0.25, 1.0, 1, reference="js", next_state=True)
    assert plan2.spans == [] and plan2.dropped == [(0, 1)]
