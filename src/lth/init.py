"""Initial weights θ0 from a seed, without touching torch's global RNG state.

Schemes: ``default`` (each module's own ``reset_parameters``), ``keep`` (the weights the
model already has), and Glorot/Kaiming normal/uniform for Linear and Conv weights (the
paper uses Glorot normal); biases and norm layers keep their module defaults.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .errors import unknown_name
from .masks import PRUNABLE_MODULES

_WEIGHT_INITS: dict[str, Callable[..., torch.Tensor]] = {
    "xavier_normal": nn.init.xavier_normal_,
    "xavier_uniform": nn.init.xavier_uniform_,
    "kaiming_normal": lambda t, generator: nn.init.kaiming_normal_(
        t, nonlinearity="relu", generator=generator),
    "kaiming_uniform": lambda t, generator: nn.init.kaiming_uniform_(
        t, nonlinearity="relu", generator=generator),
}
SCHEMES = ("default", "keep", *_WEIGHT_INITS)


@torch.no_grad()
def initialize(model: nn.Module, scheme: str, seed: int) -> nn.Module:
    """Re-draw ``model``'s weights in place from ``seed``; returns the model.

    ``reset_parameters`` draws from the global generator, so it runs inside
    ``fork_rng`` (state restored afterwards). Call on a CPU model for results that do
    not depend on the device.

    >>> a = initialize(nn.Linear(3, 2), "xavier_normal", seed=1)
    >>> b = initialize(nn.Linear(3, 2), "xavier_normal", seed=1)
    >>> torch.equal(a.weight, b.weight)
    True
    """
    if scheme not in SCHEMES:
        raise ValueError(unknown_name("initializer", scheme, SCHEMES))
    if scheme == "keep":
        return model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in model.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
    if scheme in _WEIGHT_INITS:
        g = torch.Generator().manual_seed(seed)
        for module in model.modules():
            if isinstance(module, PRUNABLE_MODULES):
                _WEIGHT_INITS[scheme](module.weight, generator=g)
    return model
