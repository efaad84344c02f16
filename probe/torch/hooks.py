"""Where the probe plugs into PyTorch: global module and optimizer hooks, functional losses, DataLoader.

A wrapper around `nn.Module.__call__` and global optimizer hooks find models, optimizers and losses in a
script nobody changed. They are put in place once per process, before the script builds (or compiles) its
model, and never added or removed per step: under `torch.compile` each one's first statement returns when
tracing, so a compiled region carries no probe code.
"""

from __future__ import annotations

import atexit
import functools
import os
import types
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as TF
from torch.optim import optimizer as _optimizer

from ..errors import report_once
from . import data
from . import losses as L
from .probe import TorchProbe

ENV_FUNCTIONAL = "ACCMON_TORCH_FUNCTIONAL"

_probe: TorchProbe | None = None
_handles: list[Any] = []
_original_call: Callable[..., Any] | None = None
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
        probe.continue_from(old)
    _probe = probe
    _hook(probe)
    # Registered last so it runs before the exit handler of any run started so far (atexit is last-in
    # first-out); unregistered first so re-attaching (a re-run notebook cell) does not pile handlers up.
    atexit.unregister(_at_exit)
    atexit.register(_at_exit)
    return probe


def suspend() -> None:
    """Take the hooks out without closing the probe: training runs as if unobserved until `resume()`."""
    while _handles:
        _handles.pop().remove()
    _unpatch_call()
    data.unpatch()
    _unpatch_clip()
    _unpatch_zero_grad()
    _unpatch_functional()


def resume() -> None:
    """Put the hooks of the active probe back after `suspend()`."""
    probe = active()
    if probe is not None and _original_call is None:
        probe.t_last_end = None  # the pause is no step time
        _hook(probe)


def _hook(probe: TorchProbe) -> None:
    try:
        _patch_call()
        _handles.append(_optimizer.register_optimizer_step_pre_hook(probe.on_opt_pre))
        _handles.append(_optimizer.register_optimizer_step_post_hook(probe.on_opt_post))
        data.patch(probe)
        _patch_clip()
        _patch_zero_grad()
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


def _at_exit() -> None:
    # The steps still on the device reach the recording before the run's end frame.
    probe = _probe
    try:
        if probe is not None and probe.pid == os.getpid():
            probe.close()
    except Exception:
        pass



def _after_fork_in_child() -> None:
    # A forked child (DataLoader worker) inherits the hooks but not the run's I/O thread.
    p = _probe
    if p is not None:
        p.off = True


os.register_at_fork(after_in_child=_after_fork_in_child)


# ---- module calls --------------------------------------------------------------------------------------------
# One wrapper around nn.Module.__call__ instead of global forward hooks: any global hook sends *every* module
# call in the process down torch's slow path (about 5 µs a call here); the wrapper costs about half, and
# modules keep torch's fast path. Its first statement returns at once while dynamo traces, so compiled code
# carries none of it (a compiled model is still one graph: tests/probe/test_torch_compile.py).
def _call(self: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
    original = _original_call
    probe = _probe
    if probe is None or probe.off or original is None or _compiling():
        return (original or torch.nn.Module._wrapped_call_impl)(self, *args, **kwargs)
    return probe.call_module(original, self, args, kwargs)


_compiling = torch.compiler.is_compiling


def _patch_call() -> None:
    global _original_call
    if _original_call is None:
        _original_call = torch.nn.Module.__call__
        torch.nn.Module.__call__ = _call  # type: ignore[method-assign]


def _unpatch_call() -> None:
    global _original_call
    if _original_call is not None:
        if torch.nn.Module.__call__ is _call:
            torch.nn.Module.__call__ = _original_call  # type: ignore[method-assign]
        _original_call = None


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


# ---- gradient clipping ---------------------------------------------------------------------------------------
# Under clip_grad_norm_ the gradients the optimizer hook sees are already clipped: their norm reads max_norm at
# every step and hides exploding gradients. The wrapper records what clip_grad_norm_ returns (the total norm
# before clipping) and whether clipping engaged, as device tensors of the step (no host sync).
_clip_originals: dict[tuple[Any, str], Callable[..., Any]] = {}


def _clip_targets() -> list[tuple[Any, str]]:
    import torch.nn.utils as U
    import torch.nn.utils.clip_grad as CG

    return [(U, "clip_grad_norm_"), (CG, "clip_grad_norm_")]


def _make_clip_wrapper(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def clip_grad_norm_(parameters: Any, max_norm: Any, *args: Any, **kwargs: Any) -> Any:
        out = original(parameters, max_norm, *args, **kwargs)
        probe = _probe
        if probe is not None and not probe.off and not _compiling():
            probe.on_clip(out, max_norm)
        return out

    clip_grad_norm_.__accmon_wrapper__ = True  # type: ignore[attr-defined]
    return clip_grad_norm_


def _patch_clip() -> None:
    for mod, name in _clip_targets():
        current = getattr(mod, name, None)
        if current is None or getattr(current, "__accmon_wrapper__", False):
            continue
        _clip_originals[(mod, name)] = current
        setattr(mod, name, _make_clip_wrapper(current))


def _unpatch_clip() -> None:
    for (mod, name), original in _clip_originals.items():
        setattr(mod, name, original)
    _clip_originals.clear()


# ---- zero_grad -----------------------------------------------------------------------------------------------
# A forgotten zero_grad() lets gradients add up from step to step. The probe notes each call (optimizer or
# module) and, at each optimizer step, whether the gradient it reads is the very tensor of the last step with no
# zero_grad between (probe.on_opt_pre). A flag, no tensor work.
_zero_grad_originals: dict[Any, Callable[..., Any]] = {}


def _make_zero_grad_wrapper(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def zero_grad(self: Any, *args: Any, **kwargs: Any) -> Any:
        probe = _probe
        if probe is not None:
            probe.zeroed = True
        return original(self, *args, **kwargs)

    zero_grad.__accmon_wrapper__ = True  # type: ignore[attr-defined]
    return zero_grad


def _patch_zero_grad() -> None:
    classes: tuple[Any, ...] = (torch.optim.Optimizer, torch.nn.Module)
    for cls in classes:
        current = cls.__dict__.get("zero_grad")
        if current is None or getattr(current, "__accmon_wrapper__", False):
            continue
        _zero_grad_originals[cls] = current
        cls.zero_grad = _make_zero_grad_wrapper(current)


def _unpatch_zero_grad() -> None:
    for cls, original in _zero_grad_originals.items():
        cls.zero_grad = original
    _zero_grad_originals.clear()
