"""The `rolora` command: dispatch, usage on bad input, non-zero exits."""

import subprocess
import sys

import pytest

from rolora.cli import BENCHMARKS, COMMANDS, main


@pytest.mark.parametrize(
    "argv",
    [[], ["no-such-command"], ["bench"], ["bench", "no-such-bench"], ["--no-such-flag"]],
)
def test_bad_invocation_prints_usage_and_fails(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code != 0
    assert "usage: rolora" in capsys.readouterr().err


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_unknown_option_of_a_subcommand_fails_with_its_usage(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--no-such-option"])
    assert exc.value.code != 0
    assert f"usage: rolora {command}" in capsys.readouterr().err


@pytest.mark.parametrize("bench", sorted(BENCHMARKS))
def test_unknown_option_of_a_benchmark_fails_with_its_usage(bench, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", bench, "--no-such-option"])
    assert exc.value.code != 0
    assert "usage: rolora bench" in capsys.readouterr().err


def test_top_level_help_lists_every_subcommand(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in [*COMMANDS, "bench"]:
        assert name in out


def test_console_script_is_installed_and_exits_nonzero_on_unknown_command():
    proc = subprocess.run(
        [sys.executable, "-m", "rolora", "frobnicate"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr
