"""The app's side of a remote run: `RemoteSource` (a LiveSource on forwarded sockets) and the picker's `RemoteLister`."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

from accmon.probe import registry

from ..app_sources import LiveSource, SourceStatus
from ..peek import RankPeek
from .forward import RemoteRun
from .listing import list_remote
from .routing import HostsRun, gather, open_routes
from .target import VIA, RemoteError, SshTarget

RECONNECTED_NOTE_S = 10.0  # how long the header keeps saying "reconnected …" after a reconnection
PICKER_LIST_EVERY_S = 5.0  # the picker rescans every second: one ssh login per second would flood auth logs


class RemoteSource(LiveSource):
    """The app's Source (tui/app_sources.py) for a run on another host, or on several.

    A LiveSource whose thread first connects through ssh — the UI never waits for ssh — and then drives the
    LiveRun on the forwarded sockets. The header shows the ssh side: "connecting", a lost connection and each
    retry (as stalled), a reconnection, and the run being gone on the remote host. With `target` None the
    entries are routed ones (gather, route_local): each host's ranks through that host's own connection
    (HostsRun).
    """

    thread_name = "accmon-remote-source"

    def __init__(self, target: SshTarget | None, entries: list[registry.RunEntry], *, record: str | None = None,
                 remote: RemoteRun | HostsRun | None = None) -> None:
        # A remote run is not in this host's registry: never look for a restarted run of the same name here.
        super().__init__([], record=record, find_again=lambda: [])
        self.target = target
        self.remote_entries = entries
        self.remote = remote
        if remote is not None:
            remote.on_event = self._on_event
        self._connected = False
        self._error: str | None = None
        self._note_until = 0.0

    def _on_event(self, message: str) -> None:
        self._note_until = time.monotonic() + RECONNECTED_NOTE_S

    def _entries(self) -> list[registry.RunEntry] | None:
        """On the source's thread: connect through ssh (never asking for a password: the TUI has the terminal)."""
        try:
            if self.remote is None:
                if self.target is not None:
                    self.remote = RemoteRun(self.target, self.remote_entries, on_event=self._on_event).start(batch=True)
                else:
                    self.remote = open_routes(self.remote_entries, on_event=self._on_event).start(batch=True)
        except RemoteError as exc:
            self._error = f"{exc} (from inside the TUI ssh cannot ask for a password: use a key or an agent)"
            return None
        if self._stop.is_set():
            self.remote.close()
            return None
        self._connected = True
        return self.remote.entries

    @property
    def status(self) -> SourceStatus:
        if self._error is not None:
            return SourceStatus(state="gone", message=self._error)
        if not self._connected or self.remote is None:
            where = self.target.destination if self.target is not None else ", ".join(
                sorted({str(e.extra.get(VIA) or "this host") for e in self.remote_entries}))
            return SourceStatus(state="connecting", message=f"connecting to {where} through ssh…")
        st = super().status
        r = self.remote
        if r.state == "reconnecting":
            return replace(st, state="stalled", message=r.message)
        if r.state == "gone" and st.state != "ended":
            return replace(st, state="gone", message=r.message)
        if r.reconnects and time.monotonic() < self._note_until:
            return replace(st, message=r.message)
        return st

    def close(self) -> None:
        super().close()
        if self.remote is not None:
            self.remote.close()


class RemoteLister:
    """`list_runs` for the app's picker: the remote host's runs (or several hosts', gathered), re-listed at most
    every few seconds."""

    def __init__(self, target: SshTarget | list[SshTarget], listing: list[registry.RunEntry] | None = None) -> None:
        self.target = target
        self._entries = listing or []
        self._at = time.monotonic() if listing is not None else 0.0
        self._lock = threading.Lock()
        self.peeks: dict[tuple[str, int, int], RankPeek] = {}  # what the ranks there answered (the picker shows it)

    def __call__(self) -> list[registry.RunEntry]:
        with self._lock:
            if time.monotonic() - self._at >= PICKER_LIST_EVERY_S:
                self._at = time.monotonic()
                try:
                    peeks: dict[tuple[str, int, int], RankPeek] = {}
                    if isinstance(self.target, list):
                        self._entries = gather(self.target, batch=True, peeks=peeks)
                    else:
                        self._entries = list_remote(self.target, batch=True, peeks=peeks)
                    self.peeks = peeks
                except RemoteError:
                    pass  # keep showing the last listing; the picker retries
            return list(self._entries)
