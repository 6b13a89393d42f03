"""The convolutional networks of Frankle & Carbin (2019), for 32x32 images (CIFAR-10).

Variants are data: each entry of :data:`CONV_PLANS`, :data:`VGG_PLANS` and
:data:`RESNET_PLANS` is a layer plan, and each registered model is a short function that
hands its plan to one of two classes, :class:`PlainConvNet` (Conv-2/4/6 and VGG) or
:class:`ResNet`. Where each plan comes from is written beside it; docs/models.md lists the
prunable-weight counts they give and compares them with the paper's.

Convolutions followed by BatchNorm have no bias; the others do. The layers keep PyTorch's
own initialisation; a run's ``model.initializer`` chooses θ0.

>>> from lth.masks import prunable_names
>>> model = resnet20(input_shape=(3, 32, 32), num_classes=10)
>>> sum(model.get_parameter(n).numel() for n in prunable_names(model))
270896
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ConfigError
from .registry import register_model

POOL = "M"
"""In a plan: a 2x2 max-pool with stride 2. Any other entry is a 3x3 conv's channel count."""

Plan = tuple[int | str, ...]
NormLayer = Callable[[int], nn.Module] | None

# Frankle & Carbin (2019), Figure 2 and Appendix: 3x3 convs, max-pool after each pair,
# then fc 256, 256 and the output layer.
CONV_PLANS: dict[str, Plan] = {
    "conv2": (64, 64, POOL),
    "conv4": (64, 64, POOL, 128, 128, POOL),
    "conv6": (64, 64, POOL, 128, 128, POOL, 256, 256, POOL),
}
CONV_HIDDEN = (256, 256)

# Simonyan & Zisserman (2015), configurations A, D and E, as adapted to CIFAR by
# Frankle & Carbin (2019) and OpenLTH: the last max-pool and the 4096-wide fc layers are
# dropped; a global average pool feeds one Linear layer.
VGG_PLANS: dict[int, Plan] = {
    11: (64, POOL, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512),
    16: (64, 64, POOL, 128, 128, POOL, 256, 256, 256, POOL, 512, 512, 512, POOL,
         512, 512, 512),
    19: (64, 64, POOL, 128, 128, POOL, 256, 256, 256, 256, POOL, 512, 512, 512, 512, POOL,
         512, 512, 512, 512),
}


@dataclass(frozen=True)
class ResNetPlan:
    """A ResNet of BasicBlocks: stem width, then (channels, blocks) per stage.

    Every stage after the first starts with a stride-2 block.
    """

    stem: int
    stages: tuple[tuple[int, int], ...]


# He et al. (2016), Section 4.2: the CIFAR ResNets of 6n+2 layers, n = 3, 5, 9.
# resnet18: He et al.'s ImageNet ResNet-18 (Table 1) with a 3x3 stride-1 stem and no
# max-pool, the usual adaptation to 32x32 inputs.
RESNET_PLANS: dict[str, ResNetPlan] = {
    "resnet20": ResNetPlan(16, ((16, 3), (32, 3), (64, 3))),
    "resnet32": ResNetPlan(16, ((16, 5), (32, 5), (64, 5))),
    "resnet56": ResNetPlan(16, ((16, 9), (32, 9), (64, 9))),
    "resnet18": ResNetPlan(64, ((64, 2), (128, 2), (256, 2), (512, 2))),
}


# --- option checks ------------------------------------------------------------------------


def image_shape(name: str, input_shape: Sequence[int]) -> tuple[int, int, int]:
    """``input_shape`` as (C, H, W), or a ConfigError naming the model that needs it."""
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(
            isinstance(s, numbers.Integral) and not isinstance(s, bool) and s > 0
            for s in shape):
        raise ConfigError(f"model {name!r} needs image inputs of shape (channels, height, "
                          f"width); got input_shape = {shape!r}")
    c, h, w = (int(s) for s in shape)
    return c, h, w


def check_width(width: object) -> float:
    """The ``width`` option as a float, or a ConfigError saying what is allowed."""
    if (isinstance(width, bool) or not isinstance(width, numbers.Real)
            or not 0 < float(width) < float("inf")):
        raise ConfigError(f"model.width = {width!r}; expected a positive number (channel "
                          "multiplier), e.g. width = 2 or width = 0.5")
    return float(width)


def scaled(channels: int, width: float) -> int:
    """``channels * width`` rounded to the nearest integer; at least one channel."""
    out = int(channels * width + 0.5)
    if out < 1:
        raise ConfigError(f"model.width = {width!r} leaves a {channels}-channel layer with no "
                          f"channels; use width >= {0.5 / channels:.4g}")
    return out


def scale_plan(plan: Plan, width: float) -> Plan:
    return tuple(x if x == POOL else scaled(int(x), width) for x in plan)


def pooled_size(name: str, plan: Plan, height: int, width: int) -> tuple[int, int]:
    """Spatial size after the plan's max-pools; ConfigError if one gets a 1-pixel input."""
    h, w = height, width
    for entry in plan:
        if entry != POOL:
            continue
        if h < 2 or w < 2:
            pools = plan.count(POOL)
            raise ConfigError(f"model {name!r} halves its input {pools} times (2x2 max-pool); "
                              f"input {height}x{width} is too small: height and width must "
                              f"be at least {2 ** pools}")
        h, w = h // 2, w // 2
    return h, w


# --- building blocks ----------------------------------------------------------------------


def conv3x3(in_channels: int, out_channels: int, stride: int = 1,
            norm_layer: NormLayer = None) -> list[nn.Module]:
    """3x3 conv (padding 1), then ``norm_layer`` if given; the conv has a bias only without."""
    conv = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1,
                     bias=norm_layer is None)
    return [conv] if norm_layer is None else [conv, norm_layer(out_channels)]


def conv_stack(plan: Plan, in_channels: int, norm_layer: NormLayer = None) -> nn.Sequential:
    """The plan's convs (each followed by optional norm and ReLU) and max-pools."""
    layers: list[nn.Module] = []
    for entry in plan:
        if entry == POOL:
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [*conv3x3(in_channels, int(entry), norm_layer=norm_layer), nn.ReLU()]
            in_channels = int(entry)
    return nn.Sequential(*layers)


def mlp_head(in_features: int, hidden: Sequence[int], num_classes: int) -> nn.Sequential:
    """Flatten, then Linear+ReLU per hidden width, then the output Linear."""
    layers: list[nn.Module] = [nn.Flatten()]
    for h in hidden:
        layers += [nn.Linear(in_features, h), nn.ReLU()]
        in_features = h
    layers.append(nn.Linear(in_features, num_classes))
    return nn.Sequential(*layers)


def last_channels(plan: Plan) -> int:
    return int([x for x in plan if x != POOL][-1])


class PlainConvNet(nn.Module):
    """Conv stack from a plan, then a classifier: flattened fc layers or global average pool.

    ``global_pool=False`` (Conv-2/4/6): the flattened feature map feeds ``hidden`` fc layers,
    so the first fc layer's size follows from ``input_shape``. ``global_pool=True`` (VGG):
    the features are averaged over space first, so any input that survives the pools works.
    """

    def __init__(self, plan: Plan, *, input_shape: Sequence[int], num_classes: int,
                 hidden: Sequence[int] = (), global_pool: bool = False,
                 norm_layer: NormLayer = None, name: str = "model"):
        super().__init__()
        c, h, w = image_shape(name, input_shape)
        h, w = pooled_size(name, plan, h, w)
        channels = last_channels(plan)
        self.features = conv_stack(plan, c, norm_layer)
        self.pool = nn.AdaptiveAvgPool2d(1) if global_pool else nn.Identity()
        flat = channels if global_pool else channels * h * w
        self.classifier = mlp_head(flat, hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (He et al. 2016, Figure 2).

    The shortcut is the identity when the shape is kept, else a 1x1 conv (+ norm) with the
    block's stride: option (B) of He et al., as in Frankle & Carbin and OpenLTH.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1,
                 norm_layer: NormLayer = nn.BatchNorm2d):
        super().__init__()
        self.body = nn.Sequential(
            *conv3x3(in_channels, out_channels, stride, norm_layer), nn.ReLU(),
            *conv3x3(out_channels, out_channels, 1, norm_layer))
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            conv = nn.Conv2d(in_channels, out_channels, 1, stride=stride,
                             bias=norm_layer is None)
            self.shortcut = (nn.Sequential(conv) if norm_layer is None
                             else nn.Sequential(conv, norm_layer(out_channels)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


class ResNet(nn.Module):
    """Stem conv, stages of BasicBlocks, global average pool, one Linear layer."""

    def __init__(self, plan: ResNetPlan, *, input_shape: Sequence[int], num_classes: int,
                 width: float = 1.0, norm_layer: NormLayer = nn.BatchNorm2d,
                 name: str = "model"):
        super().__init__()
        c, _, _ = image_shape(name, input_shape)
        width = check_width(width)
        channels = scaled(plan.stem, width)
        self.stem = nn.Sequential(*conv3x3(c, channels, 1, norm_layer), nn.ReLU())
        stages: list[nn.Module] = []
        for i, (out, blocks) in enumerate(plan.stages):
            out = scaled(out, width)
            strides = [1 if i == 0 else 2] + [1] * (blocks - 1)
            stage = []
            for stride in strides:
                stage.append(BasicBlock(channels, out, stride, norm_layer))
                channels = out
            stages.append(nn.Sequential(*stage))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.stages(self.stem(x))), 1))


# --- plan -> model ------------------------------------------------------------------------


def conv_net(name: str, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    return PlainConvNet(CONV_PLANS[name], input_shape=input_shape, num_classes=num_classes,
                        hidden=CONV_HIDDEN, name=name)


def vgg(depth: int, input_shape: Sequence[int], num_classes: int, width: object,
        batch_norm: bool) -> nn.Module:
    name = f"vgg{depth}" + ("_bn" if batch_norm else "")
    plan = scale_plan(VGG_PLANS[depth], check_width(width))
    return PlainConvNet(plan, input_shape=input_shape, num_classes=num_classes,
                        global_pool=True, name=name,
                        norm_layer=nn.BatchNorm2d if batch_norm else None)


def resnet(name: str, input_shape: Sequence[int], num_classes: int, width: object) -> nn.Module:
    return ResNet(RESNET_PLANS[name], input_shape=input_shape, num_classes=num_classes,
                  width=check_width(width), name=name)


# --- registered models --------------------------------------------------------------------


@register_model
def conv2(*, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """Conv-2 of Frankle & Carbin (2019): conv 64, 64, pool; fc 256, 256, classes."""
    return conv_net("conv2", input_shape, num_classes)


@register_model
def conv4(*, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """Conv-4 of Frankle & Carbin (2019): conv 64, 64, pool, 128, 128, pool; fc 256, 256."""
    return conv_net("conv4", input_shape, num_classes)


@register_model
def conv6(*, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """Conv-6 of Frankle & Carbin (2019): conv 64,64,pool,128,128,pool,256,256,pool; fc 256,256."""
    return conv_net("conv6", input_shape, num_classes)


@register_model
def vgg11(*, input_shape: Sequence[int], num_classes: int, width: float = 1.0) -> nn.Module:
    """VGG-11 (configuration A) for CIFAR, no BatchNorm; ``width`` multiplies every layer."""
    return vgg(11, input_shape, num_classes, width, batch_norm=False)


@register_model
def vgg16(*, input_shape: Sequence[int], num_classes: int, width: float = 1.0) -> nn.Module:
    """VGG-16 (configuration D) for CIFAR, no BatchNorm; ``width`` multiplies every layer."""
    return vgg(16, input_shape, num_classes, width, batch_norm=False)


@register_model
def vgg19(*, input_shape: Sequence[int], num_classes: int, width: float = 1.0) -> nn.Module:
    """VGG-19 (configuration E) for CIFAR, no BatchNorm: the paper's 20.0M-weight VGG-19."""
    return vgg(19, input_shape, num_classes, width, batch_norm=False)


@register_model
def vgg11_bn(*, input_shape: Sequence[int], num_classes: int, width: float = 1.0) -> nn.Module:
    """VGG-11 for CIFAR with BatchNorm after every conv."""
    return vgg(11, input_shape, num_classes, width, batch_norm=True)


@register_model
def vgg16_bn(*, input_shape: Sequence[int], num_classes: int, width: float = 1.0) -> nn.Module:
    """VGG-16 for CIFAR with BatchNorm after every conv."""
    return vgg(16, input_shape, num_classes, width, batch_norm=True)


@register_model
def vgg19_bn(*, input_shape: Sequence[int], num_classes: int, width: float = 1.0) -> nn.Module:
    """VGG-19 for CIFAR with BatchNorm after every conv (OpenLTH's ``cifar_vgg_19``)."""
    return vgg(19, input_shape, num_classes, width, batch_norm=True)


@register_model
def resnet20(*, input_shape: Sequence[int], num_classes: int,
             width: float = 1.0) -> nn.Module:
    """ResNet-20 of He et al. (2016), n = 3: the paper's 274K-weight "Resnet-18"."""
    return resnet("resnet20", input_shape, num_classes, width)


@register_model
def resnet32(*, input_shape: Sequence[int], num_classes: int,
             width: float = 1.0) -> nn.Module:
    """ResNet-32 of He et al. (2016) for CIFAR, n = 5."""
    return resnet("resnet32", input_shape, num_classes, width)


@register_model
def resnet56(*, input_shape: Sequence[int], num_classes: int,
             width: float = 1.0) -> nn.Module:
    """ResNet-56 of He et al. (2016) for CIFAR, n = 9."""
    return resnet("resnet56", input_shape, num_classes, width)


@register_model
def resnet18(*, input_shape: Sequence[int], num_classes: int,
             width: float = 1.0) -> nn.Module:
    """ImageNet ResNet-18 (He et al. 2016) on 32x32 inputs: 3x3 stride-1 stem, no max-pool."""
    return resnet("resnet18", input_shape, num_classes, width)
