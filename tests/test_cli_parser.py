"""The command line's parser: every verb's every argument explained, every default shown."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from mvr.cli.commands import COMMANDS
from mvr.cli.parser import build_parser


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """The parser and every verb's, nested verbs (``dataset build``) included."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for verb in action.choices.values():
                yield from _parsers(verb)


def _help_of(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """An argument's entry in its parser's --help, on one line."""
    formatter = parser.formatter_class(prog=parser.prog)
    formatter.add_argument(action)
    return " ".join(formatter.format_help().split())


@pytest.mark.parametrize("catalog", [None, "/srv/videos/catalog"])
def test_every_argument_has_help_and_every_default_is_shown(catalog: str | None,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # $MVR_CATALOG, read when the parser is built, is --catalog's default: shown when set, required when not.
    if catalog is None:
        monkeypatch.delenv("MVR_CATALOG", raising=False)
    else:
        monkeypatch.setenv("MVR_CATALOG", catalog)
    parser = build_parser(COMMANDS)
    verbs, defaults = set(), set()
    for sub in _parsers(parser):
        verbs.add(sub.prog)
        sub.format_help()  # renders (a stray % in a help text would raise here)
        for action in sub._actions:
            where = f"{sub.prog} {'/'.join(action.option_strings) or action.dest}"
            assert action.help and action.help != argparse.SUPPRESS, f"{where}: no help"
            for choice in getattr(action, "_choices_actions", []):  # each verb's line in its parent's help
                assert choice.help, f"{sub.prog} {choice.dest}: no help"
            shown = _help_of(sub, action)
            assert shown.count("(default") <= 1, f"{where}: its default said twice"
            if action.nargs != 0 and action.default not in (None, argparse.SUPPRESS, []):
                assert f"(default: {action.default})" in shown, f"{where}: default not shown"
                defaults.add(where)
    assert {f"mvr {verb}" for verb in COMMANDS} <= verbs
    assert {"mvr query --modality", "mvr features --modality", "mvr dataset build --mode",
            "mvr dataset build --size", "mvr index --jobs", "mvr serve --port", "mvr mix -n", "mvr path -n"} <= defaults
    assert ("mvr list --catalog" in defaults) == (catalog is not None)


def test_defaults_are_written_one_way(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MVR_CATALOG", "/srv/videos/catalog")
    for sub in _parsers(build_parser(COMMANDS)):
        shown = " ".join(sub.format_help().split())
        assert "(default " not in shown.replace("(default: ", ""), f"{sub.prog}: a default in another style"
        if sub.prog == "mvr index":
            assert "--jobs JOBS videos processed at once, each in its own worker process (default: 1)" in shown
            assert ("--catalog CATALOG catalog folder; $MVR_CATALOG gives the default (default: /srv/videos/catalog)"
                    in shown)
