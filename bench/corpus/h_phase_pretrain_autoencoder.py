"""Healthy: self-supervised pre-training (an autoencoder's MSE), then a classifier head on the encoder with cross-entropy, all under one optimizer."""

from _kit import *
x, y = blobs(dim=32, seed=4)
tr, va = split(x, y)
enc = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 16), nn.ReLU())
dec = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 32))
head = nn.Linear(16, 4)
opt = torch.optim.Adam([*enc.parameters(), *dec.parameters(), *head.parameters()], 2e-3)
ae = nn.Sequential(enc, dec)
for e in range(4):
    for xb, _ in tr:
        loss = nn.functional.mse_loss(ae(xb), xb)
        opt.zero_grad(); loss.backward(); opt.step()
    print(f"pretrain epoch {e}: reconstruction {float(loss):.4f}", flush=True)
clf = nn.Sequential(enc, head)
fit(clf, nn.CrossEntropyLoss(), opt, tr, va, 5, label="classify ")
