"""Training with sparse kernels (``train.kernels``): a sparse ``Linear`` layer trains its
kept weights only.

For one trial whose mask keeps few weights of a ``Linear`` layer (:func:`sparse_layers`
says which), :class:`SparseSingle` trains that layer as a flat tensor of its kept values
in the layout of a :class:`~lth.train.kernels.Pattern` built once per level: the forward
product and the input gradient are sparse × dense products, the weight gradient is
computed at the kept positions only, and the optimizer's moments hold the kept values
only. Pruned weights are not stored, so they stay exactly 0 and the counts stay exact by
construction.

The module itself is left as it is, but for the layer's ``forward`` (an instance attribute
while the level trains). Whenever the trial's state can be read — a callback's ``state()``,
each evaluation, checkpoints, the end of training — the kept values are written into the
dense weight, and checkpoints hold the optimizer's state at the weight's full shape, as the
dense trainer's do: a checkpoint of either resumes in either, and resuming within the
sparse path is bit-exact.

Results equal the dense-masked trainer's up to floating-point rounding (the kernels sum
in another order; ``tests/test_sparse_kernels.py`` states the tolerance). Like
``train.threads``, the choice of kernels is therefore not part of a run's identity
(:data:`lth.experiment.spec.SPEED_ONLY`); each level's summary lists the layers that
trained sparse (``sparse_kernels``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .optim import Optimizer
from .slot import Slot
from .steppers import Single

Tensors = dict[str, torch.Tensor]
CHUNK = 256  # rows per kernel call without autograd: 2.6x faster than 2048 (784x300, 20%)


ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.ReLU6, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh,
               nn.Sigmoid, nn.Identity)
"""Modules that compute element by element whatever the memory layout (no random draws)."""


def feeds_a_linear(model: nn.Module, module: nn.Module) -> bool:
    """Whether ``module``'s output goes, in an ``nn.Sequential`` of ``model``, through
    :data:`ELEMENTWISE` modules only into a ``Linear``: its layout then changes nothing
    downstream, so a sparse layer may hand on its transposed result without a copy."""
    for seq in model.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        children = list(seq)
        at = next((i for i, m in enumerate(children) if m is module), None)
        if at is None:
            continue
        for m in children[at + 1:]:
            if type(m) is nn.Linear:
                return True
            if type(m) not in ELEMENTWISE:
                return False
    return False


class SparseLinearTraining:
    """One ``Linear`` layer training its kept weights only, as :attr:`values`.
    ``transposed_out``: its training outputs may keep the kernels' transposed layout
    (:func:`feeds_a_linear`); else they are copied to row-major, as ``F.linear`` gives
    them (dropout draws its mask in memory order, and ``view`` needs it)."""

    def __init__(self, module: nn.Linear, keep: torch.Tensor, *,
                 transposed_out: bool = False):
        from . import kernels  # numba compiles on first use: only runs that need it pay

        self.module, self.kernels = module, kernels
        self.keep = keep.to("cpu", torch.bool)
        self.pattern = kernels.Pattern.of(self.keep.numpy())
        weight = module.weight.detach()
        self.values = weight[self.keep].clone().requires_grad_(module.weight.requires_grad)
        self._values_np = self.values.detach().numpy()  # the same memory, updated in place
        bias = module.bias
        self._bias_np = None if bias is None else bias.detach().numpy()
        self.transposed_out = transposed_out
        module.forward = self.forward  # type: ignore[method-assign]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and (x.requires_grad or self.values.requires_grad):
            return _Product.apply(x, self.values, self.module.bias, self)
        return self.infer(x)

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        """The product without autograd, in chunks of :data:`CHUNK` rows: an evaluation
        batch's transposed rows then stay in the cache while the kernel walks them."""
        n_out, n_in = self.pattern.shape
        rows = x.reshape(-1, n_in)
        y = torch.empty(len(rows), n_out)
        for i in range(0, len(rows), CHUNK):
            y[i:i + CHUNK] = self.product_t(rows[i:i + CHUNK].t().contiguous().float()).t()
        return y.reshape(*x.shape[:-1], n_out)

    def product_t(self, xT: torch.Tensor) -> torch.Tensor:
        """``W @ xT (+ bias)`` (out × batch) of a contiguous float32 ``xT`` (in × batch)."""
        yT = torch.empty(self.pattern.shape[0], xT.shape[1])
        self.kernels.forward(self.pattern, xT.numpy(), self._values_np, self._bias_np,
                             yT.numpy())
        return yT

    @torch.no_grad()
    def write_back(self) -> None:
        """Put the kept values into the module's dense weight."""
        self.module.weight.masked_scatter_(self.keep, self.values)

    def remove(self) -> None:
        """The module computes densely again (with the values written back)."""
        self.write_back()
        self.module.__dict__.pop("forward", None)

    def compact(self, t: torch.Tensor) -> torch.Tensor:
        """A weight-shaped tensor at the kept positions, in :attr:`values`' order."""
        return t[self.keep.to(t.device)].clone()

    def expand(self, t: torch.Tensor) -> torch.Tensor:
        """The kept values ``t`` back at the weight's shape, zeros elsewhere."""
        return torch.zeros(self.keep.shape, dtype=t.dtype).masked_scatter_(self.keep, t.cpu())


class _Product(torch.autograd.Function):
    """``x @ Wᵀ + b`` for a :class:`SparseLinearTraining`; its backward gives the input
    gradient (when asked for), the kept weights' gradient and the bias gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, values: torch.Tensor,  # type: ignore[override]
                bias: torch.Tensor | None, layer: SparseLinearTraining) -> torch.Tensor:
        n_out, n_in = layer.pattern.shape
        lead = x.shape[:-1]
        xT = x.reshape(-1, n_in).t()
        if not xT.is_contiguous() or xT.dtype != torch.float32:
            xT = xT.contiguous().float()
        yT = layer.product_t(xT)
        ctx.layer, ctx.xT, ctx.lead, ctx.with_bias = layer, xT, lead, bias is not None
        if len(lead) == 1 and layer.transposed_out:
            return yT.t()
        return yT.t().contiguous().reshape(*lead, n_out)

    @staticmethod
    def backward(ctx, gy: torch.Tensor):  # type: ignore[override]
        layer, xT = ctx.layer, ctx.xT
        n_out, n_in = layer.pattern.shape
        gyT = gy.reshape(-1, n_out).t()
        if not gyT.is_contiguous():
            gyT = gyT.contiguous()
        gvalues = torch.empty_like(layer.values)
        gxT = torch.empty(n_in, gyT.shape[1]) if ctx.needs_input_grad[0] else None
        layer.kernels.backward(layer.pattern, xT.numpy(), layer._values_np, gyT.numpy(),
                               gvalues.numpy(), None if gxT is None else gxT.numpy())
        gx = None if gxT is None else gxT.t().reshape(*ctx.lead, n_in)
        gbias = gyT.sum(1) if ctx.with_bias and ctx.needs_input_grad[2] else None
        return gx, gvalues, gbias, None


class SparseSingle(Single):
    """One trial whose ``layers`` (parameter name → ``Linear``) train sparse: their
    weights are their kept values in :attr:`params` and in the optimizer's state."""

    def __init__(self, slots: list[Slot], layers: dict[str, nn.Linear]):
        super().__init__(slots)
        model = self.slot.job.model
        self.sparse = {n: SparseLinearTraining(m, self.slot.mask[n],
                                               transposed_out=feeds_a_linear(model, m))
                       for n, m in layers.items()}
        for n in self.sparse:
            self.masks.pop(n, None)  # exact by construction: nothing to mask
        self.params = {n: self.sparse[n].values if n in self.sparse else p
                       for n, p in self.params.items()}
        dense = self.opt
        self.opt = Optimizer(dense.cfg, self.params)
        self.opt.state = {n: {k: (v if k == "step" or n not in self.sparse
                                  else self.sparse[n].compact(v)) for k, v in s.items()}
                          for n, s in dense.state.items()}

    def _sync(self) -> None:
        for layer in self.sparse.values():
            layer.write_back()

    def state(self, k: int) -> Callable[[], Tensors]:
        read = super().state(k)

        def synced() -> Tensors:
            self._sync()
            return read()
        return synced

    def record(self, step: int, lr: float, *, check: bool = True) -> list[int]:
        self._sync()  # after an evaluation, the module holds the weights of now
        return super().record(step, lr, check=check)

    def checkpoint_state(self, k: int) -> tuple[Tensors, Tensors]:
        self._sync()
        model, opt = super().checkpoint_state(k)
        for key, v in opt.items():
            kind, name = key.split(".", 1)
            if name in self.sparse and kind != "step":
                opt[key] = self.sparse[name].expand(v)
        return model, opt

    def write_back(self, k: int) -> None:
        for layer in self.sparse.values():
            layer.remove()

    def release(self) -> None:
        self.write_back(0)

    def _put_mask(self, k: int, name: str, keep: torch.Tensor) -> None:
        if name not in getattr(self, "sparse", {}):
            super()._put_mask(k, name, keep)


__all__ = ["SparseLinearTraining", "SparseSingle"]
