"""Attach to a run on another machine through the system's `ssh`: `accmon attach ssh://[user@]host[:port][/run]`.

The user's own ssh does everything (config, keys, agent, jump hosts; more options in `$ACCMON_SSH_OPTS`), and
nothing new listens on the remote host: OpenSSH forwards the run's Unix sockets to private local ones.

    1. `ssh HOST accmon ls --json`                 the runs registered there; pick the newest or the named one
    2. `ssh -L local.pub:remote.pub -L local.ctl:remote.ctl HOST accmon ls --json --follow RUN`
       one connection carries both sockets and tells us, line by line, which of the run's ranks are alive:
       when the run ends there, the remote command ends, and we know the run is gone rather than the link.
    3. the viewer (RunClient) connects to the local sockets as it would to a local run.

When the connection drops, the local socket paths stay where they are; ssh is started again with back-off, and
ZeroMQ reconnects to the same paths by itself. The viewer's gap repair (history since its last seq) then fills
what passed meanwhile, so the stream continues with no gap and no duplicate.

Many hosts (a multi-node job). The ranks of one job carry one run id on every host (registry.run_id_from_env),
so a run is simply the ranks that share an id, wherever they are listed. Every entry the viewer may attach to
is *routed*: `extra["via"]` names the ssh target its sockets are reached through, or is absent for this
host's, which are connected to directly. Two ways to list, one way to attach:

    `accmon attach ssh://h1 ssh://h2`   gather(): `ls --json --here` on each host; an entry is routed through
                                        the target that listed it (`--here`: a host lists only the ranks whose
                                        sockets it has, not other hosts' entries of a registry it shares)
    `$ACCMON_REGISTRY` shared by hosts  route_local(): this host's entries direct, another host's through
                                        `ssh://<its host>` (the name in the entry: `$ACCMON_HOST` or the host
                                        name); its `ls --follow` is told which registry to read
    then                                open_routes(): one RemoteRun per remote host (each its own ssh process,
                                        forwards, liveness and back-off), joined with this host's ranks in a
                                        HostsRun; the viewer (LiveSource / HeadlessViewer) gets one list of
                                        local endpoints, one per rank, and sees one run.

Why not one registry the viewer reads over ssh and forwards through one connection? Because an `ipc://` socket
exists only on its own host: only an ssh connection *to that host* can forward it, and only that host can
tell whether its processes live. So each host keeps judging its own entries, and each gets its own connection,
which also keeps a dropped link to one node from stalling the others.

The package, one concern a module, each importing only those listed after it:

    commands   `accmon ls ssh://…`, `accmon attach ssh://…` and a routed `attach`: list, pick, connect, view
    source     the app's side: `RemoteSource` (a LiveSource whose thread connects first), `RemoteLister`
    routing    which entries go through which host (`gather`, `route_local`); `HostsRun`, `open_routes`
    forward    `RemoteRun`: one host's sockets forwarded by one ssh process, reconnected with back-off
    listing    `accmon ls --json` over ssh, validated; the `ls` table; `pick_run`; the remote side's `follow_runs`
    target     `SshTarget`, the ssh command lines, what a failed ssh means
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .forward import BACKOFF_FIRST_S, BACKOFF_MAX_S, RECONNECT_READY_TIMEOUT_S, RemoteRun, open_remote
from .listing import (
    FIRST_CONNECT_TIMEOUT_S,
    FOLLOW_POLL_S,
    MAX_LISTING_BYTES,
    RANKS_WAIT_S,
    entries_json,
    follow_runs,
    list_remote,
    parse_listing,
    pick_run,
    print_entries,
    wait_for_ranks,
)
from .routing import HostsRun, gather, needs_ssh, open_hosts, open_routes, route_local
from .target import (
    ENV_REMOTE_CMD,
    ENV_SSH,
    ENV_SSH_OPTS,
    VIA,
    VIA_REGISTRY,
    RemoteError,
    SshTarget,
    is_ssh_target,
    parse_target,
    remote_command,
)

if TYPE_CHECKING:
    from .commands import cmd_attach_remote, cmd_attach_routed, cmd_ls_remote
    from .source import PICKER_LIST_EVERY_S, RECONNECTED_NOTE_S, RemoteLister, RemoteSource

# The viewer's side (the commands, the app's source) is loaded when first asked for: the remote host runs
# `accmon ls --json [--follow]` through this package on every connection and reconnection, and needs only the
# listing, not the headless viewer, the check or the live engine (about twice the start-up time on a busy node).
_LAZY = {"cmd_attach_remote": "commands", "cmd_attach_routed": "commands", "cmd_ls_remote": "commands",
         "PICKER_LIST_EVERY_S": "source", "RECONNECTED_NOTE_S": "source",
         "RemoteLister": "source", "RemoteSource": "source"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "BACKOFF_FIRST_S", "BACKOFF_MAX_S", "ENV_REMOTE_CMD", "ENV_SSH", "ENV_SSH_OPTS", "FIRST_CONNECT_TIMEOUT_S",
    "FOLLOW_POLL_S", "MAX_LISTING_BYTES", "PICKER_LIST_EVERY_S", "RANKS_WAIT_S", "RECONNECTED_NOTE_S",
    "RECONNECT_READY_TIMEOUT_S", "VIA", "VIA_REGISTRY", "HostsRun", "RemoteError", "RemoteLister", "RemoteRun",
    "RemoteSource", "SshTarget", "cmd_attach_remote", "cmd_attach_routed", "cmd_ls_remote", "entries_json",
    "follow_runs", "gather", "is_ssh_target", "list_remote", "needs_ssh", "open_hosts", "open_remote", "open_routes",
    "parse_listing", "parse_target", "pick_run", "print_entries", "remote_command", "route_local", "wait_for_ranks",
]
