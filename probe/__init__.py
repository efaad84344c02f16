"""accmon.probe: runs inside the training process."""
