"""Tests of the IR passes, and the check they share: a rewrite keeps the step's numbers."""

from __future__ import annotations

import numpy as np

import satc


def assert_same_interpretation(before, after, feeds) -> None:
    """Interpret two training graphs on the same feeds and state; assert bit-identical results."""
    state = before.initial_state()
    a, b = satc.interpret(before, feeds, state), satc.interpret(after, feeds, state)
    assert a.new_state.keys() == b.new_state.keys()
    for k in a.new_state:
        np.testing.assert_array_equal(a.new_state[k], b.new_state[k], err_msg=k)
    for k in a.outputs:
        np.testing.assert_array_equal(a.outputs[k], b.outputs[k], err_msg=k)
