"""IR building blocks shared by the frontends (layers that expand to several ops)."""

from __future__ import annotations

import numpy as np

from satc.ir.graph import Graph, Value


class GraphEmitter:
    """Emits multi-op layers (linear, batchnorm, layernorm) into a graph, one way for every frontend."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.state_updates: dict[str, Value] = {}

    def _const_or(self, v: Value | None, fill: float, n: tuple[int, ...], hint: str) -> Value:
        return v if v is not None else self.graph.add_constant(np.full(n, fill, np.float32), hint)

    def linear(self, x: Value, w: Value, b: Value | None, layer: str) -> Value:
        """y = x W^T + b, W of shape [out, in] (torch layout)."""
        y = self.graph.add1("matmul", [x, w], {"trans_b": True}, layer=layer)
        return self.graph.add1("bias_add", [y, b], {"axis": -1}, layer=layer) if b is not None else y

    def batchnorm(self, x: Value, gamma: Value | None, beta: Value | None, mean: Value, var: Value,
                  training: bool, momentum: float, eps: float, layer: str) -> Value:
        """Batchnorm; in training mode, records the running-stat updates of its buffers."""
        c = (x.shape[1],)
        gamma = self._const_or(gamma, 1.0, c, f"{layer}.gamma")
        beta = self._const_or(beta, 0.0, c, f"{layer}.beta")
        attrs = {"training": training, "momentum": momentum, "eps": eps}
        outs = self.graph.add("batchnorm", [x, gamma, beta, mean, var], attrs, layer=layer)
        if training:
            for buf, new in ((mean, outs[3]), (var, outs[4])):
                if buf.name in self.graph.buffers:
                    self.state_updates[buf.name] = new
        return outs[0]

    def layernorm(self, x: Value, gamma: Value | None, beta: Value | None, ndim: int, eps: float,
                  layer: str) -> Value:
        """Layer normalisation over the last ``ndim`` axes."""
        shape = x.shape[x.type.rank - ndim:]
        gamma = self._const_or(gamma, 1.0, shape, f"{layer}.gamma")
        beta = self._const_or(beta, 0.0, shape, f"{layer}.beta")
        return self.graph.add("layernorm", [x, gamma, beta], {"ndim": ndim, "eps": eps}, layer=layer)[0]
