# -*- test-case-name: tests.test_tap -*-
"""
The command line of C{twistd netdemo}: L{Options} and L{makeService}.

Everything a user can get wrong is parsed, coerced and validated here, so
that a bad value is one line naming it and exit status 1, before anything
listens.  L{makeService} only builds: one named child service per service,
each from its module's builder, with the reactor passed in.
"""

from __future__ import annotations

import re
import socket
import sys
from collections.abc import Callable
from typing import Any

from attrs import frozen
from twisted.application.service import MultiService
from twisted.logger import Logger
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


_log = Logger()

#: The stream services: the connection limits apply to these.
STREAM_SERVICES = ("tcp", "pubsub", "broadcast", "http")


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
seconds = _counted(float, "a number of seconds of at least 0")


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


def lineRate(value: str) -> float:
    """
    Coerce lines a second, above 0: C{100}, C{100/s}, C{0.5}.
    """
    try:
        number = float(_perSecond(value))
    except ValueError:
        number = 0.0
    if not 0 < number < float("inf"):
        raise ValueError(f"{value!r} is not a number of lines a second above 0 (100/s)")
    return number


lineRate.coerceDoc = "Lines a second such as 100 or 100/s."  # type: ignore[attr-defined]


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


@frozen
class Option:
    """
    One option of C{twistd netdemo}, as C{--help} shows it.

    @ivar metavar: What its value looks like (C{N}, C{SECONDS}); C{""} for a
        flag.
    @ivar coerce: Parses its value (and names the option in its error); for
        a flag or an option with its own C{opt_} method, L{None}.
    @ivar shown: Its default as C{--help} shows it, when C{str(default)} is
        not how people would write it; C{""} to show none.
    """

    name: str
    metavar: str
    help: str
    default: Any = None
    coerce: Callable[[str], Any] | None = None
    shown: str | None = None

    def defaultText(self) -> str:
        """
        The default as shown, or C{""} for none.
        """
        if self.shown is not None:
            return self.shown
        if self.default is None or self.metavar == "":
            return ""
        if isinstance(self.default, float):
            return f"{self.default:g}"
        return str(self.default)


#: The options that say which services run (the first group of L{GROUPS}).
SERVICE_OPTIONS = (
    "tcp",
    "pubsub",
    "broadcast",
    "udp",
    "multicast",
    "http",
    "udp-peer",
)


@frozen
class OptionGroup:
    """
    Options that belong together in C{--help}.

    @ivar services: The options of the services whose settings these are
        (C{tcp}, C{pubsub}...): given without any of them, an option of the
        group has no effect and says so.  Empty for options that always
        apply.
    """

    title: str
    services: tuple[str, ...]
    options: tuple[Option, ...]
    defaultLabel: str = "default"


#: Every option, in the order and groups of C{--help}.  The services come
#: first: they say what runs; then each group of settings.
GROUPS: tuple[OptionGroup, ...] = (
    OptionGroup(
        "Services (each repeatable; with none given, the default set runs)",
        (),
        (
            Option(
                "tcp",
                "DESC",
                "TCP echo (RFC 862).",
                shown="127.0.0.1:8007",
            ),
            Option(
                "pubsub",
                "DESC",
                "Line-based pub/sub hub (docs/protocol.md).",
                shown="127.0.0.1:8008",
            ),
            Option(
                "broadcast",
                "DESC",
                "Byte relay: every chunk a client sends goes to every other "
                "client, unframed (as ncat --broker), and a slow receiver never "
                "holds up the others.",
                shown="127.0.0.1:8010",
            ),
            Option(
                "udp",
                "[ADDR:]PORT",
                "UDP echo (RFC 862); IPv6 as [::1]:8009; systemd:NAME for a "
                "socket from systemd.",
                shown="127.0.0.1:8009",
            ),
            Option(
                "multicast",
                "GROUP:PORT[,interface=ADDR|NAME][,ttl=N][,loop=yes|no]",
                "Multicast responder: joins GROUP, answers probes, announces "
                "itself and lists its peers.",
                shown="239.255.80.1:8001 on 127.0.0.1",
            ),
            Option(
                "http",
                "DESC",
                "Status page, /status.json, /healthz and Prometheus /metrics.",
                shown="127.0.0.1:8080",
            ),
            Option(
                "udp-peer",
                "HOST:PORT",
                "Probe the UDP echo at HOST:PORT over connected UDP and report "
                "loss and round trips (not in the default set).",
                shown="",
            ),
        ),
        "default set",
    ),
    OptionGroup(
        "Stream services (TCP echo, hub, broadcast, HTTP)",
        STREAM_SERVICES,
        (
            Option(
                "max-connections",
                "N",
                "Connections open at once per service, 0 for no limit.",
                10000,
                nonNegativeInt,
            ),
            Option(
                "max-per-peer",
                "N",
                "Connections open at once from one IP address per service, "
                "0 for no limit.",
                256,
                nonNegativeInt,
            ),
            Option(
                "idle-timeout",
                "SECONDS",
                "Close a connection that has received and been sent nothing "
                "for this long, 0 for never.",
                300.0,
                seconds,
            ),
            Option(
                "drain",
                "SECONDS",
                "At shutdown, wait this long for connections to flush and "
                "close before aborting them.",
                5.0,
                seconds,
            ),
            Option(
                "fd-reserve",
                "N",
                "File descriptors kept free: while fewer are free, new "
                "connections are closed at once and counted, 0 for no reserve.",
                64,
                nonNegativeInt,
            ),
        ),
    ),
    OptionGroup(
        "TLS (ssl: listeners of stream services; docs/tls.md)",
        STREAM_SERVICES,
        (
            Option(
                "tls-client-ca",
                "FILE",
                "Require a client certificate signed by a CA in FILE (PEM) on "
                "every ssl: listener that names no clientCA. SIGHUP re-reads "
                "every TLS listener's files.",
                None,
                str,
            ),
        ),
    ),
    OptionGroup(
        "Pub/sub hub",
        ("pubsub",),
        (
            Option(
                "max-line",
                "BYTES",
                "Longest line; a longer one closes the connection.",
                4096,
                byteSize,
            ),
            Option(
                "line-timeout",
                "SECONDS",
                "Time within which a partial line must complete, 0 for never.",
                30.0,
                seconds,
            ),
            Option(
                "history",
                "LINES",
                "Lines of history kept per topic, 0 for none.",
                100,
                nonNegativeInt,
            ),
            Option(
                "replay-on-join",
                "LINES",
                "Lines of the default topic's history sent to a client when "
                "it connects.",
                0,
                nonNegativeInt,
            ),
            Option("no-presence", "", "No join, leave and nick notices."),
            Option(
                "presence-interval",
                "SECONDS",
                "Joins, leaves and renames that follow a presence notice "
                "within this time are told in one notice, 0 to tell each at "
                "once (a notice costs a line to every client).",
                1.0,
                seconds,
            ),
            Option(
                "hide-addresses",
                "",
                "Show clients without a nick as client-N, not IP:port, to "
                "other clients and to the backplane.",
            ),
            Option(
                "turn-lines",
                "N",
                "Lines of commands handled per client per reactor turn; the "
                "rest waits for later turns.",
                1000,
                positiveInt,
            ),
            Option(
                "turn-time",
                "SECONDS",
                "Time spent on one client's input per reactor turn; the rest "
                "waits for later turns.",
                0.01,
                positiveFloat,
            ),
            Option(
                "publish-rate",
                "LINES/S",
                "Lines a second each client may publish (100, 100/s); past "
                "it the hub reads the client no faster, so TCP slows it down "
                "and nothing is lost.",
                None,
                lineRate,
                "no limit",
            ),
            Option(
                "publish-burst",
                "N",
                "Lines a client may publish at once before --publish-rate applies.",
                None,
                positiveInt,
                "one second at the rate",
            ),
        ),
    ),
    OptionGroup(
        "Hub accounts (docs/security.md)",
        ("pubsub",),
        (
            Option(
                "hub-auth",
                "FILE",
                "TOML file of users (a password hash or a token each) and the "
                "topics each may publish and subscribe to; clients /login. "
                "SIGHUP reads it again.",
                None,
                str,
                "",
            ),
        ),
    ),
    OptionGroup(
        "Slow receivers (hub and broadcast)",
        ("pubsub", "broadcast"),
        (
            Option(
                "max-pending",
                "BYTES",
                "Bytes queued for a receiver that does not keep up.",
                1 << 20,
                byteSize,
                "1MiB",
            ),
            Option(
                "write-deadline",
                "SECONDS",
                "Disconnect a receiver that takes no data for this long, 0 for never.",
                10.0,
                seconds,
            ),
            Option(
                "slow-policy",
                "POLICY",
                "What to do with a slow receiver: disconnect, or drop-oldest "
                "(drop its oldest lines or chunks and tell it how many).",
                "disconnect",
                slowPolicy,
            ),
        ),
    ),
    OptionGroup(
        "Backplane (hubs that share a Redis act as one; docs/scaling.md)",
        ("pubsub",),
        (
            Option(
                "backplane",
                "redis://[[USER]:PASSWORD@]HOST[:PORT][/DB][?prefix=NAME]",
                "Join the hubs that share this Redis, so that a line published "
                "on one reaches the clients of all; rediss:// for TLS (&ca=FILE "
                "to trust a private CA).",
                None,
                backplaneURL,
            ),
            Option(
                "backplane-password-file",
                "FILE",
                "File whose first line is the Redis password (instead of one "
                "in the URL).",
                None,
                str,
            ),
            Option(
                "backplane-queue",
                "BYTES",
                "Bytes that may wait to be published or answered by Redis; "
                "lines past that are dropped and counted.",
                1 << 20,
                byteSize,
                "1MiB",
            ),
            Option(
                "backplane-max-message",
                "BYTES",
                "Largest message: a larger one from Redis is refused and "
                "counted, larger publications are split.",
                1 << 16,
                byteSize,
                "64KiB",
            ),
            Option(
                "backplane-ping",
                "SECONDS",
                "Time between two PINGs on each backplane connection.",
                5.0,
                positiveFloat,
            ),
            Option(
                "backplane-ping-timeout",
                "SECONDS",
                "Time Redis has to answer a PING before the backplane is "
                "reported down and reconnects.",
                5.0,
                positiveFloat,
            ),
            Option(
                "no-backplane-history",
                "",
                "Keep history on each hub, not shared in Redis Streams (no "
                "scripts needed; sequence numbers are then per hub).",
            ),
        ),
    ),
    OptionGroup(
        "UDP echo and multicast responder (docs/udp.md)",
        ("udp", "multicast"),
        (
            Option(
                "udp-allow",
                "CIDR",
                "Answer only datagrams from this network. Repeatable.",
                shown="",
            ),
            Option(
                "udp-max-datagram",
                "BYTES",
                "Largest datagram answered; larger ones are refused, never cut.",
                8972,
                nonNegativeInt,
            ),
            Option(
                "udp-port-floor",
                "PORT",
                "Never answer datagrams from source ports below this.",
                1024,
                nonNegativeInt,
            ),
            Option(
                "udp-rate",
                "N",
                "Datagrams a second answered per source network (a /24, an "
                "IPv6 /64), 0 for no limit.",
                1000.0,
                nonNegativeFloat,
                "1000",
            ),
            Option(
                "udp-burst",
                "N",
                "Datagrams one source network may send at once, once earned "
                "at --udp-rate (a new one starts with 10).",
                2000,
                nonNegativeInt,
            ),
            Option(
                "udp-max-sources",
                "N",
                "Source networks tracked for rate limiting (least recently "
                "used forgotten).",
                10000,
                nonNegativeInt,
            ),
            Option(
                "udp-max-reply-rate",
                "RATE",
                "Datagrams a second sent at most by each service, whatever the "
                "sources (2000, 2000/s), 0 for no limit.",
                2000.0,
                datagramRate,
                "2000/s",
            ),
            Option(
                "udp-max-reply-bytes",
                "RATE",
                "Payload bytes a second sent at most by each service, whatever "
                "the sources (2MB/s, 512KiB/s), 0 for no limit.",
                2000000,
                byteRate,
                "2MB/s",
            ),
        ),
    ),
    OptionGroup(
        "Multicast responder (docs/multicast.md)",
        ("multicast",),
        (
            Option(
                "announce-interval",
                "SECONDS",
                "Time between beacons, 0 for none, else from 0.1 to 60.",
                5.0,
                announceInterval,
            ),
            Option(
                "multicast-max-peers",
                "N",
                "Other instances kept per group; a new one in a full table "
                "evicts the one silent longest.",
                64,
                positiveInt,
            ),
        ),
    ),
    OptionGroup(
        "UDP peer probe",
        ("udp-peer",),
        (
            Option(
                "udp-peer-interval",
                "SECONDS",
                "Time between --udp-peer probes.",
                1.0,
                positiveFloat,
            ),
        ),
    ),
    OptionGroup(
        "HTTP",
        ("http",),
        (
            Option(
                "http-header-timeout",
                "SECONDS",
                "Time within which a request's line and headers must arrive; "
                "slow bytes do not extend it.",
                10.0,
                positiveFloat,
            ),
            Option(
                "http-origin",
                "ORIGIN",
                "Also let pages from ORIGIN (scheme://host[:port]) open the "
                "hub's /hub/ws and /hub/events (the page's own origin always "
                "may; others get 403). Repeatable.",
                [],
                shown="",
            ),
            Option(
                "http-hub-streams",
                "N",
                "Hub WebSockets and event streams (/hub/ws, /hub/events) open "
                "at once; one more is answered 503.",
                1000,
                nonNegativeInt,
            ),
        ),
    ),
)


def _namedCoerce(option: str, coerce: Callable[[str], Any]) -> Callable[[str], Any]:
    """
    C{coerce}, with its errors one line naming C{--option}: a
    L{usage.UsageError}, which Twisted passes on as it is (it prefixes a
    C{ValueError}'s text with C{Parameter type enforcement failed}).
    """

    def coerceNamed(value: str) -> Any:
        try:
            return coerce(value)
        except ValueError as e:
            raise usage.UsageError(f"--{option}: {e}") from None

    coerceNamed.coerceDoc = getattr(coerce, "coerceDoc", "")  # type: ignore[attr-defined]
    return coerceNamed


#: twistd's own options, as C{--help} ends.
_OTHER = (
    ("--version", "Print netdemo's, Twisted's and Python's versions."),
    ("--help", "Print this help."),
)

#: Where the help of each option starts.
_HELP_COLUMN = 26


def renderHelp(
    overview: tuple[str, ...], groups: tuple[OptionGroup, ...], width: int
) -> str:
    """
    The text of C{twistd netdemo --help} after its synopsis: the overview's
    paragraphs, then each group with its options, their help wrapped to
    C{width} columns and each default said once.
    """
    import textwrap

    def wrap(text: str, indent: int) -> list[str]:
        # Lines shorter than the width (a terminal wraps a full one), and a
        # "[default: X]" never cut.
        wrapped = textwrap.wrap(
            text,
            max(width - 1 - indent, 20),
            break_long_words=False,
            break_on_hyphens=False,
        )
        return [line.replace("\xa0", " ") for line in wrapped]

    lines: list[str] = [""]
    for paragraph in overview:
        lines += [*wrap(paragraph, 0), ""]
    rows = [
        (f"  --{o.name}" + (f" {o.metavar}" if o.metavar else ""), o, group)
        for group in groups
        for o in group.options
    ]
    current = None
    for head, option, group in rows:
        if group is not current:
            if current is not None:
                lines.append("")
            lines.append(f"{group.title}:")
            current = group
        text = option.help
        default = option.defaultText()
        if default:
            text += " " + f"[{group.defaultLabel}: {default}]".replace(" ", "\xa0")
        body = wrap(text, _HELP_COLUMN)
        if len(head) + 2 > _HELP_COLUMN:
            lines.append(head)
        else:
            lines.append(head.ljust(_HELP_COLUMN) + body.pop(0))
        lines += [" " * _HELP_COLUMN + line for line in body]
    lines += ["", "Other:"]
    for head, text in _OTHER:
        lines.append(f"  {head}".ljust(_HELP_COLUMN) + text)
    return "\n".join(lines) + "\n"


#: getopt's words for a bad option, and netdemo's.
_GETOPT_ERRORS = (
    (
        re.compile(r"option (-\S+) not recognized"),
        "{}: no such option (twistd netdemo --help lists them)",
    ),
    (re.compile(r"option (-\S+) requires argument"), "{}: needs a value"),
    (re.compile(r"option (-\S+) must not have an argument"), "{}: takes no value"),
)


def _oneLine(message: str) -> str:
    """
    An option error as one line that names the option.
    """
    text = " ".join(message.split())
    text = text.removeprefix("Parameter type enforcement failed: ")
    for pattern, words in _GETOPT_ERRORS:
        match = pattern.fullmatch(text)
        if match:
            return words.format(match.group(1))
    return text


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

    from netdemo.proxyheader import PREFIX, wantsProxyHeader
    from netdemo.tls import isTLSDescription, parseTLSDescription

    if wantsProxyHeader(value):
        # haproxy:DESC: the PROXY header first, then DESC's listener.
        return PREFIX + streamDescription(option, value[len(PREFIX) :])
    if isTLSDescription(value):
        try:
            parseTLSDescription(value)
        except ValueError as e:
            raise usage.UsageError(
                f"--{option}: {value!r} is not a usable ssl: description ({e})"
            ) from None
        return value
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

    synopsis = "[service options] [options]"

    #: The paragraphs of C{--help} before the options.
    overview = (
        "Run the classic network utility services in one process: TCP echo "
        "(RFC 862), a line-based pub/sub hub, a byte-relay broadcast, UDP "
        "echo, a multicast responder and an HTTP status page with Prometheus "
        "metrics. With no service "
        "option, the default set runs: every service on 127.0.0.1 on its "
        "default port (shown as [default set: ...]).",
        "DESC is a port (8007: every address, with a backlog of "
        f"{DEFAULT_BACKLOG}) or a Twisted server endpoint description: "
        "tcp:8007:interface=127.0.0.1, tcp6:8007:interface=\\:\\:1, "
        "ssl:8443:privateKey=key.pem, unix:/run/echo.sock, "
        "systemd:domain=INET:name=echo; haproxy:DESC behind a load balancer "
        "(a PROXY header first: the real client address is used). BYTES is a "
        "size such as 4096, 64KiB or 1MiB. docs/usage.md tells more.",
    )

    optParameters: list[list[Any]] = [
        [o.name, None, o.default, o.help, _namedCoerce(o.name, o.coerce)]
        for group in GROUPS
        for o in group.options
        if o.coerce is not None
    ]
    optFlags: list[list[Any]] = [
        [o.name, None, o.help]
        for group in GROUPS
        for o in group.options
        if o.coerce is None and o.metavar == ""
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
            "http-origin",
        ]
    )

    def __init__(self) -> None:
        super().__init__()
        self["tcp"] = []
        self["http"] = []
        self["pubsub"] = []
        self["udp"] = []
        self["udp-allow"] = []
        self["http-origin"] = []
        self["udp-peer"] = []
        self["multicast"] = []
        self["broadcast"] = []
        #: The options given that have no effect without a service that is
        #: not running, each with the services it needs (L{postOptions}).
        self.withoutEffect: list[tuple[str, tuple[str, ...]]] = []
        #: The C{--hub-auth} file's accounts, once read (L{postOptions}).
        self.hubAccounts: Any = None

    def parseOptions(self, options: Any = None) -> None:
        """
        Parse, and make any error one line that names the option: run by
        C{twistd}, print it as C{netdemo: ...} and exit with status 1 (rather
        than twistd's usage, a blank line and the error); otherwise raise
        it, as L{usage.UsageError}.
        """
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            message = _oneLine(str(e))
            if self.parent is None:
                raise usage.UsageError(message) from None
            sys.stderr.write(f"netdemo: {message}\n")
            sys.stderr.flush()
            raise SystemExit(1) from None

    def getUsage(self, width: int | None = None) -> str:
        """
        C{--help}: the overview, the services, then each group of settings,
        each option with its default once; C{width} columns (80 when not
        given: the help must not depend on the terminal it was made in).
        """
        return renderHelp(self.overview, GROUPS, width or 80)

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

    def opt_http_origin(self, value: str) -> None:
        """
        Also let pages from this origin open the hub's WebSocket and event
        streams. Repeatable
        """
        origin = value.strip().lower().rstrip("/")
        scheme, sep, host = origin.partition("://")
        if scheme not in ("http", "https") or not sep or not host or "/" in host:
            raise usage.UsageError(
                f"--http-origin: {value!r} is not an origin "
                "(scheme://host[:port], e.g. https://example.org)"
            )
        self["http-origin"].append(origin)

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
            try:
                group.membership.checkInterface()
            except OSError:
                names = ", ".join(name for _, name in socket.if_nameindex())
                raise usage.UsageError(
                    f"--multicast: {str(group)!r}: this host has no interface "
                    f"{group.interface!r} (it has {names})"
                ) from None
        if self["publish-burst"] is not None and self["publish-rate"] is None:
            raise usage.UsageError("--publish-burst needs --publish-rate")
        self._hubAccounts()
        self._backplanePassword()
        self._tlsListeners()
        self.withoutEffect = self._withoutEffect()

    def _tlsListeners(self) -> None:
        """
        Add C{--tls-client-ca} to the C{ssl:} listeners and read every TLS
        listener's files, so that one that cannot be used is an option
        error.
        """
        from netdemo.proxyheader import splitProxied
        from netdemo.tls import (
            TLSFileError,
            isTLSDescription,
            loadCertificates,
            parseTLSDescription,
            readCertificates,
            withClientCA,
        )

        clientCA = self["tls-client-ca"]
        if clientCA is not None:
            try:
                readCertificates(clientCA, "file")
            except TLSFileError as e:
                raise usage.UsageError(f"--tls-client-ca: {e}") from None
        listeners = 0
        for name in STREAM_SERVICES:
            described = []
            for description in self[name]:
                prefix, inner = splitProxied(description)
                if isTLSDescription(inner):
                    listeners += 1
                    if clientCA is not None:
                        inner = withClientCA(inner, clientCA)
                    try:
                        loadCertificates(parseTLSDescription(inner))
                    except TLSFileError as e:
                        raise usage.UsageError(
                            f"--{name}: {description!r}: {e}"
                        ) from None
                described.append(prefix + inner)
            self[name] = described
        if clientCA is not None and not listeners:
            raise usage.UsageError(
                "--tls-client-ca needs an ssl: listener (--tcp, --pubsub, "
                "--broadcast or --http ssl:PORT:privateKey=FILE)"
            )

    def _withoutEffect(self) -> list[tuple[str, tuple[str, ...]]]:
        """
        The options given a value other than their default whose services
        are not running.
        """
        running = {name for name in SERVICE_OPTIONS if self[name]}
        found = []
        for group in GROUPS:
            if not group.services or running.intersection(group.services):
                continue
            for option in group.options:
                value = self[option.name]
                given = (
                    bool(value)
                    if option.metavar in ("", "CIDR")
                    else (value != option.default)
                )
                if given:
                    found.append((option.name, group.services))
        return found

    def _hubAccounts(self) -> None:
        """
        Read the C{--hub-auth} file, so that a bad one stops the start with
        one line naming what is wrong.
        """
        self.hubAccounts = None
        path = self["hub-auth"]
        if path is None:
            return
        from netdemo.hubauth import readAccounts

        try:
            self.hubAccounts = readAccounts(path)
        except ValueError as e:
            raise usage.UsageError(f"--hub-auth {path!r}: {e}") from None

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
            history=not self["no-backplane-history"],
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
            publishRate=self["publish-rate"] or 0.0,
            publishBurst=self["publish-burst"] or 0,
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
        return HTTPLimits(
            headerTimeout=self["http-header-timeout"],
            hubStreams=self["http-hub-streams"],
            origins=tuple(self["http-origin"]),
        )


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
    from netdemo.logs import DaemonService
    from netdemo.metrics import MemoryMetrics
    from netdemo.systemd import Notifier, NotifyService, listeningSummary
    from netdemo.web import ServerInfo, buildHTTPService

    metrics = MemoryMetrics()
    top = DaemonService(options.parent)
    if options.withoutEffect:
        _log.warn(
            "{text}",
            event="options_without_effect",
            text=describeWithoutEffect(options.withoutEffect),
            options=[name for name, _ in options.withoutEffect],
        )
    limits = options.connectionLimits()
    hub = None
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
        auth = None
        if options.hubAccounts is not None:
            from netdemo.hubauth import AccountsFile
            from netdemo.signals import HangupService

            auth = AccountsFile(options["hub-auth"], options.hubAccounts, metrics)
            HangupService(reactor, auth.reload).setServiceParent(top)
        hubService = buildPubSubService(
            options["pubsub"], limits, hubLimits, metrics, reactor, backplane, auth
        )
        hubService.setServiceParent(top)
        from netdemo.hubgate import HubGate

        # The HTTP service serves the hub to browsers through this gate.
        hub = HubGate(hubService.factory)
    if options["broadcast"]:
        from netdemo.broadcast import buildBroadcastService

        buildBroadcastService(
            options["broadcast"], limits, options.broadcastLimits(), metrics, reactor
        ).setServiceParent(top)
    datagramLimits = options.datagramLimits()
    # This run's id: in the multicast beacons and on the status page.
    instance = ""
    if options["multicast"] or options["http"]:
        from netdemo.multicast import newInstanceId

        instance = newInstanceId()
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
            instance=instance,
            maxPeers=options["multicast-max-peers"],
        ).setServiceParent(top)
    if options["http"]:
        import socket

        info = ServerInfo(
            version=__version__,
            startedAt=reactor.seconds(),
            hostname=socket.gethostname(),
            instance=instance,
        )
        buildHTTPService(
            options["http"],
            metrics,
            info,
            reactor,
            limits,
            options.httpLimits(),
            hub=hub,
        ).setServiceParent(top)
    # Last, so that it starts once every listener above is bound.
    NotifyService(
        Notifier.fromEnvironment(), lambda: listeningSummary(metrics), reactor
    ).setServiceParent(top)
    return top


def describeWithoutEffect(found: list[tuple[str, tuple[str, ...]]]) -> str:
    """
    One line saying which options have no effect, and what they need:
    C{--max-pending and --slow-policy have no effect without --pubsub}.
    """
    byNeed: dict[tuple[str, ...], list[str]] = {}
    for name, services in found:
        byNeed.setdefault(services, []).append(f"--{name}")
    parts = []
    for services, names in byNeed.items():
        verb = "has" if len(names) == 1 else "have"
        need = " or ".join(f"--{s}" for s in services)
        parts.append(f"{_listed(names)} {verb} no effect without {need}")
    return "; ".join(parts)


def _listed(words: list[str]) -> str:
    """
    C{a}, C{a and b}, C{a, b and c}.
    """
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " and " + words[-1]
