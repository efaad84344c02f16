"""The probe's log of every frame it sent, by sequence number: what late joiners and gap repairs read.

With a recording, the log keeps only offsets and reads frames back from the file, so a run of days costs
no memory. Without one, it keeps the bytes up to a budget and then forgets the oldest; a viewer asking for
those is told where history now starts.
"""

from __future__ import annotations

import os

DEFAULT_MEMORY_BUDGET = 256 * 1024 * 1024


class FrameLog:
    def __init__(self, memory_budget: int = DEFAULT_MEMORY_BUDGET) -> None:
        self.memory_budget = memory_budget
        self.first_seq = 1  # oldest seq still available
        self.last_seq = 0
        # Each entry is the payload itself, or (offset, length) in the recording file.
        # A list with a moving head rather than a deque: history reads index into the middle, which is O(n) on a deque.
        self._entries: list[bytes | tuple[int, int]] = []
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
            self._entries.append((offset, len(payload)))
            return
        self._entries.append(payload)
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
            data = entry if isinstance(entry, bytes) else os.pread(self._file_fd, entry[1], entry[0])
            out.append(data)
            size += len(data)
            i += 1
        return out

    def close(self) -> None:
        if self._file_fd >= 0:
            os.close(self._file_fd)
            self._file_fd = -1
