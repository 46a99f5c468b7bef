"""
A stdlib asyncio echo server (or, with C{--uvloop}, the same on uvloop):
reference peers for netdemo's echo.

C{data_received -> transport.write}.  It listens on 127.0.0.1 on the given
port (0: any) and prints C{{"port": N}} on stdout once listening.

Usage: C{python asyncio_echo.py [--uvloop] [PORT]}
"""

from __future__ import annotations

import asyncio
import json
import sys


class Echo(asyncio.Protocol):
    """
    Send back what arrives.
    """

    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def serve(port: int) -> None:
    """
    Listen on 127.0.0.1 and serve forever.
    """
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", port, backlog=1024)
    print(json.dumps({"port": server.sockets[0].getsockname()[1]}), flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    """
    Parse the command line and run the chosen event loop.
    """
    args = sys.argv[1:]
    useUvloop = "--uvloop" in args
    args = [a for a in args if a != "--uvloop"]
    port = int(args[0]) if args else 0
    if useUvloop:
        import uvloop

        uvloop.run(serve(port))
    else:
        asyncio.run(serve(port))


if __name__ == "__main__":
    main()
