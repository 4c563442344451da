"""The SAT hardware description: one frozen, validated :class:`HardwareConfig`.

Every hardware number the emulator, the cycle model and the compiler use is a
field here (the spirit of VTA's ``Environment``): array shape, USPE width,
supported N:M patterns, dataflows, buffer sizes, DRAM bandwidth, clock,
engine lanes and the per-engine latencies of the cycle model. Derived rates
(peak MAC/cycle, DRAM bytes/cycle, ...) are computed once from the fields.

Presets live as TOML files in ``presets/`` and are read with
:func:`load_hardware`; a wrong, missing, unknown or impossible field raises
:class:`satc.errors.ConfigError` naming the field and the fix.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import tomllib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping

from satc.backends.sat.isa import BUFFERS, DATAFLOWS, field_width
from satc.errors import ConfigError, SparsityError
from satc.ir.nm import check_nm

PRESET_DIR = Path(__file__).with_name("presets")
DEFAULT_HARDWARE = "sat-vcu1525"
PRECISIONS = ("fp32", "mixed")
# Encoding limits of the ISA (the field table of backends/sat/isa.py): buffer
# and DRAM addresses are byte addresses.
_BUFFER_ADDR_BITS = field_width("load", "buf_addr")
_DRAM_ADDR_BITS = field_width("load", "dram_addr")
MAX_BUFFER_BYTES = 1 << _BUFFER_ADDR_BITS
MAX_DRAM_BYTES = 1 << _DRAM_ADDR_BITS


@dataclass(frozen=True)
class HardwareConfig:
    """One SAT instance. All timing numbers of the cycle model are fields."""

    name: str
    # STCE: systolic array of unified sparse PEs (USPE)
    rows: int
    cols: int
    multipliers_per_pe: int
    nm_groups_per_cycle: int
    nm_patterns: tuple[tuple[int, int], ...]
    dataflows: tuple[str, ...]
    ws_preload_cycles_per_row: int
    os_drain_cycles_per_row: int
    # on-chip buffers (bytes)
    act_buffer_bytes: int
    wgt_buffer_bytes: int
    acc_buffer_bytes: int
    vec_buffer_bytes: int
    # off-chip memory
    dram_bytes: int
    dram_bandwidth_gbps: float
    dram_efficiency: float
    dram_latency_cycles: int
    dram_shared: bool
    dram_burst_bytes: int
    dram_outstanding_requests: int
    # on-chip buffer read ports feeding the STCE (bytes per cycle, per buffer)
    act_read_bytes_per_cycle: int
    wgt_read_bytes_per_cycle: int
    acc_read_bytes_per_cycle: int
    vec_read_bytes_per_cycle: int
    # clock and engines
    clock_mhz: float
    issue_cycles: int
    vector_lanes: int
    vector_latency_cycles: int
    wuve_lanes: int
    wuve_latency_cycles: int
    sore_lanes: int
    sore_latency_cycles: int
    sore_cycles_per_element: int
    precision: str
    # energy model (backends/sat/energy.py): static power in watts, dynamic energy
    # per action in picojoules; each preset gives its source or reasoning
    static_power_w: float
    dram_static_power_w: float
    mac_dense_fp16_pj: float
    mac_dense_fp32_pj: float
    mac_nm_fp16_pj: float
    mac_nm_fp32_pj: float
    pe_active_pj_per_cycle: float
    pe_idle_pj_per_cycle: float
    engine_idle_pj_per_cycle: float
    buffer_read_pj_per_byte: float
    buffer_write_pj_per_byte: float
    dram_read_pj_per_byte: float
    dram_write_pj_per_byte: float
    vector_pj_per_element: float
    wuve_pj_per_element: float
    sore_pj_per_element: float

    def __post_init__(self) -> None:
        _validate(self)

    def __hash__(self) -> int:
        """The hash of every field, computed once (configs key the cycle model's memo tables,
        asked some 10^5 times per compile)."""
        h = self.__dict__.get("_hash")
        if h is None:
            h = self.__dict__["_hash"] = hash(tuple(getattr(self, f.name) for f in dataclasses.fields(self)))
        return h

    # ---- derived quantities (computed once) ----
    @cached_property
    def pes(self) -> int:
        """Number of USPEs in the STCE."""
        return self.rows * self.cols

    @cached_property
    def peak_dense_macs_per_cycle(self) -> int:
        """Dense MACs per cycle: every multiplier of every USPE busy."""
        return self.pes * self.multipliers_per_pe

    @cached_property
    def peak_sparse_macs_per_cycle(self) -> int:
        """Best dense-equivalent MACs per cycle over the supported N:M patterns."""
        return max(self.peak_nm_macs_per_cycle(n, m) for n, m in self.nm_patterns)

    def peak_nm_macs_per_cycle(self, n: int, m: int) -> int:
        """Dense-equivalent MACs per cycle in N:M mode: each USPE eats groups of M."""
        if (n, m) not in self.nm_patterns:
            raise ConfigError(f"N:M {n}:{m} is not supported by {self.name}; "
                              f"supported: {self.nm_patterns}")
        return self.pes * m * self.nm_groups_per_cycle

    @cached_property
    def dram_bytes_per_cycle(self) -> float:
        """Achievable DRAM bytes per clock cycle (bandwidth x efficiency / clock)."""
        return self.dram_bandwidth_gbps * 1e9 * self.dram_efficiency / (self.clock_mhz * 1e6)

    @cached_property
    def dram_stream_bytes_per_cycle(self) -> float:
        """Bytes per cycle one DMA streams at: ``dram_bytes_per_cycle``, or less when the
        requests in flight cannot cover the latency (Little's law:
        ``dram_outstanding_requests * dram_burst_bytes / dram_latency_cycles``)."""
        if self.dram_latency_cycles == 0:
            return self.dram_bytes_per_cycle
        return min(self.dram_bytes_per_cycle,
                   self.dram_outstanding_requests * self.dram_burst_bytes / self.dram_latency_cycles)

    @cached_property
    def read_port_bytes_per_cycle(self) -> dict[str, int]:
        """Bytes per cycle each on-chip buffer can feed the STCE, by buffer name."""
        return {b: getattr(self, f"{b}_read_bytes_per_cycle") for b in BUFFERS}

    @cached_property
    def buffer_bytes(self) -> dict[str, int]:
        """Capacity in bytes of each on-chip buffer, by buffer name."""
        return {b: getattr(self, f"{b}_buffer_bytes") for b in BUFFERS}

    @cached_property
    def mixed_precision(self) -> bool:
        """True when the STCE multiplies in fp16 (fp32 accumulate and master weights)."""
        return self.precision == "mixed"

    def ops_per_second(self, macs_per_cycle: float) -> float:
        """Operations per second (2 per MAC) at this clock."""
        return 2.0 * macs_per_cycle * self.clock_mhz * 1e6

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (N:M patterns as lists), as a TOML file holds them."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["nm_patterns"] = [list(p) for p in self.nm_patterns]
        out["dataflows"] = list(self.dataflows)
        return out


_FIELD_HELP = {
    "rows": "rows of USPEs in the systolic array",
    "cols": "columns of USPEs in the systolic array",
    "multipliers_per_pe": "multipliers per USPE (SAT: 2)",
    "nm_groups_per_cycle": "groups of M one USPE consumes per cycle in N:M mode (SAT: 1)",
    "ws_preload_cycles_per_row": "cycles to shift one row of stationary operands in (WS)",
    "os_drain_cycles_per_row": "cycles to shift one row of results out (OS)",
    "dram_latency_cycles": "cycles from the end of a DMA's transfer until its data is ready for other "
                           "engines (a delay on its dependants, not engine time)",
    "dram_shared": "true: the load and store engines share one DRAM channel of dram_bandwidth_gbps "
                   "(their transfers serialise); false: each engine has the full bandwidth",
    "dram_burst_bytes": "bytes of one DRAM burst: every contiguous DRAM run of a DMA is rounded up "
                        "to whole bursts",
    "dram_outstanding_requests": "DRAM bursts one DMA engine keeps in flight: bandwidth is at most "
                                 "outstanding x burst / latency",
    "act_read_bytes_per_cycle": "bytes per cycle the act buffer can feed the STCE (a GEMM lasts at "
                                "least its operand bytes from it / this)",
    "wgt_read_bytes_per_cycle": "bytes per cycle the wgt buffer can feed the STCE",
    "acc_read_bytes_per_cycle": "bytes per cycle the acc buffer can feed the STCE (operands only)",
    "vec_read_bytes_per_cycle": "bytes per cycle the vec buffer can feed the STCE",
    "issue_cycles": "fixed cycles every instruction costs on its engine",
    "vector_latency_cycles": "vector-unit pipeline latency per instruction",
    "wuve_latency_cycles": "WUVE pipeline latency per instruction",
    "sore_latency_cycles": "SORE pipeline latency per instruction",
    "sore_cycles_per_element": "SORE cycles per element of a group (SAT: 1, so M per group)",
    "static_power_w": "static (leakage) power of the FPGA device, watts",
    "dram_static_power_w": "background power of the DRAM (all channels), watts",
    "mac_dense_fp16_pj": "pJ per multiply-accumulate executed by a USPE in dense mode, fp16 multiply",
    "mac_dense_fp32_pj": "pJ per multiply-accumulate executed by a USPE in dense mode, fp32 multiply",
    "mac_nm_fp16_pj": "pJ per multiply-accumulate executed in N:M mode (mux and index decode included), fp16",
    "mac_nm_fp32_pj": "pJ per multiply-accumulate executed in N:M mode (mux and index decode included), fp32",
    "pe_active_pj_per_cycle": "pJ per USPE per busy STCE cycle beyond its multiplies (registers, interconnect)",
    "pe_idle_pj_per_cycle": "pJ per USPE per idle STCE cycle (clock tree of a clock-enabled-off PE)",
    "engine_idle_pj_per_cycle": "pJ per idle cycle of each other engine (DMA, vector, WUVE, SORE)",
    "buffer_read_pj_per_byte": "pJ per byte read from an on-chip buffer (BRAM/URAM)",
    "buffer_write_pj_per_byte": "pJ per byte written to an on-chip buffer (BRAM/URAM)",
    "dram_read_pj_per_byte": "pJ per byte read from DRAM (device, PHY and controller)",
    "dram_write_pj_per_byte": "pJ per byte written to DRAM (device, PHY and controller)",
    "vector_pj_per_element": "pJ per element of vector-unit work (one FP32 operation)",
    "wuve_pj_per_element": "pJ per weight the WUVE updates (arithmetic only; buffer traffic apart)",
    "sore_pj_per_element": "pJ per element the SORE sorts (compare network; buffer traffic apart)",
}

_POSITIVE_INTS = ("rows", "cols", "multipliers_per_pe", "nm_groups_per_cycle", "act_buffer_bytes",
                  "wgt_buffer_bytes", "acc_buffer_bytes", "vec_buffer_bytes", "dram_bytes",
                  "vector_lanes", "wuve_lanes", "sore_lanes", "sore_cycles_per_element",
                  "ws_preload_cycles_per_row", "os_drain_cycles_per_row", "dram_burst_bytes",
                  "dram_outstanding_requests", "act_read_bytes_per_cycle", "wgt_read_bytes_per_cycle",
                  "acc_read_bytes_per_cycle", "vec_read_bytes_per_cycle")
_NONNEG_INTS = ("dram_latency_cycles", "issue_cycles", "vector_latency_cycles",
                "wuve_latency_cycles", "sore_latency_cycles")
_POSITIVE_FLOATS = ("dram_bandwidth_gbps", "clock_mhz")
#: the energy-model fields: finite numbers >= 0 (0 turns an action's cost off)
ENERGY_FIELDS = ("static_power_w", "dram_static_power_w", "mac_dense_fp16_pj", "mac_dense_fp32_pj",
                 "mac_nm_fp16_pj", "mac_nm_fp32_pj", "pe_active_pj_per_cycle", "pe_idle_pj_per_cycle",
                 "engine_idle_pj_per_cycle", "buffer_read_pj_per_byte", "buffer_write_pj_per_byte",
                 "dram_read_pj_per_byte", "dram_write_pj_per_byte", "vector_pj_per_element",
                 "wuve_pj_per_element", "sore_pj_per_element")
# Sane ranges of the float fields: beyond them the derived rates of the cycle
# model (bytes per cycle, seconds per cycle) overflow or lose all meaning.
_FLOAT_MAX = {"clock_mhz": 100_000.0, "dram_bandwidth_gbps": 1_000_000.0}
_FLOAT_MIN = {"clock_mhz": 1e-3, "dram_bandwidth_gbps": 1e-3, "dram_efficiency": 1e-3}
# Sane upper bounds of the integer fields (the buffer and DRAM sizes are bounded by
# the ISA's address widths instead), about 100x the largest preset: beyond them a
# config is a typo, and the cycle model and the energy model would report
# astronomically large, meaningless numbers.
_INT_MAX = {"rows": 4096, "cols": 4096, "multipliers_per_pe": 64, "nm_groups_per_cycle": 64,
            "vector_lanes": 1 << 16, "wuve_lanes": 1 << 16, "sore_lanes": 1 << 16,
            "dram_burst_bytes": 1 << 16, "dram_outstanding_requests": 1 << 16,
            "act_read_bytes_per_cycle": 1 << 20, "wgt_read_bytes_per_cycle": 1 << 20,
            "acc_read_bytes_per_cycle": 1 << 20, "vec_read_bytes_per_cycle": 1 << 20}
_CYCLES_MAX = 1_000_000     # every *_cycles* field
_ENERGY_MAX = 1e6           # every energy field (W, pJ)
# Every on-chip buffer size must be a multiple of this many bytes: the compiler
# places tiles at 64-byte aligned addresses counted from both ends of each
# buffer, so a size that is not a multiple of 64 gives misaligned addresses the
# emulator refuses. Every preset satisfies it.
BUFFER_ALIGN_BYTES = 64


def _fail(field: str, problem: str, fix: str) -> ConfigError:
    return ConfigError(f"hardware config field '{field}': {problem}; {fix}")


def _validate(cfg: HardwareConfig) -> None:
    """Check types and ranges of every field; raise ConfigError naming the first bad one."""
    if not isinstance(cfg.name, str) or not cfg.name:
        raise _fail("name", f"got {cfg.name!r}", "give a non-empty string")
    for f in _POSITIVE_INTS + _NONNEG_INTS:
        v = getattr(cfg, f)
        if not isinstance(v, int) or isinstance(v, bool):
            raise _fail(f, f"expected an integer, got {type(v).__name__} {v!r}",
                        f"set it to an integer ({_FIELD_HELP.get(f, f'see presets/{DEFAULT_HARDWARE}.toml')})")
        low = 1 if f in _POSITIVE_INTS else 0
        high = _INT_MAX.get(f, _CYCLES_MAX if "cycles" in f else None)
        if v < low:
            raise _fail(f, f"got {v}", f"it must be >= {low}")
        if high is not None and v > high:
            raise _fail(f, f"got {v}", f"it must be at most {high} (a sane maximum: "
                        f"{_FIELD_HELP.get(f, f.replace('_', ' '))})")
    if not isinstance(cfg.dram_shared, bool):
        raise _fail("dram_shared", f"expected true or false, got {type(cfg.dram_shared).__name__} "
                    f"{cfg.dram_shared!r}", f"set it to true or false ({_FIELD_HELP['dram_shared']})")
    for f in _POSITIVE_FLOATS + ("dram_efficiency",):
        v = getattr(cfg, f)
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise _fail(f, f"expected a number, got {type(v).__name__} {v!r}", "set it to a number")
        if not math.isfinite(v) or v <= 0:
            raise _fail(f, f"got {v}", "it must be a finite number > 0")
        if f in _FLOAT_MAX and v > _FLOAT_MAX[f]:
            raise _fail(f, f"got {v}", f"it must be at most {_FLOAT_MAX[f]:g} (a sane maximum; "
                        "larger values overflow the cycle model's derived rates)")
        if v < _FLOAT_MIN[f]:
            raise _fail(f, f"got {v}", f"it must be at least {_FLOAT_MIN[f]:g} (a sane minimum; "
                        "smaller values make every DMA or cycle astronomically long)")
    if cfg.dram_efficiency > 1:
        raise _fail("dram_efficiency", f"got {cfg.dram_efficiency}",
                    "it is the achievable fraction of peak bandwidth: use a value in (0, 1]")
    for f in ENERGY_FIELDS:
        v = getattr(cfg, f)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
            raise _fail(f, f"got {v!r}", f"it must be a finite number >= 0 ({_FIELD_HELP[f]})")
        if v > _ENERGY_MAX:
            raise _fail(f, f"got {v!r}", f"it must be at most {_ENERGY_MAX:g} (a sane maximum; "
                        f"{_FIELD_HELP[f]})")
    for b in BUFFERS:
        f = f"{b}_buffer_bytes"
        if getattr(cfg, f) > MAX_BUFFER_BYTES:
            raise _fail(f, f"got {getattr(cfg, f)}", f"the ISA addresses buffers with {_BUFFER_ADDR_BITS} "
                        f"bits: use at most {MAX_BUFFER_BYTES}")
    if cfg.dram_bytes > MAX_DRAM_BYTES:
        raise _fail("dram_bytes", f"got {cfg.dram_bytes}",
                    f"the ISA addresses DRAM with {_DRAM_ADDR_BITS} bits: use at most {MAX_DRAM_BYTES}")
    _validate_patterns(cfg)
    if not isinstance(cfg.dataflows, tuple) or not cfg.dataflows or \
            any(d not in DATAFLOWS for d in cfg.dataflows) or len(set(cfg.dataflows)) != len(cfg.dataflows):
        raise _fail("dataflows", f"got {cfg.dataflows!r}",
                    f"give a non-empty list of distinct values from {list(DATAFLOWS)}")
    if cfg.precision not in PRECISIONS:
        raise _fail("precision", f"got {cfg.precision!r}", f"use one of {list(PRECISIONS)}")
    _validate_alignment(cfg)


def _validate_alignment(cfg: HardwareConfig) -> None:
    """Every buffer size a multiple of :data:`BUFFER_ALIGN_BYTES`."""
    for b in BUFFERS:
        f = f"{b}_buffer_bytes"
        v = getattr(cfg, f)
        if v % BUFFER_ALIGN_BYTES:
            up = -(-v // BUFFER_ALIGN_BYTES) * BUFFER_ALIGN_BYTES
            raise _fail(f, f"got {v}, not a multiple of {BUFFER_ALIGN_BYTES}",
                        f"buffer sizes must be multiples of the {BUFFER_ALIGN_BYTES}-byte tile alignment "
                        f"(else the emulator meets misaligned accesses): use e.g. {up}")


def _validate_patterns(cfg: HardwareConfig) -> None:
    pats = cfg.nm_patterns
    if not isinstance(pats, tuple) or not pats:
        raise _fail("nm_patterns", f"got {pats!r}", "give a non-empty list of [N, M] pairs")
    for p in pats:
        if not (isinstance(p, tuple) and len(p) == 2 and all(isinstance(x, int) and not isinstance(x, bool)
                                                            for x in p)):
            raise _fail("nm_patterns", f"entry {p!r} is not an [N, M] pair of integers",
                        "write each pattern as [N, M], e.g. [2, 8]")
        n, m = p
        try:
            check_nm(n, m)
        except SparsityError as e:
            raise _fail("nm_patterns", f"entry [{n}, {m}] is impossible ({e})",
                        "use 0 < N < M with M a power of two up to 32") from None
        if n > cfg.multipliers_per_pe:
            raise _fail("nm_patterns", f"entry [{n}, {m}] has N={n} > multipliers_per_pe="
                        f"{cfg.multipliers_per_pe}", "a USPE multiplies at most multipliers_per_pe "
                        "values of a group per cycle: lower N or raise multipliers_per_pe")
    if len(set(pats)) != len(pats):
        raise _fail("nm_patterns", f"duplicate entries in {pats!r}", "list each pattern once")


_FIELDS = {f.name: f for f in dataclasses.fields(HardwareConfig)}
_FLOAT_FIELDS = set(_POSITIVE_FLOATS) | {"dram_efficiency"} | set(ENERGY_FIELDS)


def config_from_dict(data: Mapping[str, Any], source: str = "<dict>") -> HardwareConfig:
    """Build a validated HardwareConfig from a mapping (as read from TOML)."""
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise ConfigError(f"{source}: unknown hardware config field '{unknown[0]}'; "
                          f"remove it or use one of: {', '.join(_FIELDS)}")
    missing = [f for f in _FIELDS if f not in data]
    if missing:
        raise ConfigError(f"{source}: missing hardware config field '{missing[0]}'; "
                          f"add it ({_FIELD_HELP.get(missing[0], f'see presets/{DEFAULT_HARDWARE}.toml')})")
    kw = dict(data)
    if isinstance(kw["nm_patterns"], list):
        kw["nm_patterns"] = tuple(tuple(p) if isinstance(p, list) else p for p in kw["nm_patterns"])
    if isinstance(kw["dataflows"], list):
        kw["dataflows"] = tuple(kw["dataflows"])
    for f in _FLOAT_FIELDS:
        if isinstance(kw[f], int) and not isinstance(kw[f], bool):
            kw[f] = float(kw[f])
    try:
        return HardwareConfig(**kw)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def list_presets() -> list[str]:
    """Names of the preset configs shipped in ``presets/``."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def load_hardware(name_or_path: str | Path) -> HardwareConfig:
    """Load a preset by name (e.g. ``'sat-vcu1525'``) or a TOML file by path."""
    path = Path(name_or_path)
    if not path.is_file():
        preset = PRESET_DIR / f"{name_or_path}.toml"
        if not preset.is_file():
            raise ConfigError(f"no hardware config {str(name_or_path)!r}: not a file and not a preset; "
                              f"use a path to a .toml file or one of {list_presets()}")
        path = preset
    try:
        text = path.read_text()
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e}); fix the syntax") from None
    return _config_from_toml(text, str(path), path.stem)


@functools.lru_cache(maxsize=64)
def _config_from_toml(text: str, source: str, stem: str) -> HardwareConfig:
    """The config of one TOML text (memoised: the same file gives the same immutable object,
    so the cycle model's memo tables match it by identity)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML ({e}); fix the syntax") from None
    data.setdefault("name", stem)
    return config_from_dict(data, source)


def default_hardware() -> HardwareConfig:
    """The default SAT instance, :data:`DEFAULT_HARDWARE`."""
    return load_hardware(DEFAULT_HARDWARE)


def describe_hardware(cfg: HardwareConfig) -> str:
    """A human-readable summary of ``cfg`` with peak dense and N:M rates."""
    def rate(macs: float) -> str:
        ops = cfg.ops_per_second(macs)
        return f"{ops / 1e12:.3f} TFLOPS" if ops >= 1e12 else f"{ops / 1e9:.1f} GFLOPS"

    lines = [f"SAT hardware config: {cfg.name}",
             f"  STCE            {cfg.rows}x{cfg.cols} USPEs, {cfg.multipliers_per_pe} multipliers each, "
             f"dataflows {'/'.join(cfg.dataflows).upper()}",
             f"  precision       {cfg.precision}"
             + (" (fp16 multiply, fp32 accumulate and master weights)" if cfg.mixed_precision
                else " (fp32 throughout)"),
             f"  clock           {cfg.clock_mhz:g} MHz",
             f"  peak dense      {cfg.peak_dense_macs_per_cycle} MAC/cycle = "
             f"{rate(cfg.peak_dense_macs_per_cycle)}"]
    for n, m in cfg.nm_patterns:
        macs = cfg.peak_nm_macs_per_cycle(n, m)
        lines.append(f"  peak {n}:{m:<2}       {macs} dense-equiv MAC/cycle = {rate(macs)} "
                     f"({macs / cfg.peak_dense_macs_per_cycle:g}x dense)")
    lines += ["  buffers         " + ", ".join(f"{b} {_human(cfg.buffer_bytes[b])}" for b in BUFFERS),
              f"  DRAM            {_human(cfg.dram_bytes)}, {cfg.dram_bandwidth_gbps:g} GB/s x "
              f"{cfg.dram_efficiency:g} = {cfg.dram_bytes_per_cycle:.1f} B/cycle, "
              f"latency {cfg.dram_latency_cycles} cycles",
              f"  DRAM channel    {'one, shared by load and store' if cfg.dram_shared else 'one per DMA engine'}; "
              f"{cfg.dram_burst_bytes} B bursts, {cfg.dram_outstanding_requests} in flight: "
              f"a DMA streams {cfg.dram_stream_bytes_per_cycle:.1f} B/cycle",
              "  read ports      " + ", ".join(f"{b} {cfg.read_port_bytes_per_cycle[b]} B/cycle"
                                                for b in BUFFERS) + " (GEMM operand feed)",
              f"  vector unit     {cfg.vector_lanes} lanes, latency {cfg.vector_latency_cycles}",
              f"  WUVE            {cfg.wuve_lanes} lanes, latency {cfg.wuve_latency_cycles}",
              f"  SORE            {cfg.sore_lanes} lanes, {cfg.sore_cycles_per_element} cycle(s) per "
              f"element (M per group), latency {cfg.sore_latency_cycles}"]
    return "\n".join(lines)


def _human(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size and n % (size // 1024 or 1) == 0:
            return f"{n / size:g} {unit}"
    return f"{n} B"
