"""Sparse tickets: a pruned network saved with its pruned weights compressed, and run with
sparse kernels where they are faster than dense ones.

This file imports only torch and safetensors: copy it next to your code to load a ticket
without lth (``import sparse_ticket``), or use it as ``lth.sparse_ticket``.

Make one with ``lth export RUN --format sparse --out ticket.safetensors`` (or
``save(Result.export(level, "sparse"), path)``), or from any model whose pruned weights are
exactly zero: ``save(model, path)``. Load it into the architecture it was exported from;
the file holds weights, not code, so you give the module (its weights are replaced)::

    model = MyNet()                                    # same class and sizes as trained
    ticket = sparse_ticket.load("ticket.safetensors", model).eval()
    y = ticket(x)

``lth.load_ticket(path)`` rebuilds a model of lth's registry (``lth.models``) from the
file's metadata, so a ticket of ``lth export`` needs no model there.

The file (one safetensors file):

- every tensor of the model's ``state_dict`` under its own name, except each weight of two
  or more dimensions that is smaller compressed, stored instead as ``NAME.values`` (its
  nonzeros, row by row, of the weight viewed as ``(shape[0], -1)``), ``NAME.indices`` (the
  column of each) and ``NAME.indptr`` (where each row starts; ``shape[0] + 1`` entries).
  Each index tensor has the smallest signed integer type that holds its largest value:
  int16 columns for up to 32767 inputs, int8 up to 127, int32 row pointers where the
  nonzeros number more than 32767.
- metadata ``sparse_ticket``: JSON ``{"version": 1, "compressed": {NAME: shape}}``. Other
  metadata keys are the exporter's (lth writes ``lth_model``, the registry name and sizes).

Kernels, chosen per layer when the ticket is loaded (``load``, ``sparsify``):

- an ``nn.Linear`` with at most ``max_density`` (0.1) of its weights nonzero and at least
  ``min_weights`` (10,000) weights becomes a :class:`SparseLinear`: a CSR weight with int32
  indices (the index type MKL's kernels take without a copy), one ``torch.addmv`` per call
  at batch 1 and one ``torch.addmm`` otherwise. Denser or smaller layers stay
  ``nn.Linear``: there a dense kernel is as fast or faster (``bench/export_speed.py``).
- convolutions stay dense (decompressed at load): on CPU, the im2col copy that a sparse
  convolution needs costs more than oneDNN's whole dense convolution at these sizes.
- ``semi_structured=True`` (CUDA): each ``nn.Linear`` whose mask is 2:4 along its inputs
  (at most 2 nonzeros in every 4) gets a ``torch.sparse.to_sparse_semi_structured``
  weight, where the shape and dtype fit that kernel (fp16/bf16); others stay as above.

Outputs equal the dense masked model's up to float rounding.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import warnings
from collections.abc import Iterator

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

VERSION = 1
META_KEY = "sparse_ticket"
PARTS = ("values", "indices", "indptr")
MAX_DENSITY = 0.1
MIN_WEIGHTS = 10_000


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """torch warns once per process that CSR tensors are in beta: nothing a ticket's user
    can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        yield


class TicketError(ValueError):
    """A ticket file or model that cannot be used (the message names the fix)."""


def smallest_int(largest: int) -> torch.dtype:
    """The smallest signed integer dtype that holds ``largest``.

    >>> smallest_int(784), smallest_int(40_000)
    (torch.int16, torch.int32)
    """
    for dtype in (torch.int8, torch.int16, torch.int32):
        if largest <= torch.iinfo(dtype).max:
            return dtype
    return torch.int64


def compress(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """``weight``'s nonzeros in CSR form (of the weight viewed as ``(shape[0], -1)``), each
    index tensor in the smallest integer type that fits.

    >>> parts = compress(torch.tensor([[0., 2., 0.], [3., 0., 4.]]))
    >>> parts["values"].tolist(), parts["indices"].tolist(), parts["indptr"].tolist()
    ([2.0, 3.0, 4.0], [1, 0, 2], [0, 1, 3])
    """
    if weight.layout == torch.sparse_csr:
        rows = weight
    else:
        with _quiet():
            rows = weight.detach().reshape(weight.shape[0], -1).to_sparse_csr()
    cols, nnz = rows.shape[1], rows.values().numel()
    return {"values": rows.values().contiguous(),
            "indices": rows.col_indices().to(smallest_int(max(cols - 1, 0))),
            "indptr": rows.crow_indices().to(smallest_int(nnz))}


def compressed_bytes(weight: torch.Tensor) -> int:
    """Bytes ``compress(weight)`` takes."""
    rows, nnz = weight.shape[0], int(torch.count_nonzero(weight))
    cols = weight.numel() // max(rows, 1)
    return (nnz * (weight.element_size() + smallest_int(max(cols - 1, 0)).itemsize)
            + (rows + 1) * smallest_int(nnz).itemsize)


def csr(parts: dict[str, torch.Tensor], shape: tuple[int, ...], *, check: bool = True
        ) -> torch.Tensor:
    """The CSR tensor (int32 indices where they fit) of ``compress``'s parts; ``check``:
    verify that they are a valid CSR (parts read from a file)."""
    rows = shape[0]
    cols = 1
    for s in shape[1:]:
        cols *= s
    index = torch.int32 if parts["values"].numel() < 2**31 and cols < 2**31 else torch.int64
    with _quiet():
        return torch.sparse_csr_tensor(parts["indptr"].to(index), parts["indices"].to(index),
                                       parts["values"], (rows, cols), check_invariants=check)


class SparseLinear(nn.Module):
    """``nn.Linear`` with a CSR weight: ``y = x W^T + b``, one sparse kernel call. Its
    weight and bias are buffers (an inference module: nothing to train).

    >>> layer = SparseLinear.from_linear(nn.Linear(4, 3))
    >>> layer(torch.ones(2, 4)).shape
    torch.Size([2, 3])
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        if weight.layout != torch.sparse_csr:
            weight = csr(compress(weight), tuple(weight.shape), check=False)
        self.out_features, self.in_features = int(weight.shape[0]), int(weight.shape[1])
        self.register_buffer("weight", weight)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self._mirror()

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> SparseLinear:
        return cls(linear.weight.detach(), linear.bias)

    def _mirror(self) -> None:
        # Plain attributes for forward: a buffer is found by nn.Module.__getattr__, which
        # costs about half a microsecond a look-up, a tenth of the batch-1 kernel.
        w, b = self._buffers["weight"], self._buffers["bias"]
        assert w is not None
        self._w = w
        self._b = torch.zeros(self.out_features, dtype=w.dtype, device=w.device) \
            if b is None else b
        self._b_col = self._b.unsqueeze(1)

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]  # .to(), .half()
        out = super()._apply(fn, recurse)
        self._mirror()
        return out

    # A CSR tensor has no storage that copy.deepcopy or pickle can reach: its parts can.
    def __getstate__(self) -> dict:
        state = {k: v for k, v in self.__dict__.items() if k not in ("_w", "_b", "_b_col")}
        state["_buffers"] = {k: v for k, v in self._buffers.items() if k != "weight"}
        w = self.weight
        state["_csr_parts"] = (w.crow_indices(), w.col_indices(), w.values(), tuple(w.shape))
        return state

    def __setstate__(self, state: dict) -> None:
        crow, col, values, shape = state.pop("_csr_parts")
        with _quiet():
            weight = torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)
        state["_buffers"] = {"weight": weight, **state["_buffers"]}
        super().__setstate__(state)
        self._mirror()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2 and x.shape[0] == 1:  # batch 1: MKL's sparse matrix-vector kernel
            return torch.addmv(self._b, self._w, x.reshape(-1)).unsqueeze(0)
        flat = x.reshape(-1, self.in_features)
        y = torch.addmm(self._b_col, self._w, flat.t())  # (out, batch): sparse on the left
        # back to (batch, out), contiguous like nn.Linear's so that a caller's .view works
        return y.t().contiguous().reshape(x.shape[:-1] + (self.out_features,))

    def extra_repr(self) -> str:
        nnz = self.weight.values().numel()
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, density={nnz / self.weight.shape.numel():.4f}")


def density(weight: torch.Tensor) -> float:
    return float(torch.count_nonzero(weight)) / max(weight.numel(), 1)


def is_2_4(weight: torch.Tensor) -> bool:
    """Whether every 4 consecutive inputs of each row hold at most 2 nonzeros."""
    if weight.dim() != 2 or weight.shape[1] % 4:
        return False
    return bool((weight.reshape(weight.shape[0], -1, 4) != 0).sum(-1).le(2).all())


def _semi_structured(linear: nn.Linear) -> bool:
    """Give ``linear`` a 2:4 semi-structured weight; False where the kernel refuses it
    (its shape or dtype, or no CUDA)."""
    weight = linear.weight.detach()
    if not weight.is_cuda or not is_2_4(weight):
        return False
    try:
        packed = torch.sparse.to_sparse_semi_structured(weight)
    except (RuntimeError, ValueError):
        return False  # shape or dtype outside the kernel's: the dense kernel runs it
    linear.weight = nn.Parameter(packed, requires_grad=False)
    return True


def sparsify(model: nn.Module, *, max_density: float = MAX_DENSITY,
             min_weights: int = MIN_WEIGHTS, semi_structured: bool = False) -> nn.Module:
    """A copy of ``model`` whose sparse enough ``nn.Linear`` layers run sparse kernels (see
    the module docstring); its outputs equal ``model``'s up to float rounding.

    >>> net = nn.Sequential(nn.Linear(200, 100), nn.ReLU(), nn.Linear(100, 10))
    >>> with torch.no_grad():
    ...     _ = net[0].weight.mul_(torch.rand(100, 200) < 0.05)
    >>> [type(m).__name__ for m in sparsify(net)]
    ['SparseLinear', 'ReLU', 'Linear']
    """
    return _swap(copy.deepcopy(model), max_density=max_density, min_weights=min_weights,
                 semi_structured=semi_structured)


def _swap(out: nn.Module, *, max_density: float, min_weights: int, semi_structured: bool
          ) -> nn.Module:
    """``sparsify`` in place."""
    for name, module in list(out.named_modules()):
        if type(module) is not nn.Linear:  # subclasses may change forward: left as they are
            continue
        if semi_structured and _semi_structured(module):
            continue
        weight = module.weight.detach()
        if weight.numel() >= min_weights and density(weight) <= max_density:
            if not name:  # the model is one nn.Linear
                return SparseLinear.from_linear(module)
            owner, _, attr = name.rpartition(".")
            setattr(out.get_submodule(owner), attr, SparseLinear.from_linear(module))
    return out


def save(model: nn.Module, path: str | os.PathLike[str], *,
         metadata: dict[str, str] | None = None) -> None:
    """Write ``model``'s state, each weight that is smaller compressed in CSR form, to one
    safetensors file at ``path``; ``metadata``: extra str -> str entries."""
    tensors: dict[str, torch.Tensor] = {}
    shapes: dict[str, list[int]] = {}
    for name, t in model.state_dict().items():
        t = t.detach().cpu()
        if t.layout == torch.sparse_csr or (
                t.dim() >= 2 and t.is_floating_point()
                and compressed_bytes(t) < t.numel() * t.element_size()):
            shapes[name] = list(t.shape)
            tensors.update({f"{name}.{k}": v.contiguous() for k, v in compress(t).items()})
        else:
            tensors[name] = t.contiguous()
    meta = {META_KEY: json.dumps({"version": VERSION, "compressed": shapes})}
    save_file(tensors, os.fspath(path), metadata={**(metadata or {}), **meta})


def _info(metadata: dict[str, str], path: str | os.PathLike[str]) -> dict:
    if META_KEY not in metadata:
        raise TicketError(f"{os.fspath(path)} is not a sparse ticket (no {META_KEY!r} "
                          "metadata); write one with `lth export RUN --format sparse` or "
                          "sparse_ticket.save(model, path)")
    info = json.loads(metadata[META_KEY])
    if info.get("version") != VERSION:
        raise TicketError(f"{os.fspath(path)} is a version {info.get('version')} ticket; "
                          f"this sparse_ticket reads version {VERSION}: use the "
                          "sparse_ticket.py of the lth that wrote it")
    return info


def metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """A ticket file's metadata, its tensors left unread."""
    with safe_open(os.fspath(path), framework="pt") as f:
        meta = f.metadata() or {}
    _info(meta, path)
    return meta


def read(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The dense state (compressed weights expanded) and the metadata of a ticket file."""
    with safe_open(os.fspath(path), framework="pt") as f:
        meta = f.metadata() or {}
        info = _info(meta, path)
        raw = {k: f.get_tensor(k) for k in f.keys()}
    state = {}
    for name, shape in info["compressed"].items():
        try:
            parts = {p: raw.pop(f"{name}.{p}") for p in PARTS}
        except KeyError as e:
            raise TicketError(f"{os.fspath(path)} lacks {e.args[0]}, a part of compressed "
                              f"{name}: the file is damaged; export it again") from None
        state[name] = csr(parts, tuple(shape)).to_dense().reshape(shape)
    state.update(raw)
    return state, meta


def load(path: str | os.PathLike[str], model: nn.Module, *, device: str | torch.device = "cpu",
         max_density: float = MAX_DENSITY, min_weights: int = MIN_WEIGHTS,
         semi_structured: bool = False) -> nn.Module:
    """The ticket at ``path`` in a copy of ``model`` (the architecture it was exported
    from; its own weights are not used), on ``device``, with sparse kernels where they are
    faster (see the module docstring)."""
    state, _ = read(path)
    out = copy.deepcopy(model)
    own = out.state_dict()
    wrong = [f"{k} {list(state[k].shape)} (the model's: {list(v.shape)})"
             for k, v in own.items() if k in state and state[k].shape != v.shape]
    if own.keys() != state.keys() or wrong:
        missing, extra = sorted(own.keys() - state.keys()), sorted(state.keys() - own.keys())
        found = ", ".join([*(f"no {k}" for k in missing[:3]),
                           *(f"an extra {k}" for k in extra[:3]), *wrong[:3]])
        raise TicketError(f"{os.fspath(path)} does not fit {type(model).__name__}: {found}; "
                          "pass the architecture the ticket was exported from")
    out.load_state_dict(state)
    return _swap(out.to(device), max_density=max_density, min_weights=min_weights,
                 semi_structured=semi_structured)


__all__ = ["SparseLinear", "TicketError", "compress", "is_2_4", "load", "metadata", "read",
           "save", "smallest_int", "sparsify"]
