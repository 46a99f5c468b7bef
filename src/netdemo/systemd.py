# -*- test-case-name: tests.test_systemd -*-
"""
What Twisted does not do for a systemd service: C{sd_notify} and datagram
socket activation.

  - L{Notifier} sends C{sd_notify} datagrams (C{READY=1}, C{STATUS=...},
    C{WATCHDOG=1}, C{STOPPING=1}) to C{$NOTIFY_SOCKET}.  Without that
    variable it does nothing at all.
  - L{NotifyService} is added last to the daemon's top service: it sends
    C{READY=1} with a C{STATUS=} summary once every listener of its siblings
    is bound, pets the watchdog from the reactor every half
    C{$WATCHDOG_USEC}, and sends C{STOPPING=1} when shutdown begins.
  - L{inheritedDescriptor} and L{adoptDatagramPort} adopt a datagram socket
    handed over by a C{.socket} unit (C{ListenDatagram=}), which Twisted's
    C{systemd:} endpoint cannot do (it is for stream sockets only).  The
    UDP service's C{--udp systemd:NAME} is meant to call, in its
    C{startService}, C{adoptDatagramPort(reactor, inheritedDescriptor(NAME),
    protocol)} (see "For developers" in C{docs/operations.md}).
"""

from __future__ import annotations

import os
import platform
import socket
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from twisted.application.service import IServiceCollection, Service
from twisted.copyright import version as twistedVersion
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.systemd import ListenFDs

from netdemo import __version__
from netdemo.internals import SD_LISTEN_FDS_START, inheritedListenFDs
from netdemo.listening import LISTENER_METRIC, IListener
from netdemo.metrics import IMetrics

__all__ = [
    "Notifier",
    "listeningSummary",
    "NotifyService",
    "adoptDatagramPort",
    "inheritedDescriptor",
]


class Notifier:
    """
    Send state changes to systemd over C{$NOTIFY_SOCKET}, as C{sd_notify(3)}
    does.

    @ivar address: The socket address, or L{None} when not run by systemd
        with C{Type=notify} (then every call does nothing).
    """

    _log = Logger()

    def __init__(self, address: str | None) -> None:
        if address and address.startswith("@"):
            # Abstract namespace: a leading NUL byte instead of the "@".
            address = "\0" + address[1:]
        self.address = address or None
        self._socket: socket.socket | None = None

    @classmethod
    def fromEnvironment(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """
        A notifier for C{$NOTIFY_SOCKET} of C{environ} (the process
        environment by default).
        """
        if environ is None:
            environ = os.environ
        return cls(environ.get("NOTIFY_SOCKET"))

    def notify(self, **fields: str) -> bool:
        """
        Send one datagram with C{KEY=value} lines, keys upper-cased:
        C{notify(ready="1", status="Serving")}.

        Newlines in values are replaced by spaces: each field is one line.

        @return: Whether a datagram was sent.
        """
        if self.address is None:
            return False
        message = "".join(
            f"{key.upper()}={' '.join(str(value).splitlines())}\n"
            for key, value in fields.items()
        ).encode("utf-8")
        try:
            if self._socket is None:
                self._socket = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                )
                # Never block the reactor on a full notify queue.
                self._socket.setblocking(False)
            self._socket.sendto(message, self.address)
        except OSError as e:
            self._log.warn(
                "sd_notify to {address!r} failed: {error}",
                event="notify_failed",
                address=self.address,
                error=str(e),
            )
            return False
        return True

    def close(self) -> None:
        """
        Close the socket (a later L{notify} opens a new one).
        """
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _listeners(service: Any) -> Iterable[IListener]:
    """
    The services below C{service} (itself included) that listen.
    """
    if IListener.providedBy(service):
        yield service
    if IServiceCollection.providedBy(service):
        for child in service:
            yield from _listeners(child)


def listeningSummary(metrics: IMetrics) -> str:
    """
    One line naming every listener, for systemd's C{STATUS=}.
    """
    bound: dict[str, list[str]] = {}
    for sample in metrics.samples():
        if sample.name == LISTENER_METRIC and sample.value:
            labels = sample.labelDict
            bound.setdefault(labels["service"], []).append(labels["address"])
    listeners = "; ".join(
        f"{service} on {', '.join(sorted(addresses))}"
        for service, addresses in sorted(bound.items())
    )
    return f"Listening: {listeners}" if listeners else "Listening on nothing"


class NotifyService(Service):
    """
    The daemon's side of C{Type=notify}.

    Add it to the top service I{after} every other child: services start in
    the order they were added and stop in the reverse order, so it starts
    when the others have started listening and stops first.

    @ivar summary: Returns the one-line C{STATUS=} text sent with
        C{READY=1}.
    """

    _log = Logger()

    def __init__(
        self,
        notifier: Notifier,
        summary: Callable[[], str],
        reactor: Any,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.setName("sd_notify")
        self.notifier = notifier
        self.summary = summary
        self.reactor = reactor
        self.environ = os.environ if environ is None else environ
        self._watchdog: LoopingCall | None = None
        self.ready: Deferred[None] | None = None

    def watchdogInterval(self) -> float | None:
        """
        Seconds between two C{WATCHDOG=1}: half of C{$WATCHDOG_USEC}, or
        L{None} when systemd does not watch this process.
        """
        pid = self.environ.get("WATCHDOG_PID")
        if pid and pid != str(os.getpid()):
            return None
        try:
            usec = int(self.environ.get("WATCHDOG_USEC", ""))
        except ValueError:
            return None
        if usec <= 0:
            return None
        return usec / 2e6

    def startService(self) -> None:
        super().startService()
        waiting = []
        if self.parent is not None:
            waiting = [listener.whenListening() for listener in _listeners(self.parent)]
        self.ready = DeferredList(waiting).addCallback(self._ready)
        interval = self.watchdogInterval()
        if interval is not None and self.notifier.address is not None:
            self._watchdog = LoopingCall(self.notifier.notify, watchdog="1")
            self._watchdog.clock = self.reactor
            self._watchdog.start(interval, now=True)

    def _ready(self, bound: list[tuple[bool, Any]]) -> None:
        if not self.running:
            return
        if not all(ok and result for ok, result in bound):
            self._log.error("not ready: a listener failed to start", event="not_ready")
            return
        status = self.summary()
        self.notifier.notify(ready="1", status=status, mainpid=str(os.getpid()))
        self._log.info(
            "netdemo {version} ready (Twisted {twisted}, {python}, reactor "
            "{reactor}): {status}",
            event="ready",
            status=status,
            version=__version__,
            twisted=twistedVersion,
            python=f"{platform.python_implementation()} {platform.python_version()}",
            reactor=type(self.reactor).__qualname__,
        )

    def stopService(self) -> None:
        if self._watchdog is not None and self._watchdog.running:
            self._watchdog.stop()
        self._watchdog = None
        self.notifier.notify(stopping="1", status="Stopping")
        self._log.info("stopping", event="stopping")
        super().stopService()


def inheritedDescriptor(
    name: str,
    environ: Mapping[str, str] | None = None,
    start: int = SD_LISTEN_FDS_START,
) -> int:
    """
    The file descriptor that systemd passed with C{FileDescriptorName=name}.

    With the default C{environ}, this asks the instance that Twisted's
    C{systemd:} endpoint parser built when C{twisted.internet.endpoints} was
    imported: building it removed C{LISTEN_PID} and C{LISTEN_FDS} from the
    environment, so a new L{ListenFDs} would find nothing.

    @param environ: An environment to read instead (tests).
    @param start: The first inherited descriptor (3 under systemd).
    @raise KeyError: No descriptor of that name was passed, naming the ones
        that were.
    """
    if environ is None:
        fds = inheritedListenFDs()
    else:
        fds = ListenFDs.fromEnvironment(dict(environ), start)
    named = fds.inheritedNamedDescriptors()
    if name not in named:
        passed = ", ".join(sorted(named)) or "none"
        raise KeyError(
            f"systemd passed no socket named {name!r} (names passed: {passed}; "
            "set FileDescriptorName= in the .socket unit)"
        )
    return named[name]


def adoptDatagramPort(
    reactor: Any,
    fd: int,
    protocol: DatagramProtocol,
    maxPacketSize: int = 65535,
) -> IListeningPort:
    """
    Serve C{protocol} on an inherited, already bound datagram socket.

    The socket is made non-blocking first: systemd passes it blocking
    (C{NonBlocking=} defaults to false), and a blocking socket would freeze
    the reactor in C{recvfrom()}.  The reactor listens on a duplicate of
    C{fd}; C{fd} itself stays open.

    @param maxPacketSize: The read size; larger datagrams would be cut.
    @raise ValueError: C{fd} is not a datagram socket.
    """
    probe = socket.socket(fileno=fd)
    try:
        family, kind = probe.family, probe.type
    finally:
        probe.detach()
    if kind != socket.SOCK_DGRAM:
        raise ValueError(f"descriptor {fd} is not a datagram socket ({kind!r})")
    os.set_blocking(fd, False)
    port: IListeningPort = reactor.adoptDatagramPort(
        fd, family, protocol, maxPacketSize
    )
    return port
