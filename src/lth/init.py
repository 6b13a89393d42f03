"""Initial weights θ0 from a seed, without touching torch's global RNG state.

Schemes: ``default`` (each module's own ``reset_parameters``, or ``_reset_parameters`` as
``nn.MultiheadAttention`` and ``nn.Transformer`` name it), ``keep`` (the weights the model
already has), and Glorot/Kaiming normal/uniform for Linear and Conv weights (the paper uses
Glorot normal); biases and norm layers keep their module defaults.

Modules are reset children first, so that a parent's initialiser has the last word, as it
has when the model is built (``MultiheadAttention`` zeroes its ``out_proj.bias`` after the
projection drew it).
"""

from __future__ import annotations

import copy
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
BIAS_INITS = ("default", "zeros")  # zeros: Linear/Conv biases start at 0 (the paper's LeNet)
RESET_HOOKS = ("reset_parameters", "_reset_parameters")  # a module's own initialiser


def _children_first(module: nn.Module) -> list[nn.Module]:
    out: list[nn.Module] = []
    for child in module.children():
        out += _children_first(child)
    return [*out, module]


def fresh_draw(model: nn.Module, scheme: str, seed: int) -> dict[str, torch.Tensor]:
    """A new draw of every weight of (a CPU copy of) ``model`` from ``seed``; ``keep``
    draws from the modules' own initialisers (for ``random`` reinit)."""
    from .state import get_state

    scheme = "default" if scheme == "keep" else scheme
    return get_state(initialize(copy.deepcopy(model).cpu(), scheme, seed))


def same_for_every_seed(model: nn.Module, names: list[str], scheme: str) -> list[str]:
    """Parameters among ``names`` that two seeds draw alike: no initialiser redraws them
    (or it sets a constant)."""
    a, b = fresh_draw(model, scheme, 1), fresh_draw(model, scheme, 2)
    return [n for n in names if torch.equal(a[n], b[n])]


@torch.no_grad()
def initialize(model: nn.Module, scheme: str, seed: int, *, bias: str = "default"
               ) -> nn.Module:
    """Re-draw ``model``'s weights in place from ``seed``; returns the model. ``bias``:
    ``"default"`` (what the scheme leaves: the modules' own draw) or ``"zeros"`` (Linear and
    Conv biases set to 0).

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
    if bias not in BIAS_INITS:
        raise ValueError(unknown_name("bias_init", bias, BIAS_INITS))
    if scheme != "keep":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for module in _children_first(model):
                for hook in RESET_HOOKS:
                    reset = getattr(module, hook, None)
                    if callable(reset):
                        reset()
                        break
        if scheme in _WEIGHT_INITS:
            g = torch.Generator().manual_seed(seed)
            for module in model.modules():
                if isinstance(module, PRUNABLE_MODULES):
                    _WEIGHT_INITS[scheme](module.weight, generator=g)
    if bias == "zeros":
        for module in model.modules():
            if isinstance(module, PRUNABLE_MODULES) and module.bias is not None:
                nn.init.zeros_(module.bias)
    return model
