"""What a source tells the header (`SourceStatus`), and when a live rank is gone without its end frame."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from accmon.probe import registry

# A run attached by its endpoint (`accmon attach ipc://…/X.pub`, tcp://HOST:PORT) names no process: it is taken
# as gone when, once heard, it has sent no frame or heartbeat for this long (the probe heartbeats every second;
# the header says "stalled" after 3 s). A killed process's connection closes at its death, which counts as its
# last word (RunClient.heard_at).
SILENT_GONE_S = 10.0


def rank_gone(entry: registry.RunEntry, client: Any) -> bool:
    """Whether `entry`'s rank is gone without its end frame. An entry from the registry: its process is gone.
    An entry made for an endpoint (pid 0: no process known) is judged by its connection alone — never heard
    yet is waiting, not gone; heard, then silent for SILENT_GONE_S, is gone. An entry forwarded over ssh
    (tui/remote/) is never judged here: its pid is the remote host's, its sockets are local forwards, and the
    remote side says when the run is gone (RemoteRun.gone) — after a reconnect that may take longer than any
    silence."""
    if entry.extra.get("remote") is not None:
        return False
    if entry.pid > 0:
        return not entry.alive()
    heard = getattr(client, "heard_at", None)
    return heard is not None and time.time() - heard > SILENT_GONE_S


@dataclass(frozen=True)
class SourceStatus:
    """The source's side of the header: connection state, drops, what the file or socket said."""

    state: str = "connecting"  # connecting | live | stalled | ended | gone | replay
    dropped_live: int = 0
    dropped_steps: int = 0  # live: steps the probe's queue dropped, lost for good (RunStore.live_dropped)
    message: str | None = None
    loaded: bool = False  # replay: the whole file has been read
    truncated: bool = False  # replay: the file ends in a partial frame or without an end frame
    problems: tuple[str, ...] = ()
    ranks: int = 1
    rules: str = ""  # replay: "" (recorded alerts only), "running", "done" (final_alerts set), "failed"
