"""Logs that were not written by accmon — TensorBoard event files, Keras and Lightning CSVLogger files — as
accmon frames, so that `accmon check` and `accmon replay` run on them unchanged.

`load_log(path)` returns `(info, frames)`: what was found and how it was read, and an iterator of wire frames
(`meta`, `facts`, `steps`…, `end`). The files are read with the maintained readers of their formats:
TensorBoard's own `event_processing` (it knows every record type, torn writes and restarted runs) and the
standard library's `csv`. Nothing here parses a binary format by hand.

Tags become accmon metric names by their words (accmon.probe.metric_names has the table): `train/loss`,
`Loss/train`, `train_loss_step`, Keras' `epoch_loss` → `loss`; `val_acc`, `eval/accuracy` → `val_acc`;
`lr-Adam`, `train/learning_rate` → `lr`; `epoch`. A tag with any other word (`kl_loss`, `top5_acc`,
`eval/runtime`, a `test` tag) is listed in `info["ignored"]` with the reason. Sub-directories named after a
phase (Keras' `train/` and `validation/`, torch's `add_scalars` directories `Loss_train/`) add their phase to
the tags inside. When two tags give the same name, the finer one wins for training metrics (per step rather
than per epoch) and the per-epoch one for validation; the other is listed as a duplicate.

Steps: TensorBoard's step of each value. Keras writes `epoch_*` tags per epoch (their step is the epoch
number); next to per-batch tags they are placed, by wall time, at the last batch logged before them. A
Lightning CSV has a `step` column; a Keras CSV only `epoch`, which then numbers the steps. CSV files carry no
time: every row gets the file's modification time (`info["times"]` says which).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from accmon.probe import wire
from accmon.probe.metric_names import Mapping, map_tag
from accmon.probe.recording import RecordingWriter

from .csvlog import load_csv, newest_csv
from .frames import STEPS_PER_FRAME, frames, info
from .table import LogError, Series, Table
from .tensorboard import event_dirs, is_event_file, load_tensorboard

__all__ = ["STEPS_PER_FRAME", "LogError", "Mapping", "Series", "Table", "detect", "load_log", "map_tag", "read_all",
           "to_recording"]


def detect(path: str) -> str | None:
    """'tensorboard', 'csv' or None: what `path` looks like, without reading it."""
    if os.path.isfile(path):
        if is_event_file(os.path.basename(path)):
            return "tensorboard"
        if path.lower().endswith(".csv"):
            return "csv"
        return None
    if os.path.isdir(path):
        if event_dirs(path):
            return "tensorboard"
        if newest_csv(path)[0] is not None:
            return "csv"
    return None


def load_log(path: str) -> tuple[dict[str, Any], Iterator[dict[str, Any]]] | None:
    """A TensorBoard log (event file or directory) or a Keras/Lightning CSVLogger file as accmon frames.

    None when `path` is none of these (an accmon recording, say). Raises LogError, with a message that
    says what and where, when it is one of them but cannot be read.
    """
    kind = detect(path)
    if kind is None:
        return None
    if kind == "tensorboard":
        table = load_tensorboard(path)
    else:
        csv_path, others = (path, []) if os.path.isfile(path) else newest_csv(path)
        assert csv_path is not None
        csv_table = load_csv(csv_path)
        if csv_table is None:
            return None
        table = csv_table
        table.others = others
    if not table.series:
        found = sorted(table.ignored)
        raise LogError(f"{path}: no metric accmon reads (loss, accuracy, learning rate...); found "
                       + (", ".join(found[:20]) + (f" and {len(found) - 20} more" if len(found) > 20 else "")
                          or "no scalars"))
    return info(table), frames(table)


def to_recording(path: str, out: str) -> dict[str, Any] | None:
    """Write a log's frames as an accmon recording at `out` (what `accmon replay` plays): its `info`, or None
    when `path` is not a log `load_log` reads."""
    got = load_log(path)
    if got is None:
        return None
    found, frames = got
    writer = RecordingWriter(out)
    try:
        batch: list[bytes] = []
        for frame in frames:
            batch.append(wire.encode(frame))
            if len(batch) >= 64:
                writer.write(batch)
                batch = []
        if batch:
            writer.write(batch)
    except Exception as exc:  # a value the wire cannot carry, a full disk: no half-written file left behind
        writer.close()
        os.unlink(out)
        if isinstance(exc, LogError):
            raise
        raise LogError(f"{path}: cannot be converted ({exc.__class__.__name__}: {str(exc)[:300]})") from None
    writer.close()
    return found


def read_all(path: str) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """`load_log` with the frames in a list (tests and small tools)."""
    got = load_log(path)
    if got is None:
        return None
    return got[0], list(got[1])
