# -*- test-case-name: tests.test_cli -*-
"""
What every C{netdemo} client shares: where it writes (L{Console}), the
one-line error (L{CommandError}), address parsing, option coercers, and
Ctrl-C handling.

Clients write through a L{Console} handed to them, never to C{sys.stdout}
directly, so that tests run them in-process with in-memory streams.
"""

from __future__ import annotations

import getopt
import math
import signal
import socket
import sys
import textwrap
from collections.abc import Callable, Sequence
from typing import IO, Any

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.python import usage

__all__ = [
    "EXIT_ERROR",
    "EXIT_LOST",
    "EXIT_OK",
    "CommandError",
    "Console",
    "GnuOptions",
    "countCoerce",
    "formatHostPort",
    "parseHostPort",
    "plural",
    "positive",
    "resolve",
    "whenInterrupted",
    "why",
]

#: Exit statuses: all answered; some lost or none answered; an error.
EXIT_OK, EXIT_LOST, EXIT_ERROR = 0, 1, 2


class CommandError(Exception):
    """
    A failure to report as one line and exit status 2.
    """


@define
class Console:
    """
    Where a client writes: results on C{out}, notices and errors on C{err}.

    @ivar out: Text output (results, one per line).
    @ivar err: Text output for notices and errors.
    @ivar binary: Byte output for what is relayed as it came (C{netdemo
        tail}); the buffer under C{out} by default.
    """

    out: IO[str] = field(factory=lambda: sys.stdout)
    err: IO[str] = field(factory=lambda: sys.stderr)
    binary: IO[bytes] | None = None

    def say(self, text: str) -> None:
        """
        One line of results on C{out}, flushed.
        """
        print(text, file=self.out, flush=True)

    def note(self, message: str) -> None:
        """
        One notice or error line on C{err}: C{netdemo: message}.
        """
        print(f"netdemo: {message}", file=self.err, flush=True)

    def bytesOut(self) -> IO[bytes]:
        """
        The byte stream behind C{out}.
        """
        if self.binary is not None:
            return self.binary
        buffer: IO[bytes] = self.out.buffer  # type: ignore[attr-defined]
        return buffer


def plural(count: int, singular: str, pluralForm: str | None = None) -> str:
    """
    C{1 probe}, C{2 probes}.
    """
    if count == 1:
        return f"{count} {singular}"
    return f"{count} {pluralForm or singular + 's'}"


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


def formatHostPort(host: str, port: int) -> str:
    """
    C{host:port}, with IPv6 addresses in brackets.
    """
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def positive(kind: Callable[[str], Any], what: str) -> Callable[[str], Any]:
    """
    A coerce function for values of C{kind} above 0 (and finite), whose
    error names C{what} is accepted.
    """

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


def countCoerce(value: str) -> int:
    """
    Coerce a count: a whole number, 0 for no limit.
    """
    try:
        count = int(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a whole number") from None
    if count < 0:
        raise ValueError(f"{value!r} is not a whole number of at least 0")
    return count


countCoerce.coerceDoc = "0 means until interrupted."  # type: ignore[attr-defined]


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


def why(error: BaseException) -> str:
    """
    The first line of what an exception says (for a TLS error, OpenSSL's
    reasons: C{certificate verify failed}).
    """
    if type(error).__module__.startswith("OpenSSL"):
        from netdemo.clients.tlsclient import tlsReasons

        reasons = tlsReasons(error)
        if reasons:
            return reasons
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


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

    def opt_version(self) -> None:
        """
        Print netdemo's, Twisted's and Python's versions and exit.
        """
        from netdemo import versionLine

        print(versionLine())
        raise SystemExit(0)

    def getUsage(self, width: int | None = None) -> str:
        """
        The usage text, with the description's paragraphs wrapped one by one
        and its indented lines (the examples) kept as they are.
        """
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
