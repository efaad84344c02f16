"""accmon in a notebook: a real Jupyter kernel (ipykernel, driven by jupyter_client), cells run twice.

Re-running a cell is what notebook users do all day: it must not start a second run, leak sockets, add hooks
again, or number steps back from 0 in the same run. `watch()` must return at once and say where to attach.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import read_frames

pytest.importorskip("jupyter_client", reason="the notebook tests drive a real kernel (pip install jupyter_client ipykernel)")
pytest.importorskip("ipykernel", reason="the notebook tests drive a real kernel (pip install jupyter_client ipykernel)")

SETUP = textwrap.dedent("""
    import os, torch, accmon.probe as accmon
    import torch.nn.modules.module as M, torch.optim.optimizer as O
    from torch import nn
    from accmon.probe import registry
    def state():
        import gc, torch.nn.functional as F
        from accmon.probe.torch import hooks as H, TorchProbe
        call = M.Module.__call__
        return {"hooks": (len(M._global_forward_hooks), len(M._global_forward_pre_hooks),
                          len(O._global_optimizer_pre_hooks), len(O._global_optimizer_post_hooks),
                          # nn.Module.__call__ wrapped once: ours, wrapping torch's own
                          call is H._call and H._original_call is M.Module._wrapped_call_impl,
                          # functional losses wrapped once: no wrapper's original is itself a wrapper
                          sum(getattr(f, "__accmon_wrapper__", False) for f in vars(F).values()),
                          sum(getattr(f, "__accmon_wrapper__", False) for f in H._functional_originals.values())),
                # probes still alive: a re-run cell's old probe must not be kept by an exit handler or hook
                "probes": (gc.collect(), sum(isinstance(o, TorchProbe) for o in gc.get_objects()))[1],
                "runs": len([e for e in registry.list_runs() if e.pid == os.getpid()]),
                "fds": len(os.listdir("/proc/self/fd")),
                "threads": sorted(t.name for t in __import__("threading").enumerate() if t.name.startswith("accmon"))}
""")

WATCH_CELL = textwrap.dedent("""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    w = accmon.watch(model, opt, record=os.environ["NB_RECORD"])
    for i in range(20):
        x = torch.randn(16, 4); y = (x[:, 0] > 0).long()
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(); loss.backward(); opt.step()
    w.flush()
    print("STATE", state())
""")

LIGHTNING_CELL = textwrap.dedent("""
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset
    from accmon.probe.lightning import AccmonCallback
    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__(); self.net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        def training_step(self, batch, i):
            x, y = batch; loss = nn.functional.cross_entropy(self.net(x), y); self.log("train_loss", loss); return loss
        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)
    x = torch.randn(64, 4); y = (x[:, 0] > 0).long()
    trainer = L.Trainer(max_epochs=1, callbacks=[AccmonCallback()], logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, accelerator="cpu", devices=1)
    trainer.fit(Tiny(), DataLoader(TensorDataset(x, y), batch_size=16))
    print("STATE", state())
""")


class Kernel:
    """A real IPython kernel, and a way to run a cell in it and collect what it printed."""

    def __init__(self, env: dict[str, str]) -> None:
        from jupyter_client.manager import start_new_kernel

        self.km, self.kc = start_new_kernel(kernel_name="python3", env=env, startup_timeout=120)

    def run(self, code: str, timeout: float = 240) -> dict[str, Any]:
        msg_id = self.kc.execute(code)
        out: dict[str, Any] = {"stdout": "", "stderr": "", "error": None}
        while True:
            msg = self.kc.get_iopub_msg(timeout=timeout)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                out[content["name"]] += content["text"]
            elif kind == "error":
                out["error"] = "\n".join(content["traceback"])
            elif kind == "status" and content["execution_state"] == "idle":
                return out

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


def state_of(out: dict[str, Any]) -> dict[str, Any]:
    assert out["error"] is None, out["error"]
    line = next(ln for ln in out["stdout"].splitlines() if ln.startswith("STATE "))
    return eval(line[len("STATE "):], {})  # the dict the kernel printed: our own cell's repr, nothing foreign


@pytest.fixture(scope="module")
def session() -> Iterator[dict[str, Any]]:
    runtime = tempfile.mkdtemp(prefix="amnb", dir="/tmp")
    work = Path(tempfile.mkdtemp(prefix="nb"))
    env = dict(os.environ, ACCMON_RUNTIME_DIR=runtime, NB_RECORD=str(work / "nb.accmon"), PYTHONWARNINGS="ignore")
    env.pop("ACCMON_AUTO", None)
    kernel = Kernel(env)
    try:
        assert kernel.run(SETUP)["error"] is None
        got: dict[str, Any] = {"watch": [kernel.run(WATCH_CELL) for _ in range(3)], "record": work / "nb.accmon"}
        try:
            import lightning  # noqa: F401

            got["lightning"] = [kernel.run(LIGHTNING_CELL) for _ in range(2)]
        except ImportError:
            got["lightning"] = None
        closed = kernel.run("accmon.current().close(); print('STATE', state())")
        got["closed"] = closed
        yield got
    finally:
        kernel.close()
        shutil.rmtree(runtime, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


def test_rerunning_a_watch_cell_keeps_one_run_and_adds_no_hooks_sockets_or_threads(session: dict[str, Any]) -> None:
    states = [state_of(out) for out in session["watch"]]
    first = states[0]
    first_hooks = first["hooks"]
    # No global module hook (they slow every module call); one optimizer hook each side; __call__ patched.
    assert first["runs"] == 1 and first_hooks[:5] == (0, 0, 1, 1, True) and first["threads"]
    assert first_hooks[5] > 0 and first_hooks[6] == 0
    for later in states[1:]:
        assert later["runs"] == 1
        assert later["hooks"] == first["hooks"]
        assert later["probes"] == first["probes"] == 1
        assert later["threads"] == first["threads"]
        assert later["fds"] == first["fds"]  # no socket, pipe or file left behind by a re-run


def test_rerunning_a_lightning_cell_does_not_pile_up(session: dict[str, Any]) -> None:
    if session["lightning"] is None:
        pytest.skip("lightning is not installed")
    watch_state = state_of(session["watch"][-1])
    states = [state_of(out) for out in session["lightning"]]
    for s in states:
        assert s["runs"] == 1 and s["hooks"] == watch_state["hooks"] and s["threads"] == watch_state["threads"]
    assert states[1]["fds"] == states[0]["fds"]


def test_the_run_closes_cleanly_inside_the_kernel(session: dict[str, Any]) -> None:
    closed = state_of(session["closed"])
    assert closed["runs"] == 0 and closed["threads"] == []
    frames = read_frames(session["record"])
    assert [f["status"] for f in frames if f["kind"] == "end"] == ["finished"]


def test_steps_keep_increasing_across_reruns(session: dict[str, Any]) -> None:
    steps = [s for f in read_frames(session["record"]) if f["kind"] == "steps" for s in f["steps"]]
    assert steps == sorted(set(steps))
    assert len(steps) >= 60  # three cells of 20 steps (and the Lightning cells after them)


def test_watch_says_where_to_attach(session: dict[str, Any]) -> None:
    first = session["watch"][0]
    said = first["stdout"] + first["stderr"]
    assert "accmon attach" in said
    again = session["watch"][1]
    assert "accmon attach" not in again["stdout"] + again["stderr"]  # once per run, not per cell
