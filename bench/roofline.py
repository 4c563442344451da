"""Each compiled step against its own per-phase roofline (backends/sat/roofline.py).

For each ``model:batch`` and mode on ``sat-vcu1525``: the list-scheduled makespan, the
per-phase bounds (FF, BP+WU, tail) with their limiting resource, the roofline (sum of
the phase bounds) and makespan / roofline, dense and sparse alike (the table
``satc bench paper`` prints, without the rest of the bench).

Usage: ``.venv/bin/python bench/roofline.py [--models resnet18_cifar:32] [--modes dense,bdwp:2:8]``
"""

from __future__ import annotations

import argparse

from satc.backends.sat.config import DEFAULT_HARDWARE, load_hardware
from satc.paper import measure, roofline_table


def main() -> None:
    """Print the roofline table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet18_cifar:32,vgg16_bn:32,vit_tiny:32")
    ap.add_argument("--modes", default="dense,bdwp:2:8")
    args = ap.parse_args()
    cfg = load_hardware(DEFAULT_HARDWARE)
    rows = [measure(model, int(batch), mode, cfg) for model, batch in
            (item.split(":") for item in args.models.split(",")) for mode in args.modes.split(",")]
    print("\n".join(roofline_table(rows)))


if __name__ == "__main__":
    main()
