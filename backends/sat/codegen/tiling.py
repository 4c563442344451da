"""The tile plan: tile sizes and dataflow (WS / OS) for every GEMM node (codegen, beside the memory plan).

Every GEMM-class node (``matmul``, ``conv2d``, ``conv2d_grad_input``,
``conv2d_grad_weight``) is first described as a :class:`GemmProblem`:
``C[M, N] (+)= A[M, K] @ B[K, N]``, repeated over the ``taps`` of a conv
kernel (implicit GEMM: one K slice per tap for FF and BP, one output
matrix per tap for WU). The pass then enumerates tiles ``(mt, nt, kt)`` --
whole images along the spatial axis of a conv, whole byte-aligned groups of
M along K of an N:M operand -- and how many taps one GEMM instruction
takes (:attr:`Tile.taps`: FF and BP stack whole taps along K, tap-major, so
K = (tap, ci) or (tap, co) and every N:M group stays inside one tap; WU
puts taps side by side along N, sharing the dY tile), keeps those whose operand tiles fit the
on-chip buffers of the :class:`HardwareConfig` (less the weight-update
slice), and picks the one with the lowest estimated cycles
(:func:`estimate_cycles`) plus :data:`DMA_WEIGHT` of its DMA cycles, trying
both dataflows.
The choices form the :data:`TilePlan` the GEMM lowerings read (:func:`plan_tiles`).

The cost model reuses the STCE timing formula of the cycle model
(:func:`satc.backends.sat.timing.gemm_cycles`), so the two never disagree:

* compute = the sum over the GEMM instructions of
  (``gemm_cycles(mt, nt', k')`` + issue), with ``k' = taps x kt`` (FF, BP) or
  ``nt' = taps x nt`` (WU);
* DMA = the channel cycles of the bytes moved (A reloaded once per N tile, B once
  per M tile, C stored once), each contiguous DRAM run rounded up to whole bursts
  (:func:`~satc.backends.sat.cost_model.transfer_cycles`: a window moves rows of the
  output width, a wide window whole segments), plus ``issue_cycles`` per transfer;
* with double buffering (both slots fit) loads overlap compute:
  ``max(compute, DMA)``, otherwise ``compute + DMA``.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass

from satc.backends.sat.codegen.conv_geometry import bp_phases
from satc.backends.sat.codegen.partition import (
    align,
    buffer_bytes_to_fit,
    main_buffer_bytes,
)
from satc.backends.sat.config import HardwareConfig
from satc.backends.sat.cost_model import gemm_cycles, transfer_cycles
from satc.backends.sat.isa import DTYPE_BYTES, Instruction, field_max
from satc.backends.sat.nmformat import groups, index_bits, row_bytes
from satc.ir.graph import Graph, Node
from satc.ir.types import Stage

from satc.errors import CompileError

MAX_FIELD = field_max("gemm", "mt")     # mt, nt, k and buffer row strides: 16-bit ISA fields
MAX_PLANES = field_max("load", "planes")
#: The search charges this share of a tiling's DMA cycles on top of its estimate: DMA hidden
#: under one GEMM's compute still occupies the load engine that the nodes running beside it
#: (WU beside BP, the next layer's loads) need. ResNet-18 CIFAR b32 bdwp:2:8, list schedule:
#: 0 -> 26.30 M cycles, 0.1 -> 25.67 M, 0.25 -> 25.63 M, 0.5 -> 25.63 M, 1 -> 25.74 M.
DMA_WEIGHT = 0.25
#: A relu_grad folded into an input gradient (:attr:`GemmProblem.c_loads`) masks the C tile in
#: chunks of whole rows of one image, each in one of this many vec-buffer chunk tiles (y's
#: next chunk loads while one is applied) of 1 / MASK_CHUNK_SHARE of the vec buffer (or one
#: row of the tile's channels when that is more).
MASK_CHUNKS = 2
MASK_CHUNK_SHARE = 16


@dataclass(frozen=True)
class GemmProblem:
    """The GEMM a node performs, per tap: ``C[m, n] (+)= A[m, k] @ B[k, n]``.

    ``sparse`` names the N:M compressed operand ('a' or 'b', None: dense)
    with pattern ``nm``; ``*_quantum`` are the units a tile must be a whole
    multiple of (whole images along a conv's spatial axis, byte-aligned
    groups along an N:M K); ``a_buf`` / ``b_buf`` are the on-chip buffers
    the operands are loaded into. ``scatter`` > 0: the output phases of a strided input
    gradient are interleaved in a vec-buffer tile ``scatter`` times the C tile.
    ``fold``: how one GEMM instruction may take several taps -- 'k' stacks whole taps
    along K (conv FF / BP), 'n' puts taps side by side along N with A shared (conv WU),
    None: one tap per instruction. ``tap_sets``: the sizes of the tap sets that accumulate
    into one C tile (the output phases of a strided input gradient; empty: all taps).
    ``row``: the output row width of a conv (window loads and stores move rows of it).
    ``window`` = (kh, kw, wp, seg): B (a stride-1 conv input) may instead be loaded as kw
    column-shifted copies of each image's padded rows, ``seg`` elements per image and
    channel, that every kernel row reads at an offset of ``wp`` per row (:attr:`Tile.wide`).
    ``m_tile_max``: the largest M tile the search may take (0: no bound; see
    :func:`ff_row_tile_bound`).
    ``stores``: C tiles stored per tile (2: a matmul_bias with a gelu epilogue).
    ``c_loads``: tiles of the C tile's shape loaded per C tile (a relu_grad folded into an
    input gradient: y and the gradient sum's terms), through :data:`MASK_CHUNKS` vec-buffer
    chunk tiles of at least ``mask_budget`` bytes (:meth:`mask_bytes`); ``bn_stats``: x is
    one of them, through twice as many chunk tiles more (x, xhat), and per-channel vectors.
    ``stage`` = (kh, kw, ho, wo, wp): B (a stride-1 conv window of ``ho x wo`` in rows of
    ``wp`` padded columns) may instead be staged (:attr:`Tile.staged`): per image one DMA
    of the padded rows all taps of an instruction read, at full width (runs of whole rows
    instead of ``wo``-element ones), then per tap and output row one vector ``copy`` crops
    the window into the B tile.
    """

    m: int
    n: int
    k: int
    taps: int = 1
    taps_in_k: bool = True
    sparse: str | None = None
    nm: tuple[int, int] | None = None
    m_quantum: int = 1
    n_quantum: int = 1
    k_quantum: int = 1
    a_buf: str = "act"
    b_buf: str = "wgt"
    a_bytes: int = 4
    b_bytes: int = 4
    scatter: int = 0
    fold: str | None = None
    tap_sets: tuple[int, ...] = ()
    window: tuple[int, int, int, int] = ()
    row: int = 0
    m_tile_max: int = 0
    stage: tuple[int, int, int, int, int] = ()
    stores: int = 1
    c_loads: int = 0
    mask_budget: int = 0
    bn_stats: bool = False

    def a_tile_bytes(self, mt: int, kt: int) -> int:
        """Bytes of one A tile (values and packed indices when compressed)."""
        if self.sparse == "a":
            n, m = self.nm
            return align(mt * groups(kt, m) * n * self.a_bytes) + align(mt * row_bytes(kt, n, m))
        return align(mt * kt * self.a_bytes)

    def b_tile_bytes(self, kt: int, nt: int) -> int:
        """Bytes of one B tile (values and packed indices when compressed)."""
        if self.sparse == "b":
            n, m = self.nm
            return align(nt * groups(kt, m) * n * self.b_bytes) + align(nt * row_bytes(kt, n, m))
        return align(kt * nt * self.b_bytes)

    def buffer_use(self, mt: int, nt: int, kt: int, slots: int, taps: int = 1,
                   staged: bool = False) -> dict[str, int]:
        """Bytes per on-chip buffer of a tiling with ``slots`` copies of every tile and
        ``taps`` taps per GEMM instruction (and of the staging span when ``staged``)."""
        kk, nn = self.instruction_kn(nt, kt, taps)
        use = {"act": 0, "wgt": 0, "acc": 0, "vec": 0}
        use[self.a_buf] += slots * (self.a_tile_bytes(mt, kk)
                                    + (self.a_stage_bytes(mt, kt) if staged else 0))
        use[self.b_buf] += slots * (self.b_tile_bytes(kk, nn)
                                    + (self.stage_bytes(nt, kt, taps) if staged else 0))
        use["acc"] += slots * align(mt * nn * 4)
        use["vec"] += slots * align(self.scatter * mt * nt * 4) \
            + self.mask_use(mt)
        return use

    def mask_use(self, mt: int) -> int:
        """Vec-buffer bytes of a folded relu_grad's chunk tiles (and batchnorm vectors)."""
        if not self.c_loads:
            return 0
        tiles = MASK_CHUNKS * (3 if self.bn_stats else 1) * self.mask_bytes(mt)
        return tiles + (6 * align(self.m * 8) if self.bn_stats else 0)

    def mask_bytes(self, mt: int) -> int:
        """Bytes of one relu-mask chunk tile (:attr:`c_loads`) of ``mt`` channels: the budget,
        or one row of the C layout when that is more (at most the padded width of a wide
        tile, a dX row of a strided one: ``scatter`` phase rows, else an output row)."""
        row = max(self.window[2] if self.window else 0, self.row * max(1, self.scatter))
        return max(self.mask_budget, align(mt * row * 4))

    def instruction_kn(self, nt: int, kt: int, taps: int) -> tuple[int, int]:
        """(K, N) of one GEMM instruction that takes ``taps`` taps of an (nt, kt) tile."""
        return (taps * kt, nt) if self.fold == "k" else (kt, taps * nt)

    def runs(self, mt: int, nt: int, kt: int) -> tuple[int, int]:
        """Contiguous DRAM bytes per run of the A and B tile loads: a conv window row
        (``row`` elements wide: a window operand), a matrix tile's row (the whole tile when
        it spans full rows)."""
        a = self.row * 4 if self.fold == "n" else \
            (mt * kt if kt == self.k else kt) * self.a_bytes
        b = self.row * 4 if self.fold else (kt * nt if nt == self.n else nt) * self.b_bytes
        return a, b

    def c_run(self, nt: int) -> int:
        """Contiguous DRAM bytes per run of the C stores (an output row of a conv)."""
        if self.fold == "k":
            return self.row * 4
        return (self.m * nt if nt == self.n else nt) * 4

    def stage_rows(self, taps: int) -> int:
        """Padded rows the windows of ``taps`` consecutive taps (row-major over the kernel)
        span at most: the output rows plus one per further kernel row they touch."""
        kh, kw, ho, _, _ = self.stage
        return min(kh, (taps + kw - 2) // kw + 1) + ho - 1

    def stage_channels_images(self, nt: int, kt: int) -> tuple[int, int]:
        """(channels, images) of one B tile: K and N of a conv FF / BP window, N and K of a
        WU window (whole images along the spatial axis)."""
        if self.fold == "k":
            return kt, nt // self.n_quantum
        return nt, kt // self.k_quantum

    def stage_bytes(self, nt: int, kt: int, taps: int) -> int:
        """Bytes of one staging span: every channel and image of the tile, the padded rows of
        ``taps`` taps at full width (:attr:`stage`)."""
        channels, images = self.stage_channels_images(nt, kt)
        return align(channels * images * self.stage_rows(taps) * self.stage[4] * self.b_bytes)

    def a_stage_bytes(self, mt: int, kt: int) -> int:
        """Bytes of the staging span of a WU dY tile (0 for FF / BP): ``mt`` channels x the
        tile's images x ``ho`` rows at the padded width."""
        if self.fold != "n":
            return 0
        _, _, ho, _, wp = self.stage
        return align(mt * (kt // self.k_quantum) * ho * wp * self.a_bytes)

    def wide_columns(self, images: int) -> int:
        """N of one wide GEMM over ``images`` images: their segments, less the last rows
        that only the lower kernel rows read."""
        kh, _, wp, seg = self.window
        return images * seg - (kh - 1) * wp

    def wide_buffer_use(self, mt: int, nt: int, kt: int, slots: int) -> dict[str, int]:
        """Bytes per on-chip buffer of a wide tiling (:attr:`Tile.wide`) with ``slots`` copies."""
        _, kw, _, seg = self.window
        images = nt // self.n_quantum
        use = {"act": 0, "wgt": 0, "acc": 0, "vec": 0}
        use[self.a_buf] += slots * self.a_tile_bytes(mt, kw * kt)
        use[self.b_buf] += slots * align(kw * kt * images * seg * self.b_bytes)
        use["acc"] += slots * align(mt * images * seg * 4)
        use["vec"] += self.mask_use(mt)
        return use

    def wide_fits_fields(self, nt: int, kt: int) -> bool:
        """Whether a wide tiling's GEMM and DMA fields hold (16-bit N, K and strides) and, for
        N:M, each tap's packed index row of the K tile ends on a byte (taps stack along K)."""
        _, kw, _, seg = self.window
        return (nt // self.n_quantum) * seg <= MAX_FIELD and kw * kt <= MAX_FIELD \
            and kt <= MAX_PLANES and (self.sparse is None or kt % self.k_quantum == 0)

    def tap_choices(self, nt: int, kt: int) -> list[int]:
        """Taps per GEMM instruction a tile may take: 1, or (with whole per-tap K for
        'k', whole N for 'n') 2 up to the largest tap set, within the 16-bit fields."""
        if self.fold is None or self.taps == 1:
            return [1]
        if self.fold == "k":
            whole = kt == self.k and (self.sparse is None or self.k % self.k_quantum == 0)
            most, size = max(self.tap_sets or (self.taps,)), kt
        else:
            whole, most, size = nt == self.n, self.taps, nt
        top = min(most, MAX_FIELD // size) if whole else 1
        return list(range(1, top + 1))


@dataclass(frozen=True)
class Tile:
    """A tiling choice: tile sizes, dataflow, buffer slots and the estimate it won with;
    ``stationary_a``: a dense WS GEMM keeps A (not B) stationary in the array; ``taps``:
    kernel taps per GEMM instruction (see :attr:`GemmProblem.fold`); ``wide``: B is loaded
    once per K tile as shifted copies (:attr:`GemmProblem.window`), one GEMM per kernel row
    of ``taps`` = kw taps over ``seg`` output positions per image, some of which (the
    padding columns, and the rows between images) are computed and dropped; ``staged``: B is
    loaded as whole padded rows and cropped on chip (:attr:`GemmProblem.stage`)."""

    mt: int
    nt: int
    kt: int
    dataflow: str
    slots: int
    cycles: int
    interleave: bool = True
    stationary_a: bool = False
    taps: int = 1
    wide: bool = False
    staged: bool = False


def nm_k_quantum(n: int, m: int) -> int:
    """Smallest K tile of an N:M operand whose packed index row ends on a byte boundary."""
    bits = n * index_bits(m)
    return m * (8 // math.gcd(8, bits))


def _conv_checks(node: Node) -> None:
    a = node.attrs
    what = f"layer {node.layer!r} ({node.name}, {node.op})"
    if tuple(a["dilation"]) != (1, 1):
        raise CompileError(f"{what}: dilated convolution is not supported by the SAT lowering yet; "
                           "use dilation 1")


def conv_window(node: Node) -> tuple[int, int, int, int]:
    """(kh, kw, wp, seg) of the wide B operand (:attr:`GemmProblem.window`) of a stride-1
    conv2d (B: its input) or conv2d_grad_input (B: dY, padded for the full correlation):
    ``wp`` the width of B with that padding, ``seg`` the elements of each image and channel
    the output rows and all kernel rows read; () when it does not apply (strided, 1x1)."""
    kh, kw = node.inputs[1].shape[2:]
    if tuple(node.attrs["stride"]) != (1, 1) or kh * kw == 1:
        return ()
    pt, pl, pb, pr = node.attrs["padding"]
    ho, wo = node.outputs[0].shape[2:]
    if node.op == "conv2d":
        wp = node.inputs[0].shape[3] + pl + pr
    else:                                   # dY, padded kw-1-pl left, W - Wo + pl right
        wp = node.inputs[0].shape[3] + max(0, kw - 1 - pl) + max(0, wo - node.inputs[0].shape[3]
                                                                  + pl)
    return kh, kw, wp, (ho + kh - 2) * wp + wo


def stage_window(node: Node, cfg: HardwareConfig) -> tuple[int, int, int, int, int]:
    """(kh, kw, ho, wo, wp) of the stageable B window (:attr:`GemmProblem.stage`) of a stride-1
    conv2d, conv2d_grad_input or conv2d_grad_weight whose window rows are shorter than a DRAM
    burst; () otherwise. ``wp``: the padded width of the window's source."""
    kh, kw = (node.attrs["weight_shape"] if node.op == "conv2d_grad_weight"
              else node.inputs[1].shape)[2:]
    if tuple(node.attrs["stride"]) != (1, 1) or kh * kw == 1:
        return ()
    pt, pl, pb, pr = node.attrs["padding"]
    if node.op == "conv2d_grad_input":
        ho, wo = node.outputs[0].shape[2:]
        wp = conv_window(node)[2]
    else:
        x = node.inputs[0] if node.op == "conv2d" else node.inputs[1]
        ho, wo = (node.outputs[0] if node.op == "conv2d" else node.inputs[0]).shape[2:]
        wp = x.shape[3] + pl + pr
    return (kh, kw, ho, wo, wp) if wo * 4 < cfg.dram_burst_bytes else ()


def _matmul_problem(node: Node, pat: tuple[int, int] | None, kq: int, wbytes: int) -> GemmProblem:
    """2-D matmul; a [..., K] activation times a 2-D weight (all leading axes are rows); or a
    batched matmul over equal leading axes, one C matrix per batch (``taps``, not in K).
    ``matmul_bias`` / ``matmul_bias_grad`` are the same GEMM (the bias is added to each C tile
    on the vector unit, not an operand; the bias gradient is summed from A's tiles)."""
    a, b = node.inputs[:2]
    ta, tb = node.attrs.get("trans_a", False), node.attrs.get("trans_b", False)
    batched = b.type.rank > 2
    if not batched and (a.type.rank == 2 or not ta):
        sa = (int(math.prod(a.shape[:-1])), a.shape[-1])
    elif a.type.rank == b.type.rank and a.shape[:-2] == b.shape[:-2] and not pat:
        sa = a.shape[-2:]
    else:
        raise CompileError(f"layer {node.layer!r} ({node.name}): matmul {a.shape} x {b.shape} "
                           f"(trans_a={ta}) is not supported by the SAT lowering yet: batched "
                           "operands need equal leading axes and dense data")
    m, k = (sa[1], sa[0]) if ta else sa
    n = b.shape[-2] if tb else b.shape[-1]
    return GemmProblem(m, n, k, taps=int(math.prod(b.shape[:-2])), taps_in_k=not batched,
                       sparse="b" if pat else None, nm=pat, k_quantum=kq, b_bytes=wbytes,
                       m_tile_max=ff_row_tile_bound(node, m),
                       stores=2 if node.attrs.get("gelu") else 1)


#: Row tiles a forward matmul is cut into at least (its M tile at most M / this, never below
#: :data:`FF_MIN_ROW_TILE` rows). ViT-Tiny b32 (list schedule, sat-vcu1525): M = 2080 token
#: rows in 2 tiles of 1024 -> 5 of at most 512, with the bias on the vector unit: dense
#: 19.42 M -> 19.30 M cycles, bdwp:2:8 12.68 M -> 12.43 M (tiles of at most 256: 19.49 M /
#: 12.41 M).
FF_ROW_TILES = 4
FF_MIN_ROW_TILE = 256


def ff_row_tile_bound(node: Node, m: int) -> int:
    """The largest M tile of a forward (FF) matmul: M / :data:`FF_ROW_TILES`, at least
    :data:`FF_MIN_ROW_TILE` rows (0, no bound, for other nodes). In FF every layer is a link
    of one chain with nothing beside it (a transformer block: layernorm, q/k/v, attention,
    projection, layernorm, MLP): the next node's first tile waits until this node's first
    tile is stored, and this node's last GEMM waits for its producer's last rows, so a
    node cut into two row tiles leaves the STCE idle for half of each neighbour. BP and WU
    have the WU GEMMs beside the BP chain and keep the search's free choice; conv layers
    too (the same bound through a fill-time charge made ResNet-18 CIFAR and VGG-16-BN
    slower: their windows reload with every extra row tile)."""
    if node.stage != Stage.FF or m <= FF_MIN_ROW_TILE:
        return 0
    return max(m // FF_ROW_TILES, FF_MIN_ROW_TILE)


def gemm_problem(node: Node, cfg: HardwareConfig) -> GemmProblem | None:
    """The GEMM ``node`` performs on SAT, or None when it is not a GEMM-class op."""
    nm = node.attrs.get("nm")
    pat = (nm[0], nm[1]) if nm else None
    wbytes = DTYPE_BYTES["fp16"] if nm and cfg.mixed_precision else 4
    kq = nm_k_quantum(*pat) if pat else 1
    if node.op in ("matmul", "matmul_bias", "matmul_bias_grad"):
        return _matmul_problem(node, pat, kq, wbytes)
    if node.op.startswith("conv2d") and node.attrs["groups"] != 1:
        return None                 # grouped / depthwise: planned by its own lowering
    if node.op == "conv2d":
        _conv_checks(node)
        x, w = node.inputs[:2]
        y = node.outputs[0]
        co, ci, kh, kw = w.shape
        hw = y.shape[2] * y.shape[3]
        return GemmProblem(co, x.shape[0] * hw, ci, taps=kh * kw, sparse="a" if nm else None,
                           nm=pat, n_quantum=hw, k_quantum=kq, a_buf="wgt", b_buf="act",
                           a_bytes=wbytes, fold="k", window=conv_window(node),
                           row=y.shape[3], stage=stage_window(node, cfg))
    if node.op == "conv2d_grad_input":
        _conv_checks(node)
        dy, w = node.inputs[:2]
        co, ci, kh, kw = w.shape
        xs = node.attrs["input_shape"]
        sh, sw = node.attrs["stride"]
        hw = -(-xs[2] // sh) * -(-xs[3] // sw)       # one output phase (all of dX at stride 1)
        return GemmProblem(ci, xs[0] * hw, co, taps=kh * kw, sparse="a" if nm else None,
                           nm=pat, n_quantum=hw, k_quantum=kq, a_buf="wgt", b_buf="act",
                           a_bytes=wbytes, scatter=sh * sw if sh * sw > 1 else 0, fold="k",
                           row=-(-xs[3] // sw), window=conv_window(node),
                           stage=stage_window(node, cfg),
                           c_loads=len(node.inputs) - 2 - 2 * bool(node.attrs.get("bn_stats")),
                           bn_stats=bool(node.attrs.get("bn_stats")),
                           mask_budget=align(cfg.vec_buffer_bytes // MASK_CHUNK_SHARE),
                           tap_sets=tuple(len(taps) for _, _, taps in bp_phases(node)[2]))
    if node.op == "conv2d_grad_weight":
        _conv_checks(node)
        dy, x = node.inputs
        co, ci, kh, kw = node.attrs["weight_shape"]
        hw = dy.shape[2] * dy.shape[3]
        return GemmProblem(co, ci, dy.shape[0] * hw, taps=kh * kw, taps_in_k=False,
                           k_quantum=hw, a_buf="act", b_buf="wgt", fold="n", row=dy.shape[3],
                           stage=stage_window(node, cfg))
    return None


def _candidates(full: int, quantum: int) -> list[int]:
    """Full size first, then quantum x powers of two below it (all multiples of quantum)."""
    out = [full]
    t = quantum
    while t < full:
        out.append(t)
        t *= 2
    return sorted(set(x for x in out if x <= MAX_FIELD), reverse=True)


def _tile_gemm_cycles(p: GemmProblem, mt: int, nt: int, kt: int, dataflow: str, interleave: bool,
                      stationary_a: bool, cfg: HardwareConfig) -> int:
    """The cycle model's cycles of one tile GEMM of ``p`` (its buffers and element types: the
    operand feed counts)."""
    nm = p.nm if p.sparse else (0, 0)
    return _gemm_instruction_cycles(nm, p.sparse == "b", p.a_buf, p.b_buf, p.a_bytes, p.b_bytes,
                                    mt, nt, kt, dataflow, interleave, stationary_a, cfg)


@functools.lru_cache(maxsize=65536)
def _gemm_instruction_cycles(nm: tuple[int, int], sparse_b: bool, a_buf: str, b_buf: str,
                             a_bytes: int, b_bytes: int, mt: int, nt: int, kt: int, dataflow: str,
                             interleave: bool, stationary_a: bool, cfg: HardwareConfig) -> int:
    """:func:`_tile_gemm_cycles` memoised on what the cycle model reads (not the whole
    problem, so tiles of different layers share entries: the tile search asks often)."""
    dtype = {2: "fp16", 4: "fp32"}
    return gemm_cycles(Instruction("gemm", dataflow=dataflow, n=nm[0], m=nm[1],
                                   sparse_b=int(sparse_b), a_buf=a_buf, b_buf=b_buf,
                                   idx_buf=b_buf if sparse_b else a_buf, a_dtype=dtype[a_bytes],
                                   b_dtype=dtype[b_bytes], mt=mt, nt=nt, k=kt,
                                   interleave=int(interleave), stationary_a=int(stationary_a)), cfg)


def gemm_instructions(p: GemmProblem, mt: int, nt: int, kt: int, taps: int = 1
                      ) -> list[tuple[int, int, int, int]]:
    """(count, N, K, taps) of the GEMM instructions of the tiled problem, by shape.

    Taps stacked along K ('k' fold) come in groups of ``taps`` within each tap set of an
    output tile (a last, shorter group for the rest); side by side along N ('n' fold) the
    taps form output groups of ``taps``; one tap per instruction otherwise."""
    nm_, nn_, nk = -(-p.m // mt), -(-p.n // nt), -(-p.k // kt)

    def split(total: int) -> list[tuple[int, int]]:
        """(groups, taps per group) of ``total`` taps in groups of ``taps``."""
        return [(c, g) for c, g in ((total // taps, taps), (1, total % taps)) if c and g]

    if not p.taps_in_k:
        return [(c * nm_ * nn_ * nk, g * nt, kt, g) for c, g in split(p.taps)]
    out: dict[tuple[int, int], int] = {}
    for size in p.tap_sets or (p.taps,):
        for c, g in split(size):
            key = (kt * g, g)
            out[key] = out.get(key, 0) + c * nm_ * nn_ * (nk if taps == 1 else 1)
    return [(c, nt, k, g) for (k, g), c in sorted(out.items(), reverse=True)]


def gemm_work(p: GemmProblem, mt: int, nt: int, kt: int, dataflow: str, cfg: HardwareConfig,
              interleave: bool = True, stationary_a: bool = False, taps: int = 1
              ) -> tuple[float, float]:
    """(compute, DMA) cycles of the whole tiled GEMM (see the module docstring)."""
    compute, dma, _ = _gemm_work(p, mt, nt, kt, dataflow, cfg, interleave, stationary_a, taps,
                                 staged=False)
    return compute, dma


def staged_work(p: GemmProblem, mt: int, nt: int, kt: int, dataflow: str, cfg: HardwareConfig,
                interleave: bool = True, stationary_a: bool = False, taps: int = 1
                ) -> tuple[float, float, float]:
    """(compute, DMA, vector) cycles of a staged tiling (:attr:`Tile.staged`): B moves as
    whole padded rows, one DMA per image and instruction, and the vector unit crops it."""
    return _gemm_work(p, mt, nt, kt, dataflow, cfg, interleave, stationary_a, taps, staged=True)


def _gemm_work(p: GemmProblem, mt: int, nt: int, kt: int, dataflow: str, cfg: HardwareConfig,
               interleave: bool, stationary_a: bool, taps: int, staged: bool
               ) -> tuple[float, float, float]:
    nm_, nn_ = -(-p.m // mt), -(-p.n // nt)
    outer = 1 if p.taps_in_k else p.taps
    images = max(nt // p.n_quantum, 1) if p.n_quantum > 1 else 1
    k_images = max(kt // p.k_quantum, 1) if p.fold == "n" else 1
    compute = a_bytes = b_bytes = transfers = crop = a_staged = b_staged = 0
    for count, n_i, k_i, g in gemm_instructions(p, mt, nt, kt, taps):
        compute += count * (_tile_gemm_cycles(p, mt, n_i, k_i, dataflow, interleave,
                                              stationary_a, cfg) + cfg.issue_cycles)
        if staged and p.fold == "n":                # the dY rows at full width, then cropped
            _, _, ho, wo, wp = p.stage
            a_staged += transfer_cycles(count * mt * k_images * ho * wp * p.a_bytes,
                                        ho * wp * p.a_bytes, cfg)
            crop += count * ho * (cfg.issue_cycles + cfg.vector_latency_cycles
                                  + math.ceil(mt * k_images * wo / cfg.vector_lanes))
        else:
            a_bytes += count * p.a_tile_bytes(mt, k_i)
        # A: one (3-D) DMA, plus its indices, or one per image of a dY window (WU);
        # B: one per image and tap of a window (one per image, staged), one for a matrix
        transfers += count * ((k_images if p.fold == "n" else 1 + (p.sparse == "a"))
                              + (1 if staged else g) * images * k_images + (p.sparse == "b"))
        if staged:
            channels, imgs = p.stage_channels_images(nt, kt)
            run = p.stage_rows(g) * p.stage[4] * p.b_bytes
            b_staged += transfer_cycles(count * channels * imgs * run, run, cfg)
            crop += count * g * p.stage[2] * (cfg.issue_cycles + cfg.vector_latency_cycles
                                              + math.ceil(channels * imgs * p.stage[3]
                                                          / cfg.vector_lanes))
        else:
            b_bytes += count * p.b_tile_bytes(k_i, n_i)
    c_bytes = outer * p.m * p.n * 4
    transfers += outer * nm_ * nn_ * (p.stores + p.c_loads)
    a_run, b_run = p.runs(mt, nt, kt)
    dma = transfer_cycles(a_bytes, a_run, cfg) + transfer_cycles(b_bytes, b_run, cfg) \
        + a_staged + b_staged \
        + (p.stores + p.c_loads) * transfer_cycles(c_bytes, p.c_run(nt), cfg) \
        + transfers * cfg.issue_cycles
    return compute, dma, crop


def wide_work(p: GemmProblem, mt: int, nt: int, kt: int, dataflow: str, cfg: HardwareConfig,
              interleave: bool = True, stationary_a: bool = False) -> tuple[float, float]:
    """(compute, DMA) cycles of a wide tiling (:attr:`Tile.wide`): per (M, N, K) tile the kw
    shifted copies of B (one DMA each), then per kernel row one A load and one GEMM."""
    kh, kw, _, seg = p.window
    images = nt // p.n_quantum
    tiles = -(-p.m // mt) * -(-p.n // nt) * -(-p.k // kt)
    gemm = _tile_gemm_cycles(p, mt, p.wide_columns(images), kw * kt, dataflow, interleave,
                             stationary_a, cfg)
    compute = tiles * kh * (gemm + cfg.issue_cycles)
    a_bytes = tiles * kh * p.a_tile_bytes(mt, kw * kt)
    b_bytes = tiles * kw * kt * images * seg * p.b_bytes
    transfers = tiles * (kh * (1 + (p.sparse == "a")) + kw) \
        + -(-p.m // mt) * -(-p.n // nt) * (1 + p.c_loads)
    dma = transfer_cycles(a_bytes, p.runs(mt, nt, kt)[0], cfg) \
        + transfer_cycles(b_bytes, seg * p.b_bytes, cfg) \
        + (1 + p.c_loads) * transfer_cycles(p.m * p.n * 4, p.c_run(nt), cfg) \
        + transfers * cfg.issue_cycles
    return compute, dma


def estimate_cycles(p: GemmProblem, mt: int, nt: int, kt: int, dataflow: str, slots: int,
                    cfg: HardwareConfig, interleave: bool = True, taps: int = 1) -> int:
    """Estimated cycles of the whole tiled GEMM on its own (see the module docstring)."""
    return _overlapped(*gemm_work(p, mt, nt, kt, dataflow, cfg, interleave, taps=taps), slots)


def _overlapped(compute: float, dma: float, slots: int, vector: float = 0) -> int:
    """Cycles of compute, DMA and vector work: overlapped when double buffered, in sequence
    otherwise."""
    return int(max(compute, dma, vector) if slots == 2 else compute + dma + vector)


def _orientations(p: GemmProblem, cfg: HardwareConfig) -> list[tuple[str, bool]]:
    """(dataflow, stationary_a) pairs to try: a dense WS GEMM may keep either operand
    stationary (B first: it wins ties); an N:M one keeps its compressed operand there."""
    return [(df, sa) for df in cfg.dataflows
            for sa in ((False, True) if df == "ws" and p.sparse is None else (False,))]


def _layouts(p: GemmProblem, nt: int, kt: int) -> list[tuple[int, int, bool, bool]]:
    """(taps per instruction, buffer slots, wide, staged) of every way to run an (nt, kt)
    tile: the tap choices with double or single buffering, staged where B may be, then the
    wide layout where it applies."""
    stagings = (False, True) if p.stage else (False,)
    out = [(taps, slots, False, staged) for taps, slots, staged
           in itertools.product(p.tap_choices(nt, kt), (2, 1), stagings)]
    if p.window and p.wide_fits_fields(nt, kt):
        out += [(p.window[1], slots, True, False) for slots in (2, 1)]
    return out


def choose_tile(node: Node, p: GemmProblem, cfg: HardwareConfig, interleave: bool = True) -> Tile:
    """The cheapest tiling of ``p`` that fits ``cfg``'s buffers (less the weight-update slice,
    :func:`~satc.backends.sat.codegen.partition.buffer_windows`); CompileError if none does.

    ``interleave``: the GEMMs use interleave mapping (see the cycle model)."""
    room = main_buffer_bytes(cfg)
    best: Tile | None = None
    best_cost = 0.0
    for mt in _candidates(p.m, p.m_quantum):
        if p.m_tile_max and mt > p.m_tile_max:
            continue
        for nt in _candidates(p.n, p.n_quantum):
            for kt in _candidates(p.k, p.k_quantum):
                work: dict[tuple, tuple[float, ...]] = {}    # the same for either slot count
                for taps, slots, wide, staged in _layouts(p, nt, kt):
                    use = p.wide_buffer_use(mt, nt, kt, slots) if wide else \
                        p.buffer_use(mt, nt, kt, slots, taps, staged)
                    if any(use[b] > room[b] for b in use):
                        continue
                    for df, sa in _orientations(p, cfg):
                        key = (taps, wide, staged, df, sa)
                        if key not in work:
                            work[key] = wide_work(p, mt, nt, kt, df, cfg, interleave, sa) if wide \
                                else staged_work(p, mt, nt, kt, df, cfg, interleave, sa, taps) \
                                if staged else gemm_work(p, mt, nt, kt, df, cfg, interleave, sa, taps)
                        compute, dma, *vector = work[key]
                        cycles = _overlapped(compute, dma, slots, *vector)
                        cost = cycles + DMA_WEIGHT * dma
                        if best is None or cost < best_cost:
                            best = Tile(mt, nt, kt, df, slots, cycles, interleave, sa, taps, wide,
                                        staged)
                            best_cost = cost
    if best is None:
        mt, nt, kt = min(_candidates(p.m, p.m_quantum)), min(_candidates(p.n, p.n_quantum)), \
            min(_candidates(p.k, p.k_quantum))
        use = p.buffer_use(mt, nt, kt, 1)
        short = [f"{b} buffer needs {use[b]} bytes, {room[b]} of {cfg.name}'s "
                 f"{cfg.buffer_bytes[b]} are free for GEMM tiles" for b in use if use[b] > room[b]]
        raise CompileError(
            f"layer {node.layer!r} ({node.name}, {node.op}, {node.stage}): the GEMM "
            f"[{p.m}x{p.k}] x [{p.k}x{p.n}] does not fit even at the smallest tile "
            f"(mt={mt}, nt={nt}, kt={kt}): {'; '.join(short)}; fix: raise "
            + " and ".join(f"{b}_buffer_bytes to at least {buffer_bytes_to_fit(cfg, b, use[b])}"
                           for b in use if use[b] > room[b])
            + " in the hardware config, or reduce the batch size / image size")
    return best


@dataclass(frozen=True)
class TiledGemm:
    """One GEMM node of the tile plan: the GEMM it performs and the tiling chosen for it."""

    problem: GemmProblem
    tile: Tile


#: The tile plan: GEMM node name -> its problem and tile (codegen's companion of the memory plan).
TilePlan = dict[str, TiledGemm]


def plan_tiles(graph: Graph, cfg: HardwareConfig, interleave: bool = True) -> TilePlan:
    """The tile plan of ``graph``: a tiling for every GEMM-class node.

    ``interleave=False`` maps without interleave mapping (an ablation): every
    array pass then waits for the previous one to drain."""
    plan: TilePlan = {}
    chosen: dict[GemmProblem, Tile] = {}     # layers of one shape share their search
    for node in graph.nodes:
        p = gemm_problem(node, cfg)
        if p is not None:
            if p not in chosen:
                chosen[p] = choose_tile(node, p, cfg, interleave)
            plan[node.name] = TiledGemm(p, chosen[p])
    return plan


def format_tile_plan(graph: Graph, plan: TilePlan) -> str:
    """The tile plan as text: one line per GEMM node (layer, stage, op, problem, tile)."""
    lines = [f"{'node':<16} {'layer':<20} {'stage':<5} {'op':<20} {'M x N x K (taps)':<24} "
             f"{'mt x nt x kt':<18} {'df':<5} {'slots':>5} {'est cycles':>11}"]
    for node in graph.nodes:
        if node.name in plan:
            p, t = plan[node.name].problem, plan[node.name].tile
            shape = f"{p.m}x{p.n}x{p.k} ({p.taps})"
            lines.append(f"{node.name:<16} {node.layer or '-':<20} {str(node.stage):<5} "
                         f"{node.op:<20} {shape:<24} {f'{t.mt}x{t.nt}x{t.kt}' + (f'/{t.taps}t' if t.taps > 1 else '') + ('w' if t.wide else ''):<18} "
                         f"{t.dataflow + ('/A' if t.stationary_a else ''):<5} {t.slots:>5} {t.cycles:>11}")
    return "\n".join(lines)
