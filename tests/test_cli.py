"""The command line: help without importing torch, help texts as printed, bare subcommands."""

import subprocess
import sys

import pytest

from imu_fast.cli import main

NO_TORCH = """
import sys
from imu_fast.cli import main
try:
    main({argv!r})
except SystemExit:
    pass
assert "torch" not in sys.modules, "torch was imported"
"""


@pytest.mark.parametrize("argv", [["--help"], ["demo", "--help"], ["bench", "--help"], ["bench", "vision", "--help"],
                                  ["bench", "lm", "--help"], ["unlearn", "--help"], ["influence", "--help"]])
def test_help_does_not_import_torch(argv):
    run = subprocess.run([sys.executable, "-c", NO_TORCH.format(argv=argv)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "usage: imu-fast" in run.stdout


def test_help_texts_print_percent_signs_once(capsys):
    for argv in (["--help"], ["demo", "--help"], ["bench", "vision", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        out = capsys.readouterr().out
        assert "%%" not in out and "10%" in out, argv


def test_bare_bench_prints_the_bench_help(capsys):
    assert main(["bench"]) == 2
    err = capsys.readouterr().err
    assert "usage: imu-fast bench" in err and "vision" in err and "lm" in err


def test_bare_command_line_prints_the_top_help(capsys):
    assert main([]) == 2
    assert "usage: imu-fast [-h] COMMAND" in capsys.readouterr().err
