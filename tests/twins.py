"""Hand-written PyTorch twins of the seed models, copied from the seed notes as written.

Deliberate departures from the seeds, each because the seed code is wrong or cannot be compared:

* AlexNet: the seed's typos ``nn.Conv2d(384, 383, ...)`` and ``nn.Linear(4096, 4086)`` are fixed
  to 384 and 4096 (as written the seed model cannot run).
* FixedHiddenMLP: ``rand_weight`` is registered as a persistent buffer instead of a plain tensor
  attribute, so it is saved in the ``state_dict`` as netspec saves its constants.
* MyLinear: the forward uses ``self.weight`` and ``self.bias`` instead of ``.data``, so
  gradients flow to the parameters.
* The deferred-init net is materialised by one forward pass on ``[2, 20]``.
* ResNet-18 is torchvision's BasicBlock/ResNet layout written out by hand (no seed has it).
* LSTMClassifier is written after the PyTorch sequence-model tutorials (no seed has one).

Every factory below takes no arguments and returns a fresh module.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


# -- layers and blocks ------------------------------------------------------------------------

class MLP(nn.Module):
    # 声明带有模型参数的层,此处声明了2个全连接层
    def __init__(self, **kwargs):
        super(MLP, self).__init__(**kwargs)
        self.hidden = nn.Linear(784, 256)
        self.act = nn.ReLU()
        self.output = nn.Linear(256, 10)

    # 定义模型的前向计算
    def forward(self, x):
        o = self.act(self.hidden(x))
        return self.output(o)


class MySequential(nn.Module):
    def __init__(self, *args):
        super().__init__()
        for idx, module in enumerate(args):
            # module 是 Module 子类的一个实例, 保存在 _modules 中
            self._modules[str(idx)] = module

    def forward(self, X):
        for block in self._modules.values():
            X = block(X)
        return X


def my_sequential() -> nn.Module:
    return MySequential(nn.Linear(20, 256), nn.ReLU(), nn.Linear(256, 10))


class FixedHiddenMLP(nn.Module):
    def __init__(self):
        super().__init__()
        # 不计算梯度的随机权重参数。因此其在训练期间保持不变
        self.register_buffer("rand_weight", torch.rand((20, 20)))
        self.linear = nn.Linear(20, 20)

    def forward(self, X):
        X = self.linear(X)
        # 使用创建的常量参数以及relu和mm函数
        X = F.relu(torch.mm(X, self.rand_weight) + 1)
        # 复用全连接层。这相当于两个全连接层共享参数
        X = self.linear(X)
        # 控制流
        while X.abs().sum() > 1:
            X /= 2
        return X.sum()


class NestMLP(nn.Module):
    """d2l's NestMLP, ending in Linear(32, 16)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(20, 64), nn.ReLU(),
                                 nn.Linear(64, 32), nn.ReLU())
        self.linear = nn.Linear(32, 16)

    def forward(self, X):
        return self.linear(self.net(X))


class NestMLP20(nn.Module):
    """Seed 000's NestMLP, ending in Linear(32, 20) (named NestMLP in the seed)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(20, 64), nn.ReLU(),
                                 nn.Linear(64, 32), nn.ReLU())
        self.linear = nn.Linear(32, 20)

    def forward(self, X):
        return self.linear(self.net(X))


NestMLP20.__name__ = NestMLP20.__qualname__ = "NestMLP"  # the seed's class name, for print()


class combine_net(nn.Module):
    def __init__(self, net1, net2):
        super().__init__()
        self.net1 = net1
        self.net2 = net2

    def forward(self, X):
        X1 = self.net1(X)
        X2 = self.net2(X)
        X = torch.cat((X1, X2))
        return X


def parallel() -> nn.Module:
    net1, net2 = NestMLP(), nn.Sequential(nn.Linear(20, 16))  # 输出的维度一定要相同 不然不能cat
    return combine_net(net1, net2)


class muti_module(nn.Module):
    def __init__(self, basic_module=NestMLP20, repeat_times=3):
        super().__init__()
        self.repeat_times = repeat_times
        for i in range(repeat_times):
            self._modules[str(i)] = basic_module()

    def forward(self, X):
        for i in range(self.repeat_times):
            X = self._modules[str(i)](X)
        return X


def block1():
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(),
                         nn.Linear(8, 4), nn.ReLU())


def block2():
    net = nn.Sequential()
    for i in range(4):
        # 在这里嵌套
        net.add_module(f'block {i}', block1())  # add_module可以给层指定名称
    return net


def rgnet() -> nn.Module:
    return nn.Sequential(block2(), nn.Linear(4, 1))


# -- parameter tying --------------------------------------------------------------------------

def tied() -> nn.Module:
    # 我们需要给共享层一个名称,以便可以引用它的参数
    shared = nn.Linear(8, 8)
    net = nn.Sequential(nn.Linear(20, 8), nn.ReLU(),
                        shared, nn.ReLU(),
                        shared, nn.ReLU(),
                        nn.Linear(8, 1))
    return net


def tied_untied() -> nn.Module:
    """The tied net with two separate Linear(8, 8): the reference for summed gradients."""
    return nn.Sequential(nn.Linear(20, 8), nn.ReLU(),
                         nn.Linear(8, 8), nn.ReLU(),
                         nn.Linear(8, 8), nn.ReLU(),
                         nn.Linear(8, 1))


def tied_twice() -> nn.Module:
    net1 = nn.Linear(2, 1)
    net = nn.Sequential(net1, nn.Linear(1, 2), net1)  # 网络的权重一定要初始化
    return net


# -- custom layers ----------------------------------------------------------------------------

class CenteredLayer(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, X):
        return X - X.mean()


def centered_net() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 128), CenteredLayer())


class MyLinear(nn.Module):
    def __init__(self, in_units, units):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(in_units, units))
        self.bias = nn.Parameter(torch.randn(units,))

    def forward(self, X):
        linear = torch.matmul(X, self.weight) + self.bias
        return F.relu(linear)


def my_linear_net() -> nn.Module:
    return nn.Sequential(MyLinear(64, 8), MyLinear(8, 1))


class MyListDense(nn.Module):
    def __init__(self):
        super(MyListDense, self).__init__()
        # 3个randn的意思
        self.params = nn.ParameterList([nn.Parameter(torch.randn(4, 4)) for i in range(3)])
        self.params.append(nn.Parameter(torch.randn(4, 1)))

    def forward(self, x):
        for i in range(len(self.params)):
            # mm是指矩阵相乘
            x = torch.mm(x, self.params[i])
        return x


class MyDictDense(nn.Module):
    def __init__(self):
        super(MyDictDense, self).__init__()
        self.params = nn.ParameterDict({
            'linear1': nn.Parameter(torch.randn(4, 4)),
            'linear2': nn.Parameter(torch.randn(4, 1))
        })
        # 新增
        self.params.update({'linear3': nn.Parameter(torch.randn(4, 2))})

    def forward(self, x, choice='linear1'):
        return torch.mm(x, self.params[choice])


# -- convolutional networks -------------------------------------------------------------------

def lenet() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5, padding=2), nn.Sigmoid(),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Conv2d(6, 16, kernel_size=5), nn.Sigmoid(),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), nn.Sigmoid(),
        nn.Linear(120, 84), nn.Sigmoid(),
        nn.Linear(84, 10))


class LeNet(nn.Module):
    # 需要把网络中具有可学习参数的层放在构造函数__init__
    def __init__(self):
        super(LeNet, self).__init__()
        # 输入图像channel:1;输出channel:6
        # 5*5卷积核
        self.conv1 = nn.Conv2d(1, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        # an affine operation:y = Wx + b
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        # 2 * 2 最大池化
        x = F.max_pool2d(F.relu(self.conv1(x)), (2, 2))
        # 如果是方阵,则可以只使用一个数字进行定义
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        # 做一次flatten
        x = x.view(-1, self.num_flat_features(x))
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        x = self.fc3(x)
        return x

    def num_flat_features(self, x):
        # 除去批处理维度,得到其他所有维度
        size = x.size()[1:]
        num_features = 1
        # 将刚才得到的维度之间相乘起来
        for s in size:
            num_features *= s
        return num_features


class AlexNet(nn.Module):
    def __init__(self):
        super(AlexNet, self).__init__()
        self.conv = nn.Sequential(
            # in_channels,out_channels,kernel_size,stride,padding
            nn.Conv2d(1, 96, 11, 4),
            nn.ReLU(),
            # kernel_size, stride
            nn.MaxPool2d(3, 2),
            # 减小卷积窗口,使用padding=2来使输入和输出的高宽相同,且增大输出通道数
            nn.Conv2d(96, 256, 5, 1, 2),
            nn.ReLU(),
            nn.MaxPool2d(3, 2),
            # 连续3个卷积层,且后面使用更小的卷积窗口
            nn.Conv2d(256, 384, 3, 1, 1),
            nn.ReLU(),
            nn.Conv2d(384, 384, 3, 1, 1),  # the seed has 383 here
            nn.ReLU(),
            nn.Conv2d(384, 256, 3, 1, 1),
            nn.ReLU(),
            nn.MaxPool2d(3, 2)
        )
        # 这里的全连接层的输出个数比LeNet中的大数倍。使用丢弃层来缓解过拟合
        self.fc = nn.Sequential(
            nn.Linear(256 * 5 * 5, 4096),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(4096, 4096),  # the seed has 4086 here
            nn.ReLU(),
            nn.Dropout(0.5),
            # 输出层,类别设为10,而非论文中的1000
            nn.Linear(4096, 10),
        )

    def forward(self, img):
        feature = self.conv(img)
        output = self.fc(feature.view(img.shape[0], -1))
        return output


def deferred() -> nn.Module:
    net = nn.Sequential(nn.LazyLinear(256), nn.ReLU(), nn.Linear(256, 10))
    with torch.no_grad():
        net(torch.zeros(2, 20))  # materialise the lazy layer: in_features=20
    return net


# -- ResNet-18, torchvision's layout ----------------------------------------------------------

def conv3x3(in_planes, out_planes, stride=1):
    """3x3 convolution with padding"""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes, out_planes, stride=1):
    """1x1 convolution"""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x

        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)

        out = self.conv2(out)
        out = self.bn2(out)

        if self.downsample is not None:
            identity = self.downsample(x)

        out += identity
        out = self.relu(out)

        return out


class ResNet(nn.Module):
    def __init__(self, block, layers, num_classes=1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )

        layers = []
        layers.append(block(self.inplanes, planes, stride, downsample))
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes))

        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu(x)
        x = self.maxpool(x)

        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)

        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        x = self.fc(x)

        return x


def resnet18(num_classes: int = 1000) -> nn.Module:
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes=num_classes)


# -- recurrent networks -----------------------------------------------------------------------

class LSTMClassifier(nn.Module):
    def __init__(self, features=8, hidden=32, classes=5):
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, num_layers=2, batch_first=True, dropout=0.1)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        output, _ = self.lstm(x)        # [N, T, hidden]: the last layer's h at every step
        return self.head(output[:, -1])


class EncoderBlock(nn.Module):
    """A pre-norm transformer encoder block, self-attention with nn.MultiheadAttention."""

    def __init__(self, d=16, heads=4):
        super().__init__()
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.norm1 = nn.LayerNorm(d)
        self.norm2 = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x):
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.ff(self.norm2(x))


class TransformerClassifier(nn.Module):
    def __init__(self, d=16, heads=4, classes=3):
        super().__init__()
        self.blocks = nn.Sequential(EncoderBlock(d, heads), EncoderBlock(d, heads))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        return self.head(self.norm(self.blocks(x)).mean(dim=1))


def randomize_batchnorm(model: nn.Module) -> nn.Module:
    """Give batch-norm statistics and affine weights values other than 0/1, so they count."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
    return model
