"""The live side of the viewer: one engine for a run's ranks (`LiveRun`), and what a source tells the header
(`SourceStatus`, `rank_gone`)."""

from .run import DISCOVER_S, SYNC_S, LiveRun, Received, alert_frame, client_for
from .status import SILENT_GONE_S, SourceStatus, rank_gone

__all__ = ["DISCOVER_S", "SILENT_GONE_S", "SYNC_S", "LiveRun", "Received", "SourceStatus", "alert_frame", "client_for",
           "rank_gone"]
