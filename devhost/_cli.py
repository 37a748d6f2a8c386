"""Command line of the local host: ``python -m devhost [--app MODULE:ATTR] [--port P] [--backend HOST:PORT]``."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import errno
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence

from ._host import HostOptions, HostStartError, LocalHost, bind_listening_socket
from ._telemetry import TelemetryConfigError, TraceIdsLogFilter, configure_telemetry
from ._valkey import configured_valkey


def _parse(argv: Sequence[str] | None) -> HostOptions:
    parser = argparse.ArgumentParser(
        prog="python -m devhost",
        description=(
            "Run a v2 function app (function_app:app unless --app) locally without Azure tooling: its HTTP "
            "functions on uvicorn, its orchestrators, activities and agent entities on the Durable Task SDK's "
            "in-memory backend, Valkey embedded unless VALKEY_HOST or "
            "VALKEY_URL is set. OpenTelemetry: OTEL_TRACES_EXPORTER, OTEL_METRICS_EXPORTER and "
            "OTEL_LOGS_EXPORTER = console or otlp (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_METRIC_EXPORT_INTERVAL)."
        ),
    )
    parser.add_argument(
        "--app",
        default="function_app:app",
        metavar="MODULE:ATTRIBUTE",
        help="the function app to host, imported from the current directory (default function_app:app)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to serve HTTP on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7071, help="HTTP port (default 7071, as func start)")
    parser.add_argument(
        "--backend",
        metavar="HOST:PORT",
        help=(
            "use a durable backend that is already running (another devhost's) instead of starting one; "
            "needs that host's Valkey in VALKEY_HOST and VALKEY_PORT (or VALKEY_URL)"
        ),
    )
    parser.add_argument(
        "--backend-port", type=int, default=0, help="port of the backend this host starts (default: a free one)"
    )
    parser.add_argument(
        "--valkey-port",
        type=int,
        help="port of the embedded Valkey this host starts (default: a free one from 16379 on)",
    )
    parser.add_argument(
        "--no-worker",
        dest="worker",
        action="store_false",
        help="serve HTTP only; another host connected to the same backend runs the agents",
    )
    parser.add_argument(
        "--max-concurrent-turns",
        type=int,
        default=32,
        help="agent turns the worker runs at once (default 32); more wait in the backend's queue",
    )
    parser.add_argument("--ready-file", help="write the host's addresses as JSON to this file once it serves")
    parser.add_argument("--verbose", "-v", action="store_true", help="log requests and the host's internals")
    args = parser.parse_args(argv)
    if args.backend is not None and ":" not in args.backend:
        parser.error("--backend takes HOST:PORT")
    if args.max_concurrent_turns < 1:
        parser.error("--max-concurrent-turns must be at least 1")
    module, _, attribute = args.app.partition(":")
    if not module or (args.app.count(":") > 1) or (":" in args.app and not attribute):
        parser.error("--app takes MODULE:ATTRIBUTE, e.g. function_app:app")
    return HostOptions(
        app=args.app if attribute else f"{module}:app",
        host=args.host,
        port=args.port,
        backend=args.backend,
        backend_port=args.backend_port,
        valkey_port=args.valkey_port,
        worker=args.worker,
        max_concurrent_turns=args.max_concurrent_turns,
        ready_file=args.ready_file,
        verbose=args.verbose,
    )


def _refusal(options: HostOptions, environ: Mapping[str, str]) -> str | None:
    """Why these options cannot work with this environment, in one line; None when they can."""
    valkey = configured_valkey(environ)
    if options.backend is not None and valkey is None:
        # The other host's worker writes its turns to its own Valkey: an embedded one here would
        # leave this host's readers waiting for streams that are written elsewhere.
        return (
            "--backend shares another host's turns, so it needs that host's Valkey too: set VALKEY_HOST "
            "and VALKEY_PORT (or VALKEY_URL) to the address on the other host's 'Valkey' line"
        )
    if options.valkey_port is not None and valkey is not None:
        return f"--valkey-port is for the embedded Valkey, but Valkey is configured ({valkey})"
    return None


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Run the local host until Ctrl-C (or SIGTERM).

    Args:
        argv: Command-line arguments; ``sys.argv[1:]`` when None.

    Returns:
        The process exit code: 0 after a clean stop, 1 when the host could not start, 2 when the
        command line cannot work with the environment (e.g. ``--backend`` without a Valkey setting).
    """
    options = _parse(argv)
    refusal = _refusal(options, os.environ)
    if refusal is not None:
        print(f"devhost: {refusal}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO if options.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s%(trace_ids)s: %(message)s",
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(TraceIdsLogFilter())
    try:
        telemetry = configure_telemetry(os.environ)
    except TelemetryConfigError as error:
        print(f"devhost: {error}", file=sys.stderr)
        return 2
    if telemetry is not None:
        options = dataclasses.replace(options, telemetry=telemetry.describe())
    try:
        sock = bind_listening_socket(options.host, options.port)
    except OSError as exc:
        reason = "the port is already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
        print(
            f"devhost: cannot listen on {options.host}:{options.port}: {reason} (choose another with --port)",
            file=sys.stderr,
        )
        if telemetry is not None:
            telemetry.shutdown()
        return 1
    # SIGTERM stops the host the way Ctrl-C does: every part is stopped, nothing is left running.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    host = LocalHost(options)
    start_error: HostStartError | None = None
    try:
        host.start()
        asyncio.run(host.serve(sock))
    except KeyboardInterrupt:
        pass
    except HostStartError as error:
        start_error = error
    finally:
        sock.close()

        def force(signum: int, frame: object) -> None:
            host.force_stop()
            os._exit(130)

        # Stopping takes a moment (the worker finishes its gRPC calls); a second Ctrl-C cuts it short.
        signal.signal(signal.SIGINT, force)
        signal.signal(signal.SIGTERM, force)
        print("devhost: stopping...", flush=True)
        host.stop()
        if telemetry is not None:
            telemetry.shutdown()  # exports what is pending: the last spans and metrics
    print("devhost: stopped", flush=True)
    if start_error is not None:
        print(f"devhost: {start_error}", file=sys.stderr)
        return 1
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        # A turn the worker was running still holds a thread (it would finish and commit to a backend
        # that is gone). Everything outside this process is stopped already: leave now.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0
