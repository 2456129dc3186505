"""The `fusion-serve` command: serve, make-data, train, compare.

Only the sub-command being run is built and imported: `fusion-serve --help` and `serve` import nothing from
training (scikit-learn and matplotlib come with the `[train]` extra, which a serving install lacks), and a
sub-command whose extra is missing says so in one line instead of a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from app.errors import UsageError

USAGE_ERROR = 2  # argparse's exit status for a command line it refuses

# Top-level modules each extra brings; an import of one of them failing means that extra is missing.
_EXTRA_MODULES = {"train": frozenset({"sklearn", "matplotlib"})}


@dataclass(frozen=True)
class Command:
    """A sub-command: its one-line help, the module that declares and runs it, and the extra it needs."""

    name: str
    help: str
    module: str
    configure: str  # name of `fn(parser)` in `module` that adds the sub-command's arguments
    run: str  # name of `fn(args) -> int | Path | None` in `module`
    extra: str | None = None


COMMANDS = {
    c.name: c
    for c in (
        Command("serve", "run the HTTP service on the models folder", "app.cli", "_configure_serve", "_run_serve"),
        Command(
            "make-data",
            "generate the synthetic tri-modal digits data set",
            "app.training.make_data",
            "add_arguments",
            "run",
        ),
        Command(
            "train",
            "train a fusion model on a JSONL manifest and write an artifact",
            "app.training.train",
            "add_arguments",
            "run",
            extra="train",
        ),
        Command(
            "compare",
            "add the fusion-type and single-modality comparison to a trained artifact",
            "app.training.train",
            "add_compare_arguments",
            "run_compare",
            extra="train",
        ),
    )
}


class MissingExtra(Exception):
    """A sub-command's optional dependencies are not installed."""


def _load(command: Command, attribute: str) -> Callable[..., object]:
    """`attribute` of the command's module, imported now; MissingExtra if its extra is not installed."""
    try:
        module = importlib.import_module(command.module)
    except ModuleNotFoundError as exc:
        root = (exc.name or "").split(".")[0]
        if command.extra and root in _EXTRA_MODULES.get(command.extra, ()):
            raise MissingExtra(
                f"fusion-serve {command.name} needs the [{command.extra}] extra: "
                f"pip install -e '.[{command.extra}]'"
            ) from None
        raise
    fn: Callable[..., object] = getattr(module, attribute)
    return fn


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    """The command-line parser, with the arguments of the sub-command named in `argv` (only that one)."""
    parser = argparse.ArgumentParser(prog="fusion-serve", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(COMMANDS) + "}")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for command in COMMANDS.values():
        if command.name != chosen:
            sub.add_parser(command.name, help=command.help, add_help=False)
            continue
        p = sub.add_parser(
            command.name, help=command.help, description=command.help, formatter_class=_Formatter
        )
        _load(command, command.configure)(p)
    return parser


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Epilogs keep their line breaks."""


def _configure_serve(parser: argparse.ArgumentParser) -> None:
    from app.config import settings_help

    parser.add_argument("--host", default=None, help="listen address (overrides FUSION_HOST)")
    parser.add_argument("--port", type=int, default=None, help="listen port (overrides FUSION_PORT)")
    parser.add_argument(
        "--models-dir", type=Path, default=None, help="folder of model artifacts (overrides FUSION_MODELS_DIR)"
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="front-end processes; 0: one per CPU (overrides FUSION_WORKERS)"
    )
    parser.epilog = "settings (environment variables, with their defaults):\n" + settings_help()


def _run_serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from app.config import Settings, setting_errors

    overrides = {
        name: value
        for name, value in (
            ("host", args.host), ("port", args.port), ("models_dir", args.models_dir), ("workers", args.workers)
        )
        if value is not None
    }
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        print(f"fusion-serve serve: {setting_errors(exc)}", file=sys.stderr)
        return USAGE_ERROR
    from app.http.server import serve

    return serve(settings)


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        args = build_parser(args_list).parse_args(args_list)
        command = COMMANDS[args.command]
        result = _load(command, command.run)(args)
    except MissingExtra as exc:
        print(exc, file=sys.stderr)
        return USAGE_ERROR
    except UsageError as exc:  # a flag, manifest or setting the user must change: one line, no traceback
        print(f"fusion-serve: error: {exc.message}", file=sys.stderr)
        return USAGE_ERROR
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
