"""`embedrl <group> <command> ...`: the command line only parses arguments and calls library code.

Each group lives in a `commands` module next to the code it drives and exposes
`register(subparsers)`; a group is listed here (and so in `--help`) only once it does
something real. `main(argv)` takes a list, so tests call commands in-process.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable

from embedrl import __version__
from embedrl.errors import EmbedrlError

# (group name, module defining register(subparsers)), in the order `--help` lists them.
GROUPS: list[tuple[str, str]] = [
    ("quickstart", "embedrl.quickstart_commands"),
    ("data", "embedrl.data.commands"),
    ("presets", "embedrl.models.commands"),
    ("train", "embedrl.train.commands"),
    ("index", "embedrl.index.commands"),
    ("eval", "embedrl.eval.commands"),
    ("demo", "embedrl.demo.commands"),
    ("bench", "embedrl.bench"),
]


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one line (no usage dump), exit code 2.

    `lazy_epilog`, if set, is called for the epilog only when help is shown, so a command can list
    what its heavy modules define (a config class's fields) without importing them on every run.
    """

    lazy_epilog: Callable[[], str] | None = None

    def error(self, message: str):  # noqa: D102
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")

    def format_help(self) -> str:  # noqa: D102
        if self.lazy_epilog is not None and self.epilog is None:
            self.epilog = self.lazy_epilog()
        return super().format_help()


def lists_config_fields(parser: Parser, module: str, config_class: str) -> None:
    """A config-driven command's `--help` ends with its config class's own fields (`module.config_class`,
    imported only when help is shown); its description keeps the layout help gives it here."""
    import textwrap

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = textwrap.fill(parser.description or "", 88)

    def fields() -> str:
        from embedrl.config import describe_fields

        return describe_fields(getattr(importlib.import_module(module), config_class))

    parser.lazy_epilog = fields


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="embedrl",
        description="Train, index, serve and evaluate reasoning-driven multimodal embeddings.",
    )
    parser.add_argument("--version", action="version", version=f"embedrl {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only log warnings and errors")
    sub = parser.add_subparsers(dest="group", metavar="<group>", parser_class=Parser)
    for _name, module in GROUPS:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        # A group without a command: show that group's help (or the top-level one).
        (getattr(args, "group_parser", None) or parser).print_help()
        return 2 if args.group else 0
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.func(args) or 0)
    except EmbedrlError as e:
        print(f"embedrl: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("embedrl: interrupted", file=sys.stderr)
        return 130


def add_group(sub, name: str, help: str) -> argparse._SubParsersAction:
    """Add a command group; returns its sub-parsers for the group's commands."""
    group = sub.add_parser(name, help=help, description=help)
    group.set_defaults(group_parser=group)
    return group.add_subparsers(dest="command", metavar="<command>", parser_class=Parser)


if __name__ == "__main__":
    sys.exit(main())
