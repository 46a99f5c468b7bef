# -*- test-case-name: tests.test_udpecho -*-
"""
The plumbing of every datagram service: where it listens, and the one way
to listen, say so and stop.

  - L{ListenAddress} and L{parseListenAddress}: C{[ADDRESS:]PORT} or
    C{systemd:NAME};
  - L{DatagramService}: one socket per address (a bare port is every IPv4
    and every IPv6 address), one protocol instance per socket, the
    C{listening} event and C{netdemo_listener_info} through
    L{ListenerReport}, a socket that cannot be bound ending start-up
    (L{exitOnBindFailure}); subclasses choose the port type.

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
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from zope.interface import implementer

from netdemo.listening import IListener, ListenerReport, exitOnBindFailure
from netdemo.logs import formatAddress
from netdemo.metrics import IMetrics

__all__ = [
    "MAX_PACKET_SIZE",
    "DatagramService",
    "ListenAddress",
    "inheritedDatagramSocket",
    "parseListenAddress",
]

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
    Listen for datagrams on several addresses with one protocol instance
    per socket.

    A port that cannot be bound fails start-up, except the IPv6 half of a
    bare port on a host without IPv6, which is logged and skipped.
    Subclasses may override L{listenOn} and L{adopt} to use their own port
    type.

    @ivar ports: The listening ports.
    @ivar protocols: Their protocols.
    @ivar report: The C{listening} events and C{netdemo_listener_info}.
    """

    _log = Logger()

    def __init__(
        self,
        name: str,
        addresses: Iterable[ListenAddress],
        protocolFactory: Callable[[], DatagramProtocol],
        reactor: Any,
        metrics: IMetrics | None = None,
    ) -> None:
        self.setName(name)
        self.metrics = metrics
        self.report = ListenerReport(name, metrics)
        self.addresses = list(addresses)
        self.protocolFactory = protocolFactory
        self.reactor = reactor
        self.ports: list[IListeningPort] = []
        self.protocols: list[Any] = []

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

    def privilegedStartService(self) -> None:
        if not self.ports:
            exitOnBindFailure(self._listenAll)
        super().privilegedStartService()

    def startService(self) -> None:
        if not self.ports:
            exitOnBindFailure(self._listenAll)
        super().startService()

    def whenListening(self) -> Deferred[bool]:
        # Datagram sockets are bound synchronously, in start-up.
        return succeed(bool(self.ports))

    def _listenAll(self) -> None:
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
        Keep, report and log one bound socket.

        @return: Its port number.
        """
        self.ports.append(port)
        self.protocols.append(proto)
        h: Any = port.getHost()
        self.report.bound(formatAddress(h), str(address))
        # Port 0 on a bare port: the IPv6 socket takes the IPv4 one's.
        return int(h.port)

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        ports, self.ports = self.ports, []
        self.report.closed()
        return gatherResults(
            [maybeDeferred(p.stopListening) for p in ports], consumeErrors=True
        ).addErrback(lambda f: self._log.failure("stopping", f))
