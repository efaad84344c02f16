"""The live side of the viewer: one engine for a run's ranks (`LiveRun`), what a source tells the header
(`SourceStatus`, `rank_gone`), and what `accmon ls` and the picker ask of each rank (`peek`)."""

from .peek import (
    NOTHING,
    PEEK_MAX_RANKS,
    PEEK_REPLY_BYTES,
    PEEK_STATUSES,
    PEEK_TIMEOUT_S,
    PickerEntry,
    RankPeek,
    RunPeek,
    age_words,
    group_runs,
    peek_cells,
    peek_from_dict,
    peek_runs,
    run_peek,
)
from .run import DISCOVER_S, SYNC_S, LiveRun, Received, alert_frame, client_for
from .status import SILENT_GONE_S, SourceStatus, rank_gone

__all__ = [
    "DISCOVER_S", "NOTHING", "PEEK_MAX_RANKS", "PEEK_REPLY_BYTES", "PEEK_STATUSES", "PEEK_TIMEOUT_S", "SILENT_GONE_S",
    "SYNC_S", "LiveRun", "PickerEntry", "RankPeek", "Received", "RunPeek", "SourceStatus", "age_words", "alert_frame",
    "client_for", "group_runs", "peek_cells", "peek_from_dict", "peek_runs", "rank_gone", "run_peek",
]
