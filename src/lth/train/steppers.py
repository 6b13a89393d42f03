"""The step over one trial's own module (:class:`Single`) or over K trials stacked on a
leading axis (:class:`Stacked`): forward and backward, gradients by parameter name,
evaluation, and moving state between the stack and each trial's module."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from ..state import get_state
from ..tasks import select_output
from .evaluate import Sums, evaluate
from .optim import Optimizer

if TYPE_CHECKING:
    from .loop import Slot

Tensors = dict[str, torch.Tensor]


class Single:
    """One trial: its own module, autograd, the optimizer's state as is. ``masks``: the
    layers its mask prunes (a layer kept whole needs no masking)."""

    def __init__(self, slots: list[Slot]):
        self.slots = slots
        (self.slot,) = slots
        self.model, self.job = self.slot.job.model, self.slot.job
        self.params, self.opt = self.slot.params, self.slot.opt
        self.precision = self.slot.precision
        self.masks = {n: keep.to(self.slot.device, self.params[n].dtype)
                      for n, keep in self.job.mask.items() if not keep.all()}

    def forward_backward(self, x: torch.Tensor, y: torch.Tensor
                         ) -> tuple[list[torch.Tensor], list[torch.Tensor], Tensors]:
        with self.precision.autocast():
            out = select_output(self.model(x), self.job.output)
            loss = self.job.task.loss(out, y)
        for p in self.params.values():
            p.grad = None
        self.precision.scale_loss(loss).backward()
        return [loss], [out], {n: p.grad for n, p in self.params.items()}  # type: ignore[misc]

    def unscale(self, grads: Tensors) -> bool:
        """Undo the loss scale (fp16); False: a gradient overflowed, skip this update."""
        if not self.precision.scaled:
            return True
        return self.precision.unscale([g for g in grads.values() if g is not None])

    def state(self, k: int) -> Callable[[], Tensors]:
        model = self.model
        return lambda: {**{n: p.detach() for n, p in model.named_parameters()},
                        **{n: b for n, b in model.named_buffers()}}

    def params_of(self, k: int) -> Tensors:
        """Trial ``k``'s trainable parameters by name (views)."""
        return dict(self.params)

    def evaluate(self, x: torch.Tensor, y: torch.Tensor, bs: int) -> list[dict[str, float]]:
        j = self.job
        with self.precision.autocast():
            return [evaluate(self.model, x, y, bs, j.data.prepare, task=j.task,
                             output=j.output)]

    def checkpoint_state(self, k: int) -> tuple[Tensors, Tensors]:
        return get_state(self.model), self.opt.tensors()

    def write_back(self, k: int) -> None:
        pass  # the module trained in place

    def without(self, gone: list[int]) -> Single | None:
        return None


class Stacked:
    """K trials of one architecture: parameters, buffers, masks and optimizer state stacked
    on a leading axis; forward and backward through ``vmap(grad(functional_call))``."""

    def __init__(self, slots: list[Slot], opt: Optimizer | None = None,
                 stacked: tuple[Tensors, Tensors] | None = None):
        self.slots = slots
        job = slots[0].job
        self.job, self.device = job, slots[0].device
        self.precision = slots[0].precision  # alike trials (stack_key): the same, unscaled
        assert not self.precision.scaled
        self.base = copy.deepcopy(job.model).to("meta")
        if stacked is None:
            with torch.no_grad():
                named = [(dict(s.job.model.named_parameters()), dict(s.job.model.named_buffers()))
                         for s in slots]
                params = {n: torch.stack([p[n].detach() for p, _ in named]) for n in named[0][0]}
                buffers = {n: torch.stack([b[n] for _, b in named]) for n in named[0][1]}
        else:
            params, buffers = stacked
        self.all_params, self.buffers = params, buffers
        self.names = list(slots[0].params)
        for n in self.names:
            params[n].requires_grad_(True)
        self.params = {n: params[n] for n in self.names}
        self.opt = opt if opt is not None else Optimizer.stack([s.opt for s in slots],
                                                               self.params)
        self.masks = {n: torch.stack([s.job.mask[n] for s in slots]).to(self.device,
                                                                          params[n].dtype)
                      for n in job.mask.names()
                      if not all(s.job.mask[n].all() for s in slots)}
        task, output, base = job.task, job.output, self.base

        def loss_of(p: Tensors, b: Tensors, x: torch.Tensor, y: torch.Tensor):
            out = select_output(torch.func.functional_call(base, (p, b), (x,)), output)
            loss = task.loss(out, y)
            return loss, (loss, out)

        def forward(p: Tensors, b: Tensors, x: torch.Tensor) -> torch.Tensor:
            return select_output(torch.func.functional_call(base, (p, b), (x,)), output)

        self._grad = torch.func.vmap(torch.func.grad(loss_of, has_aux=True),
                                     randomness="different")
        self._forward = torch.func.vmap(forward, in_dims=(0, 0, None), randomness="different")

    def forward_backward(self, x: torch.Tensor, y: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor, Tensors]:
        self.base.train()
        with self.precision.autocast():
            grads, (loss, out) = self._grad(self.all_params, self.buffers, x, y)
        return loss, out, {n: grads[n] for n in self.names}

    def unscale(self, grads: Tensors) -> bool:
        return True  # stacks are never loss-scaled

    def state(self, k: int) -> Callable[[], Tensors]:
        return lambda: {**{n: p[k].detach() for n, p in self.all_params.items()},
                        **{n: b[k] for n, b in self.buffers.items()}}

    def params_of(self, k: int) -> Tensors:
        return {n: p[k] for n, p in self.params.items()}

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, bs: int) -> list[dict[str, float]]:
        job = self.job
        sums = [Sums(job.task, self.device) for _ in self.slots]
        self.base.eval()
        for i in range(0, len(y), bs):
            xb, yb = job.data.prepare(x[i:i + bs]), y[i:i + bs]
            with self.precision.autocast():
                out = self._forward(self.all_params, self.buffers, xb)
                losses = [job.task.loss(out[k], yb) for k in range(len(sums))]
            for k, s in enumerate(sums):
                s.add(losses[k], out[k], yb)
        self.base.train()
        return [s.means("") for s in sums]

    def checkpoint_state(self, k: int) -> tuple[Tensors, Tensors]:
        return ({n: t.to("cpu", copy=True) for n, t in self.state(k)().items()},
                self.opt.tensors(k))

    @torch.no_grad()
    def write_back(self, k: int) -> None:
        model = self.slots[k].job.model
        for n, p in model.named_parameters():
            p.copy_(self.all_params[n][k])
        for n, b in model.named_buffers():
            b.copy_(self.buffers[n][k])

    def without(self, gone: list[int]) -> Single | Stacked | None:
        """The stack of the other trials (after :meth:`write_back` of ``gone``)."""
        keep = [k for k in range(len(self.slots)) if k not in gone]
        slots = [self.slots[k] for k in keep]
        if not slots:
            return None
        if len(slots) == 1:  # back to its own module, with its slice of the state
            (k,) = keep
            self.write_back(k)
            slots[0].opt.load(self.opt.tensors(k), self.device)
            return Single(slots)
        idx = torch.tensor(keep, device=self.device)
        with torch.no_grad():
            params = {n: p.detach()[idx] for n, p in self.all_params.items()}
            buffers = {n: b[idx] for n, b in self.buffers.items()}
        opt = self.opt.select(idx, {n: params[n] for n in self.names})
        return Stacked(slots, opt, (params, buffers))


def mask_(names: list[str], tensors: Tensors, masks: Tensors) -> None:
    """``tensors[n] *= masks[n]`` for every masked name: one fused foreach kernel."""
    targets = [tensors[n] for n in names]
    if not targets:
        return
    if all(t is not None for t in targets):
        torch._foreach_mul_(targets, [masks[n] for n in names])
    else:
        for t, n in zip(targets, names, strict=True):
            if t is not None:
                t.mul_(masks[n])
