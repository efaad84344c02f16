"""The probe runs inside training processes: importing it must not pull in the viewer or a framework. The viewer's
headless parts (check, attach --headless, replay's rules child) must not pull in textual.

Each module is imported in a fresh interpreter (harlequin's test_import_hygiene), since one test process has
long since imported everything.
"""

import os
import pkgutil
import subprocess
import sys

import pytest

import accmon.probe

FRAMEWORK_MODULES = {"accmon.probe.torch", "accmon.probe.keras", "accmon.probe.lightning", "accmon.probe.hf"}
PROBE_MODULES = sorted(
    m.name for m in pkgutil.walk_packages(accmon.probe.__path__, "accmon.probe.")
    if not any(m.name == f or m.name.startswith(f + ".") for f in FRAMEWORK_MODULES) and ".inject" not in m.name
)


@pytest.mark.parametrize("module", ["accmon.probe", *PROBE_MODULES])
def test_probe_modules_import_neither_textual_nor_frameworks(module):
    code = (
        f"import sys, {module}\n"
        "bad = sorted(m for m in ('textual', 'torch', 'keras', 'tensorflow', 'accmon.tui') if m in sys.modules)\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"importing {module} pulled in {out.stdout.strip()}"


# What runs with no terminal UI: `accmon check` in CI, `attach --headless`, replay's rules child, the live engine.
HEADLESS_VIEWER_MODULES = ["accmon.tui.app_sources", "accmon.tui.baseline", "accmon.tui.check", "accmon.tui.export", "accmon.tui.headless",
                           "accmon.tui.importers", "accmon.tui.live", "accmon.tui.peek", "accmon.tui.replay", "accmon.tui.store",
                           "accmon.tui.subscriber", "accmon.tui.text"]


@pytest.mark.parametrize("module", HEADLESS_VIEWER_MODULES)
def test_headless_viewer_modules_import_neither_textual_nor_frameworks(module):
    code = (
        f"import sys, {module}\n"
        "bad = sorted(m for m in ('textual', 'rich', 'torch', 'keras', 'tensorflow') if m in sys.modules)\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"importing {module} pulled in {out.stdout.strip()}"


def test_import_linter_contract_holds():
    pytest.importorskip("importlinter")
    lint = os.path.join(os.path.dirname(sys.executable), "lint-imports")
    out = subprocess.run([lint, "--no-cache"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
