"""Hand-written PyTorch models that the benchmarks compare netspec's output against.

The seed twins live in tests/twins.py; this file adds the ones only the benchmarks need: the
generated chains, the 200-layer stack, the residual MLP of bench/specs/residual.net and ResNet-50 in torchvision's
layout (its Bottleneck here, its ResNet from tests/twins.py; the reference for construction
time). Their state_dict keys match the specs'.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from twins import ResNet, conv1x1, conv3x3   # torchvision's layout, shared with the tests


# -- the 200-layer stack --------------------------------------------------------------------------

def stack(layers: int = 200, width: int = 64) -> nn.Module:
    """``layers`` x (Linear(width, width), ReLU()), as one would write it: a Sequential."""
    modules = []
    for _ in range(layers):
        modules += [nn.Linear(width, width), nn.ReLU()]
    return nn.Sequential(*modules)


def chain(layers: int, width: int = 16) -> nn.Module:
    """The twin of ``common.chain_spec(layers)``: Linear(width) and ReLU() alternating."""
    return nn.Sequential(*[nn.Linear(width, width) if i % 2 == 0 else nn.ReLU()
                           for i in range(layers)])


# -- the residual MLP (bench/specs/residual.net) ------------------------------------------------

class Residual(nn.Module):
    def __init__(self, features: int = 64, width: int = 64):
        super().__init__()
        self.fc1 = nn.Linear(features, width)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(width, features)

    def forward(self, x):
        y = self.fc2(self.act(self.fc1(x)))
        return torch.relu(x + y)


def residual_mlp(blocks: int = 8, width: int = 64) -> nn.Module:
    children: OrderedDict[str, nn.Module] = OrderedDict(
        (str(i), Residual(64, width)) for i in range(blocks))
    children["head"] = nn.Linear(64, 10)
    return nn.Sequential(children)


# -- ResNet-50, torchvision's layout ----------------------------------------------------------------

class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None):
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


def resnet50(num_classes: int = 1000) -> nn.Module:
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes)
