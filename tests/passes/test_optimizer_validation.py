"""Optimizer hyper-parameters are checked when the config is built (issue 18)."""

from __future__ import annotations

import math

import pytest

import satc
from satc.errors import SatcError


@pytest.mark.parametrize("kw,needle", [
    ({"lr": math.nan}, "lr=nan"),
    ({"lr": math.inf}, "lr=inf"),
    ({"lr": -0.1}, "lr=-0.1"),
    ({"lr": 0.0}, "lr=0.0"),
    ({"lr": "0.1"}, "lr='0.1'"),
    ({"momentum": 1.0}, "momentum=1.0"),
    ({"momentum": -0.5}, "momentum=-0.5"),
    ({"momentum": math.nan}, "momentum=nan"),
    ({"weight_decay": -1e-4}, "weight_decay=-0.0001"),
    ({"weight_decay": math.inf}, "weight_decay=inf"),
    ({"dampening": 2.0}, "dampening=2.0"),
    ({"nesterov": True}, "nesterov=True"),              # nesterov without momentum
])
def test_sgd_rejects(kw, needle):
    with pytest.raises(SatcError) as e:
        satc.SGD(**kw)
    assert needle in str(e.value) and "SGD(" in str(e.value)


@pytest.mark.parametrize("kw,needle", [
    ({"lr": math.nan}, "lr=nan"),
    ({"lr": -1e-3}, "lr=-0.001"),
    ({"lr": math.inf}, "lr=inf"),
    ({"betas": (1.0, 0.999)}, "betas[0]=1.0"),
    ({"betas": (0.9, 1.5)}, "betas[1]=1.5"),
    ({"betas": (-0.1, 0.999)}, "betas[0]=-0.1"),
    ({"betas": (0.9, math.nan)}, "betas[1]=nan"),
    ({"betas": (0.9,)}, "pair"),
    ({"eps": 0.0}, "eps=0.0"),
    ({"eps": -1e-8}, "eps=-1e-08"),
    ({"eps": math.inf}, "eps=inf"),
    ({"weight_decay": -0.01}, "weight_decay=-0.01"),
])
def test_adamw_rejects(kw, needle):
    with pytest.raises(SatcError) as e:
        satc.AdamW(**kw)
    assert needle in str(e.value) and "AdamW(" in str(e.value)


def test_messages_name_the_valid_range():
    with pytest.raises(SatcError, match=r"momentum must be a finite number in \[0, 1\)"):
        satc.SGD(momentum=1.2)
    with pytest.raises(SatcError, match=r"eps must be a finite number in \(0, inf\)"):
        satc.AdamW(eps=0)


def test_defaults_and_used_values_accepted():
    satc.SGD()
    satc.AdamW()
    satc.SGD(lr=0.05, momentum=0.9, weight_decay=5e-4)
    satc.SGD(lr=0.1, momentum=0.9, weight_decay=5e-4)
    satc.SGD(lr=0.1, momentum=0.9, nesterov=True)
    satc.AdamW(lr=1e-3)
    satc.AdamW(lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.05)
    satc.AdamW(betas=(0.0, 0.0), weight_decay=0)
