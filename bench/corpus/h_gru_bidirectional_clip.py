"""Healthy: a bidirectional GRU, SGD with momentum and clipping at 0.5."""

from _kit import *
x, y = sequences(length=16)
tr, va = split(x, y, batch=32)
class M(nn.Module):
    def __init__(self):
        super().__init__(); self.rnn = nn.GRU(4, 24, batch_first=True, bidirectional=True); self.out = nn.Linear(48, 3)
    def forward(self, x):
        return self.out(self.rnn(x)[0].mean(1))
m = M()
fit(m, nn.CrossEntropyLoss(), torch.optim.SGD(m.parameters(), 0.1, momentum=0.9), tr, va, 6, clip=0.5)
