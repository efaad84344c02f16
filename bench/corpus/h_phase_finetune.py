"""Healthy: pre-train on 4 classes; then freeze the body, replace the head for 3 new classes, build a new optimizer and fine-tune."""

from _kit import *
x, y = blobs(seed=0)
tr, va = split(x, y)
m = mlp()
fit(m, nn.CrossEntropyLoss(), torch.optim.Adam(m.parameters(), 2e-3), tr, va, 5, label="pretrain ")
for p in m.parameters():
    p.requires_grad_(False)
m[-1] = nn.Linear(64, 3)
x2, y2 = blobs(classes=3, seed=5, spread=1.8)
tr2, va2 = split(x2, y2)
fit(m, nn.CrossEntropyLoss(), torch.optim.Adam(m[-1].parameters(), 3e-3), tr2, va2, 6, label="finetune ")
