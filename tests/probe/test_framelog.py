"""The probe's frame log: history by sequence number, from the recording file by offset or from memory."""

from __future__ import annotations

from accmon.probe.framelog import FrameLog


def payload(seq: int) -> bytes:
    return f"frame-{seq}".encode() * 3


def test_frames_in_the_recording_are_read_back_by_offset(tmp_path):
    path = tmp_path / "rec"
    log = FrameLog()
    with open(path, "wb") as fh:
        log.attach_file(str(path))
        for seq in range(1, 10_001):
            offset = fh.tell()
            fh.write(b"H" * 7 + payload(seq))  # a record header, then the frame
            log.append(seq, payload(seq), offset=offset + 7)
    assert log.read(1, 3, 1 << 20) == [payload(1), payload(2), payload(3)]
    assert log.read(9_999, 10, 1 << 20) == [payload(9_999), payload(10_000)]
    assert log.read(5_000, 1_000, 1) == [payload(5_000)]  # the byte limit still gives one frame
    log.close()


def test_a_recording_that_stopped_falls_back_to_memory_and_the_budget_forgets_the_oldest(tmp_path):
    path = tmp_path / "rec"
    log = FrameLog(memory_budget=len(payload(1)) * 5000)
    with open(path, "wb") as fh:
        log.attach_file(str(path))
        for seq in range(1, 101):
            offset = fh.tell()
            fh.write(payload(seq))
            log.append(seq, payload(seq), offset=offset)
    for seq in range(101, 20_001):  # the disk filled up: frames are kept in memory
        log.append(seq, payload(seq))
    assert log.first_seq > 101 and log.last_seq == 20_000  # the oldest were forgotten, the newest kept
    got = log.read(1, 3, 1 << 20)
    assert got == [payload(log.first_seq), payload(log.first_seq + 1), payload(log.first_seq + 2)]
    assert log.read(20_000, 5, 1 << 20) == [payload(20_000)]
    log.close()


def test_memory_only_log_keeps_every_frame_under_its_budget():
    log = FrameLog()
    for seq in range(1, 1001):
        log.append(seq, payload(seq))
    assert log.first_seq == 1
    assert log.read(1, 2000, 1 << 30) == [payload(s) for s in range(1, 1001)]
