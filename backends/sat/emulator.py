"""Functional emulator of SAT programs (the fsim layer).

DRAM is a flat ``uint8`` array initialised from the program's region
images (zero regions start, and stay wherever a run reads them first, zero);
each on-chip buffer is a ``uint8`` array of its configured size.
:class:`Emulator` prepares a program once -- the program checker
(:func:`satc.backends.sat.checker.check_program`: fields, bounds, alignment,
bounded work, token-ordered hazards between engines; it gives the issue
order), tracking of which bytes hold data some completed instruction
produced, and a kernel closure per instruction over pre-resolved numpy
views -- then :meth:`Emulator.run` just calls the closures in issue order.

Precision: in ``mixed`` configs GEMM operands are rounded to fp16 before the
multiply and accumulated in fp32 (an fp16 x fp16 product is exact in fp32);
vector, WUVE and SORE work compute in fp32. N:M GEMMs rebuild each tile from
the compressed values and packed indices in modelled memory; a converted
operand (N:M rebuild, fp16 widening or rounding) is shared with later GEMMs
that read the same bytes the same way while no instruction wrote them
(:mod:`~satc.backends.sat.operand_cache`, decided statically from the issue
order).
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Callable, Collection, Mapping

import numpy as np

from satc.backends.sat.access import Access
from satc.backends.sat.checker import check_program
from satc.backends.sat.fp16 import single_threaded
from satc.backends.sat.gemm_operands import (compressed_operand, conversions, dense_converter,
                                             nm_converter)
from satc.backends.sat.isa import BUFFERS, NP_DTYPES, Instruction
from satc.backends.sat.nmformat import compress_rows
from satc.backends.sat.operand_cache import OperandCache
from satc.backends.sat.program import Program
from satc.backends.sat.vecfuncs import VEC_FUNC_BY_NAME
from satc.backends.sat.wuve import adamw_update, sgd_update
from satc.errors import EmulatorError

F16, F32 = np.float16, np.float32
Kernel = Callable[[], None]
_PRODUCED, _WRITTEN, _READ_INIT = 1, 2, 4        # byte flags of the produced-data check
#: Most bytes of work arrays (converted GEMM operands, scratch) one prepared program may use.
MAX_WORK_BYTES = 1 << 33


class Emulator:
    """Checks a program against its config and runs it on modelled memory.

    ``carried``: the regions (with initial contents) a run reads from those contents and then
    overwrites -- the state one step hands to the next. ``work_bytes``: the bytes of the
    kernels' work arrays, at most :data:`MAX_WORK_BYTES`.
    """

    def __init__(self, program: Program) -> None:
        self.program = program
        self.config = program.config
        checked = check_program(program)          # before any allocation sized by the program
        self.dram = np.zeros(program.dram_size, np.uint8)
        self._image = [(r.name, r.addr, np.frombuffer(r.init, np.uint8)) for r in program.regions
                       if r.init is not None]
        for _, addr, data in self._image:
            self.dram[addr:addr + data.size] = data
        self.buffers = {b: np.zeros(self.config.buffer_bytes[b], np.uint8) for b in BUFFERS}
        instrs = program.instructions
        self.order = list(checked.order)
        acc = [list(a) for a in checked.accesses]
        self._check_produced(instrs, acc)
        self._pool: dict[tuple, np.ndarray] = {}
        self.work_bytes = 0                                      # bytes of kernel work arrays
        self._building = -1                                      # instruction whose kernel is built
        self._saves: dict[str, np.ndarray] = {}                  # kept regions during a run
        self._operands = OperandCache(self.config.buffer_bytes)
        tickets = []
        for i in self.order:
            convs = []
            if instrs[i].op == "gemm":
                convs = [(c, self._operands.visit(c.key, c.reads)) for c in
                         conversions(instrs[i], _reads(acc[i]), self.config.mixed_precision)]
            tickets.append(convs)
            self._operands.advance(acc[i])
        self._converted: dict[int, np.ndarray] = {}              # reused ticket -> its result
        self._kernels = []
        for i, convs in zip(self.order, tickets):
            self._building = i
            self._kernels.append(self._kernel(instrs[i], acc[i], convs))

    # ---- preparation
    def _space(self, name: str) -> np.ndarray:
        return self.dram if name == "dram" else self.buffers[name]

    def _mask_view(self, masks: dict[str, np.ndarray], a: Access) -> np.ndarray:
        m = masks[a.space]
        return np.ndarray(a.shape + (a.dtype.itemsize,), dtype=np.uint8, buffer=m, offset=a.offset,
                          strides=a.strides + (1,))

    def _check_produced(self, instrs, acc) -> None:
        """Walk the issue order tracking written bytes; refuse reads of unproduced data.

        Each byte keeps flags: ``PRODUCED`` (initial contents or written), ``WRITTEN`` (by this
        run) and ``READ_INIT`` (read while it still held its initial contents). Regions with a
        byte both read from its initial contents and then overwritten are :attr:`carried`.
        """
        masks = {b: np.zeros(v.size, np.uint8) for b, v in self.buffers.items()}
        masks["dram"] = np.zeros(self.dram.size, np.uint8)
        for r in self.program.regions:
            if r.initialised:
                masks["dram"][r.addr:r.addr + r.nbytes] = _PRODUCED
        for i in self.order:
            for a in acc[i]:
                view = self._mask_view(masks, a)
                if a.write:
                    view |= _PRODUCED | _WRITTEN
                    continue
                produced = (view & _PRODUCED).astype(bool)
                if not produced.all():
                    bad = np.argwhere(~produced.reshape(produced.shape[:-1] + (-1,)).all(axis=-1))[0]
                    raise EmulatorError(
                        f"instruction {i} ({instrs[i].op}): reads {a.role} element "
                        f"{tuple(int(x) for x in bad)} at {a.space} bytes from {a.offset} that no "
                        "completed instruction produced (missing load or dependency?)")
                if a.space == "dram":
                    view |= ((view & _WRITTEN) ^ _WRITTEN) << 1         # READ_INIT where not WRITTEN
        both = _WRITTEN | _READ_INIT
        overwritten = [r for r in self.program.regions if r.initialised
                       and np.any(masks["dram"][r.addr:r.addr + r.nbytes] & both == both)]
        self.carried: tuple[str, ...] = tuple(r.name for r in overwritten if r.init is not None)
        # zero regions a run overwrites after reading their zeros: zeroed again before each run
        # (the others hold zeros wherever a run reads them before writing)
        self._rezero = [(r.addr, r.nbytes) for r in overwritten if r.zero]

    def _saved(self, name: str, contents: np.ndarray) -> np.ndarray:
        """A copy of region ``name``'s bytes in an array kept for it (no page faults per run)."""
        if name not in self._saves:
            self._saves[name] = np.empty_like(contents)
        np.copyto(self._saves[name], contents)
        return self._saves[name]

    @property
    def shared_operand_reads(self) -> int:
        """GEMM operand reads served by an earlier GEMM's conversion (see operand_cache)."""
        return self._operands.shared

    def _scratch(self, tag: str, shape: tuple[int, ...], dtype: np.dtype = F32) -> np.ndarray:
        """A work array shared by every kernel (kernels run one at a time; ``tag`` tells apart
        the arrays one kernel needs at once)."""
        key = (tag, shape, np.dtype(dtype).str)
        if key not in self._pool:
            self._pool[key] = self._allocate(shape, dtype)
        return self._pool[key]

    def _allocate(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """A zeroed work array, counted against :data:`MAX_WORK_BYTES` before it is allocated."""
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize
        if self.work_bytes + nbytes > MAX_WORK_BYTES:
            i = self._building
            raise EmulatorError(f"instruction {i} ({self.program.instructions[i].op}): the emulator's "
                                f"work arrays would exceed {MAX_WORK_BYTES >> 30} GiB "
                                f"({self.work_bytes + nbytes} bytes); fix: a program with fewer "
                                "distinct GEMM operand tiles (smaller batch or model)")
        self.work_bytes += nbytes
        return np.zeros(shape, dtype)

    def _view(self, a: Access) -> np.ndarray:
        return np.ndarray(a.shape, dtype=a.dtype, buffer=self._space(a.space), offset=a.offset,
                          strides=a.strides)

    def _kernel(self, ins: Instruction, acc: list[Access], convs: list) -> Kernel:
        views: dict[str, np.ndarray] = {}
        for a in acc:
            views[a.role] = self._view(a)
        if ins.op == "gemm":
            return _gemm_kernel(self, ins, views, _reads(acc), convs)
        return _BUILD[ins.op](self, ins, views)

    # ---- execution
    def run(self, images: Mapping[str, np.ndarray] | None = None,
            keep: Collection[str] = ()) -> "Emulator":
        """Execute every instruction once.

        Before running, regions with initial contents are restored to them,
        except the regions named in ``images`` (arrays of the region's shape,
        cast to its dtype), which get that data, and those named in ``keep``,
        which carry over what the previous run left in them (their initial
        contents on the first run): a training step's state stays in DRAM. A
        run that raises (or is interrupted) puts the kept regions back as they
        were, so a retry starts from the same state.

        Only regions with initial contents may be given or kept: preparation
        proved that every byte an instruction reads is produced, counting
        those contents. A zero region is zeroed again only if a run
        overwrites bytes it read as zeros. Buffers and uninitialised DRAM
        keep stale bytes.
        """
        given = dict(images or {})
        for name in set(given) | set(keep):
            if self.program.region(name).init is None:
                raise EmulatorError(f"region {name!r} has no initial contents, so the program "
                                    "cannot read it; give it an init to set or keep it per run")
        clash = sorted(set(given) & set(keep))
        if clash:
            raise EmulatorError(f"regions {clash} are both given new data and kept; pass each "
                                "region in images or in keep, not both")
        for name, addr, data in self._image:
            if name not in given and name not in keep:
                self.dram[addr:addr + data.size] = data
        for addr, nbytes in self._rezero:
            self.dram[addr:addr + nbytes] = 0
        for name, arr in given.items():
            r = self.program.region(name)
            a = np.asarray(arr)
            if a.shape != r.shape:
                raise EmulatorError(f"region {name!r}: data of shape {a.shape}, the region is {r.shape}")
            self.dram[r.addr:r.addr + r.nbytes] = np.ascontiguousarray(
                a, dtype=NP_DTYPES[r.dtype]).view(np.uint8).reshape(-1)
        kept = [(addr, self._saved(name, self.dram[addr:addr + data.size]))
                for name, addr, data in self._image if name in keep]
        try:
            with single_threaded():
                for k in self._kernels:
                    k()
        except BaseException:
            for addr, data in kept:                      # a failed run leaves kept regions intact
                self.dram[addr:addr + data.size] = data
            raise
        return self

    def read(self, name: str) -> np.ndarray:
        """A copy of DRAM region ``name`` as an array of its shape and dtype."""
        r = self.program.region(name)
        raw = self.dram[r.addr:r.addr + r.nbytes]
        return raw.view(NP_DTYPES[r.dtype]).reshape(r.shape).copy()


def run_program(program: Program) -> Emulator:
    """Prepare and run ``program``; returns the emulator (read results with ``.read``)."""
    return Emulator(program).run()


# ---------------------------------------------------------------- kernels

def _dma_kernel(emu: Emulator, ins: Instruction, v: dict) -> Kernel:
    src, dst = (v["dram"], v["buf"]) if ins.op == "load" else (v["buf"], v["dram"])
    return lambda: np.copyto(dst, src)


def _reads(acc: list[Access]) -> dict[str, Access]:
    return {a.role: a for a in acc if not a.write}


class _ConversionArrays:
    """Arrays of one conversion: its result pooled by tag unless reused later (then its own)."""

    def __init__(self, emu: Emulator, tag: str, own: bool) -> None:
        self.emu, self.tag, self.own = emu, tag, own

    def out(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """The result array: its own when reused later, else the pooled one of its tag."""
        return self.emu._allocate(shape, dtype) if self.own else self.emu._scratch(f"{self.tag}:out", shape,
                                                                                  dtype)

    def scratch(self, tag: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """A pooled work array."""
        return self.emu._scratch(tag, shape, dtype)


def _gemm_kernel(emu: Emulator, ins: Instruction, v: dict, reads: dict[str, Access],
                 convs: list) -> Kernel:
    mixed = emu.config.mixed_precision
    operands = {"a": v["a"].T if ins.trans_a else v["a"], "b": v["b"].T if ins.trans_b else v["b"]}
    converts = []
    for conv, ticket in convs:
        name, source = conv.name, emu._operands.source(ticket)
        if source != ticket:
            operands[name] = emu._converted[source]
            continue
        reused = emu._operands.reused(ticket)
        arrays = _ConversionArrays(emu, name, own=reused)
        if name == compressed_operand(ins):
            idx = reads["idx"]
            convert, result = nm_converter(ins, v[name], idx, emu._space(idx.space), mixed,
                                           name == "b", arrays, name)
        else:
            convert, result = dense_converter(operands[name], mixed, arrays, name)
        operands[name] = result
        if reused:
            emu._converted[ticket] = result
        converts.append(convert)
    a, b, c = operands["a"], operands["b"], v["c"]
    tmp = emu._scratch("c:product", c.shape) if ins.accumulate else None

    def run() -> None:
        for convert in converts:
            convert()
        if tmp is None:
            np.matmul(a, b, out=c)
        else:
            np.matmul(a, b, out=tmp)
            np.add(c, tmp, out=c)
    return run


def _vec_kernel(emu: Emulator, ins: Instruction, v: dict) -> Kernel:
    f = VEC_FUNC_BY_NAME[ins.func]
    p = SimpleNamespace(imm=ins.imm, rows=ins.rows, cols=ins.cols, kh=ins.kh, kw=ins.kw, sh=ins.sh,
                        sw=ins.sw, bcast=ins.bcast)
    flip = ins.axis == 0 and "pooled" not in (f.out_shape, f.s1_shape)
    if flip:
        p.rows, p.cols = p.cols, p.rows
    s0, s1, d = v.get("s0"), v.get("s1"), v["d"]
    accumulate = bool(ins.accumulate)

    def fetch(x):
        if x is None:
            return None
        x = x.astype(F32) if x.dtype == F16 else x
        return x.T if flip else x

    def run() -> None:
        res = f.kernel(fetch(s0), fetch(s1), p)
        if flip:
            res = res.T
        if accumulate:
            d[...] = d.astype(F32) + res
        else:
            d[...] = res
    return run


def _wuve_kernel(emu: Emulator, ins: Instruction, v: dict) -> Kernel:
    w, g, m, hp, w16 = v["w"], v["g"], v["m"], v["hp"], v.get("w16")
    adam = ins.func == "adamw"
    vv = v.get("v")

    def run() -> None:
        g32 = g.astype(F32) if g.dtype == F16 else g
        hpv = hp.copy()
        if adam:
            adamw_update(w, g32, m, vv, hpv)
        else:
            sgd_update(w, g32, m, hpv)
        if w16 is not None:
            w16[...] = w
    return run


def _sore_kernel(emu: Emulator, ins: Instruction, v: dict) -> Kernel:
    src, val, idx = v["src"], v["val"], v["idx"]
    n, m, axis, dtype = ins.n, ins.m, ins.axis, ins.val_dtype

    def run() -> None:
        values, packed = compress_rows(np.array(src), n, m, axis, dtype)
        val[...] = values
        idx[...] = packed
    return run


_BUILD = {"load": _dma_kernel, "store": _dma_kernel, "vec": _vec_kernel,
          "wuve": _wuve_kernel, "sore": _sore_kernel, "nop": lambda emu, ins, v: (lambda: None)}
