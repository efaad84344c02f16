"""`accmon keys`: the CurveZMQ keys that let a probe bind tcp:// and admit only your viewers.

    accmon keys                          make the keys if missing, and say where they are and what to do next
    accmon keys --allow=KEY|FILE --name N   let another viewer in (its client.key, or the 40-character key;
                                         with `=`: a key may begin with `-`, which argparse would take for an option)
    accmon keys --allow=KEY|FILE --control  ... and let it stop runs too (the viewer's `S` key); without
                                         --control an allowed viewer only reads
    accmon keys --revoke N               take a viewer off the allow-list (running probes notice within a second)
    accmon keys --list                   this user's public keys and the allow-list
    accmon keys --new                    replace both key pairs (every viewer must then get the new server.key)
"""

from __future__ import annotations

import argparse
import getpass
import os
import socket
import sys
from typing import TextIO

from accmon.probe import security


def add_parser(sub: argparse._SubParsersAction) -> None:
    k = sub.add_parser("keys", help="make CurveZMQ keys and manage which viewers may connect to wide binds",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    k.add_argument("--allow", metavar="KEY|FILE", help="allow a viewer: its public key or client.key file (--allow=KEY: a key may begin with -)")
    k.add_argument("--name", help="the allowed viewer's name (default: derived from the file or key)")
    k.add_argument("--control", action="store_true", help="with --allow: the viewer may also stop runs (its S key)")
    k.add_argument("--revoke", metavar="NAME", help="remove a viewer from the allow-list")
    k.add_argument("--list", action="store_true", help="show the public keys and the allow-list")
    k.add_argument("--new", action="store_true", help="replace the server and client key pairs")


def cmd_keys(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        if args.allow:
            public = security.parse_public_key(args.allow)
            name = args.name or _default_name(args.allow)
            control = bool(getattr(args, "control", False))
            path = security.allow(public, name, control=control)
            out.write(f"allowed viewer {name!r} ({public.decode()}){' with control (may stop runs)' if control else ''}: "
                      f"{path}\n")
            return 0
        if getattr(args, "control", False):
            sys.stderr.write("accmon keys: --control goes with --allow KEY|FILE\n")
            return 2
        if args.revoke:
            if security.revoke(args.revoke):
                out.write(f"viewer {args.revoke!r} removed from the allow-list; running probes refuse it from now on\n")
                return 0
            sys.stderr.write(f"accmon keys: no allowed viewer named {args.revoke!r} (see `accmon keys --list`)\n")
            return 1
        if args.list:
            return _list(out)
        return _make(args.new, out)
    except security.KeysError as exc:
        sys.stderr.write(f"accmon keys: {exc}\n")
        return 2
    except OSError as exc:
        sys.stderr.write(f"accmon keys: {exc.filename or security.config_dir()}: {exc.strerror}\n")
        return 2


def _default_name(given: str) -> str:
    if security.parse_public_key(given).decode() == given.strip():
        return "viewer-" + "".join(c for c in given[:8] if c.isalnum())
    base = os.path.basename(given)
    stem = base[: -len(".key")] if base.endswith(".key") else base
    return "".join(c if c.isalnum() or c in "._-@" else "-" for c in stem)[:64] or "viewer"


def _make(replace: bool, out: TextIO) -> int:
    server, made_server = security.create_pair(security.SERVER, replace=replace)
    client, made_client = security.create_pair(security.CLIENT, replace=replace)
    own_name = f"{getpass.getuser()}@{socket.gethostname()}"[:64]
    allowed = security.allowed_keys()
    if client.public not in allowed:
        security.allow(client.public, "".join(c if c.isalnum() or c in "._-@" else "-" for c in own_name))
    verb = "made" if made_server or made_client else "already there"
    d = security.config_dir()
    out.write(
        f"CurveZMQ keys {verb}: {d} (files 0600)\n"
        f"  server public key  {server.public.decode()}   ({security.public_path(security.SERVER)})\n"
        f"  viewer public key  {client.public.decode()}   ({security.public_path(security.CLIENT)}, allowed)\n"
        "\n"
        "Probes of yours may now bind tcp:// (loopback or wider), and only allowed viewers can connect, encrypted:\n"
        "  accmon run --bind tcp://0.0.0.0:5555 -- python train.py\n"
        "  accmon attach tcp://THIS_HOST:5555\n"
        "On another machine, copy this directory there (a shared home directory already is), or copy only\n"
        f"server.key and allow that machine's own viewer key: accmon keys --allow=client.key --name laptop\n"
    )
    return 0


def _list(out: TextIO) -> int:
    d = security.config_dir()
    for name in (security.SERVER, security.CLIENT):
        try:
            public = security.load_pair(name).public.decode()
        except security.KeysError as exc:
            public = f"none ({exc})"
        out.write(f"{name:<7} {public}\n")
    allowed = security.allowed_keys()
    out.write(f"allowed viewers ({security.allowed_dir()}):\n" if allowed else f"no allowed viewers in {d}\n")
    control = security.control_keys()
    for key, name in sorted(allowed.items(), key=lambda kv: kv[1]):
        out.write(f"  {name:<24} {key.decode()}{'  control' if key in control else ''}\n")
    return 0
