"""Record the shipped demos for the app's sweep: `python record_demos.py OUTDIR EPOCHS JOBS NAME...`
(EPOCHS 0: each demo's own default).

One interpreter pays for `import torch` once (about 4 s of CPU with the optimizers' dynamo, far more than a
demo trains), then forks a child
per demo that starts the probe exactly as `accmon run --record` does (the injected `autorun`, the recording
named by `ACCMON_RECORD`), runs the demo's script as `__main__`, and closes the run. `JOBS` children at a time.
Prints one line per demo: `name exit-code seconds cpu seconds`.
"""

from __future__ import annotations

import atexit
import os
import runpy
import sys
import time
import traceback


def _child(script: str, out: str, name: str, epochs: int) -> int:
    os.environ["ACCMON_AUTO"] = "1"
    os.environ["ACCMON_RECORD"] = out
    os.environ["ACCMON_NAME"] = name
    sys.argv = [script] + (["--epochs", str(epochs)] if epochs else [])
    import torch

    from accmon.probe import autorun

    torch.set_num_threads(1)  # JOBS demos share the cores: one thread each, no oversubscription
    code = 0
    try:
        autorun.install()  # torch is imported already: the run starts and its hooks go in now
        if name == "numpy_softmax":
            sys.argv += ["--delay", "0"]
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException as exc:  # a demo that raises ends its run as crashed, as under `accmon run`
        traceback.print_exc()
        sys._accmon_crash = f"{type(exc).__name__}: {exc}"  # type: ignore[attr-defined]
        code = 1
    # What the interpreter does at exit, which os._exit skips: the probes publish the steps still pending and
    # close the run (as crashed, with the error, after an exception).
    atexit._run_exitfuncs()
    return code


def main(argv: list[str]) -> int:
    outdir, epochs, jobs, names = argv[0], int(argv[1]), int(argv[2]), argv[3:]
    # Paid once, inherited by every child: torch, and torch._dynamo, which the first optimizer imports (~2 s).
    import torch
    import torch._dynamo  # noqa: F401
    import torch.utils.data  # noqa: F401

    import accmon.demos
    import accmon.probe.torch  # noqa: F401

    demos = os.path.dirname(os.path.abspath(accmon.demos.__file__))
    sys.path.insert(0, demos)  # the demos import their shared `_common`
    running: dict[int, tuple[str, float]] = {}
    failed = 0

    def reap() -> None:
        nonlocal failed
        pid, status, usage = os.wait4(-1, 0)
        name, t0 = running.pop(pid)
        code = os.waitstatus_to_exitcode(status)
        failed += code != 0
        print(f"{name} {code} {time.monotonic() - t0:.2f} cpu {usage.ru_utime + usage.ru_stime:.2f}", flush=True)

    for name in names:
        while len(running) >= jobs:
            reap()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                with open(os.path.join(outdir, name + ".log"), "w") as log:
                    os.dup2(log.fileno(), 1)
                    os.dup2(log.fileno(), 2)
                code = _child(os.path.join(demos, name + ".py"), os.path.join(outdir, name + ".accmon"), name, epochs)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        running[pid] = (name, time.monotonic())
    while running:
        reap()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
