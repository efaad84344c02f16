"""Loading a baseline: a recording (or a TensorBoard / CSVLogger log) read into a read-only store by replay's
reader and the store's own ingestion; `tee` fills a store as frames pass (check diagnoses and loads at once)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from accmon.probe.recording import RecordingError, RecordingReader

from ..importers import LogError, load_log
from ..store import RankData, RunStore
from .outcome import Outcome, outcome

INGEST_SLICE = 64  # frames per store.ingest call while loading


class BaselineError(Exception):
    """The baseline cannot be used: one line that says what and where."""


@dataclass
class Baseline:
    """A recording loaded for comparison: its store (read-only once loaded) and what it lacks."""

    path: str
    store: RunStore
    problems: list[str] = field(default_factory=list)  # damage the reader found (the file was cut short, ...)
    _outcome: dict[tuple[str, str], Outcome] = field(default_factory=dict, repr=False)

    @property
    def data(self) -> RankData:
        return self.store.ranks[min(self.store.ranks)]

    @property
    def truncated(self) -> str | None:
        """Why the baseline is not a whole run (said in the header), or None."""
        if self.problems:
            return f"truncated ({self.problems[0]})"
        status = self.store.status()
        if status is None:
            return "truncated (no end frame)"
        if status == "truncated":
            return "truncated (steps lost)"
        return None

    def outcome(self, loss: str, acc: str) -> Outcome:
        """The baseline's outcome for these metric names, computed once (the baseline does not change)."""
        key = (loss, acc)
        if key not in self._outcome:
            self._outcome[key] = outcome(self.data, loss=loss, acc=acc, alerts=self.store.alerts.by_key.values())
        return self._outcome[key]


def load_baseline(path: str) -> Baseline:
    """Read a recording (or a TensorBoard / CSVLogger log) into a store, with replay's reader and the store's own
    ingestion. Raises BaselineError, one line, when it cannot be read or holds no training step; a file cut
    short is used for what it has (`problems`)."""
    reader: RecordingReader | None = None
    try:
        try:
            reader = RecordingReader(path)
            frames: Iterable[dict[str, Any]] = reader.frames()
        except RecordingError as not_a_recording:
            log = load_log(path)
            if log is None:
                raise BaselineError(f"baseline {not_a_recording}") from None
            frames = log[1]
        store = RunStore()
        for _ in tee(frames, store):
            pass
    except BaselineError:
        raise
    except (RecordingError, LogError) as exc:
        raise BaselineError(f"baseline {exc}") from None
    except OSError as exc:
        raise BaselineError(f"baseline {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # whatever a hostile file finds: one line, never a traceback
        raise BaselineError(f"baseline {path}: cannot be read ({exc.__class__.__name__}: {str(exc)[:200]})") from None
    problems = [f"byte {p.offset}: {p.message}" for p in reader.problems] if reader is not None else []
    return from_store(path, store, problems)


def from_store(path: str, store: RunStore, problems: list[str]) -> Baseline:
    """A baseline from a store already filled (check fills one while it diagnoses the file)."""
    if not any(d.axis.n for d in store.ranks.values()):
        why = f" ({problems[0]})" if problems else ""
        raise BaselineError(f"baseline {path}: no training step recorded{why}")
    # A rank with no step (a meta frame only) is no baseline: keep the ranks that have steps.
    for r in [r for r, d in store.ranks.items() if not d.axis.n]:
        del store.ranks[r]
    return Baseline(path, store, problems)


def tee(frames: Iterable[dict[str, Any]], store: RunStore) -> Iterable[dict[str, Any]]:
    """The frames, unchanged, also ingested into `store` (a slice at a time) as they pass."""
    batch: list[dict[str, Any]] = []
    for f in frames:
        batch.append(f)
        if len(batch) >= INGEST_SLICE:
            store.ingest(batch)
            batch = []
        yield f
    store.ingest(batch)
