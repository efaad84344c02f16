"""What a `TorchProbe` holds, and the guards every room of it uses.

The probe is one object (integrations and hooks talk to one `TorchProbe`), built from rooms of one concern each:
call tracking (calls.py), the loss watch (losswatch.py), the optimizer watch (optwatch.py), the epoch clock
(epochs.py), the facts (factbook.py), and the step clock, the stop door and what integrations use (probe.py).
The rooms are mixins over this one state, not parts held by reference: the per-step path reads the probe's
attributes directly, as it did when it was one class (a part held by reference would cost an attribute lookup
per access on the hot path). The state is declared here, in one place, by room; the methods one room calls in
another are declared below for the type checker only.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..errors import report_once
from . import activations as A
from . import classify as C
from . import functional as FN
from . import inputs as I
from . import losses as L
from .cadence import DEFAULT_BUDGET, Cadence
from .ledger import Decoder, Ledger, Row, Sums

# Half a second between flushes: a live chart that moves twice a second, and per-flush costs (one
# concatenation, one copy, one frame) spread over hundreds of fast steps.
FLUSH_S = 0.5

_perf = time.perf_counter


def _scalar(t: torch.Tensor) -> torch.Tensor:
    t = t.detach()
    return t if t.dim() == 0 else t.float().mean()


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


class ProbeState:
    """The state of a `TorchProbe` (probe.py), and the guards its rooms share."""

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

    def _adopt(self) -> bool:
        """The first thread to call a module (or step an optimizer) is the training thread."""
        if self.tid is None:
            self.tid = threading.get_ident()
            return True
        return False

    def _live_roots(self) -> list[nn.Module]:
        out = []
        for r in self.roots:
            m = r()
            if m is not None:
                out.append(m)
        return out

    if TYPE_CHECKING:
        # What one room calls in another (the type checker's view; each is defined in the room named).
        def _sink(self, steps: list[int], cols: dict[str, list], hists: dict[str, list] | None,
                  times: list[float]) -> None: ...  # probe.py
        def _step_begins(self) -> None: ...  # probe.py
        def _end_step(self) -> None: ...  # probe.py
        def _stop_here(self) -> None: ...  # probe.py
        def _stop_functional(self) -> None: ...  # calls.py
        def _loss_module_call(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None: ...  # losswatch.py
        def _end_val(self) -> None: ...  # losswatch.py
        def _is_train(self) -> bool: ...  # losswatch.py
        def _loss_switch(self, step: int) -> None: ...  # losswatch.py
        def _note_loader(self) -> None: ...  # epochs.py
        def _new_phase(self, why: str, start: int | None = None, refresh: bool = False) -> None: ...  # factbook.py
        def _send_host_facts(self) -> None: ...  # factbook.py
        def _send_optimizer_facts(self) -> None: ...  # factbook.py
        def _input_facts(self, v: np.ndarray, features: Any) -> None: ...  # factbook.py
        def _weight_facts(self, values: np.ndarray, meta: tuple[str, int]) -> None: ...  # factbook.py
        def _target_facts(self, v: np.ndarray, gen: Any) -> None: ...  # factbook.py
        def _output_facts(self, v: np.ndarray, gen: Any) -> None: ...  # factbook.py


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
