"""Attack harness (issue 16): replays the hostile classes of the review against the real commands and processes,
and prints for each the peak memory of the training process and of the viewer, the time taken and the exit code.

    .venv/bin/python bench/attack.py              # everything (~5 minutes on 2 cores)
    .venv/bin/python bench/attack.py --only csv   # the cases whose name contains 'csv'

Peers: a real training process (the probe, in a subprocess) is flooded for ATTACK_S seconds from other processes —
history requests that are never read, subscription topics, a hostile publisher in front of a viewer — while its
RSS (and a headless viewer's) is sampled every 50 ms from /proc. Files: hostile recordings, TensorBoard event
files and CSV logs are made in a temporary directory and given to `accmon check` (and a replay's conversion),
each in a process of its own whose peak RSS comes from wait4(); a case that runs past CASE_TIMEOUT_S is killed
and reported as such. Extreme values go through the TUI itself (the replay app under Textual's Pilot).
Columns: what, exit code (and what a traceback or timeout said), seconds, peak MB of the process under
attack, its growth over its own baseline where one is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
ACCMON = [PY, "-P", "-m", "accmon.tui.cli"] if sys.version_info >= (3, 11) else [PY, "-m", "accmon.tui.cli"]
ATTACK_S = 5.0
CASE_TIMEOUT_S = 120.0


@dataclass
class Result:
    name: str
    rc: int | str
    seconds: float
    peak_mb: float
    growth_mb: float | None = None
    viewer_mb: float | None = None
    note: str = ""


RESULTS: list[Result] = []


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


# Peak RSS is read by the measured process itself, at exit, from its own VmHWM: wait4()'s ru_maxrss would count
# this harness's RSS at the fork (Linux carries it over the exec).
WRAP = """
import atexit, runpy, sys
out = sys.argv[1]
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            open(out, "w").write(line.split()[1])
atexit.register(hwm)
mode, target, rest = sys.argv[2], sys.argv[3], sys.argv[4:]
if mode == "-m":
    sys.argv = [target, *rest]
    runpy.run_module(target, run_name="__main__", alter_sys=True)
else:
    sys.argv = ["-c", *rest]
    exec(compile(target, "<case>", "exec"), {"__name__": "__main__"})
"""


def run_measured(cmd: list[str], *, timeout: float = CASE_TIMEOUT_S, env: dict | None = None,
                 stdout: int | None = subprocess.DEVNULL) -> tuple[int | str, float, float, str]:
    """Run `cmd` (a Python command: PY [-P] -m MOD ... or PY -c CODE ...); its exit code ('timeout' if killed),
    seconds, peak RSS in MB, stderr's tail."""
    args = [a for a in cmd[1:] if a != "-P"]
    hwm_file = tempfile.mktemp(prefix="am-hwm-")
    cmd = [PY, "-P", "-c", WRAP, hwm_file, *args] if sys.version_info >= (3, 11) else [PY, "-c", WRAP, hwm_file, *args]
    with tempfile.TemporaryFile() as err:
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=err, env=env, stdin=subprocess.DEVNULL)
        killed = False
        while True:
            pid, status = os.waitpid(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - t0 > timeout:
                proc.kill()
                killed = True
                pid, status = os.waitpid(proc.pid, 0)
                break
            time.sleep(0.02)
        seconds = time.monotonic() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        tail = err.read().decode("utf-8", "replace")[-2000:]
    rc: int | str = "timeout" if killed else proc.returncode
    try:
        with open(hwm_file) as fh:
            peak = int(fh.read()) / 1024
        os.unlink(hwm_file)
    except (OSError, ValueError):  # killed before its exit: the last sample is all there is
        peak = float("nan")
    return rc, seconds, peak, tail


def verdict(rc: int | str, stderr: str) -> str:
    if "Traceback" in stderr:
        return "TRACEBACK: " + stderr.strip().splitlines()[-1][:100]
    line = stderr.strip().splitlines()[-1][:100] if stderr.strip() else ""
    return line


def file_case(name: str, path: str, *args: str, cmd: str = "check") -> None:
    rc, s, peak, err = run_measured([*ACCMON, cmd, path, *args])
    RESULTS.append(Result(name, rc, s, peak, note=verdict(rc, err)))
    print_row(RESULTS[-1])


def print_row(r: Result) -> None:
    growth = f"{r.growth_mb:+8.1f}" if r.growth_mb is not None else " " * 8
    viewer = f"{r.viewer_mb:8.1f}" if r.viewer_mb is not None else " " * 8
    print(f"{r.name:<46} {r.rc!s:>8} {r.seconds:8.2f} {r.peak_mb:8.1f} {growth} {viewer}  {r.note}", flush=True)


# ---- files ------------------------------------------------------------------------------------------------
def _writer(path: str):  # type: ignore[no-untyped-def]
    from accmon.probe.recording import RecordingWriter

    return RecordingWriter(path)


def write_recording(path: str, frames: list[dict], *, end: bool = True, total: int | None = None) -> None:
    from accmon.probe import wire

    w = _writer(path)
    batch = [wire.encode(f) for f in frames]
    if end:
        last = frames[-1]
        batch.append(wire.encode(wire.envelope("end", last["run"], 0, last["seq"] + 1, last["step"], status="finished",
                                               error=None, total_steps=total if total is not None else 0)))
    w.write(batch)
    w.close()


def recording_cases(d: str) -> None:
    from accmon.probe import wire
    from accmon.probe.recording import RECORD, encode_header, encode_record

    env = wire.envelope
    meta = env("meta", "r", 0, 1, -1, name="hostile")

    p = os.path.join(d, "epoch_inf.accmon")
    write_recording(p, [meta, env("steps", "r", 0, 2, 1, steps=[0, 1], times=[0.0, 0.0],
                                  cols={"loss": [1.0, 0.9], "epoch": [0.0, float("inf")]})], total=2)
    file_case("recording: epoch=inf", p)

    p = os.path.join(d, "no_cols.accmon")
    f = env("steps", "r", 0, 2, 0, steps=[0], times=[0.0])
    write_recording(p, [meta, f], total=1)
    file_case("recording: steps frame without columns", p)

    p = os.path.join(d, "int64.accmon")
    big = 2**63 - 10
    write_recording(p, [meta, env("steps", "r", 0, 2, big, steps=[0, big], times=[0.0, 0.0],
                                  cols={"loss": [1.0, 2.0**70], "n": [2**63 - 1, -(2**63)]})], total=2)
    file_case("recording: steps near the int64 limit", p)

    # Damage, then magics whose records all claim to reach one far magic: a CRC over each was quadratic.
    p = os.path.join(d, "forged_magics.accmon")
    n, stride = 38_000, 256
    body = bytearray(b"XXXX")
    endpos = len(encode_header()) + 4 + stride * n
    for _ in range(n):
        at = len(encode_header()) + len(body)
        forged = struct.pack("<4sBII", b"\xa5ACM", 1, endpos - at - RECORD.size, 0) + b"\x80"
        body += forged + b"\0" * (stride - len(forged))
    with open(p, "wb") as fh:
        fh.write(encode_header() + bytes(body) + encode_record(wire.encode(meta)))
    file_case(f"recording: {os.path.getsize(p) / 1e6:.1f} MB of forged magics", p)

    p = os.path.join(d, "ranks.accmon")
    write_recording(p, [env("steps", "r", r, 1, 0, steps=[0], times=[0.0], cols={"loss": [1.0]}) for r in range(20_000)],
                    end=False)
    file_case(f"recording: 20,000 ranks ({os.path.getsize(p) / 1e6:.1f} MB)", p)

    p = os.path.join(d, "layers.accmon")
    cols = {f"grad_norm/layer{i}": [1.0, 2.0, 4.0, 8.0] for i in range(10_000)}
    cols["loss"] = [1.0, 1.0, 1.0, 1.0]
    write_recording(p, [meta, env("steps", "r", 0, 2, 3, steps=[0, 1, 2, 3], times=[0.0] * 4, cols=cols)], total=4)
    file_case(f"recording: 10,000 per-layer series ({os.path.getsize(p) / 1e6:.2f} MB)", p)

    p = os.path.join(d, "columns.accmon")
    cols = {f"c{i}": [1.0] for i in range(200_000)}
    write_recording(p, [meta, env("steps", "r", 0, 2, 0, steps=[0], times=[0.0], cols=cols)], total=1)
    file_case(f"recording: 200,000 columns ({os.path.getsize(p) / 1e6:.1f} MB)", p)

    p = os.path.join(d, "jumps.accmon")
    frames = [meta] + [env("steps", "r", 0, 2 + i, i * 10**12, steps=[i * 10**12], times=[0.0], cols={"loss": [1.0]})
                       for i in range(2000)]
    write_recording(p, frames, total=2000)
    file_case("recording: step jumps of 1e12 per frame", p)

    p = os.path.join(d, "escapes.accmon")
    evil = "\x1b]0;pwned\x07\x1b[2J"
    write_recording(p, [env("meta", "r", 0, 1, -1, name="run" + evil),
                        env("alert", "r", 0, 2, 0, alert={"id": "x" + evil, "severity": "warning", "step": 0,
                                                          "message": evil, "fix": evil})], total=0)
    rc, s, peak, err = run_measured([*ACCMON, "check", p], stdout=subprocess.PIPE)
    RESULTS.append(Result("recording: terminal escapes in names/alerts", rc, s, peak, note=verdict(rc, err)))
    print_row(RESULTS[-1])

    p = os.path.join(d, "dropped.accmon")
    write_recording(p, [meta, env("steps", "r", 0, 2, 99, steps=list(range(100)), times=[0.0] * 100,
                                  cols={"loss": [1.0] * 100})], total=300)
    file_case("recording: end says 300 steps, 100 recorded", p, "--json")

    p = os.path.join(d, "cut.accmon")
    write_recording(p, [meta, env("steps", "r", 0, 2, 99, steps=list(range(100)), times=[0.0] * 100,
                                  cols={"loss": [1.0] * 100}),
                        env("exit", "r", 0, 3, 99, exit_code=0, signal=None)], end=False)
    file_case("recording: cut short (exit frame, no end)", p, "--json")


def tensorboard_cases(d: str) -> None:
    try:
        from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
    except ImportError:
        print("(tensorboard not installed: no TensorBoard cases)")
        return

    def write(logdir: str, values: list[tuple[int, summary_pb2.Summary.Value]]) -> None:
        w = EventFileWriter(logdir)
        for step, v in values:
            w.add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary_pb2.Summary(value=[v])))
        w.close()

    big = os.path.join(d, "tb_big_tensor")
    shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=20000),
                                                  tensor_shape_pb2.TensorShapeProto.Dim(size=10000)])
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=shape, float_val=[1.0])
    write(big, [(0, summary_pb2.Summary.Value(tag="loss", simple_value=1.0)),
                (1, summary_pb2.Summary.Value(tag="train/acc", tensor=tensor))])
    file_case("tensorboard: [20000, 10000] tensor in ~120 bytes", big)

    inf = os.path.join(d, "tb_epoch_inf")
    write(inf, [(0, summary_pb2.Summary.Value(tag="loss", simple_value=1.0)),
                (0, summary_pb2.Summary.Value(tag="epoch", simple_value=float("inf")))])
    file_case("tensorboard: epoch=inf", inf)

    fifo_dir = os.path.join(d, "tb_fifo")
    os.mkdir(fifo_dir)
    os.mkfifo(os.path.join(fifo_dir, "events.out.tfevents.1.host"))
    file_case("tensorboard: a FIFO named like an event file", fifo_dir)


def csv_cases(d: str) -> None:
    p = os.path.join(d, "wide_field.csv")
    with open(p, "w") as fh:
        fh.write("step,loss\n0,0.5\n1," + "9" * 200_000 + "\n")
    file_case("csv: a field over 128 KiB (check)", p)
    file_case("csv: a field over 128 KiB (replay)", p, cmd="replay")

    p = os.path.join(d, "step_1e300.csv")
    with open(p, "w") as fh:
        fh.write("step,loss\n0,0.5\n1e300,0.4\n")
    file_case("csv: step 1e300 (check)", p)
    rt = os.environ["ACCMON_RUNTIME_DIR"]
    before = set(os.listdir(rt))
    code = ("import sys; from accmon.tui.importers import to_recording, LogError\n"
            "try:\n    to_recording(sys.argv[1], sys.argv[2])\nexcept LogError as e:\n    sys.exit(str(e))")
    rc, s_, peak, err = run_measured([PY, "-c", code, p, os.path.join(d, "conv.accmon")])
    left = set(os.listdir(rt)) - before
    RESULTS.append(Result("csv: step 1e300 (replay's conversion)", rc, s_, peak,
                          note=verdict(rc, err) + (f" left behind: {sorted(left)}" if left else "")))
    print_row(RESULTS[-1])

    p = os.path.join(d, "epoch_inf.csv")
    with open(p, "w") as fh:
        fh.write("epoch,loss\n0,0.5\ninf,0.4\n")
    file_case("csv: epoch=inf", p)

    p = os.path.join(d, "big.csv")
    with open(p, "w") as fh:
        fh.write("step,loss,acc,lr\n")
        for i in range(1_400_000):
            fh.write(f"{i},0.{i % 997},0.{i % 991},0.001\n")
    file_case(f"csv: {os.path.getsize(p) / 1e6:.0f} MB", p)


def pipe_case(d: str) -> None:
    from accmon.probe import wire

    p = os.path.join(d, "many_alerts.accmon")
    frames = [wire.envelope("meta", "r", 0, 1, -1, name="r")] + [
        wire.envelope("alert", "r", 0, 2 + i, i, alert={"id": f"integration_{i}", "severity": "info", "step": i,
                                                        "message": "x" * 200, "fix": ""}) for i in range(5000)]
    write_recording(p, frames, total=0)
    t0 = time.monotonic()
    check = subprocess.Popen([*ACCMON, "check", p], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert check.stdout is not None and check.stderr is not None
    check.stdout.readline()
    check.stdout.close()
    err = check.stderr.read().decode()
    check.stderr.close()
    rc = check.wait(60)
    RESULTS.append(Result("check | head -1 (broken pipe)", rc, time.monotonic() - t0, 0.0, note=verdict(rc, err)))
    print_row(RESULTS[-1])


TUI_SCRIPT = """
import asyncio, sys
from accmon.tui.app import AccmonApp
from accmon.tui.app_sources import ReplaySource

async def main(path):
    app = AccmonApp(ReplaySource(path, rerun_rules=False))
    async with app.run_test(size=(120, 40)) as pilot:
        for _ in range(10):
            await pilot.pause(0.2)
        await pilot.press("tab", "up", "down", "tab", "up")
        for _ in range(5):
            await pilot.pause(0.2)
    return app.return_code or 0

sys.exit(asyncio.run(main(sys.argv[1])))
"""


def tui_cases(d: str) -> None:
    for name in ("epoch_inf.accmon", "int64.accmon", "escapes.accmon"):
        p = os.path.join(d, name)
        if not os.path.exists(p):
            continue
        rc, s, peak, err = run_measured([PY, "-c", TUI_SCRIPT, p])
        RESULTS.append(Result(f"TUI replay: {name}", rc, s, peak, note=verdict(rc, err)))
        print_row(RESULTS[-1])


# ---- peers -------------------------------------------------------------------------------------------------
VICTIM = """
import json, os, sys, time
import accmon.probe as accmon
ready, stop = sys.argv[1], sys.argv[2]
record = sys.argv[3] if len(sys.argv) > 3 and sys.argv[3] else None
run = accmon.start("victim", record=record)
cols = [f"layer{i}" for i in range(20)]
for f in range(40):  # ~13 MB of history: each reply is a full 8 MiB page
    steps = list(range(f * 2048, (f + 1) * 2048))
    run.log_columns(steps, {c: [float(s) for s in steps] for c in cols})
while run._io.step < 40 * 2048 - 1:
    time.sleep(0.01)
step = 40 * 2048
with open(ready + ".tmp", "w") as fh:
    json.dump({"pub": run.endpoints[0], "ctl": run.endpoints[1], "run": run.run_id}, fh)
os.replace(ready + ".tmp", ready)
while not os.path.exists(stop):
    run.log(step, loss=1.0)
    step += 1
    time.sleep(0.01)
run.close()
"""

HISTORY_FLOOD = """
import sys, time, msgpack, zmq
ctl, seconds = sys.argv[1], float(sys.argv[2])
ctx = zmq.Context()
socks = []
for _ in range(8):
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVHWM, 1)  # its ZeroMQ stops reading too: whatever is sent stays with the probe
    s.setsockopt(zmq.SNDHWM, 100000)
    s.connect(ctl)
    socks.append(s)
req = msgpack.packb({"op": "history", "since": 1})
end = time.monotonic() + seconds
while time.monotonic() < end:
    for s in socks:
        try:
            s.send(req, zmq.NOBLOCK)
        except zmq.Again:
            pass
    time.sleep(0.001)
ctx.destroy(0)
"""

TOPIC_FLOOD = """
import sys, time, zmq
pub, seconds = sys.argv[1], float(sys.argv[2])
ctx = zmq.Context()
s = ctx.socket(zmq.XSUB)
s.setsockopt(zmq.LINGER, 0)
s.connect(pub)
end = time.monotonic() + seconds
i = 0
while time.monotonic() < end:
    for _ in range(1000):
        s.send(b"\\x01%040d" % i)
        i += 1
    time.sleep(0.001)
big = ctx.socket(zmq.XSUB)
big.setsockopt(zmq.LINGER, 0)
big.connect(pub)
big.send(b"\\x01" + b"x" * (50 * 1024 * 1024))  # one 50 MB topic
time.sleep(1.0)
ctx.destroy(0)
"""


def sample(pids: dict[str, int], stop: threading.Event, peaks: dict[str, float]) -> None:
    while not stop.is_set():
        for k, pid in pids.items():
            peaks[k] = max(peaks.get(k, 0.0), rss_mb(pid))
        stop.wait(0.05)


def peer_case(name: str, attacker: str, which: str, d: str, *, record: bool = False) -> None:
    ready, stop = os.path.join(d, f"{name}.ready"), os.path.join(d, f"{name}.stop")
    rec = os.path.join(d, f"{name}.accmon") if record else ""
    victim = subprocess.Popen([PY, "-c", VICTIM, ready, stop, rec], stdout=subprocess.DEVNULL)
    viewer = None
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(ready):
            if time.monotonic() > deadline or victim.poll() is not None:
                raise RuntimeError("the victim did not start")
            time.sleep(0.05)
        with open(ready) as fh:
            info = json.load(fh)
        viewer = subprocess.Popen([*ACCMON, "attach", "--headless", info["run"]], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # the viewer's history load: not what is measured
        base = rss_mb(victim.pid)
        viewer_base = rss_mb(viewer.pid)
        peaks: dict[str, float] = {}
        halt = threading.Event()
        sampler = threading.Thread(target=sample, args=({"victim": victim.pid, "viewer": viewer.pid}, halt, peaks))
        sampler.start()
        t0 = time.monotonic()
        rc, _, _, err = run_measured([PY, "-c", attacker, info[which], str(ATTACK_S)], timeout=ATTACK_S + 60)
        time.sleep(2.0)  # what stays held after the peer left
        held = rss_mb(victim.pid)
        halt.set()
        sampler.join()
        seconds = time.monotonic() - t0
        alive = victim.poll() is None and viewer.poll() is None
        note = (f"victim {base:.0f} MB before, {held:.0f} MB held 2 s after; viewer +{peaks['viewer'] - viewer_base:.1f} MB;"
                f" attacker rc {rc}" + ("" if alive else "; A PROCESS DIED"))
        RESULTS.append(Result(name, "alive" if alive else "died", seconds, peaks["victim"], peaks["victim"] - base,
                              peaks["viewer"], note))
        print_row(RESULTS[-1])
    finally:
        open(stop, "w").close()
        try:
            victim.wait(30)
        except subprocess.TimeoutExpired:
            victim.kill()
            victim.wait()
        if viewer is not None:
            try:
                viewer.wait(30)
            except subprocess.TimeoutExpired:
                viewer.kill()
                viewer.wait()


HOSTILE_PUBLISHER = """
import sys, time, zmq
sys.path.insert(0, sys.argv[3])
from accmon.probe import wire
d, seconds = sys.argv[1], float(sys.argv[2])
ctx = zmq.Context()
pub = ctx.socket(zmq.XPUB); pub.setsockopt(zmq.LINGER, 0); pub.setsockopt(zmq.SNDHWM, 100000)
router = ctx.socket(zmq.ROUTER); router.setsockopt(zmq.LINGER, 0)  # never answers history
pub.bind(f"ipc://{d}/h.pub"); router.bind(f"ipc://{d}/h.ctl")
open(d + "/h.ready", "w").close()
pub.poll(30000); pub.recv()
size = int(sys.argv[4])
payload = "x" * size
end = time.monotonic() + seconds
seq = 10  # after a gap
while time.monotonic() < end:
    try:
        pub.send(wire.encode(wire.envelope("meta", "h", 0, seq, -1, name=payload)), zmq.NOBLOCK)
        seq += 1
    except zmq.Again:
        time.sleep(0.001)
with open(d + "/h.sent", "w") as fh:
    fh.write(str(seq - 10))
time.sleep(1.0)
ctx.destroy(0)
"""


# The viewer's receiving side (what `accmon attach` runs), held open for the whole attack.
# "busy": the main thread spends its time in Python between drains, as the TUI does (the reader thread then has
# the GIL half the time). ATTACK_RCVHWM overrides the live socket's high-water mark (100000: as before issue 16).
VIEWER = """
import os, sys, time
from accmon.tui import subscriber
from accmon.tui.subscriber import RunClient
if os.environ.get("ATTACK_RCVHWM"):
    subscriber.RCVHWM = int(os.environ["ATTACK_RCVHWM"])
client = RunClient(sys.argv[1], sys.argv[2]).start()
end = time.monotonic() + float(sys.argv[3])
busy = sys.argv[4] == "busy"
while time.monotonic() < end:
    client.wake.wait(0.1)
    client.drain()
    if busy:
        t = time.monotonic()
        while time.monotonic() - t < 0.2:
            sum(range(10000))
client.close()
st = client.status
print(getattr(st, "cut_off", "-"), len(getattr(client, "_buffer", ())), repr(st.message))
"""


def hostile_publisher_case(d: str, size: int = 1_000_000, label: str = "1 MB frames", busy: bool = False) -> None:
    """A publisher in front of a viewer, after a gap, whose ROUTER never answers history: frames of `size` bytes
    as fast as the viewer's socket takes them, for 2 * ATTACK_S."""
    sub = os.path.join(d, f"hp{size}{'b' if busy else ''}")
    os.mkdir(sub, 0o700)
    pub = subprocess.Popen([PY, "-c", HOSTILE_PUBLISHER, sub, str(ATTACK_S * 2), REPO, str(size)])
    try:
        while not os.path.exists(os.path.join(sub, "h.ready")):
            time.sleep(0.05)
        viewer = subprocess.Popen([PY, "-c", VIEWER, f"ipc://{sub}/h.pub", f"ipc://{sub}/h.ctl", str(ATTACK_S * 2 + 5),
                                   "busy" if busy else "idle"],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        peaks: dict[str, float] = {}
        halt = threading.Event()
        sampler = threading.Thread(target=sample, args=({"viewer": viewer.pid}, halt, peaks))
        sampler.start()
        t0 = time.monotonic()
        pub.wait(ATTACK_S * 2 + 60)
        halt.set()
        sampler.join()
        alive = viewer.poll() is None
        try:
            said, _ = viewer.communicate(timeout=ATTACK_S * 2 + 30)  # it closes by itself after the attack
        except subprocess.TimeoutExpired:
            viewer.kill()
            said, _ = viewer.communicate()
        sent = open(os.path.join(sub, "h.sent")).read() if os.path.exists(os.path.join(sub, "h.sent")) else "?"
        cut, buffered, message = (said.strip().split(" ", 2) + ["?", "?", "?"])[:3]
        RESULTS.append(Result(f"hostile publisher after a gap ({label})", "alive" if alive else "died",
                              time.monotonic() - t0, 0.0, None, peaks.get("viewer", 0.0),
                              f"{sent} frames sent; viewer: cut off {cut}x, {buffered} buffered, says {message}"))
        print_row(RESULTS[-1])
    finally:
        if pub.poll() is None:
            pub.kill()
            pub.wait()


# ---- a peer speaking ZMTP by hand: one message of endless parts --------------------------------------------------
# libzmq bounds each part (MAXMSGSIZE) and the messages queued (HWM), never the parts of one message, which it
# holds until the last one comes. libzmq peers cannot send such a message (they too hold it whole before sending);
# a peer writing ZMTP itself can. Stopped once the process under attack has grown STOP_MB.
ZMTP_STOP_MB = 1000
ZMTP = r"""
import socket, struct, sys, time
path, kind, pid, stop_mb, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) // 1024
def greet(s, socket_type):
    s.sendall(b"\xff" + b"\0" * 8 + b"\x7f" + bytes([3, 0]) + b"NULL".ljust(20, b"\0") + b"\0" * 32)
    got = b""
    while len(got) < 64:
        got += s.recv(64 - len(got))
    ready = b"READY" + bytes([11]) + b"Socket-Type" + struct.pack(">I", len(socket_type)) + socket_type
    s.sendall(bytes([0x04, len(ready)]) + ready)
if kind == "pub":  # in front of a viewer: it connects to us
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    s, _ = srv.accept()
    greet(s, b"PUB")
    chunk = (bytes([0x03]) + struct.pack(">Q", 60_000)) + b"x" * 60_000  # parts of 60 KB, MORE set
else:  # a DEALER to the probe's ROUTER
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    greet(s, b"DEALER")
    chunk = (bytes([0x01, 250]) + b"x" * 250) * 240  # parts of 250 bytes (the ROUTER's cap is 4 KiB), MORE set
base, sent, t0 = rss(), 0, time.monotonic()
s.settimeout(1.0)
try:
    while time.monotonic() - t0 < seconds and rss() - base < stop_mb:
        s.sendall(chunk * 16)
        sent += len(chunk) * 16
except OSError as exc:
    print(f"cut off: {exc}")
print(f"{sent / 1e6:.0f} MB of parts sent in {time.monotonic() - t0:.1f} s; {base} MB -> {rss()} MB")
"""


def zmtp_cases(d: str) -> None:
    # The viewer's receiving side in front of a hand-made PUB.
    # The viewer first (it connects again and again until the socket is there): the attacker watches its RSS.
    path = os.path.join(d, "zmtp.pub")
    viewer = attacker = None
    try:
        viewer = subprocess.Popen([PY, "-c", VIEWER, f"ipc://{path}", f"ipc://{d}/zmtp.ctl", str(ATTACK_S + 10), "idle"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        attacker = subprocess.Popen([PY, "-c", ZMTP, path, "pub", str(viewer.pid), str(ZMTP_STOP_MB), str(ATTACK_S)],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        peaks: dict[str, float] = {}
        halt = threading.Event()
        sampler = threading.Thread(target=sample, args=({"viewer": viewer.pid}, halt, peaks))
        sampler.start()
        t0 = time.monotonic()
        out, err = attacker.communicate(timeout=ATTACK_S + 60)
        halt.set()
        sampler.join()
        RESULTS.append(Result("raw ZMTP: one endless message to a viewer", "alive" if viewer.poll() is None else "died",
                              time.monotonic() - t0, 0.0, None, peaks.get("viewer", 0.0),
                              (out.strip() or err.strip()[-200:]) + " (libzmq bounds parts, not messages)"))
        print_row(RESULTS[-1])
    finally:
        for p in (attacker, viewer):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    # A training process's ROUTER, from a hand-made DEALER.
    ready, stop = os.path.join(d, "zmtp-victim.ready"), os.path.join(d, "zmtp-victim.stop")
    victim = subprocess.Popen([PY, "-c", VICTIM, ready, stop, ""], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(ready):
            if time.monotonic() > deadline or victim.poll() is not None:
                raise RuntimeError("the victim did not start")
            time.sleep(0.05)
        with open(ready) as fh:
            info = json.load(fh)
        base = rss_mb(victim.pid)
        peaks = {}
        halt = threading.Event()
        sampler = threading.Thread(target=sample, args=({"victim": victim.pid}, halt, peaks))
        sampler.start()
        t0 = time.monotonic()
        out = subprocess.run([PY, "-c", ZMTP, info["ctl"][len("ipc://"):], "dealer", str(victim.pid), str(ZMTP_STOP_MB),
                              str(ATTACK_S)], capture_output=True, text=True, timeout=ATTACK_S + 60)
        halt.set()
        sampler.join()
        RESULTS.append(Result("raw ZMTP: one endless message to a training process",
                              "alive" if victim.poll() is None else "died", time.monotonic() - t0, peaks["victim"],
                              peaks["victim"] - base, None,
                              (out.stdout.strip() or out.stderr.strip()[-200:]) + " (libzmq bounds parts, not messages)"))
        print_row(RESULTS[-1])
    finally:
        open(stop, "w").close()
        victim.kill()
        victim.wait()


# ---- the probe's CPU under step jumps --------------------------------------------------------------------------
JUMPS = """
import resource, sys, time
import accmon.probe as accmon
stride, n, rules, pace = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "rules", int(sys.argv[4])
run = accmon.start("jumps", rules=rules) if stride else None
for i in range(n):
    if run is not None:
        run.log(i * stride, loss=1.0 / (i + 1), acc=min(1.0, i / n), lr=0.001)
    if pace and i % pace == pace - 1:
        time.sleep(0.002)  # a step of training: the I/O thread gets frames of a few hundred rows
if run is not None:
    run.close()
r = resource.getrusage(resource.RUSAGE_SELF)
print(f"{r.ru_utime + r.ru_stime:.3f} {run._io.seq if run else 0}")
"""


def jump_cases(d: str) -> None:
    """A training loop logging through the explicit API, steps 0, 1, 2... or 0, 1e12, 2e12...: the training
    process's CPU (user + system, the whole process), with the rules and without; the loop alone as the base."""
    for label, n, pace in (("fast logger, 200,000 steps", 200_000, 0), ("paced loop, 20,000 steps", 20_000, 10)):
        for stride, what in ((0, "the loop alone"), (1, "steps +1"), (10**12, "steps +1e12")):
            for rules in ("rules", "norules") if stride else ("rules",):
                t0 = time.monotonic()
                out = subprocess.run([PY, "-c", JUMPS, str(stride), str(n), rules, str(pace)], capture_output=True,
                                     text=True, timeout=CASE_TIMEOUT_S)
                cpu, frames = (out.stdout.split() + ["nan", "?"])[:2]
                RESULTS.append(Result(f"probe CPU, {label}: {what}" + ("" if rules == "rules" else ", no rules"),
                                      out.returncode, time.monotonic() - t0, float("nan"),
                                      note=f"CPU {float(cpu):.2f} s, {frames} frames " + verdict(out.returncode, out.stderr)))
                print_row(RESULTS[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="run the groups whose name contains this (peers, publisher, zmtp, recording, tensorboard, csv, pipe, jumps, tui)")
    args = ap.parse_args()
    sys.path.insert(0, REPO)
    groups: list[tuple[str, Callable[[str], None]]] = [
        ("peers", lambda d: (peer_case("history flood, memory log (8 peers, ipc)", HISTORY_FLOOD, "ctl", d),
                             peer_case("history flood, recorded run (8 peers, ipc)", HISTORY_FLOOD, "ctl", d, record=True),
                             peer_case("subscription flood (1M topics + one 50 MB)", TOPIC_FLOOD, "pub", d))),
        ("peers/publisher", lambda d: (hostile_publisher_case(d),
                                       hostile_publisher_case(d, label="1 MB frames, busy viewer", busy=True),
                                       hostile_publisher_case(d, 60 * 1024 * 1024, "60 MiB frames"),
                                       hostile_publisher_case(d, 65 * 1024 * 1024, "65 MiB frames, over the cap"))),
        ("peers/zmtp", zmtp_cases),
        ("recording", recording_cases),
        ("tensorboard", tensorboard_cases),
        ("csv", csv_cases),
        ("pipe", pipe_case),
        ("jumps", jump_cases),
        ("tui", tui_cases),
    ]
    with tempfile.TemporaryDirectory(prefix="am-attack-", dir="/tmp") as d:
        os.environ["ACCMON_RUNTIME_DIR"] = os.path.join(d, "rt")
        os.makedirs(os.environ["ACCMON_RUNTIME_DIR"], mode=0o700)
        print(textwrap.dedent(f"""\
            accmon attack harness — python {sys.version.split()[0]}, {os.cpu_count()} CPUs
            {'case':<46} {'exit':>8} {'seconds':>8} {'peak MB':>8} {'growth':>8} {'viewer':>8}  note"""))
        for gname, fn in groups:
            if args.only and args.only not in gname:
                continue
            fn(d)
    bad = [r for r in RESULTS if "TRACEBACK" in r.note or r.rc == "timeout" or r.rc == "died"]
    print(f"\n{len(RESULTS)} cases; {len(bad)} with a traceback, a timeout or a death: "
          + ", ".join(r.name for r in bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
