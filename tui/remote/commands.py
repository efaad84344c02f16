"""`accmon ls ssh://…` and `accmon attach ssh://…` (or a run listed in a shared `$ACCMON_REGISTRY`): list, pick,
connect before the TUI takes the terminal, then the app or the headless viewer."""

from __future__ import annotations

import sys
from typing import Any

from accmon.probe import registry

from ..headless import HeadlessViewer
from ..peek import RankPeek
from ..text import printable
from .forward import RemoteRun
from .listing import entries_json, pick_run, print_entries, wait_for_ranks
from .routing import HostsRun, gather, open_hosts, open_routes, route_local
from .source import RemoteLister, RemoteSource
from .target import RemoteError, SshTarget, parse_target


def _say(line: str) -> None:
    sys.stderr.write(f"accmon: {printable(line)}\n")
    sys.stderr.flush()


def cmd_ls_remote(targets: str | list[str], *, as_json: bool = False) -> int:
    """`accmon ls ssh://host [ssh://host2 ...]`."""
    try:
        ts = [parse_target(t) for t in ([targets] if isinstance(targets, str) else targets)]
        peeks: dict[tuple[str, int, int], RankPeek] = {}
        entries = gather(ts, peeks=peeks)  # step, status, alerts: asked by the accmon there (`ls --peek`)
    except RemoteError as exc:
        _say(str(exc))
        return 2
    if as_json:
        print(entries_json(entries))
        return 0
    if not entries:
        print(f"no live runs on {', '.join(t.host for t in ts)}")
        return 0
    entries.sort(key=lambda e: (-e.started, e.run_id, e.rank))
    print_entries(entries, peeks)
    return 0


def cmd_attach_remote(targets: str | list[str], *, headless: bool, record: str | None, interactive: bool,
                      viewer: dict[str, Any] | None = None) -> int:
    """`accmon attach ssh://[user@]host[:port][/run] [ssh://host2 ...] [--headless] [--record FILE]`: the ranks
    of one run, gathered from every host named."""
    tui = interactive and not headless
    try:
        ts = [parse_target(t) for t in ([targets] if isinstance(targets, str) else targets)]
        hosts = ", ".join(t.host for t in ts)
        spec = next((t.run for t in ts if t.run), None)
        listing = gather(ts)
        chosen = pick_run(listing, spec)
        several = len({e.run_id for e in listing}) > 1 and not spec
        if tui and several:
            return _run_app(ts, None, listing, record, viewer)  # the picker chooses
        if chosen and several:
            _say(f"{len({e.run_id for e in listing})} runs on {hosts}; attaching to the newest, {chosen[0].run_id} "
                 f"({chosen[0].name}). Name another with ssh://{ts[0].destination}/RUN (see `accmon ls {' '.join(map(str, ts))}`)")
        # Connect before any TUI starts: ssh may need the terminal for a password or a host key.
        remote = open_hosts(ts, on_event=_say, entries=listing)
    except RemoteError as exc:
        _say(str(exc))
        return 2
    return _attached(remote, ts, listing, headless=not tui, record=record, viewer=viewer)


def cmd_attach_routed(entries: list[registry.RunEntry], *, headless: bool, record: str | None, interactive: bool,
                      viewer: dict[str, Any] | None = None) -> int:
    """`accmon attach [RUN]` when the run's ranks, listed in a shared `$ACCMON_REGISTRY`, are on other hosts
    too: this host's directly, the others through ssh to the host each entry names."""
    try:
        routed = wait_for_ranks(route_local(entries), lambda: route_local(registry.find_run(entries[0].run_id)))
        remote = open_routes(routed, on_event=_say).start()
    except RemoteError as exc:
        _say(str(exc))
        return 2
    return _attached(remote, None, routed, headless=headless or not interactive, record=record, viewer=viewer)


def _attached(remote: RemoteRun | HostsRun, ts: list[SshTarget] | None, listing: list[registry.RunEntry], *,
              headless: bool, record: str | None, viewer: dict[str, Any] | None = None) -> int:
    with remote:
        if not headless:
            return _run_app(ts, remote, listing, record, viewer)
        if isinstance(remote, RemoteRun):
            _say(f"attached to run {remote.run_id} ({remote.entries[0].name}) on {remote.target.host} through ssh")
        else:
            _say(f"attached to run {remote.run_id} ({remote.entries[0].name}): {remote.describe()}")
        return HeadlessViewer(remote.entries, record=record, discover=False).run(until=remote.gone)


def _run_app(ts: list[SshTarget] | None, remote: RemoteRun | HostsRun | None, listing: list[registry.RunEntry],
             record: str | None, viewer: dict[str, Any] | None = None) -> int:
    """`viewer`: more options for the AccmonApp (`baseline`, `align`)."""
    from ..app import AccmonApp, run_app  # textual: `accmon ls` and a remote `ls --follow` never load it

    opened: list[RemoteSource] = []

    def attach(entries: list[registry.RunEntry]) -> RemoteSource:
        source = RemoteSource(None, entries, record=record)  # routed entries: each host through its own ssh
        opened.append(source)
        return source

    first = RemoteSource(None, remote.remote_entries, record=record, remote=remote) if remote is not None else None
    lister = RemoteLister(ts, listing) if ts else (lambda: route_local(registry.list_runs()))
    app = AccmonApp(first, attach=attach, list_runs=lister, pick=first is None,
                    **(viewer or {}))
    try:
        return run_app(app)  # an app that dies exits non-zero with its traceback saved, as a local viewer does
    finally:
        for source in opened:  # the app closes the source it shows; sources it switched away from too, but be sure
            source.close()
