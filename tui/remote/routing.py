"""Which entries go through which host (`gather`, `route_local`), and one run over several hosts (`HostsRun`)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace

from accmon.probe import registry

from ..peek import RankPeek
from .forward import RemoteRun
from .listing import _names, list_remote, pick_run, wait_for_ranks
from .target import VIA, VIA_REGISTRY, RemoteError, SshTarget, parse_target


def gather(targets: list[SshTarget], *, batch: bool = False,
           peeks: dict[tuple[str, int, int], RankPeek] | None = None) -> list[registry.RunEntry]:
    """The live runs on all `targets`, one `accmon ls` over ssh each, every entry marked with the target that
    reaches it (`extra["via"]`), newest first. A rank listed twice (one host named twice) is kept once."""
    out: list[registry.RunEntry] = []
    seen: set[tuple[str, int]] = set()
    for t in targets:
        via = str(replace(t, run=None))
        for e in list_remote(t, batch=batch, peeks=peeks):
            if (e.run_id, e.rank) not in seen:
                seen.add((e.run_id, e.rank))
                out.append(replace(e, extra={**e.extra, VIA: via}))
    out.sort(key=lambda e: (e.started, e.run_id, e.rank), reverse=True)
    return out


def route_local(entries: list[registry.RunEntry]) -> list[registry.RunEntry]:
    """Entries of this machine's registry, routed: those another host registered in a shared `$ACCMON_REGISTRY`
    are marked to be reached through ssh to the host they name (its `$ACCMON_HOST`, or its host name); this
    host's stay as they are and are connected to directly."""
    shared = os.environ.get(registry.ENV_REGISTRY)
    out = []
    for e in entries:
        if registry.is_local(e) or e.extra.get(VIA):
            out.append(e)
            continue
        try:
            via = str(parse_target(e.host))
        except RemoteError:
            continue  # a host name ssh could not be given safely: such an entry cannot be reached
        out.append(replace(e, extra={**e.extra, VIA: via, **({VIA_REGISTRY: registry.registry_dir()} if shared else {})}))
    return out


def needs_ssh(entries: list[registry.RunEntry]) -> bool:
    return any(e.extra.get(VIA) for e in entries)


class HostsRun:
    """One run whose ranks are on several hosts, viewed as one: a RemoteRun per remote host — its own ssh
    connection, forwarding only that host's sockets, reconnecting with back-off on its own — plus this host's
    ranks, which need no ssh. It looks like a RemoteRun to the viewers: `entries` (local endpoints for every
    rank), `state`, `message`, `reconnects`, `gone()`, `close()`.

    `state` is the worst of the parts': "reconnecting" while any host is (the others go on streaming),
    "gone" only when every host's ranks are. A host whose ranks had already ended when we connected is left
    out, with a message.
    """

    def __init__(self, entries: list[registry.RunEntry], *, on_event: Callable[[str], None] | None = None,
                 reconnect: bool = True) -> None:
        if not entries:
            raise ValueError("no entries to attach to")
        self.run_id = entries[0].run_id
        self.remote_entries = sorted(entries, key=lambda e: e.rank)
        self.on_event = on_event
        self._message: str | None = None
        self._closed = False
        by_host: dict[str, list[registry.RunEntry]] = {}
        for e in self.remote_entries:
            by_host.setdefault(e.extra.get(VIA) or "", []).append(e)
        self.local_entries = by_host.pop("", [])
        self.parts = [RemoteRun(parse_target(via), es, on_event=self._part_event, reconnect=reconnect,
                                registry_dir=es[0].extra.get(VIA_REGISTRY)) for via, es in by_host.items()]
        self._connected: list[RemoteRun] = []

    def start(self, *, batch: bool = False) -> HostsRun:
        """Connect to every host (in turn: ssh may ask for a password on the terminal). A host that cannot be
        reached fails the whole attach, with its name; one where the run has already ended is left out."""
        for part in self.parts:
            try:
                part.start(batch=batch)
            except RemoteError as exc:
                if part.state == "gone":
                    self._part_event(str(exc))
                    continue
                self.close()
                raise RemoteError(f"{part.target.destination}: {exc}") from None
            self._connected.append(part)
        if not self._connected and not self.local_entries:
            raise RemoteError(f"run {self.run_id} is no longer running on any of its hosts")
        return self

    @property
    def entries(self) -> list[registry.RunEntry]:
        return sorted([*self.local_entries, *(e for p in self._connected for e in p.entries)], key=lambda e: e.rank)

    def describe(self) -> str:
        """Which ranks are where: "ranks 0, 1 on this host; ranks 2, 3 on hostb through ssh"."""
        def ranks(es: list[registry.RunEntry]) -> str:
            return ", ".join(str(e.rank) for e in es)

        where = ([f"ranks {ranks(self.local_entries)} on this host"] if self.local_entries else []) + [
            f"ranks {ranks(p.remote_entries)} on {p.target.destination} through ssh" for p in self._connected]
        return "; ".join(where)

    @property
    def state(self) -> str:
        if self._closed:
            return "closed"
        states = [p.state for p in self._connected]
        if "reconnecting" in states:
            return "reconnecting"
        if "connecting" in states:
            return "connecting"
        # This host's ranks: gone when their process is, or when they have left the registry (a run does at its end).
        if all(s in ("gone", "closed") for s in states) and not any(
                e.alive() and registry.is_registered(e) for e in self.local_entries):
            return "gone"
        return "connected"

    @property
    def message(self) -> str | None:
        # While a host reconnects, its message says which one; otherwise the latest event of any host.
        return next((p.message for p in self._connected if p.state == "reconnecting"), self._message)

    @property
    def reconnects(self) -> int:
        return sum(p.reconnects for p in self._connected)

    def gone(self) -> bool:
        return self.state in ("gone", "closed")

    def close(self) -> None:
        self._closed = True
        for p in self.parts:
            p.close()

    def __enter__(self) -> HostsRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _part_event(self, message: str) -> None:
        self._message = message
        if self.on_event is not None:
            try:
                self.on_event(message)
            except Exception:
                pass


def open_routes(entries: list[registry.RunEntry], *, on_event: Callable[[str], None] | None = None,
                reconnect: bool = True) -> RemoteRun | HostsRun:
    """A not yet started connection to routed entries (gather, route_local): a plain RemoteRun when they are all
    behind one ssh target, a HostsRun otherwise."""
    vias = {e.extra.get(VIA) or "" for e in entries}
    if len(vias) == 1 and "" not in vias:
        return RemoteRun(parse_target(vias.pop()), entries, on_event=on_event, reconnect=reconnect,
                         registry_dir=entries[0].extra.get(VIA_REGISTRY))
    return HostsRun(entries, on_event=on_event, reconnect=reconnect)





def open_hosts(targets: list[SshTarget], *, run: str | None = None, on_event: Callable[[str], None] | None = None,
               reconnect: bool = True, entries: list[registry.RunEntry] | None = None) -> RemoteRun | HostsRun:
    """`open_remote` over several hosts: list the runs on all of them, pick one (by `run`, a target's /run, or
    the newest), and attach to its ranks on every host, each host through its own ssh connection."""
    spec = run or next((t.run for t in targets if t.run), None)
    listing = entries if entries is not None else gather(targets)
    chosen = pick_run(listing, spec)
    if not chosen:
        which = f"matching {spec!r} " if spec else ""
        hosts = ", ".join(t.host for t in targets)
        raise RemoteError(f"no live run {which}on {hosts}" + (f" (runs there: {_names(listing)})" if listing else ""))
    chosen = wait_for_ranks(chosen, lambda: gather(targets, batch=True))
    return open_routes(chosen, on_event=on_event, reconnect=reconnect).start()
