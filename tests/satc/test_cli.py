"""The satc command line, called in-process."""

from __future__ import annotations

import re

import pytest

from satc import cli
from satc.cli import main


def test_ir_prints_stages(capsys):
    assert main(["ir", "mlp", "--stage", "wu"]) == 0
    out = capsys.readouterr().out
    assert "// ---- WU ----" in out and "// ---- FF ----" not in out
    # each Linear's weight and bias gradient as one fused node (passes/fusion.py)
    assert out.count("matmul_bias_grad(") == 3 and " bias_grad(" not in out


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


def test_compile_run_asm_schedule_round_trip(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["compile", "mlp", "--sparsity", "bdwp:2:8", "--hw", "sat-small", "--batch", "8",
                 "-o", str(out)]) == 0
    assert (out / "mlp.satbin").exists() and (out / "mlp.s").exists()
    assert "per step" not in capsys.readouterr().out
    assert main(["run", str(out / "mlp.satbin"), "--steps", "3"]) == 0
    run_out = capsys.readouterr().out
    losses = [float(line.split("loss")[1].split()[0]) for line in run_out.splitlines() if "loss" in line]
    assert len(losses) == 3 and all(0 < v < 5 for v in losses)
    assert main(["asm", str(out / "mlp.satbin")]) == 0
    asm = capsys.readouterr().out.splitlines()
    assert asm[0].startswith(("load", "gemm", "vec")) and "/FF/" in asm[0]
    sched = tmp_path / "sched.satbin"
    assert main(["schedule", str(out / "mlp.satbin"), "--method", "list", "--quiet",
                 "--trace", str(tmp_path / "t.json"), "--gantt", str(tmp_path / "g.png"),
                 "-o", str(sched)]) == 0
    report = capsys.readouterr().out
    assert "makespan" in report and "lower bound" in report
    assert (tmp_path / "t.json").stat().st_size > 0 and (tmp_path / "g.png").stat().st_size > 0
    assert main(["run", str(sched), "--steps", "3"]) == 0
    again = [float(line.split("loss")[1].split()[0]) for line in capsys.readouterr().out.splitlines()
             if "loss" in line]
    assert again == losses, "the scheduled program trains identically"


def test_run_rejects_data_of_the_wrong_shape(tmp_path, capsys):
    out = tmp_path / "o"
    # the MLP flattens 64 features, so 1x4x16 images compile too - but digits are 1x8x8
    assert main(["compile", "mlp", "--hw", "sat-small", "--input-shape", "x=4,1,4,16", "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["run", str(out / "mlp.satbin"), "--steps", "1"]) == 2
    assert "--data digits gives (1, 8, 8) images, the program takes (1, 4, 16)" in capsys.readouterr().err
    assert main(["run", str(out / "mlp.satbin"), "--steps", "1", "--data", "synthetic"]) == 0


def test_demo_compiles_trains_and_schedules(capsys, monkeypatch):
    monkeypatch.setattr(cli, "DEMO_AT_SCALE", ("mlp", 8))         # the closing comparison, small
    assert main(["demo", "mlp", "--batch", "8", "--steps", "2", "--time-limit", "1"]) == 0
    out = capsys.readouterr().out
    scale = out[out.index("== at scale: mlp batch 8"):].splitlines()
    assert scale[-1].startswith("speedup ") and float(scale[-1].split()[1][:-1]) > 0
    steps = [line for line in out.splitlines() if line.startswith("step ")]
    assert len(steps) == 2
    emu, ref = float(steps[0].split()[4]), float(steps[0].split()[7])
    assert abs(emu - ref) < 1e-2 * abs(ref), "mixed-precision emulator tracks the interpreter"
    assert "operation reduction" in out and "speedup" in out and "makespan" in out


def test_compile_no_interleave_clears_the_gemm_interleave_bits(tmp_path, capsys):
    from satc.backends.sat.program import Program
    for flag, bit in (([], 1), (["--no-interleave"], 0)):
        out = tmp_path / f"o{bit}"
        assert main(["compile", "mlp", "--hw", "sat-small", "--batch", "8", "-o", str(out), *flag]) == 0
        gemms = [i for i in Program.load(out / "mlp.satbin").instructions if i.op == "gemm"]
        assert gemms and {i.interleave for i in gemms} == {bit}
    capsys.readouterr()


def test_bench_paper_writes_the_results_page(tmp_path, capsys):
    out = tmp_path / "sat.md"
    assert main(["bench", "paper", "--models", "mlp:8", "--modes", "dense,bdwp:2:8", "--hw", "sat-small",
                 "--out", str(out), "--cache", str(tmp_path / "cache")]) == 0
    text = out.read_text()
    assert "| mlp | 8 | dense |" in text and "| mlp | 8 | bdwp:2:8 |" in text
    assert "BDWP 2:8 average speedup over dense" in text and "## Ablations" in text
    assert "## Sensitivity" in text and "no interleave mapping" in text
    roof = text.split("## Roofline per phase")[1].split("## Energy")[0]
    for mode in ("dense", "bdwp:2:8"):
        cells = next(ln for ln in roof.splitlines() if ln.startswith(f"| mlp | 8 | {mode} |")).split("|")
        makespan, total = (int(c.strip().replace(",", "")) for c in (cells[4], cells[-3]))
        bounds = [int(c.split("(")[0].strip().replace(",", "")) for c in cells[5:-3] if "(" in c]
        assert total == sum(bounds) and makespan >= total        # no schedule beats its roofline
        assert float(cells[-2]) == pytest.approx(makespan / total, abs=1e-3)
    assert out.with_suffix(".png").stat().st_size > 0
    capsys.readouterr()


def test_schedule_refuses_a_missing_output_folder_before_solving(tmp_path, capsys):
    assert main(["compile", "mlp", "--hw", "sat-small", "-o", str(tmp_path)]) == 0
    prog = str(tmp_path / "mlp.satbin")
    for flag in ("-o", "--trace", "--gantt"):
        missing = str(tmp_path / "no" / "such" / "out.file")
        assert main(["schedule", prog, "--method", "list", "--quiet", flag, missing]) == 2
        err = capsys.readouterr().err
        assert f"{flag} {missing}: folder" in err and "does not exist" in err


def test_compile_report_and_schedule_print_the_roofline(tmp_path, capsys):
    assert main(["compile", "mlp", "--hw", "sat-small", "-o", str(tmp_path)]) == 0
    report = (tmp_path / "mlp.report.txt").read_text()
    assert "roofline (program order):" in report and "makespan / roofline = " in report
    capsys.readouterr()
    assert main(["schedule", str(tmp_path / "mlp.satbin"), "--method", "list", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "roofline:" in out and "BP+WU" in out and "makespan / roofline = " in out


def test_ops_coverage_lists_every_op_with_its_status(capsys):
    assert main(["ops", "cnn", "--coverage"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^conv2d_grad_weight +sat ", out, re.M) and "maxpool2d_grad" in out
    # batchnorm + relu and the two batchnorm gradient halves are fused (passes/fusion.py)
    assert re.search(r"^batchnorm_relu +sat ", out, re.M) and "batchnorm_grad_input" not in out
    assert "ops: 16 sat, 0 interpreter, 0 unsupported" in out
