"""The `fusion-serve` command: serve, make-data, train, compare."""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence


def _serve(args: argparse.Namespace) -> int:
    from app.config import get_settings
    from app.server import serve

    return serve(get_settings(), host=args.host, port=args.port)


def _make_data(args: argparse.Namespace) -> int:
    from app.training import make_data

    make_data.run(args)
    return 0


def _train(args: argparse.Namespace) -> int:
    from app.training import train

    train.run(args)
    return 0


def _compare(args: argparse.Namespace) -> int:
    from app.training import train

    train.run_compare(args)
    return 0


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
