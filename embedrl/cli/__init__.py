"""`embedrl <group> <command> ...`: the command line only parses arguments and calls library code.

One module per group here (`embedrl.cli.data`, `.train`, `.index`, `.eval`, `.demo`, `.serve`), each with
`register(subparsers)`. This package is the composition root: it also lists, by name, the lab's
commands (`embedrl.lab.cli`, `embedrl.lab.bench`: the quickstart, presets, the synthetic
benchmark, the ablation, benchmarks), which add themselves to the same groups; the library never
imports the lab. `main(argv)` takes a list, so tests call commands in-process.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable

from embedrl import __version__
from embedrl.core.errors import EmbedrlError
from embedrl.core.io import DISK_ERRNOS, write_failed

# "module:function" taking the top-level subparsers, called in this order: `--help` lists groups in
# the order they are first made, and a group's commands in the order they are added to it.
REGISTER: list[str] = [
    "embedrl.lab.cli:register_quickstart",
    "embedrl.cli.data:register",
    "embedrl.cli.train:register",
    "embedrl.cli.index:register",
    "embedrl.cli.eval:register",
    "embedrl.cli.demo:register",
    "embedrl.cli.serve:register",
    "embedrl.lab.bench:register",
    "embedrl.lab.cli:register",
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
        from embedrl.core.config import describe_fields

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
    for entry in REGISTER:
        module, _, function = entry.partition(":")
        getattr(importlib.import_module(module), function)(sub)
    return parser


def passive_cpu_threads() -> None:
    """Let torch's OpenMP threads sleep between operations instead of spinning, unless the user chose.

    A spinning thread holds a core that the DataLoader worker, the tokenizer or another job on the
    machine needs: on a shared CPU that can double a run's time. On an idle one training and encoding
    run as fast; only tiny models' generation pays for the wake-ups (lab notebook, entry 46). libgomp
    reads the setting when torch loads, so it is made before any command imports torch; child
    processes inherit it.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(argv: list[str] | None = None) -> int:
    passive_cpu_threads()
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
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per HTTP request drowns remote runs' logs
    try:
        return int(args.func(args) or 0)
    except EmbedrlError as e:
        print(f"embedrl: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # a full disk met outside embedrl's own writers (a library saving a checkpoint)
        if e.errno not in DISK_ERRNOS:
            raise
        print(f"embedrl: error: {write_failed(e.filename, e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("embedrl: interrupted", file=sys.stderr)
        return 130


def add_format_option(parser) -> None:
    """`--format NAME`: the embedding format of a VLM embedder (every command that loads one)."""
    from embedrl.models.formats import FORMATS

    parser.add_argument("--format", choices=list(FORMATS), default=None, metavar="NAME",
                        help="embedding format of a VLM embedder: " + ", ".join(FORMATS) + " (default: the one "
                             "its embedrl.json records or its files identify; open_clip models have none)")


def add_prompt_set_option(parser) -> None:
    """`--prompt-set NAME`: the prompts a reasoner writes T-CoTs with."""
    from embedrl.models.prompts import PROMPT_SETS

    parser.add_argument("--prompt-set", choices=list(PROMPT_SETS), default=None, metavar="NAME",
                        help="reasoner prompt set: " + ", ".join(PROMPT_SETS) + " (embed-rl: the paper's T-CoT "
                             "prompts; default: the one the reasoner records, else default)")


def add_group(sub, name: str, help: str | None = None) -> argparse._SubParsersAction:
    """The sub-parsers of command group `name`, made (with `help`) the first time it is asked for."""
    if name in sub.choices:
        return sub.choices[name].commands
    group = sub.add_parser(name, help=help, description=help)
    group.set_defaults(group_parser=group)
    group.commands = group.add_subparsers(dest="command", metavar="<command>", parser_class=Parser)
    return group.commands


def add_rerank_args(parser: argparse.ArgumentParser, default_model: str) -> None:
    """`--rerank NAME --rerank-k K [--rerank-model SPEC] [--rerank-option KEY=VALUE ...]` (`load_rerank_args`)."""
    from embedrl.rerank import RERANKERS

    parser.add_argument("--rerank", choices=list(RERANKERS), default=None,
                        help="rerank the first stage's top --rerank-k with a chat model: lcr (confidence of sampled "
                             "answers; K samples a candidate) or yes-prob (P(Yes) to 'does it match?'; one forward)")
    parser.add_argument("--rerank-k", type=int, default=10, help="how many of the first stage's top to rerank (10)")
    parser.add_argument("--rerank-model", default=None,
                        help=f"the reranker's model: a local model dir / Hub id or openai:BASE_URL#MODEL "
                             f"(default: {default_model})")
    parser.add_argument("--rerank-option", action="append", default=[], metavar="KEY=VALUE",
                        help="a reranker setting, e.g. t_query=0.8, samples=5, entailment=exact (lcr) or "
                             "prompt=... (yes-prob); repeatable")


def load_rerank_args(args, default_model, cache=True):
    """The reranker `add_rerank_args` asked for (None without --rerank); `default_model`: a spec or a loaded
    Reasoner, used when --rerank-model is not given."""
    if not args.rerank:
        return None
    if args.rerank_k < 1:
        raise EmbedrlError("--rerank-k must be at least 1")
    model = args.rerank_model or default_model
    if model is None:
        raise EmbedrlError(f"--rerank {args.rerank} needs a model: give --rerank-model (or a reasoner)")
    from embedrl.rerank import load_reranker

    return load_reranker(args.rerank, model, args.rerank_option, cache=cache)


if __name__ == "__main__":
    sys.exit(main())
