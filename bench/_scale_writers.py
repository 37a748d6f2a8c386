"""bench_scale's writers in a process of their own: the durable instances' side of a deployed app.

On Flex Consumption the durable functions (the agents' turns, which write the streams) scale on
instances of their own, apart from the HTTP functions that follow the streams. ``bench_scale
--writers-elsewhere`` runs its readers in its own process and the writers here, started by it:
this process imports the buffer, connects, prints ``ready``, reads the schedule's start from stdin
and writes every turn on the schedule ``bench_scale`` computes too (``turn_starts``).

Run by ``bench_scale``, not by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import sys

from bench.bench_scale import CHUNK_INTERVAL, turn_starts, write_turn


async def main(arguments: argparse.Namespace) -> None:
    if arguments.path:
        sys.path.insert(0, arguments.path)  # where the baseline revision's package was extracted
    if arguments.app_heap:
        importlib.import_module("function_app")  # a durable instance's heap: the app imported
        if not arguments.tune_collector:
            gc.set_threshold(700, 10, 10)
            gc.unfreeze()
    elif arguments.tune_collector:
        importlib.import_module("valkey_buffer").tune_collector()
    vb = importlib.import_module(arguments.module)
    buffer = vb.ValkeyStreamBuffer(vb.ValkeySettings(host=arguments.host, port=arguments.port, stream_maxlen=None))
    sessions = arguments.sessions.split(",")
    try:
        await buffer.ping()  # connected before the schedule starts
        print("ready", flush=True)
        start = float(await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline))
        chunks = int(arguments.seconds / CHUNK_INTERVAL)
        written = [0.0] * chunks  # the schedule, which bench_scale computes itself
        await asyncio.gather(
            *(
                write_turn(buffer, session, at, chunks, written)
                for session, at in zip(sessions, turn_starts(len(sessions), start), strict=True)
            )
        )
    finally:
        await buffer.aclose()


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", default="valkey_buffer", help="the buffer package to write with")
    parser.add_argument("--path", default="", help="a folder to import it from (a baseline revision's)")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--sessions", required=True, help="the turns' session ids, comma-separated")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--app-heap", action="store_true")
    parser.add_argument("--tune-collector", action="store_true")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(_arguments()))
