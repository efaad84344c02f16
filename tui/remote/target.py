"""ssh targets (`ssh://[user@]host[:port][/run]`), the ssh command lines, and what a failed ssh means."""

from __future__ import annotations

import os
import re
import shlex
import signal
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

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

# Routing (tui/remote/routing.py) marks each entry with the way to reach it.
VIA = "via"  # RunEntry.extra: the ssh target through which the entry's sockets are reached; absent: this host
VIA_REGISTRY = "via_registry"  # RunEntry.extra: the shared registry the entry was listed from


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
