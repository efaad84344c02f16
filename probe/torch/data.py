"""Epochs from DataLoader exhaustion, and what a loader says about the data (shuffled, batch size).

The one patch: `_BaseDataLoaderIter.__next__` (every DataLoader iterator, single- or multi-process) tells the
probe which loader each batch came from, how long the loop waited for it, and when one runs dry. A loader is a *training* loader once an
optimizer step has happened while its batches were being consumed; only those count epochs, so a validation
loader running out does not.
"""

from __future__ import annotations

from collections.abc import Callable
from time import perf_counter
from typing import Any, Protocol

from torch.utils.data import RandomSampler, SequentialSampler
from torch.utils.data import dataloader as _dl

_Iter = _dl._BaseDataLoaderIter


class LoaderListener(Protocol):
    def on_batch(self, it: Any, seconds: float) -> None: ...

    def on_exhausted(self, it: Any) -> None: ...


_listener: LoaderListener | None = None
_original_next: Callable[[Any], Any] | None = None


def _next(self: Any) -> Any:
    listener = _listener
    t0 = perf_counter()
    try:
        batch = _original_next(self)  # type: ignore[misc]
    except StopIteration:
        if listener is not None:
            listener.on_exhausted(self)
        raise
    if listener is not None:
        listener.on_batch(self, perf_counter() - t0)  # the training loop's wait for this batch, host clock
    return batch


def patch(listener: LoaderListener) -> None:
    """Route DataLoader iteration events to `listener` (idempotent; the last listener wins)."""
    global _listener, _original_next
    _listener = listener
    if _original_next is None:
        _original_next = _Iter.__next__
        _Iter.__next__ = _next  # type: ignore[method-assign]


def unpatch() -> None:
    global _listener, _original_next
    _listener = None
    if _original_next is not None:
        _Iter.__next__ = _original_next  # type: ignore[method-assign,assignment]
        _original_next = None


def loader_key(it: Any) -> int:
    """Identifies the loader an iterator belongs to across epochs (each epoch makes a new iterator)."""
    return id(getattr(it, "_dataset", it))


def source_signature(it: Any) -> tuple[str, int | None]:
    """What a training loader draws from, as far as it can be told without reading data: the data set's type and
    size. A data set rebuilt each epoch over the same data keeps it; a new data set for a new phase rarely does."""
    ds = getattr(it, "_dataset", None)
    try:
        n = len(ds) if ds is not None else None
    except Exception:
        n = None
    return (type(ds).__name__, n)


def describe(it: Any) -> dict[str, Any]:
    """shuffled and batch_size as far as the loader's sampler tells them."""
    out: dict[str, Any] = {"shuffled": None}
    index_sampler = getattr(it, "_index_sampler", None)
    sampler = getattr(index_sampler, "sampler", index_sampler)
    if isinstance(sampler, RandomSampler):
        out["shuffled"] = True
    elif isinstance(sampler, SequentialSampler):
        out["shuffled"] = False
    elif sampler is not None and isinstance(getattr(sampler, "shuffle", None), bool):
        out["shuffled"] = sampler.shuffle  # DistributedSampler and look-alikes
    bs = getattr(index_sampler, "batch_size", None)
    if isinstance(bs, int):
        out["batch_size"] = bs
    return out
