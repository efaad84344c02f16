"""Healthy: an EmbeddingBag text classifier."""

from _kit import *
x, y = tokens()
tr, va = split(x, y)
class B(nn.Module):
    def __init__(self):
        super().__init__(); self.emb = nn.EmbeddingBag(40, 16); self.fc = nn.Linear(16, 3)
    def forward(self, x):
        return self.fc(self.emb(x))
m = B()
fit(m, nn.CrossEntropyLoss(), torch.optim.Adam(m.parameters(), 1e-2), tr, va, 6)
