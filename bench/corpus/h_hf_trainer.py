"""Healthy: a torch model trained by the Hugging Face Trainer (CPU), evaluated each epoch."""

from _kit import *
from transformers import Trainer, TrainingArguments
import tempfile
x, y = blobs()
class DS(torch.utils.data.Dataset):
    def __init__(self, x, y): self.x, self.y = x, y
    def __len__(self): return len(self.x)
    def __getitem__(self, i): return {"x": self.x[i], "labels": self.y[i]}
class M(nn.Module):
    def __init__(self):
        super().__init__(); self.net = mlp()
    def forward(self, x, labels=None):
        logits = self.net(x)
        return {"loss": nn.functional.cross_entropy(logits, labels), "logits": logits}
args = TrainingArguments(tempfile.mkdtemp(), num_train_epochs=5, per_device_train_batch_size=64, learning_rate=2e-3,
                         eval_strategy="epoch", logging_steps=10, report_to=[], save_strategy="no", use_cpu=True,
                         disable_tqdm=True)
t = Trainer(model=M(), args=args, train_dataset=DS(x[300:], y[300:]), eval_dataset=DS(x[:300], y[:300]))
t.train()
print(t.evaluate(), flush=True)
