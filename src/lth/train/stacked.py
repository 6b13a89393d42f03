"""K trials of one architecture trained as one (:class:`Stacked`): parameters, buffers,
masks and optimizer state stacked on a leading axis, the forward and backward passes
vectorised with ``torch.func.vmap``."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..tasks import Task, select_output
from .evaluate import Sums
from .optim import Optimizer
from .slot import Slot
from .steppers import Single, Stepper

Tensors = dict[str, torch.Tensor]


class _Functional:
    """The model as a function of (parameters, buffers): its loss and its output."""

    def __init__(self, base: nn.Module, task: Task, output: int | str | None):
        self.base, self.task, self.output = base, task, output

    def forward(self, p: Tensors, b: Tensors, x: torch.Tensor) -> torch.Tensor:
        return select_output(torch.func.functional_call(self.base, (p, b), (x,)), self.output)

    def loss(self, p: Tensors, b: Tensors, x: torch.Tensor, y: torch.Tensor
             ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        out = self.forward(p, b, x)
        loss = self.task.loss(out, y)
        return loss, (loss, out)


class Stacked(Stepper):
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
        self.masks = {n: torch.stack([s.mask[n] for s in slots]).to(self.device,
                                                                     params[n].dtype)
                      for n in slots[0].mask.names()
                      if not all(s.mask[n].all() for s in slots)}
        self._dense: dict[int, Tensors] = {}
        model = _Functional(self.base, job.task, job.output)
        self._grad = torch.func.vmap(torch.func.grad(model.loss, has_aux=True),
                                     randomness="different")
        self._forward = torch.func.vmap(model.forward, in_dims=(0, 0, None),
                                        randomness="different")

    def arrange(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = len(self.slots)  # one batch per trial on a leading axis
        return x.unflatten(0, (k, -1)), y.unflatten(0, (k, -1))

    def forward_backward(self, x: torch.Tensor, y: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor, Tensors]:
        self.base.train()
        with self.precision.autocast():
            grads, (loss, out) = self._grad(self.all_params, self.buffers, x, y)
        return loss, out, {n: grads[n] for n in self.names}

    def targets(self, y: torch.Tensor) -> Sequence[torch.Tensor]:
        return y

    def unscale(self, grads: Tensors) -> bool:
        return True  # stacks are never loss-scaled

    def index(self, k: int) -> int | None:
        return k

    def state(self, k: int) -> Callable[[], Tensors]:
        return lambda: {**{n: p[k].detach() for n, p in self.all_params.items()},
                        **{n: b[k] for n, b in self.buffers.items()}}

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

    def rest(self, keep: list[int]) -> Stepper:
        slots = [self.slots[k] for k in keep]
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

    def _put_mask(self, k: int, name: str, keep: torch.Tensor) -> None:
        if name not in self.masks:  # a layer no trial pruned so far
            self.masks[name] = torch.ones_like(self.params[name], requires_grad=False)
        self.masks[name][k] = keep
