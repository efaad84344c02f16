"""What the app writes on a key: the series (CSV, Parquet: tui/export.py) and screenshots (SVG, and a PNG
when a converter is installed), under names that never overwrite an earlier file."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from .. import export  # the module, not its names: tests replace export.have_pyarrow
from ..app_sources import ReplaySource, Source
from ..store import RunStore


def export_name(folder: Path, run_name: str | None, step: int | None, ext: str) -> Path:
    """accmon-<run>-step<N>.<ext> in `folder`; -2, -3, … when it exists (a finished run stays at one step:
    never overwrite the previous export)."""
    name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in (run_name or "run"))
    stem = f"accmon-{name}-step{step if step is not None else 0}"
    target = folder / f"{stem}.{ext}"
    n = 2
    while target.exists():
        target = folder / f"{stem}-{n}.{ext}"
        n += 1
    return target


def write_series(source: Source | None, store: RunStore, target: Path, fmt: str) -> None:
    """Every series of every rank to `target` as CSV or Parquet (`fmt`); OSError when it cannot be written."""
    if isinstance(source, ReplaySource):
        # The recording holds the exact values (the store keeps older steps to 16 bits).
        rc = (export.export_recording(source.path, quiet=True, csv=str(target)) if fmt == "csv" else
              export.export_recording(source.path, quiet=True, parquet=str(target)))
        if rc != 0:
            raise OSError(f"cannot read {source.path}")
    elif fmt == "csv":
        export.export_store(store, str(target))
    else:
        export.export_store_parquet(store, str(target))


def svg_to_png(svg: str) -> str | None:
    """Convert with the first converter present (rsvg-convert, cairosvg, inkscape); None when there is none."""
    png = str(Path(svg).with_suffix(".png"))
    try:
        if shutil.which("rsvg-convert"):
            subprocess.run(["rsvg-convert", "-o", png, svg], check=True, capture_output=True, timeout=60)
            return png
        try:
            import cairosvg  # type: ignore[import-not-found,unused-ignore]

            cairosvg.svg2png(url=svg, write_to=png)
            return png
        except ImportError:
            pass
        if shutil.which("inkscape"):
            subprocess.run(["inkscape", svg, "--export-type=png", f"--export-filename={png}"], check=True,
                           capture_output=True, timeout=120)
            return png
    except (OSError, subprocess.SubprocessError):
        return None
    return None
