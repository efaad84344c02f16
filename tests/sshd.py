"""A real OpenSSH server on a loopback port, for the remote-attach tests.

`tests/setup_system.sh` (run by `make test`) installs openssh-server where it is missing. The server gets its
own host key, config and authorized_keys in a temporary directory, accepts only a key made for the test, and
passes `ACCMON_*` variables through (`AcceptEnv`), so that the session sees the test's runtime directory: the
"remote" host is this machine, reached only through sshd, as a GPU node would be.
"""

from __future__ import annotations

import getpass
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"
START_TIMEOUT_S = 20.0


def unavailable() -> str | None:
    """Why a real sshd cannot run here, or None."""
    for tool, what in ((SSHD, "openssh-server"), (SSH_KEYGEN, "openssh-client"), (shutil.which("ssh"), "openssh-client")):
        if not tool or not os.access(tool, os.X_OK):
            return f"{what} is not installed (tests/setup_system.sh installs it as root with apt-get)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sshd:
    """`sshd -D` on 127.0.0.1:PORT with a throw-away host key and one authorized client key."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="sshd-", dir="/tmp"))
        self.user = getpass.getuser()
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.host_key = self.dir / "host_ed25519"
        self.client_key = self.dir / "client_ed25519"
        for key in (self.host_key, self.client_key):
            subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True,
                           stdin=subprocess.DEVNULL, capture_output=True)
        shutil.copy(f"{self.client_key}.pub", self.dir / "authorized_keys")
        os.chmod(self.dir / "authorized_keys", 0o600)

    def _config(self) -> Path:
        cfg = self.dir / "sshd_config"
        cfg.write_text(
            f"ListenAddress 127.0.0.1:{self.port}\n"
            f"HostKey {self.host_key}\n"
            f"PidFile {self.dir}/sshd.pid\n"
            f"AuthorizedKeysFile {self.dir}/authorized_keys\n"
            f"AllowUsers {self.user}\n"
            "PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "StrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\n"
            "AllowTcpForwarding yes\nAllowStreamLocalForwarding yes\nStreamLocalBindUnlink yes\n"
            "AcceptEnv ACCMON_*\nLogLevel ERROR\n"
        )
        return cfg

    def start(self, port: int | None = None) -> Sshd:
        """Start (or restart, on the same port when given) and wait until it accepts connections."""
        if os.getuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation needs it when root
        for _ in range(5):
            self.port = port or _free_port()
            cfg = self._config()
            log = open(self.dir / "sshd.log", "ab")
            # sshd wants its absolute path (it re-executes itself for each connection).
            self.proc = subprocess.Popen([os.path.realpath(SSHD), "-D", "-e", "-f", str(cfg)], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log)
            log.close()
            deadline = time.monotonic() + START_TIMEOUT_S
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                        if s.recv(4).startswith(b"SSH-"):
                            return self
                except OSError:
                    time.sleep(0.05)
            self.stop()
            if port:
                break  # the caller needs that port: do not wander to another one
        raise RuntimeError(f"sshd did not start: {self.log()[-2000:]}")

    def stop(self) -> None:
        """Stop the listener. Sessions already open are separate processes and stay (as on a real host)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log(self) -> str:
        try:
            return (self.dir / "sshd.log").read_text(errors="replace")
        except OSError:
            return ""

    def target(self, run: str | None = None) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}" + (f"/{run}" if run else "")

    def client_env(self, runtime_dir: str) -> dict[str, str]:
        """What a viewer's environment needs: ssh options (this key, no known_hosts, no user config) and the
        remote command (this interpreter: the session's PATH does not have the test's venv)."""
        opts = [
            "-F", "/dev/null", "-i", str(self.client_key), "-o", "IdentitiesOnly=yes",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "LogLevel=ERROR",
            "-o", f"SetEnv=ACCMON_RUNTIME_DIR={runtime_dir}",
        ]
        return {
            "ACCMON_SSH_OPTS": shlex.join(opts),
            "ACCMON_REMOTE_CMD": f"{shlex.quote(sys.executable)} -m accmon.tui.cli",
        }

    def ssh_config(self, hosts: dict[str, dict[str, str]]) -> Path:
        """An ssh_config in which each alias of `hosts` reaches this sshd, its session with the variables given
        (`SetEnv`, passed by `AcceptEnv ACCMON_*`): several "hosts", each with its own runtime directory, to be
        named by alias (`ssh://alias`) exactly as real hosts are — ssh resolves them, not accmon."""
        blocks = []
        for alias, env in hosts.items():
            blocks.append(
                f"Host {alias}\n  HostName 127.0.0.1\n  Port {self.port}\n  User {self.user}\n"
                f"  IdentityFile {self.client_key}\n  IdentitiesOnly yes\n  UserKnownHostsFile /dev/null\n"
                f"  StrictHostKeyChecking no\n  LogLevel ERROR\n"
                + (f"  SetEnv {' '.join(f'{k}={v}' for k, v in env.items())}\n" if env else "")
            )
        path = self.dir / "ssh_config"
        path.write_text("".join(blocks))
        return path

    def hosts_env(self, hosts: dict[str, dict[str, str]]) -> dict[str, str]:
        """A viewer's environment for ssh_config(hosts): that file only (no user config), this interpreter there."""
        return {
            "ACCMON_SSH_OPTS": shlex.join(["-F", str(self.ssh_config(hosts))]),
            "ACCMON_REMOTE_CMD": f"{shlex.quote(sys.executable)} -m accmon.tui.cli",
        }

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def sshd(runtime_dir: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sshd]:
    """A running sshd, with the test's environment set up to reach it (ACCMON_SSH_OPTS, ACCMON_REMOTE_CMD)."""
    why = unavailable()
    if why:
        pytest.skip(f"NO REAL SSHD, remote attach NOT TESTED: {why}")
    server = Sshd()
    try:
        server.start()
    except (RuntimeError, OSError) as exc:
        server.close()
        pytest.skip(f"NO REAL SSHD, remote attach NOT TESTED: sshd cannot run here: {exc}")
    for k, v in server.client_env(runtime_dir).items():
        monkeypatch.setenv(k, v)
    try:
        yield server
    finally:
        server.close()
