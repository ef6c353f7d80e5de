"""`uvidm`: the backend's command line (weights, doctor, generate, serve)."""

from __future__ import annotations

import argparse
import logging
import sys

from uvidm_backend import __version__
from uvidm_backend.commands import doctor, generate, serve, weights


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="uvidm", description="UV-IDM for Blender: one photo in, a textured head out.")
    parser.add_argument("--version", action="version", version=f"uvidm {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    commands = parser.add_subparsers(dest="command", required=True)
    generate.add_parser(commands)
    serve.add_parser(commands)
    weights.add_parser(commands)
    doctor.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
