"""exploding_gradients and vanishing_gradients: how gradient size changes with depth, and over time.

Layers are compared with each other (input side against output side), which holds whatever the loss scale,
the batch size or the model's width; both rules speak only while training is in trouble.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from .base import Finding, Rule, ended, layer_list, num
from .health import Health
from .series import median
from .state import RunState
from .thresholds import EXPLODE_DEPTH_RATIO, EXPLODE_DEPTH_RATIO_CRITICAL, EXPLODE_GROWTH, VANISH_RATIO, VANISH_RMS

# Per layer, the median of this many recent samples: one odd batch does not make a trend.
SAMPLES = 5


# Layer kinds whose gradient norms are not comparable with a linear layer's (see ExplodingGradients).
RECURRENT = ("RNN", "GRU", "LSTM", "SimpleRNN", "RNNCell", "GRUCell", "LSTMCell")
SPECIAL = RECURRENT + ("Embedding", "EmbeddingBag", "LayerNorm", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "GroupNorm",
                       "RMSNorm", "LayerNormalization", "BatchNormalization", "InstanceNorm2d")
RECURRENT_FACTOR = 5.0
# A loss this many times its first value within the first steps of a recurrent model: a burst (own).
BURST_FACTOR = 10.0
# Gradients never zeroed: the probe's fact counts from this many steps; the rule also wants the gradient norm
# grown this much since the first steps (or training in trouble): a script that zeroes gradients in place by
# hand (p.grad.zero_()) keeps the same tensors too, and its gradients do not grow. Own.
NOT_ZEROED_STEPS = 32
NOT_ZEROED_GROWTH = 5.0


def _recurrent(kind: object) -> bool:
    return isinstance(kind, str) and kind in RECURRENT


def _special(kind: object) -> bool:
    return isinstance(kind, str) and kind in SPECIAL


def layer_kinds(st: RunState) -> dict[str, object]:
    return {str(layer.get("name")): layer.get("kind") for layer in st.model.get("layers", []) if isinstance(layer, dict)}


def layer_norms(st: RunState, now: int) -> dict[str, float]:
    """Recent gradient norm per layer (finite samples only), input side first."""
    return {layer: m for layer, (m, _, _) in st.layer_recent("grad_norm", now, SAMPLES).items()}


class ExplodingGradients(Rule):
    ids = ("exploding_gradients",)
    FIX = ("use a standard initialisation (PyTorch's default, or nn.init.kaiming_normal_ / xavier_uniform_) instead "
           "of large hand-set weights; clip gradients (torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)); "
           "lower the learning rate; add normalisation (BatchNorm/LayerNorm) between layers")

    def check(self, st: RunState, h: Health) -> Iterable[Finding]:
        if st.broken:
            return []
        return [*self._depth_and_growth(st, h), *self._not_zeroed(st, h)]

    @staticmethod
    def _not_zeroed(st: RunState, h: Health) -> list[Finding]:
        """Gradients never zeroed (no zero_grad() between optimizer steps, the same gradient tensors step after
        step: the probe's `grads_not_zeroed` fact), and the gradient norm grew or training is in trouble."""
        steps = st.facts.get("grads_not_zeroed")
        if not isinstance(steps, int) or isinstance(steps, bool):
            return []
        if steps < NOT_ZEROED_STEPS:
            return [ended("exploding_gradients", "grads_not_zeroed")]
        recent = st.recent("grad_norm", h.now, SAMPLES)
        start = [v for s, v in st.first.get("grad_norm", []) if s <= h.now and math.isfinite(v)]
        # Against the first sample (step 0, sampled at any cadence): the gradients add up from the first step on,
        # so later first samples are already part of the sum.
        growth = recent[0] / start[0] if recent is not None and start and start[0] > 0 else None
        if not (h.in_trouble or (growth is not None and growth >= NOT_ZEROED_GROWTH)):
            return []
        evidence: dict[str, object] = {"steps_without_zero_grad": steps, **h.evidence()}
        if growth is not None:
            evidence["growth_since_start"] = growth
        grown = f"; the gradient norm grew {growth:.0f}x since the first steps" if growth is not None else ""
        return [Finding("exploding_gradients", True, "grads_not_zeroed", "critical",
                        f"gradients are never zeroed: {steps} optimizer steps in a row read the same gradient "
                        f"tensors with no zero_grad() between, so every step adds this batch's gradient to the sum "
                        f"of all before it{grown}",
                        evidence,
                        "call optimizer.zero_grad() (or model.zero_grad()) once per optimizer step, before "
                        "loss.backward(); with gradient accumulation, after each optimizer.step()",
                        score=float(steps))]

    def _depth_and_growth(self, st: RunState, h: Health) -> Iterable[Finding]:
        kinds = layer_kinds(st)
        if st.explained_by_lr and self._burst(st, h, kinds) is None:
            return []
        if not h.in_trouble:
            return [ended("exploding_gradients")]
        norms = layer_norms(st, h.now)
        ratio = None
        live = [(k, v) for k, v in norms.items() if v > 0]
        # Recurrent layers sum their gradient over every time step (10-20x the output layer's is normal in a
        # healthy GRU), embeddings and normalisation layers have gradients of their own scale: the input-side
        # layer compared is the first ordinary one (linear, convolution); a recurrent one needs 5x more.
        plain = [(k, v) for k, v in live if not _special(kinds.get(k))]
        factor = 1.0
        if len(plain) >= 2:
            live = plain
        elif len(live) >= 2:
            factor = RECURRENT_FACTOR if any(_recurrent(kinds.get(k)) for k, _ in live[:-1]) else 1.0
        if len(live) >= 2:
            (first, g_in), (last, g_out) = live[0], live[-1]
            ratio = g_in / g_out / factor
        growth = None
        # Under clip_grad_norm_ the optimizer sees clipped gradients (their norm is max_norm at every step): the
        # norm before clipping, which clip_grad_norm_ returns, is the one that can tell growth.
        norm_name = "grad_norm_preclip" if st.col("grad_norm_preclip") is not None else "grad_norm"
        recent = st.recent(norm_name, h.now, SAMPLES)
        peak_seen: tuple[float, int] | None = None
        if recent is not None:
            start = [v for s, v in st.first.get(norm_name, []) if s <= h.now and math.isfinite(v)]
            if len(start) >= 3 and median(start) > 0:
                growth = recent[0] / median(start)
                # A norm measured every step (before clipping) keeps its extremes: the largest since the last look
                # (a burst between two looks is not averaged away), and the largest so far, which explains a run
                # stuck after it (issue 15 item 7: a burst, then small gradients at chance).
                for peak in (st.peaks.get(norm_name), st.peak_top.get(norm_name)):
                    if peak is not None and peak[1] <= h.now and peak[0] / median(start) > growth:
                        growth, peak_seen = peak[0] / median(start), peak
        burst = self._burst(st, h, kinds)
        if ratio is None and growth is None and burst is None:
            return []
        active = (ratio is not None and ratio >= EXPLODE_DEPTH_RATIO) or (growth is not None and growth >= EXPLODE_GROWTH) \
            or burst is not None
        still = (ratio is not None and ratio >= EXPLODE_DEPTH_RATIO / 2) or (growth is not None and growth >= EXPLODE_GROWTH / 2)
        was = st.is_active("exploding_gradients")
        if not h.in_trouble or not (active or (was and still)):
            return [ended("exploding_gradients")]
        evidence: dict[str, object] = {"layers": {k: num(v) for k, v in norms.items()}}
        parts = []
        if ratio is not None and ratio >= EXPLODE_DEPTH_RATIO / 2:
            evidence.update(input_layer=first, output_layer=last, input_to_output_ratio=ratio)
            parts.append(f"gradients grow {ratio:.0f}x from the output layer {last} ({num(g_out, 3)}) "
                         f"to the input layer {first} ({num(g_in, 3)})")
        fix = self.FIX
        if growth is not None and growth >= EXPLODE_GROWTH / 2:
            evidence["growth_since_start"] = growth
            if peak_seen is not None:
                evidence.update(grad_norm_peak=peak_seen[0], peak_step=peak_seen[1])
            if norm_name == "grad_norm_preclip":
                evidence["measured"] = "norm before clipping (what clip_grad_norm_ returned)"
                clip = st.recent("clip_frac", h.now, 20)
                if clip is not None:
                    evidence["clipping_engaged"] = clip[0]
            parts.append(f"the gradient norm grew {growth:.0f}x since the first steps"
                         + (f" (its peak, {num(peak_seen[0], 3)} at step {peak_seen[1]})" if peak_seen else ""))
            fix = ("check that optimizer.zero_grad() runs every step (without it gradients add up step after "
                   "step); " + self.FIX)
        if burst is not None:
            evidence.update(burst)
            parts.append(f"the loss of a recurrent model jumped {burst['loss_burst']:.0f}x over its first value "
                         f"({burst['loss_first']:.3g} to {burst['loss_peak']:.3g} at step {burst['burst_step']}), "
                         "gradients through time exploding")
            fix = ("clip gradients (torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)) — recurrent models "
                   "need it; initialise recurrent weights orthogonally (or below identity), use GRU/LSTM instead of "
                   "a plain ReLU RNN; lower the learning rate")
        evidence.update(h.evidence())
        critical = (ratio or 0) >= EXPLODE_DEPTH_RATIO_CRITICAL or (growth or 0) >= EXPLODE_GROWTH ** 2
        return [Finding("exploding_gradients", True, None, "critical" if critical else "warning",
                        "; ".join(parts) + f", while {h.reasons[0] if h.reasons else 'training is stuck'}",
                        evidence, fix, score=max(ratio or 1.0, growth or 1.0))]


    @staticmethod
    def _burst(st: RunState, h: Health, kinds: dict[str, object]) -> dict[str, float] | None:
        """A recurrent model whose loss jumped tenfold over its first value (issue 15: an identity-initialised
        ReLU RNN without clipping, 0.35 -> 5.5 in four steps, then stuck near chance with small gradients): in its
        first steps, or later, between two of the rules' looks (the largest loss so far is kept, not a median).
        The loss is recorded at every step, so the burst is seen at any cadence; the cause seen early explains the
        stuck run later."""
        if not any(_recurrent(k) for k in kinds.values()):
            return None
        first = [(s, v) for s, v in st.first.get("loss", []) if s <= h.now and math.isfinite(v)]
        if len(first) < 3 or first[0][1] <= 0:
            return None
        peak_step, peak = max(first, key=lambda sv: sv[1])
        top = st.peak_top.get("loss")
        if top is not None and top[1] <= h.now and top[0] > peak:
            peak, peak_step = top
        if peak < BURST_FACTOR * first[0][1]:
            return None
        return {"loss_first": first[0][1], "loss_peak": peak, "burst_step": peak_step, "loss_burst": peak / first[0][1]}


class VanishingGradients(Rule):
    ids = ("vanishing_gradients",)
    FIX = ("replace sigmoid/tanh hidden activations with ReLU or GELU; use Kaiming/Xavier initialisation; add "
           "BatchNorm/LayerNorm or residual connections; or use fewer layers")

    def check(self, st: RunState, h: Health) -> Iterable[Finding]:
        if st.broken or st.explained_by_lr:
            return []
        if not h.in_trouble:
            return [ended("vanishing_gradients")]
        norms = layer_norms(st, h.now)
        live = [k for k, v in norms.items() if v > 0]
        if len(norms) < 2 or not live:
            return []
        out_layer = live[-1]
        ref = norms[out_layer]
        params = {str(layer.get("name")): layer.get("params") for layer in st.model.get("layers", []) if isinstance(layer, dict)}
        # Layers with exactly zero gradient behind a dead ReLU layer are that rule's finding, not this one's.
        # So are the exactly-zero gradients of all-zero (symmetric) weights: weights_not_updating/symmetric.
        dead_explains = st.is_active("dead_relu") or st.is_active("weights_not_updating", "symmetric")
        vanished: dict[str, float] = {}
        # Layers before the output layer, in the model's order (an index, not list.index in the loop: a run
        # with thousands of layers must cost linear time).
        order = {layer: i for i, layer in enumerate(norms)}
        for layer, g in norms.items():
            if order[layer] >= order[out_layer]:
                continue
            if g == 0:
                if not dead_explains:
                    vanished[layer] = 0.0
                continue
            n = params.get(layer)
            rms = g / math.sqrt(n) if isinstance(n, int) and n > 0 else None
            if g / ref < VANISH_RATIO or (rms is not None and rms < VANISH_RMS):
                vanished[layer] = g / ref
        if not vanished or not h.in_trouble:
            return [ended("vanishing_gradients")]
        smallest = min(vanished.values())
        evidence = {"layers": {k: num(v) for k, v in vanished.items()}, "output_layer": out_layer,
                    "output_grad_norm": ref, "ratio_threshold": VANISH_RATIO, **h.evidence()}
        return [Finding("vanishing_gradients", True, None, "warning",
                        f"gradients vanish toward the input: {len(vanished)} of {len(norms)} layers get under "
                        f"{VANISH_RATIO:g} of the output layer's gradient ({layer_list(vanished)}), while "
                        f"{h.reasons[0] if h.reasons else 'training is stuck'}",
                        evidence, self.FIX, score=1.0 / max(smallest, 1e-30))]
