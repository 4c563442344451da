"""Every exception type satc raises, in one place.

All derive from :class:`SatcError`, so a caller can catch one type. Each
message names the thing at fault (node, op, opset, config field,
instruction index) and, where there is one, the fix.
"""


class SatcError(Exception):
    """Base class of every error satc raises on purpose."""


class IRError(SatcError):
    """A malformed IR graph: found by the verifier or by shape inference."""


class ShapeError(IRError):
    """Shapes or dtypes that do not fit an op, or inputs that do not fit a model."""


class FrontendError(SatcError):
    """A model that cannot be imported (malformed file, unbound dimension)."""


class UnsupportedOpError(FrontendError):
    """One or more ops of an imported model that satc does not support."""


class SparsityError(SatcError):
    """A bad sparsity spec (mode, N, M) or a layer it cannot apply to."""


class ConfigError(SatcError):
    """A hardware config with a wrong, missing or impossible field."""


class ISAError(SatcError):
    """An instruction that cannot be encoded, decoded or assembled."""


class ProgramFileError(ISAError):
    """A program file that is truncated, corrupt or of the wrong version."""


class EmulatorError(SatcError):
    """The emulator refused to run an instruction; names its index and why."""


class ProgramCheckError(EmulatorError):
    """A program the checker refuses before any run or schedule (a race between engines, a
    token left over, an access out of bounds, unbounded work); names the instruction."""


class InputError(ShapeError):
    """A step input that cannot be fed: NaN / inf values, labels out of range, a wrong dtype."""


class CompileError(SatcError):
    """Lowering, tiling or memory planning could not map the graph to SAT."""


class ScheduleError(SatcError):
    """A schedule that breaks a dependency, engine or buffer constraint."""
