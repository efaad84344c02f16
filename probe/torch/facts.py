"""Static facts about the model and optimizer (docs/frames.md, *Facts*), from host-side metadata only."""

from __future__ import annotations

import sys
from types import FrameType
from typing import Any

import torch
from torch import nn

from .activations import OUTPUT_NAMES

# A model with more leaf modules than this is described by its first ones (facts frames stay small).
MAX_LAYERS = 2000
_HYPER = ("lr", "momentum", "weight_decay", "betas", "eps", "nesterov", "dampening", "alpha", "amsgrad")


def unwrap(module: nn.Module) -> nn.Module:
    """The user's model inside torch.compile's OptimizedModule and (Distributed)DataParallel wrappers,
    so that layers are named as the user named them ("fc1", not "_orig_mod.module.fc1")."""
    for _ in range(8):  # wrappers nest a few deep at most
        inner = getattr(module, "_orig_mod", None)
        if inner is None and type(module).__name__ in ("DistributedDataParallel", "DataParallel"):
            inner = getattr(module, "module", None)
        if not isinstance(inner, nn.Module):
            return module
        module = inner
    return module


def objects_on_stack(kind: type, max_frames: int = 32) -> list[Any]:
    """Instances of `kind` among the local variables of the calling frames and the globals of __main__."""
    found: dict[int, Any] = {}
    frame: FrameType | None = sys._getframe(1)
    for _ in range(max_frames):
        if frame is None:
            break
        for v in list(frame.f_locals.values()):
            if isinstance(v, kind):
                found[id(v)] = v
        frame = frame.f_back
    main = sys.modules.get("__main__")
    for v in list(vars(main).values()) if main is not None else []:
        if isinstance(v, kind):
            found[id(v)] = v
    return list(found.values())


def modules_on_stack(params: list[torch.Tensor], max_frames: int = 32) -> list[nn.Module]:
    """Modules owning any of `params`, found among the local variables of the calling frames and the
    globals of __main__: where a training script keeps its model. Outermost owners only."""
    wanted = {id(p) for p in params}
    seen: set[int] = set()
    found: list[nn.Module] = []

    def consider(obj: Any) -> None:
        if isinstance(obj, nn.Module) and id(obj) not in seen:
            seen.add(id(obj))
            if any(id(p) in wanted for p in obj.parameters()):
                found.append(obj)

    frame: FrameType | None = sys._getframe(1)
    for _ in range(max_frames):
        if frame is None:
            break
        for v in list(frame.f_locals.values()):
            consider(v)
        frame = frame.f_back
    main = sys.modules.get("__main__")
    for v in list(vars(main).values()) if main is not None else []:
        consider(v)
    # Keep the outermost: drop a module that is a submodule of another one found.
    inner = {id(m) for f in found for m in f.modules() if m is not f}
    return [unwrap(m) for m in found if id(m) not in inner]


def layer_names(roots: list[nn.Module]) -> dict[int, str]:
    """id(parameter) → the name of the module that owns it, as `named_modules()` spells it.

    Parameters directly on a root module get the root's class name. With several root models (a GAN's
    generator and discriminator) every name is prefixed by its root's class name, lower-cased.
    """
    out: dict[int, str] = {}
    prefix_all = len(roots) > 1
    for root in map(unwrap, roots):
        rname = type(root).__name__
        for mname, module in root.named_modules():
            name = mname or rname
            if prefix_all and mname:
                name = f"{rname.lower()}.{mname}"
            for p in module.parameters(recurse=False):
                out.setdefault(id(p), name)
    return out


def module_names(roots: list[nn.Module]) -> dict[int, str]:
    """id(module) → name, for every submodule of the roots (the first name of a shared module)."""
    out: dict[int, str] = {}
    prefix_all = len(roots) > 1
    for root in map(unwrap, roots):
        rname = type(root).__name__
        for mname, module in root.named_modules():
            name = mname or rname
            if prefix_all and mname:
                name = f"{rname.lower()}.{mname}"
            out.setdefault(id(module), name)
    return out


def _count(params: Any) -> int:
    return sum(p.numel() for p in params)


def model_facts(root: nn.Module, output_module: nn.Module | None) -> dict[str, Any]:
    compiled = getattr(root, "_orig_mod", None) is not None
    root = unwrap(root)
    layers = []
    for name, m in root.named_modules():
        if next(m.children(), None) is not None:
            continue
        own = list(m.parameters(recurse=False))
        layers.append(
            {
                "name": name or type(root).__name__,
                "kind": type(m).__name__,
                "params": _count(own),
                "trainable": bool(own) and all(p.requires_grad for p in own),
            }
        )
        if len(layers) >= MAX_LAYERS:
            break
    params = list(root.parameters())
    return {
        "name": type(root).__name__,
        "params": _count(params),
        "trainable_params": _count(p for p in params if p.requires_grad),
        "layers": layers,
        "output_activation": output_activation(output_module),
        "compiled": compiled,
    }


def constant_weight_part(root: nn.Module, layers: list[dict[str, Any]]) -> tuple[list[str], torch.Tensor] | None:
    """(layer names, a device tensor of max - min of each one's weight matrix): a layer whose weights hold one
    value in every entry (all zeros, a constant init) has units that compute the same thing and get the same
    gradient, so symmetry never breaks. One reduction per layer; the values reach the host with the flush."""
    root = unwrap(root)
    named = dict(root.named_modules())
    names, spreads = [], []
    with torch.no_grad():
        for layer in layers:
            m = named.get(layer["name"]) if layer["name"] != type(root).__name__ else root
            w = getattr(m, "weight", None)
            if not isinstance(w, torch.Tensor) or w.dim() < 2 or w.shape[0] < 2 or w.is_meta \
                    or type(w).__name__ == "DTensor":
                continue
            flat = w.detach().reshape(-1)
            spreads.append((flat.max() - flat.min()).float())
            names.append(layer["name"])
    if not spreads:
        return None
    device = spreads[0].device
    return names, torch.stack([t.to(device, non_blocking=True) for t in spreads])


def output_activation(module: nn.Module | None) -> str:
    """The activation the model's output passes through last, by the module that produced it."""
    if module is None:
        return "unknown"
    name = OUTPUT_NAMES.get(type(module))
    if name is not None:
        return name
    return "none"


def optimizer_facts(opt: torch.optim.Optimizer, model: nn.Module | None) -> dict[str, Any]:
    groups = []
    opt_params: list[torch.Tensor] = []
    for g in opt.param_groups:
        entry: dict[str, Any] = {}
        for key in _HYPER:
            if key in g:
                entry[key] = _plain(g[key])
        entry["params"] = _count(g["params"])
        groups.append(entry)
        opt_params.extend(g["params"])
    covers = None
    if model is not None:
        trainable = [p for p in unwrap(model).parameters() if p.requires_grad]
        total = _count(trainable)
        ids = {id(p) for p in opt_params}
        covered = _count(p for p in trainable if id(p) in ids)
        covers = covered / total if total else None
    return {"kind": type(opt).__name__, "param_groups": groups, "params": _count(opt_params), "covers_model": covers}


def _plain(v: Any) -> Any:
    """Hyper-parameters as msgpack-able numbers (a tensor lr is a 0-d CPU or device tensor)."""
    if isinstance(v, torch.Tensor):
        # A tensor lr (capturable optimizers) is never read here: the lr column carries it, via the ledger.
        return None
    if isinstance(v, (tuple, list)):
        return [_plain(x) for x in v]
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    return str(v)


def dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")
