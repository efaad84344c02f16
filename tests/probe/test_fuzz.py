"""Hostile input: the frame decoder, the recording reader, the probe's ROUTER and the viewer's receiver.

Short runs here (`ACCMON_FUZZ_EXAMPLES`, default 150 per property); `bench/fuzz.py` runs the same properties
for much longer. The only outcomes allowed are a decoded, well-typed frame or a clear error: never another
exception, never a hang, never anything executed (msgpack has no code objects and extension types are refused).
"""

from __future__ import annotations

import io
import os
import random
import socket
import tempfile
import time
from functools import lru_cache

import msgpack
import pytest
import zmq
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from accmon.probe import Run, wire
from accmon.probe.recording import HEADER, RECORD, RecordingError, RecordingReader, RecordingWriter

EXAMPLES = int(os.environ.get("ACCMON_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
WAIT_S = 20  # upper bound against hangs, never a timing assertion

# -- strategies -------------------------------------------------------------------------------------------
scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20) | st.binary(max_size=20))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                      max_leaves=25)
numbers = st.none() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=True, allow_infinity=True)


@st.composite
def valid_frames(draw: st.DrawFn) -> dict:
    kind = draw(st.sampled_from(sorted(wire.KINDS)))
    seq = draw(st.integers(1, 2**40))
    body: dict = {}
    if kind == "steps":
        n = draw(st.integers(0, 6))
        body["steps"] = draw(st.lists(st.integers(-1, 2**40), min_size=n, max_size=n))
        body["times"] = draw(st.lists(st.floats(allow_nan=False), min_size=n, max_size=n))
        body["cols"] = draw(st.dictionaries(st.text(max_size=12), st.lists(numbers, min_size=n, max_size=n), max_size=4))
        if draw(st.booleans()):
            body["hists"] = draw(st.dictionaries(st.text(max_size=6), st.lists(numbers, max_size=5), max_size=2))
    elif kind == "alert":
        body["alert"] = draw(st.dictionaries(st.sampled_from(["id", "severity", "step", "message", "evidence", "fix",
                                                              "state", "rank"]), values, max_size=8))
    elif kind == "facts":
        body["facts"] = draw(st.dictionaries(st.text(max_size=10), values, max_size=4))
    else:
        body = draw(st.dictionaries(st.text(max_size=10), values, max_size=4))
    for key in ("v", "kind", "run", "rank", "seq", "step", "t"):
        body.pop(key, None)
    return wire.envelope(kind, draw(st.text(max_size=12)), draw(st.integers(0, 1024)), seq,
                         draw(st.integers(-1, 2**40)), **body)


@st.composite
def mutations(draw: st.DrawFn, data: bytes) -> bytes:
    """Flip, overwrite, insert or delete bytes; cut the tail."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "cut"]))
        if not buf and op != "insert":
            break
        pos = draw(st.integers(0, max(0, len(buf) - 1)))
        if op == "flip":
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            buf[pos] = draw(st.sampled_from([0x00, 0xFF, 0xC1, 0xD4, 0xDD, 0xDF, 0x7F, 0x80, 0x90, 0xA0]))
        elif op == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del buf[pos : pos + draw(st.integers(1, 16))]
        else:
            del buf[pos:]
    return bytes(buf)


def check_decoded(frame: dict) -> None:
    """What every consumer may rely on after decode() returned."""
    assert isinstance(frame, dict) and frame["v"] == wire.SCHEMA_VERSION and frame["kind"] in wire.KINDS
    for key, typ in (("run", str), ("rank", int), ("seq", int), ("step", int)):
        assert isinstance(frame[key], typ) and not isinstance(frame[key], bool)
    if frame["kind"] == "steps":
        n = len(frame["steps"])
        assert all(type(s) is int for s in frame["steps"])
        assert all(isinstance(v, list) and len(v) == n for v in frame.get("cols", {}).values())


def decode_or_error(data: bytes) -> dict | None:
    try:
        frame = wire.decode(data)
    except wire.FrameError as exc:
        assert str(exc)  # says what is wrong
        return None
    check_decoded(frame)
    return frame


# -- the decoder ----------------------------------------------------------------------------------------------
@FUZZ
@given(st.binary(max_size=2048))
def test_decode_random_bytes(data):
    decode_or_error(data)


@FUZZ
@given(values)
def test_decode_any_msgpack_value(value):
    decode_or_error(msgpack.packb(value, use_bin_type=True))


@FUZZ
@given(st.data())
def test_decode_mutated_frames(data):
    payload = wire.encode(data.draw(valid_frames()))
    decode_or_error(data.draw(mutations(payload)))


@FUZZ
@given(valid_frames(), st.dictionaries(st.text(min_size=1, max_size=10), values, max_size=5))
def test_unknown_fields_are_ignored(frame, extra):
    extra = {k: v for k, v in extra.items() if k not in frame}
    decoded = wire.decode(wire.encode({**frame, **extra}))
    check_decoded(decoded)
    assert {k: decoded[k] for k in ("kind", "run", "rank", "seq", "step")} == {k: frame[k] for k in ("kind", "run", "rank", "seq", "step")}


@FUZZ
@given(valid_frames(), values)
def test_unknown_versions_are_refused_with_a_clear_message(frame, version):
    # msgpack's `true` equals 1 in Python and wire.decode takes it as version 1 (harmless; reported as a nit).
    assume(version != wire.SCHEMA_VERSION and not isinstance(version, bool))
    with pytest.raises(wire.FrameError, match="version"):
        wire.decode(wire.encode({**frame, "v": version}))


def test_decode_limits_on_size_nesting_and_extensions():
    bombs = {
        "nested 100k deep": b"\x91" * 100_000 + b"\xc0",
        "a 4-billion-element array in 5 bytes": b"\xdd\xff\xff\xff\xff",
        "a 4 GB string in 5 bytes": b"\xdb\xff\xff\xff\xff",
        "extension type": b"\xd4\x01\x00",
        "timestamp extension": b"\xd6\xff\x00\x00\x00\x00",
        "non-string map key": msgpack.packb({1: 2}),
    }
    for _what, data in bombs.items():
        with pytest.raises(wire.FrameError):
            wire.decode(data)
    deep = 1
    for _ in range(wire.MAX_DEPTH + 2):
        deep = [deep]
    with pytest.raises(wire.FrameError, match="deeper"):
        wire.decode(wire.encode(wire.envelope("facts", "r", 0, 1, 0, facts={"x": deep})))
    with pytest.raises(wire.FrameError, match="exceeds"):
        wire.decode(b"\x00" * (wire.MAX_FRAME_BYTES + 1))


# -- the recording reader -----------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def sample_recording() -> tuple[bytes, tuple[int, ...]]:
    """A real recording of a short run, and the end offset of each record (to know what a mutation spared)."""
    rng = random.Random(7)
    frames = [wire.envelope("meta", "r", 0, 1, -1, name="fuzz", cmd=["python"], world_size=1)]
    for i in range(12):
        steps = list(range(i * 4, i * 4 + 4))
        frames.append(wire.envelope("steps", "r", 0, i + 2, steps[-1], steps=steps, times=[1.0] * 4,
                                    cols={"loss": [rng.random() for _ in steps], "acc": [None, 0.5, float("nan"), 1.0]}))
    frames.append(wire.envelope("end", "r", 0, 14, 47, status="finished", error=None, total_steps=48))
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "r.accmon")
        w = RecordingWriter(path)
        ends = []
        for f in frames:
            payload = wire.encode(f)
            ends.append(w.write([payload])[0] + len(payload))
        w.close()
        with open(path, "rb") as fh:
            return fh.read(), tuple(ends)


@FUZZ
@given(st.data())
def test_recording_reader_on_mutated_recordings(data):
    original, ends = sample_recording()
    mutated = data.draw(mutations(original))
    first_change = next((i for i, (a, b) in enumerate(zip(original, mutated)) if a != b), min(len(original), len(mutated)))
    spared = sum(1 for e in ends if e <= first_change)  # records wholly before the first changed byte
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.accmon")
        with open(path, "wb") as fh:
            fh.write(mutated)
        try:
            reader = RecordingReader(path)
        except RecordingError as exc:
            assert first_change < HEADER.size and str(exc)  # only a damaged header makes it unreadable
            return
        frames = list(reader.frames())
        for f in frames:
            check_decoded(f)
        assert len(frames) >= spared, "frames before the damage were lost"
        for p in reader.problems:
            assert 0 <= p.offset <= len(mutated) and p.message
        # The same file through `accmon check`: a report or exit 2, never a traceback.
        from accmon.tui.check import check

        out, err = io.StringIO(), io.StringIO()
        assert check(path, as_json=True, out=out, err=err) in (0, 1, 2, 3)  # 3: incomplete (README)


def test_recording_record_headers_with_absurd_lengths(tmp_path):
    original, ends = sample_recording()
    path = tmp_path / "r.accmon"
    # The first record claims 4 GB; the reader must neither allocate it nor lose the records after it.
    first = HEADER.size
    forged = bytearray(original)
    forged[first + 5 : first + 9] = (2**32 - 1).to_bytes(4, "little")
    path.write_bytes(bytes(forged))
    reader = RecordingReader(path)
    frames = list(reader.frames())
    assert len(frames) == len(ends) - 1 and reader.problems and reader.problems[0].offset == first
    assert RECORD.size == 13


# -- the probe's ROUTER -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def probe_run(tmp_path_factory):
    d = tempfile.mkdtemp(prefix="amfz", dir="/tmp")
    old = os.environ.get("ACCMON_RUNTIME_DIR")
    os.environ["ACCMON_RUNTIME_DIR"] = d
    run = Run("fuzz-target")
    for step in range(100):
        run.log(step, loss=1.0 / (step + 1))
    ctx = zmq.Context()
    try:
        yield run, ctx
    finally:
        ctx.destroy(linger=0)
        run.close()
    if old is None:
        os.environ.pop("ACCMON_RUNTIME_DIR", None)
    else:
        os.environ["ACCMON_RUNTIME_DIR"] = old


def ask(ctx: zmq.Context, endpoint: str, parts: list[bytes], *, expect_reply: bool) -> list[bytes] | None:
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(endpoint)
    try:
        dealer.send_multipart(parts)
        if dealer.poll(2000 if expect_reply else 100):
            return dealer.recv_multipart()
        return None
    finally:
        dealer.close(0)


def probe_serves(run: Run, ctx: zmq.Context) -> None:
    """The probe still answers a real history request with all its frames."""
    ctl = run._io.endpoints[1]
    for _ in range(5):
        reply = ask(ctx, ctl, [msgpack.packb({"op": "history", "since": 1})], expect_reply=True)
        if reply is not None:
            break
    assert reply is not None, "the probe stopped answering"
    header = msgpack.unpackb(reply[0])
    assert header["op"] == "history" and header["first_seq"] == 1 and len(reply) - 1 == header["last_seq"]
    assert run._io.is_alive()


requests = st.one_of(
    st.binary(max_size=256),
    values.map(lambda v: msgpack.packb(v, use_bin_type=True)),
    st.fixed_dictionaries({"op": st.sampled_from(["history", "hello", "done", "nope"]) | values},
                          optional={"since": values, "max_frames": values}).map(lambda v: msgpack.packb(v, use_bin_type=True)),
)


@FUZZ
@given(st.lists(requests, min_size=1, max_size=3))
def test_probe_router_answers_garbage_and_keeps_serving(probe_run, parts):
    run, ctx = probe_run
    reply = ask(ctx, run._io.endpoints[1], parts, expect_reply=True)
    assert reply is not None, "every request gets an answer, if only an error"
    header = msgpack.unpackb(reply[0], raw=False)
    assert isinstance(header, dict) and header["op"] in ("error", "history", "hello", "done")
    if header["op"] == "error":
        assert header["message"].startswith("bad request")


def test_probe_survives_garbage_at_the_socket_level(probe_run):
    """Bytes that are not even ZeroMQ, and requests over its size limit."""
    run, ctx = probe_run
    path = run._io.endpoints[1][len("ipc://"):]
    rng = random.Random(1)
    for n in (0, 1, 10, 64, 1000, 100_000):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(path)
            s.settimeout(2)
            try:
                s.sendall(b"\xff" + bytes(rng.getrandbits(8) for _ in range(n)))
                s.recv(100)
            except OSError:
                pass  # the probe hung up on us: that is what it should do
    assert ask(ctx, run._io.endpoints[1], [b"x" * 100_000], expect_reply=False) is None  # over MAXMSGSIZE: dropped
    probe_serves(run, ctx)


def test_probe_serves_history_after_the_fuzzing(probe_run):
    probe_serves(*probe_run)


# -- a hostile probe, seen from the viewer --------------------------------------------------------------------
def test_the_viewer_survives_a_hostile_probe(runtime_dir, zmq_ctx):
    """A fake probe on real sockets sends garbage on both channels; the viewer skips it and keeps the good frames."""
    from accmon.tui.subscriber import RunClient

    pub, router = zmq_ctx.socket(zmq.PUB), zmq_ctx.socket(zmq.ROUTER)
    pub_ep, ctl_ep = f"ipc://{runtime_dir}/evil.pub", f"ipc://{runtime_dir}/evil.ctl"
    pub.bind(pub_ep)
    router.bind(ctl_ep)
    good = [wire.encode(wire.envelope("steps", "r", 0, seq, seq, steps=[seq], times=[1.0], cols={"loss": [0.5]}))
            for seq in range(1, 31)]
    rng = random.Random(3)
    garbage = [b"", b"\xc1", b"\x91" * 50_000, b"\xdd\xff\xff\xff\xff", b"\xd4\x01\x00", msgpack.packb([1, 2]),
               msgpack.packb({"v": 99, "kind": "steps"}), msgpack.packb({"v": 1, "kind": "steps", "run": "r", "rank": 0,
                                                                        "seq": 5, "step": 0, "steps": "no"})]
    garbage += [bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 200))) for _ in range(40)]
    client = RunClient(pub_ep, ctl_ep).start()
    try:
        deadline = time.monotonic() + WAIT_S
        answered = 0
        received: list[dict] = []
        while time.monotonic() < deadline and len(received) < 30:
            if router.poll(50):
                ident, *_ = router.recv_multipart()
                # Garbage replies first (not msgpack, wrong op, a history header with absurd fields), then the truth.
                for bad in (b"\xc1", msgpack.packb({"op": "history", "since": "x", "missing": -5}), msgpack.packb([1])):
                    router.send_multipart([ident, bad, *garbage[:3]])
                answered += 1
                if answered > 1:
                    router.send_multipart([ident, msgpack.packb({"op": "history", "since": 1, "first_seq": 1,
                                                                   "last_seq": 30, "head_seq": 30, "missing": 0,
                                                                   "more": False}), *good])
            for g in garbage[:10]:
                pub.send(g)
            received += client.drain()
        assert [f["seq"] for f in received] == list(range(1, 31))
        assert client.alive and client.status.malformed > 0
    finally:
        client.close()
        pub.close(0)
        router.close(0)


# -- consumers of frames that decode but carry hostile bodies ---------------------------------------------------
@settings(FUZZ, report_multiple_bugs=False)
@given(st.lists(valid_frames(), min_size=1, max_size=6))
def test_check_reports_on_recordings_of_hostile_but_well_formed_frames(frames):
    """Frames pass the envelope checks, their bodies are anything: `accmon check` reports, never a traceback."""
    from accmon.tui.check import check

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "h.accmon")
        w = RecordingWriter(path)
        w.write([wire.encode(f) for f in frames])
        w.close()
        for as_json in (True, False):
            assert check(path, as_json=as_json, out=io.StringIO(), err=io.StringIO()) in (0, 1, 2, 3)


@FUZZ
@given(st.lists(valid_frames(), min_size=1, max_size=6))
def test_the_headless_viewer_handles_hostile_but_well_formed_frames(frames):
    from accmon.probe.rules import RankDiagnoser
    from accmon.tui.check import format_alert

    rules = RankDiagnoser()
    for frame in frames:
        for alert in rules.observe(frame):
            format_alert(alert)
        if frame["kind"] == "alert" and isinstance(frame.get("alert"), dict):
            format_alert(frame["alert"])
