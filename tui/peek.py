"""What `accmon ls` and the picker show of each run: the ranks grouped into runs, and each rank's answer to one
`hello`, asked of every rank at once (`peek_runs`), or read from another host's `accmon ls --json --peek`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import zmq

from accmon.probe import registry, security, wire


@dataclass
class PickerEntry:
    """One run in the picker: its ranks' registry entries."""

    run_id: str
    entries: list[registry.RunEntry] = field(default_factory=list)


def group_runs(entries: list[registry.RunEntry]) -> list[PickerEntry]:
    runs: dict[str, PickerEntry] = {}
    for e in entries:
        runs.setdefault(e.run_id, PickerEntry(e.run_id)).entries.append(e)
    for r in runs.values():
        r.entries.sort(key=lambda e: e.rank)
    return list(runs.values())


# -- what `accmon ls` and the picker show of each run: one `hello` to every rank at once ---------------------
PEEK_TIMEOUT_S = 0.5  # a rank that does not answer within this shows "—": ls and the picker never wait longer
PEEK_MAX_RANKS = 256  # ranks asked at once (a registry listing thousands would open as many sockets)
PEEK_REPLY_BYTES = 1024 * 1024  # a hello is a few hundred bytes (its command line included)
PEEK_STATUSES = ("running", "finished", "crashed")


@dataclass(frozen=True)
class RankPeek:
    """What one rank said to `hello`: its newest step, whether it still runs, how many alerts it raised."""

    step: int | None = None
    status: str | None = None  # running, finished or crashed (ending: the probe lingers a moment after its end)
    alerts: int | None = None  # distinct alerts (id and cause) raised, cleared ones included
    active: int | None = None  # of those, the ones not cleared


def _peek_key(e: registry.RunEntry) -> tuple[str, int, int]:
    return (e.run_id, e.rank, e.pid)


def _count(reply: dict[str, Any], key: str) -> int | None:
    v = reply.get(key)
    return v if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**63 else None


def _step(reply: dict[str, Any]) -> int | None:
    v = reply.get("step")
    return -1 if v == -1 and not isinstance(v, bool) else _count(reply, "step")  # -1: no step yet


def peek_runs(entries: list[registry.RunEntry], *, timeout: float = PEEK_TIMEOUT_S) -> dict[tuple[str, int, int], RankPeek]:
    """Ask every rank reachable from here for its `hello` (step, status, alerts), all at once on one poller, and
    wait at most `timeout` in all. Ranks that do not answer, answer nonsense, or are not reachable here (another
    host's, or past PEEK_MAX_RANKS) are missing from the result. Never raises for what a peer does."""
    out: dict[tuple[str, int, int], RankPeek] = {}
    asked = [e for e in entries if e.ctl.startswith(("ipc://", "tcp://")) and registry.is_here(e)][:PEEK_MAX_RANKS]
    if not asked:
        return out
    ctx = zmq.Context()
    socks: dict[zmq.Socket, registry.RunEntry] = {}
    waiting: set[zmq.Socket] = set()
    try:
        poller = zmq.Poller()
        request = wire.encode({"op": "hello"})
        for e in asked:
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.MAXMSGSIZE, PEEK_REPLY_BYTES)
            curve = security.curve_for(e.pub, e.extra)
            if curve:
                s.curve_secretkey, s.curve_publickey, s.curve_serverkey = curve["secret"], curve["public"], curve["server"]
            socks[s] = e
            try:
                s.connect(e.ctl)
                s.send(request, zmq.NOBLOCK)
            except zmq.ZMQError:
                continue
            poller.register(s, zmq.POLLIN)
            waiting.add(s)
        deadline = time.monotonic() + timeout
        while waiting:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for s, _ in poller.poll(max(1, int(left * 1000))):
                try:
                    body = s.recv_multipart(zmq.NOBLOCK)[-1]
                    reply = wire.decode_message(body)  # its size: MAXMSGSIZE
                except (zmq.ZMQError, wire.FrameError):
                    continue
                if reply.get("op") != "hello":
                    continue  # busy, a ping: the rank is alive but said nothing; it shows "—"
                status = reply.get("status")
                out[_peek_key(socks[s])] = RankPeek(
                    step=_step(reply), status=status if status in PEEK_STATUSES else None,
                    alerts=_count(reply, "alerts"), active=_count(reply, "alerts_active"))
                poller.unregister(s)
                waiting.discard(s)
    finally:
        for s in socks:
            s.close(0)
        ctx.destroy(linger=0)
    return out


def peek_from_dict(d: Any) -> RankPeek | None:
    """A RankPeek from `accmon ls --json --peek` of another host (the `peek` of each entry): validated as a hello."""
    if not isinstance(d, dict):
        return None
    status = d.get("status")
    return RankPeek(step=_step(d), status=status if status in PEEK_STATUSES else None,
                    alerts=_count(d, "alerts"), active=_count(d, "active"))


@dataclass(frozen=True)
class RunPeek:
    """A whole run as `accmon ls` and the picker show it: its ranks' answers put together (None: none answered)."""

    step: int | None = None
    status: str | None = None
    alerts: int | None = None
    active: int | None = None


def run_peek(entries: list[registry.RunEntry], peeks: dict[tuple[str, int, int], RankPeek]) -> RunPeek:
    """The run's newest step (the furthest rank), its status (crashed if a rank crashed, running while one runs),
    and its alerts over the ranks that answered."""
    answers = [p for p in (peeks.get(_peek_key(e)) for e in entries) if p is not None]
    if not answers:
        return RunPeek()
    steps = [p.step for p in answers if p.step is not None]
    statuses = {p.status for p in answers}
    status = next((s for s in ("crashed", "running", "finished") if s in statuses), None)
    alerts = [p.alerts for p in answers if p.alerts is not None]
    active = [p.active for p in answers if p.active is not None]
    return RunPeek(step=max(steps) if steps else None, status=status, alerts=sum(alerts) if alerts else None,
                   active=sum(active) if active else None)


NOTHING = "—"


def peek_cells(peek: RunPeek | RankPeek | None) -> tuple[str, str, str]:
    """(step, status, alerts) as ls and the picker print them: "—" for what the run did not say. Alerts: '3' or
    '3 (1 active)' when some were cleared."""
    if peek is None:
        return NOTHING, NOTHING, NOTHING
    step = NOTHING if peek.step is None else f"{peek.step:,}" if peek.step >= 0 else "none"  # -1: no step yet
    alerts = NOTHING if peek.alerts is None else str(peek.alerts)
    if peek.alerts and peek.active is not None and peek.active != peek.alerts:
        alerts += f" ({peek.active} active)"
    return step, peek.status or NOTHING, alerts


def age_words(seconds: float | None) -> str:
    """A run's age for ls and the picker: '42s', '7m', '1h05m', '2d03h'."""
    if seconds is None or not isinstance(seconds, (int, float)) or seconds != seconds or seconds < 0 or seconds > 1e10:
        return NOTHING
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"
