"""Put on PYTHONPATH by `accmon run`: starts accmon's probe in the training process, then hands on.

Python imports only the first `sitecustomize` on the path; if the environment had one of its own, it is run
after ours so that injecting accmon changes nothing else.
"""


def _accmon_inject() -> None:
    import os
    import sys

    try:
        from accmon.probe import autorun

        autorun.install()
    except Exception as exc:  # the training script must run even if accmon cannot
        sys.stderr.write(f"accmon: probe not injected: {exc!r}\n")
    here = os.path.dirname(os.path.abspath(__file__))
    for entry in sys.path:
        if not entry or os.path.abspath(entry) == here:
            continue
        candidate = os.path.join(entry, "sitecustomize.py")
        if os.path.isfile(candidate):
            import importlib.util

            spec = importlib.util.spec_from_file_location("_accmon_chained_sitecustomize", candidate)
            if spec and spec.loader:
                try:
                    spec.loader.exec_module(importlib.util.module_from_spec(spec))
                except Exception as exc:
                    sys.stderr.write(f"accmon: the environment's own sitecustomize failed: {exc!r}\n")
            break


_accmon_inject()
del _accmon_inject
