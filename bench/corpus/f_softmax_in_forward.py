"""Fault (double_softmax): forward() returns F.softmax(logits) and the loop uses F.cross_entropy."""

from _kit import *
x, y = tokens()
tr, va = split(x, y)
class M(nn.Module):
    def __init__(self):
        super().__init__(); self.emb = nn.EmbeddingBag(40, 16); self.fc = nn.Linear(16, 3)
    def forward(self, x):
        return torch.softmax(self.fc(self.emb(x)), dim=-1)
m = M()
fit(m, nn.functional.cross_entropy, torch.optim.Adam(m.parameters(), 1e-2), tr, va, 4)
