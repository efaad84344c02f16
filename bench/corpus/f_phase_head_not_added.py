"""Fault (weights_not_updating): pre-train; then freeze the body and replace the head for a new task, but keep stepping the old optimizer: it holds the frozen body and the old head, nothing trains."""

from _kit import *
x, y = blobs(seed=0)
tr, va = split(x, y)
m = mlp()
opt = torch.optim.Adam(m.parameters(), 2e-3)
fit(m, nn.CrossEntropyLoss(), opt, tr, va, 3, label="pretrain ")
for p in m.parameters():
    p.requires_grad_(False)
m[-1] = nn.Linear(64, 3)  # the bug: no opt.add_param_group(m[-1].parameters()) and no new optimizer
x2, y2 = blobs(classes=3, seed=5, spread=1.8)
tr2, va2 = split(x2, y2)
fit(m, nn.CrossEntropyLoss(), opt, tr2, va2, 5, label="finetune ")
