"""The training state of a compiled program, kept in the emulator's DRAM between steps.

:class:`LiveState` is the ``prog.state`` mapping (name -> numpy array, the
interpreter's state keys). Between steps the state of record is the
emulator's DRAM: a value is decoded from its regions when first read after a
step (and cached until the next one), and only values assigned since the last
step are encoded into DRAM before the next. Arrays it hands out or has
encoded are read-only, so an in-place edit cannot be silently lost: assign a
new array (``prog.state[k] = new``) to change a value. :attr:`LiveState.version`
changes whenever the state may have changed (an assignment or a step), so a
session can cache what it builds from the state.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Callable, Mapping, Protocol

import numpy as np

from satc.backends.sat.program import Region
from satc.errors import CompileError

Reader = Callable[[str], np.ndarray]


class Storage(Protocol):
    """A value's DRAM storage (satc.backends.sat.codegen.memory)."""

    regions: tuple[Region, ...]

    def encode(self, arr: np.ndarray) -> list[tuple[Region, np.ndarray]]: ...

    def decode(self, read: Reader) -> np.ndarray: ...


class LiveState(MutableMapping):
    """``prog.state``: a fixed set of named arrays whose home, after a step, is modelled DRAM."""

    def __init__(self, storages: Mapping[str, Storage], initial: Mapping[str, np.ndarray] | None = None,
                 read: Reader | None = None) -> None:
        """``initial``: the starting values (encoded before the first step); or None when
        they already are in DRAM (a program file's regions), read through ``read``."""
        self._storages = dict(storages)
        self.version = 0
        if initial is None:
            self._values: dict[str, np.ndarray] = {}
            self._pending: set[str] = set()              # assigned, not yet in DRAM
            self._read = read                            # DRAM contents after the last step
            return
        missing = sorted(set(storages) - set(initial))
        if missing:
            raise CompileError(f"no initial value for state {missing}; the training graph's "
                               "initial state must name every state value of the program")
        self._values = {k: np.array(initial[k]) for k in storages}
        self._pending = set(storages)
        self._read = None

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._values:
            if key not in self._storages:
                raise KeyError(key)
            value = self._storages[key].decode(self._read)
            value.flags.writeable = False
            self._values[key] = value
        return self._values[key]

    def __setitem__(self, key: str, value: np.ndarray) -> None:
        if key not in self._storages:
            raise CompileError(f"the program has no state {key!r}; its state names are fixed at "
                               "compile time (see prog.state.keys())")
        self._values[key] = np.array(value)
        self._pending.add(key)
        self.version += 1

    def __delitem__(self, key: str) -> None:
        raise CompileError(f"cannot delete state {key!r}: the program reads every state value; "
                           "assign a new array instead")

    def __contains__(self, key: object) -> bool:
        return key in self._storages

    def replace_all(self, values: Mapping[str, np.ndarray]) -> None:
        """Assign every value at once; ``values`` must name exactly the program's state."""
        missing = sorted(set(self._storages) - set(values))
        unknown = sorted(set(values) - set(self._storages))
        if missing or unknown:
            raise CompileError(f"a whole-state assignment must name exactly the program's state: "
                               f"missing {missing}, unknown {unknown}; assign prog.state[k] to "
                               "change single values")
        for k, v in values.items():
            self[k] = v

    def __iter__(self) -> Iterator[str]:
        return iter(self._storages)

    def __len__(self) -> int:
        return len(self._storages)

    def pending_images(self) -> dict[str, np.ndarray]:
        """DRAM images, by region name, of the values assigned since the last step (all of them
        before the first); those values become read-only."""
        out = {}
        for k in self._pending:
            value = self._values[k]
            value.flags.writeable = False
            for region, arr in self._storages[k].encode(value):
                out[region.name] = arr
        return out

    def all_images(self) -> dict[str, np.ndarray]:
        """DRAM images of every value (for writing a program file)."""
        return {region.name: arr for k in self._storages
                for region, arr in self._storages[k].encode(self[k])}

    def kept_regions(self) -> list[str]:
        """Regions whose DRAM contents already hold their value (not assigned since the last step)."""
        return [r.name for k, s in self._storages.items() if k not in self._pending for r in s.regions]

    def stepped(self, read: Reader) -> None:
        """Record that a step ran: every value now lives in DRAM, read through ``read``."""
        self._read = read
        self._values.clear()
        self._pending.clear()
        self.version += 1
