"""Today's rules over a recording, in a child process, streaming alerts back to the replay as they fire.

A recording made with older rules should get today's diagnosis (as `accmon check` gives it). The rules cost far
more per step than drawing does (tens of thousands of steps a second, against a million for the store), so they
run beside the replay, not in its way: a child process on the other core reads the same file and writes msgpack
maps on stdout, each after its length (4 bytes, little-endian) —

    {"alert": {...}}          an alert that is new, updated or cleared, as soon as the rules say so
    {"final": [{...}, ...]}   every alert of the run, once the whole file has been diagnosed
    {"error": "..."}          the rules could not run (the replay keeps the recorded alerts)

The replay shows the recorded alerts at once, merges the streamed ones by identity, and replaces the lot with
`final` at the end. Never pickle: alerts are plain maps, and msgpack keeps NaN evidence exactly.

    python -m accmon.tui.replay FILE
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterator
from typing import IO, Any, BinaryIO

from accmon.probe import wire

_LENGTH = struct.Struct("<I")


def diagnose(path: str) -> Iterator[dict[str, Any]]:
    """Messages (see the module docstring) for the recording at path."""
    from accmon.probe.recording import RecordingReader
    from accmon.probe.rules import StreamDiagnosis

    diagnosis = StreamDiagnosis()  # as `accmon check`: each rank's rules, and the cross-rank ones
    for frame in RecordingReader(path).frames():
        for alert in diagnosis.observe(frame):
            yield {"alert": alert}
    yield {"final": diagnosis.alerts()}


def child_command(path: str) -> list[str]:
    """The command that starts this module on `path`, with the current directory never on the child's import
    path: `python -m` puts it first, and a `msgpack.py` lying beside a downloaded recording would be run."""
    if sys.version_info >= (3, 11):
        return [sys.executable, "-P", "-m", "accmon.tui.replay", path]
    code = "import sys; del sys.path[0]; import runpy; runpy.run_module('accmon.tui.replay', run_name='__main__')"
    return [sys.executable, "-c", code, path]


def main(argv: list[str] | None = None, out: BinaryIO | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = out or sys.stdout.buffer
    try:
        for message in diagnose(args[0]):
            write_message(out, message)
    except BrokenPipeError:
        return 0  # the replay closed: nothing more to say
    except Exception as exc:  # a rule's bug must not look like a crash of the replay
        write_message(out, {"error": f"{exc.__class__.__name__}: {exc}"})
        return 1
    return 0


def write_message(out: BinaryIO, message: dict[str, Any]) -> None:
    data = wire.encode(message)
    out.write(_LENGTH.pack(len(data)) + data)
    out.flush()


def read_messages(stream: IO[bytes]) -> Iterator[dict[str, Any]]:
    """The child's messages, until its output ends; a message that is not one (too long, cut, not a map) raises
    wire.FrameError."""
    while head := stream.read(_LENGTH.size):
        if len(head) < _LENGTH.size:
            raise wire.FrameError("the rules' output was cut inside a message's length")
        (n,) = _LENGTH.unpack(head)
        if n > wire.MAX_FRAME_BYTES:
            raise wire.FrameError(f"a message of {n} bytes from the rules exceeds the {wire.MAX_FRAME_BYTES}-byte limit")
        data = stream.read(n)
        if len(data) < n:
            raise wire.FrameError("the rules' output was cut inside a message")
        yield wire.decode_message(data)


if __name__ == "__main__":
    sys.exit(main())
