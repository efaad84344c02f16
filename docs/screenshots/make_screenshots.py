"""Make the README's screenshots with the app's own `x`: a faulty and a healthy demo, replayed to their end, at
80×24 and 160×48. `python docs/screenshots/make_screenshots.py` (a minute; needs torch, as the demos do)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SHOTS = {"fault_dead_relu": "faulty", "healthy_mlp": "healthy"}
SIZES = ((80, 24), (160, 48))


async def shoot(path: str, out: Path, size: tuple[int, int], keys: tuple[str, ...]) -> Path:
    from accmon.tui.app import AccmonApp
    from accmon.tui.app_sources import ReplaySource

    app = AccmonApp(ReplaySource(path, rerun_rules=False), export_dir=out)
    app.animation_level = "none"
    async with app.run_test(size=size) as pilot:
        while not (app.source.status.loaded and not app.source._q.q):
            app.sync_now()
            await pilot.pause(0.05)
        app.sync_now()
        await pilot.pause()
        await pilot.press(*keys)
        app.sync_now()
        await pilot.pause()
        app.clear_notifications()
        await pilot.pause()
        before = set(out.iterdir())
        await pilot.press("x")
        await app.workers.wait_for_complete()
    (svg,) = [p for p in set(out.iterdir()) - before if p.suffix == ".svg"]
    return svg


def main() -> int:
    folder = tempfile.mkdtemp(prefix="amshots")
    try:
        env = dict(os.environ, ACCMON_RUNTIME_DIR=folder, PYTHONPATH=str(REPO))
        subprocess.run([sys.executable, str(REPO / "tests" / "tui" / "record_demos.py"), folder, "0", "2", *SHOTS],
                       check=True, env=env)
        out = Path(folder, "shots")
        out.mkdir()
        for demo, kind in SHOTS.items():
            for w, h in SIZES:
                keys = ("home", "n") if kind == "faulty" else ()
                svg = asyncio.run(shoot(os.path.join(folder, demo + ".accmon"), out, (w, h), keys))
                target = HERE / f"{kind}-{w}x{h}.svg"
                shutil.copyfile(svg, target)
                print(target)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
