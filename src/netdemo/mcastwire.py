# -*- test-case-name: tests.test_mcastwire -*-
"""
The multicast wire format, without I/O: what the responder
(L{netdemo.multicast}) and C{netdemo mcast} (L{netdemo.clients.mcast}) send
and understand on a group, and the socket options of a group membership.

Datagrams (C{docs/multicast.md} documents them):

  - B{probes} and their answers: a datagram that starts with C{Notify} is
    answered with C{Acknowledge}, one that starts with C{Client: Ping} with
    C{Server: Pong} (L{answerTo}); the responder refuses a probe shorter
    than its answer, so a bare C{Notify} (6 bytes) gets nothing;
  - the unicast B{round-trip probe} C{NDPING TOKEN} and its answer
    C{NDPONG TOKEN}, exactly as long (L{rttProbe}, L{rttAnswer},
    L{rttToken}); the token is C{ID:N}, so an instance knows its own;
  - B{beacons}: C{NDBEACON } and a JSON object (L{Beacon}, L{decodeBeacon}).
    Everything in a beacon comes from whoever sent it and ends up in a
    timer, a metric label, a page or a log line, so decoding checks the
    datagram's length and every field's type, length, characters and range
    before anything is stored; a receiver clamps the announced interval
    into L{MIN_INTERVAL}..L{MAX_INTERVAL} (L{clampInterval}).

Socket options (L{Membership}): IPv4 and IPv6 joins with C{setsockopt}
(Twisted 26.10 packs an IPv6 join on a chosen interface wrongly and does not
set the IPv6 hop limit), C{IP_MULTICAST_ALL} / C{IPV6_MULTICAST_ALL} off (a
socket bound to the wildcard otherwise hears every group joined on its
port), TTL or hop limit, loop, and the outgoing interface: an IPv4 address,
an interface name or an interface index.  They are values; the caller hands
them to C{setsockopt}.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import math
import socket
import struct
from typing import Any

from attrs import frozen

__all__ = [
    "ANSWER",
    "BEACON",
    "PROBE",
    "PROBES",
    "RTT_ANSWER",
    "RTT_PROBE",
    "BadBeacon",
    "Beacon",
    "Membership",
    "SocketOption",
    "answerTo",
    "clampInterval",
    "decodeBeacon",
    "interfaceMismatch",
    "interfaceOf",
    "isOwnToken",
    "needsInterface",
    "probeDatagram",
    "routeSource",
    "rttAnswer",
    "rttAnswerToken",
    "rttProbe",
    "rttToken",
    "safeName",
]

#: Linux values missing from Python 3.11's C{socket} module.
IP_MULTICAST_ALL: int = getattr(socket, "IP_MULTICAST_ALL", 49)
IPV6_MULTICAST_ALL: int = getattr(socket, "IPV6_MULTICAST_ALL", 29)

BEACON = b"NDBEACON "
PROBE = b"Notify"
ANSWER = b"Acknowledge"
#: Each probe's prefix and its answer.
PROBES = {PROBE: ANSWER, b"Client: Ping": b"Server: Pong"}

#: The round-trip probe instances send each other by unicast once per
#: announce interval, and its answer: the token comes back unchanged, so the
#: answer is exactly as long as the probe.
RTT_PROBE = b"NDPING "
RTT_ANSWER = b"NDPONG "

#: The longest instance id, host name and service name a beacon may carry,
#: and the most services.
MAX_ID = 64
MAX_HOST = 255
MAX_SERVICE = 64
MAX_SERVICES = 16

#: The longest beacon, in bytes: every field at its longest, in ASCII, is
#: about 1.6 KB.  A longer datagram is refused before it is parsed.
MAX_BEACON = 4096

#: The range a receiver clamps a beacon's announced interval into (seconds):
#: a sender cannot make itself expire later than three times
#: L{MAX_INTERVAL} after its last beacon, nor be swept every few
#: microseconds.  C{--announce-interval} must be 0 or in this range.
MIN_INTERVAL = 0.1
MAX_INTERVAL = 60.0

#: The characters of an instance id and of a service name; a host name's
#: other characters are replaced by C{?} (L{safeName}).
NAME_CHARACTERS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"
)

#: A C{setsockopt} call: level, option, value.
SocketOption = tuple[int, int, int | bytes]


# ---------------------------------------------------------------------------
# Probes


def probeDatagram(sequence: int) -> bytes:
    """
    The probe C{netdemo mcast probe} sends: C{Notify NNNN netdemo-mcast-probe}.
    """
    return b"%s %04d netdemo-mcast-probe" % (PROBE, sequence)


def answerTo(datagram: bytes) -> bytes | None:
    """
    The answer to a probe (classic or round-trip), or L{None} if
    C{datagram} is no probe.  The caller checks that the answer keeps the
    amplification rule (C{netdemo.guard.replyAllowed}).
    """
    if datagram.startswith(RTT_PROBE):
        return RTT_ANSWER + datagram[len(RTT_PROBE) :]
    for probe, answer in PROBES.items():
        if datagram.startswith(probe):
            return answer
    return None


def rttToken(instance: str, sequence: int) -> bytes:
    """
    The token of round-trip probe C{sequence} of C{instance}: C{ID:N}.
    """
    return b"%s:%d" % (instance.encode(), sequence)


def isOwnToken(datagram: bytes, instance: str) -> bool:
    """
    Whether C{datagram} is a round-trip probe that C{instance} sent.
    """
    return datagram.startswith(RTT_PROBE + instance.encode() + b":")


def rttProbe(token: bytes) -> bytes:
    """
    The round-trip probe carrying C{token}.
    """
    return RTT_PROBE + token


def rttAnswer(token: bytes) -> bytes:
    """
    The answer to the round-trip probe carrying C{token}.
    """
    return RTT_ANSWER + token


def rttAnswerToken(datagram: bytes) -> bytes | None:
    """
    The token of a round-trip answer, or L{None} if C{datagram} is none.
    """
    if datagram.startswith(RTT_ANSWER):
        return datagram[len(RTT_ANSWER) :]
    return None


# ---------------------------------------------------------------------------
# Beacons


class BadBeacon(ValueError):
    """
    A datagram that starts like a beacon but is not a valid one.
    """


def safeName(text: str) -> str:
    """
    C{text} with every character outside L{NAME_CHARACTERS} (controls,
    spaces, quotes, bidi overrides, any non-ASCII) replaced by C{?}: fit
    for a log line, a metric label, a page or a terminal.
    """
    if NAME_CHARACTERS.issuperset(text):
        return text
    return "".join(c if c in NAME_CHARACTERS else "?" for c in text)


def clampInterval(interval: float) -> float:
    """
    A beacon's announced interval as a receiver uses it: 0 (none announced)
    stays 0, anything else is clamped into L{MIN_INTERVAL}..L{MAX_INTERVAL}.
    """
    if not interval:
        return 0.0
    return min(max(interval, MIN_INTERVAL), MAX_INTERVAL)


def _name(value: Any, key: str, limit: int) -> str:
    """
    C{value} as an id or service name: 1 to C{limit} of L{NAME_CHARACTERS}.
    """
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= limit
        or not NAME_CHARACTERS.issuperset(value)
    ):
        raise BadBeacon(f"{key}: not 1 to {limit} letters, digits, '.', '_' or '-'")
    return value


def _text(body: dict[str, Any], key: str, limit: int, default: str | None) -> str:
    """
    The string at C{key}: at most C{limit} characters.
    """
    value = body.get(key, default)
    if not isinstance(value, str) or len(value) > limit:
        raise BadBeacon(f"{key}: not a string of at most {limit} characters")
    return value


def _number(body: dict[str, Any], key: str, default: float | None) -> float:
    """
    The finite number at C{key}.
    """
    value: Any = body.get(key, default)
    try:
        if isinstance(value, bool) or not math.isfinite(value):
            raise TypeError
        return float(value)
    except (TypeError, OverflowError):
        raise BadBeacon(f"{key}: not a finite number") from None


@frozen
class Beacon:
    """
    One beacon: C{NDBEACON } and a JSON object.

    @ivar instance: The sender's instance id (C{id}), a random hex string.
    @ivar host: Its host name.
    @ivar services: The services it runs.
    @ivar seq: Its beacon sequence number, from 0.
    @ivar time: Its clock when it sent the beacon (seconds).
    @ivar interval: Seconds between its beacons (0: it sends none but this).
    @ivar bye: Whether it is leaving.
    """

    instance: str
    host: str
    services: tuple[str, ...]
    seq: int
    time: float
    interval: float
    bye: bool = False

    def encode(self) -> bytes:
        """
        The datagram.
        """
        body: dict[str, Any] = {
            "v": 1,
            "id": self.instance,
            "host": self.host,
            "services": list(self.services),
            "seq": self.seq,
            "time": self.time,
            "interval": self.interval,
        }
        if self.bye:
            body["bye"] = True
        return BEACON + json.dumps(body, separators=(",", ":")).encode()


def decodeBeacon(datagram: bytes) -> Beacon:
    """
    Decode and check a beacon.

    The datagram is at most L{MAX_BEACON} bytes.  Required: C{id} (1 to
    L{MAX_ID} of L{NAME_CHARACTERS}), C{seq} (a whole number from 0 to
    2**63 - 1) and C{time} (a finite number).  Optional: C{host} (a string
    of at most L{MAX_HOST} characters; characters outside
    L{NAME_CHARACTERS} come back as C{?}), C{services} (at most
    L{MAX_SERVICES} names of 1 to L{MAX_SERVICE} of L{NAME_CHARACTERS}),
    C{interval} (a finite number of at least 0, as sent: receivers clamp
    it with L{clampInterval}) and C{bye} (a boolean).  Other keys are
    ignored, for later versions.

    @raise BadBeacon: Saying what is wrong.
    """
    if not datagram.startswith(BEACON):
        raise BadBeacon("not a beacon")
    if len(datagram) > MAX_BEACON:
        raise BadBeacon(f"longer than {MAX_BEACON} bytes")
    try:
        body = json.loads(datagram[len(BEACON) :])
    except ValueError as e:  # UnicodeDecodeError and JSONDecodeError included
        raise BadBeacon(f"not JSON: {e}") from None
    except RecursionError:
        raise BadBeacon("not JSON: nested too deeply") from None
    if not isinstance(body, dict):
        raise BadBeacon("not a JSON object")
    instance = _name(body.get("id"), "id", MAX_ID)
    seq = body.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq < 2**63:
        raise BadBeacon("seq: not a whole number from 0 to 2**63 - 1")
    services = body.get("services", [])
    if not isinstance(services, list) or len(services) > MAX_SERVICES:
        raise BadBeacon(f"services: not a list of at most {MAX_SERVICES} names")
    for service in services:
        _name(service, "services", MAX_SERVICE)
    interval = _number(body, "interval", 0)
    if interval < 0:
        raise BadBeacon("interval: below 0")
    bye = body.get("bye", False)
    if not isinstance(bye, bool):
        raise BadBeacon("bye: not true or false")
    return Beacon(
        instance=instance,
        host=safeName(_text(body, "host", MAX_HOST, "")),
        services=tuple(services),
        seq=seq,
        time=_number(body, "time", None),
        interval=interval,
        bye=bye,
    )


# ---------------------------------------------------------------------------
# Membership


def needsInterface(group: str) -> bool:
    """
    Whether a group needs an interface named: IPv6 link-local and
    interface-local groups (C{ff02::/16}, C{ff01::/16}, and every other
    flag combination of those scopes).
    """
    address = ipaddress.ip_address(group)
    return address.version == 6 and (int(address) >> 112) & 0xF in (1, 2)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """
    C{text} as an IP address, or L{None} if it is not one (a name, an index).
    """
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def interfaceMismatch(ipv6: bool, interface: str) -> bool:
    """
    Whether C{interface} is an address that cannot serve the group: an IPv6
    group needs an interface name or index, an IPv4 group an IPv4 address,
    a name or an index.
    """
    address = _address(interface)
    if address is None:
        return False
    return ipv6 or address.version != 4


def interfaceOf(address: str) -> str | None:
    """
    The name of the interface that has C{address}, or L{None}.
    """
    if ":" in address:
        try:
            with open("/proc/net/if_inet6") as table:
                rows = [line.split() for line in table]
        except OSError:
            return None
        wanted = ipaddress.IPv6Address(address.partition("%")[0]).exploded
        for row in rows:
            if (
                len(row) >= 6
                and ipaddress.IPv6Address(int(row[0], 16)).exploded == wanted
            ):
                return row[5]
        return None
    for _, name in socket.if_nameindex():
        if interfaceAddress(name) == address:
            return name
    return None


#: The C{ioctl} that reads an interface's IPv4 address (Linux).
SIOCGIFADDR = 0x8915


def interfaceAddress(name: str) -> str | None:
    """
    The IPv4 address of the interface named C{name}, or L{None}.
    """
    request = struct.pack("256s", name.encode()[:15])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            answer = fcntl.ioctl(s.fileno(), SIOCGIFADDR, request)
        except OSError:
            return None
    return socket.inet_ntoa(answer[20:24])


def routeSource(group: str, port: int) -> str:
    """
    The local address the kernel sends to C{group} from when no interface
    is named: the source of its route to the group.

    @raise OSError: The kernel has no route to the group.
    """
    family = socket.AF_INET6 if ":" in group else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.connect((group, port or 9))
        source: str = s.getsockname()[0]
    return source


@frozen
class Membership:
    """
    The socket options for one group on one interface.

    @ivar group: The group's address.
    @ivar interface: An IPv4 address (IPv4 groups), an interface name or an
        interface index; C{""} lets the kernel choose by route.
    """

    group: str
    interface: str = ""

    @property
    def ipv6(self) -> bool:
        """
        Whether the group is an IPv6 one.
        """
        return ":" in self.group

    @property
    def level(self) -> int:
        """
        The C{setsockopt} level of this group's family.
        """
        return socket.IPPROTO_IPV6 if self.ipv6 else socket.IPPROTO_IP

    def interfaceIndex(self) -> int:
        """
        The index of the interface: 0 when none is named or it is named by
        an IPv4 address.

        @raise OSError: No interface has that name (yet).
        """
        interface = self.interface
        if not interface or _address(interface) is not None:
            return 0
        if interface.isdigit():
            return int(interface)
        return socket.if_nametoindex(interface)

    def checkInterface(self) -> None:
        """
        Check that a named interface (by name or index) exists now.

        @raise OSError: No interface has that name or index.
        """
        interface = self.interface
        if interface and _address(interface) is None:
            if interface.isdigit():
                socket.if_indextoname(int(interface))
            else:
                socket.if_nametoindex(interface)

    def describeInterface(self, port: int) -> str:
        """
        The interface the group is joined on, as people read it:
        C{lo (127.0.0.1)}; when none is named, the route's choice.
        """
        interface = self.interface
        if interface and _address(interface) is not None:
            name = interfaceOf(interface)
            return f"{name} ({interface})" if name else interface
        if interface:
            try:
                name = (
                    socket.if_indextoname(int(interface))
                    if interface.isdigit()
                    else interface
                )
            except OSError:
                return f"interface {interface}"
            address = None if self.ipv6 else interfaceAddress(name)
            return f"{name} ({address})" if address else name
        try:
            source = routeSource(self.group, port)
        except OSError:
            return "no interface (the kernel has no route to the group)"
        name = interfaceOf(source)
        return f"{name} ({source})" if name else source

    def _request(self) -> bytes:
        """
        C{struct ip_mreqn} (IPv4: group, interface address, index) or
        C{struct ipv6_mreq} (group, index).

        @raise OSError: No interface has that name (yet).
        """
        index = struct.pack("@i", self.interfaceIndex())
        if self.ipv6:
            return socket.inet_pton(socket.AF_INET6, self.group) + index
        local = self.interface if _address(self.interface) is not None else ""
        return (
            socket.inet_aton(self.group) + socket.inet_aton(local or "0.0.0.0") + index
        )

    def join(self) -> SocketOption:
        """
        Join the group on the interface.

        @raise OSError: No interface has that name (yet).
        """
        if self.ipv6:
            return (self.level, socket.IPV6_JOIN_GROUP, self._request())
        return (self.level, socket.IP_ADD_MEMBERSHIP, self._request())

    def outgoingInterface(self) -> SocketOption:
        """
        Send to the group by the interface (IPv4: C{ip_mreqn}; IPv6: the
        index).

        @raise OSError: No interface has that name (yet).
        """
        if self.ipv6:
            index = struct.pack("@i", self.interfaceIndex())
            return (self.level, socket.IPV6_MULTICAST_IF, index)
        return (self.level, socket.IP_MULTICAST_IF, self._request())

    def joinOptions(self) -> list[SocketOption]:
        """
        Pin the outgoing interface (when one is named), then join.

        @raise OSError: No interface has that name (yet).
        """
        options = [self.outgoingInterface()] if self.interface else []
        return [*options, self.join()]

    def hops(self, ttl: int) -> SocketOption:
        """
        The TTL (IPv6: hop limit) of what is sent to the group.
        """
        if self.ipv6:
            return (self.level, socket.IPV6_MULTICAST_HOPS, ttl)
        return (self.level, socket.IP_MULTICAST_TTL, ttl)

    def loop(self, on: bool) -> SocketOption:
        """
        Whether this host's own sockets hear what is sent to the group.
        """
        if self.ipv6:
            return (self.level, socket.IPV6_MULTICAST_LOOP, int(on))
        return (self.level, socket.IP_MULTICAST_LOOP, int(on))

    def ownGroupsOnly(self) -> SocketOption:
        """
        Hear only the groups this socket joined (C{IP_MULTICAST_ALL} or
        C{IPV6_MULTICAST_ALL} off).
        """
        option = IPV6_MULTICAST_ALL if self.ipv6 else IP_MULTICAST_ALL
        return (self.level, option, 0)
