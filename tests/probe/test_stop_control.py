"""The viewer's stop request (issue 18 item 2) over real CURVE sockets: a viewer allowed to read but not to
control is refused and counted, and the run goes on; one allowed with `--control` (and this user's own viewer
key) stops it, by "viewer". Old allow-list files, without the control line, stay readable and read-only."""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest
import zmq

from accmon.probe import Run, security
from accmon.tui.subscriber import RunClient
from tests.conftest import run_accmon
from tests.probe.test_security import free_port_pair, make_keys, wait_until


@pytest.fixture(autouse=True)
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv(security.ENV_CONFIG, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path / "config" / "accmon"


def viewer(name: str, *, control: bool) -> dict[str, bytes]:
    public, secret = zmq.curve_keypair()
    args = ["keys", f"--allow={public.decode()}", "--name", name] + (["--control"] if control else [])
    out = run_accmon(*args)
    assert out.returncode == 0, out.stderr
    assert ("with control" in out.stdout) == control
    return {"public": public, "secret": secret}


def ask_stop(run: Run, keys: dict[str, bytes]) -> dict:
    entry = run._io.entry
    curve = {**keys, "server": security.curve_for(entry.pub, entry.extra)["server"]}
    client = RunClient(entry.pub, entry.ctl, curve=curve).start()
    try:
        client.request_stop("from the test")
        wait_until(lambda: client.stop_reply is not None, "the probe's answer")
        return dict(client.stop_reply or {})
    finally:
        client.close()


def test_only_viewers_allowed_with_control_may_stop_a_curve_run(config_dir):
    make_keys()
    reader = viewer("reader", control=False)
    operator = viewer("operator", control=True)
    run = Run("controlled", bind=f"tcp://0.0.0.0:{free_port_pair()}", rules=False)
    try:
        refused = ask_stop(run, reader)
        assert refused["ok"] is False and "--control" in refused["why"]
        assert run.stop_request is None and run._io.stops_refused == 1  # counted, and the run goes on
        run.log(0, loss=1.0)
        assert run.honour_stop(0) is None
        accepted = ask_stop(run, operator)
        assert accepted["ok"] is True
        assert run.stop_request == {"by": "viewer", "reason": "from the test"}
        assert run.honour_stop(0) == {"by": "viewer", "reason": "from the test", "step": 0}
    finally:
        run.close()
    listed = run_accmon("keys", "--list").stdout
    assert "operator" in listed and any("operator" in line and "control" in line for line in listed.splitlines())
    assert not any(line.strip().startswith("reader") and "control" in line for line in listed.splitlines())


def test_the_refusals_are_in_hello_and_in_the_end_frame(config_dir, tmp_path):
    make_keys()
    reader = viewer("reader", control=False)
    rec = tmp_path / "run.accmon"
    run = Run("counted", bind=f"tcp://0.0.0.0:{free_port_pair()}", rules=False, record=str(rec))
    try:
        for _ in range(2):
            assert ask_stop(run, reader)["ok"] is False
        hello = msgpack.unpackb(run._io._answer(msgpack.packb({"op": "hello"}))[0])
        assert hello["stop_refused"] == 2  # what `accmon ls` and the picker can show
    finally:
        run.close()
    from tests.conftest import read_frames

    end = next(f for f in read_frames(rec) if f["kind"] == "end")
    assert end["stop_refused"] == 2 and "stopped" not in end


def test_own_viewer_key_controls_and_old_allow_files_stay_read_only(config_dir):
    make_keys()  # allows this user's own client.key: whoever holds its secret is this user
    own = security.load_pair(security.CLIENT)
    path = security.allow(zmq.curve_keypair()[0], "old")  # as files were written before --control existed
    assert security.has_control(path) is False
    assert own.public in security.control_keys() and security.read_certificate(path)[0] in security.allowed_keys()
    run = Run("own", bind=f"tcp://0.0.0.0:{free_port_pair()}", rules=False)
    try:
        assert ask_stop(run, {"public": own.public, "secret": own.secret})["ok"] is True
        assert run.stop_request is not None and run.stop_request["by"] == "viewer"
    finally:
        run.close()


def test_a_local_ipc_viewer_may_stop(config_dir):
    run = Run("local", rules=False)
    try:
        client = RunClient(*run.endpoints).start()
        try:
            client.request_stop("")
            wait_until(lambda: client.stop_reply is not None, "the answer")
            assert client.stop_reply == {"op": "stop", "ok": True, "why": ""}
        finally:
            client.close()
        assert run.stop_request == {"by": "viewer", "reason": "asked from the viewer"}
    finally:
        run.close()

