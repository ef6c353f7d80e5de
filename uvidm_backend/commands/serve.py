"""`uvidm serve`: the backend as a local HTTP service (FastAPI + uvicorn), see docs/API.md."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from uvidm_backend.commands.common import add_fast_option, add_model_folder_options, model_paths
from uvidm_backend.pipeline.images import MAX_PIXELS
from uvidm_backend.service.settings import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    TOKEN_ENV,
    ServiceSettings,
    SettingsError,
    default_jobs_dir,
)

log = logging.getLogger(__name__)


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("serve", help="run the backend as a local HTTP service (docs/API.md)",
                                 description="Serves the HTTP API of docs/API.md. The models load once, in the "
                                             "background, and stay warm; jobs run one at a time.")
    add_model_folder_options(parser)
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help="address to listen on (default: %(default)s; any other needs a token)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default: %(default)s)")
    parser.add_argument("--token", default=None,
                        help=f"require 'Authorization: Bearer TOKEN' (default: ${TOKEN_ENV}; prefer the variable, "
                             "a command line is visible to other users of the machine)")
    parser.add_argument("--jobs-dir", metavar="DIR", default=None,
                        help=f"where jobs and results are kept (default: {default_jobs_dir()})")
    parser.add_argument("--queue-capacity", type=int, default=16,
                        help="jobs that may wait; more are refused with 429 (default: %(default)s)")
    parser.add_argument("--keep-hours", type=float, default=24.0,
                        help="delete finished jobs this long after they finished (default: %(default)s)")
    parser.add_argument("--max-upload-mb", type=float, default=30.0,
                        help="largest photo upload in MB (default: %(default)s)")
    parser.add_argument("--max-megapixels", type=float, default=MAX_PIXELS / 1e6,
                        help="largest photo in megapixels, at most the default (default: %(default)g)")
    parser.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                        help="a host name clients may use besides localhost and the bound address (the Host "
                             "header; repeat for more, '*' for any); others get 403")
    parser.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                        help="a web page origin (such as http://localhost:3000) allowed to call the API, with "
                             "CORS (repeat for more, '*' for any); requests from other pages get 403")
    parser.add_argument("--header-timeout", type=float, default=10.0, metavar="S",
                        help="seconds a request's headers may take to arrive (default: %(default)g)")
    parser.add_argument("--body-timeout", type=float, default=120.0, metavar="S",
                        help="seconds a request's body (the upload) may take to arrive (default: %(default)g)")
    parser.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda, cuda:1 ... (default: auto)")
    add_fast_option(parser)
    parser.set_defaults(run=run_serve)


def settings_from_args(args: argparse.Namespace) -> ServiceSettings:
    return ServiceSettings(host=args.host, port=args.port, token=args.token or os.environ.get(TOKEN_ENV),
                           jobs_dir=args.jobs_dir or default_jobs_dir(), queue_capacity=args.queue_capacity,
                           keep_hours=args.keep_hours, max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
                           max_pixels=round(args.max_megapixels * 1e6), allow_hosts=tuple(args.allow_host),
                           allow_origins=tuple(args.allow_origin), header_timeout_s=args.header_timeout,
                           body_timeout_s=args.body_timeout)


def run_serve(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
        settings.check_exposure()
    except SettingsError as error:
        print(f"uvidm serve: {error}", file=sys.stderr)
        return 2
    paths = model_paths(args)
    missing = paths.missing()
    if missing:  # the service still starts: health says what is missing, POST /v1/models/download gets it
        print(f"uvidm serve: model files missing: {', '.join(file.name for file in missing)}. Jobs wait until "
              f"they are there: POST /v1/models/download, or `uvidm weights download --weights {paths.weights} "
              f"--bfm {paths.bfm}`", file=sys.stderr)

    try:
        from uvidm_backend.service.app import create_app
        from uvidm_backend.service.model_download import ModelDownloads
        from uvidm_backend.service.server import build_server
        from uvidm_backend.service.worker import ModelHolder
    except ImportError as error:  # the service's packages are not needed by the other commands
        print(f"uvidm serve: {error.name or error} is not installed: pip install fastapi uvicorn python-multipart",
              file=sys.stderr)
        return 1

    def load():  # in the loader thread: the service answers (health: loading) while the models load
        from uvidm_backend.pipeline import Pipeline

        # "auto": serve at once in graph mode, and at compile mode's speed once compiled in the background.
        return Pipeline.load(paths, device=args.device, fast=args.fast, background_compile=args.fast == "auto")

    holder = ModelHolder(load=load, missing=lambda: [file.name for file in paths.missing()])
    app = create_app(settings, holder, downloads=ModelDownloads(paths, on_installed=holder.start))
    print(f"uvidm serve: {settings.url} (API docs at /docs), jobs in {settings.jobs_dir}"
          + (", token required" if settings.token else ""), flush=True)
    verbose = getattr(args, "verbose", False)
    try:
        build_server(app, settings, log_level="info" if verbose else "warning", access_log=verbose).run()
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it shut down for; the stop was clean
        pass
    print("uvidm serve: stopped", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m uvidm_backend.commands.serve [options]`: the same as `uvidm serve`."""
    parser = argparse.ArgumentParser(prog="uvidm")
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command")
    add_parser(commands)
    args = parser.parse_args(["serve", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
