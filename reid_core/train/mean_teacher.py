"""A mean teacher: an exponential moving average of a network's weights (Tarvainen & Valpola 2017), as MMT uses
for re-id self-training (Ge et al. ICLR 2020). Pseudo-labels from a model trained on them drift with its noise;
the average moves slowly, so its embeddings, which the clusters (and the kept model) come from, are steadier."""

from __future__ import annotations

import copy

import torch
from torch import nn


class MeanTeacher:
    def __init__(self, student: nn.Module, momentum: float):
        """A frozen copy of `student`; each `update` moves it (1 - momentum) of the way to the student."""
        if not 0 <= momentum < 1:
            raise ValueError(f"the mean teacher's momentum must be in [0, 1), not {momentum}")
        self.model, self.momentum = copy.deepcopy(student).eval(), momentum
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, student: nn.Module) -> None:
        """After an optimiser step: the weights that train and the floating-point buffers (BatchNorm statistics)
        averaged, counts copied. A frozen weight (requires_grad False) does not move, so it is not averaged: self-
        training freezes the trunk, most of ResNet-50's weights, and each step would otherwise pass over them."""
        for t, s in zip(self.model.parameters(), student.parameters(), strict=True):
            if s.requires_grad:
                t.lerp_(s.detach(), 1 - self.momentum)
        for t, s in zip(self.model.buffers(), student.buffers(), strict=True):
            if t.is_floating_point():
                t.lerp_(s, 1 - self.momentum)
            else:
                t.copy_(s)
