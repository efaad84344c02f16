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
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, fields, replace
from typing import IO, Any, Callable, Iterable
from urllib.parse import unquote, urlsplit

from accmon.probe import registry

ENV_SSH_OPTS = "ACCMON_SSH_OPTS"
ENV_REMOTE_CMD = "ACCMON_REMOTE_CMD"
ENV_SSH = "ACCMON_SSH"  # another ssh binary (e.g. a wrapper); the default is `ssh` on PATH
# If `accmon` is not on the non-interactive PATH (a venv not activated by ~/.bashrc), try the module.
DEFAULT_REMOTE_CMD = (
    "sh -c 'if command -v accmon >/dev/null 2>&1; then exec accmon \"$@\"; "
    "else exec python3 -m accmon.tui.cli \"$@\"; fi' accmon"
)
CONNECT_TIMEOUT_S = 15  # ssh's own ConnectTimeout: a host that does not answer the TCP handshake
# ssh's keep-alive: a silent network (laptop suspended, VPN gone) is declared dead after 3 × 5 s,
# rather than after the kernel's TCP timeout (minutes to hours).
ALIVE_INTERVAL_S = 5
ALIVE_COUNT = 3
FIRST_CONNECT_TIMEOUT_S = 180.0  # the first connection may wait for a password or a host-key question
RECONNECT_READY_TIMEOUT_S = 60.0
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
FOLLOW_POLL_S = 1.0  # how often the remote `ls --follow` looks at its registry
RANKS_WAIT_S = 10.0  # torchrun registers ranks one by one: wait this long for all of them before forwarding
MAX_LISTING_BYTES = 4 * 1024 * 1024  # a listing is a few hundred bytes a run; refuse anything absurd
IPC_PATH_MAX = 100  # sun_path is 108 bytes on Linux, 104 on macOS: keep a margin


class RemoteError(Exception):
    """Listing or forwarding over ssh failed; the message says what to do."""


# -- targets ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SshTarget:
    """`ssh://[user@]host[:port][/run]`."""

    host: str
    user: str | None = None
    port: int | None = None
    run: str | None = None

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port else ""
        run = f"/{self.run}" if self.run else ""
        return f"ssh://{self.user + '@' if self.user else ''}{host}{port}{run}"


def is_ssh_target(target: str | None) -> bool:
    return bool(target) and target.startswith("ssh://")  # type: ignore[union-attr]


def parse_target(target: str) -> SshTarget:
    """Parse `ssh://[user@]host[:port][/run]` (a bare `host` is taken as `ssh://host`)."""
    text = target if "://" in target else f"ssh://{target}"
    parts = urlsplit(text)
    if parts.scheme != "ssh":
        raise RemoteError(f"{target!r}: not an ssh:// target (use ssh://[user@]host[:port][/run])")
    try:
        port = parts.port
    except ValueError:
        raise RemoteError(f"{target!r}: the port is not a number between 1 and 65535") from None
    host = parts.hostname
    if not host:
        raise RemoteError(f"{target!r}: no host (use ssh://[user@]host[:port][/run])")
    # The host name keeps its case for ssh_config `Host` patterns: take it from the netloc, not .hostname.
    raw_host = parts.netloc.rsplit("@", 1)[-1]
    raw_host = raw_host[1:].split("]", 1)[0] if raw_host.startswith("[") else raw_host.split(":", 1)[0]
    user = unquote(parts.username) if parts.username else None
    for what, value in (("host", raw_host), ("user", user or "")):
        # A leading '-' would be read by ssh as an option (-oProxyCommand=...): never pass one through.
        if value.startswith("-") or any(c.isspace() or ord(c) < 32 for c in value):
            raise RemoteError(f"{target!r}: invalid {what} {value!r}")
    run = unquote(parts.path.strip("/")) or None
    if parts.query or parts.fragment:
        raise RemoteError(f"{target!r}: unexpected '?' or '#' (use ssh://[user@]host[:port][/run])")
    return SshTarget(host=raw_host, user=user, port=port, run=run)


# -- ssh command lines ------------------------------------------------------------------------------------
def _ssh_base(target: SshTarget, *, batch: bool, options: Iterable[str] = ()) -> list[str]:
    ssh = shlex.split(os.environ.get(ENV_SSH, "ssh"))
    # ssh keeps the first value it is given for each option: the user's come first, so they win over ours.
    user_opts = shlex.split(os.environ.get(ENV_SSH_OPTS, ""))
    ours = ["-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}", "-o", f"ServerAliveInterval={ALIVE_INTERVAL_S}",
            "-o", f"ServerAliveCountMax={ALIVE_COUNT}"]
    if batch:
        # Re-connections happen behind the TUI: a password prompt there would hang unseen. Keys and agents work.
        ours += ["-o", "BatchMode=yes"]
    port = ["-p", str(target.port)] if target.port else []
    return [*ssh, *user_opts, *ours, *options, *port, "--", target.destination]


def remote_command(*args: str) -> str:
    """The shell command that runs `accmon ARGS` on the remote host (`$ACCMON_REMOTE_CMD` replaces `accmon`)."""
    base = os.environ.get(ENV_REMOTE_CMD) or DEFAULT_REMOTE_CMD
    return base + " " + shlex.join(args)


def _explain_exit(target: SshTarget, code: int, stderr: str) -> str:
    tail = " ".join(line.strip() for line in stderr.strip().splitlines()[-3:])[:500]
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"ssh was killed by {name}"
    if code == 255:
        return f"ssh to {target.destination} failed: {tail or 'no message'}"
    if code == 127 or "No module named accmon" in stderr:
        return (f"accmon was not found on {target.host}: install it there (pip install accmon), or tell where it is "
                f"with ACCMON_REMOTE_CMD='/path/to/python -m accmon.tui.cli' ({tail})")
    if "unrecognized arguments" in stderr or "invalid choice" in stderr:
        return f"the accmon on {target.host} is too old for attach over ssh: upgrade it there ({tail})"
    return f"`accmon ls` on {target.host} exited with {code}: {tail or 'no message'}"


# -- listing ----------------------------------------------------------------------------------------------
_ENTRY_FIELDS = {f.name: f for f in fields(registry.RunEntry)}
_ENTRY_TYPES = {"run_id": str, "rank": int, "name": str, "host": str, "pid": int, "started": (int, float),
                "cmd": list, "pub": str, "ctl": str, "world_size": int, "pid_start": str, "extra": dict}
_REQUIRED = ("run_id", "rank", "pub", "ctl")


def parse_listing(text: str | bytes) -> list[registry.RunEntry]:
    """Registry entries from `accmon ls --json` output. Validated: the remote side is not trusted to be sane."""
    if len(text) > MAX_LISTING_BYTES:
        raise RemoteError(f"the run listing is {len(text)} bytes: refusing it (more than {MAX_LISTING_BYTES})")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:  # deep nesting makes the json module recurse past the limit
        first = (text.decode("utf-8", "replace") if isinstance(text, bytes) else text).strip().splitlines()[:1]
        raise RemoteError(f"the run listing is not JSON ({exc}): {first[0][:200] if first else 'empty output'}") from None
    if not isinstance(data, list):
        raise RemoteError("the run listing is not a list")
    entries = []
    for item in data:
        if not isinstance(item, dict):
            continue
        kwargs = {k: v for k, v in item.items() if k in _ENTRY_FIELDS}  # unknown fields: ignored
        if any(k not in kwargs for k in _REQUIRED) or any(
            not isinstance(v, _ENTRY_TYPES[k]) or isinstance(v, bool) for k, v in kwargs.items()
        ):
            continue
        if not all(isinstance(c, str) for c in kwargs.get("cmd", [])):
            continue
        if not all(ep.startswith(("ipc://", "tcp://")) for ep in (kwargs["pub"], kwargs["ctl"])):
            continue
        kwargs.setdefault("name", kwargs["run_id"])
        kwargs.setdefault("host", "?")
        kwargs.setdefault("pid", 0)
        kwargs.setdefault("started", 0.0)
        kwargs.setdefault("cmd", [])
        entries.append(registry.RunEntry(**kwargs))
    entries.sort(key=lambda e: (e.started, e.run_id, e.rank), reverse=True)
    return entries


def entries_json(entries: list[registry.RunEntry]) -> str:
    """One line of JSON: what `accmon ls --json` prints."""
    return json.dumps([asdict(e) for e in entries], separators=(",", ":"))


def list_remote(target: SshTarget | str, *, batch: bool = False, timeout: float = FIRST_CONNECT_TIMEOUT_S) -> list[registry.RunEntry]:
    """The live runs registered on the remote host, newest first."""
    t = parse_target(target) if isinstance(target, str) else target
    cmd = _ssh_base(t, batch=batch, options=["-T"]) + [remote_command("ls", "--json")]
    try:
        # stdin stays closed: ssh asks for passwords and host keys on /dev/tty, never on stdin.
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    except FileNotFoundError:
        raise RemoteError(f"no ssh command ({cmd[0]}): install OpenSSH's client") from None
    except subprocess.TimeoutExpired:
        raise RemoteError(f"ssh to {t.destination} did not answer within {timeout:.0f} s") from None
    stderr = proc.stderr.decode("utf-8", "replace")
    if proc.returncode != 0:
        raise RemoteError(_explain_exit(t, proc.returncode, stderr))
    return parse_listing(proc.stdout)


def pick_run(entries: list[registry.RunEntry], spec: str | None) -> list[registry.RunEntry]:
    """All ranks of the newest run, or of the run whose id or name starts with `spec` (as registry.find_run)."""
    runs = entries
    if spec:
        runs = [e for e in runs if e.run_id.startswith(spec) or e.name == spec or e.name.startswith(spec)]
    if not runs:
        return []
    newest = max(runs, key=lambda e: (e.started, e.run_id)).run_id
    return sorted((e for e in runs if e.run_id == newest), key=lambda e: e.rank)


def follow_runs(run_id: str, out: IO[str], *, interval: float = FOLLOW_POLL_S, stop: Callable[[], bool] | None = None) -> int:
    """`accmon ls --json --follow RUN` (the remote side of an attach): print the run's live entries as one JSON
    line now and again whenever they change; return when none is left. Only reads the local registry."""
    last: str | None = None
    while True:
        entries = sorted((e for e in registry.list_runs() if e.run_id == run_id), key=lambda e: e.rank)
        line = entries_json(entries)
        if line != last:
            last = line
            try:
                out.write(line + "\n")
                out.flush()
            except (BrokenPipeError, OSError):
                return 0  # the viewer went away
        if not entries or (stop is not None and stop()):
            return 0
        time.sleep(interval)


# -- forwarding -------------------------------------------------------------------------------------------
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
                 on_event: Callable[[str], None] | None = None, reconnect: bool = True) -> None:
        if not remote_entries:
            raise ValueError("no entries to forward")
        self.target = target
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
        extra = {**e.extra, "remote": str(self.target), "remote_host": e.host, "remote_pub": e.pub, "remote_ctl": e.ctl}
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
        follow = remote_command("ls", "--json", "--follow", self.run_id)
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
                try:
                    ranks = {e.rank for e in parse_listing(line) if e.run_id == self.run_id}
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
            if proc is not None and proc.poll() is None:
                self._stop.wait(0.1)
                continue
            if self._stop.is_set():
                return
            with self._lock:
                gone = self._alive_ranks is not None and not self._alive_ranks
            if gone:
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
    deadline = time.monotonic() + RANKS_WAIT_S
    while len(chosen) < max(e.world_size for e in chosen) and time.monotonic() < deadline:
        time.sleep(0.5)  # ranks still registering
        try:
            chosen = [e for e in list_remote(t, batch=True) if e.run_id == chosen[0].run_id] or chosen
        except RemoteError:
            break  # e.g. a password is needed for each connection: attach to the ranks we know
    return RemoteRun(t, chosen, on_event=on_event, reconnect=reconnect).start()


def _names(entries: list[registry.RunEntry]) -> str:
    seen: dict[str, str] = {}
    for e in entries:
        seen.setdefault(e.run_id, e.name)
    return ", ".join(f"{rid} ({name})" for rid, name in seen.items())


# -- the app's side -----------------------------------------------------------------------------------------
RECONNECTED_NOTE_S = 10.0  # how long the header keeps saying "reconnected …" after a reconnection
PICKER_LIST_EVERY_S = 5.0  # the picker rescans every second: one ssh login per second would flood auth logs


class RemoteSource:
    """The app's Source (tui/app_sources.py) for a run on another host.

    It connects through ssh on its own thread — the UI never waits for ssh — then is a LiveSource on the
    forwarded sockets. The header shows the ssh side: "connecting", a lost connection and each retry (as
    stalled), a reconnection, and the run being gone on the remote host.
    """

    kind = "live"

    def __init__(self, target: SshTarget, entries: list[registry.RunEntry], *, record: str | None = None,
                 remote: RemoteRun | None = None) -> None:
        self.target = target
        self.remote_entries = entries
        self.record = record
        self.remote = remote
        if remote is not None:
            remote.on_event = self._on_event
        self._inner: Any = None
        self._error: str | None = None
        self._note_until = 0.0
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._connect, name="accmon-remote-source", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _on_event(self, message: str) -> None:
        self._note_until = time.monotonic() + RECONNECTED_NOTE_S

    def _connect(self) -> None:
        from .app_sources import LiveSource

        try:
            if self.remote is None:
                self.remote = RemoteRun(self.target, self.remote_entries, on_event=self._on_event).start(batch=True)
        except RemoteError as exc:
            self._error = f"{exc} (from inside the TUI ssh cannot ask for a password: use a key or an agent)"
            return
        if self._closed.is_set():
            self.remote.close()
            return
        # A remote run is not in this host's registry: never look for a restarted run of the same name here.
        inner = LiveSource(self.remote.entries, record=self.record, find_again=lambda: [])
        inner.start()
        self._inner = inner

    @property
    def generation(self) -> int:
        return self._inner.generation if self._inner is not None else 0

    def drain(self, max_frames: int | None = None) -> list[dict[str, Any]]:
        return self._inner.drain(max_frames) if self._inner is not None else []

    @property
    def status(self) -> Any:
        from .app_sources import SourceStatus

        if self._error is not None:
            return SourceStatus(state="gone", message=self._error)
        if self._inner is None or self.remote is None:
            return SourceStatus(state="connecting", message=f"connecting to {self.target.destination} through ssh…")
        st = self._inner.status
        r = self.remote
        if r.state == "reconnecting":
            return replace(st, state="stalled", message=r.message)
        if r.state == "gone" and st.state != "ended":
            return replace(st, state="gone", message=r.message)
        if r.reconnects and time.monotonic() < self._note_until:
            return replace(st, message=r.message)
        return st

    def close(self) -> None:
        self._closed.set()
        if self._inner is not None:
            self._inner.close()
        if self.remote is not None:
            self.remote.close()


class RemoteLister:
    """`list_runs` for the app's picker: the remote host's runs, re-listed at most every few seconds."""

    def __init__(self, target: SshTarget, listing: list[registry.RunEntry] | None = None) -> None:
        self.target = target
        self._entries = listing or []
        self._at = time.monotonic() if listing is not None else 0.0
        self._lock = threading.Lock()

    def __call__(self) -> list[registry.RunEntry]:
        with self._lock:
            if time.monotonic() - self._at >= PICKER_LIST_EVERY_S:
                self._at = time.monotonic()
                try:
                    self._entries = list_remote(self.target, batch=True)
                except RemoteError:
                    pass  # keep showing the last listing; the picker retries
            return list(self._entries)


# -- the commands -----------------------------------------------------------------------------------------
def _say(line: str) -> None:
    import sys

    sys.stderr.write(f"accmon: {line}\n")
    sys.stderr.flush()


def cmd_ls_remote(target: str, *, as_json: bool = False) -> int:
    """`accmon ls ssh://host`."""
    try:
        t = parse_target(target)
        entries = list_remote(t)
    except RemoteError as exc:
        _say(str(exc))
        return 2
    if as_json:
        print(entries_json(entries))
        return 0
    if not entries:
        print(f"no live runs on {t.host}")
        return 0
    print(f"{'RUN':<20} {'RANK':>4} {'NAME':<20} {'PID':>7} {'STARTED':<19}  COMMAND")
    for e in entries:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.started))
        print(f"{e.run_id:<20} {e.rank:>4} {e.name[:20]:<20} {e.pid:>7} {started:<19}  {' '.join(e.cmd)[:60]}")
    return 0


def cmd_attach_remote(target: str, *, headless: bool, record: str | None, interactive: bool) -> int:
    """`accmon attach ssh://[user@]host[:port][/run] [--headless] [--record FILE]`."""
    tui = interactive and not headless
    try:
        t = parse_target(target)
        listing = list_remote(t)
        chosen = pick_run(listing, t.run)
        several = len({e.run_id for e in listing}) > 1 and not t.run
        if tui and several:
            return _run_app(t, None, listing, record)  # the picker chooses
        if chosen and several:
            _say(f"{len({e.run_id for e in listing})} runs on {t.host}; attaching to the newest, {chosen[0].run_id} "
                 f"({chosen[0].name}). Name another with ssh://{t.destination}/RUN (see `accmon ls {t}`)")
        # Connect before any TUI starts: ssh may need the terminal for a password or a host key.
        remote = open_remote(t, on_event=_say, entries=listing)
    except RemoteError as exc:
        _say(str(exc))
        return 2
    with remote:
        if tui:
            return _run_app(t, remote, listing, record)
        _say(f"attached to run {remote.run_id} ({remote.entries[0].name}) on {t.host} through ssh")
        from .headless import HeadlessViewer

        return HeadlessViewer(remote.entries, record=record, discover=False).run(until=remote.gone)


def _run_app(t: SshTarget, remote: RemoteRun | None, listing: list[registry.RunEntry], record: str | None) -> int:
    from .app import AccmonApp

    opened: list[RemoteSource] = []

    def attach(entries: list[registry.RunEntry]) -> RemoteSource:
        source = RemoteSource(t, entries, record=record)
        opened.append(source)
        return source

    first = RemoteSource(t, remote.remote_entries, record=record, remote=remote) if remote is not None else None
    app = AccmonApp(first, attach=attach, list_runs=RemoteLister(t, listing), pick=first is None)
    try:
        return app.run() or 0
    finally:
        for source in opened:  # the app closes the source it shows; sources it switched away from too, but be sure
            source.close()
