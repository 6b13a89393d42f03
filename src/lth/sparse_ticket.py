"""Sparse tickets: a pruned network in one safetensors file, its pruned weights stored
compressed (CSR, smallest index types; metadata ``sparse_ticket``: ``{"version": 1,
"compressed": {NAME: shape}}``), run with sparse kernels where faster: sparse enough
``nn.Linear`` layers become :class:`SparseLinear`, ``nn.Sequential`` holding them
:class:`SparseChain` (``fuse``). Imports only torch and safetensors: copy it next to your
code or use ``lth.sparse_ticket``. ``save(model, path)``; ``load(path, MyNet())`` (the
architecture it was exported from); docs/export.md has the details. Outputs equal the
dense masked model's up to float rounding.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from functools import partial, reduce

import torch
from safetensors import safe_open
from safetensors.torch import save as to_bytes
from torch import nn

VERSION = 1
META_KEY = "sparse_ticket"
PARTS = ("values", "indices", "indptr")
MAX_DENSITY = 0.1
MIN_WEIGHTS = 10_000
DENSE_AT_1 = 32_768  # a SparseChain's batch-1 kernel is dense up to this many weights


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence torch's CSR-is-beta warning: nothing a ticket's user can act on."""
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
    return next((dtype for dtype in (torch.int8, torch.int16, torch.int32)
                 if largest <= torch.iinfo(dtype).max), torch.int64)


def compress(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """``weight``'s nonzeros in CSR form (of the weight viewed as ``(shape[0], -1)``), each
    index tensor in the smallest integer type that fits.

    >>> parts = compress(torch.tensor([[0., 2., 0.], [3., 0., 4.]]))
    >>> parts["values"].tolist(), parts["indices"].tolist(), parts["indptr"].tolist()
    ([2.0, 3.0, 4.0], [1, 0, 2], [0, 1, 3])
    """
    with _quiet():
        rows = weight if weight.layout == torch.sparse_csr else \
            weight.detach().reshape(weight.shape[0], -1).to_sparse_csr()
    cols, nnz = rows.shape[1], rows.values().numel()
    return {"values": rows.values().contiguous(),
            "indices": rows.col_indices().to(smallest_int(max(cols - 1, 0))),
            "indptr": rows.crow_indices().to(smallest_int(nnz))}


def compressed_bytes(weight: torch.Tensor) -> int:
    """Bytes ``compress(weight)`` takes."""
    rows, nnz, cols = weight.shape[0], int(torch.count_nonzero(weight)), math.prod(weight.shape[1:])
    return (nnz * (weight.element_size() + smallest_int(max(cols - 1, 0)).itemsize)
            + (rows + 1) * smallest_int(nnz).itemsize)


def csr(parts: dict[str, torch.Tensor], shape: tuple[int, ...], *, check: bool = True
        ) -> torch.Tensor:
    """The CSR tensor (int32 indices where they fit) of ``compress``'s parts; ``check``:
    verify that they are a valid CSR (parts read from a file)."""
    rows, cols = shape[0], math.prod(shape[1:])
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
        # Plain attributes for forward: nn.Module.__getattr__ costs ~0.5 us a look-up.
        self._w = w = self._buffers["weight"]
        b = self._buffers["bias"]
        assert w is not None
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


_ACTS = {nn.ReLU: (torch.relu, torch.relu_), nn.Tanh: (torch.tanh, torch.tanh_),
         nn.Sigmoid: (torch.sigmoid, torch.sigmoid_)}
_ELEMENTWISE = (nn.LeakyReLU, nn.GELU, nn.SiLU, nn.ELU, nn.ReLU6, nn.Hardtanh, nn.Mish)


def _act(m: nn.Module, inplace: bool) -> Callable[[torch.Tensor], torch.Tensor] | None:
    return _ACTS[type(m)][inplace] if type(m) in _ACTS else \
        m.forward if type(m) in _ELEMENTWISE else None


def _linear(m: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    if type(m) is SparseLinear:
        return m._w, m._b
    if type(m) is not nn.Linear or type(m.weight) not in (torch.Tensor, nn.Parameter):
        return None  # subclasses, semi-structured weights: their own forward
    return m.weight, (torch.zeros_like(m.weight[:, 0]) if m.bias is None else m.bias)


def _last(b: torch.Tensor, w: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    return torch.addmm(b.unsqueeze(1), w, h).t().contiguous() if w.layout == torch.sparse_csr \
        else torch.addmm(b, h.t(), w.t())  # (batch, out), contiguous, from (features, batch)


class _Run:
    """Fusable children, one Linear or more. Batch 1: ``addmv`` per layer into this thread's
    buffers (small sparse layers dense); else ``addmm`` on ``(features, batch)``."""

    def __init__(self, modules: list[nn.Module]) -> None:
        self.modules, self.local, self.one, self.many = modules, threading.local(), [], []
        layers = [i for i, m in enumerate(modules) if _linear(m) is not None]
        self.flatten = any(type(m) is nn.Flatten for m in modules[:layers[0]])
        for i, m in enumerate(modules):
            if (wb := _linear(m)) is not None:
                w, b = wb
                small = w.layout == torch.sparse_csr and w.shape.numel() <= DENSE_AT_1
                self.one.append((w.to_dense() if small else w, b, i == layers[-1]))
                self.many.append(partial(_last, b, w) if i == layers[-1]
                                 else partial(torch.addmm, b.unsqueeze(1), w))
            elif (f := _act(m, i > layers[0])) is not None:
                for steps in (self.one, self.many):
                    steps.append(f)

    def _steps(self) -> list:  # the last layer's output a new tensor, the others' buffers
        with torch.inference_mode(False):  # buffers that serve in and out of inference mode
            self.local.steps = [s if callable(s) else partial(torch.addmv, s[1], s[0], **(
                {} if s[2] else {"out": torch.empty_like(s[1])})) for s in self.one]
        return self.local.steps

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        d = x.dim()
        if d != 2 and (d < 2 or not self.flatten):  # inputs nn.Linear takes, a run not
            return reduce(lambda h, m: m(h), self.modules, x)
        if x.shape[0] == 1:
            x = x.reshape(-1)
            for f in getattr(self.local, "steps", None) or self._steps():
                x = f(x)
            return x[None]
        return reduce(lambda h, f: f(h), self.many, x.reshape(x.shape[0], -1).t())


class SparseChain(nn.Sequential):
    """An ``nn.Sequential`` (same children, state keys) that runs runs of Flatten, Linear /
    SparseLinear and elementwise children as bare kernel calls. With gradients on or in
    training it is an ``nn.Sequential`` (only there do children's hooks run). Replaced
    children are seen at the next call; after ``layer.weight = ...``, ``refresh()``."""

    _plan: tuple | None = None

    def refresh(self) -> None:
        self._plan = None

    def _build(self) -> tuple:
        children, steps, run = list(self._modules.values()), [], []
        for m in [*children, None]:
            if m is not None and ((m.start_dim, m.end_dim) == (1, -1) if type(m) is nn.Flatten
                                  else type(m) in (nn.Identity, nn.Dropout)  # eval: identities
                                  or _linear(m) is not None or _act(m, False) is not None):
                run.append(m)
                continue
            steps += [_Run(run)] if any(_linear(r) is not None for r in run) else run
            steps, run = steps + ([] if m is None else [m]), []
        return children, steps, [m for m in children if type(m) is nn.Dropout]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plan = self._plan
        if plan is None or plan[0] != list(self._modules.values()):
            self._plan = plan = self._build()
        if torch.is_grad_enabled() or self.training or plan[2] and any(
                m.training for m in plan[2]):
            return super().forward(x)
        for step in plan[1]:
            x = step(x)
        return x

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]  # .to(), .half()
        self.refresh()
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, *args) -> None:  # type: ignore[no-untyped-def]
        self.refresh()  # the dense copies of small layers: from the new values
        super()._load_from_state_dict(*args)

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_plan"}


def is_2_4(weight: torch.Tensor) -> bool:
    """Whether every 4 consecutive inputs of each row hold at most 2 nonzeros."""
    return weight.dim() == 2 and not weight.shape[1] % 4 and bool(
        (weight.reshape(weight.shape[0], -1, 4) != 0).sum(-1).le(2).all())


def _semi_structured(linear: nn.Linear) -> bool:
    """Give ``linear`` a 2:4 semi-structured weight; False where the kernel refuses it."""
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
             min_weights: int = MIN_WEIGHTS, semi_structured: bool = False,
             fuse: bool = True) -> nn.Module:
    """A copy of ``model`` whose sparse enough ``nn.Linear`` layers run sparse kernels (see
    the module docstring); its outputs equal ``model``'s up to float rounding.

    >>> net = nn.Sequential(nn.Linear(200, 100), nn.ReLU(), nn.Linear(100, 10))
    >>> with torch.no_grad():
    ...     _ = net[0].weight.mul_(torch.rand(100, 200) < 0.05)
    >>> [type(m).__name__ for m in sparsify(net)]
    ['SparseLinear', 'ReLU', 'Linear']
    """
    return _swap(copy.deepcopy(model), max_density, min_weights, semi_structured, fuse)


def _swap(out: nn.Module, max_density: float, min_weights: int, semi_structured: bool,
          fuse: bool) -> nn.Module:
    """``sparsify`` in place."""
    for name, module in list(out.named_modules()):
        if type(module) is not nn.Linear:  # subclasses may change forward: left as they are
            continue
        if semi_structured and _semi_structured(module):
            continue
        weight = module.weight.detach()
        if weight.numel() >= min_weights and \
                float(torch.count_nonzero(weight)) <= max_density * weight.numel():
            if not name:  # the model is one nn.Linear
                return SparseLinear.from_linear(module)
            owner, _, attr = name.rpartition(".")
            setattr(out.get_submodule(owner), attr, SparseLinear.from_linear(module))
    for m in out.modules() if fuse else ():  # only the class changes: state, hooks stay
        if type(m) is nn.Sequential and any(type(c) is SparseLinear for c in m.children()):
            m.__class__ = SparseChain
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
    with open(path, "wb") as f:  # open() follows the umask; safetensors' save_file: 0600
        f.write(to_bytes(tensors, metadata={**(metadata or {}), **meta}))


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
         semi_structured: bool = False, fuse: bool = True) -> nn.Module:
    """The ticket at ``path`` in a copy of ``model`` (the architecture it was exported
    from; its own weights unused), on ``device``, with sparse kernels where faster."""
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
    return _swap(out.to(device), max_density, min_weights, semi_structured, fuse)


__all__ = ["SparseChain", "SparseLinear", "TicketError", "compress", "is_2_4", "load",
           "metadata", "read", "save", "smallest_int", "sparsify"]
