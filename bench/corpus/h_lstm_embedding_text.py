"""Healthy: Embedding + LSTM on token sequences, Adam with clipping."""

from _kit import *
x, y = tokens()
tr, va = split(x, y)
class M(nn.Module):
    def __init__(self):
        super().__init__(); self.emb = nn.Embedding(40, 16); self.rnn = nn.LSTM(16, 32, batch_first=True); self.out = nn.Linear(32, 3)
    def forward(self, x):
        return self.out(self.rnn(self.emb(x))[0].mean(1))
m = M()
fit(m, nn.CrossEntropyLoss(), torch.optim.Adam(m.parameters(), 5e-3), tr, va, 5, clip=1.0)
