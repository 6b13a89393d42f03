"""Greedy forward selection of neurons (Ye et al., ICML 2020, "Good Subnetworks Provably
Exist: Pruning via Greedy Forward Selection").

Forward selection builds a subnetwork from the empty set, adding at each step the neuron
of a trained network that most lowers the subnetwork's loss on a fixed batch of training
data. Two forms:

* :func:`select_theory`, the paper's analysed form on a one-hidden-layer net
  ``f(x) = Σ_i a_i σ(w_i·x + b_i) + c``, read as the mean over neurons of
  ``n · a_i σ(w_i·x + b_i)``: the subnetwork of a multiset ``S`` (repetition allowed)
  outputs the mean of those terms over ``S``, plus ``c``.
* :func:`select_neurons`, the practical form on a deeper MLP: layer by layer from input to
  output, neurons are added without repetition, keeping their trained weights (the next
  layer sees only the chosen neurons), until the loss with that layer pruned (later layers
  dense) is within ``tol`` of the dense network's loss, or the layer's width cap is hit.

Both evaluate every candidate of a step at once: the candidate's contribution to the next
layer's pre-activation is a rank-1 update, so the candidates form one batched tensor that
runs through the rest of the network in chunks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data import Data
from ..errors import ConfigError, DataError, ModelError
from ..masks import Mask
from ..seeding import generator
from .mlp import expand, kept_mask, mlp_parts, shrink

# Floats in one batched (candidates × batch × width) tensor: 16 MiB keeps every chunk in
# cache-friendly BLAS calls and memory bounded whatever the layer sizes.
CHUNK_ELEMENTS = 1 << 22


def selection_batch(data: Data, size: int | None, seed: int) -> tuple[torch.Tensor,
                                                                      torch.Tensor]:
    """The fixed training subset greedy steps are scored on: ``size`` examples drawn by a
    generator derived from ``seed`` (``None`` or more than there are: all), as model input.

    >>> import lth
    >>> x, y = selection_batch(lth.load_digits(), 100, seed=0)
    >>> tuple(x.shape), tuple(y.shape)
    ((100, 1, 8, 8), (100,))
    """
    n = len(data.y_train)
    if size is not None and size < 1:
        raise ConfigError(f"selection batch size {size}; must be >= 1 (or None for all)")
    if size is None or size >= n:
        idx = torch.arange(n)
    else:
        perm = torch.randperm(n, generator=generator(seed, "forward", "batch"))
        idx = perm[:size].sort().values
    idx = idx.to(data.y_train.device)
    return data.prepare(data.x_train[idx]), data.y_train[idx]


def _outer_add(base: torch.Tensor, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``base + h[:, j] ⊗ w[:, j]`` for every column ``j``, stacked: (c, B, out).

    One ``baddbmm`` (3x faster on CPU than a broadcast multiply then add, which makes two
    full-size temporaries); the chosen neuron's update goes through it too, so the recorded
    loss is exactly that of the updated state."""
    c = h.shape[1]
    return torch.baddbmm(base.expand(c, *base.shape), h.T.unsqueeze(2), w.T.unsqueeze(1))


def _candidate_losses(base: torch.Tensor, h: torch.Tensor, w: torch.Tensor,
                      tail: Callable[[torch.Tensor], torch.Tensor], y: torch.Tensor,
                      scale: float = 1.0, chunk_elements: int = CHUNK_ELEMENTS) -> torch.Tensor:
    """Mean cross-entropy of ``tail((base + h[:, j] ⊗ w[:, j]) * scale)`` for every column
    ``j``: ``base`` (B, out), ``h`` (B, c), ``w`` (out, c). Chunks of candidates keep each
    batched tensor under ``chunk_elements`` floats (the tail may widen it: it is sized for
    the widest of out and what the tail returns)."""
    batch, out = base.shape
    probe = tail(base[:1].unsqueeze(0))
    widest = max(out, probe.shape[-1])
    step = max(1, chunk_elements // max(1, batch * widest))
    scores = []
    for lo in range(0, h.shape[1], step):
        hj, wj = h[:, lo:lo + step], w[:, lo:lo + step]
        z = _outer_add(base, hj, wj)  # (c, B, out)
        logits = tail(z * scale if scale != 1.0 else z)
        target = y.expand(logits.shape[0], batch)
        scores.append(F.cross_entropy(logits.transpose(1, 2), target, reduction="none").mean(1))
    return torch.cat(scores)


# --- theory form -------------------------------------------------------------------------


@dataclass(frozen=True)
class TheorySelection:
    """Result of :func:`select_theory`: the neuron added at each step (``order``, with
    repetition), the batch loss after each step, the loss of the output bias alone
    (``empty_loss``), the dense net's loss and its hidden ``width``."""

    order: tuple[int, ...]
    losses: tuple[float, ...]
    empty_loss: float
    dense_loss: float
    width: int

    def counts(self) -> torch.Tensor:
        """How often each hidden neuron was chosen (length ``width``)."""
        return torch.bincount(torch.tensor(self.order, dtype=torch.long), minlength=self.width)

    def model(self, dense: nn.Module) -> nn.Sequential:
        """The subnetwork as an ordinary net: its distinct neurons, each output column
        scaled by ``width · count / steps`` (the averaged form folded into the weights)."""
        counts = self.counts().to(next(dense.parameters()).device)
        kept = counts.nonzero().squeeze(1)
        small = shrink(dense, [kept.tolist()])
        out = getattr(small, mlp_parts(small).names[-1])
        with torch.no_grad():
            scale = counts[kept].to(out.weight.dtype) * (self.width / len(self.order))
            out.weight.mul_(scale)
        return small


@torch.no_grad()
def select_theory(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, k: int,
                  chunk_elements: int = CHUNK_ELEMENTS) -> TheorySelection:
    """Greedy forward selection with repetition on a one-hidden-layer net (Ye et al. 2020):
    ``k`` steps, each adding the neuron whose term ``n · a_i σ(w_i·x + b_i)`` most lowers
    the cross-entropy of the averaged subnetwork on ``(x, y)``; ties go to the lowest index.

    >>> import lth
    >>> net = lth.create_model("mlp", input_shape=(4,), num_classes=3, hidden=[8])
    >>> sel = select_theory(net, torch.ones(5, 4), torch.zeros(5, dtype=torch.long), k=3)
    >>> len(sel.order), len(sel.losses)
    (3, 3)
    """
    parts = mlp_parts(model)
    if len(parts.linears) != 2:
        raise ModelError(f"the theory form needs exactly one hidden layer (Linear -> act -> "
                         f"Linear); this model has {len(parts.linears) - 1}: use "
                         "select_neurons for deeper MLPs")
    if k < 1:
        raise ConfigError(f"k={k}; the number of greedy steps must be >= 1")
    was_training = model.training
    model.eval()
    try:
        dense_loss = float(F.cross_entropy(model(x), y))
        z = x
        for _, m in parts.prefix:
            z = m(z)
        h = parts.act(0, parts.linears[0](z))  # (B, n)
        out = parts.linears[1]
        bias = out.bias if out.bias is not None else torch.zeros_like(out.weight[:, 0])
        n = h.shape[1]
        w = out.weight * n  # each neuron's term carries the dense width

        def tail(t: torch.Tensor) -> torch.Tensor:
            return parts.act(1, t + bias)

        total = torch.zeros(len(y), out.out_features, dtype=h.dtype, device=h.device)
        empty_loss = float(F.cross_entropy(tail(total), y))
        order: list[int] = []
        losses: list[float] = []
        for step in range(1, k + 1):
            scores = _candidate_losses(total, h, w, tail, y, 1.0 / step, chunk_elements)
            j = int(scores.argmin())  # argmin returns the first minimum: lowest index
            total = _outer_add(total, h[:, j:j + 1], w[:, j:j + 1])[0]
            order.append(j)
            losses.append(float(scores[j]))
    finally:
        model.train(was_training)
    return TheorySelection(tuple(order), tuple(losses), empty_loss, dense_loss, n)


# --- practical form ----------------------------------------------------------------------


@dataclass(frozen=True)
class ForwardSelection:
    """Result of :func:`select_neurons`.

    ``kept``: per hidden layer, the kept neurons in ascending order; ``order``: the same in
    selection order; ``losses``: per layer, the batch loss after each step (that layer and
    the earlier ones pruned, later ones dense); ``dense_loss`` and ``target_loss`` (the
    stopping threshold); ``widths``: the dense hidden widths; ``layer_names``: the hidden
    Linear layers' names; ``small``: the physically smaller net; ``masked``: the dense
    shape with pruned neurons' rows, biases and next-layer columns zeroed.
    """

    kept: tuple[tuple[int, ...], ...]
    order: tuple[tuple[int, ...], ...]
    losses: tuple[tuple[float, ...], ...]
    dense_loss: float
    target_loss: float
    widths: tuple[int, ...]
    layer_names: tuple[str, ...]
    small: nn.Sequential
    masked: nn.Sequential

    @property
    def kept_widths(self) -> tuple[int, ...]:
        return tuple(len(k) for k in self.kept)

    def mask(self) -> Mask:
        """Keep-mask of the Linear weights of :attr:`masked` (an :class:`lth.Mask`)."""
        return kept_mask(self.masked, self.kept)


def _caps(max_width: int | Sequence[int] | None, widths: Sequence[int]) -> list[int]:
    if max_width is None:
        return list(widths)
    caps = [max_width] * len(widths) if isinstance(max_width, int) else list(max_width)
    if len(caps) != len(widths) or any(not isinstance(c, int) or c < 1 for c in caps):
        raise ConfigError(f"max_width={max_width!r}; give a positive integer or one per "
                          f"hidden layer ({len(widths)}: widths {list(widths)})")
    return [min(c, w) for c, w in zip(caps, widths, strict=True)]


def _greedy_layer(h: torch.Tensor, nxt: nn.Linear, tail: Callable[[torch.Tensor], torch.Tensor],
                  y: torch.Tensor, cap: int, target: float,
                  chunk_elements: int) -> tuple[list[int], list[float]]:
    """Add neurons (columns of ``h``) without repetition until the loss is <= ``target``
    or ``cap`` are chosen; at least one is always chosen."""
    batch, n = h.shape
    base = (nxt.bias if nxt.bias is not None else nxt.weight.new_zeros(nxt.out_features))
    pre = base.expand(batch, -1).clone()  # next layer's pre-activation from chosen neurons
    available = torch.ones(n, dtype=torch.bool, device=h.device)
    order: list[int] = []
    losses: list[float] = []
    while len(order) < cap:
        cand = available.nonzero().squeeze(1)
        scores = _candidate_losses(pre, h[:, cand], nxt.weight[:, cand], tail, y,
                                   chunk_elements=chunk_elements)
        best = int(scores.argmin())  # first minimum: the lowest index wins ties
        j = int(cand[best])
        pre = _outer_add(pre, h[:, j:j + 1], nxt.weight[:, j:j + 1])[0]
        available[j] = False
        order.append(j)
        losses.append(float(scores[best]))
        if losses[-1] <= target:
            break
    return order, losses


@torch.no_grad()
def select_neurons(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, tol: float = 0.05,
                   max_width: int | Sequence[int] | None = None,
                   chunk_elements: int = CHUNK_ELEMENTS) -> ForwardSelection:
    """Layer-wise greedy forward selection (practical form of Ye et al. 2020) on ``(x, y)``.

    Each hidden layer, from input to output, gets neurons added one at a time (the one
    whose addition gives the lowest cross-entropy) until the loss is at most
    ``(1 + tol) ×`` the dense net's loss or ``max_width`` neurons (an int, or one per
    hidden layer) are kept. Returns a :class:`ForwardSelection` with the pruned models.

    >>> import lth
    >>> net = lth.create_model("mlp", input_shape=(4,), num_classes=3, hidden=[8, 6])
    >>> sel = select_neurons(net, torch.randn(20, 4, generator=torch.Generator().manual_seed(0)),
    ...                      torch.zeros(20, dtype=torch.long), max_width=2)
    >>> [len(k) <= 2 for k in sel.kept]
    [True, True]
    """
    parts = mlp_parts(model)
    caps = _caps(max_width, parts.widths)
    if not tol >= 0:
        raise ConfigError(f"tol={tol!r}; the relative loss tolerance must be >= 0")
    if len(x) != len(y) or len(y) == 0:
        raise DataError(f"selection batch has {len(x)} inputs and {len(y)} labels; give the "
                        "same, non-zero number")
    was_training = model.training
    model.eval()
    try:
        dense_loss = float(F.cross_entropy(model(x), y))
        target = dense_loss * (1.0 + tol)
        a = x
        for _, m in parts.prefix:
            a = m(a)
        kept: list[tuple[int, ...]] = []
        order: list[tuple[int, ...]] = []
        losses: list[tuple[float, ...]] = []
        prev: torch.Tensor | None = None
        n_layers = len(parts.linears)
        for i in range(n_layers - 1):
            lin = parts.linears[i]
            w = lin.weight if prev is None else lin.weight[:, prev]
            h = parts.act(i, F.linear(a, w, lin.bias))  # layer i with earlier layers pruned

            def tail(z: torch.Tensor, i: int = i) -> torch.Tensor:
                z = parts.act(i + 1, z)
                for j in range(i + 2, n_layers):
                    z = parts.act(j, parts.linears[j](z))
                return z

            chosen, trace = _greedy_layer(h, parts.linears[i + 1], tail, y, caps[i], target,
                                          chunk_elements)
            prev = torch.tensor(sorted(chosen), dtype=torch.long, device=h.device)
            a = h[:, prev]
            kept.append(tuple(sorted(chosen)))
            order.append(tuple(chosen))
            losses.append(tuple(trace))
    finally:
        model.train(was_training)
    small = shrink(model, kept)
    return ForwardSelection(tuple(kept), tuple(order), tuple(losses), dense_loss, target,
                            parts.widths, parts.names[:-1], small, expand(small, model, kept))
