"""The embedded SecantusDB as a child process (`python -m fhirserver.storage.store_process`).

SecantusDB is Python: in the server's process it competes with the event loop for the GIL.
In its own process it gets the second core (bench/results/core.txt: x2.08 geometric mean
over read, search and create). The parent talks to it over the MongoDB wire protocol like
to any mongod.

Protocol with the parent: the child starts the store on a free port and writes
`PORT <n>` as one line on stdout; it stops the store (flushing it) on SIGTERM/SIGINT or
when its stdin reaches end of file, which is how it learns that the parent died, even by
SIGKILL. The data-directory lock descriptor is inherited, so the directory stays locked
until the store has really let go of it.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from types import FrameType


def main(argv: list[str] | None = None) -> int:
    """Run the store until told to stop; returns the exit code."""
    parser = argparse.ArgumentParser(prog="fhirserver-store")
    parser.add_argument("--storage-path", required=True)
    parser.add_argument("--cache-size", default="1G")
    args = parser.parse_args(argv)

    from fhirserver.storage.embedded import secantus_server

    server = secantus_server(args.storage_path, args.cache_size)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    def watch_parent() -> None:
        # Blocks until the parent closes our stdin or dies (the kernel closes it then).
        # os.read, not sys.stdin: a buffered reader's lock held by this daemon thread
        # aborts the interpreter at exit.
        while os.read(0, 4096):
            pass
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    try:
        print(f"PORT {server.port}", flush=True)
        threading.Thread(target=watch_parent, name="parent-watch", daemon=True).start()
        while not stop.wait(1.0):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
