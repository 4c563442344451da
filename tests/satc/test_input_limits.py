"""Sizes and windows that used to crash deep inside (ZeroDivisionError, a 30 GiB allocation) or
gave a misleading message: each is now a satc error naming the culprit and the fix."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from satc.ir.graph import Graph
from satc.ir.types import f32
from satc.ir.verifier import verify
from torch import nn

import satc
from satc.errors import FrontendError, IRError, ShapeError


@pytest.mark.parametrize("shape,needle", [
    ((0, 64), r"the input has shape \(0, 64\); every dim must be an integer >= 1"),
    ((-3, 64), r"has shape \(-3, 64\)"),
    ((10 ** 9, 64), r"holds 256000000000 bytes, more than the 4294967296 the SAT DRAM addresses"),
    ((2.5, 64), r"every dim \(the batch first\) must be an integer >= 1")])
def test_zoo_input_shapes_are_checked_before_export(shape, needle):
    with pytest.raises(FrontendError, match=rf"zoo model 'mlp': .*{needle}"):
        satc.compile("mlp", input_shapes={"x": shape})


def test_a_parameter_free_model_has_nothing_to_train():
    class Flat(nn.Module):
        def forward(self, x):
            return x.flatten(1)

    with pytest.raises(IRError, match="has nothing to train: it has no params; .* give the model a layer "
                                      "with weights"):
        satc.compile(Flat(), example_inputs=(torch.zeros(2, 1, 8, 8),))


@pytest.mark.parametrize("op,attrs,needle", [
    ("conv2d", {"stride": [0, 1], "padding": [0] * 4, "dilation": [1, 1], "groups": 1}, "stride 0"),
    ("conv2d", {"stride": [1, 1], "padding": [0] * 4, "dilation": [0, 1], "groups": 1}, "dilation 0"),
    ("conv2d", {"stride": [1, 1], "padding": [0, -1, 0, 0], "dilation": [1, 1], "groups": 1}, "padding -1"),
    ("maxpool2d", {"kernel": [2, 2], "stride": [0, 2], "padding": [0] * 4}, "stride 0"),
    ("avgpool2d", {"kernel": [0, 2], "stride": [1, 1], "padding": [0] * 4}, "kernel 0")])
def test_windows_below_one_are_shape_errors(op, attrs, needle):
    g = Graph("g")
    x = g.add_input("x", f32(2, 3, 8, 8))
    ins = [x, g.add_param("w", np.zeros((4, 3, 3, 3), np.float32))] if op == "conv2d" else [x]
    with pytest.raises(ShapeError, match=f"window {needle}: it must be an integer >= "):
        g.add1(op, ins, attrs)


def test_the_verifier_refuses_empty_and_oversized_values():
    g = Graph("g")
    g.add_input("x", f32(0, 4))
    with pytest.raises(IRError, match=r"input %x has shape \(0, 4\); every dim must be an integer >= 1"):
        verify(g)
    g = Graph("g")
    g.add_input("x", f32(2 ** 31, 4))
    with pytest.raises(IRError, match=r"input %x of shape \(2147483648, 4\) holds 34359738368 bytes"):
        verify(g)
