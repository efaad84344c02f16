"""Where the probe plugs into PyTorch: global module and optimizer hooks, functional losses, DataLoader.

Global hooks find models, optimizers and losses in a script nobody changed. They are registered once per
process, before the script builds (or compiles) its model, and never added or removed per step: under
`torch.compile` each hook's first statement returns when tracing, so a compiled region carries no probe code.
"""

from __future__ import annotations

import atexit
import functools
import os
import types
import warnings
from typing import Any, Callable

import torch
import torch.nn.functional as TF
from torch.nn.modules import module as _module
from torch.optim import optimizer as _optimizer

from ..errors import report_once
from . import data
from . import losses as L
from .probe import TorchProbe

ENV_FUNCTIONAL = "ACCMON_TORCH_FUNCTIONAL"

_probe: TorchProbe | None = None
_handles: list[Any] = []
_functional_originals: dict[str, Callable[..., Any]] = {}


def active() -> TorchProbe | None:
    """The probe of this process, if one is observing."""
    p = _probe
    if p is None or p.closed or p.pid != os.getpid():
        return None
    return p


def _current_probe() -> TorchProbe | None:
    return _probe


def attach(probe: TorchProbe) -> TorchProbe:
    """Make `probe` the one that PyTorch's hooks talk to (the previous one, if any, is closed first)."""
    global _probe
    old = _probe
    if old is not None and old is not probe:
        detach()
    _probe = probe
    _hook(probe)
    atexit.register(_at_exit, probe)
    return probe


def suspend() -> None:
    """Take the hooks out without closing the probe: training runs as if unobserved until `resume()`."""
    while _handles:
        _handles.pop().remove()
    data.unpatch()
    _unpatch_functional()


def resume() -> None:
    """Put the hooks of the active probe back after `suspend()`."""
    probe = active()
    if probe is not None and not _handles:
        probe.t_last_end = None  # the pause is no step time
        _hook(probe)


def _hook(probe: TorchProbe) -> None:
    # torch.compile warns that global hooks fire once more for the OptimizedModule wrapper; the probe
    # expects that (it treats the wrapper as the root model), so the user need not see the warning.
    warnings.filterwarnings("ignore", message=r"Using `torch\.compile\(module\)` when there are global hooks")
    try:
        _handles.append(_module.register_module_forward_pre_hook(probe.on_module_pre))
        _handles.append(_module.register_module_forward_hook(probe.on_module_post, with_kwargs=True, always_call=True))
        _handles.append(_optimizer.register_optimizer_step_pre_hook(probe.on_opt_pre))
        _handles.append(_optimizer.register_optimizer_step_post_hook(probe.on_opt_post))
        data.patch(probe)
        if os.environ.get(ENV_FUNCTIONAL, "1") != "0":
            _patch_functional()
    except Exception as exc:  # an unknown torch version: no monitoring beats a broken training script
        report_once("torch-attach", f"could not attach to PyTorch ({type(exc).__name__}: {exc}); monitoring is off")
        probe.off = True


def detach() -> None:
    """Close the active probe (publishing what it holds) and remove every hook and patch."""
    global _probe
    probe, _probe = _probe, None
    if probe is not None:
        probe.close()
    suspend()


def _at_exit(probe: TorchProbe) -> None:
    # Runs before the run's own exit handler (atexit is last-in first-out and the run started first),
    # so the steps still on the device reach the recording before its end frame.
    try:
        if probe.pid == os.getpid():
            probe.close()
    except Exception:
        pass


def _after_fork_in_child() -> None:
    # A forked child (DataLoader worker) inherits the hooks but not the run's I/O thread.
    p = _probe
    if p is not None:
        p.off = True


os.register_at_fork(after_in_child=_after_fork_in_child)


# ---- functional losses ---------------------------------------------------------------------------------------
def _make_wrapper(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    spec = L.spec_for(L.FUNCTIONAL[name])

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        out = _accmon_original(*args, **kwargs)
        if _accmon_compiling():
            return out
        probe = _accmon_active()
        # Inside a loss module (nn.CrossEntropyLoss calls F.cross_entropy) the module's hook reports it.
        if probe is not None and not probe.off and not probe.in_loss_module:
            probe.on_functional_loss(_accmon_spec, args, kwargs, out)
        return out

    # The wrapper's free variables come from this closure. Its globals are torch.nn.functional's own: when
    # TorchScript compiles a module that calls F.cross_entropy, it follows __wrapped__ to the original's
    # source and resolves that source's names in the wrapper's globals; with ours it would fail.
    _accmon_original = original  # noqa: F841 (closure cell)
    _accmon_spec = spec  # noqa: F841
    _accmon_compiling = torch.compiler.is_compiling  # noqa: F841
    _accmon_active = _current_probe  # noqa: F841
    fn = types.FunctionType(wrapper.__code__, TF.__dict__, name, wrapper.__defaults__, wrapper.__closure__)
    functools.update_wrapper(fn, original)
    fn.__accmon_wrapper__ = True  # type: ignore[attr-defined]
    return fn


def _patch_functional() -> None:
    for name in L.FUNCTIONAL:
        current = getattr(TF, name, None)
        if current is None or getattr(current, "__accmon_wrapper__", False):
            continue
        _functional_originals[name] = current
        setattr(TF, name, _make_wrapper(name, current))


def _unpatch_functional() -> None:
    for name, original in _functional_originals.items():
        setattr(TF, name, original)
    _functional_originals.clear()
