"""Cross-rank rules on synthetic multi-rank streams."""

import random

from accmon.probe import wire
from accmon.probe.rules import RankDiagnoser


def stream(rank: int, start: int, n: int, step_time: float, loss: float, seq: int, t0: float = 0.0, noise: float = 0.05):
    rng = random.Random(rank * 1000 + start)
    steps = list(range(start, start + n))
    return wire.envelope("steps", "r", rank, seq, steps[-1], steps=steps,
                         times=[t0 + s * step_time for s in steps],
                         cols={"loss": [loss * (1 + rng.uniform(-noise, noise)) for _ in steps]})


def feed(d: RankDiagnoser, frames):
    out = []
    for f in frames:
        out += d.observe(f)
    return out


def test_healthy_ranks_raise_nothing():
    d = RankDiagnoser()
    frames = [stream(r, i * 50, 50, 0.1 * (1 + 0.05 * r), 1.0, i + 1) for i in range(10) for r in range(4)]
    assert feed(d, frames) == []


def test_a_straggler_is_named_and_clears_when_it_catches_up():
    d = RankDiagnoser()
    slow = [stream(r, i * 50, 50, 0.25 if r == 2 else 0.1, 1.0, i + 1) for i in range(4) for r in range(4)]
    changed = feed(d, slow)
    (alert,) = [a for a in changed if a["id"] == "straggler_rank"]
    assert alert["rank"] == 2 and alert["evidence"]["relative_speed"] < 0.5
    fast = [stream(r, 200 + i * 50, 50, 0.1, 1.0, 10 + i, t0=200 * 0.25 - 20) for i in range(4) for r in range(4)]
    changed = feed(d, fast)
    assert any(a["id"] == "straggler_rank" and a["state"] == "cleared" for a in changed)


def test_lockstep_ranks_that_report_apart_while_the_machine_slows_make_no_straggler():
    # Data-parallel ranks finish each step together; their frames (about 0.5 s of steps each) arrive apart. Here
    # the machine slows from 10 to 25 ms a step at step 100, and rank 0's frame of the slow steps comes before
    # rank 1's: windows of each rank's newest steps compared slow steps with fast ones (seen on a loaded machine,
    # a healthy torchrun job called a straggler). One rank descheduled for 0.3 s at one step changes nothing.
    def times(rank: int, steps: range) -> list[float]:
        t = [0.01 * min(s, 100) + 0.025 * max(s - 100, 0) for s in steps]
        return [x + (0.3 if rank == 1 and s >= 160 else 0.0) for x, s in zip(t, steps)]

    d = RankDiagnoser()
    frames = []
    for i in range(6):
        for r in (0, 1):
            steps = range(i * 50, i * 50 + 50)
            frames.append(wire.envelope("steps", "r", r, i + 1, steps[-1], steps=list(steps), times=times(r, steps),
                                        cols={"loss": [1.0] * 50}))
    assert [a for a in feed(d, frames) if a["id"] == "straggler_rank"] == []


def test_microsecond_steps_that_differ_by_a_large_ratio_make_no_straggler():
    # Steps of 0.2 ms and 0.6 ms (processes sharing a CPU): three times slower, and 0.4 ms a step lost.
    d = RankDiagnoser()
    frames = [stream(r, i * 50, 50, 0.0006 if r == 1 else 0.0002, 1.0, i + 1) for i in range(4) for r in range(2)]
    assert [a for a in feed(d, frames) if a["id"] == "straggler_rank"] == []


def test_a_diverging_rank_and_a_nan_rank():
    d = RankDiagnoser()
    frames = [stream(r, i * 50, 50, 0.1, 5.0 if r == 1 else 1.0, i + 1) for i in range(3) for r in range(3)]
    (alert,) = [a for a in feed(d, frames) if a["id"] == "rank_diverging"]
    assert alert["rank"] == 1 and alert["severity"] == "warning"
    d = RankDiagnoser()
    frames = [stream(r, i * 50, 50, 0.1, float("nan") if r == 0 else 1.0, i + 1) for i in range(3) for r in range(3)]
    (alert,) = [a for a in feed(d, frames) if a["id"] == "rank_diverging"]
    assert alert["rank"] == 0 and alert["severity"] == "critical"


def test_a_rank_that_falls_silent_while_others_go_on():
    d = RankDiagnoser()
    # Step time 1 s: rank 1 sends nothing after step 99 while rank 0 goes on for 200 s more.
    frames = [stream(r, i * 50, 50, 1.0, 1.0, i + 1) for i in range(6) for r in range(2) if not (r == 1 and i >= 2)]
    (alert,) = [a for a in feed(d, frames) if a["id"] == "rank_stopped"]
    assert alert["rank"] == 1 and alert["evidence"]["last_step"] == 99


def test_ranks_that_start_apart_are_not_stopped():
    d = RankDiagnoser()
    # Rank 1 starts 5 s late and runs fast steps: hundreds of steps behind, yet fine.
    frames = [stream(0, i * 100, 100, 0.001, 1.0, i + 1) for i in range(5)]
    frames += [stream(1, i * 100, 100, 0.001, 1.0, i + 1, t0=5.0) for i in range(5)]
    assert [a for a in feed(d, frames) if a["id"] == "rank_stopped"] == []


def test_at_the_end_of_a_recording_a_rank_without_an_end_stopped():
    d = RankDiagnoser()
    feed(d, [stream(0, 0, 100, 0.01, 1.0, 1), stream(1, 0, 40, 0.01, 1.0, 1),
             wire.envelope("end", "r", 0, 2, 99, status="finished", error=None)])
    (alert,) = d.finish()
    assert alert["id"] == "rank_stopped" and alert["rank"] == 1


def test_when_no_rank_ended_the_first_to_fall_silent_stopped():
    d = RankDiagnoser()
    feed(d, [stream(0, 0, 100, 0.01, 1.0, 1), stream(1, 0, 40, 0.01, 1.0, 1)])  # rank 1's last frame is earlier
    (alert,) = d.finish()
    assert alert["id"] == "rank_stopped" and alert["rank"] == 1
