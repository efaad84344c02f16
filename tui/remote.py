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
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields, replace
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from accmon.probe import registry

if TYPE_CHECKING:
    from .app_sources import RankPeek

ENV_SSH_OPTS = "ACCMON_SSH_OPTS"
ENV_REMOTE_CMD = "ACCMON_REMOTE_CMD"
ENV_SSH = "ACCMON_SSH"  # another ssh binary (e.g. a wrapper); the default is `ssh` on PATH
# If `accmon` is not on the non-interactive PATH (a venv not activated by ~/.bashrc), try the module, from /
# and with PYTHONSAFEPATH: `python3 -m` puts the current directory first on the path, and a `msgpack.py` in the
# remote home directory would be run.
DEFAULT_REMOTE_CMD = (
    "sh -c 'if command -v accmon >/dev/null 2>&1; then exec accmon \"$@\"; "
    "else cd / && exec env PYTHONSAFEPATH=1 python3 -m accmon.tui.cli \"$@\"; fi' accmon"
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


_HOST_CHARS = re.compile(r"^[A-Za-z0-9._:%-]+$")
_USER_CHARS = re.compile(r"^[A-Za-z0-9._$\\-]*$")


def parse_target(target: str) -> SshTarget:
    """Parse `ssh://[user@]host[:port][/run]` (a bare `host` is taken as `ssh://host`)."""
    text = target if "://" in target else f"ssh://{target}"
    try:
        parts = urlsplit(text)
    except ValueError as exc:  # an unbalanced '[' and the like
        raise RemoteError(f"{target!r}: not an ssh:// target ({exc}; use ssh://[user@]host[:port][/run])") from None
    if parts.scheme != "ssh":
        raise RemoteError(f"{target!r}: not an ssh:// target (use ssh://[user@]host[:port][/run])")
    try:
        port = parts.port
        host = parts.hostname
    except ValueError:
        raise RemoteError(f"{target!r}: the port is not a number between 1 and 65535, or the host is no address") from None
    if not host:
        raise RemoteError(f"{target!r}: no host (use ssh://[user@]host[:port][/run])")
    # The host name keeps its case for ssh_config `Host` patterns: take it from the netloc, not .hostname.
    raw_host = parts.netloc.rsplit("@", 1)[-1]
    raw_host = raw_host[1:].split("]", 1)[0] if raw_host.startswith("[") else raw_host.split(":", 1)[0]
    user = unquote(parts.username) if parts.username else None
    for what, value, allowed in (("host", raw_host, _HOST_CHARS), ("user", user or "", _USER_CHARS)):
        # Only what a host (name, IPv4, [IPv6%zone], ssh_config alias) or user name can be; a leading '-' would be
        # read by ssh as an option (-oProxyCommand=...).
        if value.startswith("-") or not allowed.match(value):
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
_ENTRY_TYPES: dict[str, type | tuple[type, ...]] = {"run_id": str, "rank": int, "name": str, "host": str, "pid": int, "started": (int, float),
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


def entries_json(entries: list[registry.RunEntry], peeks: dict[tuple[str, int, int], RankPeek] | None = None) -> str:
    """One line of JSON: what `accmon ls --json` prints; with `peeks` (`--peek`), each answering rank's `peek`:
    {step, status, alerts, active}."""
    out = []
    for e in entries:
        d = asdict(e)
        p = (peeks or {}).get((e.run_id, e.rank, e.pid))
        if p is not None:
            d["peek"] = asdict(p)
        out.append(d)
    return json.dumps(out, separators=(",", ":"))


def list_remote(target: SshTarget | str, *, batch: bool = False, timeout: float = FIRST_CONNECT_TIMEOUT_S,
                peeks: dict[tuple[str, int, int], RankPeek] | None = None) -> list[registry.RunEntry]:
    """The live runs on the remote host, newest first: only those whose sockets are there (`ls --here`), not
    other hosts' entries of a registry it shares with them — those cannot be forwarded from it. With `peeks`,
    what each rank answered there to `hello` (`ls --peek`: step, status, alerts) is added to it."""
    t = parse_target(target) if isinstance(target, str) else target
    # The later ones for an older accmon there, without --peek, or without --here.
    variants = ((("ls", "--json", "--here", "--peek"),) if peeks is not None else ()) + (("ls", "--json", "--here"), ("ls", "--json"))
    for args in variants:
        cmd = _ssh_base(t, batch=batch, options=["-T"]) + [remote_command(*args)]
        try:
            # stdin stays closed: ssh asks for passwords and host keys on /dev/tty, never on stdin.
            proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
        except FileNotFoundError:
            raise RemoteError(f"no ssh command ({cmd[0]}): install OpenSSH's client") from None
        except subprocess.TimeoutExpired:
            raise RemoteError(f"ssh to {t.destination} did not answer within {timeout:.0f} s") from None
        stderr = proc.stderr.decode("utf-8", "replace")
        if proc.returncode == 2 and "--here" in args and "unrecognized arguments" in stderr:
            continue
        if proc.returncode != 0:
            raise RemoteError(_explain_exit(t, proc.returncode, stderr))
        entries = parse_listing(proc.stdout)
        if peeks is not None and "--peek" in args:
            peeks.update(_parse_peeks(proc.stdout, entries))
        return entries
    raise AssertionError("unreachable")


def _parse_peeks(text: bytes, entries: list[registry.RunEntry]) -> dict[tuple[str, int, int], RankPeek]:
    """The `peek` of each listed entry (parse_listing has validated the listing and its size)."""
    from .app_sources import peek_from_dict

    known = {(e.run_id, e.rank, e.pid) for e in entries}
    out: dict[tuple[str, int, int], RankPeek] = {}
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return out
    for item in data if isinstance(data, list) else ():
        if isinstance(item, dict) and (key := (item.get("run_id"), item.get("rank"), item.get("pid", 0))) in known:
            p = peek_from_dict(item.get("peek"))
            if p is not None:
                out[key] = p
    return out


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
    """`accmon ls --json --follow RUN` (the remote side of an attach): print the run's live entries on this
    host as one JSON line now and again whenever they change; return when none is left. Only reads the local
    registry (or the shared one `--registry` names)."""
    last: str | None = None
    while True:
        entries = sorted((e for e in registry.list_runs(here=True) if e.run_id == run_id), key=lambda e: e.rank)
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


def _names(entries: list[registry.RunEntry]) -> str:
    seen: dict[str, str] = {}
    for e in entries:
        seen.setdefault(e.run_id, e.name)
    return ", ".join(f"{rid} ({name})" for rid, name in seen.items())


# -- many hosts -----------------------------------------------------------------------------------------------
VIA = "via"  # RunEntry.extra: the ssh target through which the entry's sockets are reached; absent: this host
VIA_REGISTRY = "via_registry"  # RunEntry.extra: the shared registry the entry was listed from


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


def wait_for_ranks(chosen: list[registry.RunEntry], relist: Callable[[], list[registry.RunEntry]]) -> list[registry.RunEntry]:
    """torchrun registers ranks one by one, on each host: give the run's ranks a few seconds to be all there."""
    deadline = time.monotonic() + RANKS_WAIT_S
    while len(chosen) < max(e.world_size for e in chosen) and time.monotonic() < deadline:
        time.sleep(0.5)  # ranks still registering
        try:
            chosen = [e for e in relist() if e.run_id == chosen[0].run_id] or chosen
        except RemoteError:
            break  # e.g. a password is needed for each connection: attach to the ranks we know
    return chosen


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


# -- the app's side -----------------------------------------------------------------------------------------
RECONNECTED_NOTE_S = 10.0  # how long the header keeps saying "reconnected …" after a reconnection
PICKER_LIST_EVERY_S = 5.0  # the picker rescans every second: one ssh login per second would flood auth logs


class RemoteSource:
    """The app's Source (tui/app_sources.py) for a run on another host, or on several.

    It connects through ssh on its own thread — the UI never waits for ssh — then is a LiveSource on the
    forwarded sockets. The header shows the ssh side: "connecting", a lost connection and each retry (as
    stalled), a reconnection, and the run being gone on the remote host. With `target` None the entries are
    routed ones (gather, route_local): each host's ranks through that host's own connection (HostsRun).
    """

    kind = "live"

    def __init__(self, target: SshTarget | None, entries: list[registry.RunEntry], *, record: str | None = None,
                 remote: RemoteRun | HostsRun | None = None) -> None:
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
                if self.target is not None:
                    self.remote = RemoteRun(self.target, self.remote_entries, on_event=self._on_event).start(batch=True)
                else:
                    self.remote = open_routes(self.remote_entries, on_event=self._on_event).start(batch=True)
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

    def request_stop(self, reason: str = "") -> int:
        """The viewer's stop key, through the forwarded control sockets (the remote run sees this host's ssh
        user on its ipc:// socket: its own user)."""
        return self._inner.request_stop(reason) if self._inner is not None else 0

    def stop_replies(self) -> list[dict[str, Any] | None]:
        return self._inner.stop_replies() if self._inner is not None else []

    @property
    def status(self) -> Any:
        from .app_sources import SourceStatus

        if self._error is not None:
            return SourceStatus(state="gone", message=self._error)
        if self._inner is None or self.remote is None:
            where = self.target.destination if self.target is not None else ", ".join(
                sorted({str(e.extra.get(VIA) or "this host") for e in self.remote_entries}))
            return SourceStatus(state="connecting", message=f"connecting to {where} through ssh…")
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


# -- the commands -----------------------------------------------------------------------------------------
def _say(line: str) -> None:
    import sys

    from .check import printable

    sys.stderr.write(f"accmon: {printable(line)}\n")
    sys.stderr.flush()


def print_entries(entries: list[registry.RunEntry], peeks: dict[tuple[str, int, int], RankPeek] | None = None,
                  *, now: float | None = None) -> None:
    """The `accmon ls` table (HOST: where the rank runs; RUN groups the ranks of one run across hosts). STEP,
    STATUS and ALERTS are what each rank answered to `hello` (peek_runs); "—" where it did not answer in time, or
    cannot be asked from here."""
    from .app_sources import age_words, peek_cells
    from .check import printable

    now = time.time() if now is None else now
    peeks = peeks or {}
    print(f"{'RUN':<20} {'RANK':>4} {'HOST':<16} {'NAME':<20} {'PID':>7} {'STEP':>9} {'STATUS':<8} {'ALERTS':<6} "
          f"{'AGE':>6}  COMMAND")
    for e in entries:
        step, status, alerts = peek_cells(peeks.get((e.run_id, e.rank, e.pid)))
        print(printable(f"{e.run_id:<20} {e.rank:>4} {e.host[:16]:<16} {e.name[:20]:<20} {e.pid:>7} {step:>9} "
                        f"{status:<8} {alerts:<6} {age_words(now - e.started):>6}  {' '.join(e.cmd)[:60]}"))


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
        from .headless import HeadlessViewer

        return HeadlessViewer(remote.entries, record=record, discover=False).run(until=remote.gone)


def _run_app(ts: list[SshTarget] | None, remote: RemoteRun | HostsRun | None, listing: list[registry.RunEntry],
             record: str | None, viewer: dict[str, Any] | None = None) -> int:
    """`viewer`: more options for the AccmonApp (`baseline`, `align`)."""
    from .app import AccmonApp, run_app

    opened: list[RemoteSource] = []

    def attach(entries: list[registry.RunEntry]) -> RemoteSource:
        source = RemoteSource(None, entries, record=record)  # routed entries: each host through its own ssh
        opened.append(source)
        return source

    first = RemoteSource(None, remote.remote_entries, record=record, remote=remote) if remote is not None else None
    lister = RemoteLister(ts, listing) if ts else (lambda: route_local(registry.list_runs()))
    app = AccmonApp(first, attach=attach, list_runs=lister, pick=first is None,  # type: ignore[arg-type]
                    **(viewer or {}))
    try:
        return run_app(app)  # an app that dies exits non-zero with its traceback saved, as a local viewer does
    finally:
        for source in opened:  # the app closes the source it shows; sources it switched away from too, but be sure
            source.close()
