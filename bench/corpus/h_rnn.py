"""Healthy: a tanh RNN classifying sequences (outputs averaged over time), Adam with clipping."""

from _kit import *
x, y = sequences(length=16)
tr, va = split(x, y)
class M(nn.Module):
    def __init__(self):
        super().__init__(); self.rnn = nn.RNN(4, 32, batch_first=True); self.head = nn.Linear(32, 3)
    def forward(self, x):
        return self.head(self.rnn(x)[0].mean(1))
m = M()
fit(m, nn.CrossEntropyLoss(), torch.optim.Adam(m.parameters(), 1e-2), tr, va, 6, clip=1.0)
