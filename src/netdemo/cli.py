# -*- test-case-name: tests.test_cli -*-
"""
The C{netdemo} command: clients for the services, the other half of every
classic Twisted example.

Each subcommand is a L{usage.Options} subclass and a coroutine run by
L{twisted.internet.task.react}.  Errors are one line on standard error and
exit status 2; Ctrl-C ends a running client cleanly, with its summary.
"""

from __future__ import annotations

import errno
import getopt
import math
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from attrs import define, field
from twisted.internet import udp
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHalfCloseableDescriptor
from twisted.internet.protocol import DatagramProtocol, Protocol
from twisted.python import usage
from twisted.python.reflect import namedAny
from zope.interface import implementer

__all__ = ["main", "parseHostPort"]

PROBE_MAGIC = b"NDP1"
PROBE_HEADER = 16
EXIT_OK, EXIT_LOST, EXIT_ERROR = 0, 1, 2


class CommandError(Exception):
    """
    A failure to report as one line and exit status 2.
    """


def parseHostPort(value: str, option: str = "address") -> tuple[str, int]:
    """
    Parse C{HOST:PORT} or C{[V6ADDRESS]:PORT}.

    @raise usage.UsageError: Naming the value.
    """
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise usage.UsageError(
            f"{option} {value!r}: write IPv6 addresses as [ADDRESS]:PORT"
        )
    if not sep or not host:
        raise usage.UsageError(f"{option} {value!r} is not HOST:PORT")
    try:
        number = usage.portCoerce(port)
    except ValueError:
        raise usage.UsageError(
            f"{option} {value!r}: port {port!r} is not a number from 0 to 65535"
        ) from None
    return host, number


def _positive(kind: Callable[[str], Any], what: str) -> Callable[[str], Any]:
    def coerce(value: str) -> Any:
        try:
            number = kind(value)
        except ValueError:
            raise ValueError(f"{value!r} is not {what}") from None
        if not number > 0 or math.isinf(number):
            raise ValueError(f"{value!r} is not {what}")
        return number

    coerce.coerceDoc = f"Must be {what}."  # type: ignore[attr-defined]
    return coerce


def _countCoerce(value: str) -> int:
    try:
        count = int(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a whole number") from None
    if count < 0:
        raise ValueError(f"{value!r} is not a whole number of at least 0")
    return count


_countCoerce.coerceDoc = "0 means until interrupted."  # type: ignore[attr-defined]


def resolve(host: str, port: int, kind: socket.SocketKind) -> Deferred[tuple[Any, ...]]:
    """
    Resolve C{host} (a name or an address literal) once, in a thread.

    @return: A L{Deferred} firing with C{(family, sockaddr)}.
    """
    from twisted.internet.threads import deferToThread

    def lookUp() -> tuple[Any, ...]:
        try:
            infos = socket.getaddrinfo(host, port, type=kind)
        except socket.gaierror as e:
            raise CommandError(f"cannot resolve {host!r}: {e.strerror}") from None
        family, _, _, _, sockaddr = infos[0]
        return family, sockaddr

    return deferToThread(lookUp)


def formatHostPort(host: str, port: int) -> str:
    """
    C{host:port}, with IPv6 addresses in brackets.
    """
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def whenInterrupted(reactor: Any) -> Deferred[None]:
    """
    A L{Deferred} that fires on the first SIGINT (Ctrl-C), which no longer
    stops the reactor, so the client can finish and print its summary.
    """
    interrupted: Deferred[None] = Deferred()

    def install() -> None:
        def handler(signum: int, frame: Any) -> None:
            signal.signal(signal.SIGINT, signal.SIG_DFL)

            def fire() -> None:
                if not interrupted.called:
                    interrupted.callback(None)

            reactor.callFromThread(fire)

        signal.signal(signal.SIGINT, handler)

    reactor.callWhenRunning(install)
    return interrupted


# ---------------------------------------------------------------------------
# ping


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


class GnuOptions(usage.Options):
    """
    Options that may come after the positional arguments, as in
    C{netdemo ping tcp host:7 -c 3} (Twisted's parser stops at the first
    positional argument).
    """

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        argv = list(sys.argv[1:] if options is None else options)
        try:
            found, positional = getopt.gnu_getopt(argv, self.shortOpt, self.longOpt)
        except getopt.GetoptError as e:
            raise usage.UsageError(str(e)) from None
        ordered: list[str] = []
        for name, value in found:
            takesValue = (
                name[2:] + "=" in self.longOpt
                if name.startswith("--")
                else name[1:] + ":" in self.shortOpt
            )
            ordered.extend([name, value] if takesValue else [name])
        super().parseOptions([*ordered, "--", *positional])

    def getUsage(self, width: int | None = None) -> str:
        """
        The usage text, with the description's paragraphs wrapped one by one
        and its indented lines (the examples) kept as they are.
        """
        import textwrap

        description = getattr(self, "longdesc", "")
        self.longdesc = ""
        try:
            text = super().getUsage(width)
        finally:
            del self.longdesc
        paragraphs = []
        for paragraph in description.split("\n\n"):
            if paragraph.startswith(" ") or paragraph.startswith("Examples:"):
                paragraphs.append(paragraph)
            else:
                paragraphs.append(textwrap.fill(paragraph, width or 80))
        return text + "\n" + "\n\n".join(paragraphs) + "\n"


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
        ["count", "c", 5, "Probes to send", _countCoerce],
        [
            "interval",
            "i",
            1.0,
            "Seconds between probes",
            _positive(float, "a number above 0"),
        ],
        [
            "size",
            "s",
            64,
            f"Probe size in bytes (at least {PROBE_HEADER})",
            _positive(int, "a whole number above 0"),
        ],
        [
            "timeout",
            "W",
            2.0,
            "Seconds to wait for each answer",
            _positive(float, "a number above 0"),
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
    ) -> None:
        self.reactor = reactor
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
        print(
            f"{len(data)} bytes from {self.target}: seq={seq} time={rtt * 1000:.3f} ms",
            flush=True,
        )
        self._settled()

    def _timeout(self, seq: int) -> None:
        self.outstanding.pop(seq, None)
        print(
            f"no answer from {self.target}: seq={seq} "
            f"(timeout {self.options['timeout']:g} s)",
            flush=True,
        )
        self._settled()

    def refused(self) -> None:
        self.stats.refused += 1
        print(f"refused by {self.target} (ICMP port unreachable)", flush=True)

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


@implementer(IHalfCloseableDescriptor)
class RefusalTolerantPort(udp.Port):
    """
    A connected UDP port that survives ICMP "port unreachable".

    On epoll, Twisted sees the socket error that an ICMP refusal leaves on a
    connected UDP socket as C{EPOLLERR} without C{EPOLLIN} and closes the
    port (twisted/twisted#6467).  Declaring the port half-closeable routes
    that to L{readConnectionLost}, where a pending C{ECONNREFUSED} is read
    (which clears it), reported to the protocol, and reading resumes.
    """

    def readConnectionLost(self, reason: Any) -> None:
        try:
            pending = self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        except OSError:
            pending = 0
        if pending == errno.ECONNREFUSED:
            self.protocol.connectionRefused()
            self.startReading()
            return
        self.connectionLost(reason)


class _UDPPingProtocol(DatagramProtocol):
    def __init__(self) -> None:
        self.pinger: _Pinger | None = None

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        if self.pinger is not None:
            self.pinger.answer(data)

    def connectionRefused(self) -> None:
        if self.pinger is not None:
            self.pinger.refused()


async def runPing(reactor: Any, options: PingOptions) -> int:
    """
    Run C{netdemo ping}.

    @return: The exit status.
    """
    from twisted.internet.endpoints import HostnameEndpoint, connectProtocol

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
            raise CommandError(f"cannot connect to {target}: {_why(e)}") from None
        pinger = _Pinger(reactor, options, target, tcp.transport.write)  # type: ignore[union-attr]
        tcp.pinger = pinger
        tcp.lost.addCallback(lambda _: pinger.stop())
        close: Callable[[], object] = tcp.transport.loseConnection  # type: ignore[union-attr]
    else:
        family, sockaddr = await resolve(host, port, socket.SOCK_DGRAM)
        datagrams = _UDPPingProtocol()
        listening = RefusalTolerantPort(
            0,
            datagrams,
            interface="::" if family == socket.AF_INET6 else "0.0.0.0",
            reactor=reactor,
        )
        listening.startListening()
        listening.connect(sockaddr[0], sockaddr[1])
        pinger = _Pinger(reactor, options, target, listening.write)
        datagrams.pinger = pinger
        close = listening.stopListening
    print(
        f"PING {target} {options['protocol']} echo: {options['size']} bytes per probe",
        flush=True,
    )
    interrupted.addCallback(lambda _: pinger.stop())
    pinger.start()
    await pinger.done
    close()
    print(
        pinger.stats.summary(target, options["protocol"], time.perf_counter() - began)
    )
    return pinger.stats.exitCode()


def _why(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


# ---------------------------------------------------------------------------
# the command


def _lazy(name: str) -> Callable[..., Any]:
    """
    A callable that imports C{name} (a dotted name) when first called and
    calls it, so that each subcommand's module is imported only when used.
    """

    def call(*args: Any) -> Any:
        return namedAny(name)(*args)

    return call


class NetdemoOptions(usage.Options):
    """
    C{netdemo COMMAND ...}.
    """

    synopsis = "netdemo COMMAND [options]"
    longdesc = (
        "Clients for the netdemo services. 'netdemo COMMAND --help' shows each "
        "command's options and examples."
    )
    subCommands: list[list[Any]] = [
        ["ping", None, PingOptions, "Echo round trips over TCP or UDP, like ping"],
        [
            "chat",
            None,
            _lazy("netdemo.clients.hub.ChatOptions"),
            "A line client for the pub/sub hub that reconnects",
        ],
        [
            "tail",
            None,
            _lazy("netdemo.clients.hub.TailOptions"),
            "Subscribe to the pub/sub hub and print what arrives",
        ],
        [
            "pub",
            None,
            _lazy("netdemo.clients.hub.PubOptions"),
            "Publish to the pub/sub hub and exit once acknowledged",
        ],
        [
            "mcast",
            None,
            _lazy("netdemo.clients.mcast.McastOptions"),
            "Probe a multicast group, or join it and listen",
        ],
    ]

    def postOptions(self) -> None:
        if self.subCommand is None:
            names = ", ".join(str(c[0]) for c in self.subCommands)
            raise usage.UsageError(f"say which command: {names}")


RUNNERS: dict[str, Callable[[Any, Any], Any]] = {
    "ping": runPing,
    "chat": _lazy("netdemo.clients.hub.runChat"),
    "tail": _lazy("netdemo.clients.hub.runTail"),
    "pub": _lazy("netdemo.clients.hub.runPub"),
    "mcast": _lazy("netdemo.clients.mcast.runMcast"),
}


def fail(message: str) -> NoReturn:
    """
    Print one line to standard error and exit with status 2.
    """
    print(f"netdemo: {message}", file=sys.stderr)
    raise SystemExit(EXIT_ERROR)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """
    The C{netdemo} console script.
    """
    from twisted.internet import task

    options = NetdemoOptions()
    try:
        options.parseOptions(list(sys.argv[1:] if argv is None else argv))
    except usage.UsageError as e:
        fail(str(e))
    assert options.subCommand is not None
    runner = RUNNERS[options.subCommand]

    async def run(reactor: Any) -> None:
        try:
            code = await runner(reactor, options.subOptions)
        except CommandError as e:
            fail(str(e))
        raise SystemExit(code)

    task.react(lambda reactor: _ensure(run(reactor)))


def _ensure(coroutine: Any) -> Deferred[Any]:
    from twisted.internet.defer import ensureDeferred

    return ensureDeferred(coroutine)
