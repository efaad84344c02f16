"""dead_relu and sigmoid_saturation: hidden units stuck where no gradient passes through them."""

from __future__ import annotations

from collections.abc import Iterable

from .base import Finding, Rule, ended, num
from .health import Health
from .state import RunState
from .thresholds import (
    DEAD_RELU_FRACTION,
    DEAD_RELU_TOTAL,
    SATURATION_FRACTION,
    SATURATION_INIT_FRACTION,
    SATURATION_INIT_STEPS,
)

SAMPLES = 5
# Saturating activations whose saturation kills gradients. A softmax is left out: a peaked softmax (attention,
# a confident output) is how it is meant to work.
SATURATING = frozenset({"Sigmoid", "Hardsigmoid", "LogSigmoid", "Tanh", "Hardtanh", "Softsign"})


# A functional activation is named `<module>.<function>` (accmon.probe.torch.functional): a Keras
# Dense(activation="softmax") shows as `dense_1.softmax`, never a saturated sigmoid.
_FN_KINDS = {"sigmoid": "Sigmoid", "tanh": "Tanh", "softmax": "Softmax", "log_softmax": "LogSoftmax"}


def _kind(layer: str, kinds: dict[str, object]) -> object:
    kind = kinds.get(layer)
    if kind is not None:
        return kind
    return _FN_KINDS.get(layer.rsplit(".", 1)[-1].lower(), "Sigmoid")


def fractions(st: RunState, prefix: str, now: int) -> dict[str, tuple[float, int]]:
    """Per layer: median of the recent samples of `prefix/<layer>` and the step of the newest one."""
    return {layer: (m, step) for layer, (m, step, _) in st.layer_recent(prefix, now, SAMPLES).items()}


class DeadRelu(Rule):
    ids = ("dead_relu",)
    FIX = ("lower the learning rate; initialise with nn.init.kaiming_normal_ and zero (not negative) biases; use "
           "LeakyReLU or GELU; put BatchNorm before the ReLU; check that the inputs are normalised")

    def check(self, st: RunState, h: Health) -> Iterable[Finding]:
        if st.broken or st.explained_by_lr:
            return []
        if not h.in_trouble:
            return [ended("dead_relu")]
        fr = fractions(st, "act_zero", h.now)
        if not fr:
            return []
        dead = {k: v for k, (v, _) in fr.items() if v >= DEAD_RELU_FRACTION}
        if not dead and st.is_active("dead_relu"):
            # Once raised, the alert holds until the layers are clearly below the threshold (no flicker at its edge).
            dead = {k: v for k, (v, _) in fr.items() if v >= DEAD_RELU_FRACTION - 0.1}
        if not dead or not h.in_trouble:
            return [ended("dead_relu")]
        total = [k for k, v in dead.items() if v >= DEAD_RELU_TOTAL]
        newest = max(s for _, s in fr.values())
        evidence = {"layers": {k: num(v) for k, v in dead.items()}, "threshold": DEAD_RELU_FRACTION,
                    "measured_at": newest, **h.evidence()}
        shown = ", ".join(f"{k} ({v:.0%})" for k, v in list(dead.items())[:4])
        tail = ": no gradient flows through them" if total else ""
        if st.is_active("unnormalized_input"):
            tail += " (large unnormalised inputs kill ReLUs in the first steps)"
        return [Finding("dead_relu", True, None, "critical" if total else "warning",
                        f"ReLU layers output zero for most inputs: {shown}{tail}, while "
                        f"{h.reasons[0] if h.reasons else 'training is stuck'}",
                        evidence, self.FIX, score=max(dead.values()))]


class SigmoidSaturation(Rule):
    ids = ("sigmoid_saturation",)
    FIX = ("keep pre-activations small: the default (or Xavier) initialisation instead of large weights, normalised "
           "inputs, BatchNorm/LayerNorm before the activation; use ReLU/GELU in hidden layers; lower the learning "
           "rate if saturation grows as training goes on")

    def check(self, st: RunState, h: Health) -> Iterable[Finding]:
        if st.broken or st.explained_by_lr:
            return []
        fr = fractions(st, "act_sat", h.now)
        if not fr:
            return [] if h.in_trouble else [ended("sigmoid_saturation")]
        layers = [layer for layer in st.model.get("layers", []) if isinstance(layer, dict)]
        kinds = {str(layer.get("name")): layer.get("kind") for layer in layers}
        # The model's own output activation may be confident: that is success, not saturation.
        output = str(layers[-1].get("name")) if layers else list(fr)[-1]
        candidates = {k: v for k, v in fr.items()
                      if k != output and not k.startswith(output + ".") and _kind(k, kinds) in SATURATING}
        if h.in_trouble:
            sat = {k: v for k, (v, _) in candidates.items() if v >= SATURATION_FRACTION}
            if not sat and st.is_active("sigmoid_saturation"):
                sat = {k: v for k, (v, _) in candidates.items() if v >= SATURATION_FRACTION - 0.1}
            why = h.reasons[0] if h.reasons else "training is stuck"
        else:
            sat = _saturated_from_init(st, candidates, h.now)
            why = "training goes on with the units that are left"
        if not sat:
            return [ended("sigmoid_saturation")]
        newest = max(s for _, s in candidates.values())
        evidence = {"layers": {k: num(v) for k, v in sat.items()}, "threshold": SATURATION_FRACTION,
                    "kinds": {k: kinds.get(k, "?") for k in sat}, "measured_at": newest, **h.evidence()}
        if not h.in_trouble:
            evidence["since_step"] = min(st.first["act_sat/" + k][0][0] for k in sat)
            evidence["threshold"] = SATURATION_INIT_FRACTION
        shown = ", ".join(f"{k} ({v:.0%})" for k, v in list(sat.items())[:4])
        since = "" if h.in_trouble else " since the first steps"
        return [Finding("sigmoid_saturation", True, None, "warning",
                        f"sigmoid/tanh layers are saturated{since}, outputs pinned near their limits where the "
                        f"gradient all but vanishes: {shown}, while {why}",
                        evidence, self.FIX, score=max(sat.values()))]


def _saturated_from_init(st: RunState, candidates: dict[str, tuple[float, int]], now: int) -> dict[str, float]:
    """Hidden layers saturated at their first samples and still saturated SATURATION_INIT_STEPS later: an
    initialisation that wastes the layer, even in a run that learns (healthy layers start far from their limits)."""
    out = {}
    for layer, (v, newest) in candidates.items():
        first = [x for s, x in st.first.get("act_sat/" + layer, []) if s <= now][:3]
        if (v >= SATURATION_INIT_FRACTION and len(first) == 3 and sorted(first)[1] >= SATURATION_INIT_FRACTION
                and newest - st.first["act_sat/" + layer][0][0] >= SATURATION_INIT_STEPS):
            out[layer] = v
    return out
