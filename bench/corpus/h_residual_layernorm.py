"""Healthy: a deep residual MLP (8 blocks) with LayerNorm."""

from _kit import *
x, y = blobs()
tr, va = split(x, y)
class Block(nn.Module):
    def __init__(self):
        super().__init__(); self.n = nn.LayerNorm(64); self.f = nn.Linear(64, 64)
    def forward(self, h):
        return h + self.f(torch.relu(self.n(h)))
m = nn.Sequential(nn.Linear(16, 64), *[Block() for _ in range(8)], nn.LayerNorm(64), nn.Linear(64, 4))
fit(m, nn.CrossEntropyLoss(), torch.optim.Adam(m.parameters(), 1e-3), tr, va, 5)
