"""The probe's log of every frame it sent, by sequence number: what late joiners and gap repairs read.

With a recording, the log keeps only offsets and reads frames back from the file, so a run of days costs
no memory. Without one, it keeps the bytes up to a budget and then forgets the oldest; a viewer asking for
those is told where history now starts.
"""

from __future__ import annotations

import os
from array import array

DEFAULT_MEMORY_BUDGET = 256 * 1024 * 1024


class FrameLog:
    def __init__(self, memory_budget: int = DEFAULT_MEMORY_BUDGET) -> None:
        self.memory_budget = memory_budget
        self.first_seq = 1  # oldest seq still available
        self.last_seq = 0
        # Each entry is the payload itself, or None for a frame in the recording file, found at the same index
        # in the two arrays beside it: 8 + 12 bytes a frame rather than a tuple of two ints (~120 bytes), so a
        # run of millions of frames keeps its history index in tens of MB.
        # A list with a moving head rather than a deque: history reads index into the middle, which is O(n) on a deque.
        self._entries: list[bytes | None] = []
        self._offsets = array("q")
        self._lengths = array("i")
        self._head = 0
        self._mem_bytes = 0
        self._file_fd = -1

    def attach_file(self, path: str) -> None:
        """Read frames logged with offsets from this file (the run's recording)."""
        self._file_fd = os.open(path, os.O_RDONLY)

    def append(self, seq: int, payload: bytes, offset: int | None = None) -> None:
        assert seq == self.last_seq + 1, "seq must be contiguous"
        self.last_seq = seq
        if offset is not None and self._file_fd >= 0:
            self._entries.append(None)
            self._offsets.append(offset)
            self._lengths.append(len(payload))
            return
        self._entries.append(payload)
        self._offsets.append(-1)
        self._lengths.append(0)
        self._mem_bytes += len(payload)
        while self._mem_bytes > self.memory_budget and len(self._entries) - self._head > 1:
            old = self._entries[self._head]
            self._entries[self._head] = b""
            self._head += 1
            self.first_seq += 1
            if isinstance(old, bytes):
                self._mem_bytes -= len(old)
        if self._head > 4096 and self._head * 2 > len(self._entries):
            del self._entries[: self._head]
            del self._offsets[: self._head]
            del self._lengths[: self._head]
            self._head = 0

    def read(self, since: int, max_frames: int, max_bytes: int) -> list[bytes]:
        """Frames from seq `max(since, first_seq)` on, up to the limits (always at least one if any)."""
        start = max(since, self.first_seq)
        out: list[bytes] = []
        size = 0
        i = self._head + start - self.first_seq
        n = len(self._entries)
        while i < n and len(out) < max_frames and (size < max_bytes or not out):
            entry = self._entries[i]
            data = entry if entry is not None else os.pread(self._file_fd, self._lengths[i], self._offsets[i])
            out.append(data)
            size += len(data)
            i += 1
        return out

    def close(self) -> None:
        if self._file_fd >= 0:
            os.close(self._file_fd)
            self._file_fd = -1
