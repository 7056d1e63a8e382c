"""The command line as a hostile or careless user meets it: usage mistakes are one line, a closed
pipe ends quietly, no traceback anywhere."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

TFLC = [sys.executable, "-m", "tflc"]


@pytest.mark.parametrize("args, fragment", [
    (["compile"], "Missing argument 'MODEL'"),
    (["check", "m.tflite"], "Missing option '--target'"),
    (["check", "m.tflite", "-t", "cpu", "--min-coverage", "lots"], "--min-coverage 'lots'"),
    (["bench", "m.tflite", "--delegate-option", "novalue"], "expected KEY=VALUE"),
    (["runs", "list", "--kind", "nonsense"], "--kind"),
    (["no-such-command"], "No such command"),
])
def test_usage_errors_are_one_line_with_exit_2(args, fragment):
    proc = subprocess.run([*TFLC, *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tflc: error:"), proc.stderr
    assert fragment in lines[0]


def small_pipe() -> tuple[int, int]:
    """A pipe whose buffer holds one page, so a command's output outgrows it."""
    import fcntl

    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, getattr(fcntl, "F_SETPIPE_SZ", 1031), 4096)
    return read_end, write_end


def test_a_reader_that_closes_the_pipe_early_ends_the_command_quietly(tmp_path):
    from tflc.store import record

    registry = tmp_path / "registry"
    for i in range(80):  # `runs list` writes one line per run: many writes into a full pipe
        record("check", {"check.json": {"run": i}}, {"model_name": f"model{i}", "config": {}},
               registry, strict=True)
    read_end, write_end = small_pipe()
    writer = subprocess.Popen([*TFLC, "--registry", str(registry), "runs", "list"],
                              stdout=write_end, stderr=subprocess.PIPE)
    os.close(write_end)
    with os.fdopen(read_end, "rb", buffering=0) as reader:
        assert reader.read(1)  # like `| head -c 1`: read a little, then go away
    err = writer.stderr.read().decode()
    assert writer.wait(timeout=120) == 0, err
    assert err == "", err


def test_a_file_name_with_a_newline_keeps_the_error_on_one_line(tmp_path):
    path = tmp_path / "bad\nname\x1b[2J.tflite"
    path.write_bytes(b"not a flatbuffer at all")
    proc = subprocess.run([*TFLC, "check", str(path), "--target", "cpu"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tflc: error:"), proc.stderr
    assert "\x1b" not in proc.stderr and "bad\\nname" in lines[0]


def test_an_overlong_export_name_is_refused_before_any_work(tmp_path):
    proc = subprocess.run([*TFLC, "export", str(tmp_path / "m.tflite"), "-o", str(tmp_path / "out"),
                           "--name", "a" * 300], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--name" in lines[0] and "at most 64" in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()
