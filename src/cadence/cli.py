"""`cadence` command line: one sub-command per part, each module imported only when used."""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module with `add_arguments(parser)` and `run(args) -> int`, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "generate": ("cadence.engine.cli", "generate text offline and stream it to the terminal"),
    "serve": ("cadence.server.cli", "serve an OpenAI-compatible HTTP API"),
    "bench": ("cadence.bench.cli", "load-test and measure any OpenAI-compatible endpoint"),
    "plan": ("cadence.plan.cli", "place a model on a heterogeneous GPU cluster (Helix)"),
    "profile": ("cadence.sim.profile_cli", "profile model operators on a GPU for the simulator"),
    "sim": ("cadence.sim.cli", "simulate a deployment on a CPU from operator profiles"),
    "search": ("cadence.sim.search_cli", "search deployment configurations with the simulator"),
}


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cadence", description=__doc__)
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        args = _top_parser().parse_args(argv)
        if args.version:
            from cadence import __version__

            print(__version__)
            return 0
        _top_parser().print_help()
        return 0 if not argv else 2
    name, rest = argv[0], argv[1:]
    module_name, help_text = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("cadence"):
            print(f"cadence {name}: not available in this build ({exc.name} is missing)", file=sys.stderr)
            return 2
        raise
    parser = argparse.ArgumentParser(prog=f"cadence {name}", description=help_text)
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
