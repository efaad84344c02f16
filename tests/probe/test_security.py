"""Secure by default: loopback unless keys, CURVE with an allow-list, owner-only files and sockets.

Real sockets throughout. The one wide bind (0.0.0.0) is on this machine only; the viewers connect through
127.0.0.1, and a small TCP relay in the middle records the bytes on the wire to show they are encrypted.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import zmq
from zmq.utils import z85

from accmon.probe import Run, registry, security
from accmon.tui.subscriber import RunClient
from tests.conftest import run_accmon, write_script

WAIT_S = 30  # upper bound against hangs; no assertion is about time
SECRET_NAME = "loss_of_project_nightingale"  # a metric name to look for on the wire


@pytest.fixture(autouse=True)
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keys in a private temporary config directory, never the user's."""
    monkeypatch.delenv(security.ENV_CONFIG, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path / "config" / "accmon"


def wait_until(cond: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)


def free_port_pair() -> int:
    """A port P with P+1 free too (the probe binds PUB on P and its ROUTER on P+1)."""
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("0.0.0.0", 0))
            port = a.getsockname()[1]
            with socket.socket() as b:
                try:
                    b.bind(("0.0.0.0", port + 1))
                except OSError:
                    continue
        return port
    raise RuntimeError("no two consecutive free ports")


def make_keys() -> int:
    out = run_accmon("keys")
    assert out.returncode == 0, out.stderr
    return out.returncode


class Relay(threading.Thread):
    """A TCP relay from a local port to `target`, keeping every byte that passes (a wiretap)."""

    def __init__(self, target: tuple[str, int]) -> None:
        super().__init__(daemon=True)
        self.target = target
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.seen = bytearray()
        self.lock = threading.Lock()
        self.conns: list[socket.socket] = []
        self.pipes: list[threading.Thread] = []

    def run(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                t = threading.Thread(target=self._pipe, args=(a, b), daemon=True)
                self.pipes.append(t)
                t.start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                with self.lock:
                    self.seen += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        """Stop accepting and relaying, and wait for every thread. A socket closed under a thread blocked in
        accept() or recv() does not wake it on Linux: shutdown() does."""
        for s in [self.server, *self.conns]:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.join(WAIT_S)
        for t in self.pipes:
            t.join(WAIT_S)
        for s in [self.server, *self.conns]:
            s.close()


def log_steps(run: Run, n: int) -> None:
    for step in range(n):
        run.log(step, **{SECRET_NAME: 1.0 / (step + 1)})


def steps_of(frames: list[dict]) -> list[int]:
    return [s for f in frames if f["kind"] == "steps" for s in f["steps"]]


# -- refusals ---------------------------------------------------------------------------------------------
def test_a_wide_bind_without_keys_is_refused_with_a_clear_message(tmp_path, monkeypatch):
    port = free_port_pair()
    for endpoint in (f"tcp://0.0.0.0:{port}", f"tcp://*:{port}", f"tcp://eth0:{port}", f"tcp://[::]:{port}"):
        with pytest.raises(security.InsecureBindError, match="accmon keys") as exc:
            Run("wide", bind=endpoint)
        assert "ssh://" in str(exc.value)  # says what to do instead
    # Nothing was bound: the port is still free.
    with socket.socket() as s:
        s.bind(("0.0.0.0", port))
    # The command line refuses before the training command even starts.
    marker = tmp_path / "started"
    script = write_script(tmp_path, "train.py", f"open({str(marker)!r}, 'w').close()\n")
    out = run_accmon("run", "--headless", "--bind", f"tcp://0.0.0.0:{port}", "--", sys.executable, script)
    assert out.returncode == 2 and "refusing to bind" in out.stderr and "accmon keys" in out.stderr
    assert not marker.exists()
    # Loopback needs keys too (issue 16: every local user can reach 127.0.0.1), or the explicit opt-in that says
    # who can then read the run.
    with pytest.raises(security.InsecureBindError, match="every user of this machine") as exc:
        Run("local", bind=f"tcp://127.0.0.1:{port}")
    assert f"{security.ENV_INSECURE_BIND}={security.INSECURE_LOCAL}" in str(exc.value)
    assert "bind to 127.0.0.1" not in str(exc.value)
    monkeypatch.setenv(security.ENV_INSECURE_BIND, security.INSECURE_LOCAL)
    run = Run("local", bind=f"tcp://127.0.0.1:{port}")
    assert run._io.security is None and run._io.entry.extra["curve"] is None
    run.close()
    with pytest.raises(security.InsecureBindError):  # the opt-in is for loopback only
        Run("wide", bind=f"tcp://0.0.0.0:{port}")


def test_keys_without_an_allowed_viewer_still_refuse_a_wide_bind(config_dir):
    make_keys()
    for f in (config_dir / "allowed").iterdir():
        f.unlink()
    with pytest.raises(security.InsecureBindError, match="no viewer is allowed"):
        security.check_bind("tcp://0.0.0.0:5555")


def test_a_secret_key_others_can_read_is_refused(config_dir):
    make_keys()
    os.chmod(config_dir / "server.key_secret", 0o644)
    with pytest.raises(security.KeysError, match="chmod 600"):
        security.check_bind("tcp://0.0.0.0:5555")


# -- accmon keys --------------------------------------------------------------------------------------------
def test_accmon_keys_makes_owner_only_files_and_an_allow_list(config_dir):
    old = os.umask(0)  # even a permissive umask must not leave a secret readable, not for a moment
    try:
        out = run_accmon("keys")
    finally:
        os.umask(old)
    assert out.returncode == 0, out.stderr
    assert "made" in out.stdout and "--bind tcp://0.0.0.0" in out.stdout
    assert stat.S_IMODE(os.stat(config_dir).st_mode) == 0o700
    files = sorted(p.relative_to(config_dir).as_posix() for p in config_dir.rglob("*") if p.is_file())
    assert files[1:] == ["client.key", "client.key_secret", "server.key", "server.key_secret"]
    assert files[0].startswith("allowed/")
    for p in config_dir.rglob("*"):
        assert stat.S_IMODE(os.stat(p).st_mode) == (0o700 if p.is_dir() else 0o600), p
    # Standard ZeroMQ certificates: pyzmq's own reader agrees with ours.
    from zmq.auth import load_certificate

    pub, sec = load_certificate(str(config_dir / "server.key_secret"))
    assert pub == security.load_pair("server").public and sec == security.load_pair("server").secret
    client = security.load_pair("client").public
    assert client in security.allowed_keys()
    # Running it again keeps the keys (viewers already have them).
    again = run_accmon("keys")
    assert "already there" in again.stdout and security.load_pair("server").public == pub


def test_allow_list_and_revoke_from_the_command_line(config_dir, tmp_path):
    make_keys()
    laptop_pub, _ = zmq.curve_keypair()
    key_file = tmp_path / "laptop.key"
    security.write_certificate(str(key_file), laptop_pub)
    assert run_accmon("keys", "--allow", str(key_file)).returncode == 0
    assert security.allowed_keys()[laptop_pub] == "laptop"
    other_pub, _ = zmq.curve_keypair()
    assert run_accmon("keys", f"--allow={other_pub.decode()}", "--name", "ci-box").returncode == 0
    # One key in 85 begins with "-" (Z85), which `--allow KEY` would hand argparse as an option: `--allow=KEY` takes it.
    dash_pub = z85.encode((63 * 85**4 + 40 * 85**3).to_bytes(4, "big") + bytes(28))  # "-E000…"
    assert dash_pub.startswith(b"-")
    assert run_accmon("keys", f"--allow={dash_pub.decode()}", "--name", "dash").returncode == 0
    assert security.allowed_keys()[dash_pub] == "dash"
    listing = run_accmon("keys", "--list").stdout
    assert "laptop" in listing and "ci-box" in listing and other_pub.decode() in listing
    assert run_accmon("keys", "--revoke", "laptop").returncode == 0
    assert laptop_pub not in security.allowed_keys()
    bad = run_accmon("keys", "--allow", "not-a-key")
    assert bad.returncode == 2 and "neither a public key" in bad.stderr
    assert run_accmon("keys", "--revoke", "nobody").returncode == 1


def test_revoke_takes_names_only_never_paths(config_dir, tmp_path):
    # Issue 16 item 12: `--revoke ../server` deleted server.key, `--revoke ../../x` a file outside the directory.
    make_keys()
    outside = config_dir.parent / "x.key"
    outside.write_text("keep me")
    for name in ("../server", "../../x", "..", "../" + str(outside)):
        out = run_accmon("keys", "--revoke", name)
        assert out.returncode == 2 and "viewer name" in out.stderr and "Traceback" not in out.stderr
    assert os.path.exists(security.secret_path("server")) and os.path.exists(security.public_path("server"))
    assert outside.read_text() == "keep me"


# -- CURVE on the wire -------------------------------------------------------------------------------------
def raw_subscriber(ctx: zmq.Context, endpoint: str, curve: dict[str, bytes] | None = None) -> zmq.Socket:
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    if curve:
        sub.curve_secretkey, sub.curve_publickey, sub.curve_serverkey = curve["secret"], curve["public"], curve["server"]
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)
    return sub


def received(sub: zmq.Socket, seconds: float) -> int:
    n = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if sub.poll(50):
            sub.recv()
            n += 1
    return n


def test_a_curve_wide_bind_admits_the_allowed_viewer_only_and_encrypts(config_dir, zmq_ctx):
    make_keys()
    port = free_port_pair()
    run = Run("secured", bind=f"tcp://0.0.0.0:{port}")
    relays = [Relay(("127.0.0.1", port)), Relay(("127.0.0.1", port + 1))]  # live stream and history
    for r in relays:
        r.start()
    pub = f"tcp://127.0.0.1:{port}"
    try:
        entry = run._io.entry
        assert entry.extra["curve"] == security.load_pair("server").public.decode()  # viewers learn the key here
        curve = security.curve_for(entry.pub, entry.extra)
        allowed = RunClient(*(f"tcp://127.0.0.1:{r.port}" for r in relays), curve=curve).start()
        stranger_pub, stranger_sec = zmq.curve_keypair()
        stranger = {"public": stranger_pub, "secret": stranger_sec, "server": curve["server"]}
        strangers = [raw_subscriber(zmq_ctx, pub), raw_subscriber(zmq_ctx, pub, stranger)]  # no keys; a key not allowed
        log_steps(run, 300)
        frames: list[dict] = []
        wait_until(lambda: frames.extend(allowed.drain()) or len(steps_of(frames)) == 300, "the allowed viewer's steps")
        assert steps_of(frames) == list(range(300))
        assert any(SECRET_NAME in f.get("cols", {}) for f in frames)
        for sub in strangers:
            assert received(sub, 1.0) == 0  # refused: not one frame, not one heartbeat
        assert run._io.security.allow_list.refused >= 1  # it was the ZAP check that said no, not a missed connect
        wire_bytes = b"".join(bytes(r.seen) for r in relays)
        assert len(wire_bytes) > 3000 and SECRET_NAME.encode() not in wire_bytes  # encrypted on the wire
        allowed.close()
    finally:
        for r in relays:
            r.close()
        run.close()


def test_the_wiretap_would_see_an_unencrypted_stream(monkeypatch):
    """The control for the test above: without keys, the same relay sees the metric names in clear."""
    monkeypatch.setenv(security.ENV_INSECURE_BIND, security.INSECURE_LOCAL)
    port = free_port_pair()
    run = Run("plain", bind=f"tcp://127.0.0.1:{port}")
    relays = [Relay(("127.0.0.1", port)), Relay(("127.0.0.1", port + 1))]
    for r in relays:
        r.start()
    try:
        client = RunClient(*(f"tcp://127.0.0.1:{r.port}" for r in relays)).start()
        log_steps(run, 50)
        frames: list[dict] = []
        wait_until(lambda: frames.extend(client.drain()) or len(steps_of(frames)) == 50, "steps")
        client.close()
        assert SECRET_NAME.encode() in b"".join(bytes(r.seen) for r in relays)
    finally:
        for r in relays:
            r.close()
        run.close()


def test_a_revoked_viewer_is_refused_by_a_running_probe(config_dir, zmq_ctx):
    make_keys()
    port = free_port_pair()
    run = Run("revocation", bind=f"tcp://0.0.0.0:{port}")
    try:
        curve = security.curve_for(run._io.entry.pub, run._io.entry.extra)
        sub = raw_subscriber(zmq_ctx, f"tcp://127.0.0.1:{port}", curve)
        assert received(sub, 1.5) >= 1  # heartbeats reach an allowed viewer
        sub.close(0)
        for name in list(security.allowed_keys().values()):
            assert run_accmon("keys", "--revoke", name).returncode == 0
        time.sleep(security.ALLOW_LIST_RECHECK_S)  # the probe re-reads its allow-list at most this often
        sub = raw_subscriber(zmq_ctx, f"tcp://127.0.0.1:{port}", curve)
        assert received(sub, 1.5) == 0
        sub.close(0)
    finally:
        run.close()


def test_the_probe_exits_promptly_with_curve_on():
    """The ZAP thread must be stopped before the context ends, or the process would hang at exit."""
    make_keys()
    port = free_port_pair()
    code = f"import accmon.probe as a; r = a.start('x', bind='tcp://0.0.0.0:{port}'); r.log(0, loss=1.0); r.close()"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=WAIT_S)
    assert done.returncode == 0, done.stderr
    assert "live view disabled" not in done.stderr


# -- owner-only files and sockets ---------------------------------------------------------------------------
def test_registry_entries_and_sockets_are_readable_by_their_owner_only(runtime_dir):
    os.chmod(runtime_dir, 0o755)  # loosened by someone: the probe tightens it again
    run = Run("private")
    try:
        assert stat.S_IMODE(os.stat(runtime_dir).st_mode) == 0o700
        entry = registry.list_runs()[0]
        assert stat.S_IMODE(os.stat(entry.path).st_mode) == 0o600
        for ep in (entry.pub, entry.ctl):
            assert ep.startswith("ipc://")
            assert stat.S_IMODE(os.stat(ep[len("ipc://"):]).st_mode) == 0o600
    finally:
        run.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the directory to another user")
def test_a_runtime_directory_owned_by_someone_else_is_refused(tmp_path, monkeypatch):
    d = tmp_path / "theirs"
    d.mkdir(mode=0o700)
    os.chown(d, 65534, 65534)
    monkeypatch.setenv(registry.ENV_DIR, str(d))
    with pytest.raises(registry.RegistryError, match="not a directory owned by you"):
        registry.runtime_dir()
