"""The op table. Importing this package registers every op."""

from satc.ir.ops.registry import OPS, GradContext, OpDef, get_op, register
from satc.ir.ops import activation, arith, conv, embedding, loss, norm, optim, pool, sparse, tensor  # noqa: F401  (registration)

__all__ = ["OPS", "OpDef", "GradContext", "get_op", "register"]
