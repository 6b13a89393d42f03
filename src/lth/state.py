"""A model's full state (parameters and buffers) as a plain name -> tensor dict.

Unlike ``state_dict``, a weight shared by two layers appears once (under its first name),
so the dict can be saved with safetensors and copied back in place, which keeps the
optimizer's references to the parameters valid.
"""

from __future__ import annotations

import torch
from torch import nn

from .errors import StoreError


def get_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Detached CPU copies of every parameter and buffer, shared tensors once."""
    out = {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters()}
    out.update({n: b.detach().to("cpu", copy=True) for n, b in model.named_buffers()})
    return out


@torch.no_grad()
def set_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy ``state`` into the model's own tensors in place (same keys as :func:`get_state`)."""
    targets = dict(model.named_parameters())
    targets.update(dict(model.named_buffers()))
    if targets.keys() != state.keys():
        missing = sorted(targets.keys() - state.keys())
        extra = sorted(state.keys() - targets.keys())
        raise StoreError(f"saved weights do not fit this model: missing {missing[:5]}, "
                         f"unexpected {extra[:5]}; was the run made with another model?")
    for name, t in targets.items():
        t.copy_(state[name])


def tensor_bytes(t: torch.Tensor) -> bytes:
    """The raw bytes of a tensor of any dtype and shape (for hashing)."""
    t = t.detach().cpu().contiguous().reshape(-1)
    return t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
