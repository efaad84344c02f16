"""Who may connect: owner-only ipc:// sockets by default; every tcp:// bind needs CurveZMQ keys.

A loopback TCP port is no private door: every user of the machine can connect to 127.0.0.1, read the run and
ask for its history. Without keys, a loopback bind needs the explicit opt-in `ACCMON_INSECURE_BIND=local-users`,
which says who can then read the run; a wider one is always refused.

Keys live in the user's config directory (`$XDG_CONFIG_HOME/accmon`, else `~/.config/accmon`), made by
`accmon keys`. On clusters the home directory is usually shared between login and GPU nodes, so one
`accmon keys` serves every node; a laptop gets a copy of the directory.

    accmon/                 0700
      server.key            public key of this user's probes (viewers need it)
      server.key_secret     0600, never leaves the user's machines
      client.key            public key of this user's viewer
      client.key_secret     0600
      servers/HOST.key      optional: the server key of a host whose probes use another key pair
      allowed/NAME.key      the allow-list: public keys of viewers that may connect (ironhouse); one whose
                            metadata says `control = "yes"` (`accmon keys --allow=KEY --control`) may also ask
                            a run to stop (the viewer's stop key); files without it (older ones) only read

The files are ZeroMQ certificates (the format of `zmq.auth.create_certificates`), but written 0600 from the
first byte rather than chmod-ed after. A secret key file that others can read is refused, as ssh refuses one.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import zmq
import zmq.auth

ENV_CONFIG = "ACCMON_CONFIG_DIR"  # overrides the whole directory (tests, several identities)
# The opt-in to a keyless loopback bind; its one accepted value says who can then read the run.
ENV_INSECURE_BIND = "ACCMON_INSECURE_BIND"
INSECURE_LOCAL = "local-users"
SERVER = "server"
CLIENT = "client"
ALLOWED = "allowed"
CONTROL = "control"  # the allow-list file's metadata key that lets a viewer ask a run to stop
ZAP_DOMAIN = "accmon"
SERVERS = "servers"
# The allow-list is re-read at most this often, so `accmon keys --revoke` reaches running probes
# without a stat() per handshake.
ALLOW_LIST_RECHECK_S = 1.0
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_Z85_KEY = re.compile(r"^[0-9A-Za-z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}$")


class InsecureBindError(ValueError):
    """A bind that would let anyone on the network read the run."""


class KeysError(Exception):
    """CurveZMQ keys missing, unreadable, or not safe to use; the message says what to do."""


# -- where keys live --------------------------------------------------------------------------------------
def config_dir() -> str:
    """`$ACCMON_CONFIG_DIR`, else `$XDG_CONFIG_HOME/accmon`, else `~/.config/accmon` (not created)."""
    path = os.environ.get(ENV_CONFIG)
    if path:
        return path
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "accmon")


MAX_CERTIFICATE_BYTES = 64 * 1024


def _path(*parts: str) -> str:
    return os.path.join(config_dir(), *parts)


def public_path(name: str) -> str:
    return _path(f"{name}.key")


def secret_path(name: str) -> str:
    return _path(f"{name}.key_secret")


def allowed_dir() -> str:
    return _path(ALLOWED)


def _private_dir(path: str) -> None:
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.stat(path)
    if st.st_uid != os.getuid():
        raise KeysError(f"{path} belongs to another user: refusing to keep keys there")
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, 0o700)


# -- certificate files --------------------------------------------------------------------------------------
def write_certificate(path: str, public: bytes, secret: bytes | None = None, *, comment: str = "",
                      metadata: dict[str, str] | None = None) -> None:
    """Write a ZeroMQ certificate, 0600 from creation, replacing any file atomically."""
    lines = ["#   accmon CurveZMQ " + ("SECRET certificate: never share this file" if secret else "public certificate")]
    if comment:
        lines.append(f"#   {comment}")
    lines += ["", "metadata", *(f'    {k} = "{v}"' for k, v in (metadata or {}).items()),
              "curve", f'    public-key = "{public.decode("ascii")}"']
    if secret:
        lines.append(f'    secret-key = "{secret.decode("ascii")}"')
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_certificate(path: str, *, secret: bool = False) -> tuple[bytes, bytes | None]:
    """(public, secret) keys of a certificate file, read by ZeroMQ's own `zmq.auth.load_certificate` once this
    function has checked what it does not: a plain file of certificate size, and a secret one owned by this user
    and 0600."""
    try:
        st = os.stat(path)
        if secret:
            if st.st_uid != os.getuid():
                raise KeysError(f"{path} belongs to another user: not using it")
            if stat.S_IMODE(st.st_mode) & 0o077:
                raise KeysError(
                    f"{path} can be read by other users (mode {stat.S_IMODE(st.st_mode):o}): anyone who has it can "
                    f"read your runs. Run `chmod 600 {path}` (or `accmon keys --new` for a fresh pair)."
                )
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_CERTIFICATE_BYTES:
            # A certificate is ~300 bytes; a FIFO, a device or a huge file is not read into memory.
            raise KeysError(f"{path} is not a certificate file (a plain file of at most {MAX_CERTIFICATE_BYTES} bytes)")
        public, sec = zmq.auth.load_certificate(path)
    except OSError as exc:
        raise KeysError(f"cannot read {path}: {exc.strerror}") from None
    except (ValueError, IndexError):  # no public key, or a key line without '='
        public, sec = None, None
    if public is None or not _is_key(public):
        raise KeysError(f"{path} holds no valid CurveZMQ public key (40 Z85 characters)")
    if secret and (sec is None or not _is_key(sec)):
        raise KeysError(f"{path} holds no valid CurveZMQ secret key")
    return public, sec


def _is_key(key: bytes) -> bool:
    return bool(_Z85_KEY.match(key.decode("ascii", "replace")))


@dataclass(frozen=True)
class KeyPair:
    public: bytes  # Z85, 40 bytes
    secret: bytes


def load_pair(name: str) -> KeyPair:
    pub_file, sec_file = public_path(name), secret_path(name)
    if not os.path.exists(sec_file):
        raise KeysError(f"no CurveZMQ {name} key in {config_dir()}: create one with `accmon keys`")
    public, secret = read_certificate(sec_file, secret=True)
    assert secret is not None
    if os.path.exists(pub_file) and read_certificate(pub_file)[0] != public:
        raise KeysError(f"{pub_file} does not match {sec_file}: recreate them with `accmon keys --new`")
    return KeyPair(public, secret)


def create_pair(name: str, *, replace: bool = False) -> tuple[KeyPair, bool]:
    """The key pair `name`, made if missing (or if `replace`). Returns (pair, made_now)."""
    _private_dir(config_dir())
    if not replace and os.path.exists(secret_path(name)):
        return load_pair(name), False
    public, secret = zmq.curve_keypair()
    write_certificate(secret_path(name), public, secret, comment=f"accmon {name} key, made {time.strftime('%Y-%m-%d')}")
    write_certificate(public_path(name), public)
    return KeyPair(public, secret), True


# -- the allow-list ---------------------------------------------------------------------------------------
def parse_public_key(text_or_path: str) -> bytes:
    """A viewer's public key, given as 40 Z85 characters or as a certificate file."""
    candidate = text_or_path.strip()
    if _is_key(candidate.encode("ascii", "replace")):
        return candidate.encode("ascii")
    if os.path.isfile(candidate):
        return read_certificate(candidate)[0]
    raise KeysError(f"{text_or_path!r} is neither a public key (40 Z85 characters) nor a certificate file")


def allow(public: bytes, name: str, *, control: bool = False) -> str:
    """Add a viewer's public key to the allow-list under `name`; returns the file written. `control`: it may
    also ask runs to stop (the viewer's stop key), not only read them."""
    if not _NAME.match(name) or name.startswith("."):
        raise KeysError(f"viewer name {name!r}: use letters, digits and . _ - @ (at most 64), not starting with a dot")
    _private_dir(config_dir())
    _private_dir(allowed_dir())
    path = os.path.join(allowed_dir(), f"{name}.key")
    write_certificate(path, public, comment=f"viewer {name}, allowed {time.strftime('%Y-%m-%d')}"
                      + (", with control" if control else ""), metadata={CONTROL: "yes"} if control else None)
    return path


def has_control(path: str) -> bool:
    """Whether an allow-list file grants control: a `control = "yes"` line in its metadata section. Files written
    before control existed have none: they stay read-only, and readable."""
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            text = fh.read(MAX_CERTIFICATE_BYTES)
    except OSError:
        return False
    section = None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not line[:1].isspace():
            section = stripped
            continue
        if section == "metadata" and "=" in stripped:
            key, value = (p.strip() for p in stripped.split("=", 1))
            if key == CONTROL and value.strip("'\"") == "yes":
                return True
    return False


def control_keys() -> set[bytes]:
    """Viewer keys that may control (stop) this user's runs: the allow-list's entries with control, and this
    user's own viewer key (`client.key`: whoever holds its secret is this user)."""
    d = allowed_dir()
    keys: set[bytes] = set()
    try:
        names = sorted(os.listdir(d))
    except OSError:
        names = []
    for fn in names:
        path = os.path.join(d, fn)
        if fn.endswith(".key") and has_control(path):
            try:
                keys.add(read_certificate(path)[0])
            except KeysError:
                continue
    try:
        keys.add(read_certificate(public_path(CLIENT))[0])
    except KeysError:
        pass
    return keys


def revoke(name: str) -> bool:
    # The same names `allow` writes, and no other: `--revoke ../server` must not reach server.key.
    if not _NAME.match(name) or name.startswith("."):
        raise KeysError(f"viewer name {name!r}: use letters, digits and . _ - @ (at most 64), as `accmon keys --list` shows")
    try:
        os.unlink(os.path.join(allowed_dir(), f"{name}.key"))
        return True
    except FileNotFoundError:
        return False


def allowed_keys() -> dict[bytes, str]:
    """Allowed viewer keys → their names. Unreadable or malformed entries are left out (never allow by error)."""
    d = allowed_dir()
    try:
        names = sorted(os.listdir(d))
    except OSError:
        return {}
    keys: dict[bytes, str] = {}
    for fn in names:
        if not fn.endswith(".key"):
            continue
        try:
            keys[read_certificate(os.path.join(d, fn))[0]] = fn[: -len(".key")]
        except KeysError:
            continue
    return keys


def keys_configured() -> bool:
    """A server key pair and at least one allowed viewer: what a wide bind needs."""
    return os.path.exists(secret_path(SERVER)) and bool(allowed_keys())


# -- binds ------------------------------------------------------------------------------------------------
def _host_of(endpoint: str) -> str:
    if not endpoint.startswith("tcp://"):
        raise ValueError(f"bind endpoint {endpoint!r}: only tcp://HOST:PORT can be given (local runs use ipc:// by themselves)")
    rest = endpoint[len("tcp://") :]
    host, sep, port = rest.rpartition(":")
    if not sep or not (port.isdigit() or port == "*"):
        raise ValueError(f"bind endpoint {endpoint!r} has no port: use tcp://HOST:PORT")
    return host.strip("[]")


def is_loopback(endpoint: str) -> bool:
    host = _host_of(endpoint)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # an interface name, a hostname or '*': treat as wide


def check_bind(endpoint: str) -> None:
    """Refuse a tcp:// bind unless CurveZMQ keys are configured (`accmon keys`), or, for a loopback one, the
    user opted in to every local user reading the run (`ACCMON_INSECURE_BIND=local-users`)."""
    loopback = is_loopback(endpoint)
    keys = os.path.exists(secret_path(SERVER))
    if keys:
        load_pair(SERVER)  # unsafe permissions or a broken file: say so now, not in the I/O thread
        if allowed_keys():
            return
    if loopback and os.environ.get(ENV_INSECURE_BIND) == INSECURE_LOCAL:
        return  # opted in: every user of this machine may read the run and query its history
    if keys:
        raise InsecureBindError(
            f"refusing to bind {endpoint}: CurveZMQ keys exist but no viewer is allowed to connect. "
            f"Allow one with `accmon keys --allow=KEY_OR_FILE --name NAME` (its keys in {allowed_dir()})."
        )
    who = "every user of this machine" if loopback else "anyone who can reach this host"
    opt_in = (f" To accept that every local user can read the run, set {ENV_INSECURE_BIND}={INSECURE_LOCAL}."
              if loopback else "")
    raise InsecureBindError(
        f"refusing to bind {endpoint} without CurveZMQ keys: {who} could connect, read the run and query its "
        "history. Create keys with `accmon keys` so that only your viewers can connect, encrypted; or attach "
        "over SSH instead (accmon attach ssh://HOST: nothing listens on the network; locally, the default "
        "ipc:// sockets are readable by you alone)." + opt_in
    )


class _AllowList:
    """The ZAP check: is this viewer's key on the allow-list? Re-reads the list when it changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[bytes, str] = {}
        self._control: set[bytes] = set()
        self._stamp: Any = None
        self._checked = 0.0
        self.refused = 0
        self.admitted = 0

    def _stamp_now(self) -> Any:
        try:
            d = allowed_dir()
            return tuple((e.name, e.stat().st_mtime_ns, e.stat().st_ino) for e in sorted(os.scandir(d), key=lambda e: e.name))
        except OSError:
            return None

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked >= ALLOW_LIST_RECHECK_S or self._stamp is None:
            self._checked = now
            stamp = self._stamp_now()
            if stamp != self._stamp:
                self._stamp = stamp
                self._keys = allowed_keys()
                self._control = control_keys()

    def may_control(self, key: bytes) -> bool:
        """Whether the viewer with this public key (Z85, the ZAP User-Id) may ask the run to stop: allowed with
        control now (a revoked or downgraded key no longer may, within a second)."""
        with self._lock:
            self._refresh()
            return key in self._control

    def callback(self, domain: str, key: bytes) -> bool:
        with self._lock:
            self._refresh()
            ok = key in self._keys
            if ok:
                self.admitted += 1
            else:
                self.refused += 1
            return ok


@dataclass
class ServerSecurity:
    """CURVE on a probe's sockets: the ZAP authenticator to stop before the context ends."""

    public: str  # the server's public key, Z85: written into the registry entry so viewers know
    auth: Any
    allow_list: _AllowList = field(repr=False)
    pair: KeyPair | None = field(default=None, repr=False)

    def secure(self, s: zmq.Socket) -> None:
        """CURVE server options on a socket about to be bound (a socket made anew too)."""
        assert self.pair is not None
        s.curve_secretkey = self.pair.secret
        s.curve_publickey = self.pair.public
        s.curve_server = True
        s.zap_domain = ZAP_DOMAIN.encode()

    def may_control(self, user_id: str | bytes | None) -> bool:
        """Whether the CURVE viewer whose ZAP User-Id (its public key, Z85) is `user_id` may stop the run."""
        if not user_id:
            return False
        key = user_id.encode("ascii", "replace") if isinstance(user_id, str) else user_id
        return _is_key(key) and self.allow_list.may_control(key)

    def stop(self) -> None:
        if self.auth is not None:
            self.auth.stop()
            self.auth = None


def configure_server(pub: zmq.Socket, ctl: zmq.Socket, endpoint: str) -> ServerSecurity | None:
    """Security for sockets about to be bound to `endpoint`; call before `bind()`.

    A bind without keys is refused (a loopback one unless opted in, see `check_bind`). With keys, every tcp://
    bind — loopback too, since any user of a shared machine can reach 127.0.0.1 — gets CURVE (encryption, and
    the server's identity) and a ZAP handler that admits only allow-listed viewers. Returns what the caller
    must `stop()` before terminating the sockets' context, or None when no security applies (the opt-in).
    """
    check_bind(endpoint)
    if not keys_configured():
        return None
    from zmq.auth.thread import ThreadAuthenticator

    pair = load_pair(SERVER)
    allow_list = _AllowList()
    auth = ThreadAuthenticator(pub.context)
    auth.start()
    auth.configure_curve_callback(domain=ZAP_DOMAIN, credentials_provider=allow_list)
    security = ServerSecurity(pair.public.decode("ascii"), auth, allow_list, pair)
    for s in (pub, ctl):
        security.secure(s)
    return security


# -- the viewer's side -------------------------------------------------------------------------------------
def server_public_key(host: str | None = None) -> bytes:
    """The public key of the probes on `host`: `servers/HOST.key` when present, else this user's server key."""
    if host:
        per_host = _path(SERVERS, f"{host}.key")
        if os.path.exists(per_host):
            return read_certificate(per_host)[0]
    path = public_path(SERVER)
    if not os.path.exists(path):
        raise KeysError(f"no server public key in {config_dir()}: copy the probe host's server.key there")
    return read_certificate(path)[0]


def client_curve(server_public: bytes | str) -> dict[str, bytes]:
    """The `curve=` argument of RunClient: this user's viewer key pair and the server's public key."""
    pair = load_pair(CLIENT)
    server = server_public.encode("ascii") if isinstance(server_public, str) else server_public
    return {"public": pair.public, "secret": pair.secret, "server": server}


def curve_for(pub_endpoint: str, extra: dict | None = None) -> dict[str, bytes] | None:
    """The `curve=` argument for a run: from its registry entry when it says (extra["curve"] = server key),
    else for an explicit tcp:// endpoint when this user has viewer keys; None for ipc:// and keyless users."""
    server = (extra or {}).get("curve")
    if server:
        return client_curve(server)
    if extra is not None and "curve" in extra:
        return None  # the registry says: no CURVE on this run
    if not pub_endpoint.startswith("tcp://") or not os.path.exists(secret_path(CLIENT)):
        return None
    host = pub_endpoint[len("tcp://") :].rpartition(":")[0].strip("[]")
    return client_curve(server_public_key(host))
