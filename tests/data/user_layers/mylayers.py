"""User layers for the tests: one stating its input size and shape rule, two left to netspec."""

import torch
from torch import nn


class Scale(nn.Module):
    """No parameters; netspec finds the output shape by running it on meta tensors."""

    def __init__(self, factor: float = 2.0):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


class MyDense(nn.Module):
    """States its input-size argument and its shape rule."""

    netspec_in_sizes = {"in_features": -1}

    @staticmethod
    def netspec_shape(args, shape):
        return (*shape[:-1], args["units"])

    def __init__(self, in_features: int, units: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(in_features, units))

    def forward(self, x):
        return torch.relu(x @ self.weight)


class Pairs(nn.Module):
    """Halves the last dim by summing neighbours: found by the meta probe, symbols included."""

    def forward(self, x):
        return x.reshape(*x.shape[:-1], x.shape[-1] // 2, 2).sum(-1)
