# -*- test-case-name: tests.test_cli_mcast -*-
"""
C{netdemo mcast probe} and C{netdemo mcast listen}: the client side of the
multicast responder (C{--multicast}, C{docs/multicast.md}).

A probe is a datagram to the group that starts with C{Notify} and is at
least 11 bytes long; every responder on the group answers it by unicast with
C{Acknowledge}, from the group's port.  The answer carries no sequence
number, so an answer counts for the latest probe sent within C{--timeout}.
Responders on one host answer from the same address: they are counted
together, as the number of answers per probe from that address.

Beacons are datagrams to the group: C{NDBEACON } and a JSON object with the
instance's id, host name, services, sequence number and interval
(C{"bye": true} on shutdown).

The formats and the socket options are L{netdemo.mcastwire}'s, shared with
the responder.  Everything is written through the L{Console} given.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Sequence
from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol
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
    whenInterrupted,
    why,
)
from netdemo.datagram import MAX_PACKET_SIZE
from netdemo.mcastwire import (
    ANSWER,
    BEACON,
    BadBeacon,
    Membership,
    decodeBeacon,
    interfaceMismatch,
    interfaceOf,
    needsInterface,
    probeDatagram,
    routeSource,
)

__all__ = ["ListenOptions", "McastOptions", "ProbeOptions", "runMcast"]


def parseGroup(value: str) -> tuple[str, int, bool]:
    """
    Parse C{GROUP:PORT} (IPv6 groups in brackets).

    @return: C{(group, port, ipv6)}.
    @raise usage.UsageError: Naming the value, if it is no multicast group
        and port.
    """
    host, port = parseHostPort(value, "group")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise usage.UsageError(
            f"group {value!r}: {host!r} is not an IP address"
        ) from None
    if not address.is_multicast:
        raise usage.UsageError(f"group {value!r}: {host} is not a multicast address")
    if port == 0:
        raise usage.UsageError(f"group {value!r}: port 0 cannot be reached")
    return host, port, address.version == 6


def _ttlCoerce(value: str) -> int:
    """
    Coerce C{--ttl}: 1 to 255.
    """
    if not (value.isdigit() and len(value) <= 3 and 1 <= int(value) <= 255):
        raise ValueError(f"{value!r} is not a whole number from 1 to 255")
    return int(value)


_ttlCoerce.coerceDoc = "From 1 to 255."  # type: ignore[attr-defined]


class _GroupOptions(GnuOptions):
    """
    What both C{mcast} commands take: the group and the interface.

    After parsing, C{membership} is the group on the interface (a name
    already checked), C{group}, C{port} and C{ipv6} the group's.
    """

    optParameters: list[list[Any]] = [
        [
            "interface",
            "I",
            None,
            "Interface: an IPv4 address or a name (eth0) for IPv4 groups, a name "
            "or index for IPv6 groups [default: chosen by route]",
        ]
    ]

    def parseArgs(self, target: str) -> None:  # type: ignore[override]
        self["group"], self["port"], self["ipv6"] = parseGroup(target)

    def postOptions(self) -> None:
        interface = self["interface"]
        membership = self["membership"] = Membership(self["group"], interface or "")
        if interface is None:
            if needsInterface(self["group"]):
                raise usage.UsageError(
                    f"group {self['group']} is link- or interface-local: "
                    "say which --interface"
                )
            return
        if interfaceMismatch(self["ipv6"], interface):
            raise usage.UsageError(
                f"--interface {interface!r}: give an interface name for IPv6 "
                "groups and an IPv4 address or a name for IPv4 groups"
            )
        try:
            membership.interfaceIndex()
        except OSError:
            raise usage.UsageError(
                f"--interface {interface!r}: no such interface"
            ) from None

    @property
    def target(self) -> str:
        """
        C{GROUP:PORT}, as people write it.
        """
        return formatHostPort(self["group"], self["port"])


class ProbeOptions(_GroupOptions):
    """
    C{netdemo mcast probe GROUP:PORT}: who answers on a group, with loss
    and round-trip times.
    """

    synopsis = "GROUP:PORT [--interface ADDR|NAME] [--ttl N] [-c COUNT] [-i S] [-W S]"
    longdesc = (
        "Probe a multicast group and list every responder with its loss and "
        "round-trip times. Each probe ('Notify NNNN ...') goes to the group; "
        "every netdemo responder on it answers by unicast ('Acknowledge'). An "
        "answer counts for the latest probe, if it comes within --timeout. "
        "Responders on one host share an address and are counted together "
        "(answers per probe). Exit status: 0 when some responder answered and "
        "none missed a probe, 1 when none answered or some probes went "
        "unanswered, 2 on error.\n\n"
        "Examples:\n"
        "  netdemo mcast probe 239.255.80.1:8001 --interface 127.0.0.1\n"
        "  netdemo mcast probe 224.0.0.1:8001 -I eth0 -c 10 -i 0.5\n"
        "  netdemo mcast probe [ff05::80:1]:8001 -I eth0 --ttl 4"
    )
    optParameters: list[list[Any]] = [
        ["ttl", "t", 1, "Multicast TTL (IPv6 hop limit) of the probes", _ttlCoerce],
        ["count", "c", 3, "Probes to send", countCoerce],
        [
            "interval",
            "i",
            1.0,
            "Seconds between probes",
            positive(float, "a number above 0"),
        ],
        [
            "timeout",
            "W",
            1.0,
            "Seconds to wait for answers to each probe",
            positive(float, "a number above 0"),
        ],
    ]


class ListenOptions(_GroupOptions):
    """
    C{netdemo mcast listen GROUP:PORT}.
    """

    synopsis = "GROUP:PORT [--interface ADDR|NAME] [-c COUNT]"
    longdesc = (
        "Join a multicast group and print what arrives: netdemo beacons as one "
        "line each (host/id, sequence number, services; goodbyes too), probes "
        "and anything else with their sender and size. The port is shared with "
        "a netdemo responder on the same host. Ctrl-C prints a summary.\n\n"
        "Examples:\n"
        "  netdemo mcast listen 239.255.80.1:8001 --interface 127.0.0.1\n"
        "  netdemo mcast listen 224.0.0.1:8001 -I eth0 -c 5\n"
        "  netdemo mcast listen [ff02::80:1]:8001 -I eth0"
    )
    optParameters: list[list[Any]] = [
        ["count", "c", 0, "Datagrams to print before exiting", countCoerce]
    ]


class McastOptions(usage.Options):
    """
    C{netdemo mcast probe|listen ...}.
    """

    synopsis = "probe|listen GROUP:PORT [options]"
    longdesc = (
        "Clients of the multicast responder: 'probe' asks who is on a group, "
        "'listen' joins it and prints what arrives."
    )
    subCommands: list[list[Any]] = [
        ["probe", None, ProbeOptions, "Probe a group; list responders, loss, RTT"],
        ["listen", None, ListenOptions, "Join a group and print what arrives"],
    ]

    def getSynopsis(self) -> str:
        """
        This command's synopsis, or, as the start of C{probe}'s or
        C{listen}'s, C{Usage: netdemo mcast}.
        """
        if getattr(self, "subCommand", None) is not None and self.parent is not None:
            return f"{self.parent.getSynopsis()} {self.parent.subCommand}"
        return str(super().getSynopsis())

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("say which: mcast probe or mcast listen")


def _address(addr: Sequence[Any]) -> str:
    """
    C{host:port} of a datagram address.
    """
    return formatHostPort(str(addr[0]), int(addr[1]))


# ---------------------------------------------------------------------------
# probe


@define
class Responder:
    """
    What one responder address answered.
    """

    answers: int = 0
    perProbe: dict[int, int] = field(factory=dict)
    rtts: list[float] = field(factory=list)

    def line(self, address: str, sent: int) -> str:
        """
        The summary line of this address.
        """
        answered = len(self.perProbe)
        loss = 100.0 * (sent - answered) / sent if sent else 0.0
        many = max(self.perProbe.values(), default=0)
        ms = [r * 1000 for r in self.rtts]
        rtt = (
            f", rtt min/avg/max = {min(ms):.3f}/{sum(ms) / len(ms):.3f}/"
            f"{max(ms):.3f} ms"
            if ms
            else ""
        )
        who = f" ({many} responders)" if many > 1 else ""
        return (
            f"{address}{who}: {answered}/{sent} probes answered, {loss:.0f}% loss{rtt}"
        )


class _Prober(DatagramProtocol):
    """
    Send probes to the group on a timer and collect the answers.

    @ivar now: The clock of the round-trip times.
    """

    def __init__(
        self,
        reactor: Any,
        options: ProbeOptions,
        console: Console,
        now: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.reactor = reactor
        self.options = options
        self.console = console
        self.now = now
        self.destination = (options["group"], options["port"])
        self.sent = 0
        self.lastSent: float | None = None
        self.responders: dict[str, Responder] = {}
        self.done: Deferred[None] = Deferred()
        self._timer: Any = None

    def probe(self) -> None:
        """
        Send the next probe, and schedule the one after or the end.
        """
        self.sent += 1
        self.lastSent = self.now()
        try:
            self.transport.write(probeDatagram(self.sent), self.destination)  # type: ignore[union-attr]
        except OSError as e:
            self.finish(CommandError(f"cannot send to the group: {why(e)}"))
            return
        count = self.options["count"]
        if count and self.sent >= count:
            self._timer = self.reactor.callLater(self.options["timeout"], self.finish)
        else:
            self._timer = self.reactor.callLater(self.options["interval"], self.probe)

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        if not datagram.startswith(ANSWER) or self.lastSent is None:
            return
        rtt = self.now() - self.lastSent
        if rtt > self.options["timeout"]:
            return
        address = _address(addr)
        responder = self.responders.setdefault(address, Responder())
        responder.answers += 1
        responder.perProbe[self.sent] = responder.perProbe.get(self.sent, 0) + 1
        responder.rtts.append(rtt)
        self.console.say(
            f"{len(datagram)} bytes from {address}: seq={self.sent} "
            f"time={rtt * 1000:.3f} ms"
        )

    def finish(self, error: Exception | None = None) -> None:
        """
        Stop probing.
        """
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        if self.done.called:
            return
        if error is None:
            self.done.callback(None)
        else:
            self.done.errback(error)

    def summary(self, target: str) -> str:
        """
        The closing lines: one per responder address.
        """
        answered = plural(
            len(self.responders), "responder address", "responder addresses"
        )
        lines = [
            f"--- {target} multicast probe statistics ---",
            f"{plural(self.sent, 'probe')} sent, {answered} answered",
        ]
        for address in sorted(self.responders):
            lines.append(self.responders[address].line(address, self.sent))
        return "\n".join(lines)

    def exitCode(self) -> int:
        """
        0 when some responder answered and none missed a probe.
        """
        if not self.responders:
            return EXIT_LOST
        for responder in self.responders.values():
            if len(responder.perProbe) < self.sent:
                return EXIT_LOST
        return EXIT_OK


async def runProbe(
    reactor: Any, options: ProbeOptions, console: Console, interrupted: Deferred[None]
) -> int:
    """
    Probe the group until C{--count} probes were sent (and their answers
    had time to come) or C{interrupted} fires; print each answer and the
    summary.

    @return: The exit status: L{EXIT_OK} when some responder answered and
        none missed a probe.
    """
    target = options.target
    prober = _Prober(reactor, options, console)
    port = reactor.listenUDP(
        0, prober, "::" if options["ipv6"] else "", maxPacketSize=MAX_PACKET_SIZE
    )
    membership: Membership = options["membership"]
    handle = port.getHandle()
    try:
        if membership.interface:
            handle.setsockopt(*membership.outgoingInterface())
        handle.setsockopt(*membership.hops(options["ttl"]))
    except OSError as e:
        port.stopListening()
        raise CommandError(f"--interface {options['interface']!r}: {why(e)}") from None
    console.say(f"PROBE {target}: ttl {options['ttl']}")
    interrupted.addCallback(lambda _: prober.finish())
    prober.probe()
    try:
        await prober.done
    finally:
        await port.stopListening()
    console.say(prober.summary(target))
    if not prober.responders and not membership.interface:
        console.note(_noResponderHint(options))
    return prober.exitCode()


def _noResponderHint(options: ProbeOptions) -> str:
    """
    What to try when nobody answered probes sent without C{--interface}:
    which interface the kernel sent them out of, and C{-I}.
    """
    group, port = options["group"], options["port"]
    try:
        source = routeSource(group, port)
    except OSError as e:
        return (
            f"no responder answered, and the kernel has no route for {group} "
            f"({why(e)}): name the interface with -I"
        )
    name = interfaceOf(source)
    via = f"{name} ({source})" if name else source
    return (
        f"no responder answered; the probes left by {via}, the route's choice "
        f"for {group}: if the responders joined the group on another interface, "
        "name it with -I (an address or a name, e.g. -I 127.0.0.1 or -I eth0)"
    )


# ---------------------------------------------------------------------------
# listen


def describe(datagram: bytes, sender: str) -> str:
    """
    One line about a datagram heard on the group.
    """
    if datagram.startswith(BEACON):
        try:
            beacon = decodeBeacon(datagram)
        except BadBeacon:
            return f"malformed beacon from {sender}: {len(datagram)} bytes"
        return (
            f"{'goodbye' if beacon.bye else 'beacon'} from "
            f"{beacon.host}/{beacon.instance} ({sender}): seq={beacon.seq} "
            f"services={','.join(beacon.services)} interval={beacon.interval}"
        )
    text = datagram[:80].decode("utf-8", "replace")
    more = "..." if len(datagram) > 80 else ""
    return f"{len(datagram)} bytes from {sender}: {text!r}{more}"


class _Listener(DatagramProtocol):
    """
    Print what arrives on the group.
    """

    def __init__(self, count: int, console: Console) -> None:
        self.count = count
        self.console = console
        self.received = 0
        self.senders: set[str] = set()
        self.done: Deferred[None] = Deferred()

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        if self.done.called:
            return
        sender = _address(addr)
        self.received += 1
        self.senders.add(sender)
        self.console.say(describe(datagram, sender))
        if self.count and self.received >= self.count:
            self.done.callback(None)

    def stop(self) -> None:
        """
        Stop listening (Ctrl-C).
        """
        if not self.done.called:
            self.done.callback(None)


async def runListen(
    reactor: Any, options: ListenOptions, console: Console, interrupted: Deferred[None]
) -> int:
    """
    Join the group and print what arrives until C{--count} datagrams did or
    C{interrupted} fires, then the summary.

    @return: L{EXIT_OK}.
    """
    target = options.target
    listener = _Listener(options["count"], console)
    try:
        port = reactor.listenMulticast(
            options["port"],
            listener,
            "::" if options["ipv6"] else "",
            MAX_PACKET_SIZE,
            listenMultiple=True,
        )
    except Exception as e:
        raise CommandError(f"cannot listen on {target}: {why(e)}") from None
    membership: Membership = options["membership"]
    handle = port.getHandle()
    try:
        # Hear this group only, not every group joined on the port.
        for option in [membership.ownGroupsOnly(), *membership.joinOptions()]:
            handle.setsockopt(*option)
    except OSError as e:
        await port.stopListening()
        raise CommandError(f"cannot join {target}: {why(e)}") from None
    console.say(f"LISTEN {target}")
    interrupted.addCallback(lambda _: listener.stop())
    await listener.done
    await port.stopListening()
    console.say(
        f"--- {target}: {listener.received} datagrams from "
        f"{len(listener.senders)} senders ---"
    )
    return EXIT_OK


async def runMcast(
    reactor: Any, options: McastOptions, console: Console | None = None
) -> int:
    """
    Run C{netdemo mcast probe} or C{netdemo mcast listen}, writing to
    C{console}; Ctrl-C ends either with its summary.

    @return: The exit status.
    """
    console = console or Console()
    interrupted = whenInterrupted(reactor)
    if options.subCommand == "probe":
        return await runProbe(reactor, options.subOptions, console, interrupted)
    return await runListen(reactor, options.subOptions, console, interrupted)
