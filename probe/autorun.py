"""Zero-code mode: what `accmon run` injects into the training process (via inject/sitecustomize.py).

Nothing starts until the script imports a framework: then the run starts and the framework's hooks are
installed. Processes that are not training — multiprocessing workers, helper interpreters that never import
torch or keras — cost an import hook and nothing more.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

from .errors import report_once

ENV_AUTO = "ACCMON_AUTO"

# module imported → name of the accmon module whose install(run) instruments it
FRAMEWORKS = {
    "torch": "accmon.probe.torch",
    "keras": "accmon.probe.keras",
    "lightning": "accmon.probe.lightning",
    "pytorch_lightning": "accmon.probe.lightning",
    "transformers": "accmon.probe.hf",
}

_installed = False
_lock = threading.RLock()  # an install() may import another watched framework (pytorch_lightning → lightning)


def install() -> None:
    """Arm the import hooks (idempotent). Called from sitecustomize when ACCMON_AUTO=1."""
    global _installed
    if os.environ.get(ENV_AUTO) != "1" or _installed:
        return
    _installed = True
    import multiprocessing

    if multiprocessing.parent_process() is not None or _is_spawned():
        return  # a DataLoader or pool worker: its parent is the one training
    if _is_launcher():
        return  # torchrun's agent imports torch but trains nothing; its workers are the ranks
    # Here, not at the top: every Python process of the command runs this module (sitecustomize), and only a
    # training one should pay for importing the run (zmq, msgpack).
    from .run import wrap_excepthook

    wrap_excepthook()
    for module_name in FRAMEWORKS:
        if module_name in sys.modules:
            _instrument(module_name)
    sys.meta_path.insert(0, _PostImportFinder(set(FRAMEWORKS), _instrument))


def _is_spawned() -> bool:
    """A process started by multiprocessing's spawn or forkserver method. At interpreter start-up (when this
    runs) `parent_process()` does not know it yet; the command line does. Such a process that trains — a
    `ddp_spawn` rank — is given its run by the framework callback it receives from its parent."""
    return "--multiprocessing-fork" in sys.argv[1:] or any(
        a.startswith("from multiprocessing.") for a in getattr(sys, "orig_argv", ()))


def _is_launcher() -> bool:
    argv0 = sys.argv[0] if sys.argv else ""
    return os.path.basename(argv0) == "torchrun" or argv0.replace(os.sep, "/").endswith("torch/distributed/run.py")


def _instrument(module_name: str) -> None:
    from . import run as run_module  # see install(): only a process that imports a framework pays for it

    with _lock:
        try:
            run = run_module.start()
            importlib.import_module(FRAMEWORKS[module_name]).install(run)
        except ImportError as exc:
            report_once(f"autorun:{module_name}", f"{module_name} is not instrumented: {exc}")
        except Exception as exc:
            report_once(f"autorun:{module_name}", f"instrumenting {module_name} failed ({exc!r}); training goes on")


def when_imported(module_name: str, callback: Callable[[str], None]) -> None:
    """Call `callback(module_name)` right after the module is first imported (at once if it already is). One
    watch per module: a second call while the first still waits does nothing."""
    if module_name in sys.modules:
        callback(module_name)
        return
    if any(isinstance(f, _PostImportFinder) and module_name in f.names for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _PostImportFinder({module_name}, callback))


class _PostImportFinder(importlib.abc.MetaPathFinder):
    """Runs a callback right after one of the watched top-level modules has been imported."""

    def __init__(self, names: set[str], callback: Callable[[str], None]) -> None:
        self.names = names
        self.callback = callback
        self._busy: set[str] = set()

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in self.names or fullname in self._busy:
            return None
        self._busy.add(fullname)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._busy.discard(fullname)
        if spec is None or spec.loader is None:
            return None
        loader = spec.loader
        original_exec = loader.exec_module
        callback = self.callback
        names = self.names

        def exec_module(module: ModuleType) -> None:
            original_exec(module)
            names.discard(fullname)  # once is enough
            callback(fullname)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec
