"""Long fuzz runs of everything that reads input from elsewhere: frame decoder, recording reader, probe ROUTER.

    .venv/bin/python bench/fuzz.py [--seconds 30] [--examples 2000] [--seed N]

Two kinds of runs, each printing how many cases ran and how they ended:
  * time-boxed mutation loops (`--seconds` each): random bytes and mutated real frames through `wire.decode`,
    mutated real recordings through `RecordingReader` (checking that every record before the damage is kept),
    and garbage requests at a live probe's ROUTER (checking it still serves history afterwards);
  * the hypothesis properties of tests/probe/test_fuzz.py with `--examples` each instead of the tests' 150.
An input that raises anything but the documented error is written to a file and the run exits 1.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("ACCMON_RUNTIME_DIR", tempfile.mkdtemp(prefix="amfz", dir="/tmp"))

import zmq  # noqa: E402

from accmon.probe import Run, wire  # noqa: E402
from accmon.probe.recording import HEADER, RecordingError, RecordingReader, RecordingWriter  # noqa: E402

INTERESTING = [0x00, 0xFF, 0xC0, 0xC1, 0xC2, 0xC3, 0xCA, 0xCB, 0xD4, 0xD9, 0xDB, 0xDC, 0xDD, 0xDE, 0xDF, 0x7F,
               0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF]


class Crash(Exception):
    pass


def corpus(rng: random.Random) -> list[bytes]:
    """Real frames of every kind, as the probe writes them."""
    frames = [
        wire.envelope("meta", "0101-abc", 0, 1, -1, name="train", host="h", pid=1, cmd=["python", "t.py"], world_size=2),
        wire.envelope("facts", "0101-abc", 0, 2, -1, facts={"model": {"name": "Net", "params": 10, "layers": [
            {"name": "fc1", "kind": "Linear", "params": 5, "trainable": True}]}, "task": "multiclass", "num_classes": 10}),
        wire.envelope("alert", "0101-abc", 0, 4, 9, alert={"id": "nan_loss", "severity": "critical", "step": 9,
                                                           "message": "m", "evidence": {"loss": float("nan")}, "fix": "f"}),
        wire.envelope("end", "0101-abc", 0, 5, 9, status="finished", error=None, total_steps=10),
        wire.envelope("hb", "0101-abc", 0, 5, 9, dropped=0, dropped_steps=0),
    ]
    for n in (1, 16, 300):
        steps = list(range(n))
        frames.append(wire.envelope("steps", "0101-abc", 1, 3, n - 1, steps=steps, times=[1.5] * n,
                                    cols={"loss": [rng.random() for _ in steps], "acc": [None] * n,
                                          "grad_norm/fc1": [float("inf")] * n}, hists={"target": [1, 2, 3]}))
    return [wire.encode(f) for f in frames]


def mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.random()
        if not buf:
            buf += bytes([rng.choice(INTERESTING)])
            continue
        pos = rng.randrange(len(buf))
        if op < 0.35:
            buf[pos] ^= 1 << rng.randrange(8)
        elif op < 0.6:
            buf[pos] = rng.choice(INTERESTING)
        elif op < 0.75:
            buf[pos:pos] = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 16)))
        elif op < 0.9:
            del buf[pos : pos + rng.randint(1, 16)]
        else:
            del buf[pos:]
    return bytes(buf)


def decode_case(data: bytes) -> str:
    try:
        frame = wire.decode(data)
    except wire.FrameError:
        return "refused (FrameError)"
    if not isinstance(frame, dict) or frame.get("v") != wire.SCHEMA_VERSION or frame.get("kind") not in wire.KINDS:
        raise Crash(f"decode returned a frame that is not valid: {frame!r:.200}")
    return "decoded"


def time_boxed(name: str, seconds: float, make: Callable[[], bytes], check: Callable[[bytes], str]) -> Counter:
    outcomes: Counter = Counter()
    deadline = time.monotonic() + seconds
    t0 = time.perf_counter()
    while time.monotonic() < deadline:
        for _ in range(50):
            data = make()
            try:
                outcome = check(data)
            except Exception:
                path = os.path.join(tempfile.gettempdir(), f"accmon-fuzz-{name}-{int(time.time())}.bin")
                with open(path, "wb") as fh:
                    fh.write(data)
                print(f"  {name}: UNEXPECTED FAILURE, input saved to {path}\n{traceback.format_exc()}")
                outcomes["UNEXPECTED"] += 1
                continue
            outcomes[outcome] += 1
    total = sum(outcomes.values())
    rate = total / (time.perf_counter() - t0)
    detail = ", ".join(f"{k}: {v}" for k, v in outcomes.most_common())
    print(f"  {name:<28} {total:>9} cases  {rate:>9.0f}/s   {detail}")
    return outcomes


def recording_target(rng: random.Random, frames: list[bytes], workdir: str) -> tuple[Callable[[], bytes], Callable[[bytes], str]]:
    path = os.path.join(workdir, "orig.accmon")
    w = RecordingWriter(path)
    ends = []
    for p in frames:
        ends.append(w.write([p])[0] + len(p))
    w.close()
    with open(path, "rb") as fh:
        original = fh.read()
    target = os.path.join(workdir, "m.accmon")

    def case(data: bytes) -> str:
        first_change = next((i for i, (a, b) in enumerate(zip(original, data)) if a != b), min(len(original), len(data)))
        with open(target, "wb") as fh:
            fh.write(data)
        try:
            reader = RecordingReader(target)
        except RecordingError:
            if first_change >= HEADER.size:
                raise Crash("a recording with an intact header was refused as a whole") from None
            return "refused (header damaged)"
        got = list(reader.frames())
        spared = sum(1 for e in ends if e <= first_change)
        if len(got) < spared:
            raise Crash(f"{spared} records before the damage, only {len(got)} frames read")
        return "read, damage reported" if reader.problems else "read, no damage seen"

    return (lambda: mutate(rng, original)), case


def router_target(rng: random.Random) -> tuple[Callable[[], bytes], Callable[[bytes], str], Callable[[], None]]:
    run = Run("fuzz-router")
    for step in range(200):
        run.log(step, loss=1.0)
    ctx = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(run._io.endpoints[1])
    ops = ["history", "hello", "done", "nope", None, 1, [1], {"a": 1}]

    def make() -> bytes:
        r = rng.random()
        if r < 0.4:
            body = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 200)))
        elif r < 0.8:
            req = {"op": rng.choice(ops)}
            if rng.random() < 0.7:
                req["since"] = rng.choice([0, 1, -1, 2**63, 2**64 - 1, "1", None, 1.5, True, [1]])
            if rng.random() < 0.3:
                req["max_frames"] = rng.choice([0, -1, 10**9, "x", None])
            body = wire.encode(req)
        else:
            body = mutate(rng, wire.encode({"op": "history", "since": 1}))
        return body

    def case(body: bytes) -> str:
        dealer.send(body)
        if not dealer.poll(2000):
            raise Crash("the probe did not answer")
        reply = dealer.recv_multipart()
        header = wire.decode_message(reply[0])
        return f"answered {header.get('op')}"

    def check_and_close() -> None:
        dealer.send(wire.encode({"op": "history", "since": 1}))
        if not dealer.poll(2000):
            raise Crash("the probe stopped serving history after the fuzzing")
        header = wire.decode_message(dealer.recv_multipart()[0])
        assert header["op"] == "history" and header["first_seq"] == 1
        dealer.close(0)
        ctx.term()
        run.close()

    return make, case, check_and_close


def hypothesis_properties(examples: int) -> int:
    os.environ["ACCMON_FUZZ_EXAMPLES"] = str(examples)  # read when the test module makes its settings
    from tests.probe import test_fuzz as t

    props = [t.test_decode_random_bytes, t.test_decode_any_msgpack_value, t.test_decode_mutated_frames,
             t.test_unknown_fields_are_ignored, t.test_unknown_versions_are_refused_with_a_clear_message,
             t.test_recording_reader_on_mutated_recordings, t.test_the_headless_viewer_handles_hostile_but_well_formed_frames]
    failures = 0
    for prop in props:
        calls = Counter()
        inner = prop.hypothesis.inner_test

        def counted(*args, _inner=inner, **kwargs):
            calls["n"] += 1  # noqa: B023 (this iteration's counter, read before the next)
            return _inner(*args, **kwargs)

        prop.hypothesis.inner_test = counted
        t0 = time.perf_counter()
        try:
            prop()
            result = "ok"
        except Exception as exc:
            failures += 1
            result = f"FAILED: {exc.__class__.__name__}: {str(exc)[:300]}"
        finally:
            prop.hypothesis.inner_test = inner
        print(f"  {prop.__name__:<72} {calls['n']:>7} cases  {time.perf_counter() - t0:6.1f} s  {result}")
    return failures


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=float(os.environ.get("ACCMON_FUZZ_SECONDS", 20)),
                   help="per mutation target (default 20)")
    p.add_argument("--examples", type=int, default=int(os.environ.get("ACCMON_FUZZ_EXAMPLES_LONG", 2000)),
                   help="per hypothesis property (default 2000; the tests run 150)")
    p.add_argument("--seed", type=int, default=int(time.time()))
    args = p.parse_args()
    rng = random.Random(args.seed)
    print(f"fuzz: seed {args.seed}, {args.seconds:g} s per mutation target, {args.examples} examples per property")
    frames = corpus(rng)
    unexpected = 0
    unexpected += time_boxed("decode: random bytes", args.seconds,
                             lambda: bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 512))), decode_case)["UNEXPECTED"]
    unexpected += time_boxed("decode: mutated frames", args.seconds,
                             lambda: mutate(rng, rng.choice(frames)), decode_case)["UNEXPECTED"]
    with tempfile.TemporaryDirectory() as workdir:
        unexpected += time_boxed("recording: mutated files", args.seconds,
                                 *recording_target(rng, frames, workdir))["UNEXPECTED"]
    make, case, finish = router_target(rng)
    unexpected += time_boxed("probe ROUTER: garbage", args.seconds, make, case)["UNEXPECTED"]
    try:
        finish()
        print("  probe ROUTER: still serving history after the fuzzing")
    except (Crash, AssertionError) as exc:
        print(f"  probe ROUTER: {exc}")
        unexpected += 1
    print("hypothesis properties (tests/probe/test_fuzz.py):")
    unexpected += hypothesis_properties(args.examples)
    print("fuzz: " + ("no unexpected outcome" if not unexpected else f"{unexpected} UNEXPECTED outcomes"))
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
