"""Healthy: an LSTM forecasting the next value of noisy sine waves (regression)."""

from _kit import *
g = gen(1)
t = torch.arange(21).float()
f = 0.2 + torch.rand(1536, 1, generator=g) * 0.5
s = torch.sin(f * t + torch.rand(1536, 1, generator=g) * 6.28) + 0.05 * torch.randn(1536, 21, generator=g)
x, y = s[:, :20, None], s[:, 20:]
tr, va = split(x, y)
class F(nn.Module):
    def __init__(self):
        super().__init__(); self.rnn = nn.LSTM(1, 32, batch_first=True); self.out = nn.Linear(32, 1)
    def forward(self, x):
        return self.out(self.rnn(x)[0][:, -1])
m = F()
fit(m, nn.MSELoss(), torch.optim.Adam(m.parameters(), 5e-3), tr, va, 6, classify=False)
