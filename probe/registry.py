"""Registry of live runs: one small 0600 JSON file per run (per rank) in a per-user 0700 runtime directory.

The same directory holds the runs' `ipc://` sockets, so file permissions keep other users out — which a TCP
port on 127.0.0.1 would not on a shared GPU node. Entries of processes that died are ignored and removed.

Many hosts. Each entry names its host (`host_name()`: `$ACCMON_HOST`, else the host name — the name a viewer
gives ssh to reach it). `$ACCMON_REGISTRY` names a directory for the *entries* only, e.g. on a filesystem
that every node mounts at the same path: then one listing shows the ranks of all hosts. Sockets always stay
in the local runtime directory — an `ipc://` socket cannot be reached from another host, so a viewer reaches
another host's ranks through ssh (tui/remote.py) and only this host's directly. A host judges (and cleans)
only its own entries: it cannot see another host's processes.

Run ids. The ranks of one job must share one id on every host, or a viewer could not put them together; two
jobs must never share one. `run_id_from_env()` decides, in this order: `$ACCMON_RUN_ID` (set it alike on every
node to name the job yourself), the id a torchrun job agrees on (`torchrun_run_id()`), the token of the
`accmon run` that launched this process (`$ACCMON_LAUNCH`: its ranks on this host), else a new id.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import secrets
import socket
import stat
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

ENV_DIR = "ACCMON_RUNTIME_DIR"
ENV_REGISTRY = "ACCMON_REGISTRY"
ENV_HOST = "ACCMON_HOST"
ENV_RUN_ID = "ACCMON_RUN_ID"
ENV_LAUNCH = "ACCMON_LAUNCH"  # set by `accmon run` for its command: which entries are its own
STORE_TIMEOUT_S = 3.0  # connecting to torchrun's store on the master node; past this, the id comes from the env


class RegistryError(Exception):
    """The runtime directory cannot be used safely."""


def runtime_dir(create: bool = True) -> str:
    """The per-user directory for sockets and registry entries.

    `$ACCMON_RUNTIME_DIR`, else `$XDG_RUNTIME_DIR/accmon`, else `/tmp/accmon-<uid>`. It must belong to
    this user and be 0700; one that does not is refused rather than used (another user could read the run).
    """
    path = os.environ.get(ENV_DIR)
    if not path:
        xdg = os.environ.get("XDG_RUNTIME_DIR")
        path = os.path.join(xdg, "accmon") if xdg and os.path.isdir(xdg) else os.path.join(tempfile.gettempdir(), f"accmon-{os.getuid()}")
    return _private_dir(path, create)


def registry_dir(create: bool = True) -> str:
    """Where entries are written and listed: `$ACCMON_REGISTRY` (shared by several hosts), else runtime_dir()."""
    shared = os.environ.get(ENV_REGISTRY)
    return _private_dir(shared, create, tighten=False) if shared else runtime_dir(create)


def host_name() -> str:
    """This host as entries name it: `$ACCMON_HOST` (the name viewers reach it by with ssh), else its host name."""
    return os.environ.get(ENV_HOST) or socket.gethostname()


def is_local(entry: RunEntry) -> bool:
    """True for an entry this host registered (by name): a viewer connects to it directly, not through ssh."""
    return entry.host == host_name()


def is_here(entry: RunEntry) -> bool:
    """True for an entry of this host by name, or whose `ipc://` socket is on this machine's filesystem — an
    ssh session on a node whose training set `$ACCMON_HOST` and which itself did not still finds its ranks."""
    if is_local(entry):
        return True
    try:
        return any(stat.S_ISSOCK(os.stat(p).st_mode) for p in _ipc_files(entry))
    except OSError:
        return False


def _private_dir(path: str, create: bool, *, tighten: bool = True) -> str:
    """`path`, made 0700 if missing. An existing one must be this user's; one others can enter is made 0700
    again when it is accmon's own (`tighten`), and refused otherwise: `$ACCMON_REGISTRY` names a directory
    the user chose, whose mode accmon does not change behind their back."""
    if create:
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise RegistryError(f"cannot create the accmon runtime directory {path}: {exc.strerror}") from None
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            raise RegistryError(f"{path} is not a directory owned by you: refusing to put run sockets there")
        if stat.S_IMODE(st.st_mode) & 0o077:
            if not tighten:
                raise RegistryError(
                    f"{path} (${ENV_REGISTRY}) is open to other users (mode {stat.S_IMODE(st.st_mode):04o}): "
                    f"refusing to list runs there. Make it private yourself (chmod 700 {path}) or unset ${ENV_REGISTRY}.")
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
        if not is_here(self):
            return True  # cannot tell from here; a remote host's own registry cleans its entries
        return _process_start(self.pid) == self.pid_start and self.pid_start != ""


def new_run_id() -> str:
    # Short: ipc:// paths are limited to ~107 bytes, and the runtime dir may already be long.
    return time.strftime("%m%d%H%M%S") + "-" + secrets.token_hex(3)


# -- run ids shared by the ranks of one job ----------------------------------------------------------------
def run_id_from_env(env: Mapping[str, str] | None = None) -> str:
    """The run id of this process when none is given to `Run` (see the module docstring for the order)."""
    env = os.environ if env is None else env
    return env.get(ENV_RUN_ID) or torchrun_run_id(env) or env.get(ENV_LAUNCH) or new_run_id()


def torchrun_run_id(env: Mapping[str, str] | None = None) -> str | None:
    """The id every rank of a torchrun (torchelastic) job gets, on every node; None outside torchrun.

    What torch 2.13's torchrun gives all workers of all nodes alike: `TORCHELASTIC_RUN_ID` (the `--rdzv-id`;
    a fresh uuid for a one-node job; but the constant "none" under static rendezvous, `--master-addr/port`),
    `MASTER_ADDR`/`MASTER_PORT` (the store the agents share; a fixed port, 29500 by default, under static
    rendezvous) and `TORCHELASTIC_RESTART_COUNT`. None of these alone tells two jobs apart: two jobs run one
    after the other with the same master address and port, or with the same `--rdzv-id`, see the same values.
    So the ranks agree through that store instead — the first to ask writes a fresh id under a key of this
    attempt, the others read it (a few ms, once) — and only when the store cannot be reached (this process
    has not imported torch, or the store does not answer within STORE_TIMEOUT_S) is the id a hash of those
    values: still the same on every node, unique among jobs alive at the same time (a master port is held
    by one job at a time), but an earlier job with the same master address and port had the same one.
    A restart (`--max-restarts`) is a new attempt, and so a new run: the viewer re-attaches to it.
    """
    env = os.environ if env is None else env
    rdzv = env.get("TORCHELASTIC_RUN_ID")
    if rdzv is None:
        return None
    addr, port = env.get("MASTER_ADDR", ""), env.get("MASTER_PORT", "")
    attempt = env.get("TORCHELASTIC_RESTART_COUNT", "0")
    agreed = _agree_in_store(addr, port, attempt) if env.get("TORCHELASTIC_USE_AGENT_STORE") == "True" else None
    if agreed:
        return agreed
    # A scheduler's job id, where there is one, is shared by the nodes and unique per job.
    job = next((env[k] for k in ("SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID", "JOB_ID") if env.get(k)), "")
    key = "\0".join((rdzv, addr, port, attempt, env.get("WORLD_SIZE", ""), job))
    return "tr-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def _agree_in_store(addr: str, port: str, attempt: str) -> str | None:
    """Agree on a fresh id through the TCP store torchrun's agents host for their workers; None if unreachable."""
    torch = sys.modules.get("torch")
    if torch is None or not addr or not port.isdigit():
        return None  # never import torch here: only a process that already did can use its store
    try:
        import datetime

        from torch.distributed import TCPStore

        # A client only (is_master=False), counted by nobody (no world size, no waiting for workers).
        store = TCPStore(addr, int(port), None, False, datetime.timedelta(seconds=STORE_TIMEOUT_S),
                         wait_for_workers=False)
        # compare_set writes our candidate only if the key is absent, and returns what the key holds: the
        # first rank's candidate, for every rank.
        value = store.compare_set(f"accmon/run_id/{attempt}", "", new_run_id())
        text = value.decode() if isinstance(value, bytes) else str(value)
        return text if text and all(c.isalnum() or c == "-" for c in text) and len(text) <= 32 else None
    except Exception:
        return None


def entry_path(run_id: str, rank: int) -> str:
    return os.path.join(registry_dir(), f"{run_id}.{rank}.json")


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
    entry.host = host_name()  # $ACCMON_HOST, when set, is how viewers reach this host: the entry must say it
    launch = os.environ.get(ENV_LAUNCH)
    if launch:
        entry.extra = {**entry.extra, "launch": launch}  # lets `accmon run` find its own ranks, whatever their id
    path = entry.path
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(asdict(entry), fh)
    os.replace(tmp, path)
    return path


def unregister(entry: RunEntry, path: str | None = None) -> None:
    """Remove the entry's file and the sockets accmon made for it — only those: `{run_id}.{rank}.pub/.ctl`
    sockets in the runtime directory. An entry naming any other file (issue 16: a stale entry naming
    `ipc:///some/file` had `accmon ls` delete that file) gets its own file removed, nothing else."""
    ours = set(socket_paths(entry.run_id, entry.rank)) if _RUN_ID.match(entry.run_id) else set()
    for p in (path or entry.path, *(f for f in _ipc_files(entry) if f in ours)):
        try:
            if p != path and p != entry.path and not stat.S_ISSOCK(os.lstat(p).st_mode):
                continue
            os.unlink(p)
        except (FileNotFoundError, RegistryError):
            pass


def _ipc_files(entry: RunEntry) -> list[str]:
    return [ep[len("ipc://") :] for ep in (entry.pub, entry.ctl) if ep.startswith("ipc://")]


def is_registered(entry: RunEntry) -> bool:
    """True while the entry's file is still there: a run removes it when it ends (its process may linger)."""
    name = f"{entry.run_id}.{entry.rank}.json"
    return any(os.path.exists(os.path.join(d, name)) for d in {registry_dir(), runtime_dir()})


# What an entry's fields must be: entries are files any process of this user (or of a shared registry's users)
# may have written, read by `ls`, `accmon` and `check`: one of another shape is passed over, never a crash.
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "run_id": str, "rank": int, "name": str, "host": str, "pid": int, "started": (int, float), "cmd": list,
    "pub": str, "ctl": str, "world_size": int, "pid_start": str, "extra": dict}
_REQUIRED_FIELDS = ("run_id", "rank", "name", "host", "pid", "started", "cmd", "pub", "ctl")


def entry_from_dict(data: object) -> RunEntry | None:
    """A RunEntry from decoded JSON, or None when it is not one (wrong types, odd run id, foreign endpoint)."""
    if not isinstance(data, dict):
        return None
    fields = {k: v for k, v in data.items() if k in _FIELD_TYPES}
    if any(k not in fields for k in _REQUIRED_FIELDS):
        return None
    for k, v in fields.items():
        if not isinstance(v, _FIELD_TYPES[k]) or isinstance(v, bool):
            return None
    if not _RUN_ID.match(fields["run_id"]) or not all(isinstance(c, str) for c in fields["cmd"]):
        return None
    if not all(fields[k].startswith(("ipc://", "tcp://")) for k in ("pub", "ctl")):
        return None
    if not (-1 < fields["rank"] < 2**31 and math.isfinite(fields["started"])):
        return None
    return RunEntry(**fields)


def load_entry(path: str) -> RunEntry | None:
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (OSError, ValueError, RecursionError):
        return None
    return entry_from_dict(data)


def list_runs(*, clean: bool = True, here: bool = False) -> list[RunEntry]:
    """Live runs, newest first: this host's, and other hosts' in a shared `$ACCMON_REGISTRY` (unless `here`:
    then only those reachable on this machine, see is_here). Entries of this host's dead processes are removed
    (with their sockets)."""
    dirs = [registry_dir()]
    if dirs[0] != runtime_dir():
        dirs.append(runtime_dir())  # runs started without $ACCMON_REGISTRY register in the runtime directory
    entries: list[RunEntry] = []
    seen: set[tuple[str, int, str]] = set()
    for d in dirs:
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for name in names:
            if not name.endswith(".json"):
                continue
            entry = load_entry(os.path.join(d, name))
            if entry is None or (entry.run_id, entry.rank, entry.host) in seen:
                continue
            if here and not is_here(entry):
                continue
            if entry.alive():
                seen.add((entry.run_id, entry.rank, entry.host))
                entries.append(entry)
            elif clean:
                unregister(entry, path=os.path.join(d, name))
    entries.sort(key=lambda e: (e.started, e.run_id, e.rank), reverse=True)
    return entries


def find_run(spec: str | None = None, *, here: bool = False) -> list[RunEntry]:
    """The entries (all ranks, of every host unless `here`) of the newest run, or of the run whose id or name
    starts with `spec`."""
    runs = list_runs(here=here)
    if spec:
        runs = [e for e in runs if e.run_id.startswith(spec) or e.name == spec or e.name.startswith(spec)]
    if not runs:
        return []
    newest = runs[0].run_id
    return sorted((e for e in runs if e.run_id == newest), key=lambda e: e.rank)
