"""IR building blocks shared by the frontends (layers that expand to several ops)."""

from __future__ import annotations

import numpy as np

from satc.errors import FrontendError
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

    def window_sum(self, x: Value, axis: int, size: int, layer: str) -> Value:
        """Sums of ``size`` consecutive elements along ``axis`` (stride 1, no padding: the axis
        shrinks by ``size - 1``), as ``size`` slices and one ``sum``: the channel window of
        local response normalisation."""
        n = x.shape[axis] - size + 1
        if n < 1:
            raise FrontendError(f"{layer}: a window of {size} along axis {axis} of {x.shape} "
                                "is longer than the axis")
        parts = [self.graph.add1("slice", [x], {"axis": axis, "start": i, "end": i + n}, layer=layer)
                 for i in range(size)]
        return parts[0] if size == 1 else self.graph.add1("sum", parts, layer=layer)

    def tensor_power(self, x: Value, exponent: Value, layer: str) -> Value:
        """``x ** exponent`` for a tensor exponent, as ``exp(exponent * log(x))``: the value
        for a positive base (a base <= 0 gives 0 / NaN)."""
        log = self.graph.add1("log", [x], layer=layer)
        return self.graph.add1("exp", [self.graph.add1("mul", [exponent, log], layer=layer)],
                               layer=layer)

    def local_response_norm(self, x: Value, size: int, alpha: float, beta: float, bias: float,
                            before: int, layer: str) -> Value:
        """y = x * (bias + alpha/size * sum of x^2 over channels [c - before, c - before +
        size))^-beta (ONNX LRN, torch's LocalResponseNorm), the window zero-padded at the
        channel ends; pow, pad, :meth:`window_sum`, scale, add, pow and mul."""
        sq = self.graph.add1("pow", [x], {"exponent": 2.0}, layer=layer)
        padded = self.graph.add1("pad", [sq], {"axis": 1, "before": before,
                                                "after": size - 1 - before}, layer=layer)
        s = self.graph.add1("scale", [self.window_sum(padded, 1, size, layer)],
                            {"factor": alpha / size}, layer=layer)
        k = self.graph.add_constant(np.asarray(bias, np.float32), f"{layer}.lrn_bias")
        d = self.graph.add1("add", [s, k], layer=layer)
        return self.graph.add1("mul", [x, self.graph.add1("pow", [d], {"exponent": -beta},
                                                          layer=layer)], layer=layer)
