"""What runs a remote host lists (`accmon ls --json --here` over ssh), validated; picking a run from a listing;
the remote side of an attach (`ls --json --follow`)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, fields
from typing import IO

from accmon.probe import registry

from ..peek import RankPeek, age_words, peek_cells, peek_from_dict
from .target import RemoteError, SshTarget, _explain_exit, _ssh_base, parse_target, remote_command

FIRST_CONNECT_TIMEOUT_S = 180.0  # the first connection may wait for a password or a host-key question
FOLLOW_POLL_S = 1.0  # how often the remote `ls --follow` looks at its registry
RANKS_WAIT_S = 10.0  # torchrun registers ranks one by one: wait this long for all of them before forwarding
MAX_LISTING_BYTES = 4 * 1024 * 1024  # a listing is a few hundred bytes a run; refuse anything absurd


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


def print_entries(entries: list[registry.RunEntry], peeks: dict[tuple[str, int, int], RankPeek] | None = None,
                  *, now: float | None = None) -> None:
    """The `accmon ls` table (HOST: where the rank runs; RUN groups the ranks of one run across hosts). STEP,
    STATUS and ALERTS are what each rank answered to `hello` (peek_runs); "—" where it did not answer in time, or
    cannot be asked from here."""
    from ..text import printable  # text loads the store: the remote host's `ls --json` never prints this table

    now = time.time() if now is None else now
    peeks = peeks or {}
    print(f"{'RUN':<20} {'RANK':>4} {'HOST':<16} {'NAME':<20} {'PID':>7} {'STEP':>9} {'STATUS':<8} {'ALERTS':<6} "
          f"{'AGE':>6}  COMMAND")
    for e in entries:
        step, status, alerts = peek_cells(peeks.get((e.run_id, e.rank, e.pid)))
        print(printable(f"{e.run_id:<20} {e.rank:>4} {e.host[:16]:<16} {e.name[:20]:<20} {e.pid:>7} {step:>9} "
                        f"{status:<8} {alerts:<6} {age_words(now - e.started):>6}  {' '.join(e.cmd)[:60]}"))


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



def _names(entries: list[registry.RunEntry]) -> str:
    seen: dict[str, str] = {}
    for e in entries:
        seen.setdefault(e.run_id, e.name)
    return ", ".join(f"{rid} ({name})" for rid, name in seen.items())



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
