"""The `fusion-serve` command: serve, make-data, train, compare."""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence


def _serve(args: argparse.Namespace) -> int:
    from app.config import get_settings
    from app.server import serve

    return serve(get_settings(), host=args.host, port=args.port)


def _usage_errors_end_in_one_line(run: Callable[[], object]) -> int:
    """Run a training command; a flag, manifest or setting the user must change ends in one line, exit status 2."""
    from app.errors import UsageError

    try:
        run()
    except UsageError as exc:
        print(f"fusion-serve: error: {exc.message}", file=sys.stderr)
        return 2
    return 0


def _make_data(args: argparse.Namespace) -> int:
    from app.training import make_data

    return _usage_errors_end_in_one_line(lambda: make_data.run(args))


def _train(args: argparse.Namespace) -> int:
    from app.training import train

    return _usage_errors_end_in_one_line(lambda: train.run(args))


def _compare(args: argparse.Namespace) -> int:
    from app.training import train

    return _usage_errors_end_in_one_line(lambda: train.run_compare(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fusion-serve", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP service (settings from FUSION_* environment variables)")
    serve.add_argument("--host", default=None, help="overrides FUSION_HOST")
    serve.add_argument("--port", type=int, default=None, help="overrides FUSION_PORT")
    serve.set_defaults(func=_serve)

    from app.training import make_data, train

    md = sub.add_parser("make-data", help="generate the synthetic tri-modal digits data set")
    make_data.add_arguments(md)
    md.set_defaults(func=_make_data)

    tr = sub.add_parser("train", help="train a fusion model on a JSONL manifest and write an artifact")
    train.add_arguments(tr)
    tr.set_defaults(func=_train)

    cmp = sub.add_parser("compare", help="add the fusion-type and single-modality comparison to a trained artifact")
    train.add_compare_arguments(cmp)
    cmp.set_defaults(func=_compare)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
