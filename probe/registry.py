"""Registry of live runs: one small 0600 JSON file per run (per rank) in a per-user 0700 runtime directory.

The same directory holds the runs' `ipc://` sockets, so file permissions keep other users out — which a TCP
port on 127.0.0.1 would not on a shared GPU node. Entries of processes that died are ignored and removed.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import stat
import tempfile
import time
from dataclasses import asdict, dataclass, field

ENV_DIR = "ACCMON_RUNTIME_DIR"
ENV_REGISTRY = "ACCMON_REGISTRY"


class RegistryError(Exception):
    """The runtime directory cannot be used safely."""


def runtime_dir(create: bool = True) -> str:
    """The per-user directory for sockets and registry entries.

    `$ACCMON_RUNTIME_DIR`, else `$XDG_RUNTIME_DIR/accmon`, else `/tmp/accmon-<uid>`. It must belong to
    this user and be 0700; one that does not is refused rather than used (another user could read the run).
    """
    path = os.environ.get(ENV_DIR) or os.environ.get(ENV_REGISTRY)
    if not path:
        xdg = os.environ.get("XDG_RUNTIME_DIR")
        path = os.path.join(xdg, "accmon") if xdg and os.path.isdir(xdg) else os.path.join(tempfile.gettempdir(), f"accmon-{os.getuid()}")
    if create:
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise RegistryError(f"cannot create the accmon runtime directory {path}: {exc.strerror}") from None
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            raise RegistryError(f"{path} is not a directory owned by you: refusing to put run sockets there")
        if stat.S_IMODE(st.st_mode) & 0o077:
            os.chmod(path, 0o700)
    return path


@dataclass
class RunEntry:
    """What a viewer needs to find and attach to a live run."""

    run_id: str
    rank: int
    name: str
    host: str
    pid: int
    started: float
    cmd: list[str]
    pub: str  # PUB endpoint: live frames
    ctl: str  # ROUTER endpoint: history and control
    world_size: int = 1
    pid_start: str = ""  # the process's start time, so a recycled pid is not taken for the run
    extra: dict = field(default_factory=dict)

    @property
    def path(self) -> str:
        return entry_path(self.run_id, self.rank)

    def alive(self) -> bool:
        if self.host != socket.gethostname():
            return True  # cannot tell from here; a remote host's own registry cleans its entries
        return _process_start(self.pid) == self.pid_start and self.pid_start != ""


def new_run_id() -> str:
    # Short: ipc:// paths are limited to ~107 bytes, and the runtime dir may already be long.
    return time.strftime("%m%d%H%M%S") + "-" + secrets.token_hex(3)


def entry_path(run_id: str, rank: int) -> str:
    return os.path.join(runtime_dir(), f"{run_id}.{rank}.json")


def socket_paths(run_id: str, rank: int) -> tuple[str, str]:
    base = os.path.join(runtime_dir(), f"{run_id}.{rank}")
    return base + ".pub", base + ".ctl"


def _process_start(pid: int) -> str:
    """Start time of a process in clock ticks since boot (field 22 of /proc/PID/stat), '' if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return ""
        except PermissionError:
            return "?"
        return "?"  # alive, but no /proc (not Linux): trust the pid
    # The command name may hold spaces or parentheses: split after the last ')'.
    fields = data[data.rindex(b")") + 2 :].split()
    return fields[19].decode()


def register(entry: RunEntry) -> str:
    """Write the entry atomically (0600) and return its path."""
    entry.pid_start = _process_start(entry.pid)
    path = entry.path
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(asdict(entry), fh)
    os.replace(tmp, path)
    return path


def unregister(entry: RunEntry) -> None:
    for p in (entry.path, *_ipc_files(entry)):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


def _ipc_files(entry: RunEntry) -> list[str]:
    return [ep[len("ipc://") :] for ep in (entry.pub, entry.ctl) if ep.startswith("ipc://")]


def load_entry(path: str) -> RunEntry | None:
    try:
        with open(path) as fh:
            data = json.load(fh)
        data.pop("path", None)
        return RunEntry(**data)
    except (OSError, ValueError, TypeError):
        return None


def list_runs(*, clean: bool = True) -> list[RunEntry]:
    """Live runs on this host, newest first. Entries of dead processes are removed (with their sockets)."""
    d = runtime_dir()
    entries = []
    for name in os.listdir(d):
        if not name.endswith(".json"):
            continue
        entry = load_entry(os.path.join(d, name))
        if entry is None:
            continue
        if entry.alive():
            entries.append(entry)
        elif clean:
            unregister(entry)
    entries.sort(key=lambda e: (e.started, e.run_id, e.rank), reverse=True)
    return entries


def find_run(spec: str | None = None) -> list[RunEntry]:
    """The entries (all ranks) of the newest run, or of the run whose id or name starts with `spec`."""
    runs = list_runs()
    if spec:
        runs = [e for e in runs if e.run_id.startswith(spec) or e.name == spec or e.name.startswith(spec)]
    if not runs:
        return []
    newest = runs[0].run_id
    return sorted((e for e in runs if e.run_id == newest), key=lambda e: e.rank)
