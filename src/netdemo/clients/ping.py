# -*- test-case-name: tests.test_cli -*-
"""
C{netdemo ping tcp|udp HOST:PORT}: echo round trips, like C{ping}.

A probe is C{NDP1}, a 4-byte sequence number, an 8-byte nonce of the run,
and padding to the size asked for; the echo sends it back unchanged.  Over
UDP the socket is connected (L{listenConnected}, as C{--udp-peer}'s), so
ICMP refusals and other ICMP errors are reported and do not end the run.
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol, Protocol
from twisted.python import usage

from netdemo.clients.common import (
    EXIT_LOST,
    EXIT_OK,
    CommandError,
    Console,
    GnuOptions,
    countCoerce,
    formatHostPort,
    parseHostPort,
    positive,
    resolve,
    whenInterrupted,
    why,
)
from netdemo.datagram import listenConnected

__all__ = ["PingOptions", "makeProbe", "probeSequence", "runPing"]

PROBE_MAGIC = b"NDP1"
PROBE_HEADER = 16


@define
class PingStatistics:
    """
    What a ping run saw.
    """

    sent: int = 0
    received: int = 0
    refused: int = 0
    rtts: list[float] = field(factory=list)

    def summary(self, target: str, kind: str, elapsed: float) -> str:
        """
        The closing lines, in the manner of C{ping}.
        """
        loss = 100.0 * (self.sent - self.received) / self.sent if self.sent else 0.0
        lines = [
            f"--- {target} {kind} echo ping statistics ---",
            f"{self.sent} probes sent, {self.received} received, {loss:.0f}% loss, "
            f"{self.refused} refused, time {elapsed * 1000:.0f} ms",
        ]
        if self.rtts:
            ms = [r * 1000 for r in self.rtts]
            mean = sum(ms) / len(ms)
            mdev = math.sqrt(sum((m - mean) ** 2 for m in ms) / len(ms))
            lines.append(
                f"rtt min/avg/max/mdev = {min(ms):.3f}/{mean:.3f}/{max(ms):.3f}/"
                f"{mdev:.3f} ms"
            )
        return "\n".join(lines)

    def exitCode(self) -> int:
        """
        0 when every probe was answered, 1 otherwise.
        """
        return EXIT_OK if self.sent and self.received == self.sent else EXIT_LOST


def makeProbe(sequence: int, size: int, nonce: bytes) -> bytes:
    """
    A probe of exactly C{size} bytes: magic, sequence number, nonce, padding.
    """
    header = PROBE_MAGIC + sequence.to_bytes(4, "big") + nonce
    return header + b"." * (size - len(header))


def probeSequence(data: bytes, nonce: bytes) -> int | None:
    """
    The sequence number of an echoed probe of ours, or L{None}.
    """
    if data[:4] != PROBE_MAGIC or data[8:16] != nonce:
        return None
    return int.from_bytes(data[4:8], "big")


class PingOptions(GnuOptions):
    """
    C{netdemo ping tcp|udp HOST:PORT}.
    """

    synopsis = "tcp|udp HOST:PORT [-c COUNT] [-i INTERVAL] [-s SIZE] [-W TIMEOUT]"
    longdesc = (
        "Send echo probes and time the round trips, like ping. One line per "
        "probe, then a summary. UDP uses a connected socket and reports ICMP "
        "refusals. Exit status: 0 when every probe was answered, 1 when some "
        "were lost, 2 on error.\n\n"
        "Examples:\n"
        "  netdemo ping tcp 127.0.0.1:8007\n"
        "  netdemo ping udp [::1]:8009 -c 100 -i 0.01 -s 1200\n"
        "  netdemo ping tcp echo.example.net:7 -c 0    (until Ctrl-C)"
    )
    optParameters: list[list[Any]] = [
        ["count", "c", 5, "Probes to send", countCoerce],
        [
            "interval",
            "i",
            1.0,
            "Seconds between probes",
            positive(float, "a number above 0"),
        ],
        [
            "size",
            "s",
            64,
            f"Probe size in bytes (at least {PROBE_HEADER})",
            positive(int, "a whole number above 0"),
        ],
        [
            "timeout",
            "W",
            2.0,
            "Seconds to wait for each answer",
            positive(float, "a number above 0"),
        ],
    ]

    def parseArgs(self, protocol: str, target: str) -> None:  # type: ignore[override]
        if protocol not in ("tcp", "udp"):
            raise usage.UsageError(f"protocol {protocol!r} is not tcp or udp")
        self["protocol"] = protocol
        self["host"], self["port"] = parseHostPort(target)

    def postOptions(self) -> None:
        if self["size"] < PROBE_HEADER:
            raise usage.UsageError(
                f"--size {self['size']} is below the {PROBE_HEADER}-byte probe header"
            )
        if self["size"] > 65507 and self["protocol"] == "udp":
            raise usage.UsageError(f"--size {self['size']} does not fit a UDP datagram")


class _Pinger:
    """
    Send probes on a timer and match their echoes.
    """

    def __init__(
        self,
        reactor: Any,
        options: PingOptions,
        target: str,
        send: Callable[[bytes], None],
        console: Console,
    ) -> None:
        self.reactor = reactor
        self.console = console
        self.options = options
        self.target = target
        self.send = send
        self.stats = PingStatistics()
        self.nonce = os.urandom(8)
        self.outstanding: dict[int, tuple[float, Any]] = {}
        self.done: Deferred[None] = Deferred()
        self._next: Any = None
        self._stopped = False

    def start(self) -> None:
        self._probe()

    def _probe(self) -> None:
        if self._stopped:
            return
        count = self.options["count"]
        seq = self.stats.sent + 1
        timer = self.reactor.callLater(self.options["timeout"], self._timeout, seq)
        self.outstanding[seq] = (time.perf_counter(), timer)
        self.stats.sent += 1
        self.send(makeProbe(seq, self.options["size"], self.nonce))
        if count and self.stats.sent >= count:
            return
        self._next = self.reactor.callLater(self.options["interval"], self._probe)

    def _settled(self) -> None:
        count = self.options["count"]
        finished = self._stopped or (count and self.stats.sent >= count)
        if not self.outstanding and finished and not self.done.called:
            self.done.callback(None)

    def answer(self, data: bytes) -> None:
        seq = probeSequence(data, self.nonce)
        if seq is None or seq not in self.outstanding:
            return
        started, timer = self.outstanding.pop(seq)
        timer.cancel()
        rtt = time.perf_counter() - started
        self.stats.received += 1
        self.stats.rtts.append(rtt)
        self.console.say(
            f"{len(data)} bytes from {self.target}: seq={seq} time={rtt * 1000:.3f} ms"
        )
        self._settled()

    def _timeout(self, seq: int) -> None:
        self.outstanding.pop(seq, None)
        self.console.say(
            f"no answer from {self.target}: seq={seq} "
            f"(timeout {self.options['timeout']:g} s)"
        )
        self._settled()

    def refused(self) -> None:
        self.stats.refused += 1
        self.console.say(f"refused by {self.target} (ICMP port unreachable)")

    def failed(self, error: int) -> None:
        self.console.say(f"ICMP error from {self.target}: {os.strerror(error)}")

    def stop(self) -> None:
        """
        Stop sending; forget the probes still in flight (they count as lost).
        """
        self._stopped = True
        if self._next is not None and self._next.active():
            self._next.cancel()
        for _, timer in self.outstanding.values():
            timer.cancel()
        self.outstanding.clear()
        self._settled()


class _TCPPingProtocol(Protocol):
    def __init__(self, size: int) -> None:
        self.size = size
        self.buffer = b""
        self.pinger: _Pinger | None = None
        self.lost: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= self.size:
            probe, self.buffer = self.buffer[: self.size], self.buffer[self.size :]
            if self.pinger is not None:
                self.pinger.answer(probe)

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(None)


class _UDPPingProtocol(DatagramProtocol):
    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.pinger: _Pinger | None = None

    def startProtocol(self) -> None:
        self.transport.connect(*self.address)  # type: ignore[union-attr]

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        if self.pinger is not None:
            self.pinger.answer(data)

    def connectionRefused(self) -> None:
        if self.pinger is not None:
            self.pinger.refused()

    def connectionFailed(self, error: int) -> None:
        if self.pinger is not None:
            self.pinger.failed(error)


async def runPing(
    reactor: Any, options: PingOptions, console: Console | None = None
) -> int:
    """
    Run C{netdemo ping}.

    @return: The exit status.
    """
    from twisted.internet.endpoints import HostnameEndpoint, connectProtocol

    console = console or Console()
    host, port = options["host"], options["port"]
    target = formatHostPort(host, port)
    interrupted = whenInterrupted(reactor)
    began = time.perf_counter()
    if options["protocol"] == "tcp":
        tcp = _TCPPingProtocol(options["size"])
        endpoint = HostnameEndpoint(reactor, host, port, timeout=options["timeout"])
        try:
            await connectProtocol(endpoint, tcp)
        except Exception as e:
            raise CommandError(f"cannot connect to {target}: {why(e)}") from None
        pinger = _Pinger(reactor, options, target, tcp.transport.write, console)  # type: ignore[union-attr]
        tcp.pinger = pinger
        tcp.lost.addCallback(lambda _: pinger.stop())
        close: Callable[[], object] = tcp.transport.loseConnection  # type: ignore[union-attr]
    else:
        family, sockaddr = await resolve(host, port, socket.SOCK_DGRAM)
        datagrams = _UDPPingProtocol((sockaddr[0], sockaddr[1]))
        listening: Any = listenConnected(reactor, datagrams, family == socket.AF_INET6)
        pinger = _Pinger(reactor, options, target, listening.write, console)
        datagrams.pinger = pinger
        close = listening.stopListening
    console.say(
        f"PING {target} {options['protocol']} echo: {options['size']} bytes per probe"
    )
    interrupted.addCallback(lambda _: pinger.stop())
    pinger.start()
    await pinger.done
    close()
    console.say(
        pinger.stats.summary(target, options["protocol"], time.perf_counter() - began)
    )
    return pinger.stats.exitCode()
