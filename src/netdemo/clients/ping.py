# -*- test-case-name: tests.test_cli -*-
"""
C{netdemo ping tcp|udp HOST:PORT}: echo round trips, like C{ping}.

A probe is C{NDP1}, a 4-byte sequence number, an 8-byte nonce of the run,
and padding to the size asked for; the echo sends it back unchanged.  Each
probe ends one way, reported on one line: answered (with its round-trip
time), not answered within C{--timeout}, refused (ICMP port unreachable,
UDP), answered with other bytes (C{wrong reply}), or lost with its TCP
connection.  Over TCP, a connection the server closes is made again for the
next probe (as C{tcping} does); over UDP the socket is connected
(L{listenConnected}, as C{--udp-peer}'s), so ICMP errors are reported and do
not end the run.
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
    plural,
    positive,
    resolve,
    whenInterrupted,
    why,
)
from netdemo.clients.tlsclient import TLSClientOptions, clientEndpoint
from netdemo.datagram import listenConnected

__all__ = ["PingOptions", "makeProbe", "probeSequence", "runPing"]

PROBE_MAGIC = b"NDP1"
PROBE_HEADER = 16


#: The largest probe: the largest UDP payload over IPv4.
MAX_SIZE = 65507


@define
class PingStatistics:
    """
    What a ping run saw.

    @ivar sent: Probes sent (or due, when the connection for them could not
        be made).
    @ivar received: Probes answered with themselves.
    @ivar refused: Probes refused (ICMP port unreachable).
    @ivar wrong: Probes answered with other bytes.
    @ivar rtts: The round-trip times of the answered probes, in seconds.
    """

    sent: int = 0
    received: int = 0
    refused: int = 0
    wrong: int = 0
    rtts: list[float] = field(factory=list)

    def summary(self, target: str, kind: str, elapsed: float) -> str:
        """
        The closing lines, in the manner of C{ping}.
        """
        loss = 100.0 * (self.sent - self.received) / self.sent if self.sent else 0.0
        counts = [
            plural(self.sent, "probe") + " sent",
            f"{self.received} received",
            f"{loss:.0f}% loss",
            f"{self.refused} refused",
        ]
        if self.wrong:
            counts.append(f"{self.wrong} wrong")
        lines = [
            f"--- {target} {kind} echo ping statistics ---",
            ", ".join(counts) + f", time {elapsed * 1000:.0f} ms",
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


def _sizeCoerce(value: str) -> int:
    """
    Coerce C{--size}: room for the probe's header, and no more than a UDP
    datagram holds.
    """
    try:
        size = int(value)
    except ValueError:
        size = -1
    if not PROBE_HEADER <= size <= MAX_SIZE:
        raise ValueError(
            f"{value!r} is not a whole number from {PROBE_HEADER} to {MAX_SIZE}"
        )
    return size


_sizeCoerce.coerceDoc = (  # type: ignore[attr-defined]
    f"A whole number from {PROBE_HEADER} (the probe's header) to {MAX_SIZE}."
)


class PingOptions(TLSClientOptions, GnuOptions):
    """
    C{netdemo ping tcp|udp HOST:PORT}.
    """

    synopsis = "tcp|udp HOST:PORT [-c COUNT] [-i SECONDS] [-s BYTES] [-W SECONDS]"
    longdesc = (
        "Send echo probes and time the round trips, like ping. One line per "
        "probe, then a summary. Over TCP, a connection the server closes is "
        "made again for the next probe; UDP uses a connected socket and reports "
        "ICMP refusals. Exit status: 0 when every probe was answered, 1 when "
        "some were not, 2 on error.\n\n"
        "Examples:\n"
        "  netdemo ping tcp 127.0.0.1:8007\n"
        "  netdemo ping udp 127.0.0.1:8009 -c 100 -i 0.01 -s 1200\n"
        "  netdemo ping tcp echo.example.net:7 -c 0    (until Ctrl-C)"
    )
    optParameters: list[list[Any]] = [
        ["count", "c", 5, "Probes to send", countCoerce],
        [
            "interval",
            "i",
            1.0,
            "Seconds between probes",
            positive(float, "a number of seconds above 0"),
        ],
        ["size", "s", 64, "Probe size in bytes", _sizeCoerce],
        [
            "timeout",
            "W",
            2.0,
            "Seconds to wait for each answer",
            positive(float, "a number of seconds above 0"),
        ],
    ]

    def parseArgs(self, protocol: str, target: str) -> None:  # type: ignore[override]
        if protocol not in ("tcp", "udp"):
            raise usage.UsageError(f"protocol {protocol!r} is not tcp or udp")
        self["protocol"] = protocol
        self["host"], self["port"] = parseHostPort(target)


class _Pinger:
    """
    Send probes on a timer and settle each one: answered, not answered,
    refused, answered wrongly, or lost with its connection.

    @ivar send: Sends one probe; given the probe and its sequence number.
    @ivar outstanding: Sequence number to (send time, timeout call) of the
        probes not settled yet, oldest first.
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

    def _settle(self, seq: int | None = None) -> int | None:
        """
        Take probe C{seq} (the oldest when L{None}) off the outstanding ones.

        @return: Its sequence number, or L{None} if none was outstanding.
        """
        if seq is None:
            seq = next(iter(self.outstanding), None)
        if seq is None or seq not in self.outstanding:
            return None
        _, timer = self.outstanding.pop(seq)
        if timer.active():
            timer.cancel()
        return seq

    def answer(self, data: bytes) -> None:
        """
        Bytes came back: the echo of one of our probes, a late or duplicated
        echo (ignored), or something else (a wrong reply to the oldest
        outstanding probe).
        """
        seq = probeSequence(data, self.nonce)
        if seq is None:
            wrong = self._settle()
            if wrong is not None:
                self.stats.wrong += 1
                self.console.say(
                    f"wrong reply from {self.target}: seq={wrong} "
                    f"({plural(len(data), 'byte')} that are not the probe)"
                )
                self._settled()
            return
        started = self.outstanding.get(seq, (0.0, None))[0]
        if self._settle(seq) is None:
            return
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
        """
        An ICMP port unreachable came back: the oldest outstanding probe
        was refused (reported once: it does not time out as well).
        """
        seq = self._settle()
        self.stats.refused += 1
        where = f": seq={seq}" if seq is not None else ""
        self.console.say(f"refused by {self.target}{where} (ICMP port unreachable)")
        self._settled()

    def failed(self, error: int) -> None:
        """
        Another ICMP error came back; the probe may still be answered.
        """
        self.console.say(f"ICMP error from {self.target}: {os.strerror(error)}")

    def lost(self, message: str) -> None:
        """
        Every outstanding probe is lost with its connection, reported in one
        line.
        """
        count = len(self.outstanding)
        while self._settle() is not None:
            pass
        lost = f"; {plural(count, 'probe')} in flight lost" if count else ""
        self.console.say(message + lost)
        self._settled()

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
    """
    One TCP connection of a ping run: cuts what comes back into probe-sized
    answers.
    """

    def __init__(self, size: int, pinger: _Pinger) -> None:
        self.size = size
        self.buffer = b""
        self.pinger = pinger
        self.sent = 0
        self.lost: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= self.size:
            probe, self.buffer = self.buffer[: self.size], self.buffer[self.size :]
            self.pinger.answer(probe)

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(None)


class _TCPLink:
    """
    The TCP connection the probes go over, made again for the next probe
    when the server closed it.

    @ivar connection: The connection, while there is one.
    """

    def __init__(self, reactor: Any, options: PingOptions, target: str) -> None:
        self.options = options
        self.target = target
        self.endpoint = clientEndpoint(
            reactor,
            options["host"],
            options["port"],
            options["timeout"],
            options.tlsClient,
        )
        self.connection: _TCPPingProtocol | None = None
        self.pinger: _Pinger | None = None
        self._connecting: Deferred[Any] | None = None
        self._waiting: list[bytes] = []

    async def connect(self, pinger: _Pinger) -> None:
        """
        Make the first connection.

        @raise CommandError: If it cannot be made.
        """
        self.pinger = pinger
        try:
            await self._connect()
        except Exception as e:
            raise CommandError(f"cannot connect to {self.target}: {why(e)}") from None

    def _connect(self) -> Deferred[Any]:
        from twisted.internet.endpoints import connectProtocol

        assert self.pinger is not None
        connection = _TCPPingProtocol(self.options["size"], self.pinger)
        connecting = connectProtocol(self.endpoint, connection)
        self._connecting = connecting

        def made(_: object) -> None:
            self._connecting = None
            self.connection = connection
            connection.lost.addCallback(lambda _: self._closed(connection))
            waiting, self._waiting = self._waiting, []
            for probe in waiting:
                self.send(probe)

        def failed(reason: Any) -> Any:
            self._connecting = None
            return reason

        done: Deferred[Any] = connecting.addCallbacks(made, failed)
        return done

    def send(self, probe: bytes) -> None:
        """
        Send a probe, connecting again first if the server closed the
        connection.
        """
        if self.connection is not None:
            self.connection.sent += 1
            self.connection.transport.write(probe)  # type: ignore[union-attr]
            return
        self._waiting.append(probe)
        if self._connecting is None:
            self._connect().addErrback(self._cannotConnect)

    def _cannotConnect(self, reason: Any) -> None:
        self._waiting.clear()
        assert self.pinger is not None
        self.pinger.lost(f"cannot connect to {self.target} again: {why(reason.value)}")

    def _closed(self, connection: _TCPPingProtocol) -> None:
        if connection is not self.connection:
            return
        self.connection = None
        assert self.pinger is not None
        if not self.pinger._stopped:
            self.pinger.lost(
                f"connection closed by {self.target} after "
                f"{plural(connection.sent, 'probe')}"
            )

    def close(self) -> None:
        """
        Close the connection, if there is one.
        """
        if self._connecting is not None:
            self._connecting.cancel()
        if self.connection is not None:
            connection, self.connection = self.connection, None
            connection.transport.loseConnection()  # type: ignore[union-attr]


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
    console = console or Console()
    host, port = options["host"], options["port"]
    target = formatHostPort(host, port)
    interrupted = whenInterrupted(reactor)
    began = time.perf_counter()
    close: Callable[[], object]
    if options["protocol"] == "tcp":
        link = _TCPLink(reactor, options, target)
        pinger = _Pinger(reactor, options, target, link.send, console)
        await link.connect(pinger)
        close = link.close
    else:
        family, sockaddr = await resolve(host, port, socket.SOCK_DGRAM)
        datagrams = _UDPPingProtocol((sockaddr[0], sockaddr[1]))
        listening: Any = listenConnected(reactor, datagrams, family == socket.AF_INET6)
        pinger = _Pinger(reactor, options, target, listening.write, console)
        datagrams.pinger = pinger
        close = listening.stopListening
    console.say(
        f"PING {target} {options['protocol']} echo: "
        f"{plural(options['size'], 'byte')} per probe"
    )
    interrupted.addCallback(lambda _: pinger.stop())
    pinger.start()
    await pinger.done
    close()
    console.say(
        pinger.stats.summary(target, options["protocol"], time.perf_counter() - began)
    )
    return pinger.stats.exitCode()
