"""Fault (memory_growth): a held-out batch's loss kept every step for a plot at the end
(`curve.append(loss_fn(model(x_held), y_held))`), computed with gradients on: each tensor keeps its graph and
activations alive, and memory grows until the run dies."""

from _kit import *

x, y = blobs(n=6144, dim=64)
tr, va = split(x, y, batch=128)
held_x, held_y = next(iter(va))
m = mlp(dim=64, hidden=1024)
opt = torch.optim.Adam(m.parameters(), 1e-3)
loss_fn = nn.CrossEntropyLoss()
curve = []  # should hold loss.item(), computed under torch.no_grad()
for epoch in range(5):
    for xb, yb in tr:
        loss = loss_fn(m(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        curve.append(loss_fn(m(held_x), held_y))
    print(f"epoch {epoch}: loss {loss.item():.4f}  held-out {float(curve[-1]):.4f}", flush=True)
