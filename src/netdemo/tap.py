# -*- test-case-name: tests.test_tap -*-
"""
The command line of C{twistd netdemo}: L{Options} and L{makeService}.

Everything a user can get wrong is parsed, coerced and validated here, so
that a bad value is one line naming it and exit status 1, before anything
listens.  L{makeService} only builds: one named child service per service,
each from its module's builder, with the reactor passed in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import MultiService
from twisted.python import usage

from netdemo.limits import (
    DEFAULT_BACKLOG,
    BackplaneLimits,
    BroadcastLimits,
    ConnectionLimits,
    DatagramLimits,
    HTTPLimits,
    HubLimits,
)

__all__ = ["DEFAULTS", "Options", "makeService"]

#: What C{twistd netdemo} starts when no service option is given: every
#: service, on loopback, on these ports.
DEFAULTS: dict[str, list[Any]] = {
    "tcp": [f"tcp:8007:interface=127.0.0.1:backlog={DEFAULT_BACKLOG}"],
    "http": [f"tcp:8080:interface=127.0.0.1:backlog={DEFAULT_BACKLOG}"],
    "pubsub": [f"tcp:8008:interface=127.0.0.1:backlog={DEFAULT_BACKLOG}"],
    "broadcast": [f"tcp:8010:interface=127.0.0.1:backlog={DEFAULT_BACKLOG}"],
    "udp": ["127.0.0.1:8009"],
    "multicast": ["239.255.80.1:8001,interface=127.0.0.1"],
}


def _counted(kind: Callable[[str], Any], what: str) -> Callable[[str], Any]:
    """
    A coerce function that accepts non-negative values of C{kind}.
    """

    def coerce(value: str) -> Any:
        try:
            number = kind(value)
        except ValueError:
            raise ValueError(f"{value!r} is not {what}") from None
        if number < 0 or number != number:
            raise ValueError(f"{value!r} is not {what}")
        return number

    coerce.coerceDoc = f"Must be {what}."  # type: ignore[attr-defined]
    return coerce


nonNegativeInt = _counted(int, "a whole number of at least 0")
nonNegativeFloat = _counted(float, "a number of at least 0")


def positiveFloat(value: str) -> float:
    """
    Coerce a number above 0 (and finite).
    """
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a number above 0") from None
    if not 0 < number < float("inf"):
        raise ValueError(f"{value!r} is not a number above 0")
    return number


positiveFloat.coerceDoc = "Must be a number above 0."  # type: ignore[attr-defined]


def named(option: str, coerce: Callable[[str], Any]) -> Callable[[str], Any]:
    """
    C{coerce}, with the option's name in its error: Twisted's message for a
    bad value does not say which option it was.
    """

    def coerceNamed(value: str) -> Any:
        try:
            return coerce(value)
        except ValueError as e:
            raise ValueError(f"--{option}: {e}") from None

    coerceNamed.coerceDoc = coerce.coerceDoc  # type: ignore[attr-defined]
    return coerceNamed


_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1 << 10,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1 << 20,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1 << 30,
}


def byteSize(value: str) -> int:
    """
    Coerce a size in bytes: C{1048576}, C{64KiB}, C{1MiB}, C{1MB}, C{2G}.
    """
    text = value.strip()
    number = text.rstrip("bBkKmMgGiI")
    unit = _SIZE_UNITS.get(text[len(number) :].lower())
    try:
        size = int(number) * unit if unit is not None else -1
    except ValueError:
        size = -1
    if size < 1:
        raise ValueError(f"{value!r} is not a size of at least 1 byte (1048576, 1MiB)")
    return size


byteSize.coerceDoc = "A size such as 1048576, 64KiB or 1MiB."  # type: ignore[attr-defined]


def _naming(option: str, coerce: Callable[[str], Any]) -> Callable[[str], Any]:
    """
    C{coerce}, with its errors naming C{--option} (Twisted's message names
    only the value).
    """

    def named(value: str) -> Any:
        try:
            return coerce(value)
        except ValueError as e:
            raise ValueError(f"--{option}: {e}") from None

    named.coerceDoc = coerce.coerceDoc  # type: ignore[attr-defined]
    return named


def _perSecond(value: str) -> str:
    """
    C{value} without a trailing C{/s}.
    """
    text = value.strip()
    return text[:-2] if text.lower().endswith("/s") else text


def datagramRate(value: str) -> float:
    """
    Coerce datagrams a second: C{2000}, C{2000/s}; 0 for no limit.
    """
    try:
        number = float(_perSecond(value))
    except ValueError:
        number = -1.0
    if not 0 <= number < float("inf"):
        raise ValueError(f"{value!r} is not a number of datagrams a second (2000/s)")
    return number


datagramRate.coerceDoc = (  # type: ignore[attr-defined]
    "Datagrams a second such as 2000 or 2000/s; 0 for no limit."
)


def byteRate(value: str) -> int:
    """
    Coerce bytes a second: C{2000000}, C{2MB/s}, C{512KiB/s}; 0 for no limit.
    """
    text = _perSecond(value)
    if text == "0":
        return 0
    try:
        return byteSize(text)
    except ValueError:
        raise ValueError(
            f"{value!r} is not a number of bytes a second (2MB/s, 512KiB/s)"
        ) from None


byteRate.coerceDoc = (  # type: ignore[attr-defined]
    "Bytes a second such as 2000000, 2MB/s or 512KiB/s; 0 for no limit."
)


def positiveInt(value: str) -> int:
    """
    Coerce a whole number of at least 1.
    """
    try:
        # A number of 20 digits or more is out of any range here, and
        # int() of a huge one is slow or refused.
        number = int(value) if len(value) < 20 else 0
    except ValueError:
        number = 0
    if number < 1:
        raise ValueError(f"{value!r} is not a whole number of at least 1")
    return number


positiveInt.coerceDoc = "Must be a whole number of at least 1."  # type: ignore[attr-defined]


def announceInterval(value: str) -> float:
    """
    Coerce the seconds between multicast beacons: 0 (none), or the range
    every instance accepts from a peer (C{netdemo.mcastwire.MIN_INTERVAL}
    to C{MAX_INTERVAL}).
    """
    from netdemo.mcastwire import MAX_INTERVAL, MIN_INTERVAL

    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if number != 0 and not MIN_INTERVAL <= number <= MAX_INTERVAL:
        raise ValueError(
            f"{value!r} is not 0 or a number of seconds from {MIN_INTERVAL:g} "
            f"to {MAX_INTERVAL:g}"
        )
    return number


announceInterval.coerceDoc = (  # type: ignore[attr-defined]
    "Must be 0 or from 0.1 to 60: peers clamp what they hear into that range."
)


def slowPolicy(value: str) -> str:
    """
    Coerce a slow-consumer policy.
    """
    if value not in ("disconnect", "drop-oldest"):
        raise ValueError(f"{value!r} is not disconnect or drop-oldest")
    return value


def backplaneURL(value: str) -> Any:
    """
    Coerce a backplane URL: C{redis://HOST:PORT[/DB][?prefix=NAME]} or
    C{rediss://...}.
    """
    from netdemo.backplane import parseBackplaneURL

    return parseBackplaneURL(value)


backplaneURL.coerceDoc = (  # type: ignore[attr-defined]
    "redis://[[USER]:PASSWORD@]HOST[:PORT][/DB][?prefix=NAME], or rediss:// "
    "for TLS (&ca=FILE to trust a private CA)."
)


class _ParseOnly:
    """
    Stands in for the reactor while endpoint descriptions are only parsed:
    parsing must never listen, nor import the real reactor (C{twistd
    --reactor} installs it after the options are read).
    """


def streamDescription(option: str, value: str) -> str:
    """
    Normalise and check a stream listener: a bare port becomes
    C{tcp:PORT:backlog=DEFAULT_BACKLOG}; anything else must be a server
    endpoint description that Twisted can parse.

    @raise usage.UsageError: Naming the option and the value.
    """
    from twisted.internet.endpoints import serverFromString

    if value.strip().isdigit():
        try:
            port = usage.portCoerce(value)
        except ValueError:
            raise usage.UsageError(
                f"--{option}: port {value!r} is not between 0 and 65535"
            ) from None
        return f"tcp:{port}:backlog={DEFAULT_BACKLOG}"
    try:
        endpoint = serverFromString(_ParseOnly(), value)
    except Exception as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise usage.UsageError(
            f"--{option}: {value!r} is not a usable endpoint description ({reason})"
        ) from None
    from netdemo.internals import endpointPort

    port = endpointPort(endpoint)
    if port is not None and not 0 <= port <= 65535:
        raise usage.UsageError(
            f"--{option}: port {port} in {value!r} is not between 0 and 65535"
        )
    return value


class Options(usage.Options):
    """
    The options of C{twistd netdemo}.
    """

    synopsis = (
        "[--tcp DESC]... [--pubsub DESC]... [--udp ADDR]... "
        "[--multicast GROUP:PORT]... [--http DESC]... [options]"
    )
    longdesc = (
        "Run the classic network utility services in one process. "
        "DESC is a port (8007, listening on every address with a backlog of "
        f"{DEFAULT_BACKLOG}) or a Twisted server endpoint description such as "
        "tcp:8007:interface=127.0.0.1, tcp6:8007:interface=\\:\\:, "
        "ssl:8443:privateKey=key.pem, unix:/run/echo.sock or "
        "systemd:domain=INET:name=echo. With no service option, every service "
        "starts on 127.0.0.1 on its default port (TCP echo: 8007, pub/sub hub: "
        "8008, UDP echo: 8009, multicast: group 239.255.80.1 port 8001, HTTP "
        "status and metrics: 8080)."
    )

    optParameters: list[list[Any]] = [
        [
            "max-connections",
            None,
            10000,
            "Connections open at once per stream service, 0 for no limit",
            nonNegativeInt,
        ],
        [
            "max-per-peer",
            None,
            256,
            "Connections open at once from one IP address per stream service, "
            "0 for no limit",
            nonNegativeInt,
        ],
        [
            "idle-timeout",
            None,
            300.0,
            "Seconds a connection may go with nothing received from it and nothing "
            "sent to it before it is closed, 0 for never",
            nonNegativeFloat,
        ],
        [
            "fd-reserve",
            None,
            64,
            "File descriptors kept free: while fewer are free, every stream "
            "listener (echo, hub, HTTP) closes new connections at once and "
            "counts them (fd-reserve), 0 for no reserve",
            named("fd-reserve", nonNegativeInt),
        ],
        [
            "http-header-timeout",
            None,
            10.0,
            "HTTP: seconds within which a request's line and headers must "
            "arrive, from the connection's start or the first byte of a "
            "request; slow bytes do not extend it",
            named("http-header-timeout", positiveFloat),
        ],
        [
            "udp-max-datagram",
            None,
            8972,
            "Largest UDP echo or multicast probe answered, in bytes; larger ones "
            "are refused, never cut",
            nonNegativeInt,
        ],
        [
            "udp-port-floor",
            None,
            1024,
            "Datagrams from source ports below this are never answered",
            nonNegativeInt,
        ],
        [
            "udp-rate",
            None,
            1000.0,
            "Datagrams a second answered per source network (a /24 for IPv4, a "
            "/64 for IPv6), 0 for no limit",
            nonNegativeFloat,
        ],
        [
            "udp-burst",
            None,
            2000,
            "Datagrams one source network may send at once, once earned at "
            "--udp-rate (a new one starts with 10)",
            nonNegativeInt,
        ],
        [
            "udp-max-sources",
            None,
            10000,
            "Source addresses tracked for rate limiting (least recently used evicted)",
            nonNegativeInt,
        ],
        [
            "udp-max-reply-rate",
            None,
            2000.0,
            "Datagrams a second UDP echo (and, apart, the multicast responder) "
            "sends at most, whatever the sources",
            _naming("udp-max-reply-rate", datagramRate),
        ],
        [
            "udp-max-reply-bytes",
            None,
            2000000,
            "Payload bytes a second UDP echo (and, apart, the multicast "
            "responder) sends at most, whatever the sources",
            _naming("udp-max-reply-bytes", byteRate),
        ],
        [
            "udp-peer-interval",
            None,
            1.0,
            "Seconds between --udp-peer probes",
            positiveFloat,
        ],
        [
            "announce-interval",
            None,
            5.0,
            "Seconds between multicast beacons, 0 for none",
            _naming("announce-interval", announceInterval),
        ],
        [
            "multicast-max-peers",
            None,
            64,
            "Other instances kept per multicast group; a new one in a full table "
            "evicts the one silent longest",
            _naming("multicast-max-peers", positiveInt),
        ],
        [
            "drain",
            None,
            5.0,
            "Seconds a shutdown waits for connections to flush and close before "
            "aborting them",
            nonNegativeFloat,
        ],
        [
            "max-line",
            None,
            4096,
            "Pub/sub: longest line in bytes; a longer one closes the connection",
            byteSize,
        ],
        [
            "line-timeout",
            None,
            30.0,
            "Pub/sub: seconds within which a partial line must complete, 0 for never",
            nonNegativeFloat,
        ],
        [
            "max-pending",
            None,
            1 << 20,
            "Pub/sub: bytes a subscriber that does not keep up may have queued "
            "(1048576, 1MiB)",
            byteSize,
        ],
        [
            "write-deadline",
            None,
            10.0,
            "Pub/sub: seconds a subscriber may take no data before it is "
            "disconnected, 0 for never",
            nonNegativeFloat,
        ],
        [
            "slow-policy",
            None,
            "disconnect",
            "Pub/sub: what to do with a slow subscriber: disconnect, or "
            "drop-oldest (drop its oldest lines and tell it how many)",
            slowPolicy,
        ],
        [
            "history",
            None,
            100,
            "Pub/sub: lines of history kept per topic, 0 for none",
            nonNegativeInt,
        ],
        [
            "replay-on-join",
            None,
            0,
            "Pub/sub: lines of the default topic's history sent to a client "
            "when it connects",
            nonNegativeInt,
        ],
        [
            "presence-interval",
            None,
            1.0,
            "Pub/sub: seconds over which the joins, leaves and nick changes that "
            "follow a presence notice are told in one notice, 0 to tell each at "
            "once (one notice costs a line to every client)",
            nonNegativeFloat,
        ],
        [
            "turn-lines",
            None,
            1000,
            "Pub/sub: lines of commands (of any read that is not all plain lines) "
            "handled per client per reactor turn; the rest waits for later turns",
            positiveInt,
        ],
        [
            "turn-time",
            None,
            0.01,
            "Pub/sub: seconds spent on one client's input per reactor turn; the "
            "rest waits for later turns",
            positiveFloat,
        ],
        [
            "backplane",
            None,
            None,
            "Pub/sub: join the hubs that share this Redis (Redis pub/sub), so "
            "that a line published on one reaches the clients of all",
            backplaneURL,
        ],
        [
            "backplane-password-file",
            None,
            None,
            "Pub/sub: file whose first line is the backplane's Redis password "
            "(instead of one in the URL)",
        ],
        [
            "backplane-queue",
            None,
            1 << 20,
            "Pub/sub: bytes that may wait to be published to Redis or be "
            "unanswered by it; lines past that are dropped and counted",
            byteSize,
        ],
        [
            "backplane-max-message",
            None,
            1 << 16,
            "Pub/sub: largest backplane message in bytes: a larger one from Redis "
            "is refused and counted, larger publications are split",
            byteSize,
        ],
        [
            "backplane-ping",
            None,
            5.0,
            "Pub/sub: seconds between two PINGs on each backplane connection",
            positiveFloat,
        ],
        [
            "backplane-ping-timeout",
            None,
            5.0,
            "Pub/sub: seconds Redis has to answer a PING before the backplane "
            "is reported down and reconnects",
            positiveFloat,
        ],
    ]

    optFlags: list[list[Any]] = [
        ["no-presence", None, "Pub/sub: no join, leave and nick notices"],
        [
            "hide-addresses",
            None,
            "Pub/sub: show clients without a nick as client-N, not IP:port, to "
            "other clients and to the backplane",
        ],
    ]

    compData = usage.Completions(
        multiUse=[
            "tcp",
            "http",
            "pubsub",
            "udp",
            "udp-allow",
            "udp-peer",
            "multicast",
            "broadcast",
        ]
    )

    #: Set when parsing failed, so that L{getUsage} stays quiet: C{twistd}
    #: prints the usage before the error, and a bad option deserves one line.
    _failed = False

    def __init__(self) -> None:
        super().__init__()
        self["tcp"] = []
        self["http"] = []
        self["pubsub"] = []
        self["udp"] = []
        self["udp-allow"] = []
        self["udp-peer"] = []
        self["multicast"] = []
        self["broadcast"] = []

    def parseOptions(self, options: Any = None) -> None:
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            self._failed = True
            raise usage.UsageError(
                f"{e} (twistd netdemo --help lists the options)"
            ) from None

    def getUsage(self, width: int | None = None) -> str:
        if self._failed:
            return ""
        return str(super().getUsage(width))

    def opt_version(self) -> None:
        """
        Print netdemo's, Twisted's and Python's versions and exit.
        """
        from netdemo import versionLine

        print(versionLine())
        raise SystemExit(0)

    def opt_tcp(self, description: str) -> None:
        """
        TCP echo (RFC 862) listener: a port or an endpoint description.
        Repeatable. [default when no service is given: tcp:8007 on 127.0.0.1]
        """
        self["tcp"].append(streamDescription("tcp", description))

    def opt_pubsub(self, description: str) -> None:
        """
        Line-based pub/sub hub listener: a port or an endpoint description.
        Repeatable. [default when no service is given: tcp:8008 on 127.0.0.1]
        """
        self["pubsub"].append(streamDescription("pubsub", description))

    def opt_broadcast(self, description: str) -> None:
        """
        Broadcast relay listener (every chunk a client sends goes to every
        other client, as ncat --broker): a port or an endpoint description.
        Slow receivers: --max-pending, --write-deadline, --slow-policy.
        Repeatable. [default when no service is given: tcp:8010 on 127.0.0.1]
        """
        self["broadcast"].append(streamDescription("broadcast", description))

    def broadcastLimits(self) -> BroadcastLimits:
        """
        The broadcast relay's slow-receiver policy: the hub's options.
        """
        return BroadcastLimits(
            maxPending=self["max-pending"],
            writeDeadline=self["write-deadline"],
            slowPolicy=self["slow-policy"],
        )

    def opt_http(self, description: str) -> None:
        """
        HTTP status page, /status.json, /healthz and Prometheus /metrics:
        a port or an endpoint description. Repeatable. [default when no
        service is given: tcp:8080 on 127.0.0.1]
        """
        self["http"].append(streamDescription("http", description))

    def opt_udp(self, value: str) -> None:
        """
        UDP echo (RFC 862) listener: [ADDRESS:]PORT, IPv6 as [::1]:9000, a
        bare port for every address, or systemd:NAME. Repeatable. [default
        when no service is given: 127.0.0.1:8009]
        """
        self["udp"].append(_parsed("udp", value, _udpAddress))

    def opt_udp_allow(self, value: str) -> None:
        """
        Answer datagrams only from this network (CIDR). Repeatable
        """
        import ipaddress

        try:
            self["udp-allow"].append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise usage.UsageError(
                f"--udp-allow: {value!r} is not a network such as 192.0.2.0/24"
            ) from None

    def opt_udp_peer(self, value: str) -> None:
        """
        Probe the UDP echo at HOST:PORT over connected UDP and report loss and
        round-trip time. Repeatable
        """
        from netdemo.udppeer import parsePeerTarget

        self["udp-peer"].append(_parsed("udp-peer", value, parsePeerTarget))

    def opt_multicast(self, value: str) -> None:
        """
        Multicast responder: GROUP:PORT[,interface=ADDR|NAME][,ttl=N]
        [,loop=yes|no]. Repeatable. [default when no service is given:
        239.255.80.1:8001 on 127.0.0.1]
        """
        from netdemo.multicast import parseMulticastGroup

        self["multicast"].append(_parsed("multicast", value, parseMulticastGroup))

    def postOptions(self) -> None:
        if not any(self[name] for name in DEFAULTS) and not self["udp-peer"]:
            for name, descriptions in DEFAULTS.items():
                self[name] = list(descriptions)
        from netdemo.multicast import parseMulticastGroup

        self["udp"] = [_udpAddress(v) if isinstance(v, str) else v for v in self["udp"]]
        self["multicast"] = [
            parseMulticastGroup(v) if isinstance(v, str) else v
            for v in self["multicast"]
        ]
        for group in self["multicast"]:
            if 0 < group.port < self["udp-port-floor"]:
                raise usage.UsageError(
                    f"--multicast {group}: port {group.port} is below "
                    f"--udp-port-floor {self['udp-port-floor']}, so the other "
                    "instances would refuse its beacons and probes; choose a "
                    "port of at least that or lower --udp-port-floor"
                )
        self._backplanePassword()

    def _backplanePassword(self) -> None:
        """
        Check the backplane options and read its password file into the URL.
        """
        url = self["backplane"]
        path = self["backplane-password-file"]
        if url is None:
            if path is not None:
                raise usage.UsageError("--backplane-password-file needs --backplane")
            return
        if not self["pubsub"]:
            raise usage.UsageError("--backplane needs a --pubsub listener")
        self._backplaneBounds()
        if path is None:
            return
        if url.password is not None:
            raise usage.UsageError(
                f"--backplane-password-file {path!r}: the URL has a password too; "
                "give only one"
            )
        try:
            with open(path, encoding="utf-8") as f:
                password = f.readline().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as e:
            raise usage.UsageError(
                f"--backplane-password-file {path!r}: cannot read it ({e})"
            ) from None
        if not password:
            raise usage.UsageError(
                f"--backplane-password-file {path!r}: its first line is empty"
            )
        from attrs import evolve

        self["backplane"] = evolve(url, password=password)

    def _backplaneBounds(self) -> None:
        """
        Check that the backplane's largest message holds a longest line, and
        that its queue holds a largest message.
        """
        from netdemo.backplane import MESSAGE_ROOM

        largest = self["backplane-max-message"]
        least = self["max-line"] + MESSAGE_ROOM
        if largest < least:
            raise usage.UsageError(
                f"--backplane-max-message {largest} is too small for --max-line "
                f"{self['max-line']}: give at least {least}"
            )
        if self["backplane-queue"] < largest:
            raise usage.UsageError(
                f"--backplane-queue {self['backplane-queue']} is smaller than "
                f"--backplane-max-message {largest}"
            )

    def backplaneLimits(self) -> BackplaneLimits:
        """
        The backplane's bounds the options ask for.
        """
        return BackplaneLimits(
            maxQueue=self["backplane-queue"],
            maxMessage=self["backplane-max-message"],
            pingInterval=self["backplane-ping"],
            pingTimeout=self["backplane-ping-timeout"],
        )

    def datagramLimits(self) -> DatagramLimits:
        """
        The reflection-safety settings of the datagram services.
        """
        return DatagramLimits(
            maxDatagram=self["udp-max-datagram"],
            portFloor=self["udp-port-floor"],
            rate=self["udp-rate"],
            burst=self["udp-burst"],
            maxSources=self["udp-max-sources"],
            allow=tuple(self["udp-allow"]),
            maxReplyRate=float(self["udp-max-reply-rate"]),
            maxReplyBytes=float(self["udp-max-reply-bytes"]),
        )

    def hubLimits(self) -> HubLimits:
        """
        The pub/sub hub's limits the options ask for.
        """
        return HubLimits(
            maxLine=self["max-line"],
            lineTimeout=self["line-timeout"],
            maxPending=self["max-pending"],
            writeDeadline=self["write-deadline"],
            slowPolicy=self["slow-policy"],
            history=self["history"],
            presence=not self["no-presence"],
            replayOnJoin=self["replay-on-join"],
            presenceInterval=self["presence-interval"],
            turnLines=self["turn-lines"],
            turnTime=self["turn-time"],
            hideAddresses=bool(self["hide-addresses"]),
        )

    def connectionLimits(self) -> ConnectionLimits:
        """
        The connection limits the options ask for.
        """
        return ConnectionLimits(
            maxConnections=self["max-connections"],
            maxPerPeer=self["max-per-peer"],
            idleTimeout=self["idle-timeout"],
            drain=self["drain"],
            descriptorReserve=self["fd-reserve"],
        )

    def httpLimits(self) -> HTTPLimits:
        """
        The HTTP service's limits the options ask for.
        """
        return HTTPLimits(headerTimeout=self["http-header-timeout"])


def _parsed(option: str, value: str, parse: Callable[[str], Any]) -> Any:
    """
    Parse one value of a repeatable option, turning C{ValueError} into a
    one-line L{usage.UsageError} that names the option.
    """
    try:
        return parse(value)
    except ValueError as e:
        raise usage.UsageError(f"--{option}: {e}") from None


def _udpAddress(value: str) -> Any:
    """
    Parse a C{--udp} value.
    """
    from netdemo.datagram import parseListenAddress

    return parseListenAddress(value)


# Twisted's help shows an opt_ method's docstring as it is, indentation and
# all; fold each into one line so that --help wraps it cleanly.
for _method in vars(Options).values():
    if getattr(_method, "__name__", "").startswith("opt_") and _method.__doc__:
        _method.__doc__ = " ".join(_method.__doc__.split())


def makeService(options: Options, reactor: Any = None) -> MultiService:
    """
    Build the daemon: a L{MultiService} with one named child per service.

    @param options: Parsed L{Options}.
    @param reactor: The reactor to use; the global one when L{None}.
    """
    if reactor is None:
        from twisted.internet import reactor as installed

        reactor = installed
    from netdemo import __version__
    from netdemo.echo import buildEchoService
    from netdemo.metrics import MemoryMetrics
    from netdemo.systemd import Notifier, NotifyService, listeningSummary
    from netdemo.web import ServerInfo, buildHTTPService

    metrics = MemoryMetrics()
    top = MultiService()
    limits = options.connectionLimits()
    if options["tcp"]:
        buildEchoService(options["tcp"], limits, metrics, reactor).setServiceParent(top)
    if options["pubsub"]:
        from netdemo.pubsub import buildPubSubService

        hubLimits = options.hubLimits()
        backplane = None
        if options["backplane"] is not None:
            from netdemo.backplane import buildBackplaneService

            backplane = buildBackplaneService(
                options["backplane"],
                metrics,
                reactor,
                options.backplaneLimits(),
                hubLimits,
            )
            backplane.setServiceParent(top)
        buildPubSubService(
            options["pubsub"], limits, hubLimits, metrics, reactor, backplane
        ).setServiceParent(top)
    if options["broadcast"]:
        from netdemo.broadcast import buildBroadcastService

        buildBroadcastService(
            options["broadcast"], limits, options.broadcastLimits(), metrics, reactor
        ).setServiceParent(top)
    datagramLimits = options.datagramLimits()
    if options["udp"]:
        from netdemo.udpecho import buildUDPEchoService

        buildUDPEchoService(
            options["udp"], datagramLimits, metrics, reactor
        ).setServiceParent(top)
    if options["udp-peer"]:
        from netdemo.udppeer import buildUDPPeerService

        buildUDPPeerService(
            options["udp-peer"], options["udp-peer-interval"], metrics, reactor
        ).setServiceParent(top)
    if options["multicast"]:
        from netdemo.multicast import buildMulticastService

        services = [
            n
            for n in ("tcp", "pubsub", "broadcast", "udp", "udp-peer", "http")
            if options[n]
        ]
        buildMulticastService(
            options["multicast"],
            datagramLimits,
            options["announce-interval"],
            services + ["multicast"],
            metrics,
            reactor,
            maxPeers=options["multicast-max-peers"],
        ).setServiceParent(top)
    if options["http"]:
        info = ServerInfo(version=__version__, startedAt=reactor.seconds())
        buildHTTPService(
            options["http"], metrics, info, reactor, limits, options.httpLimits()
        ).setServiceParent(top)
    # Last, so that it starts once every listener above is bound.
    NotifyService(
        Notifier.fromEnvironment(), lambda: listeningSummary(metrics), reactor
    ).setServiceParent(top)
    return top
