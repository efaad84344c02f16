"""`TorchProbe`: turns what PyTorch's hooks show into statistics of training steps.

One step is one `step()` of the primary optimizer (the first one seen stepping). Between two steps the
probe sees, through hooks:

- the root model's call (a module called outside any other module): the input batch;
- activation modules' outputs;
- the loss (a loss module, or a `torch.nn.functional` loss): loss value, predictions, targets; under
  `torch.no_grad()` or with the model in `eval()`, a validation batch;
- the optimizer's step: gradients before it, weights before and after it.

Each of these adds device tensors to the step's row; nothing here reads a device value (no `.item()`,
`.tolist()`, `.cpu()`, `float(tensor)`, no branch on a tensor). Rows go to the ledger, which brings them to
the host every `flush_s` seconds in one transfer. Every hook body is guarded: an exception inside the probe is
reported once on stderr and switches that part of the probe off; training goes on untouched.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.fx import GraphModule
from torch.nn.modules.loss import _Loss

from ..errors import report_once
from ..stop import StopTraining
from . import activations as A
from . import classify as C
from . import data
from . import facts as F
from . import functional as FN
from . import inputs as I
from . import layers as Ly
from . import losses as L
from .cadence import Cadence
from .ledger import Decoder, Ledger, Row, Sums

# Half a second between flushes: a live chart that moves twice a second, and per-flush costs (one
# concatenation, one copy, one frame) spread over hundreds of fast steps.
FLUSH_S = 0.5
# Rows waiting for the host at most; a flush is forced beyond it (memory stays bounded for very fast steps).
MAX_PENDING_ROWS = 2048
# Training loss calls with no optimizer step after which each loss call counts as a step (loops that update
# weights by hand); up to then they are taken for the micro-batches of a first, accumulated step.
LOSS_STEPS_AFTER = 32
# Validation parts held before they are folded together on the device (a long evaluation pass).
VAL_COMPACT = 512
# Bytes of outputs and targets kept for accuracy computed at the flush (ledger.py: deferred parts); beyond
# it accuracy is computed in the step, as on a deep step.
DEFER_BYTES = 8 * 1024 * 1024
# Deferral pays on short steps only: it saves three small kernels a step (~0.07 ms on a 2-ms MLP step), while on
# a 20-ms CNN step keeping the outputs cost more than that (~0.2 ms, measured: BENCHMARKS.md, third session).
DEFER_STEP_S = 0.005
# Weights copied per deep step to measure ‖Δw‖ (the copy lives across optimizer.step()). Larger models
# are covered a slice of layers at a time, round robin: the copy never costs more than this in memory.
UPDATE_BYTES = 64 * 1024 * 1024
# Optimizer steps in a row on gradients never zeroed before the probe says so (a fact; the rules decide).
NOT_ZEROED_STEPS = 32
# Parameters of the primary optimizer that had no gradient, checked per step for one (a layer unfrozen, a new head
# trained): at most this many per step, round robin (a frozen body of a large model holds hundreds).
GRADLESS_CHECK = 64
# Steps in a row whose training loss is another callable (or a loss module configured otherwise) before it is
# taken as the run's loss from then on, and a new phase begins.
LOSS_SWITCH_STEPS = 2
# Every this many steps (at fixed step numbers, whatever the cadence) the probe looks at which of the primary
# optimizer's parameters have a gradient: parameters that lost theirs (a layer frozen, a module replaced in the model
# and not given to the optimizer) start a phase. Each parameter does so once (a branch taken on some steps only).
LOST_CHECK_EVERY = 8

_perf = time.perf_counter
_compiling = torch.compiler.is_compiling
_tracing = torch._C._get_tracing_state
_thread_id = threading.get_ident


def _scalar(t: torch.Tensor) -> torch.Tensor:
    t = t.detach()
    return t if t.dim() == 0 else t.float().mean()


class _OptState:
    """What the probe keeps about one optimizer: its parameter list and the layouts derived from it."""

    def __init__(self, opt: torch.optim.Optimizer, index: int) -> None:
        self.index = index
        self.params: list[torch.Tensor] = []
        self.signature: tuple[int, int] = (-1, -1)
        self.layouts: dict[tuple[int, ...], list[dict[str, Any]]] = {}
        self.snapshot: list[tuple[list[torch.Tensor], list[torch.Tensor], Decoder]] | None = None
        self.refresh(opt)

    def refresh(self, opt: torch.optim.Optimizer) -> None:
        sig = (len(opt.param_groups), sum(len(g["params"]) for g in opt.param_groups))
        if sig != self.signature:
            self.signature = sig
            self.params = [p for g in opt.param_groups for p in g["params"]]
            self.layouts.clear()


class TorchProbe:
    """The PyTorch side of a monitored run. Make it with `install()` or `watch()` (accmon.probe.torch)."""

    def __init__(
        self,
        run: Any,
        *,
        budget: float | None = None,
        every: int | None = None,
        flush_s: float = FLUSH_S,
        model: nn.Module | None = None,
        optimizers: list[torch.optim.Optimizer] | None = None,
        loss_fn: Any = None,
    ) -> None:
        if flush_s <= 0:
            raise ValueError(f"flush_s must be positive seconds; got {flush_s!r}")
        self.run = run
        self.pid = os.getpid()
        self.cadence = Cadence(budget if budget is not None else _env_budget(), every if every is not None else _env_every())
        self.ledger = Ledger(self._sink)
        self.flush_s = flush_s
        self.off = False
        self.broken: set[str] = set()
        self.closed = False
        # What the user pointed at (watch()); None: found automatically.
        self.watch_model = weakref.ref(model) if model is not None else None
        self.watch_opts = weakref.WeakSet(optimizers) if optimizers else None
        self.watch_loss = loss_fn if isinstance(loss_fn, nn.Module) else None
        # Call tracking.
        self.tid: int | None = None
        self.depth = 0
        self.in_loss_module = 0
        self.cur_root: nn.Module | None = None
        # References that must not keep tensors alive (a language model's logits are hundreds of MB):
        # the root's output by weak reference, the last leaf's by id (compared while both are alive).
        self.root_out: weakref.ref | None = None
        self.root_out_module: nn.Module | None = None
        self.last_leaf: nn.Module | None = None
        self.last_leaf_out: int = 0
        # What was found.
        self.roots: list[weakref.ref] = []
        self.module_name: dict[int, str] = {}
        self.param_layer: dict[int, str] | None = None
        self.extra_names: dict[int, str] = {}  # id(parameter) → layer, given by a framework adapter (Keras)
        self.model_ref: weakref.ref | None = None
        self.primary_opt: weakref.ref | None = None
        self.opt_states: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.primary_loss: Any = None
        self.loss_spec: L.LossSpec | None = None
        self.rule: str | None = None  # how the primary loss's outputs become classes (after regress resolution)
        self.output_module: nn.Module | None = None
        self.act_decoders: dict[int, tuple[weakref.ref, A.ActDecoder]] = {}
        self.fn_decoders: dict[str, A.ActDecoder] = {}
        # Functional activations: a TorchFunctionMode over the root's forward on deep steps, and the stack of
        # modules it names them by (kept only while the mode is on).
        self.functional = os.environ.get("ACCMON_TORCH_FUNCTIONAL", "1") != "0"
        self.fmode: FN.FunctionalActivations | None = None
        self.mod_stack: list[nn.Module] = []
        # Step state.
        self.step = -1
        self.cur = Row(0)
        self.grads_now, self.deep_now = self.cadence.plan(0)
        self.step_samples = 0
        self.cur_started = False  # whether the step in progress has begun (a training forward or loss)
        self.loss_calls = 0  # training loss calls while no optimizer has stepped
        self.missing_step: bool | None = None  # an optimizer exists but has not stepped (None: not looked yet)
        self.t_last_end: float | None = None
        # Where a step's time goes (issue 19): the loop's wait in DataLoader.__next__, by loader, during the step;
        # when no DataLoader is seen, the gap from the last step's end to this step's first training forward.
        self.waits: dict[int, float] = {}
        self.t_begin: float | None = None
        self.saw_eval = False  # an evaluation forward since the last step: the gap is not waiting for data
        self.step_tokens = 0
        self.system_figures = getattr(run, "system_figures", None)  # None: a run without them (a framework's own)
        self.t_last_flush = _perf()
        self.spent = 0.0
        self.spent_tiers = {"grads": 0.0, "deep": 0.0}
        self.val_parts: list[tuple[Decoder, torch.Tensor, Any]] = []
        # Epochs.
        self.epoch = 0
        self.epoch_known = False
        # Set by framework callbacks (Lightning, HF Trainer) that give epochs with set_epoch(): their loaders
        # read ahead and run dry a batch before the epoch's last step, so exhaustion would count early.
        self.epochs_from_framework = False
        self.epoch_start = 0
        self.train_loaders: set[int] = set()
        self.last_iter: weakref.ref | None = None  # weak: a held iterator would keep its worker processes
        # Facts.
        self.facts: dict[str, Any] = {"framework": "torch"}
        self.fixed: set[str] = set()  # fact keys a framework adapter (Keras) describes better: left as given
        self.sent_host_facts = False
        self.first_train_loss_seen = False
        self.first_input_seen = False
        self.inferred: dict[str, Any] = {}
        # Decoders shared by every step.
        self.d_loss = C.LossDecoder()
        self.d_acc = C.AccuracyDecoder()
        self.d_val_loss = C.LossDecoder("val_")
        self.d_val_acc = C.AccuracyDecoder("val_")
        # Evaluation passes are told apart by the loader their batches come from: a pass over the training
        # data under no_grad is train_eval_*, a second held-out loader test_*; only the first held-out loader
        # (or batches from no loader) is val_*. Never averaged together.
        self.d_eval: dict[str, tuple[C.LossDecoder, C.AccuracyDecoder]] = {
            p: (C.LossDecoder(p), C.AccuracyDecoder(p)) for p in ("train_eval_", "test_")}
        self.batch_fresh = False  # a DataLoader batch came since the last loss call (last_iter is its source)
        self.val_loader: int | None = None
        self.d_input = I.InputDecoder()
        self.d_hist: dict[tuple[int, str], C.HistDecoder] = {}
        self.d_custom: dict[str, _MeanDecoder] = {}
        self.loss_specs: dict[type, L.LossSpec] = {}
        self.lr_names: dict[tuple[int, bool, int], list[str]] = {}
        self.d_batched_acc: dict[tuple[str, int | None], C.BatchedAccuracy] = {}
        self.last_target: weakref.ref | None = None  # the last training step's target tensor
        self.others_since_primary: dict[int, int] = {}
        self.zeroed = False  # zero_grad() ran since the primary optimizer's last step (hooks.py)
        self.last_grad: weakref.ref | None = None
        self.not_zeroed = 0  # id(optimizer) -> its steps since the primary's last
        self.loss_module: nn.Module | None = None  # the loss module of the first training loss call, for its facts
        # Phases (docs/rules.md): the primary optimizer's group count and its parameters that had no gradient;
        # the training loss's configuration and what stood in for it this step.
        self.primary_groups = 0
        self.gradless: list[torch.Tensor] = []
        self.gradless_cursor = 0
        self.gradless_at = -1  # the step at which parameters with no gradient are noted (_watch_params)
        self.with_grad: set[int] | None = None  # indices of the primary's parameters with a gradient at the last look
        self.lost_once: set[int] = set()
        self.loss_sig: Any = None  # configuration of the loss module being called (set around _loss)
        self.primary_sig: Any = None
        self.primary_seen = False
        self.other_loss: tuple[L.LossSpec, Any, Any] | None = None
        self.other_loss_steps = 0
        self.other_loss_from = 0
        self.loss_sigs: set[Any] = set()
        self.loss_gen = 0  # which loss the facts being taken are for (a new one takes over: +1)
        self.data_sig: Any = None
        # Stopping (probe/stop.py): raise StopTraining from the optimizer step, unless a framework integration
        # stops its loop its own way (it sets this False); the step last looked at, so that a step is asked once.
        self.raise_stop = True
        self.stop_looked_at = -2

    # ==== guards ==============================================================================================
    def _fail(self, part: str, exc: BaseException) -> None:
        self.broken.add(part)
        report_once(f"torch-{part}", f"the PyTorch probe's {part} statistics are off after an internal error "
                    f"({type(exc).__name__}: {exc}); training is not affected")

    def _mine(self) -> bool:
        """Whether a hook firing now belongs to the monitored training thread of this process."""
        if self.off:
            return False
        return threading.get_ident() == self.tid or self._adopt()

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

    def _adopt(self) -> bool:
        """The first thread to call a module (or step an optimizer) is the training thread."""
        if self.tid is None:
            self.tid = threading.get_ident()
            return True
        return False

    def _root_enter(self, module: nn.Module) -> None:
        if self.watch_model is not None and module is not self.watch_model() or isinstance(module, GraphModule):
            # GraphModule: a compiled graph run by torch.compile's backend, not the user's model.
            self.cur_root = None
            return
        self.cur_root = module
        if not module.training:
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

    def _live_roots(self) -> list[nn.Module]:
        out = []
        for r in self.roots:
            m = r()
            if m is not None:
                out.append(m)
        return out

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

    # ==== losses ==============================================================================================
    def _loss_module_call(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        spec = self.loss_specs.get(type(module))
        if spec is None:
            spec = self.loss_specs[type(module)] = L.spec_for(type(module).__name__)
        inp, target = _loss_args(args, kwargs)
        ignore = getattr(module, "ignore_index", None)
        self.loss_module = module if not self.first_train_loss_seen else None
        # Keyed by kind, not by module: scripts that build `nn.CrossEntropyLoss()` afresh every step are common.
        # Its configuration (not its identity) tells a new loss module of the same kind: class weights added, a
        # label smoothing changed (a phase of its own).
        self.loss_sig = (spec.kind, getattr(module, "label_smoothing", None), getattr(module, "weight", None) is None,
                         getattr(module, "pos_weight", None) is None, getattr(module, "reduction", None))
        try:
            self._loss(spec, spec.kind, inp, target, output, ignore, getattr(module, "reduction", None), "module")
        finally:
            self.loss_module = None
            self.loss_sig = None

    def on_functional_loss(self, spec: L.LossSpec, args: tuple, kwargs: dict, output: Any) -> None:
        """A `torch.nn.functional` loss was called outside any loss module."""
        if _compiling() or self.in_loss_module or not self._mine() or "loss" in self.broken:
            return
        if self.watch_loss is not None:
            return
        t0 = _perf()
        try:
            inp, target = _loss_args(args, kwargs)
            ignore = None
            if spec.kind in ("CrossEntropyLoss", "NLLLoss"):
                ignore = kwargs.get("ignore_index", args[4] if len(args) > 4 else -100)
            self._loss(spec, spec.kind, inp, target, output, ignore, kwargs.get("reduction", "mean"), "functional")
        except Exception as exc:
            self._fail("loss", exc)
        self.spent += _perf() - t0

    def observe(self, output: torch.Tensor, target: torch.Tensor, loss: torch.Tensor | None = None, *,
                kind: str | None = None, train: bool | None = None) -> None:
        """Explicit loss call for custom loss functions: accuracy from `output` and `target`.

        `kind` names the loss whose convention the outputs follow ("CrossEntropyLoss": class scores,
        "BCELoss": probabilities, "BCEWithLogitsLoss": logits, "MSELoss": regression). Without it: integer
        targets with one dimension fewer than the output are classes (argmax), same-shaped targets are
        binary or multi-label labels against logits, anything else regression.
        """
        if self.off or "loss" in self.broken:
            return
        t0 = _perf()
        try:
            if kind is None:
                if not target.is_floating_point() and output.dim() == target.dim() + 1:
                    kind = "CrossEntropyLoss"
                elif output.shape == target.shape or output.numel() == target.numel():
                    kind = "BCEWithLogitsLoss"
                else:
                    kind = "MSELoss"
            spec = L.spec_for(kind)
            value = loss if loss is not None else torch.full((), float("nan"), device=output.device)
            self._loss(spec, ("observe", kind), output, target, value, -100 if spec.rule == L.ARGMAX else None,
                       "mean", "explicit", train)
        except Exception as exc:
            self._fail("loss", exc)
        self.spent += _perf() - t0

    def _is_train(self) -> bool:
        root = self.cur_root
        return torch.is_grad_enabled() and (root is None or root.training)

    def _loss(self, spec: L.LossSpec, key: Any, inp: Any, target: Any, loss: Any, ignore: Any,
              reduction: Any, via: str, train: bool | None = None) -> None:
        # No no_grad() needed: every op below works on detached tensors or yields integers/bools.
        if not isinstance(inp, torch.Tensor) or not isinstance(loss, torch.Tensor) or inp.is_meta:
            return
        if not isinstance(target, torch.Tensor):
            target = None
        n = int(inp.shape[0]) if inp.dim() > 0 else 1
        out = inp.detach()
        fresh, self.batch_fresh = self.batch_fresh, False
        if not (self._is_train() if train is None else train):
            self._val_loss(key, out, target, loss, ignore, n, self._eval_source() if fresh else _split_on_stack())
            return
        if self.val_parts:
            self._end_val()
        sig = self.loss_sig if self.loss_sig is not None else key
        if self.primary_loss is None:
            self.primary_loss = key
            self.loss_spec = spec
            self.rule = spec.rule if spec.classifies else None
            self.primary_sig = sig
            self.loss_sigs.add(sig)
        elif key != self.primary_loss:
            # A second loss (an auxiliary head): the primary one speaks for the step. A step with this one and
            # not the primary is counted: from LOSS_SWITCH_STEPS in a row it is the run's loss (_end_step).
            self.other_loss = (spec, key, sig)
            return
        if sig == self.primary_sig:
            self.primary_seen = True
        else:
            self.other_loss = (spec, key, sig)  # the same kind, configured otherwise: recorded, and counted
        if self.primary_opt is None:
            # No torch.optim optimizer (yet): a manual update loop, or micro-batches before the first step, or
            # a forgotten optimizer.step(). After LOSS_STEPS_AFTER loss calls, each loss call is a step.
            self.loss_calls += 1
            if self.loss_calls >= LOSS_STEPS_AFTER and self.loss_calls & (self.loss_calls - 1) == 0:
                self._report_missing_step()
            if self.loss_calls > LOSS_STEPS_AFTER:
                self._end_step()
        self.step_samples += n
        if not self.cur_started:
            self._step_begins()
        row = self.cur
        row.add(self.d_loss, _scalar(loss), n)
        if target is None:
            return
        if not self.first_train_loss_seen:
            self.first_train_loss_seen = True
            self._loss_facts(spec, inp, target, ignore, reduction, via)
            if self.sent_host_facts:  # a new loss (a new phase): its facts replace the old loss's
                keys = ("loss", "task", "num_classes", "predictions", "targets", "batch_size")
                self.run.set_facts(**{k: self.facts[k] for k in keys if k in self.facts})
        rule = self.rule
        if rule is None:
            return
        # A script that refills one target buffer in place passes the same tensor every step: its values
        # must be read in the step. A weak reference: a segmentation mask must not outlive its step here.
        refilled = self.last_target is not None and self.last_target() is target
        self.last_target = weakref.ref(target)
        if not (self.deep_now or refilled) and self._defer_accuracy(rule, out, target, ignore, row):
            return
        got = C.classes(rule, out, target)
        if got is None:
            return
        pred, true = got
        part, total = C.accuracy_part(rule, pred, true, ignore if isinstance(ignore, int) else None)
        row.add(self.d_acc, part, total)
        if self.deep_now:
            t0 = _perf()
            self._hist(rule, out, pred, true, row)
            self.spent_tiers["deep"] += _perf() - t0

    def _defer_accuracy(self, rule: str, out: torch.Tensor, target: torch.Tensor, ignore: Any, row: Row) -> bool:
        """Leave a CPU step's accuracy to the flush, which takes a few hundred steps in one kernel each.

        Not on other devices (there a kernel launch is cheap and the step's stream is the one to use), not
        once a deferred target was found changed at a flush (buffers refilled in place), not on steps longer
        than DEFER_STEP_S, and not beyond DEFER_BYTES of kept tensors."""
        if (self.cadence.step_time > DEFER_STEP_S or not (out.is_cpu and target.is_cpu) or self.ledger.stale
                or not C.BatchedAccuracy.takes(rule, out, target)):
            return False
        nbytes = out.numel() * out.element_size() + target.numel() * target.element_size()
        if self.ledger.held + row.held + nbytes > DEFER_BYTES:
            return False
        key = (rule, ignore if isinstance(ignore, int) else None)
        batched = self.d_batched_acc.get(key)
        if batched is None:
            batched = self.d_batched_acc[key] = C.BatchedAccuracy(*key)
        row.defer(self.d_acc, batched, (out, target), nbytes)
        return True

    def on_clip(self, total_norm: Any, max_norm: Any) -> None:
        """clip_grad_norm_ returned `total_norm`, the gradients' norm before clipping: record it and whether
        clipping engaged (both stay on the device until the flush)."""
        if self.off or "clip" in self.broken or not isinstance(total_norm, torch.Tensor):
            return
        t0 = _perf()
        try:
            norm = total_norm.detach().reshape(()).float()
            row = self.cur
            dec = self.d_custom.get("grad_norm_preclip") or self.d_custom.setdefault(
                "grad_norm_preclip", _MeanDecoder("grad_norm_preclip"))
            row.add(dec, norm, 1)
            if isinstance(max_norm, (int, float)) and not isinstance(max_norm, bool):
                clipped = norm > float(max_norm)
                dec = self.d_custom.get("clip_frac") or self.d_custom.setdefault("clip_frac", _MeanDecoder("clip_frac"))
                row.add(dec, clipped.float(), 1)
                if "clip_max_norm" not in self.facts:
                    self.facts["clip_max_norm"] = float(max_norm)
                    self.run.set_facts(clip_max_norm=float(max_norm))
        except Exception as exc:
            self._fail("clip", exc)
        self.spent += _perf() - t0

    def _report_missing_step(self) -> None:
        """An optimizer exists (among the script's variables) but never stepped: the pending_loss_calls fact
        (docs/frames.md) lets the rules say so. A loop with no optimizer at all updates weights by hand."""
        if self.missing_step is None:
            self.missing_step = bool(F.objects_on_stack(torch.optim.Optimizer))
        if self.missing_step:
            self.facts["pending_loss_calls"] = self.loss_calls
            self.run.set_facts(pending_loss_calls=self.loss_calls)

    def _eval_source(self) -> str:
        """Which evaluation an evaluation batch belongs to, from the loader it came from."""
        it = self.last_iter() if self.last_iter is not None else None
        if it is None:
            return "val_"
        key = data.loader_key(it)
        if key in self.train_loaders:
            return "train_eval_"
        if self.val_loader is None:
            self.val_loader = key
        return "val_" if key == self.val_loader else "test_"

    def _val_loss(self, key: Any, out: torch.Tensor, target: Any, loss: torch.Tensor, ignore: Any, n: int,
                  source: str = "val_") -> None:
        d_loss, d_acc = (self.d_val_loss, self.d_val_acc) if source == "val_" else self.d_eval[source]
        self.val_parts.append((d_loss, _scalar(loss), n))
        if target is not None and key == self.primary_loss and self.rule is not None:
            got = C.classes(self.rule, out, target)
            if got is not None:
                part, total = C.accuracy_part(self.rule, got[0], got[1], ignore if isinstance(ignore, int) else None)
                self.val_parts.append((d_acc, part, total))
        if len(self.val_parts) >= VAL_COMPACT:
            self._compact_val()
        # A long evaluation pass must not hold back the training steps before it.
        if self.ledger.rows and _perf() - self.t_last_flush >= self.flush_s:
            if self.ledger.start_flush(keep_last=1):
                self.t_last_flush = _perf()
            self.ledger.poll()

    def _compact_val(self) -> None:
        """Fold a long evaluation pass's parts into one per decoder, on the device (memory stays bounded)."""
        by_dec: dict[int, list[tuple[Decoder, torch.Tensor, Any]]] = {}
        for part in self.val_parts:
            by_dec.setdefault(id(part[0]), []).append(part)
        out: list[tuple[Decoder, torch.Tensor, Any]] = []
        for parts in by_dec.values():
            dec = parts[0][0]
            if isinstance(dec, C.LossDecoder):
                total = float(sum(p[2] for p in parts))
                # Python-number weights go to the kernels as arguments: no host-to-device copy.
                mean = torch.stack([p[1].float() * (p[2] / total) for p in parts]).sum()
                out.append((dec, mean, total))
            elif all(p[2] is not None for p in parts):  # [correct] with counted on the host
                out.append((dec, torch.stack([p[1] for p in parts]).sum(), sum(p[2] for p in parts)))
            elif all(p[2] is None for p in parts):  # [correct, counted] pairs
                out.append((dec, torch.stack([p[1] for p in parts]).sum(0), None))
            else:
                out.extend(parts)
        self.val_parts = out

    def _hist(self, rule: str, inp: torch.Tensor, pred: torch.Tensor, true: torch.Tensor, row: Row) -> None:
        spec = self.loss_spec
        k = L.num_classes_of(spec, tuple(inp.shape)) if spec is not None and spec.rule == rule else None
        if rule == L.ARGMAX and k is None:
            k = int(inp.shape[1]) if inp.dim() >= 2 else int(inp.shape[0])
        if k is None:
            k = 2
        multilabel = rule != L.ARGMAX and k > 2 or (rule != L.ARGMAX and spec is not None and spec.kind == "MultiLabelSoftMarginLoss")
        mode = "classes" if rule == L.ARGMAX else ("multilabel" if multilabel else "binary")
        got = C.hist_part(rule, pred, true, k, multilabel)
        if got is None:
            return
        dec = self.d_hist.get((k, mode))
        if dec is None:
            dec = self.d_hist[(k, mode)] = C.HistDecoder(k, mode)
        row.add(dec, got[0], got[1])

    def _loss_facts(self, spec: L.LossSpec, inp: torch.Tensor, target: torch.Tensor, ignore: Any, reduction: Any,
                    via: str) -> None:
        f = self.facts
        if "loss" not in self.fixed:
            f["loss"] = {"kind": spec.kind, "reduction": reduction if isinstance(reduction, str) else None, "via": via}
            if isinstance(ignore, int) and spec.rule == L.ARGMAX:
                f["loss"]["ignore_index"] = ignore
            options, weights = _loss_options(self.loss_module)
            f["loss"].update(options)
            for key, w in weights.items():
                self.cur.add(C.FactsDecoder(self._weight_facts), w, (key, self.loss_gen))
        task = L.task_of(spec, tuple(inp.shape), tuple(target.shape))
        if task is not None:
            f["task"] = task
        k = L.num_classes_of(spec, tuple(inp.shape))
        if k is not None:
            f["num_classes"] = k
        f["predictions"] = {"shape": list(inp.shape), "dtype": F.dtype_name(inp)}
        f["targets"] = {"dtype": F.dtype_name(target), "shape": list(target.shape)}
        f["batch_size"] = int(inp.shape[0]) if inp.dim() > 0 else 1
        # Which module produced the predictions: the model's last leaf module, when the loss got the
        # model's own output. A functional activation inside forward() leaves this unknown; the values tell.
        if self.root_out is not None and inp is self.root_out():
            self.output_module = self.root_out_module
        # Tagged with the loss they were taken for: they come home with a flush, maybe after a new loss took over.
        self.cur.add(C.FactsDecoder(self._target_facts), C.target_facts_part(target, inp), self.loss_gen)
        self.cur.add(C.FactsDecoder(self._output_facts), C.output_facts_part(inp), self.loss_gen)

    def _step_begins(self) -> None:
        """The first training forward (or loss) of a step. The last finished step's row was kept back so that a
        validation pass after it could join it; that pass is over now. When steps are slow, the row leaves
        at once: otherwise a viewer would see every step one (long) step late."""
        self.cur_started = True
        self.t_begin = _perf()
        if self.val_parts:
            self._end_val()
        ledger = self.ledger
        if ledger.rows and self.cadence.step_time >= self.flush_s:
            if ledger.in_flight is not None:
                ledger.poll()
            if ledger.start_flush(keep_last=0):
                self.t_last_flush = _perf()
                ledger.poll()

    # ==== validation ==========================================================================================
    def _end_val(self) -> None:
        parts, self.val_parts = self.val_parts, []
        target = self.ledger.rows[-1] if self.ledger.rows else self.cur
        target.parts.extend(parts)

    # ==== optimizer hooks =====================================================================================
    def _opt_state(self, opt: torch.optim.Optimizer) -> _OptState:
        st = self.opt_states.get(opt)
        if st is None:
            st = _OptState(opt, len(self.opt_states))
            self.opt_states[opt] = st
        else:
            st.refresh(opt)
        return st

    def _watching(self, opt: torch.optim.Optimizer) -> bool:
        return self.watch_opts is None or opt in self.watch_opts

    def on_opt_pre(self, opt: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        if self.off or _compiling() or "optimizer" in self.broken or not self._watching(opt):
            return None
        self.tid = _thread_id()
        primary = self.primary_opt
        if primary is not None:
            if primary() is opt:
                if self.others_since_primary:
                    self.others_since_primary.clear()
                try:
                    self._check_zeroed(opt)
                except Exception as exc:
                    self._fail("optimizer", exc)
                    return None
            else:
                # Another optimizer steps. Twice with no step of the primary between: the primary was left behind
                # (a new optimizer for a fine-tuning phase, the old one still referenced). It counts the steps now.
                n = self.others_since_primary[id(opt)] = self.others_since_primary.get(id(opt), 0) + 1
                if n >= 2 and self.step >= 0:
                    self.primary_opt = primary = weakref.ref(opt)
                    self.others_since_primary.clear()
                    self._new_phase("a new optimizer took over")
                    self._watch_params(opt)
        if (not (self.grads_now or self.deep_now or self.val_parts) and primary is not None
                and primary() is not None and opt in self.opt_states):
            return None  # a known optimizer on a step that samples nothing: nothing to do before it steps
        t0 = _perf()
        try:
            if self.val_parts:
                self._end_val()
            if self.primary_opt is not None and self.primary_opt() is None and self.step >= 0:
                # The optimizer that counted the steps is gone (the script built a new one for a new phase).
                self._new_phase("a new optimizer replaced the old one")
            if self.primary_opt is None or self.primary_opt() is None:
                self.primary_opt = weakref.ref(opt)
                self._watch_params(opt)
                if self.facts.get("pending_loss_calls"):
                    self.facts["pending_loss_calls"] = 0  # it steps after all
                    self.run.set_facts(pending_loss_calls=0)
            if opt not in self.opt_states:
                self._opt_state(opt)
                if self.sent_host_facts:  # an optimizer that starts stepping later (a second one, a new phase)
                    self._send_optimizer_facts()
            if self.grads_now or self.deep_now:
                prev = torch.is_grad_enabled()
                torch.set_grad_enabled(False)  # norms and copies of leaf parameters must not build a graph
                try:
                    self._grad_stats(self._opt_state(opt))
                finally:
                    torch.set_grad_enabled(prev)
        except Exception as exc:
            self._fail("optimizer", exc)
        self.spent += _perf() - t0
        return None

    def _watch_params(self, opt: torch.optim.Optimizer) -> None:
        """The primary optimizer's parameter groups, and which of its parameters have no gradient at its first step
        (frozen layers): one that gets a gradient later is a layer unfrozen or a head trained from then on."""
        self.primary_groups = len(opt.param_groups)
        # Taken after the optimizer's first step (see _opt_post).
        self.gradless = []
        self.gradless_at = self.step + 1
        self.gradless_cursor = 0
        self.with_grad = None
        self.lost_once = set()

    def _check_params(self, opt: torch.optim.Optimizer) -> None:
        """Each step of the primary optimizer: a parameter group added (a replaced or new module trained under the
        same optimizer: `opt.add_param_group`), or parameters that had no gradient receiving one (a layer
        unfrozen, a head that starts training), begins a new phase. A length compared, and at most GRADLESS_CHECK
        references tested, per step."""
        if self.step + 1 == self.gradless_at:
            self.gradless = [p for g in opt.param_groups for p in g["params"] if p.grad is None]
        n = len(opt.param_groups)
        if n != self.primary_groups:
            added = n > self.primary_groups
            new = [p for g in opt.param_groups[self.primary_groups:] for p in g["params"]] if added else []
            self.primary_groups = n
            self.gradless.extend(p for p in new if p.grad is None)
            if added and self.step >= 0:
                self._new_phase("a parameter group joined the optimizer (a new or replaced module trained)",
                                refresh=True)
        if (self.step + 1) % LOST_CHECK_EVERY == 0:
            self._check_lost(opt)
        gradless = self.gradless
        if not gradless:
            return
        if len(gradless) <= GRADLESS_CHECK:
            woke = any(p.grad is not None for p in gradless)
        else:  # round robin: every parameter is looked at within ceil(n / GRADLESS_CHECK) steps
            c = self.gradless_cursor % len(gradless)
            self.gradless_cursor = c + GRADLESS_CHECK
            woke = any(p.grad is not None for p in gradless[c:c + GRADLESS_CHECK])
        if woke:
            self.gradless = [p for p in gradless if p.grad is None]
            if self.step >= 0:
                self._new_phase("parameters that had no gradient receive one (a layer unfrozen or a new head "
                                "trained)", refresh=True)

    def _check_lost(self, opt: torch.optim.Optimizer) -> None:
        """Parameters of the primary optimizer that had a gradient at the last look and have none now: a layer
        frozen, or a module replaced in the model and not given to the optimizer (which then updates what the model no
        longer holds). A new phase, and the model and optimizer facts taken again (what the optimizer covers)."""
        now = {i for i, p in enumerate(p for g in opt.param_groups for p in g["params"]) if p.grad is not None}
        before, self.with_grad = self.with_grad, now
        if before is None or before <= now:
            return
        lost = before - now - self.lost_once
        self.lost_once |= before - now
        if lost and self.step >= 0:
            self._new_phase("parameters of the optimizer no longer receive a gradient (a layer frozen, or a module "
                            "replaced)", refresh=True)

    def _check_zeroed(self, opt: torch.optim.Optimizer) -> None:
        """The primary optimizer's first gradient is the very tensor of its last step, and no zero_grad() ran
        between: gradients add up from step to step. After NOT_ZEROED_STEPS such steps in a row, the
        `grads_not_zeroed` fact says so (a reference and a flag: no tensor work)."""
        try:
            g = opt.param_groups[0]["params"][0].grad
        except (IndexError, KeyError, AttributeError):
            return
        last = self.last_grad() if self.last_grad is not None else None
        if g is not None and g is last and not self.zeroed:
            self.not_zeroed += 1
            if self.not_zeroed >= NOT_ZEROED_STEPS and self.not_zeroed & (self.not_zeroed - 1) == 0:
                self.facts["grads_not_zeroed"] = self.not_zeroed
                self.run.set_facts(grads_not_zeroed=self.not_zeroed)
        else:
            if self.not_zeroed >= NOT_ZEROED_STEPS:
                self.facts["grads_not_zeroed"] = 0
                self.run.set_facts(grads_not_zeroed=0)
            self.not_zeroed = 0
        self.zeroed = False
        self.last_grad = weakref.ref(g) if g is not None else None

    def _layout(self, st: _OptState) -> list[dict[str, Any]] | None:
        """The parameters with gradients, in groups that one foreach kernel can take: one device each, and
        sharded parameters (FSDP) apart, since their norms are partial and only their squares add up."""
        idx = tuple(i for i, p in enumerate(st.params) if p.grad is not None)
        if not idx:
            return None
        groups = st.layouts.get(idx)
        if groups is None:
            if self.param_layer is None:
                self.param_layer = F.layer_names(self._live_roots())
            if any(id(st.params[i]) not in self.param_layer and id(st.params[i]) not in self.extra_names for i in idx):
                # The model was never called outside a compiled region (or not at all): look for it among
                # the variables of the calling code, once per layout.
                found = F.modules_on_stack([st.params[i] for i in idx])
                if found:
                    self.roots.extend(weakref.ref(m) for m in found if not any(r() is m for r in self.roots))
                    self.module_name = F.module_names(self._live_roots())
                    self.param_layer = F.layer_names(self._live_roots())
            by_key: dict[tuple, list[int]] = {}
            for i in idx:
                p = st.params[i]
                by_key.setdefault((_local(p).device, _sharded(p)), []).append(i)
            groups = []
            for (_, sharded), members in by_key.items():
                names = [self.extra_names.get(id(st.params[i])) or self.param_layer.get(id(st.params[i]))
                         or f"opt{st.index}.param{i}" for i in members]
                layout = Ly.ParamLayout(names)
                params = [st.params[i] for i in members]
                locals_ = [_local(p) for p in params]
                groups.append({
                    "params": params,
                    "local": locals_,
                    "sharded": sharded,
                    "gsq": Ly.NormDecoder(layout, "gssq" if sharded else "gsq"),
                    "wsq": Ly.NormDecoder(layout, "wsq"),
                    "nonfinite": Ly.NonfiniteDecoder([t.numel() for t in locals_]),
                    "slices": _update_slices(layout, params),
                    "cursor": 0,
                })
            st.layouts[idx] = groups
        return groups

    def _grad_stats(self, st: _OptState) -> None:
        t0 = _perf()
        groups = self._layout(st)
        if groups is None:
            return
        row = self.cur
        for g in groups:
            # A sharded parameter's gradient is read through its local shard: a norm of the DTensor itself
            # would be a collective, inside one rank's hook.
            grads = [_local(p.grad) for p in g["params"]]
            row.add(g["gsq"], Ly.norms(grads))
        t1 = _perf()
        self.spent_tiers["grads"] += t1 - t0
        if not self.deep_now:
            return
        snapshot: list[tuple[list[torch.Tensor], list[torch.Tensor], Decoder]] = []
        for g in groups:
            grads = [_local(p.grad) for p in g["params"]]
            row.add(g["nonfinite"], Ly.nonfinite_counts(grads))
            if g["sharded"]:
                continue  # partial weight norms would mislead; the gradients' squares are what ranks can add
            params = g["params"]
            row.add(g["wsq"], Ly.norms(params))
            slices = g["slices"]
            sl = slices[g["cursor"] % len(slices)]
            g["cursor"] += 1
            chosen = [params[i] for i in sl[0]]
            if sl[2] is not None:
                row.add(sl[2], Ly.norms(chosen))
            # The weights before the step, copied: ‖Δw‖ needs them after optimizer.step() has changed them.
            snapshot.append((chosen, list(torch._foreach_mul(chosen, 1.0)), sl[1]))
        st.snapshot = snapshot or None
        self.spent_tiers["deep"] += _perf() - t1

    def on_opt_post(self, opt: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        self._opt_post(opt, end=True)
        # The one thing a step pays for --stop-on: this attribute read (the I/O thread sets it; no lock needed).
        # The try costs nothing until it catches (a run object without stopping, None or a stand-in, stops nothing);
        # timeit: the check alone +8 ns a call, inside this try +9 ns.
        try:
            if self.run.stop_request is not None:
                self._stop_here()
        except AttributeError:
            return

    def _stop_here(self) -> None:
        """A stop was asked for (probe/stop.py): at the boundary after a training step, raise StopTraining out of
        optimizer.step() — the step itself is done. Not when a framework's callback owns the door (Lightning,
        HF Trainer, Keras set their own flag), and once per step at most."""
        if not self.raise_stop or self.off or self.step == self.stop_looked_at:
            return
        self.stop_looked_at = self.step
        stop = self.run.honour_stop(self.step)
        if stop is not None:
            raise StopTraining(stop)

    def on_opt_post_keras(self, opt: Any) -> None:
        """After a Keras optimizer's apply(): its statistics, but the Keras callback ends the step."""
        self._opt_post(opt, end=False)

    def _opt_post(self, opt: Any, end: bool) -> None:
        if self.off or _compiling() or "optimizer" in self.broken or not self._watching(opt):
            return None
        t0 = _perf()
        try:
            st = self.opt_states.get(opt)
            if st is not None and st.snapshot is not None:
                snapshot, st.snapshot = st.snapshot, None
                prev = torch.is_grad_enabled()
                torch.set_grad_enabled(False)
                try:
                    for chosen, before, dec in snapshot:
                        self.cur.add(dec, Ly.norms(list(torch._foreach_sub(before, chosen))))
                finally:
                    torch.set_grad_enabled(prev)
                self.spent_tiers["deep"] += _perf() - t0
            primary = self.primary_opt is not None and self.primary_opt() is opt
            self._lrs(opt, st.index if st is not None else len(self.opt_states), primary)
            if primary and end:
                # After step(): an optimizer stepped with a closure (Lightning, LBFGS) has computed its gradients
                # inside it, so which parameters have one is known here for every kind of loop, not before.
                if (self.gradless or len(opt.param_groups) != self.primary_groups
                        or (self.step + 1) % LOST_CHECK_EVERY == 0 or self.step + 1 == self.gradless_at):
                    self._check_params(opt)
                self.spent += _perf() - t0
                self._end_step()  # accounts for its own time, in the step it ends
                return None
        except Exception as exc:
            self._fail("optimizer", exc)
        self.spent += _perf() - t0
        return None

    def _lrs(self, opt: torch.optim.Optimizer, index: int, primary: bool) -> None:
        s = self.cur.scalars
        groups = opt.param_groups
        names = self.lr_names.get((index, primary, len(groups)))
        if names is None:
            names = [f"lr/{g}" if primary else f"lr/opt{index}.{g}" for g in range(len(groups))]
            self.lr_names[(index, primary, len(groups))] = names
        for g, group in enumerate(groups):
            lr = group.get("lr")
            name = names[g]
            if type(lr) is float:  # the common case first: a plain float learning rate
                s[name] = lr
                if primary and g == 0:
                    s["lr"] = lr
                continue
            if not isinstance(lr, (torch.Tensor, int, float)):
                lr = getattr(lr, "value", None)  # a Keras Variable holds a torch tensor on the torch backend
            if isinstance(lr, torch.Tensor):
                # A copy: a scheduler may assign into this very tensor before the flush reads it.
                value = lr.detach().reshape(()).clone()
                dec = self.d_custom.get(name) or self.d_custom.setdefault(name, _MeanDecoder(name))
                self.cur.add(dec, value, 1)
                if primary and g == 0:
                    dec0 = self.d_custom.get("lr") or self.d_custom.setdefault("lr", _MeanDecoder("lr"))
                    self.cur.add(dec0, value, 1)
            elif isinstance(lr, (int, float)):
                s[name] = float(lr)
                if primary and g == 0:
                    s["lr"] = float(lr)

    # ==== steps ===============================================================================================
    def end_step(self) -> None:
        """Mark the end of a training step by hand (training loops with no torch.optim optimizer)."""
        if self.off:
            return
        try:
            self._end_step()
        except Exception as exc:
            self._fail("steps", exc)

    def _end_step(self) -> None:
        now = _perf()
        row = self.cur
        step = self.step + 1
        row.step = step
        row.time = time.time()
        s = row.scalars
        self._note_loader()
        if self.t_last_end is not None:
            dt = now - self.t_last_end
            if dt > 0:
                s["step_time"] = dt
                if self.step_samples:
                    s["samples_per_s"] = self.step_samples / dt
                if self.step_tokens:
                    s["tokens_per_s"] = self.step_tokens / dt
                wait = self._data_wait()
                if wait is not None:
                    s["data_wait"] = min(wait, dt)
        self.waits.clear()
        self.saw_eval = False
        self.step_tokens = 0
        if self.system_figures is not None:
            s.update(self.system_figures(step))
        if self.other_loss is not None and not self.primary_seen:
            self._loss_switch(step)
        elif self.other_loss_steps:
            self.other_loss_steps = 0
        self.primary_seen = False
        self.other_loss = None
        if self.epoch_known:
            s["epoch"] = self.epoch
        self.ledger.append(row)
        sampled = (self.grads_now, self.deep_now)
        self.step = step
        self.cur = Row(step + 1)
        self.cur_started = False
        self.step_samples = 0
        if not self.sent_host_facts:
            self._send_host_facts()
        # Flush: time-based, and keep the newest row back so a validation pass that follows it can join it.
        ledger = self.ledger
        if ledger.in_flight is not None:
            ledger.poll()
        if now - self.t_last_flush >= self.flush_s or len(ledger.rows) >= MAX_PENDING_ROWS:
            if ledger.start_flush(keep_last=1):
                self.t_last_flush = now
                ledger.poll()
        spent = self.spent + (_perf() - now)
        tiers = self.spent_tiers
        self.cadence.observe(
            None if self.t_last_end is None else now - self.t_last_end,
            max(spent - tiers["grads"] - tiers["deep"], 0.0),
            tiers,
            sampled,
        )
        self.spent = 0.0
        self.spent_tiers = {"grads": 0.0, "deep": 0.0}
        self.grads_now, self.deep_now = self.cadence.plan(step + 1)
        self.t_last_end = _perf()

    def _data_wait(self) -> float | None:
        """Seconds this step waited for its batch: the training loaders' __next__ time, or, with no DataLoader,
        the gap before the step's first forward. The gap is not used after an evaluation pass (not waiting for
        data), nor once CUDA is in use: a `loss.item()` after the optimizer step waits there for the device."""
        if self.waits:
            train = [w for key, w in self.waits.items() if key in self.train_loaders]
            return sum(train) if train else None
        if self.t_begin is None or self.t_last_end is None or self.saw_eval or self.t_begin < self.t_last_end:
            return None
        if torch.cuda.is_initialized():
            return None
        return self.t_begin - self.t_last_end

    # ==== epochs and data =====================================================================================
    def on_batch(self, it: Any, seconds: float = 0.0) -> None:
        if self.off:
            return
        self.last_iter = weakref.ref(it)
        self.batch_fresh = True
        if self.tid == _thread_id() and len(self.waits) < 64:
            key = data.loader_key(it)
            self.waits[key] = self.waits.get(key, 0.0) + seconds

    def on_exhausted(self, it: Any) -> None:
        if self.off or self.epochs_from_framework:
            return
        try:
            if data.loader_key(it) in self.train_loaders and self.step >= self.epoch_start:
                if "epoch_steps" not in self.facts and self.epoch == 0:
                    self.facts["epoch_steps"] = self.step + 1 - self.epoch_start
                    self.run.set_facts(epoch_steps=self.facts["epoch_steps"])
                self.epoch += 1
                self.epoch_start = self.step + 1
                self.epoch_known = True
        except Exception as exc:
            self._fail("data", exc)

    def _note_loader(self) -> None:
        it = self.last_iter() if self.last_iter is not None else None
        if it is None:
            return
        key = data.loader_key(it)
        if key not in self.train_loaders:
            self.train_loaders.add(key)
            self.epoch_known = True
            # A data set of the same kind and size as the last one is taken as the same data drawn again: a
            # script that rebuilds its data set every epoch (shuffled by hand, augmented anew) is one phase.
            sig = data.source_signature(it)
            if len(self.train_loaders) > 1 and sig != self.data_sig:
                self._new_phase("training batches come from a new data source")
            self.data_sig = sig
            if len(self.train_loaders) == 1:
                self.facts.update(data.describe(it))
                if self.sent_host_facts:
                    self.run.set_facts(**data.describe(it))

    def _loss_switch(self, step: int) -> None:
        """A step whose training loss was another callable (or the same kind configured otherwise) and not the
        run's loss. From LOSS_SWITCH_STEPS such steps in a row, it is the run's loss: its facts are read again
        and a new phase begins where it first came (a pre-training objective followed by a task loss).
        A loss that was the run's loss before takes over again without a new phase (tasks trained in turn)."""
        assert self.other_loss is not None
        spec, key, sig = self.other_loss
        if self.other_loss_steps == 0:
            self.other_loss_from = step
        self.other_loss_steps += 1
        if self.other_loss_steps < LOSS_SWITCH_STEPS:
            return
        self.other_loss_steps = 0
        self.primary_loss, self.loss_spec, self.primary_sig = key, spec, sig
        self.rule = spec.rule if spec.classifies else None
        if sig not in self.loss_sigs:
            self.loss_sigs.add(sig)
            self.first_train_loss_seen = False  # the next call of the new loss takes its facts
            self.loss_gen += 1
            self.last_target = None
            self._new_phase(f"a new training loss ({spec.kind})", start=self.other_loss_from)

    def _new_phase(self, why: str, start: int | None = None, refresh: bool = False) -> None:
        """A new phase of training begins with the next step (or `start`): rules that compare with the run's
        history (best losses, where the loss started, the validation curve) start that history again from here.
        The first held-out loader evaluated from now on is the validation set (a fine-tuning phase brings its own).
        `refresh`: the model or the optimizer's parameters changed: their facts are taken again."""
        start = self.step + 1 if start is None else start
        self.val_loader = None
        phases = self.facts.setdefault("phases", [])
        if phases and phases[-1]["start"] >= start:
            return
        phases.append({"start": start, "why": why})
        self.run.set_facts(phases=list(phases))
        if refresh and self.sent_host_facts:
            self.param_layer = None  # layer names of the new parameters
            taken = self._model_facts()  # only these: a framework adapter's own facts (framework, ...) stand
            if taken:
                self.run.set_facts(**taken)
            # What had a gradient is looked at afresh: a head replaced and added to the optimizer leaves the old
            # head's parameters without one, and that is this change, not another.
            self.with_grad = None

    def set_epoch(self, epoch: int) -> None:
        """Give the epoch number when no DataLoader tells it (0-based)."""
        if epoch != self.epoch and "epoch_steps" not in self.facts and self.epoch == 0 and self.step >= 0:
            self.facts["epoch_steps"] = self.step + 1
            self.run.set_facts(epoch_steps=self.step + 1)
        self.epoch = int(epoch)
        self.epoch_start = self.step + 1
        self.epoch_known = True

    # ==== explicit metrics ====================================================================================
    def log(self, **scalars: Any) -> None:
        """Custom metrics for the current step: numbers, or tensors (read at the next flush, not now).

        Between `optimizer.step()` and the next forward pass, the current step is the one just finished.
        """
        row = self.cur
        if not self.cur_started and self.ledger.rows:
            row = self.ledger.rows[-1]
        for name, v in scalars.items():
            if isinstance(v, torch.Tensor):
                dec = self.d_custom.get(name) or self.d_custom.setdefault(name, _MeanDecoder(name))
                row.add(dec, _scalar(v), 1)
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                row.scalars[name] = v

    def log_eval(self, **metrics: Any) -> None:
        """Validation results computed by the script: `loss=`, `acc=` (or any `val_*` name), at the last step."""
        parts: list[tuple[Decoder, torch.Tensor, Any]] = []
        target = self.ledger.rows[-1] if self.ledger.rows else self.cur
        for name, v in metrics.items():
            full = name if name.startswith("val_") else f"val_{name}"
            if isinstance(v, torch.Tensor):
                dec = self.d_custom.get(full) or self.d_custom.setdefault(full, _MeanDecoder(full))
                parts.append((dec, _scalar(v), 1))
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                target.scalars[full] = v
        target.parts.extend(parts)

    # ==== facts ===============================================================================================
    def _send_host_facts(self) -> None:
        self.sent_host_facts = True
        self._model_facts()
        self.run.set_facts(**self.facts)

    def _model_facts(self) -> dict[str, Any]:
        """The model and optimizer facts, taken (again) into self.facts; returns those taken."""
        f = self.facts
        taken: dict[str, Any] = {}
        try:
            model = self._main_model()
            if model is not None:
                self.model_ref = weakref.ref(model)
            if model is not None and "model" not in self.fixed:
                f["model"] = taken["model"] = F.model_facts(model, self.output_module)
                part = F.constant_weight_part(model, f["model"]["layers"])
                if part is not None:
                    self.cur.add(C.FactsDecoder(self._constant_facts), part[1], part[0])
                if self.inferred.get("output_activation") and f["model"]["output_activation"] == "unknown":
                    f["model"]["output_activation"] = self.inferred["output_activation"]
            opts = list(self.opt_states.keys())
            if opts and "optimizer" not in self.fixed:
                f["optimizer"] = taken["optimizer"] = [F.optimizer_facts(o, model) for o in opts]
        except Exception as exc:
            self._fail("facts", exc)
        return taken

    def _weight_facts(self, values: np.ndarray, meta: tuple[str, int]) -> None:
        key, gen = meta
        if gen != self.loss_gen:
            return  # taken for a loss that another has replaced since
        loss = self.facts.get("loss")
        if isinstance(loss, dict):
            loss[key] = [float(v) for v in values.tolist()]
            self.run.set_facts(loss=loss)

    def _constant_facts(self, spreads: np.ndarray, names: list[str]) -> None:
        """Which layers' weights hold one value (constant_weight_part), brought home by the flush."""
        model = self.facts.get("model")
        if not isinstance(model, dict):
            return
        flags = {n: bool(v == 0.0) for n, v in zip(names, spreads.tolist())}
        for layer in model.get("layers", []):
            if layer.get("name") in flags:
                layer["constant_weight"] = flags[layer["name"]]
        self.run.set_facts(model=model)

    def fix_facts(self, **facts: Any) -> None:
        """Facts a framework adapter knows better than the hooks (Keras's own model, loss, optimizer)."""
        self.facts.update(facts)
        self.fixed.update(facts)
        self.run.set_facts(**facts)

    def _send_optimizer_facts(self) -> None:
        if "optimizer" in self.fixed:
            return
        model = self.model_ref() if self.model_ref is not None else None
        self.facts["optimizer"] = [F.optimizer_facts(o, model) for o in self.opt_states.keys()]
        self.run.set_facts(optimizer=self.facts["optimizer"])

    def _main_model(self) -> nn.Module | None:
        roots = self._live_roots()
        if not roots:
            return None
        opt = self.primary_opt() if self.primary_opt is not None else None
        if opt is not None:
            ids = {id(p) for g in opt.param_groups for p in g["params"]}
            for r in roots:
                if any(id(p) in ids for p in r.parameters()):
                    return r
        return roots[0]

    def _input_facts(self, v: np.ndarray, features: Any) -> None:
        mean, std, mn, mx, fs_min, fs_max, const = (float(x) for x in v[:7])
        inputs = dict(self.facts.get("inputs", {}))
        inputs.update(min=mn, max=mx, mean=mean, std=std, features=int(features),
                      feat_std_min=_finite(fs_min), feat_std_max=_finite(fs_max),
                      const_features=int(const) if np.isfinite(const) else None)
        self.facts["inputs"] = inputs
        self.run.set_facts(inputs=inputs)

    def _target_facts(self, v: np.ndarray, gen: Any) -> None:
        if gen != self.loss_gen:
            return
        mn, mx, distinct, integral, one_hot = (float(x) for x in v[:5])
        targets = dict(self.facts.get("targets", {}))
        targets.update(min=_finite(mn), max=_finite(mx), distinct=int(distinct) if np.isfinite(distinct) else None,
                       integral=bool(integral), one_hot=bool(one_hot))
        self.facts["targets"] = targets
        update: dict[str, Any] = {"targets": targets}
        spec = self.loss_spec
        if spec is not None and spec.rule == L.REGRESS and self.rule is None:
            # A regression loss on label-like targets: score it as the classification it really is
            # (the rules flag the mismatch; accuracy still tells whether anything is learned).
            if one_hot:
                self.rule = L.ARGMAX
                update["task"] = "multiclass"
                shape = targets.get("shape") or []
                if len(shape) >= 2:
                    update["num_classes"] = int(shape[1])
            elif integral and np.isfinite(mn) and mn >= 0 and mx <= 1:
                self.rule = L.PROB
                update["task"] = "binary"
                update["num_classes"] = 2
            else:
                update["task"] = "regression"
        self.facts.update(update)
        self.run.set_facts(**update)

    def _output_facts(self, v: np.ndarray, gen: Any) -> None:
        if gen != self.loss_gen:
            return
        mn, mx, sums_one, lse_zero = (float(x) for x in v[:4])
        preds = dict(self.facts.get("predictions", {}))
        preds.update(min=_finite(mn), max=_finite(mx), rows_sum_to_one=bool(sums_one), logsumexp_zero=bool(lse_zero))
        self.facts["predictions"] = preds
        update: dict[str, Any] = {"predictions": preds}
        inferred = None
        if sums_one:
            inferred = "softmax"
        elif lse_zero:
            inferred = "log_softmax"
        elif np.isfinite(mn) and mn >= 0 and mx <= 1 and self.facts.get("task") in ("binary", "multilabel"):
            inferred = "sigmoid"
        model = self.facts.get("model")
        if inferred is not None:
            self.inferred["output_activation"] = inferred
        if isinstance(model, dict) and model.get("output_activation") in ("unknown", "none") and inferred \
                and "model" not in self.fixed:
            model = dict(model, output_activation=inferred)
            self.facts["model"] = model
            update["model"] = model
        self.run.set_facts(**update)

    # ==== what framework integrations use (keras.py, lightning.py, hf.py) =====================================
    def measures(self) -> set[str]:
        """Which of loss, acc, val_loss and val_acc this probe measures itself: a framework's own logged values of
        those are then left out."""
        out: set[str] = set()
        if self.primary_loss is not None:
            out |= {"loss", "val_loss"}
            if self.rule is not None:
                out |= {"acc", "val_acc"}
        return out

    def claim_facts(self, fixed: Iterable[str] = (), **facts: Any) -> None:
        """Facts the framework knows (`framework="keras"`); `fixed` names facts it describes itself, which the
        probe then leaves alone."""
        self.facts.update(facts)
        self.fixed.update(fixed)

    @contextmanager
    def loss_scope(self) -> Iterator[None]:
        """Everything called inside is one loss: the functional losses a framework's loss calls are not others."""
        self.in_loss_module += 1
        try:
            yield
        finally:
            self.in_loss_module -= 1

    # ==== flushing and closing ================================================================================
    def _sink(self, steps: list[int], cols: dict[str, list], hists: dict[str, list] | None, times: list[float]) -> None:
        self.run.log_columns(steps, cols, hists, times)

    def flush(self) -> None:
        """Publish everything measured so far, waiting for the device if needed (not for the training loop)."""
        if os.getpid() != self.pid:
            return
        try:
            if self.val_parts:
                self._end_val()
            self.ledger.drain()
        except Exception as exc:
            self._fail("flush", exc)

    def continue_from(self, old: TorchProbe) -> None:
        """Number steps and epochs on from `old`, a closed probe of the same run (a re-run notebook cell):
        one run's steps only ever increase."""
        if self.step >= 0 or old.run is not self.run:
            return
        self.step = old.step
        self.cur = Row(self.step + 1)
        self.grads_now, self.deep_now = self.cadence.plan(self.step + 1)
        self.epoch, self.epoch_known = old.epoch, old.epoch_known
        self.epoch_start = self.step + 1

    def close(self) -> None:
        """Publish what is pending and stop observing. Idempotent; the run itself is closed by its owner."""
        if self.closed:
            return
        self.closed = True
        if self.fmode is not None:
            self._stop_functional()
        if os.getpid() == self.pid and any(part[0] is self.d_loss for part in self.cur.parts):
            # A step that began and never reached optimizer.step() (the script crashed, or stopped after a
            # forward pass, or updates weights by hand): what it measured, a NaN loss perhaps, is kept.
            row = self.cur
            row.step, row.time = self.step + 1, time.time()
            self.ledger.append(row)
            self.step += 1
            self.cur = Row(self.step + 1)
        self.flush()
        self.off = True


class _MeanDecoder(Decoder):
    """A custom scalar logged as a tensor: the mean of the step's values."""

    def __init__(self, name: str) -> None:
        self.name = name

    def decode(self, block: np.ndarray, metas: list[Any], rows: np.ndarray, sums: Sums) -> None:
        sums.add(f"mean:{self.name}:s", rows, block[:, 0])
        sums.add(f"mean:{self.name}:n", rows, 1.0)

    def finish(self, sums: Any, cols: Any) -> None:
        s = sums.get(f"mean:{self.name}:s")
        n = sums.get(f"mean:{self.name}:n")
        if s is not None and n is not None:
            cols.put_where(self.name, s[0] / np.maximum(n[0], 1), s[1])


# Names scripts give the split an evaluation loop is on (nanoGPT's estimate_loss: `for split in ['train',
# 'val']`), and the values that mean the training data or a test set.
_SPLIT_VARS = ("split", "split_name", "phase", "stage", "mode", "subset")
_SPLITS = {"train": "train_eval_", "training": "train_eval_", "test": "test_", "testing": "test_", "val": "val_",
           "valid": "val_", "validation": "val_", "eval": "val_", "dev": "val_"}


def _split_on_stack(depth: int = 16) -> str:
    """Evaluation batches that come from no DataLoader: the split the calling code names in a local variable
    (`split = "train"`), else validation. Only on evaluation loss calls, never on training steps."""
    frame: FrameType | None = sys._getframe(2)
    for _ in range(depth):
        if frame is None:
            break
        local = frame.f_locals
        for name in _SPLIT_VARS:
            v = local.get(name)
            if isinstance(v, str) and v.lower() in _SPLITS:
                return _SPLITS[v.lower()]
        frame = frame.f_back
    return "val_"


def _loss_options(module: nn.Module | None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Label smoothing of a loss module, and its class weights (`weight`, `pos_weight`) as device tensors that the
    flush brings home: the loss a model that ignores its inputs scores depends on them."""
    out: dict[str, Any] = {}
    weights: dict[str, torch.Tensor] = {}
    if module is None:
        return out, weights
    for attr in ("weight", "pos_weight"):
        w = getattr(module, attr, None)
        if isinstance(w, torch.Tensor) and 0 < w.numel() <= 1000:
            weights["class_weights" if attr == "weight" else "pos_weight"] = w.detach().float().reshape(-1).clone()
    ls = getattr(module, "label_smoothing", None)
    if isinstance(ls, float) and ls > 0:
        out["label_smoothing"] = ls
    return out, weights


def _loss_args(args: tuple, kwargs: dict) -> tuple[Any, Any]:
    inp = args[0] if args else kwargs.get("input")
    target = args[1] if len(args) > 1 else kwargs.get("target")
    return inp, target


def _update_slices(layout: Ly.ParamLayout, params: list[torch.Tensor]) -> list[tuple[list[int], Decoder, Decoder | None]]:
    """Slices of whole layers whose weights fit UPDATE_BYTES together (at least one layer each), with the
    decoders of their update norms and, when a slice is not the whole model, of its own weight norms (the
    overall update_ratio of a step is then the slice's: an estimate from the layers it covers)."""
    by_layer: dict[int, list[int]] = {}
    for i, li in enumerate(layout.index.tolist()):
        by_layer.setdefault(li, []).append(i)
    slices: list[list[int]] = [[]]
    size = 0
    for li in range(len(layout.layers)):
        idx = by_layer.get(li, [])
        nbytes = sum(params[i].numel() * params[i].element_size() for i in idx)
        if slices[-1] and size + nbytes > UPDATE_BYTES:
            slices.append([])
            size = 0
        slices[-1].extend(idx)
        size += nbytes
    out: list[tuple[list[int], Decoder, Decoder | None]] = []
    whole = len(slices) == 1
    for sl in slices:
        sub = Ly.ParamLayout([layout.layers[layout.index[i]] for i in sl])
        out.append((sl, Ly.NormDecoder(sub, "usq"), None if whole else Ly.NormDecoder(sub, "wsqs")))
    return out


def _sharded(p: torch.Tensor) -> bool:
    """FSDP's parameters: DTensors (FSDP2) or flat parameter shards (FSDP1)."""
    return type(p).__name__ in ("DTensor", "FlatParameter")


def _local(t: torch.Tensor) -> torch.Tensor:
    """A DTensor's local shard (no communication); any other tensor as it is."""
    local = getattr(t, "_local_tensor", None)
    return local if isinstance(local, torch.Tensor) else t


def _finite(x: float) -> float | None:
    return x if np.isfinite(x) else None


def _env_every() -> int | None:
    """ACCMON_EVERY=N: every statistic every N steps instead of the step-number schedule (scripts, tests, CI)."""
    raw = os.environ.get("ACCMON_EVERY")
    if not raw:
        return None
    if raw.strip().isdigit() and int(raw) >= 1:
        return int(raw)
    report_once("every-env", f"ACCMON_EVERY={raw!r} is not a positive number of steps; the step-number schedule is used")
    return None


def _env_budget() -> float:
    from .cadence import DEFAULT_BUDGET

    raw = os.environ.get("ACCMON_BUDGET")
    if raw:
        try:
            v = float(raw)
            if 0 < v < 1:
                return v
        except ValueError:
            pass
        report_once("budget-env", f"ACCMON_BUDGET={raw!r} is not a fraction between 0 and 1; using {DEFAULT_BUDGET}")
    return DEFAULT_BUDGET
