"""Options shared by several commands."""

from __future__ import annotations

import argparse

from uvidm_backend.pipeline.options import FAST_MODES
from uvidm_backend.registry import BFM_ENV, WEIGHTS_ENV, ModelPaths


def add_model_folder_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", metavar="DIR",
                        help=f"network weights folder (default: ${WEIGHTS_ENV} or ./weights)")
    parser.add_argument("--bfm", metavar="DIR", help=f"face model folder (default: ${BFM_ENV} or ./BFM)")


def model_paths(args: argparse.Namespace) -> ModelPaths:
    return ModelPaths.resolve(args.weights, args.bfm)


def add_fast_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fast", choices=FAST_MODES, default="auto",
                        help="GPU speed-ups: off (float32), graph (bf16 + CUDA graph), compile (+ torch.compile: "
                             "fastest, one to two minutes to start); auto: graph on CUDA, and `serve` compiles in "
                             "the background and switches to compile when ready (default: %(default)s)")
