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

import bisect
import csv
import hashlib
import math
import os
import re
import time
from array import array
from collections.abc import Iterable, Iterator, MutableSequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from accmon.probe import __version__, wire
from accmon.probe.metric_names import TEST_WORDS, TRAIN_WORDS, VAL_WORDS, Mapping, map_tag, words

# As many steps per frame as the probe's I/O thread puts in one (probe/iothread.py MAX_STEPS_PER_FRAME).
STEPS_PER_FRAME = 2048
# A directory is searched this deep for event files: a Lightning tree (lightning_logs/version_N/) or a
# Keras one (logs/fit/<time>/train/) is 3-4 deep; deeper trees are someone's whole home directory.
MAX_DEPTH = 6


class LogError(ValueError):
    """A log that is one of the known formats but cannot be read; the message says what and where."""


@dataclass
class Series:
    """One tag's values: steps, values and wall times (None when the format has no times)."""

    tag: str
    # Lists, or (CSV, whose files can be large) arrays of int64 and float64: 8 bytes a value instead of ~40.
    steps: MutableSequence[int]
    values: MutableSequence[float]
    times: Any
    epoch_indexed: bool = False  # Keras' epoch_* tags: the step is the epoch number


@dataclass
class Table:
    """What a log holds, ready to become frames."""

    fmt: str
    path: str
    name: str
    series: dict[str, Series] = field(default_factory=dict)  # accmon name → series
    mapped: dict[str, str] = field(default_factory=dict)  # tag → accmon name
    ignored: dict[str, str] = field(default_factory=dict)  # tag → why it is not used
    framework: str | None = None
    times: str = "recorded"
    others: list[str] = field(default_factory=list)


def _phase_of_dir(dirname: str) -> str | None:
    ws = set(words(dirname))
    if ws & TEST_WORDS:
        return "test"
    if ws & VAL_WORDS:
        return "val"
    if ws & TRAIN_WORDS:
        return "train"
    return None


def choose(table: Table, candidates: list[tuple[str, Mapping, Series]]) -> None:
    """Keep the best series for each accmon name; note the others as duplicates."""
    best: dict[str, tuple[Mapping, Series]] = {}
    for tag, m, s in sorted(candidates, key=lambda c: (c[1].rank, -len(c[2].steps), c[0])):
        if m.name in best:
            table.ignored[tag] = f"duplicate of {best[m.name][1].tag!r} for {m.name}"
            continue
        best[m.name] = (m, s)
        table.mapped[tag] = m.name
        table.series[m.name] = s


# ---- TensorBoard -------------------------------------------------------------------------------------------
def _is_event_file(name: str) -> bool:
    return "tfevents" in name


def _event_dirs(root: str) -> list[str]:
    """Directories under `root` (itself included) that hold event files, to MAX_DEPTH."""
    found = []
    base = root.rstrip(os.sep).count(os.sep)
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath.count(os.sep) - base >= MAX_DEPTH:
            dirnames[:] = []
        if any(_is_event_file(f) for f in filenames):
            found.append(dirpath)
    return found


def _accumulator(path: str) -> Any:
    try:
        from tensorboard.backend.event_processing import event_accumulator as ea
    except ImportError:
        raise LogError(f"{path} is a TensorBoard log; reading it needs the tensorboard package "
                       "(pip install 'accmon[tensorboard]')") from None
    # A FIFO named like an event file would make the reader wait for ever (issue 16): regular files only.
    names = [os.path.join(path, n) for n in os.listdir(path) if _is_event_file(n)] if os.path.isdir(path) else [path]
    for name in names:
        if not os.path.isfile(name):
            raise LogError(f"{name}: not a regular file (a pipe or a device?): not read")
    # 0: keep every value (the default keeps a reservoir sample of 10,000 per tag, losing the detail rules need)
    acc = ea.EventAccumulator(path, size_guidance={ea.SCALARS: 0, ea.TENSORS: 0})
    try:
        acc.Reload()
    except Exception as exc:  # the reader raises several types for a file that is not what its name says
        raise LogError(f"{path}: not a readable TensorBoard event file ({type(exc).__name__}: {exc})") from None
    return acc


def _scalar_series(acc: Any, tag_prefix: str = "") -> dict[str, Series]:
    """Every scalar tag: legacy `simple_value` summaries (torch's SummaryWriter, Keras 2) and TF2 scalar
    tensors (Keras 3 with TensorFlow's summary writer writes these)."""
    out: dict[str, Series] = {}
    tags = acc.Tags()
    for tag in tags.get("scalars", []):
        events = acc.Scalars(tag)
        out[tag] = Series(tag, [int(e.step) for e in events], [float(e.value) for e in events],
                          [float(e.wall_time) for e in events])
    if tags.get("tensors"):
        from tensorboard.util import tensor_util

        for tag in tags["tensors"]:
            if tag in out:
                continue
            steps: list[int] = []
            values: list[float] = []
            times: list[float | None] = []
            for e in acc.Tensors(tag):
                # The shape first: a 120-byte event can declare a [20000, 10000] tensor that make_ndarray
                # would fill in (833 MB); only scalars are read.
                if math.prod(d.size for d in e.tensor_proto.tensor_shape.dim) != 1:
                    break
                try:
                    arr = tensor_util.make_ndarray(e.tensor_proto)
                except Exception:
                    break
                if arr.size != 1 or arr.dtype.kind not in "fiub":
                    break  # not a scalar: an image, text or histogram tensor
                steps.append(int(e.step))
                values.append(float(arr.reshape(())))
                times.append(float(e.wall_time))
            else:
                if steps:
                    out[tag] = Series(tag, steps, values, times)
    return out


def _group_runs(root: str, dirs: list[str]) -> dict[str, list[tuple[str, str | None]]]:
    """Run directory → [(event directory, phase it adds)]. Phase sub-directories belong to their parent."""
    groups: dict[str, list[tuple[str, str | None]]] = {}
    for d in dirs:
        parent, leaf = os.path.split(d.rstrip(os.sep))
        phase = _phase_of_dir(leaf) if os.path.abspath(d) != os.path.abspath(root) else None
        if phase is not None:
            groups.setdefault(parent, []).append((d, phase))
        else:
            groups.setdefault(d, []).append((d, None))
    return groups


def _add_scalars_split(tag: str, leaf: str) -> str | None:
    """torch's add_scalars('Loss', {'train': ..}) writes tag 'Loss' into directory 'Loss_train'."""
    if leaf.startswith(tag.replace("/", "_") + "_"):
        return tag + "/" + leaf[len(tag.replace("/", "_")) + 1:]
    return None


def _load_tensorboard(path: str) -> Table:
    groups: dict[str, list[tuple[str, str | None]]]
    if os.path.isfile(path):
        groups = {os.path.dirname(path) or ".": [(path, None)]}
    else:
        dirs = _event_dirs(path)
        groups = _group_runs(path, dirs)
    # Several runs under one directory: show the newest (the one being looked at, usually); name the others.
    loaded: dict[str, list[tuple[str, Series, str | None]]] = {}
    last_time: dict[str, float] = {}
    for run_dir, members in groups.items():
        rows = []
        for event_path, phase in members:
            acc = _accumulator(event_path)
            leaf = os.path.basename(event_path.rstrip(os.sep))
            for tag, s in _scalar_series(acc).items():
                split = _add_scalars_split(tag, leaf) if event_path != path and os.path.isdir(event_path) else None
                if split is not None:
                    s.tag = split
                elif phase is not None:
                    s.tag = f"{leaf}/{tag}"
                rows.append((s.tag, s, phase))
        if rows:
            loaded[run_dir] = rows
            last_time[run_dir] = max((t for _, s, _ in rows for t in s.times if t is not None), default=0.0)
    if not loaded:
        raise LogError(f"{path}: TensorBoard event files with no scalar values")
    chosen = max(loaded, key=lambda d: (last_time[d], d))
    table = Table("tensorboard", os.path.abspath(path), _run_name(path, chosen))
    table.others = sorted(os.path.relpath(d, path) if os.path.isdir(path) else d for d in loaded if d != chosen)
    candidates = []
    keras = False
    for tag, s, phase in loaded[chosen]:
        leaf_tag = tag.rsplit("/", 1)[-1]
        # Keras' TensorBoard callback: epoch_* per epoch (step = epoch), batch_* per batch (step = batch).
        if leaf_tag.startswith("epoch_") and phase in ("train", "val"):
            s.epoch_indexed = True
            keras = True
        m = map_tag(tag, phase if phase != "test" else None)
        if phase == "test":
            table.ignored[tag] = "a test-set metric (accmon's rules read training and validation metrics)"
        elif isinstance(m, Mapping):
            candidates.append((tag, m, s))
        else:
            table.ignored[tag] = m
    if keras:
        table.framework = "keras"
    choose(table, candidates)
    _align_epoch_series(table)
    return table


def _run_name(path: str, run_dir: str) -> str:
    base = os.path.basename(os.path.abspath(run_dir))
    if re.fullmatch(r"version_\d+", base):  # Lightning: lightning_logs/version_3 → lightning_logs-version_3
        base = os.path.basename(os.path.dirname(os.path.abspath(run_dir))) + "-" + base
    return base or os.path.basename(os.path.abspath(path))


def _align_epoch_series(table: Table) -> None:
    """Put Keras' per-epoch values on the per-batch step axis (by wall time), or number steps by epoch."""
    per_epoch = [s for s in table.series.values() if s.epoch_indexed]
    per_step = [s for s in table.series.values() if not s.epoch_indexed]
    if not per_epoch:
        return
    if not per_step:
        if "epoch" not in table.series:
            first = per_epoch[0]
            table.series["epoch"] = Series("(step)", list(first.steps), [float(e) for e in first.steps], list(first.times))
        return
    # Each per-epoch value goes to the last batch step logged before it was written.
    axis = sorted({(t, st) for s in per_step for st, t in zip(s.steps, s.times) if t is not None})
    times = [t for t, _ in axis]
    for s in per_epoch:
        epochs, s.steps = s.steps, [_step_before(axis, times, t, ep) for ep, t in zip(s.steps, s.times)]
        s.epoch_indexed = False
        if "epoch" not in table.series:
            table.series["epoch"] = Series("(epoch)", list(s.steps), [float(e) for e in epochs], list(s.times))


def _step_before(axis: list[tuple[float, int]], times: list[float], t: float | None, fallback: int) -> int:
    if not axis or t is None:
        return fallback
    i = bisect.bisect_right(times, t) - 1
    return axis[max(i, 0)][1]


# ---- CSV ---------------------------------------------------------------------------------------------------
def _number(text: str) -> float | None:
    text = text.strip()
    if not text:
        return None
    try:
        return float(text)  # also 'nan', 'inf', '-inf' as Python and pandas write them
    except ValueError:
        return None


# Steps beyond this cannot be a training step (and int64 holds them on the wire): such a row is skipped.
MAX_STEP = 2**53
# A CSV log's columns that accmon reads, at most (a viewer keeps at most 20,000 series of a rank); columns it
# does not read are never stored, and named in info["ignored"] up to MAX_IGNORED_NAMED, then counted in one
# entry. A hostile 3.9 MB header of 200,000 columns took 135 MB and 6.6 s to load (issue 16 item 9).
MAX_CSV_COLUMNS = 10_000
MAX_IGNORED_NAMED = 1_000


def _load_csv(path: str) -> Table | None:
    if not os.path.isfile(path):
        raise LogError(f"{path}: not a regular file (a pipe or a device?): not read")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            try:
                header = next(reader, None)
                if not header:
                    return None
                header = [h.strip() for h in header]
                if "step" in header:
                    fmt, step_col, framework = "lightning-csv", header.index("step"), "lightning"
                elif header[0] == "epoch":
                    fmt, step_col, framework = "keras-csv", 0, "keras"
                else:
                    return None
                mtime = os.path.getmtime(path)
                # Only the columns accmon reads are stored: what map_tag leaves out is only ever named.
                mappings: dict[str, Mapping | str] = {}
                read: list[int] = []
                for i, h in enumerate(header):
                    if i == step_col:
                        continue
                    if h not in mappings:
                        mappings[h] = map_tag(h)
                    if isinstance(mappings[h], Mapping):
                        read.append(i)
                left_out, read = read[MAX_CSV_COLUMNS:], read[:MAX_CSV_COLUMNS]
                columns: dict[str, Series] = {}
                for i in read:
                    columns.setdefault(header[i], Series(header[i], array("q"), array("d"), array("d")))
                kept = [(i, columns[header[i]]) for i in read]
                # Row by row, never the whole file in lists of strings (a 59 MB file held 1.9 GB that way).
                for row in reader:
                    _add_csv_row(row, step_col, kept, mtime)
            except csv.Error as exc:  # a field over the csv module's limit (128 KiB), a NUL byte...
                raise LogError(f"{path}: line {reader.line_num}: not a readable CSV log ({exc})") from None
    except UnicodeDecodeError:
        return None
    except OSError as exc:
        raise LogError(f"{path}: {exc.strerror or exc}") from None
    name = os.path.splitext(os.path.basename(path))[0]
    if name == "metrics":  # Lightning: lightning_logs/version_3/metrics.csv
        name = _run_name(path, os.path.dirname(os.path.abspath(path)))
    table = Table(fmt, os.path.abspath(path), name, framework=framework, times="file mtime")
    unread = [h for h, m in mappings.items() if not isinstance(m, Mapping)]
    for h in unread[:MAX_IGNORED_NAMED]:
        table.ignored[h] = str(mappings[h])
    if len(unread) > MAX_IGNORED_NAMED:
        table.ignored[f"{len(unread) - MAX_IGNORED_NAMED} more columns"] = "not metrics accmon reads (not all named)"
    if left_out:
        table.ignored[f"{header[left_out[0]]} and {len(left_out) - 1} columns after it"] = \
            f"over the {MAX_CSV_COLUMNS:,} columns read from a CSV log"
    candidates = []
    for h, s in columns.items():
        m = mappings[h]
        if not s.steps:
            table.ignored[h] = "no numeric values"
        elif isinstance(m, Mapping):
            candidates.append((h, m, s))
    choose(table, candidates)
    if fmt == "keras-csv" and "epoch" not in table.series:
        steps = _union_steps(columns.values())
        table.series["epoch"] = Series("epoch", _array("q", steps), _array("d", steps.astype(np.float64)),
                                       _array("d", np.full(len(steps), mtime)))
        table.mapped["epoch"] = "epoch"
    return table


def _add_csv_row(row: list[str], step_col: int, kept: list[tuple[int, Series]], mtime: float) -> None:
    """One row's values into the series of the columns read (`kept`: column index, its series)."""
    if not row:
        return
    step = _number(row[step_col]) if step_col < len(row) else None
    if step is None or not math.isfinite(step) or not 0 <= step < MAX_STEP:
        return  # a row with no step (or none a run can have) cannot be placed
    for i, s in kept:
        if i >= len(row):
            break  # columns are read in order
        v = _number(row[i])
        if v is None:
            continue
        s.steps.append(int(step))
        s.values.append(v)
        s.times.append(mtime)


def _newest_csv(root: str) -> tuple[str | None, list[str]]:
    found = []
    base = root.rstrip(os.sep).count(os.sep)
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath.count(os.sep) - base >= MAX_DEPTH:
            dirnames[:] = []
        found += [os.path.join(dirpath, f) for f in filenames if f == "metrics.csv"]
    if not found:
        return None, []
    found.sort(key=lambda p: (os.path.getmtime(p), p))
    return found[-1], [os.path.relpath(p, root) for p in found[:-1]]


# ---- frames ------------------------------------------------------------------------------------------------
def _epoch_numbers(s: Series) -> None:
    """Hugging Face logs the epoch as progress (0.33, 1.0, 1.5): make it the 0-based epoch in progress."""
    if any(v != int(v) for v in s.values if math.isfinite(v)):
        s.values = [float(max(math.ceil(v) - 1, 0)) if math.isfinite(v) else v for v in s.values]


def frames(table: Table) -> Iterator[dict[str, Any]]:
    """The table as wire frames: meta, facts, steps (STEPS_PER_FRAME at most each), end."""
    if "epoch" in table.series:
        _epoch_numbers(table.series["epoch"])
    # Columnar, in numpy: a dict per step held ~2 GB for a 59 MB CSV (issue 16).
    names = sorted(table.series)
    arrays = {}
    for name in names:
        s = table.series[name]
        st = np.asarray(s.steps, dtype=np.int64)
        keep = st >= 0
        ts = (np.asarray(s.times, dtype=np.float64) if isinstance(s.times, array)
              else np.array([np.nan if t is None else t for t in s.times], dtype=np.float64))
        arrays[name] = (st[keep], np.asarray(s.values, dtype=np.float64)[keep], ts[keep])
    parts = [a[0] for a in arrays.values()]
    all_steps = _sorted_unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)
    n = len(all_steps)
    columns: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    step_time = np.full(n, -np.inf)
    for name, (st, vals, ts) in arrays.items():
        idx = np.searchsorted(all_steps, st)
        col, has = np.full(n, np.nan), np.zeros(n, dtype=bool)
        col[idx] = vals  # a tag logged twice at one step: the later value stands
        has[idx] = True
        columns[name] = (col, has)
        np.fmax.at(step_time, idx, ts)
    fallback = os.path.getmtime(table.path) if os.path.exists(table.path) else time.time()
    # Kept in numpy and made lists one frame at a time: a list of every step and one of every time cost ~70 bytes
    # a step more (issue 16 item 9).
    times = np.where(np.isfinite(step_time), step_time, fallback)
    run_id = "import-" + hashlib.sha1(table.path.encode()).hexdigest()[:8]
    started = float(times.min()) if n else fallback
    seq = 0

    def frame(kind: str, step: int, t: float, **body: Any) -> dict[str, Any]:
        nonlocal seq
        seq += 1
        f = wire.envelope(kind, run_id, 0, seq, step, **body)
        f["t"] = t
        return f

    yield frame("meta", -1, started, name=table.name, host=None, pid=None, cmd=[], started=started,
                world_size=1, probe=__version__, source={"format": table.fmt, "path": table.path})
    facts: dict[str, Any] = {"source": {"format": table.fmt, "path": table.path, "tags": dict(table.mapped),
                                        "times": table.times}}
    if table.framework:
        facts["framework"] = table.framework
    yield frame("facts", -1, started, facts=facts)
    for i in range(0, n, STEPS_PER_FRAME):
        chunk: list[int] = all_steps[i:i + STEPS_PER_FRAME].tolist()
        chunk_times: list[float] = times[i:i + len(chunk)].tolist()
        cols: dict[str, list] = {}
        for name in names:
            col, has = columns[name]
            present = has[i:i + len(chunk)]
            if not present.any():
                continue
            values: list = col[i:i + len(chunk)].tolist()
            for k in np.flatnonzero(~present).tolist():
                values[k] = None
            if name == "epoch":
                values = [int(v) if v is not None and math.isfinite(v) else v for v in values]
            cols[name] = values
        yield frame("steps", chunk[-1], chunk_times[-1], steps=chunk, times=chunk_times, cols=cols)
    last = int(all_steps[-1]) if n else -1
    yield frame("end", last, float(times[-1]) if n else started, status="finished", error=None, total_steps=n)


def info(table: Table) -> dict[str, Any]:
    """What `load_log` found, for the command to show: format, run name, tags used and not, other runs."""
    return {"format": table.fmt, "path": table.path, "name": table.name, "framework": table.framework,
            "mapped": dict(table.mapped), "ignored": dict(table.ignored), "others": list(table.others),
            "times": table.times, "steps": _distinct_steps(table)}


def _distinct_steps(table: Table) -> int:
    """How many steps the table holds."""
    return int(np.count_nonzero(_union_steps(table.series.values()) >= 0))


def _union_steps(series: Iterable[Series]) -> np.ndarray:
    """Every step of the series, once each, in order. In numpy (a set of every step cost ~60 bytes a step; issue
    16 item 9), one series at a time (a copy of all of them at once cost as much as the set)."""
    seen = np.zeros(0, dtype=np.int64)
    for s in series:
        st = np.frombuffer(s.steps, dtype=np.int64) if isinstance(s.steps, array) else np.asarray(s.steps, dtype=np.int64)
        seen = _sorted_unique(np.concatenate((seen, _sorted_unique(st))))
    return seen


def _sorted_unique(a: np.ndarray) -> np.ndarray:
    """np.unique of int64, by a stable sort (two sorted runs merge in linear time) and never a copy when already
    sorted. numpy's np.unique hashes instead, which took 16 s for a log's 4 x 1.4 million steps."""
    if len(a) > 1 and not (a[1:] >= a[:-1]).all():
        a = np.sort(a, kind="stable")
    if len(a) < 2:
        return a
    return a[np.concatenate(([True], a[1:] != a[:-1]))]


def _array(typecode: str, values: np.ndarray) -> array:
    out = array(typecode)
    out.frombytes(values.tobytes())
    return out


def detect(path: str) -> str | None:
    """'tensorboard', 'csv' or None: what `path` looks like, without reading it."""
    if os.path.isfile(path):
        if _is_event_file(os.path.basename(path)):
            return "tensorboard"
        if path.lower().endswith(".csv"):
            return "csv"
        return None
    if os.path.isdir(path):
        if _event_dirs(path):
            return "tensorboard"
        if _newest_csv(path)[0] is not None:
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
        table = _load_tensorboard(path)
    else:
        csv_path, others = (path, []) if os.path.isfile(path) else _newest_csv(path)
        assert csv_path is not None
        csv_table = _load_csv(csv_path)
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
    from accmon.probe.recording import RecordingWriter

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
