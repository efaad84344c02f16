"""One run on one remote host, its sockets forwarded to private local ones by one ssh process (`RemoteRun`),
kept connected with back-off."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from accmon.probe import registry

from .listing import (
    FIRST_CONNECT_TIMEOUT_S,
    MAX_LISTING_BYTES,
    _names,
    list_remote,
    parse_listing,
    pick_run,
    wait_for_ranks,
)
from .target import VIA, VIA_REGISTRY, RemoteError, SshTarget, _explain_exit, _ssh_base, parse_target, remote_command

RECONNECT_READY_TIMEOUT_S = 60.0
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
IPC_PATH_MAX = 100  # sun_path is 108 bytes on Linux, 104 on macOS: keep a margin


def _forward_target(endpoint: str) -> str:
    """The remote side of `-L local:REMOTE`: a Unix socket path, or host:port of a tcp:// bind."""
    if endpoint.startswith("ipc://"):
        path = endpoint[len("ipc://") :]
        if ":" in path:
            raise RemoteError(f"cannot forward {endpoint}: ssh -L cannot name a socket path that contains ':'")
        return path
    hostport = endpoint[len("tcp://") :]
    host, _, port = hostport.rpartition(":")
    host = host.strip("[]")
    # A wide bind is reached through the remote loopback: the forward never goes back out on the network.
    if host in ("", "*", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class RemoteRun:
    """One run on a remote host, forwarded to private local sockets, kept connected with back-off.

    `entries` are the run's registry entries with local `ipc://` endpoints: give them to RunClient /
    HeadlessViewer / the app as if the run were local. `state`: connecting, connected, reconnecting, gone
    (the run ended or disappeared on the remote host), closed. `on_event(line)` is called (from a background
    thread) for every change worth telling the user: a lost connection, each retry, a reconnection.
    """

    def __init__(self, target: SshTarget, remote_entries: list[registry.RunEntry], *,
                 on_event: Callable[[str], None] | None = None, reconnect: bool = True,
                 registry_dir: str | None = None) -> None:
        if not remote_entries:
            raise ValueError("no entries to forward")
        self.target = target
        # The entries came from a registry shared with that host: its `ls --follow` must read the same one
        # (its ssh session need not have $ACCMON_REGISTRY set).
        self.registry_dir = registry_dir
        self.run_id = remote_entries[0].run_id
        self.remote_entries = sorted(remote_entries, key=lambda e: e.rank)
        self.on_event = on_event
        self.reconnect = reconnect
        self.state = "connecting"
        self.message: str | None = None
        self.reconnects = 0
        self.proc: subprocess.Popen | None = None
        self._dir = _private_socket_dir(self.run_id)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._alive_ranks: set[int] | None = None  # from the remote `ls --follow`; None until its first line
        self._follow_ended = False
        self._supervisor: threading.Thread | None = None
        self.entries = [self._local_entry(e) for e in self.remote_entries]

    # -- public ---------------------------------------------------------------------------------------------
    def start(self, *, batch: bool = False) -> RemoteRun:
        """Connect, then keep the connection up in the background. Interactive unless `batch`: ssh may ask for a
        password or a host key here, so call it before a TUI takes the terminal (or pass batch=True)."""
        if not self._connect(batch=batch, timeout=RECONNECT_READY_TIMEOUT_S if batch else FIRST_CONNECT_TIMEOUT_S):
            self.close()
            raise RemoteError(self.message or f"could not connect to {self.target.destination}")
        if self.state == "gone":
            self.close()
            raise RemoteError(f"run {self.run_id} is no longer running on {self.target.host}")
        self._supervisor = threading.Thread(target=self._supervise, name="accmon-ssh", daemon=True)
        self._supervisor.start()
        return self

    def gone(self) -> bool:
        """True once the run is known to have ended on the remote host (or the connection was closed)."""
        return self.state in ("gone", "closed")

    @property
    def ssh_pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def close(self) -> None:
        self._stop.set()
        self._kill()
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join(5.0)
        if self.state != "gone":
            self.state = "closed"
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RemoteRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------------------------
    def _event(self, state: str, message: str) -> None:
        self.state, self.message = state, message
        if self.on_event is not None:
            try:
                self.on_event(message)
            except Exception:  # the viewer's display problem must not stop the connection
                pass

    def _local_entry(self, e: registry.RunEntry) -> registry.RunEntry:
        base = os.path.join(self._dir, f"{e.run_id}.{e.rank}")
        extra = {k: v for k, v in e.extra.items() if k not in (VIA, VIA_REGISTRY)}  # forwarded: nothing left to route
        extra.update(remote=str(self.target), remote_host=e.host, remote_pub=e.pub, remote_ctl=e.ctl)
        # Not the bare host name: two machines may share one (cloud images), and RunEntry.alive() would then
        # look for the remote pid among this machine's processes. Liveness comes from the remote side instead.
        return replace(e, host=f"{e.host} via ssh", pub=f"ipc://{base}.pub", ctl=f"ipc://{base}.ctl", extra=extra)

    def _local_paths(self) -> list[str]:
        return [ep[len("ipc://") :] for e in self.entries for ep in (e.pub, e.ctl)]

    def _command(self, batch: bool) -> list[str]:
        options = ["-T", "-o", "ExitOnForwardFailure=yes", "-o", "StreamLocalBindUnlink=yes",
                   "-o", "StreamLocalBindMask=0177"]  # local sockets 0600: only this user may use the forward
        for local, remote in zip(self.entries, self.remote_entries):
            for lep, rep in ((local.pub, remote.pub), (local.ctl, remote.ctl)):
                options += ["-L", f"{lep[len('ipc://'):]}:{_forward_target(rep)}"]
        args = ["ls", "--json", "--follow", self.run_id]
        if self.registry_dir:
            args += ["--registry", self.registry_dir]
        follow = remote_command(*args)
        return _ssh_base(self.target, batch=batch, options=options) + [follow]

    def _connect(self, *, batch: bool, timeout: float) -> bool:
        """Start ssh and wait until the local sockets exist and the remote side has said which ranks live."""
        for p in self._local_paths():
            try:
                os.unlink(p)  # stale sockets of a dead ssh: "exists" must mean "bound by the new one"
            except FileNotFoundError:
                pass
        log_path = os.path.join(self._dir, "ssh.log")
        with self._lock:
            self._alive_ranks = None
            self._follow_ended = False
        try:
            with open(log_path, "wb") as log:
                # stderr to a file, not a pipe: nobody has to drain it, and the last lines explain a failure.
                self.proc = subprocess.Popen(self._command(batch), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                             stderr=log)
        except FileNotFoundError:
            self.message = "no ssh command: install OpenSSH's client"
            return False
        reader = threading.Thread(target=self._read_follow, args=(self.proc,), name="accmon-ssh-follow", daemon=True)
        reader.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._stop.is_set():
            with self._lock:
                heard, ended = self._alive_ranks is not None, self._follow_ended
            if heard and not self._alive_ranks:
                self.state = "gone"
                return True
            if heard and all(os.path.exists(p) for p in self._local_paths()):
                self.state = "connected"
                return True
            code = self.proc.poll()
            if code is not None and (ended or code != 0):
                reader.join(1.0)
                with self._lock:
                    if self._alive_ranks is not None and not self._alive_ranks:
                        self.state = "gone"
                        return True
                self.message = _explain_exit(self.target, code, _tail(log_path))
                return False
            time.sleep(0.05)
        self._kill()
        self.message = f"ssh to {self.target.destination} did not set up the forwarding within {timeout:.0f} s"
        return False

    def _read_follow(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        try:
            while True:
                line = proc.stdout.readline(MAX_LISTING_BYTES)
                if not line:
                    break
                mine = {e.rank for e in self.remote_entries}
                try:
                    # Only the ranks this connection forwards: the others are another host's (or another
                    # connection's) to report on.
                    ranks = {e.rank for e in parse_listing(line) if e.run_id == self.run_id and e.rank in mine}
                except RemoteError:
                    continue
                with self._lock:
                    if proc is self.proc:
                        self._alive_ranks = ranks
        finally:
            with self._lock:
                if proc is self.proc:
                    self._follow_ended = True
            proc.stdout.close()

    def _kill(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(3.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _supervise(self) -> None:
        while not self._stop.is_set():
            proc = self.proc
            with self._lock:
                gone = self._alive_ranks is not None and not self._alive_ranks
            if proc is not None and proc.poll() is None and not gone:
                self._stop.wait(0.1)
                continue
            if self._stop.is_set():
                return
            with self._lock:
                gone = self._alive_ranks is not None and not self._alive_ranks
            if gone:
                self._kill()  # a follow that lists other hosts' ranks too (a shared registry) may not end by itself
                self._event("gone", f"run {self.run_id} ended on {self.target.host}")
                return
            code = proc.returncode if proc is not None else None
            reason = _explain_exit(self.target, code, _tail(os.path.join(self._dir, "ssh.log"))) if code else "ssh exited"
            if not self.reconnect:
                self._event("gone", f"connection to {self.target.host} lost ({reason})")
                return
            self._reconnect(reason)

    def _reconnect(self, reason: str) -> None:
        lost_at = time.monotonic()
        delay = BACKOFF_FIRST_S
        attempt = 0
        self._event("reconnecting", f"connection to {self.target.host} lost ({reason}); reconnecting")
        while not self._stop.is_set():
            attempt += 1
            if self._connect(batch=True, timeout=RECONNECT_READY_TIMEOUT_S):
                if self.state == "gone":
                    self._event("gone", f"run {self.run_id} ended on {self.target.host} while disconnected")
                    return
                self.reconnects += 1
                self._event("connected", f"reconnected to {self.target.host} after {time.monotonic() - lost_at:.1f} s")
                return
            if self._stop.is_set():
                return
            self._event("reconnecting", f"reconnect {attempt} to {self.target.host} failed ({self.message}); "
                                        f"next try in {delay:.1f} s")
            self._stop.wait(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)


def _tail(path: str, limit: int = 4096) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, os.path.getsize(path) - limit))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _private_socket_dir(run_id: str) -> str:
    """A fresh 0700 directory for the forwarded sockets, short enough for Unix socket paths."""
    name_len = len(f"/{run_id}.000.pub")
    for parent in (registry.runtime_dir(), tempfile.gettempdir()):
        d = tempfile.mkdtemp(prefix="ssh-", dir=parent)  # mkdtemp makes it 0700
        if len(d) + name_len <= IPC_PATH_MAX:
            return d
        os.rmdir(d)
    raise RemoteError("no directory with a path short enough for Unix sockets (set ACCMON_RUNTIME_DIR to a short path)")


def open_remote(target: str | SshTarget, *, run: str | None = None, on_event: Callable[[str], None] | None = None,
                reconnect: bool = True, entries: list[registry.RunEntry] | None = None) -> RemoteRun:
    """List the runs on the target's host, pick one (the target's /run, `run`, or the newest), forward it.

    Pass `entries` (from `list_remote`, e.g. after a picker) to skip the listing. Raises RemoteError with a
    message for the user when ssh fails, accmon is missing there, or no run matches.
    """
    t = parse_target(target) if isinstance(target, str) else target
    spec = run or t.run
    listing = entries if entries is not None else list_remote(t)
    chosen = pick_run(listing, spec)
    if not chosen:
        which = f"matching {spec!r} " if spec else ""
        raise RemoteError(f"no live run {which}on {t.host}" + (f" (runs there: {_names(listing)})" if listing else ""))
    chosen = wait_for_ranks(chosen, lambda: list_remote(t, batch=True))
    return RemoteRun(t, chosen, on_event=on_event, reconnect=reconnect).start()
