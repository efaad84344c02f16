"""Activations applied as functions inside forward() (`F.relu(x)`, `x.sigmoid()`, `torch.tanh(x)`).

Modules are seen by hooks; functions are not. On deep-statistics steps only, the probe enters this
TorchFunctionMode for the duration of the root model's forward pass: every torch function call then passes
through `__torch_function__`, which measures the outputs of the activation functions. Outside those steps
(and under torch.compile, or when the script has modes of its own) nothing is intercepted.

A function called from inside an activation module (nn.ReLU calls F.relu) is the module's: its hook
already measures it. Names are the enclosing module's, then the function, with #k for its k-th call in that
module's forward: "fc1.relu" is not a thing, but "block.relu", "relu#1" (the root's second F.relu) are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as TF
from torch.overrides import TorchFunctionMode

from . import activations as A

# Looked up by function object; Tensor methods and in-place variants included.
FUNCTIONS: dict[Callable[..., Any], tuple[str, str]] = {}


def _register(kind: str, name: str, *fns: Any) -> None:
    for fn in fns:
        if fn is not None:
            FUNCTIONS[fn] = (kind, name)


_register(A.ZERO, "relu", TF.relu, torch.relu, torch.Tensor.relu, getattr(TF, "relu_", None), torch.relu_,
          torch.Tensor.relu_, TF.relu6)
_register(A.SAT01, "sigmoid", torch.sigmoid, torch.Tensor.sigmoid, TF.sigmoid, torch.Tensor.sigmoid_)
_register(A.SAT01, "softmax", TF.softmax, torch.softmax, torch.Tensor.softmax)
_register(A.LOGSAT, "log_softmax", TF.log_softmax, torch.log_softmax, torch.Tensor.log_softmax)
_register(A.TANH, "tanh", torch.tanh, torch.Tensor.tanh, TF.tanh, torch.Tensor.tanh_)
_register(A.PLAIN, "gelu", TF.gelu)
_register(A.PLAIN, "silu", TF.silu)
_register(A.PLAIN, "leaky_relu", TF.leaky_relu)
_register(A.PLAIN, "elu", TF.elu)
_register(A.PLAIN, "mish", TF.mish)


class FunctionalActivations(TorchFunctionMode):
    """Measures activation functions called during one forward pass (see the module docstring)."""

    def __init__(self, on_activation: Callable[[str, str, torch.Tensor], None], current_module: Callable[[], Any]) -> None:
        super().__init__()
        self.on_activation = on_activation
        self.current_module = current_module  # (module, its name) innermost on the hooks' stack, or None
        self.calls: dict[tuple[int, str], int] = {}
        self.paused = False  # set while the probe's own hooks compute: their torch calls are not the model's

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        entry = FUNCTIONS.get(func)
        if entry is not None and not self.paused and isinstance(out, torch.Tensor):
            cur = self.current_module()
            if cur is not None and type(cur[0]) not in A.KINDS:  # an activation module's own call: its hook's
                kind, fname = entry
                key = (id(cur[0]), fname)
                k = self.calls.get(key, 0)
                self.calls[key] = k + 1
                base = f"{cur[1]}.{fname}" if cur[1] else fname
                self.on_activation(base if k == 0 else f"{base}#{k}", kind, out)
        return out


def user_modes_active() -> bool:
    """Whether the script runs torch function modes of its own (then the probe adds none)."""
    try:
        return bool(torch.overrides._get_current_function_mode_stack())
    except Exception:
        return True
