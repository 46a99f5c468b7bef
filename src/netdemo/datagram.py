# -*- test-case-name: tests.test_datagram -*-
"""
The plumbing of every datagram service: where it listens, and the one way
to listen, say so and stop.

  - L{ListenAddress} and L{parseListenAddress}: C{[ADDRESS:]PORT} or
    C{systemd:NAME};
  - L{DatagramService}: the base of every datagram listener (UDP echo, the
    multicast responder): the C{listening} event and
    C{netdemo_listener_info} with the same address through
    L{ListenerReport}, a socket that cannot be bound ending start-up
    (L{exitOnBindFailure}), L{IListener}, and stopping;
  - L{UnicastService}: one socket per address (a bare port is every IPv4
    and every IPv6 address), one protocol instance per socket; subclasses
    choose the port type;
  - L{listenConnected}: the ephemeral connected socket of a prober
    (C{--udp-peer}, C{netdemo ping udp}), which survives ICMP errors;
  - L{stopPorts}, L{AfterReading}: stopping sockets, and judging silence
    only after reading what has arrived.

Datagram sockets are read whole: L{MAX_PACKET_SIZE}, not Twisted's default
of 8192, which silently cuts larger datagrams.  The services refuse what is
over their own cap instead.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from collections.abc import Callable, Iterable
from typing import Any

from attrs import frozen
from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IReactorFDSet
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from zope.interface import implementer

from netdemo.internals import RefusalTolerantPort
from netdemo.listening import IListener, ListenerReport, exitOnBindFailure
from netdemo.logs import formatAddress
from netdemo.metrics import IMetrics

__all__ = [
    "MAX_PACKET_SIZE",
    "DatagramService",
    "ListenAddress",
    "AfterReading",
    "UnicastService",
    "inheritedDatagramSocket",
    "listenConnected",
    "parseListenAddress",
    "stopPorts",
]

_log = Logger()

#: Read whole datagrams, whatever their size.
MAX_PACKET_SIZE = 65535


@frozen
class ListenAddress:
    """
    Where a datagram service listens.

    @ivar host: An IP address; C{""} for every IPv4 and IPv6 address.
    @ivar port: The UDP port (0 picks one).
    @ivar systemdName: The C{FileDescriptorName} of a socket inherited from
        systemd, instead of C{host} and C{port}.
    """

    host: str
    port: int
    systemdName: str | None = None

    def __str__(self) -> str:
        if self.systemdName is not None:
            return f"systemd:{self.systemdName}"
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}" if self.host else str(self.port)


def parseListenAddress(value: str) -> ListenAddress:
    """
    Parse C{[ADDRESS:]PORT}: C{9000}, C{127.0.0.1:9000}, C{[::1]:9000}, or
    C{systemd:NAME} for a socket systemd passes (looked up at start, when
    the descriptors are there).

    @raise ValueError: Naming the value, when it is not one of those.
    """
    text = value.strip()
    if text.startswith("systemd:"):
        name = text[len("systemd:") :]
        if not name or not all(c.isalnum() or c in "-_.:" for c in name):
            raise ValueError(f"{value!r}: systemd:NAME needs the FileDescriptorName")
        return ListenAddress("", 0, name)
    host = ""
    portText = text
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise ValueError(f"{value!r} is not [ADDRESS]:PORT")
        host, portText = text[1:end], text[end + 2 :]
    elif ":" in text:
        if text.count(":") > 1:
            raise ValueError(f"{value!r}: write an IPv6 address as [ADDRESS]:PORT")
        host, portText = text.split(":")
    if host:
        try:
            host = str(ipaddress.ip_address(host))
        except ValueError:
            raise ValueError(f"{value!r}: {host!r} is not an IP address") from None
    if not portText.isdigit() or not 0 <= int(portText) <= 65535:
        raise ValueError(f"{value!r}: port {portText!r} is not between 0 and 65535")
    return ListenAddress(host, int(portText))


def inheritedDatagramSocket(name: str) -> tuple[int, int]:
    """
    The datagram socket that systemd passed with C{FileDescriptorName=name},
    made non-blocking (systemd passes it blocking, which would freeze the
    reactor in C{recvmsg}).

    @return: Its descriptor and address family.
    @raise CannotListenError: No such socket, or not a UDP socket.
    """
    from netdemo.systemd import inheritedDescriptor

    try:
        fd = inheritedDescriptor(name)
    except KeyError as e:
        raise CannotListenError("", 0, e.args[0]) from None
    probe = socket.socket(fileno=fd)
    try:
        family, kind = probe.family, probe.type
    finally:
        probe.detach()
    if kind != socket.SOCK_DGRAM or family not in (socket.AF_INET, socket.AF_INET6):
        raise CannotListenError("", 0, f"systemd socket {name!r} is not a UDP socket")
    os.set_blocking(fd, False)
    return fd, family


def _hostsFor(address: ListenAddress) -> list[str]:
    """
    The socket addresses for one listen address: a bare port means every
    IPv4 and every IPv6 address.
    """
    if address.host:
        return [address.host]
    return ["0.0.0.0", "::"] if socket.has_ipv6 else ["0.0.0.0"]


def _noIPv6(e: Exception) -> bool:
    """
    Whether a failure to bind says that the host has no IPv6.
    """
    socketError = getattr(e, "socketError", None)
    return getattr(socketError, "errno", None) in (
        errno.EAFNOSUPPORT,
        errno.EADDRNOTAVAIL,
        errno.EPROTONOSUPPORT,
    )


@implementer(IListener)
class DatagramService(Service):
    """
    The one way a datagram service listens, says so and stops: subclasses
    bind their sockets in L{listenAll} and hand each to L{listened}.

    A socket that cannot be bound ends start-up (L{exitOnBindFailure}).
    Every bound socket is one C{listening} event and one
    C{netdemo_listener_info} series with the same address (L{report}).

    @ivar ports: The listening ports.
    @ivar protocols: Their protocols.
    @ivar report: The C{listening} events and C{netdemo_listener_info}.
    """

    _log = Logger()

    def __init__(
        self, name: str, reactor: Any, metrics: IMetrics | None = None
    ) -> None:
        self.setName(name)
        self.metrics = metrics
        self.report = ListenerReport(name, metrics)
        self.reactor = reactor
        self.ports: list[IListeningPort] = []
        self.protocols: list[Any] = []

    def listenAll(self) -> None:
        """
        Bind every socket of the service, each through L{listened}.

        @raise CannotListenError: (Or C{OSError}) A socket cannot be bound.
        """
        raise NotImplementedError

    def listened(
        self,
        port: IListeningPort,
        proto: DatagramProtocol,
        address: str,
        description: str,
        detail: str = "",
    ) -> None:
        """
        Keep, report and log one bound socket.

        @param address: What it listens on, as logged and labelled.
        @param description: The option value it came from.
        @param detail: More about it for the same log line, or C{""}.
        """
        self.ports.append(port)
        self.protocols.append(proto)
        self.report.bound(address, description, detail)

    def stopping(self) -> None:
        """
        Called at stop, while the sockets are still open (a goodbye).
        """

    def privilegedStartService(self) -> None:
        if not self.ports:
            exitOnBindFailure(self.listenAll)
        super().privilegedStartService()

    def startService(self) -> None:
        if not self.ports:
            exitOnBindFailure(self.listenAll)
        super().startService()

    def whenListening(self) -> Deferred[bool]:
        # Datagram sockets are bound synchronously, in start-up.
        return succeed(bool(self.ports))

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        if self.ports:
            self.stopping()
        ports, self.ports = self.ports, []
        self.report.closed()
        return stopPorts(ports)


class UnicastService(DatagramService):
    """
    Listen for datagrams on C{[ADDRESS:]PORT}s with one protocol instance
    per socket: a bare port is every IPv4 and every IPv6 address; a socket
    systemd passes (C{systemd:NAME}) is adopted.

    A port that cannot be bound fails start-up, except the IPv6 half of a
    bare port on a host without IPv6, which is logged and skipped.
    Subclasses may override L{listenOn} and L{adopt} to use their own port
    type.
    """

    def __init__(
        self,
        name: str,
        addresses: Iterable[ListenAddress],
        protocolFactory: Callable[[], DatagramProtocol],
        reactor: Any,
        metrics: IMetrics | None = None,
    ) -> None:
        super().__init__(name, reactor, metrics)
        self.addresses = list(addresses)
        self.protocolFactory = protocolFactory

    def listenOn(self, host: str, port: int, proto: DatagramProtocol) -> IListeningPort:
        """
        Listen on C{host}:C{port} with C{proto}.
        """
        listening: IListeningPort = self.reactor.listenUDP(
            port, proto, host, MAX_PACKET_SIZE
        )
        return listening

    def adopt(self, name: str, proto: DatagramProtocol) -> IListeningPort:
        """
        Serve C{proto} on the datagram socket systemd passed as C{name}.
        """
        fd, family = inheritedDatagramSocket(name)
        from netdemo.systemd import adoptDatagramPort

        return adoptDatagramPort(self.reactor, fd, proto, MAX_PACKET_SIZE)

    def listenAll(self) -> None:
        for address in self.addresses:
            if address.systemdName is not None:
                proto = self.protocolFactory()
                self._listened(self.adopt(address.systemdName, proto), proto, address)
                continue
            number = address.port
            for host in _hostsFor(address):
                proto = self.protocolFactory()
                try:
                    port = self.listenOn(host, number, proto)
                except CannotListenError as e:
                    if host == "::" and not address.host and _noIPv6(e):
                        self._log.warn(
                            "{service}: no IPv6 on this host; {address} listens "
                            "on IPv4 only",
                            event="ipv6_unavailable",
                            service=self.name,
                            address=str(address),
                        )
                        continue
                    raise
                number = self._listened(port, proto, address)

    def _listened(
        self, port: IListeningPort, proto: DatagramProtocol, address: ListenAddress
    ) -> int:
        """
        L{listened}, with the address the socket is bound to.

        @return: Its port number.
        """
        h: Any = port.getHost()
        self.listened(port, proto, formatAddress(h), str(address))
        # Port 0 on a bare port: the IPv6 socket takes the IPv4 one's.
        return int(h.port)


def stopPorts(ports: Iterable[IListeningPort]) -> Deferred[Any]:
    """
    Stop listening on C{ports}; a failure to stop one is logged.

    @return: A L{Deferred} that fires once all have stopped.
    """
    return gatherResults(
        [maybeDeferred(p.stopListening) for p in ports], consumeErrors=True
    ).addErrback(lambda f: _log.failure("stopping", f))


def listenConnected(
    reactor: Any, proto: DatagramProtocol, ipv6: bool
) -> IListeningPort:
    """
    Listen on an ephemeral port of the wildcard address for C{proto}, which
    connects it to its one peer in C{startProtocol}: a
    L{RefusalTolerantPort} (an ICMP error is reported to the protocol and
    reading goes on) on reactors with file descriptors, the reactor's
    C{listenUDP} otherwise.  Datagrams are read whole.
    """
    interface = "::" if ipv6 else ""
    if IReactorFDSet.providedBy(reactor):
        port = RefusalTolerantPort(0, proto, interface, MAX_PACKET_SIZE, reactor)
        port.startListening()
        return port
    listening: IListeningPort = reactor.listenUDP(0, proto, interface, MAX_PACKET_SIZE)
    return listening


class AfterReading:
    """
    Calls to make once the reactor has read what is waiting on its sockets.

    For a decision about silence ("no beacon for three intervals", "no
    reply within the timeout") taken in a timed call.  After the process
    stood still (a loaded host, a long write to the log), the reactor runs
    the timed calls that are due I{before} it reads the datagrams that
    arrived meanwhile: a timed call would find a peer silent whose beacons
    are waiting unread.  A call scheduled now for no later than now runs on
    the reactor's next iteration, after it has polled and read its sockets
    (C{tests.test_datagram} checks this on the real reactor).  On a
    L{Clock} it runs at the next C{advance}, even C{advance(0)}.

    At most one call of each name is pending: while one is, it does the
    work.  L{cancel} cancels them all (at stop).
    """

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self._pending: dict[str, IDelayedCall] = {}

    def call(self, name: str, f: Callable[..., object], *args: Any) -> None:
        """
        Call C{f(*args)} once what is waiting has been read, unless a call
        named C{name} is pending already.
        """
        pending = self._pending.get(name)
        if pending is None or not pending.active():
            self._pending[name] = self.clock.callLater(0, f, *args)

    def cancel(self) -> None:
        """
        Cancel the pending calls.
        """
        pending, self._pending = self._pending, {}
        for call in pending.values():
            if call.active():
                call.cancel()
