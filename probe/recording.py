"""`.accmon` recordings: a versioned header, then the wire frames, each length-prefixed and checksummed.

    header  = MAGIC_HEADER (10 bytes) | version u16 | reserved u32                      16 bytes
    record  = FRAME_MAGIC (4) | type u8 | length u32 | crc32(type ‖ payload) u32 | payload

Type 0 is invalid so that a zero-filled tail (what some filesystems leave after a crash) never parses as a
valid empty record. The reader keeps every complete frame, stops trusting the file at the first bad record,
then scans forward for the next magic so it can say what follows — the offsets of everything it could not read.
"""

from __future__ import annotations

import mmap
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from . import wire

# PNG-style: a high byte catches 7-bit transfers, CR LF and ^Z catch text-mode mangling.
MAGIC_HEADER = b"\x89ACCMON\r\n\x1a"
FORMAT_VERSION = 1
HEADER = struct.Struct("<10sHI")
FRAME_MAGIC = b"\xa5ACM"
RECORD = struct.Struct("<4sBII")
TYPE_FRAME = 1
MAX_RECORD = wire.MAX_FRAME_BYTES
# Resynchronising after damage checks each later magic as a record. A forged one can claim up to MAX_RECORD
# bytes, and a CRC over each made the scan quadratic (issue 16: 9.7 MB took 65 s). Candidates are first checked
# for what every real record has (a msgpack map first, and a magic, the end of the file or a cut-short record
# right after it); the CRC work of one resync is then bounded by RESYNC_CRC_FACTOR times the bytes scanned
# (plus RESYNC_CRC_BASE), so reading any file stays linear in its size. Past the bound, the candidates left are
# passed over (named in the problem), which only a file forged for it reaches.
RESYNC_CRC_FACTOR = 8
RESYNC_CRC_BASE = 16 * 1024 * 1024
_MAP_FIRST = frozenset(range(0x80, 0x90)) | {0xDE, 0xDF}


class RecordingError(Exception):
    """The file is not a readable recording at all (missing, empty, not a recording, unknown version)."""


@dataclass(frozen=True)
class Problem:
    """Something in a recording that could not be read, and where."""

    offset: int
    kind: str  # "truncated" | "corrupt" | "invalid_frame"
    message: str

    def __str__(self) -> str:
        return f"byte {self.offset}: {self.message}"


def encode_header() -> bytes:
    return HEADER.pack(MAGIC_HEADER, FORMAT_VERSION, 0)


def encode_record(payload: bytes, rtype: int = TYPE_FRAME) -> bytes:
    crc = zlib.crc32(payload, zlib.crc32(bytes((rtype,))))
    return RECORD.pack(FRAME_MAGIC, rtype, len(payload), crc) + payload


@dataclass
class RecordingReader:
    """Reads a recording, keeping every complete frame and reporting what it could not read.

    `frames()` yields decoded frames; `payloads()` the raw bytes (for re-publishing). After iterating,
    `problems` lists truncations and corruption with byte offsets, `end_offset` is where the last good
    record ended (a writer may append from there).
    """

    path: str | os.PathLike[str]
    problems: list[Problem] = field(default_factory=list)
    end_offset: int = 0
    frame_count: int = 0
    saw_end: bool = False

    def __post_init__(self) -> None:
        self.path = os.fspath(self.path)
        try:
            size = os.path.getsize(self.path)
        except OSError as exc:
            raise RecordingError(f"{self.path}: cannot open: {exc.strerror}") from None
        if os.path.isdir(self.path):
            raise RecordingError(f"{self.path}: is a directory, not a recording")
        if not os.path.isfile(self.path):  # a FIFO or a device: reading it could wait for ever
            raise RecordingError(f"{self.path}: not a regular file (a pipe or a device?), not a recording")
        if size == 0:
            raise RecordingError(f"{self.path}: empty file, not an accmon recording")
        with open(self.path, "rb") as fh:
            head = fh.read(HEADER.size)
        if len(head) < HEADER.size or not head.startswith(MAGIC_HEADER):
            if MAGIC_HEADER.startswith(head[: len(MAGIC_HEADER)]) and len(head) < HEADER.size:
                raise RecordingError(f"{self.path}: cut short inside its header ({size} bytes): nothing recorded")
            raise RecordingError(f"{self.path}: not an accmon recording (no accmon header at byte 0)")
        _, version, _ = HEADER.unpack(head)
        if version != FORMAT_VERSION:
            raise RecordingError(
                f"{self.path}: recording format version {version}, this accmon reads version {FORMAT_VERSION}"
            )
        self.end_offset = HEADER.size

    @property
    def truncated(self) -> bool:
        """True when part of the file could not be read or the run never wrote its end."""
        return bool(self.problems) or not self.saw_end

    def payloads(self) -> Iterator[tuple[int, bytes]]:
        """(offset, payload) of every record whose checksum holds, in file order."""
        self.problems.clear()
        self.frame_count = 0
        with open(self.path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size <= HEADER.size:
                return
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                yield from self._scan(mm, size)

    def _scan(self, mm: mmap.mmap, size: int) -> Iterator[tuple[int, bytes]]:
        pos = HEADER.size
        while pos < size:
            bad = self._check_record(mm, pos, size)
            if bad is None:
                _, rtype, length, _ = RECORD.unpack_from(mm, pos)
                start = pos + RECORD.size
                yield pos, mm[start : start + length]
                pos = start + length
                self.end_offset = pos
                continue
            kind, message = bad
            if kind == "truncated":
                self.problems.append(Problem(pos, kind, message))
                return
            # Corrupt: report it, then resync on the next magic so frames after the damage are still kept.
            nxt, passed = self._resync(mm, pos, size)
            skipped = (nxt if nxt != -1 else size) - pos
            note = f"; {passed} candidate records past the resync budget not checked" if passed else ""
            self.problems.append(Problem(pos, kind, f"{message}; {skipped} bytes skipped{note}"))
            if nxt == -1:
                return
            pos = nxt

    def _resync(self, mm: mmap.mmap, pos: int, size: int) -> tuple[int, int]:
        """The offset of the next valid record after `pos` (-1: none), and how many candidates went unchecked."""
        spent = passed = 0
        nxt = mm.find(FRAME_MAGIC, pos + 1)
        while nxt != -1:
            # As before: a candidate cut short by the end of the file is passed over, like any invalid one.
            if size - nxt >= RECORD.size:
                _, rtype, length, _ = RECORD.unpack_from(mm, nxt)
                start = nxt + RECORD.size
                end = start + length
                plausible = (rtype == TYPE_FRAME and 0 < length <= MAX_RECORD and end <= size
                             and mm[start] in _MAP_FIRST
                             and (end == size or mm[end:end + 4] == FRAME_MAGIC or size - end < RECORD.size))
                if plausible:
                    if spent + length <= RESYNC_CRC_BASE + RESYNC_CRC_FACTOR * (nxt - pos):
                        spent += length
                        if self._check_record(mm, nxt, size) is None:
                            return nxt, passed
                    else:
                        passed += 1
            nxt = mm.find(FRAME_MAGIC, nxt + 1)
        return -1, passed

    @staticmethod
    def _check_record(mm: mmap.mmap, pos: int, size: int) -> tuple[str, str] | None:
        if size - pos < RECORD.size:
            return "truncated", f"file ends inside a record header ({size - pos} of {RECORD.size} bytes)"
        magic, rtype, length, crc = RECORD.unpack_from(mm, pos)
        if magic != FRAME_MAGIC:
            return "corrupt", "no record magic"
        if rtype != TYPE_FRAME:
            return "corrupt", f"invalid record type {rtype}"
        if length > MAX_RECORD:
            return "corrupt", f"record length {length} exceeds the {MAX_RECORD}-byte limit"
        start = pos + RECORD.size
        if start + length > size:
            return "truncated", f"file ends inside a record ({size - start} of {length} payload bytes)"
        if zlib.crc32(mm[start : start + length], zlib.crc32(bytes((rtype,)))) != crc:
            return "corrupt", "checksum mismatch"
        return None

    def frames(self, *, arrays: bool = False) -> Iterator[dict[str, Any]]:
        """Every valid frame, decoded (`arrays`: see wire.decode). A record whose checksum holds but whose
        frame is invalid is reported."""
        self.saw_end = False
        for offset, payload in self.payloads():
            try:
                frame = wire.decode(payload, arrays=arrays)
            except wire.FrameError as exc:
                self.problems.append(Problem(offset, "invalid_frame", str(exc)))
                continue
            self.frame_count += 1
            if frame["kind"] in ("end", "exit"):
                self.saw_end = True
            yield frame


class RecordingWriter:
    """Appends records to a recording. Owned by one thread (the probe's or the viewer's I/O thread).

    `write()` hands each batch to the OS at once, so a SIGKILL loses nothing written; `sync()` (about once a
    second, and at close) makes it survive power loss too. An OSError (a full disk) is left to the caller,
    which stops recording and says so — training goes on.
    """

    def __init__(self, path: str | os.PathLike[str], *, append: bool = False) -> None:
        self.path = os.fspath(path)
        if append:
            reader = RecordingReader(self.path)
            for _ in reader.payloads():
                pass
            self.fd = os.open(self.path, os.O_WRONLY)
            # Drop a partial tail: it was never a complete frame, and appending after it would hide it as corruption.
            os.ftruncate(self.fd, reader.end_offset)
            os.lseek(self.fd, reader.end_offset, os.SEEK_SET)
        else:
            # 0600: a recording holds the full command line (paths, sometimes tokens) and every metric.
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.fchmod(self.fd, 0o600)  # a file that was there keeps its mode through O_TRUNC
            except OSError:
                pass
            self._write_all(encode_header())
        self.bytes_written = os.lseek(self.fd, 0, os.SEEK_CUR)

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]

    def write(self, payloads: list[bytes]) -> list[int]:
        """Append frames; return the offset of each record's payload (for serving history from the file)."""
        offsets = []
        chunks = []
        pos = self.bytes_written
        for p in payloads:
            rec = encode_record(p)
            offsets.append(pos + RECORD.size)
            pos += len(rec)
            chunks.append(rec)
        self._write_all(b"".join(chunks))
        self.bytes_written = pos
        return offsets

    def sync(self) -> None:
        os.fdatasync(self.fd)

    def close(self) -> None:
        if self.fd < 0:
            return
        try:
            self.sync()
        except OSError:
            pass
        finally:
            os.close(self.fd)
            self.fd = -1


def merge_recordings(inputs: list[str], output: str) -> int:
    """Merge per-rank recordings into one, frames interleaved by time; each rank's frames keep their order.

    Returns the number of frames written. Unreadable tails of the inputs are left out (each input's reader
    says where); the merged file is written beside `output` and renamed into place, so a crash mid-merge
    never leaves a half file under the final name.
    """
    import heapq

    tmp = output + ".merging"
    writer = RecordingWriter(tmp)
    count = 0
    batch: list[bytes] = []
    for _, _, _, payload in heapq.merge(*(_decoded_payloads(p) for p in inputs)):
        batch.append(payload)
        if len(batch) >= 1024:
            writer.write(batch)
            count += len(batch)
            batch = []
    writer.write(batch)
    count += len(batch)
    writer.close()
    os.replace(tmp, output)
    return count


def _decoded_payloads(path: str) -> Iterator[tuple[float, int, int, bytes]]:
    """(time, rank, seq, payload) of each valid frame; times are made non-decreasing per file for the merge."""
    last_t = float("-inf")
    for _, payload in RecordingReader(path).payloads():
        try:
            frame = wire.decode(payload)
        except wire.FrameError:
            continue
        t = frame.get("t")
        last_t = max(last_t, t if isinstance(t, (int, float)) else last_t)
        yield last_t, frame["rank"], frame["seq"], bytes(payload)
