from __future__ import annotations

import subprocess
import sys

from splitinfer import cli


def test_help_lists_every_command(capsys) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("partition", "serve", "edge", "demo", "profile", "export-triton"):
        assert name in out


def test_unknown_command_is_named(capsys) -> None:
    assert cli.main(["sevre"]) == 2
    err = capsys.readouterr().err
    assert "'sevre'" in err and "serve" in err


def test_console_script_is_installed() -> None:
    result = subprocess.run([sys.executable, "-m", "splitinfer.cli", "--version"], capture_output=True, text=True, check=True)
    assert result.stdout.startswith("splitinfer ")
