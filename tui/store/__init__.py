"""The viewer's memory of a run (`RunStore`), in rooms of one concern each:

- `columns`: one series as packed float32/16-bit chunks with block summaries (`Column`, `Buckets`), the step axis
  (`StepAxis`), and the "not measured" marker (`MISSING`);
- `rank`: everything one rank sent (`RankData`);
- `alerts`: the run's alerts and each one's bounded update history (`AlertBook`);
- `outcome`: how a run ended (finished, crashed, truncated, running) and who stopped it, one answer for the viewer
  and `check`;
- `groups`: several ranks seen together (`RankGroup`) and a sharded model's true norms (`ShardCombiner`);
- `run`: `RunStore`, frames in, all of the above out.

Plain numpy, no Textual (an import-linter contract): tested and benchmarked without an app. Importers use the
names below, `from accmon.tui.store import RunStore`, whatever room holds them.
"""

from .alerts import ALERT_HISTORY, AlertBook, alert_message, as_of_step
from .columns import (
    BLOCK,
    BLOCKS_PER_CHUNK,
    CHUNK,
    FLAG_NAN,
    FLAG_NEGINF,
    FLAG_POSINF,
    LOG_RATIO,
    MISSING,
    MISSING_BITS,
    Buckets,
    Column,
    StepAxis,
    is_missing,
)
from .groups import PENDING_MAX, SHARD_PREFIX, GroupAxis, RankGroup, ShardCombiner
from .outcome import Outcome, clean_stop, interrupted_exit, run_outcome, stop_words
from .rank import MAX_RANKS, MAX_SERIES, RankData
from .run import Changes, RunStore

__all__ = [
    "ALERT_HISTORY", "BLOCK", "BLOCKS_PER_CHUNK", "CHUNK", "FLAG_NAN", "FLAG_NEGINF", "FLAG_POSINF", "LOG_RATIO",
    "MAX_RANKS", "MAX_SERIES", "MISSING", "MISSING_BITS", "PENDING_MAX", "SHARD_PREFIX",
    "AlertBook", "Buckets", "Changes", "Column", "GroupAxis", "Outcome", "RankData", "RankGroup", "RunStore",
    "ShardCombiner",
    "StepAxis", "alert_message", "as_of_step", "clean_stop", "interrupted_exit", "is_missing", "run_outcome", "stop_words",
]
