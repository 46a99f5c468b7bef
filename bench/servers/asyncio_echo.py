"""
A stdlib asyncio echo server (or, with C{--uvloop}, the same on uvloop):
reference peers for netdemo's TCP and UDP echo.

TCP: C{data_received -> transport.write}; UDP (C{--udp}):
C{datagram_received -> transport.sendto(data, addr)}.  It listens on
127.0.0.1 on the given port (0: any) and prints C{{"port": N}} on stdout
once listening.

Usage: C{python bench/servers/asyncio_echo.py [--uvloop] [--udp] [PORT]}
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


class DatagramEcho(asyncio.DatagramProtocol):
    """
    Send each datagram back to where it came from.
    """

    transport: asyncio.DatagramTransport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | int, int]) -> None:
        self.transport.sendto(data, addr)


def announce(port: int) -> None:
    """
    Say where it listens.
    """
    print(json.dumps({"port": port}), flush=True)


async def serve(port: int) -> None:
    """
    Listen on 127.0.0.1 over TCP and serve forever.
    """
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", port, backlog=1024)
    announce(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


async def serveDatagrams(port: int) -> None:
    """
    Listen on 127.0.0.1 over UDP and serve forever.
    """
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        DatagramEcho, local_addr=("127.0.0.1", port)
    )
    announce(transport.get_extra_info("sockname")[1])
    await asyncio.Event().wait()


def main() -> None:
    """
    Parse the command line and run the chosen event loop.
    """
    args = sys.argv[1:]
    flags = {a for a in args if a.startswith("--")}
    args = [a for a in args if not a.startswith("--")]
    port = int(args[0]) if args else 0
    coroutine = serveDatagrams(port) if "--udp" in flags else serve(port)
    if "--uvloop" in flags:
        import uvloop

        uvloop.run(coroutine)
    else:
        asyncio.run(coroutine)


if __name__ == "__main__":
    main()
