"""Healthy: a model with an auxiliary regression head; the loss is the sum of CE and MSE."""

from _kit import *
x, y = blobs()
tr, va = split(x, y)
class M(nn.Module):
    def __init__(self):
        super().__init__(); self.body = mlp(out=32); self.cls = nn.Linear(32, 4); self.reg = nn.Linear(32, 1)
    def forward(self, x):
        h = torch.relu(self.body(x)); return self.cls(h), self.reg(h)
m = M()
opt = torch.optim.Adam(m.parameters(), 2e-3)
for e in range(6):
    for xb, yb in tr:
        c, r = m(xb)
        loss = nn.functional.cross_entropy(c, yb) + 0.1 * nn.functional.mse_loss(r, xb[:, :1])
        opt.zero_grad(); loss.backward(); opt.step()
    print(f"epoch {e}: loss {float(loss):.4f}", flush=True)
