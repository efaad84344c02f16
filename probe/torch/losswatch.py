"""The loss watch: training and evaluation losses, accuracy, which loss is the run's, the loss's facts.

A room of `TorchProbe` (state.py says how the rooms fit together).
"""

from __future__ import annotations

import sys
import time
import weakref
from types import FrameType
from typing import Any

import torch
from torch import nn

from . import classify as C
from . import data
from . import facts as F
from . import losses as L
from .ledger import Decoder, Row
from .state import ProbeState, _scalar

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
# Steps in a row whose training loss is another callable (or a loss module configured otherwise) before it is
# taken as the run's loss from then on, and a new phase begins.
LOSS_SWITCH_STEPS = 2

_perf = time.perf_counter
_compiling = torch.compiler.is_compiling


class LossWatch(ProbeState):
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

    # ==== validation ==========================================================================================
    def _end_val(self) -> None:
        parts, self.val_parts = self.val_parts, []
        target = self.ledger.rows[-1] if self.ledger.rows else self.cur
        target.parts.extend(parts)

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
