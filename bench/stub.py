"""A minimal HTTP/1.1 keep-alive responder: measures what the load generator alone can do.

`python -m bench.stub --port P [--lifetime S]` answers every request with the same bytes as
`/fhir/_noop`, with almost no per-request work, so a run against it is bounded by the
client. It exits on SIGTERM or after `--lifetime` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

_BODY = (
    b'{"resourceType":"Patient","id":"noop","meta":{"versionId":"1",'
    b'"lastUpdated":"2026-01-01T00:00:00.000Z"},"name":[{"family":"Ceiling",'
    b'"given":["No","Op"]}],"gender":"unknown","birthDate":"1970-01-01"}'
)
_RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/fhir+json\r\netag: W/\"1\"\r\n"
    b"content-length: " + str(len(_BODY)).encode() + b"\r\n\r\n" + _BODY
)


class _Responder(asyncio.Protocol):
    """Answers each complete request head (bodies are skipped by Content-Length)."""

    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            length = 0
            pos = head.find(b"\r\ncontent-length:")
            if pos >= 0:
                stop = head.find(b"\r\n", pos + 2)
                length = int(head[pos + 17 : stop if stop >= 0 else None])
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            assert self.transport is not None
            self.transport.write(_RESPONSE)


async def serve(port: int, lifetime: float) -> None:
    """Serve on 127.0.0.1:port until SIGTERM/SIGINT or `lifetime` seconds."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await loop.create_server(_Responder, "127.0.0.1", port)
    async with server:
        try:
            await asyncio.wait_for(stop.wait(), timeout=lifetime)
        except TimeoutError:
            pass


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--lifetime", type=float, default=600.0)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.lifetime))


if __name__ == "__main__":
    main()
