"""The optimizer watch: which optimizer counts the steps, gradient and weight norms, updates, learning rates,
gradient clipping, and the parameter changes that begin a phase.

A room of `TorchProbe` (state.py says how the rooms fit together).
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import Any

import torch

from . import facts as F
from . import layers as Ly
from .ledger import Decoder
from .state import ProbeState, _MeanDecoder

# Weights copied per deep step to measure ‖Δw‖ (the copy lives across optimizer.step()). Larger models
# are covered a slice of layers at a time, round robin: the copy never costs more than this in memory.
UPDATE_BYTES = 64 * 1024 * 1024
# Optimizer steps in a row on gradients never zeroed before the probe says so (a fact; the rules decide).
NOT_ZEROED_STEPS = 32
# Parameters of the primary optimizer that had no gradient, checked per step for one (a layer unfrozen, a new head
# trained): at most this many per step, round robin (a frozen body of a large model holds hundreds).
GRADLESS_CHECK = 64
# Every this many steps (at fixed step numbers, whatever the cadence) the probe looks at which of the primary
# optimizer's parameters have a gradient: parameters that lost theirs (a layer frozen, a module replaced in the model
# and not given to the optimizer) start a phase. Each parameter does so once (a branch taken on some steps only).
LOST_CHECK_EVERY = 8

_perf = time.perf_counter
_compiling = torch.compiler.is_compiling
_thread_id = threading.get_ident


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


class OptimizerWatch(ProbeState):
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


