"""Healthy: memory that rises once and stays: after the first epoch the script builds a feature bank of every
training sample (a kNN monitor, ~200 MB) and keeps it; the losses it logs are numbers (`.item()`)."""

from _kit import *

x, y = blobs(n=4096, dim=64)
tr, va = split(x, y)
m = mlp(dim=64, hidden=256)
opt = torch.optim.Adam(m.parameters(), 1e-3)
loss_fn = nn.CrossEntropyLoss()
bank = []
for epoch in range(5):
    running = 0.0
    for xb, yb in tr:
        loss = loss_fn(m(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        running += loss.item()
    if epoch == 1:
        bank.append(torch.randn(200 * 1024 * 1024 // 4))  # built once, kept
    vl, acc = evaluate(m, loss_fn, va)
    print(f"epoch {epoch}: loss {running / len(tr):.4f}  val_loss {vl:.4f}  val_acc {acc:.3f}", flush=True)
