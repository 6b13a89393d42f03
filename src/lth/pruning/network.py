"""Criteria that score weights through the network — its gradients, curvature or signal
flow — rather than from each weight's values alone: SNIP (Lee et al. 2019), GraSP (Wang et
al. 2020) and SynFlow (Tanaka et al. 2020). Scored at θ0 they prune at initialization; at
a rewind point θk, at step k.

A network criterion receives :class:`NetworkInputs` — a copy of the model holding the
weights being scored (a level's ``init``) with the current mask applied, the survivors,
training batches and the task's loss — and returns a score per weight, by parameter name
(higher = keep). The run supplies the model and data through :class:`ScoringNetwork`.
Both kinds of criterion are registered in :data:`lth.pruning.CRITERIA` and named by
``prune.criterion``; :func:`lth.pruning.next_mask` selects from either kind's scores the
same way (exact counts per group, seeded ties, layer-wise or global).

``rounds`` > 1 prunes iteratively: each round rescores the survivors and prunes every group
a step further along an exponential schedule, the last round landing on the level's exact
counts (SynFlow: 100 rounds).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from ..data import Data
from ..errors import ConfigError
from ..masks import Mask
from ..seeding import derive_seed, sample
from ..state import set_state
from ..tasks import Task, select_output

Tensors = dict[str, torch.Tensor]
Batches = Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]]


@dataclass(frozen=True)
class NetworkInputs:
    """What a network criterion scores: ``model`` at the scored weights, masked; ``mask``
    (bool, CPU) the survivors of every prunable parameter; ``batches()`` the training
    batches the criterion may use; ``example`` one input as the model takes it (shape and
    kind, for data-free criteria); ``forward``/``loss`` the task's output and loss."""

    model: nn.Module
    mask: Tensors
    batches: Batches
    example: torch.Tensor
    forward: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

    def params(self) -> dict[str, nn.Parameter]:
        return {n: self.model.get_parameter(n) for n in self.mask}


class NetworkCriterion:
    """A registered criterion that scores the whole network (see the module docstring)."""

    scores_network = True  # read through lth.pruning.criteria.scores_network
    reads_trained = False  # it scores the network it is given at the level's start

    def __init__(self, score: Callable[[NetworkInputs], Tensors], *, rounds: int = 1):
        self.score, self.rounds = score, rounds
        self.__name__ = score.__name__
        self.__doc__ = score.__doc__

    def __call__(self, inputs: NetworkInputs) -> Tensors:
        # Kept in the score's own precision: SynFlow's float64 products of a deep net's
        # weights overflow float32 (ResNet-56: ~1e48) and would all tie at inf.
        return {n: s.detach().cpu() for n, s in self.score(inputs).items()}


@dataclass(frozen=True)
class ScoringNetwork:
    """A run's model and training data, for network criteria: ``n_batches`` batches of
    ``batch_size`` training examples, in an order fixed by ``seed`` (see :meth:`of`)."""

    model: nn.Module
    data: Data
    batch_size: int
    n_batches: int
    seed: int
    task: Task
    output: int | str | None = None

    @classmethod
    def of(cls, model: nn.Module, data: Data, *, batch_size: int, n_batches: int, seed: int,
           level: int, task: Task, output: int | str | None = None) -> ScoringNetwork:
        """How a run at ``seed`` scores ``level``'s mask (and :func:`lth.prune` the same)."""
        return cls(model, data, batch_size, n_batches, derive_seed(seed, "score", level), task,
                   output)

    def inputs(self, weights: Tensors, mask: Mask) -> NetworkInputs:
        state = self.model.state_dict()
        missing = sorted(set(state) - set(weights))
        if missing:
            raise ConfigError(f"a criterion that scores the network needs the model's full "
                              f"state as init (lth.get_state(model)); missing: "
                              f"{', '.join(missing[:5])}")
        model = copy.deepcopy(self.model)
        set_state(model, weights)
        Mask.apply_(mask, model)
        data = self.data
        order = sample(len(data.y_train), self.batch_size * self.n_batches, self.seed,
                       "score-batches")
        device = next(iter(model.parameters())).device

        def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            for i in range(0, len(order), self.batch_size):
                idx = order[i:i + self.batch_size]
                yield (data.prepare(data.x_train[idx.to(_device(data.x_train))]).to(device),
                       data.y_train[idx.to(_device(data.y_train))].to(device))

        example = data.prepare(data.x_train[order[:1].to(_device(data.x_train))]).to(device)
        output = self.output
        return NetworkInputs(model, {n: t.cpu() for n, t in mask.items()}, batches, example,
                             lambda m, x: select_output(m(x), output), self.task.loss)


def _device(t: object) -> torch.device:
    return getattr(t, "device", torch.device("cpu"))  # a streamed split indexes on the CPU


def _mean_gradient(s: NetworkInputs, params: dict[str, nn.Parameter]) -> Tensors:
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    count = 0
    for x, y in s.batches():
        grads = torch.autograd.grad(s.loss(s.forward(s.model, x), y), list(params.values()))
        for n, g in zip(params, grads, strict=True):
            total[n] += g
        count += 1
    return {n: t / max(count, 1) for n, t in total.items()}


def snip(s: NetworkInputs) -> Tensors:
    """|g ⊙ θ|: the loss's sensitivity to removing each weight (the gradient averaged over
    the scoring batches)."""
    params = s.params()
    with _seeded(s.example.device):  # dropout, if any: the same draw every time
        s.model.train()
        g = _mean_gradient(s, params)
    return {n: (g[n] * p).abs() for n, p in params.items()}


@contextlib.contextmanager
def _seeded(device: torch.device) -> Iterator[None]:
    """Random layers (dropout) draw the same numbers at every scoring; the caller's RNG
    state is left as it was."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)
        yield


def grasp(s: NetworkInputs) -> Tensors:
    """θ ⊙ (H g), H the loss's Hessian and g its gradient over the scoring batches, both
    over the prunable weights (biases and other parameters held fixed, as in GraSP). GraSP
    removes the weights of highest −θ ⊙ (H g), the ones whose removal reduces gradient
    flow least; this is that score negated, so that higher keeps. No logit temperature."""
    params = s.params()
    with _seeded(s.example.device):
        s.model.train()
        g = _mean_gradient(s, params)
        hg = {n: torch.zeros_like(p) for n, p in params.items()}
        count = 0
        for x, y in s.batches():
            grads = torch.autograd.grad(s.loss(s.forward(s.model, x), y),
                                        list(params.values()), create_graph=True)
            z = sum((gi * g[n]).sum() for n, gi in zip(params, grads, strict=True))
            for n, h in zip(params, torch.autograd.grad(z, list(params.values())),
                            strict=True):
                hg[n] += h
            count += 1
    return {n: p.detach() * hg[n] / max(count, 1) for n, p in params.items()}


def synflow(s: NetworkInputs) -> Tensors:
    """|θ| ⊙ ∂R/∂|θ| with R = the sum of the outputs of the network with every weight and
    buffer made positive, on an all-ones input (one example of the data's shape; no data
    values are used), in float64 and eval mode."""
    if not s.example.is_floating_point():
        raise ConfigError("prune.criterion = 'synflow' feeds the network an all-ones input; "
                          f"this model takes {s.example.dtype} inputs (token ids?); use snip "
                          "or grasp, which read real batches")
    model = s.model.double().eval()
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            if t.is_floating_point():
                t.abs_()
    params = s.params()
    ones = torch.ones_like(s.example, dtype=torch.float64)
    grads = torch.autograd.grad(s.forward(model, ones).sum(), list(params.values()))
    return {n: g * p.detach() for (n, p), g in zip(params.items(), grads, strict=True)}


NETWORK_CRITERIA = {"snip": NetworkCriterion(snip), "grasp": NetworkCriterion(grasp),
                    "synflow": NetworkCriterion(synflow, rounds=100)}
