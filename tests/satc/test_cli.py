"""The satc command line, called in-process."""

from __future__ import annotations

from satc.cli import main


def test_ir_prints_stages(capsys):
    assert main(["ir", "mlp", "--stage", "wu"]) == 0
    out = capsys.readouterr().out
    assert "// ---- WU ----" in out and "// ---- FF ----" not in out
    assert "matmul(" in out and "bias_grad(" in out


def test_ops_table_with_sparsity(capsys):
    assert main(["ops", "cnn", "--sparsity", "bdwp:2:8", "--totals", "--report"]) == 0
    out = capsys.readouterr().out
    assert "stem (image input)" in out and "2:8 along Ci" in out and "2:8 along Co" in out
    assert "operation reduction:" in out


def test_zoo_lists_models(capsys):
    assert main(["zoo"]) == 0
    out = capsys.readouterr().out
    assert "resnet50" in out and "25.557" in out and "vit_tiny" in out


def test_errors_are_one_line_with_exit_code_2(capsys):
    assert main(["ir", "no_such_model"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("satc: error: 'no_such_model' is neither an ONNX file nor a zoo model")
    assert main(["ops", "mlp", "--sparsity", "bdwp:3:6"]) == 2
    assert "power of two" in capsys.readouterr().err


def test_hw_show_and_list(capsys):
    assert main(["hw", "show", "sat-vcu1525"]) == 0
    out = capsys.readouterr().out
    assert "32x32 USPEs" in out and "peak dense      2048 MAC/cycle" in out and "peak 2:8" in out
    assert main(["hw", "list"]) == 0
    assert "sat-small" in capsys.readouterr().out
    assert main(["hw", "show", "no-such-preset"]) == 2
