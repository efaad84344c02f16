"""`accmon demo`: run one of the demo training scripts under `accmon run` and watch it."""

from __future__ import annotations

import ast
import importlib.util
import os
import sys

from .runner import run_command

DEFAULT_WITH_TORCH = "healthy_mlp"
DEFAULT_WITHOUT_TORCH = "numpy_softmax"
# Demos that show `accmon run --stop-on`: run with it, as their docstring says.
STOP_ON = {"fault_nan_loss_stopped": "nan_loss"}


def demos_dir() -> str:
    import accmon.demos

    return os.path.dirname(os.path.abspath(accmon.demos.__file__))


def list_demos() -> dict[str, str]:
    """Demo name → the first line of its docstring."""
    out = {}
    d = demos_dir()
    for name in sorted(os.listdir(d)):
        if not name.endswith(".py") or name.startswith("_"):
            continue
        with open(os.path.join(d, name), encoding="utf-8") as fh:
            doc = ast.get_docstring(ast.parse(fh.read())) or ""
        out[name[:-3]] = doc.splitlines()[0] if doc else ""
    return out


def cmd_demo(name: str | None, *, list_only: bool = False, headless: bool = False) -> int:
    demos = list_demos()
    if list_only:
        for n, doc in demos.items():
            print(f"{n:<32} {doc}")
        return 0
    if name is None:
        has_torch = importlib.util.find_spec("torch") is not None
        name = DEFAULT_WITH_TORCH if has_torch and DEFAULT_WITH_TORCH in demos else DEFAULT_WITHOUT_TORCH
    if name not in demos:
        import difflib

        close = difflib.get_close_matches(name, demos, n=3, cutoff=0.6)
        close += [n for n in demos if name in n and n not in close][: 3 - len(close)]
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        sys.stderr.write(f"accmon demo: no demo {name!r}; {hint}`accmon demo --list` lists them\n")
        return 2
    script = os.path.join(demos_dir(), name + ".py")
    return run_command([sys.executable, script], headless=headless, record=None, name=name, stop_on=STOP_ON.get(name))
