"""Call tracking: every module call of the process, the root model and its input batch, activations.

A room of `TorchProbe` (state.py says how the rooms fit together).
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import Any

import torch
from torch import nn
from torch.fx import GraphModule
from torch.nn.modules.loss import _Loss

from . import activations as A
from . import classify as C
from . import facts as F
from . import functional as FN
from . import inputs as I
from .state import ProbeState

_perf = time.perf_counter
_tracing = torch._C._get_tracing_state
_thread_id = threading.get_ident


class CallTracking(ProbeState):
    # ==== module calls ========================================================================================
    # Every module call in the process comes through here (hooks._call, which has already checked that the
    # probe is on and dynamo is not tracing). Most are inner modules on steps that sample nothing per layer:
    # they only count the call depth and note the last leaf. Losses, the root model, and activations on
    # sampled steps do real work, timed.
    def call_module(self, original: Any, module: nn.Module, args: tuple, kwargs: dict) -> Any:
        if self.tid != _thread_id() and not self._adopt():
            return original(module, *args, **kwargs)  # another thread (a data loader's pin thread, ...)
        if isinstance(module, _Loss):
            return self._call_loss(original, module, args, kwargs)
        d = self.depth
        if d and not self.deep_now and self.fmode is None:
            self.depth = d + 1
            try:
                out = original(module, *args, **kwargs)
            finally:
                self.depth = d
            if not module._modules:
                self.last_leaf = module
                self.last_leaf_out = id(out)
            return out
        return self._call_observed(original, module, args, kwargs)

    def _call_loss(self, original: Any, module: nn.Module, args: tuple, kwargs: dict) -> Any:
        d = self.depth
        self.depth = d + 1
        self.in_loss_module += 1  # the F.cross_entropy inside nn.CrossEntropyLoss is this call, not another
        fmode = self.fmode
        if fmode is not None:
            self.mod_stack.append(module)
        try:
            out = original(module, *args, **kwargs)
        finally:
            self.depth = d
            self.in_loss_module -= 1
            if fmode is not None and self.mod_stack:
                self.mod_stack.pop()
        self.last_leaf = module
        self.last_leaf_out = id(out)
        if "loss" in self.broken or self.watch_loss is not None and module is not self.watch_loss or _tracing():
            return out  # _tracing: torch.jit.trace records every op it sees; the probe's must not enter the graph
        self._timed("loss", self._loss_module_call, module, args, kwargs, out)
        return out

    def _call_observed(self, original: Any, module: nn.Module, args: tuple, kwargs: dict) -> Any:
        """The root model's call (its input batch, the step's start, functional activations on sampled
        steps), and any module's call on a sampled step (activation statistics)."""
        d = self.depth
        self.depth = d + 1
        if self.fmode is not None:
            self.mod_stack.append(module)
        tracing = _tracing()
        if d == 0 and not tracing and "modules" not in self.broken:
            try:
                self._root_enter(module)
            except Exception as exc:
                self._fail("modules", exc)
        out = None
        try:
            out = original(module, *args, **kwargs)
        finally:
            self.depth = d
            if self.fmode is not None and self.mod_stack:
                self.mod_stack.pop()
            if not module._modules:
                self.last_leaf = module
                self.last_leaf_out = id(out)
            if not tracing and "modules" not in self.broken:
                self._timed("modules", self._observed, module, d, args, kwargs, out)
        return out

    def _observed(self, module: nn.Module, depth: int, args: tuple, kwargs: dict, output: Any) -> None:
        """After an observed call (or its exception: then `output` is None, and the depth is kept right)."""
        if self.deep_now and self.cur_root is not None:
            kind = A.KINDS.get(type(module))
            if kind is not None and isinstance(output, torch.Tensor) and not output.is_meta:
                self._activation(module, kind, output)
        if depth == 0:
            self._root_done(module, args, kwargs, output)

    def _timed(self, part: str, work: Any, *args: Any) -> None:
        """Run the probe's own work after a module call: timed, guarded (an error switches `part` off), and
        unseen by the functional-activation mode, whose statistics are of the model's ops only."""
        t0 = _perf()
        fmode = self.fmode
        if fmode is not None:
            fmode.paused = True
        try:
            work(*args)
        except Exception as exc:
            self._fail(part, exc)
        if fmode is not None:
            fmode.paused = False
        self.spent += _perf() - t0

    def _root_enter(self, module: nn.Module) -> None:
        if self.watch_model is not None and module is not self.watch_model() or isinstance(module, GraphModule):
            # GraphModule: a compiled graph run by torch.compile's backend, not the user's model.
            self.cur_root = None
            return
        self.cur_root = module
        if not self._is_train():
            # An evaluation pass, also under no_grad with the model left in training mode (no model.eval()): it
            # begins no step. It did, and after steps slower than the flush interval the last step's row left
            # at once, so the evaluation's results waited for a step that never came at the end of a run.
            self.saw_eval = True
        elif not self.cur_started:
            self._step_begins()
        if id(module) not in self.module_name and not any(r() is module for r in self.roots):
            # A new top-level model (a submodule called on its own is already named: it stays a submodule).
            # Roots it contains (its parts, called alone before it) stop being roots.
            inside = {id(m) for m in module.modules()}
            self.roots = [r for r in self.roots if r() is not None and id(r()) not in inside]
            self.roots.append(weakref.ref(module))
            self.module_name = F.module_names(self._live_roots())
            self.param_layer = None
        if (self.deep_now and self.functional and module.training and torch.is_grad_enabled()
                and getattr(module, "_orig_mod", None) is None and not FN.user_modes_active()):
            mode = FN.FunctionalActivations(self._functional_activation, self._current_module)
            mode.__enter__()
            self.fmode = mode
            self.mod_stack = [module]

    def _current_module(self) -> tuple[nn.Module, str] | None:
        if not self.mod_stack:
            return None
        m = self.mod_stack[-1]
        return m, ("" if len(self.mod_stack) == 1 else self.module_name.get(id(m), type(m).__name__.lower()))

    def _functional_activation(self, name: str, kind: str, output: torch.Tensor) -> None:
        try:
            t0 = _perf()
            dec = self.fn_decoders.get(name)
            if dec is None or dec.kind != kind:
                dec = self.fn_decoders[name] = A.ActDecoder(name, kind)
            with torch.no_grad():
                part, counted = A.act_part(kind, output)
            self.cur.add(dec, part, counted)
            self.spent_tiers["deep"] += _perf() - t0
        except Exception as exc:
            self._stop_functional()
            self._fail("functional activations", exc)

    def _stop_functional(self) -> None:
        mode, self.fmode = self.fmode, None
        self.mod_stack = []
        if mode is not None:
            mode.__exit__(None, None, None)

    def _root_done(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        if self.fmode is not None:
            self._stop_functional()
        if self.cur_root is not module:
            return
        self.root_out = weakref.ref(output) if isinstance(output, torch.Tensor) else None
        self.root_out_module = self.last_leaf if self.last_leaf_out == id(output) else None
        self.last_leaf = None
        self.last_leaf_out = 0
        if module.training and torch.is_grad_enabled():
            x = I.first_tensor(args, kwargs)
            if x is not None and x.ndim >= 2 and not (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool):
                self.step_tokens += x.numel()  # token ids, [batch, sequence]: tokens/s as well as samples/s
            if x is not None and (self.deep_now or not self.first_input_seen):
                self._inputs(x)

    def _inputs(self, x: torch.Tensor) -> None:
        if x.is_meta:  # meta tensors: a shape-only pass (Keras builds models that way)
            return
        t0 = _perf()
        first = not self.first_input_seen
        prev = torch.is_grad_enabled()
        torch.set_grad_enabled(False)
        try:
            got = I.input_part(x)
        finally:
            torch.set_grad_enabled(prev)
        if first:
            self.first_input_seen = True
            self.facts["inputs"] = {"dtype": F.dtype_name(x), "shape": list(x.shape)}
            if got is not None:
                self.cur.add(C.FactsDecoder(self._input_facts), got[0], got[1])
        if got is not None and self.deep_now:
            self.cur.add(self.d_input, got[0], got[1])
        self.spent_tiers["deep"] += _perf() - t0

    def _activation(self, module: nn.Module, kind: str, output: torch.Tensor) -> None:
        if not (module.training and torch.is_grad_enabled()):
            return
        t0 = _perf()
        entry = self.act_decoders.get(id(module))
        if entry is None or entry[0]() is not module:
            name = self.module_name.get(id(module), f"{type(module).__name__}@{id(module):x}")
            entry = (weakref.ref(module), A.ActDecoder(name, kind))
            self.act_decoders[id(module)] = entry
        prev = torch.is_grad_enabled()
        torch.set_grad_enabled(False)
        try:
            part, counted = A.act_part(kind, output)
            self.cur.add(entry[1], part, counted)
        finally:
            torch.set_grad_enabled(prev)
        self.spent_tiers["deep"] += _perf() - t0
