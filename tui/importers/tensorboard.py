"""TensorBoard event files (a file or a tree of runs) read with TensorBoard's own `event_processing`."""

from __future__ import annotations

import bisect
import math
import os
from typing import Any

from accmon.probe.metric_names import TEST_WORDS, TRAIN_WORDS, VAL_WORDS, Mapping, map_tag, words

from .table import MAX_DEPTH, LogError, Series, Table, choose, run_name


def phase_of_dir(dirname: str) -> str | None:
    ws = set(words(dirname))
    if ws & TEST_WORDS:
        return "test"
    if ws & VAL_WORDS:
        return "val"
    if ws & TRAIN_WORDS:
        return "train"
    return None


def is_event_file(name: str) -> bool:
    return "tfevents" in name


def event_dirs(root: str) -> list[str]:
    """Directories under `root` (itself included) that hold event files, to MAX_DEPTH."""
    found = []
    base = root.rstrip(os.sep).count(os.sep)
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath.count(os.sep) - base >= MAX_DEPTH:
            dirnames[:] = []
        if any(is_event_file(f) for f in filenames):
            found.append(dirpath)
    return found


def _accumulator(path: str) -> Any:
    try:
        from tensorboard.backend.event_processing import event_accumulator as ea
    except ImportError:
        raise LogError(f"{path} is a TensorBoard log; reading it needs the tensorboard package "
                       "(pip install 'accmon[tensorboard]')") from None
    # A FIFO named like an event file would make the reader wait for ever (issue 16): regular files only.
    names = [os.path.join(path, n) for n in os.listdir(path) if is_event_file(n)] if os.path.isdir(path) else [path]
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
        phase = phase_of_dir(leaf) if os.path.abspath(d) != os.path.abspath(root) else None
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


def load_tensorboard(path: str) -> Table:
    groups: dict[str, list[tuple[str, str | None]]]
    if os.path.isfile(path):
        groups = {os.path.dirname(path) or ".": [(path, None)]}
    else:
        dirs = event_dirs(path)
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
    table = Table("tensorboard", os.path.abspath(path), run_name(path, chosen))
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
