"""Keras 3 models (torch backend) in lth, as the reference Keras LTH API's users bring them.

With ``KERAS_BACKEND=torch`` a Keras 3 model is already an ``nn.Module``; :class:`KerasModule`
(applied by ``LotteryModel`` to any Keras model) adds what lth needs on top:

- weights named by their Keras paths (``fc1/kernel``), in results and stored files;
- the prunable weights are the kernels of Dense and convolution layers, each layer's kind
  (``linear``/``conv``) known for ``linear_rate``/``conv_rate``; the output layer is found
  like any other;
- ``initializer = "default"`` draws every variable from its layer's own Keras initializer,
  seeded per run seed (``random`` reinitialisation redraws from it too);
- the model is called with ``training=`` following ``model.train()``/``model.eval()``, so
  Dropout and BatchNormalization behave as in ``model.fit``.

Install with ``pip install 'lth[keras]'`` and set ``KERAS_BACKEND=torch`` before Keras is
imported.
"""

from __future__ import annotations

import copy
import re
import sys
from typing import Any

import torch
from torch import nn

from .errors import ModelError

# Keras layer class names -> the kind lth gives their kernel.
_KERNEL_KINDS = {"Dense": "linear", "EinsumDense": "linear",
                 **{f"Conv{d}D{t}": "conv" for d in (1, 2, 3) for t in ("", "Transpose")}}
# Variables a layer draws from ``<name>_initializer``.
_INITIALIZED = ("kernel", "bias", "gamma", "beta", "embeddings", "moving_mean",
                "moving_variance", "depthwise_kernel", "pointwise_kernel")


def is_keras_model(model: Any) -> bool:
    keras = sys.modules.get("keras")
    return keras is not None and isinstance(model, keras.Model)


def adapt(model: Any) -> nn.Module:
    """``model`` as lth runs it: a Keras model wrapped in :class:`KerasModule`."""
    return KerasModule(model) if is_keras_model(model) else model


def _layers(model: Any) -> list[Any]:
    """Every layer inside ``model``, nested ones too (sublayers of attention, RNN cells)."""
    flatten = getattr(model, "_flatten_layers", None)
    if callable(flatten):
        return list(flatten(include_self=False, recursive=True))
    out = []
    for layer in getattr(model, "layers", []):
        out += [layer, *_layers(layer)]
    return out


def _stable_names(layers: list[Any]) -> dict[int, str]:
    """Layer names that do not depend on how many models this process built: a name the
    user gave is kept; Keras's own (``dense``, ``dense_3``: a process-wide counter) becomes
    the class's name numbered in the model's order (``dense``, ``dense_1``), as in a fresh
    process."""
    from keras.src.utils.naming import to_snake_case

    seen: dict[str, int] = {}
    out = {}
    for layer in layers:
        base = to_snake_case(type(layer).__name__)
        if re.fullmatch(rf"{re.escape(base)}(_\d+)?", layer.name):
            n = seen.get(base, 0)
            seen[base] = n + 1
            out[id(layer)] = base if n == 0 else f"{base}_{n}"
        else:
            out[id(layer)] = layer.name
    return out


def _device_scope(device: torch.device) -> Any:
    """Keras's torch backend puts new tensors on its own default device (CUDA when there
    is one); lth decides the device: the model's."""
    return sys.modules["keras"].device(str(device))


class KerasModule(nn.Module):
    """A Keras 3 model (torch backend) seen as an ``nn.Module`` keyed by Keras paths."""

    def __init__(self, model: Any):
        super().__init__()
        backend = sys.modules["keras"].backend.backend()
        if backend != "torch":
            raise ModelError(f"this Keras model runs on the {backend!r} backend; lth trains "
                             "Keras models on torch: set KERAS_BACKEND=torch before "
                             "importing keras")
        object.__setattr__(self, "keras_model", model)  # not a child: its weights are ours
        # ``<layer>/<variable>``, from the innermost layer holding it: stable across copies
        # (a Dropout's seed state is ``dropout/seed_generator_state``, not a global counter).
        names: dict[int, str] = {}
        layer_names = _stable_names(_layers(model))
        for layer in reversed(_layers(model)):
            for v in layer.variables:
                names.setdefault(id(v), f"{layer_names[id(layer)]}/{v.name}".replace(".", "_"))
        self._variables: dict[str, Any] = {}
        for v in model.variables:
            name = names.get(id(v), v.path.replace(".", "_"))
            if name in self._variables:  # two nested layers of one name: their full paths
                name = v.path.replace(".", "_")
            self.register_parameter(name, v.value)
            self._variables[name] = v

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        device = next(iter(self._variables.values())).value.device if self._variables \
            else torch.device("cpu")
        with _device_scope(device):
            return self.keras_model(*args, training=self.training, **kwargs)

    # -- what lth asks of a module ---------------------------------------------------------
    def lth_layer_kinds(self) -> dict[str, str]:
        """The kernels of Dense/convolution layers, by parameter name: what lth prunes."""
        kernels = {id(layer.kernel): _KERNEL_KINDS[type(layer).__name__]
                   for layer in _layers(self.keras_model)
                   if type(layer).__name__ in _KERNEL_KINDS and hasattr(layer, "kernel")}
        return {name: kernels[id(v)] for name, v in self._variables.items() if id(v) in kernels}

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Draw every variable from its layer's own Keras initializer, and every random
        seed state (Dropout's), from torch's global generator (which ``lth.initialize``
        seeds per run seed), on the CPU: the same θ0 on any machine."""
        with _device_scope(torch.device("cpu")):
            self._draw()

    def _draw(self) -> None:
        for layer in _layers(self.keras_model):
            for attr in _INITIALIZED:
                variable = getattr(layer, attr, None)
                init = getattr(layer, f"{attr}_initializer", None)
                if variable is None or init is None or not hasattr(variable, "assign"):
                    continue
                config = init.get_config()
                seed = int(torch.randint(0, 2**31 - 1, ()).item())
                fresh = type(init).from_config({**config, "seed": seed}) \
                    if "seed" in config else init
                variable.assign(fresh(tuple(variable.shape), dtype=variable.dtype))
        for v in self.keras_model.variables:  # Dropout's seed state: random per model copy
            if v.name == "seed_generator_state":
                seed = int(torch.randint(0, 2**31 - 1, ()).item())
                v.assign(torch.tensor([seed, 0], dtype=v.value.dtype))

    # -- copies and pickles keep the Keras model and lth's names of its weights together --
    def __deepcopy__(self, memo: dict[int, Any]) -> KerasModule:
        out = KerasModule(copy.deepcopy(self.keras_model, memo))
        out.train(self.training)
        return out

    def __getstate__(self) -> dict[str, Any]:
        return {"keras_model": self.keras_model, "training": self.training}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["keras_model"])  # type: ignore[misc]
        self.train(state["training"])

    def __repr__(self) -> str:
        names = _stable_names(_layers(self.keras_model))
        layers = ", ".join(f"{names[id(layer)]}: {type(layer).__name__}"
                           f"{[tuple(w.shape) for w in layer.weights]}"
                           for layer in _layers(self.keras_model))
        return f"KerasModule({self.keras_model.name}: {layers})"
