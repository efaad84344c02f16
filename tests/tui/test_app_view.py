"""The app's view maths and alert walk as pure functions (tui/app/view.py, tui/app/alerts.py): no app needed."""

from types import SimpleNamespace

import numpy as np

from accmon.tui.app import view as vm
from accmon.tui.app.alerts import alert_order, banner_alert, causes_of, jump_target


def test_window_whole_run_following_and_fixed():
    assert vm.window(0, 1000, None, span=None, follow=True, x_end=0.0) == (0.0, 1000.0)
    assert vm.window(5, 5, None, span=None, follow=True, x_end=0.0) == (5.0, 6.0)  # one step: never empty
    assert vm.window(0, 1000, None, span=100, follow=True, x_end=0.0) == (900.0, 1000.0)
    assert vm.window(0, 1000, 400, span=100, follow=True, x_end=0.0) == (300.0, 400.0)  # replay: the playhead
    assert vm.window(0, 1000, None, span=100, follow=False, x_end=250.0) == (150.0, 250.0)


def test_zoom_keeps_the_followed_edge_or_the_centre_and_goes_whole_past_the_run():
    assert vm.zoomed(900, 1000, 0.5, follow=True, x_end=7.0, run_span=1000) == (50.0, 7.0)
    assert vm.zoomed(100, 300, 0.5, follow=False, x_end=300.0, run_span=1000) == (100.0, 250.0)
    assert vm.zoomed(100, 104, 0.5, follow=False, x_end=104.0, run_span=1000) == (8.0, 106.0)  # at least 8 steps
    assert vm.zoomed(0, 600, 2, follow=True, x_end=0.0, run_span=1000)[0] is None


def test_pan_zooms_to_half_first_and_follows_again_at_the_newest_step():
    assert vm.panned(0, 1000, -1, span=None, right_edge=1000) == (500.0, 500.0, False)
    assert vm.panned(0, 1000, 1, span=None, right_edge=1000) == (500.0, 1000.0, True)
    assert vm.panned(400, 500, -1, span=100, right_edge=1000) == (100, 475.0, False)
    assert vm.panned(400, 500, 1, span=100, right_edge=None) == (100, 525.0, False)  # nothing read yet


def test_playhead_clamps_and_advances_at_the_runs_own_pace():
    assert vm.head_at(None, 10, 90) == 90
    assert vm.head_at(3.4, 10, 90) == 10 and vm.head_at(50.6, 10, 90) == 51 and vm.head_at(1e9, 10, 90) == 90
    no_times = SimpleNamespace(time_at_step=lambda s: None, step_at_time=lambda t: None)
    assert vm.advance(10.0, 0, 1000, 1, no_times, 0.2) == 30.0  # 100 steps a second at ×1
    assert vm.advance(990.0, 0, 1000, 10, no_times, 0.2) == 1000  # never past the last step read
    # A run that took 1 s per 10 steps: ×10 for 0.2 s of play moves 2 s of the run's time, 20 steps.
    steps = np.arange(0, 1001)
    paced = SimpleNamespace(time_at_step=lambda s: float(s) / 10,
                            step_at_time=lambda t: int(steps[min(len(steps) - 1, int(round(t * 10)))]))
    assert vm.advance(100.0, 0, 1000, 10, paced, 0.2) == 120.0
    slow = SimpleNamespace(time_at_step=lambda s: float(s) * 100, step_at_time=lambda t: int(t // 100))
    assert vm.advance(0.0, 0, 1500, None, slow, 0.2) == 10.0  # max: ×1000 (2 steps here), at least 1/150 of the run
    assert vm.advance(0.0, 0, 1500, None, paced, 0.2) == 1000.0  # ×1000: 200 s of the run's time


def test_smoothing_strength_and_rank_cycle():
    assert [vm.next_strength(s) for s in vm.EMA_STRENGTHS] == [0.9, 0.99, 0.999, 0.6]
    assert vm.next_strength(0.5) == 0.9  # a strength not in the list: as from the first
    ranks = [0, 1, 2]
    seen, r = [], None
    for _ in range(4):
        r = vm.next_rank(ranks, r)
        seen.append(r)
    assert seen == [0, 1, 2, None]


def test_alert_walk_causes_first_and_round():
    dead = {"id": "dead_relu", "step": 50, "severity": "warning"}
    stuck = {"id": "accuracy_stuck", "step": 50, "severity": "warning"}
    nan = {"id": "nan_loss", "step": 80, "severity": "critical", "rank": 1}
    order = alert_order([nan, stuck, dead])
    assert [a["id"] for a in order] == ["dead_relu", "accuracy_stuck", "nan_loss"]
    # On an alert: the next in the order, round to the first after the last.
    assert jump_target(order, 1, current=stuck, cursor=50, here=50, replay=False) is nan
    assert jump_target(order, 1, current=nan, cursor=80, here=80, replay=False) is dead
    assert jump_target(order, -1, current=dead, cursor=50, here=50, replay=False) is nan
    # From a step: the first after it (n) or the last before it (p); nowhere yet: live starts at the newest.
    assert jump_target(order, 1, current=None, cursor=None, here=60, replay=True) is nan
    assert jump_target(order, -1, current=None, cursor=None, here=60, replay=True) is stuck
    assert jump_target(order, 1, current=None, cursor=None, here=None, replay=False) is nan
    assert jump_target(order, 1, current=None, cursor=None, here=None, replay=True) is dead
    # The banner: the alert moved to while shown, else the most severe.
    assert banner_alert(order, stuck) is stuck and banner_alert(order, None) is nan
    # A symptom names the causes begun by its step; a cause names none.
    assert causes_of(stuck, order, None, lambda key, step: None) == [dead]
    assert causes_of(dead, order, None, lambda key, step: None) == []
