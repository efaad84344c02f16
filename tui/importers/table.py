"""What a foreign log holds, whatever its format: its series by accmon name, what was left out and why."""

from __future__ import annotations

import os
import re
from array import array
from collections.abc import Iterable, MutableSequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from accmon.probe.metric_names import Mapping

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


def run_name(path: str, run_dir: str) -> str:
    base = os.path.basename(os.path.abspath(run_dir))
    if re.fullmatch(r"version_\d+", base):  # Lightning: lightning_logs/version_3 → lightning_logs-version_3
        base = os.path.basename(os.path.dirname(os.path.abspath(run_dir))) + "-" + base
    return base or os.path.basename(os.path.abspath(path))


def union_steps(series: Iterable[Series]) -> np.ndarray:
    """Every step of the series, once each, in order. In numpy (a set of every step cost ~60 bytes a step; issue
    16 item 9), one series at a time (a copy of all of them at once cost as much as the set)."""
    seen = np.zeros(0, dtype=np.int64)
    for s in series:
        st = np.frombuffer(s.steps, dtype=np.int64) if isinstance(s.steps, array) else np.asarray(s.steps, dtype=np.int64)
        seen = sorted_unique(np.concatenate((seen, sorted_unique(st))))
    return seen


def sorted_unique(a: np.ndarray) -> np.ndarray:
    """np.unique of int64, by a stable sort (two sorted runs merge in linear time) and never a copy when already
    sorted. numpy's np.unique hashes instead, which took 16 s for a log's 4 x 1.4 million steps."""
    if len(a) > 1 and not (a[1:] >= a[:-1]).all():
        a = np.sort(a, kind="stable")
    if len(a) < 2:
        return a
    return a[np.concatenate(([True], a[1:] != a[:-1]))]


def to_array(typecode: str, values: np.ndarray) -> array:
    out = array(typecode)
    out.frombytes(values.tobytes())
    return out
