import math

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accmon.probe import wire


def steps_frame(**cols):
    n = len(next(iter(cols.values())))
    return wire.envelope("steps", "r1", 0, 1, n - 1, steps=list(range(n)), times=[0.0] * n, cols=cols)


def test_round_trip_keeps_nan_and_inf_exactly():
    frame = steps_frame(loss=[1.5, float("nan"), float("inf"), float("-inf"), None])
    back = wire.decode(wire.encode(frame))
    loss = back["cols"]["loss"]
    assert loss[0] == 1.5 and math.isnan(loss[1]) and loss[2] == math.inf and loss[3] == -math.inf
    assert loss[4] is None  # "not measured" stays distinct from NaN


@pytest.mark.parametrize(
    "data, needle",
    [
        (b"", "not a msgpack frame"),
        (b"\xc1", "not a msgpack frame"),
        (msgpack.packb([1, 2]), "not a map"),
        (msgpack.packb({"v": 99, "kind": "steps"}), "unknown frame schema version 99"),
        (msgpack.packb({"v": 1, "kind": "pickle"}), "unknown frame kind"),
        (msgpack.packb({"v": 1, "kind": "meta", "run": "r", "rank": "0", "seq": 1, "step": 0}), r"\$\.rank"),
        (msgpack.packb({1: 2}), "key that is not a string"),
        (msgpack.packb(msgpack.ExtType(5, b"x")), "extension type 5"),
    ],
)
def test_malformed_frames_are_refused_with_a_reason(data, needle):
    with pytest.raises(wire.FrameError, match=needle):
        wire.decode(data)


def test_too_deep_and_too_big_frames_are_refused():
    deep: dict = {}
    node = deep
    for _ in range(wire.MAX_DEPTH + 2):
        node["x"] = {}
        node = node["x"]
    frame = wire.envelope("facts", "r", 0, 1, 0, facts=deep)
    with pytest.raises(wire.FrameError, match="deeper"):
        wire.decode(wire.encode(frame))
    with pytest.raises(wire.FrameError, match="exceeds"):
        wire.decode(b"\x00" * (wire.MAX_FRAME_BYTES + 1))


def test_steps_frame_columns_must_match_steps():
    bad = wire.envelope("steps", "r", 0, 1, 1, steps=[0, 1], cols={"loss": [1.0]})
    with pytest.raises(wire.FrameError, match="does not have 2 values"):
        wire.decode(wire.encode(bad))
    bad = wire.envelope("steps", "r", 0, 1, 1, steps=[0], cols={"loss": ["1.0"]})
    with pytest.raises(wire.FrameError, match="got `str`"):
        wire.decode(wire.encode(bad))


def test_unknown_fields_are_ignored():
    frame = wire.envelope("meta", "r", 0, 1, -1, name="x", from_the_future={"a": [1, 2]})
    assert wire.decode(wire.encode(frame))["name"] == "x"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_decoder_never_raises_anything_but_frame_error(data):
    try:
        wire.decode(data)
    except wire.FrameError:
        pass


def test_a_bool_is_no_version_and_timestamps_are_plain_numbers():
    import datetime

    with pytest.raises(wire.FrameError, match="version True"):
        wire.decode(msgpack.packb({"v": True, "kind": "meta", "run": "r", "rank": 0, "seq": 1, "step": 0}))
    when = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    frame = {"v": 1, "kind": "facts", "run": "r", "rank": 0, "seq": 1, "step": 0, "facts": {"at": when}}
    assert wire.decode(msgpack.packb(frame, datetime=True))["facts"]["at"] == when.timestamp()


# ---- packed steps frames ------------------------------------------------------------------------------------
def _same(a, b):
    return all((x is None and y is None) or (x is not None and y is not None and (x == y or (x != x and y != y)))
               for x, y in zip(a, b, strict=True))


def test_packed_frames_decode_to_what_was_sent_and_as_arrays():
    import numpy as np

    frame = steps_frame(loss=[1.5, float("nan"), float("inf"), None, -0.0], epoch=[0, 0, 1, 1, None],
                        flag=[1, 2, 3, 4, 5])
    packed = wire.pack_steps(frame)
    assert isinstance(packed["steps"], bytes) and isinstance(packed["cols"]["loss"], bytes)
    assert packed["cols"]["epoch"] == [0, 0, 1, 1, None]  # integer columns stay exact lists
    back = wire.decode(wire.encode(packed))
    assert back["steps"] == [0, 1, 2, 3, 4] and back["times"] == [0.0] * 5
    assert _same(back["cols"]["loss"], frame["cols"]["loss"]) and back["cols"]["loss"][3] is None
    arrays = wire.decode(wire.encode(packed), arrays=True)
    assert arrays["steps"].dtype == np.int64 and arrays["steps"].tolist() == [0, 1, 2, 3, 4]
    loss = arrays["cols"]["loss"]
    assert isinstance(loss, wire.Floats) and loss.missing.tolist() == [False, False, False, True, False]
    assert math.isnan(loss.values[1]) and loss.values[2] == math.inf and _same(loss.tolist(), frame["cols"]["loss"])
    full = wire.decode(wire.encode(wire.pack_steps(steps_frame(acc=[0.5, 0.25]))), arrays=True)["cols"]["acc"]
    assert full.missing is None  # every row measured: no mask to carry


def test_a_measured_nan_that_looks_like_missing_is_still_a_measured_nan():
    import numpy as np

    x = np.array([1.0, 2.0])
    x.view("<u8")[1] = wire.MISSING_BITS
    back = wire.decode(wire.encode(wire.pack_steps(steps_frame(x=x.tolist()))))
    assert back["cols"]["x"][0] == 1.0 and back["cols"]["x"][1] is not None and math.isnan(back["cols"]["x"][1])


def test_packed_fields_of_the_wrong_size_are_refused():
    ok = wire.pack_steps(steps_frame(loss=[1.0, 2.0]))
    for key, bad in (("steps", ok["steps"][:-1]), ("times", ok["times"][:8])):
        with pytest.raises(wire.FrameError, match="steps"):
            wire.decode(wire.encode({**ok, key: bad}))
    with pytest.raises(wire.FrameError, match="does not have 2 values"):
        wire.decode(wire.encode({**ok, "cols": {"loss": ok["cols"]["loss"][:8]}}))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-2**40, 2**40)),
                min_size=1, max_size=40))
def test_packed_and_unpacked_frames_decode_alike(values):
    frame = steps_frame(v=values)
    plain = wire.decode(wire.encode(frame))["cols"]["v"]
    packed = wire.decode(wire.encode(wire.pack_steps(frame)))["cols"]["v"]
    assert _same([None if x is None else float(x) for x in plain], [None if x is None else float(x) for x in packed])


# ---- wire.Frame: what a reader gets of what the probe sent ----------------------------------------------------
def test_every_key_a_real_run_sends_reaches_the_reader(tmp_path):
    """`wire.Frame` drops the keys it does not list (docs/frames.md: unknown fields are ignored). A key the probe
    sends and Frame lacks would vanish in every viewer and in `check`: each frame of a real run, read with a second
    msgpack implementation, must decode with all of its keys."""
    import zmq

    from accmon.probe import Run
    from accmon.probe.recording import RecordingReader

    rec = tmp_path / "keys.accmon"
    run = Run("keys", rules=False, record=str(rec))
    sub = zmq.Context.instance().socket(zmq.SUB)
    try:
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(run.endpoints[0])
        run.set_facts(model={"name": "Net", "layers": [{"name": "fc", "params": 3}]}, batch_size=4)
        for step in range(5):
            run.log(step, loss=1.0 / (step + 1), epoch=0, acc=None if step % 2 else 0.5)
        run.alert({"id": "own_finding", "severity": "info", "step": 4, "message": "m", "evidence": {"x": [1.0]}})
        # The first heartbeat (once a second) carries the fields only the live stream has.
        assert sub.poll(10_000), "no frame on the live stream"
        while True:
            raw = sub.recv()
            if msgpack.unpackb(raw)["kind"] == "hb":
                break
            assert sub.poll(10_000), "no heartbeat on the live stream"
        hb = msgpack.unpackb(raw)
        assert set(wire.decode(raw)) == set(hb) and {"dropped", "dropped_steps"} <= set(hb)
    finally:
        sub.close()
        run.close(stopped={"by": "user", "reason": "KeyboardInterrupt"})
    kinds = set()
    for _offset, payload in RecordingReader(rec).payloads():
        sent = msgpack.unpackb(payload)
        kinds.add(sent["kind"])
        assert set(wire.decode(payload)) == set(sent), sent["kind"]
    assert kinds == {"meta", "facts", "steps", "alert", "end"}


def test_an_exit_frame_keeps_every_key_accmon_run_writes():
    frame = wire.envelope("exit", "r", 0, 9, 4, exit_code=None, signal="SIGKILL", last_heard=1.5)
    assert wire.decode(wire.encode(frame)) == frame


def test_bodies_hold_plain_data_only():
    """The untyped bodies (facts, alerts, meta) are checked after decoding: string keys at every level, no
    extension values."""
    base = {"v": 1, "kind": "facts", "run": "r", "rank": 0, "seq": 1, "step": 0}
    for facts in ({"model": {1: "int key"}}, {"model": {b"k": 1}}, {"a": [{"b": {2.5: 0}}]}):
        with pytest.raises(wire.FrameError, match="not a string"):
            wire.decode(msgpack.packb({**base, "facts": facts}, strict_types=False))
    with pytest.raises(wire.FrameError, match="extension type 7"):
        wire.decode(msgpack.packb({**base, "facts": {"a": [msgpack.ExtType(7, b"")]}}))
    ok = {"a": [1, 2.5, None, True, "s", b"bin", {"b": []}]}
    assert wire.decode(msgpack.packb({**base, "facts": ok}))["facts"] == ok
