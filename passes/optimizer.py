"""Optimizers: configs users pass to ``build_training_graph``, and the OPT ops they emit."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from satc.errors import IRError
from satc.ir.graph import Graph, Value
from satc.ir.types import Stage


@dataclass(frozen=True)
class SGD:
    """torch.optim.SGD: momentum, dampening, nesterov and L2 weight decay."""

    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False

    def __post_init__(self) -> None:
        _check("SGD", "lr", self.lr, "(0, inf)", lambda v: v > 0)
        _check("SGD", "momentum", self.momentum, "[0, 1)", lambda v: 0 <= v < 1)
        _check("SGD", "weight_decay", self.weight_decay, "[0, inf)", lambda v: v >= 0)
        _check("SGD", "dampening", self.dampening, "[0, 1]", lambda v: 0 <= v <= 1)
        if not isinstance(self.nesterov, bool):
            raise IRError(f"SGD(nesterov={self.nesterov!r}): nesterov must be True or False")
        if self.nesterov and (self.momentum == 0 or self.dampening != 0):
            raise IRError(f"SGD(nesterov=True, momentum={self.momentum}, dampening={self.dampening}): "
                          "Nesterov momentum needs momentum > 0 and dampening == 0; fix one of them "
                          "or set nesterov=False")

    def emit(self, g: Graph, name: str, w: Value, grad: Value, layer: str) -> Value:
        """Append the update of parameter ``name``; return its new value."""
        attrs = {"lr": self.lr, "momentum": self.momentum, "weight_decay": self.weight_decay,
                 "dampening": self.dampening, "nesterov": self.nesterov}
        if self.momentum == 0:
            return g.add1("sgd", [w, grad], attrs, Stage.OPT, layer)
        buf_name = f"{name}.momentum_buffer"
        buf = g.add_param(buf_name, np.zeros(w.shape, np.float32), trainable=False)
        new_w, new_buf = g.add("sgd", [w, grad, buf], attrs, Stage.OPT, layer)
        g.state_updates[buf_name] = new_buf
        return new_w


@dataclass(frozen=True)
class AdamW:
    """torch.optim.AdamW: Adam with decoupled weight decay."""

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 1e-2

    def __post_init__(self) -> None:
        _check("AdamW", "lr", self.lr, "(0, inf)", lambda v: v > 0)
        if not isinstance(self.betas, (tuple, list)) or len(self.betas) != 2:
            raise IRError(f"AdamW(betas={self.betas!r}): betas must be a pair (beta1, beta2), "
                          "e.g. (0.9, 0.999)")
        for i, b in enumerate(self.betas):
            _check("AdamW", f"betas[{i}]", b, "[0, 1)", lambda v: 0 <= v < 1)
        if isinstance(self.betas, list):
            object.__setattr__(self, "betas", tuple(self.betas))
        _check("AdamW", "eps", self.eps, "(0, inf)", lambda v: v > 0)
        _check("AdamW", "weight_decay", self.weight_decay, "[0, inf)", lambda v: v >= 0)

    def _step(self, g: Graph) -> Value:
        """The shared 1-based step counter, created once per graph."""
        if "optimizer.step" not in g.buffers:
            count = g.add_param("optimizer.step", np.zeros((), np.float32), trainable=False)
            one = g.add_constant(np.ones((), np.float32), "optimizer.one")
            g.state_updates["optimizer.step"] = g.add1("add", [count, one], {}, Stage.OPT, "optimizer")
        return g.state_updates["optimizer.step"]

    def emit(self, g: Graph, name: str, w: Value, grad: Value, layer: str) -> Value:
        """Append the update of parameter ``name``; return its new value."""
        step = self._step(g)
        m = g.add_param(f"{name}.exp_avg", np.zeros(w.shape, np.float32), trainable=False)
        v = g.add_param(f"{name}.exp_avg_sq", np.zeros(w.shape, np.float32), trainable=False)
        attrs = {"lr": self.lr, "beta1": self.betas[0], "beta2": self.betas[1],
                 "eps": self.eps, "weight_decay": self.weight_decay}
        new_w, new_m, new_v = g.add("adamw", [w, grad, m, v, step], attrs, Stage.OPT, layer)
        g.state_updates[f"{name}.exp_avg"] = new_m
        g.state_updates[f"{name}.exp_avg_sq"] = new_v
        return new_w


def _check(opt: str, field: str, value, valid: str, ok) -> None:
    """Raise IRError naming ``opt(field=value)`` unless ``value`` is a finite real number with ``ok(value)``."""
    if not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(value, bool):
        raise IRError(f"{opt}({field}={value!r}): {field} must be a real number in {valid}")
    if not math.isfinite(value) or not ok(value):
        raise IRError(f"{opt}({field}={value!r}): {field} must be a finite number in {valid}; "
                      f"pass a value in that range")


Optimizer = SGD | AdamW
