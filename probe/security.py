"""Who may connect: loopback and owner-only ipc:// sockets by default; anything wider needs CurveZMQ keys."""

from __future__ import annotations

import ipaddress

import zmq


class InsecureBindError(ValueError):
    """A bind that would let anyone on the network read the run."""


def _host_of(endpoint: str) -> str:
    if not endpoint.startswith("tcp://"):
        raise ValueError(f"bind endpoint {endpoint!r}: only tcp://HOST:PORT can be given (local runs use ipc:// by themselves)")
    rest = endpoint[len("tcp://") :]
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"bind endpoint {endpoint!r} has no port: use tcp://HOST:PORT")
    return host.strip("[]")


def is_loopback(endpoint: str) -> bool:
    host = _host_of(endpoint)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # an interface name or a hostname: treat as wide


def check_bind(endpoint: str) -> None:
    """Refuse a non-loopback bind unless CurveZMQ keys are configured (`accmon keys`)."""
    if is_loopback(endpoint):
        return
    raise InsecureBindError(
        f"refusing to bind {endpoint}: it would let anyone who can reach this host read the run. "
        "Attach over SSH instead (accmon attach ssh://HOST), or bind to 127.0.0.1."
    )


def configure_server(pub: zmq.Socket, ctl: zmq.Socket, endpoint: str) -> None:
    """Security options for sockets bound to `endpoint` (loopback: none needed)."""
    check_bind(endpoint)
