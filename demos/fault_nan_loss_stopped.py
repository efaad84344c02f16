"""Fault (nan_loss): the NaN run stopped gracefully by `--stop-on nan_loss`, its Ctrl-C handler saving a checkpoint.

`accmon demo fault_nan_loss_stopped` runs it as `accmon run --stop-on nan_loss -- python fault_nan_loss_stopped.py`
would: at the first step after the nan_loss alert, `optimizer.step()` raises accmon.StopTraining (a
KeyboardInterrupt), the `except KeyboardInterrupt:` below saves the model as any long run does on Ctrl-C, and
`accmon run` exits with 3. Without --stop-on it trains on through the NaN, as fault_nan_loss does.
"""

import os
import tempfile
import time

import torch
from _common import args, blobs, loaders, mlp
from torch import nn, optim


class NaiveCrossEntropy(nn.Module):
    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        p = torch.softmax(logits, dim=1)
        return -torch.log(p[torch.arange(len(y)), y]).mean()  # log(0) = -inf once a wrong answer is certain


a = args(epochs=8)
train, _ = loaders(*blobs(n=2048))
model = mlp()
opt = optim.SGD(model.parameters(), lr=5.0)  # far too high: confident wrong answers within a few steps
loss_fn = NaiveCrossEntropy()
checkpoint = os.path.join(tempfile.gettempdir(), f"accmon_demo_{os.getpid()}.pt")
step = 0
try:
    for epoch in range(a.epochs):
        for x, y in train:
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            step += 1
            time.sleep(0.01)  # a step's worth of a real model's time: the alert reaches the run while it trains
        print(f"epoch {epoch}: loss {loss.item():.4f}", flush=True)
except KeyboardInterrupt as exc:  # Ctrl-C, or accmon.StopTraining from --stop-on
    torch.save(model.state_dict(), checkpoint)
    print(f"{type(exc).__name__} after step {step}: {exc}; checkpoint saved to {checkpoint}", flush=True)
