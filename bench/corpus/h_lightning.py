"""Healthy: a LightningModule trained by lightning.Trainer (CPU), with validation."""

from _kit import *
import lightning as Lt
x, y = blobs()
tr, va = split(x, y)
class M(Lt.LightningModule):
    def __init__(self):
        super().__init__(); self.net = mlp()
    def training_step(self, b, i):
        loss = nn.functional.cross_entropy(self.net(b[0]), b[1]); self.log("train_loss", loss); return loss
    def validation_step(self, b, i):
        self.log("val_loss", nn.functional.cross_entropy(self.net(b[0]), b[1]))
    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), 2e-3)
Lt.Trainer(max_epochs=5, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
           enable_model_summary=False).fit(M(), tr, va)
print("done", flush=True)
