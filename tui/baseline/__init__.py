"""A run that worked, beside this one: `--baseline FILE` on replay, run and attach, and `check --baseline`.

The baseline is a second, read-only `RunStore` filled from its recording by the same reader and the same frame
ingestion as a replay (`RecordingReader`, or `importers.load_log` for a TensorBoard or CSVLogger log). From a
store's lowest rank this module makes:

- an `Outcome`: best loss and accuracy (validation when both runs have it, else training, smoothed), the final
  accuracy, the steps to reach an accuracy, and whether the loss diverged;
- a `Comparison` of two outcomes under a `Tolerance` (`check --baseline`: pass/fail per criterion and a verdict);
- an `Aligner`: which baseline step stands beside a step of this run, by step, epoch or samples seen (the
  charts' overlay and the header);
- `standing()`: the header's line, "vs baseline: val_acc 0.91 vs 0.93 at step 400 (−0.02) · …".

No textual here (the import-linter contracts): check uses it headless, the app and the chart read its results.

The rooms: `load` (the baseline read into a store), `series` (measured rows, smoothing, the shared metrics),
`outcome` (an outcome and two compared), `align` (the step map by step, epoch or samples seen), `standing` (the
header's line).
"""

from __future__ import annotations

from .align import ALIGNS, Aligner, Progress
from .load import INGEST_SLICE, Baseline, BaselineError, from_store, load_baseline, tee
from .outcome import DIVERGENCE_IDS, Comparison, Criterion, Outcome, Tolerance, compare, compare_runs, outcome
from .series import SMOOTH_MAX, SMOOTH_SHARE, is_validation, metrics, series, smoothed
from .standing import level_at, standing

__all__ = ["ALIGNS", "DIVERGENCE_IDS", "INGEST_SLICE", "SMOOTH_MAX", "SMOOTH_SHARE", "Aligner", "Baseline",
           "BaselineError", "Comparison", "Criterion", "Outcome", "Progress", "Tolerance", "compare", "compare_runs",
           "from_store", "is_validation", "level_at", "load_baseline", "metrics", "outcome", "series", "smoothed",
           "standing", "tee"]
