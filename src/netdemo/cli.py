# -*- test-case-name: tests.test_cli -*-
"""
The C{netdemo} command: clients for the services, the other half of every
classic Twisted example.

This module only dispatches: each subcommand is a L{usage.Options} subclass
and a coroutine C{run(reactor, options, console)} in its own module under
L{netdemo.clients}, imported only when used, and run by
L{twisted.internet.task.react}.  Errors are one line on standard error and
exit status 2; Ctrl-C ends a running client cleanly, with its summary.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from twisted.internet.defer import Deferred
from twisted.python import usage
from twisted.python.reflect import namedAny

from netdemo import versionLine
from netdemo.clients.common import EXIT_ERROR, CommandError, Console

__all__ = ["NetdemoOptions", "main", "parseCommandLine"]


def _lazy(name: str) -> Callable[..., Any]:
    """
    A callable that imports C{name} (a dotted name) when first called and
    calls it, so that each subcommand's module is imported only when used.
    """

    def call(*args: Any) -> Any:
        return namedAny(name)(*args)

    return call


#: Each command: its name, its options class and its runner (dotted names),
#: and its one-line description.
COMMANDS: list[tuple[str, str, str, str]] = [
    (
        "ping",
        "netdemo.clients.ping.PingOptions",
        "netdemo.clients.ping.runPing",
        "Echo round trips over TCP or UDP, like ping",
    ),
    (
        "chat",
        "netdemo.clients.chat.ChatOptions",
        "netdemo.clients.chat.runChat",
        "A line client for the pub/sub hub that reconnects",
    ),
    (
        "tail",
        "netdemo.clients.tail.TailOptions",
        "netdemo.clients.tail.runTail",
        "Subscribe to the pub/sub hub and print what arrives",
    ),
    (
        "pub",
        "netdemo.clients.pub.PubOptions",
        "netdemo.clients.pub.runPub",
        "Publish to the pub/sub hub and exit once acknowledged",
    ),
    (
        "mcast",
        "netdemo.clients.mcast.McastOptions",
        "netdemo.clients.mcast.runMcast",
        "Probe a multicast group, or join it and listen",
    ),
    (
        "passwd",
        "netdemo.clients.passwd.PasswdOptions",
        "netdemo.clients.passwd.runPasswd",
        "Print a password hash for a --hub-auth file",
    ),
]


class NetdemoOptions(usage.Options):
    """
    C{netdemo COMMAND ...}.
    """

    longdesc = (
        "Clients for the netdemo services. 'netdemo COMMAND --help' shows each "
        "command's options and examples."
    )
    subCommands: list[list[Any]] = [
        [name, None, _lazy(options), description]
        for name, options, _, description in COMMANDS
    ]

    def getSynopsis(self) -> str:
        """
        C{Usage: netdemo COMMAND [options]}, or, as the start of a command's
        own synopsis, C{Usage: netdemo}.
        """
        if getattr(self, "subCommand", None) is not None:
            return "Usage: netdemo"
        return "Usage: netdemo COMMAND [options]"

    def opt_version(self) -> None:
        """
        Print netdemo's, Twisted's and Python's versions and exit.
        """
        print(versionLine())
        raise SystemExit(0)

    def postOptions(self) -> None:
        if self.subCommand is None:
            names = ", ".join(str(c[0]) for c in self.subCommands)
            raise usage.UsageError(f"say which command: {names}")


RUNNERS: dict[str, Callable[..., Any]] = {
    name: _lazy(runner) for name, _, runner, _ in COMMANDS
}


def parseCommandLine(argv: Sequence[str]) -> NetdemoOptions:
    """
    Parse a C{netdemo} command line.

    @raise usage.UsageError: With the one line to print.
    """
    options = NetdemoOptions()
    options.parseOptions(list(argv))
    return options


def fail(message: str, console: Console | None = None) -> NoReturn:
    """
    Print one line to standard error and exit with status 2.
    """
    (console or Console()).note(message)
    raise SystemExit(EXIT_ERROR)


def _quietStdout() -> None:
    """
    Point standard output at /dev/null, so that the interpreter's last
    flush of a closed pipe does not print a traceback either.
    """
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """
    The C{netdemo} console script.
    """
    from twisted.internet import task

    console = Console()
    try:
        options = parseCommandLine(sys.argv[1:] if argv is None else argv)
    except usage.UsageError as e:
        fail(str(e), console)
    except BrokenPipeError:
        # --help into a pager that quit early (| head): not an error.
        _quietStdout()
        raise SystemExit(0) from None
    assert options.subCommand is not None
    runner = RUNNERS[options.subCommand]

    async def run(reactor: Any) -> None:
        try:
            code = await runner(reactor, options.subOptions, console)
        except CommandError as e:
            fail(str(e), console)
        raise SystemExit(code)

    task.react(lambda reactor: Deferred.fromCoroutine(run(reactor)))
