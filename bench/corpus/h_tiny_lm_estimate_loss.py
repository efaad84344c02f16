"""Healthy: a nanoGPT-style character model; estimate_loss() evaluates the train split then the val split under no_grad."""

from _kit import *
g = gen(0)
V, T = 12, 16
trans = torch.softmax(torch.randn(V, V, generator=g) * 3, 1)
seq = [0]
for _ in range(30000):
    seq.append(int(torch.multinomial(trans[seq[-1]], 1, generator=g)))
data = torch.tensor(seq)
train_data, val_data = data[:27000], data[27000:]
def get_batch(split):
    d = train_data if split == "train" else val_data
    ix = torch.randint(len(d) - T - 1, (32,))
    return torch.stack([d[i:i + T] for i in ix]), torch.stack([d[i + 1:i + T + 1] for i in ix])
class LM(nn.Module):
    def __init__(self):
        super().__init__(); self.emb = nn.Embedding(V, 32); self.mlp = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, V))
    def forward(self, idx, targets=None):
        logits = self.mlp(self.emb(idx))
        loss = None if targets is None else nn.functional.cross_entropy(logits.view(-1, V), targets.view(-1))
        return logits, loss
m = LM()
opt = torch.optim.AdamW(m.parameters(), 3e-3)
@torch.no_grad()
def estimate_loss():
    out = {}
    m.eval()
    for split in ("train", "val"):
        out[split] = sum(float(m(*get_batch(split))[1]) for _ in range(10)) / 10
    m.train()
    return out
for it in range(300):
    if it % 50 == 0 or it == 299:
        l = estimate_loss(); print(f"step {it}: train {l['train']:.4f} val {l['val']:.4f}", flush=True)
    _, loss = m(*get_batch("train"))
    opt.zero_grad(); loss.backward(); opt.step()
