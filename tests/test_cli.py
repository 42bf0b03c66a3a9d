"""The `cnnbench` command itself: every option of every subcommand says what it does and its default."""

from __future__ import annotations

import argparse

import pytest

from cnnbench import cli
from fixtures import run_cnnbench

PARSER = cli.build_parser()
SUBCOMMANDS = next(a for a in PARSER._actions if isinstance(a, argparse._SubParsersAction)).choices


@pytest.mark.parametrize("command", list(SUBCOMMANDS))
def test_every_option_has_help_with_its_default(command):
    options = [a for a in SUBCOMMANDS[command]._actions
               if a.option_strings and not isinstance(a, argparse._HelpAction)]
    assert options
    for action in options:
        text = action.help or ""
        # a default is shown by argparse (%(default)s) or said in words when it is computed
        assert "%(default)s" in text or "(default: " in text or "(required" in text, action.option_strings


def test_version_and_the_cost_help_say_what_is_true(capsys):
    from cnnbench import __version__
    from cnnbench.evaluation.latency import LATENCY

    code, out, _ = run_cnnbench(capsys, "--version")
    assert code == 0 and out == f"cnnbench {__version__}\n"
    code, out, _ = run_cnnbench(capsys, "cost", "--help")
    assert code == 0 and f"never under {LATENCY.min_calls})" in " ".join(out.split())
