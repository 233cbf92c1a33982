"""Training: the config, the loop (logs, checkpoints, resume), the losses and the torchrun helpers."""
