"""The ranks' agreement on the step to stop at (probe/stop.py StoreLink) over a real TCP store: two ranks that
arrive at the same boundary stop there; a rank that waits in vain (the other is inside the next step's collective)
goes on one step with every rank at that boundary, and they meet at the next; a request one rank publishes is
read by the other's poll."""

from __future__ import annotations

import datetime
import threading

import pytest

torch_dist = pytest.importorskip("torch.distributed")

from accmon.probe import stop  # noqa: E402


@pytest.fixture
def store_port():
    master = torch_dist.TCPStore("127.0.0.1", 0, None, True, datetime.timedelta(seconds=10), wait_for_workers=False)
    yield master.port
    del master


def links(port: int) -> list[stop.StoreLink]:
    return [stop.StoreLink("run-x", rank, 2, "127.0.0.1", port) for rank in (0, 1)]


def both(fn0, fn1) -> list:
    out: list = [None, None]
    threads = [threading.Thread(target=lambda i=i, f=f: out.__setitem__(i, f())) for i, f in enumerate((fn0, fn1))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return out


def test_ranks_at_the_same_boundary_stop_there(store_port):
    a, b = links(store_port)
    assert both(lambda: a.agree(10), lambda: b.agree(10)) == [True, True]


def test_a_rank_that_does_not_come_makes_every_rank_go_on_one_step(store_port, monkeypatch):
    monkeypatch.setattr(stop, "HOLD_S", 0.3)
    a, b = links(store_port)
    assert a.agree(10) is False  # rank 1 never came to boundary 10 (it was waiting in step 11's all-reduce)
    assert b.agree(10) is False  # arriving late, it finds the verdict: go on, as rank 0 did
    assert both(lambda: a.agree(11), lambda: b.agree(11)) == [True, True]
    assert a.agree(11) is True  # asked again at the same step: the same answer, nothing counted twice


def test_one_ranks_request_reaches_the_others_poll(store_port, monkeypatch):
    import torch  # noqa: F401  (the link uses a store only in a process that imported torch)

    monkeypatch.setattr(stop, "STORE_POLL_S", 0.0)
    a, b = links(store_port)
    assert b.poll() is None
    a.publish({"by": "alert", "reason": "nan_loss: NaN", "from_rank": 0})
    a.publish({"by": "alert", "reason": "lr_too_high: later", "from_rank": 0})  # the first request stands
    assert b.poll() == {"by": "alert", "reason": "nan_loss: NaN", "from_rank": 0}


def test_without_a_store_a_rank_stops_alone(monkeypatch):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(stop, "STORE_TIMEOUT_S", 0.5)
    link = stop.StoreLink("run-y", 0, 2, "127.0.0.1", port)
    assert link.agree(3) is True and link.broken
