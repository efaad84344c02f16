"""The System tab's words: the step split, throughput and memory in one paragraph, and what the charts can and
cannot show for this run (no GPU, no NVML)."""

from __future__ import annotations

from typing import Any

import numpy as np
from rich.style import Style
from rich.text import Text

from ..store import RankData
from ..system_summary import TIMED, describe, nbytes
from . import fmt
from .palette import palette

RECENT = 200  # steps the "now" figures are the median of


def system_text(data: RankData | None, facts: dict[str, Any], *, dark: bool = True) -> Text:
    pal = palette(dark)
    dim = Style(color=pal.dim)
    t = Text()
    if data is None:
        return Text("No steps yet.", style=dim)
    timed = {}
    for name in TIMED:
        col = data.column(name)
        if col is not None:
            v = col.values(max(0, col.n - RECENT))
            timed[name] = v[np.isfinite(v)].astype(np.float64)
    peaks = {}
    for name in data.names():
        if name == "rss" or name.startswith(("cuda_allocated/", "cuda_reserved/")):
            col = data.column(name)
            v = col.values() if col is not None else np.empty(0)
            v = v[np.isfinite(v)]
            if len(v):
                peaks[name] = float(v.max())
    s = describe(timed, peaks, facts)
    if s is None:
        return Text("This run carries no step timings or memory figures (recorded by an older probe, or "
                    "imported).", style=dim)
    parts = []
    if s["median_step_s"] is not None:
        part = f"a step takes {fmt.num(s['median_step_s'] * 1000)} ms"
        if s["median_data_wait_s"] is not None and s["data_wait_share"] is not None:
            part += (f", {fmt.num(s['median_data_wait_s'] * 1000)} ms of it waiting for data "
                     f"({s['data_wait_share']:.0%})")
        parts.append(part)
    if s["median_samples_per_s"] is not None:
        parts.append(f"{fmt.num(s['median_samples_per_s'])} samples/s")
    if s["median_tokens_per_s"] is not None:
        parts.append(f"{fmt.num(s['median_tokens_per_s'])} tokens/s")
    if s["peak_rss_bytes"] is not None:
        parts.append(f"process memory peak {nbytes(s['peak_rss_bytes'])}")
    for index, d in sorted(s["devices"].items()):
        total = f" of {nbytes(d['total_bytes'])}" if d.get("total_bytes") else ""
        name = f" ({d['name']})" if d.get("name") else ""
        parts.append(f"GPU {index}{name}: peak {nbytes(d.get('peak_allocated_bytes'))} allocated, "
                     f"{nbytes(d.get('peak_reserved_bytes'))} reserved{total}")
    t.append("Now: " + "; ".join(parts) + ".\n")
    if not s["devices"]:
        t.append("No GPU in this run: host figures only (process memory). GPU memory shows here when the run "
                 "uses CUDA.", style=dim)
    elif data.column("gpu_util") is None:
        t.append("GPU utilisation, temperature and power need nvidia-ml-py in the training environment "
                 "(pip install nvidia-ml-py).", style=dim)
    return t
