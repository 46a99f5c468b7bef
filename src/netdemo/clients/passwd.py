# -*- test-case-name: tests.test_accounts -*-
"""
C{netdemo passwd}: a password hash for a C{--hub-auth} file.
"""

from __future__ import annotations

import getpass
import sys
from typing import Any

from netdemo.clients.common import CommandError, Console, GnuOptions

__all__ = ["PasswdOptions", "runPasswd"]


class PasswdOptions(GnuOptions):
    """
    C{netdemo passwd}.
    """

    synopsis = "[< FILE]"
    longdesc = (
        "Print a hash of a password for the password key of a user in a "
        "--hub-auth file (scrypt, with a salt of its own). On a terminal it "
        "asks for the password twice; otherwise it reads the first line of "
        "standard input. The password is never shown nor written anywhere.\n\n"
        "Examples:\n"
        "  netdemo passwd\n"
        "  printf '%s\\n' \"$SECRET\" | netdemo passwd"
    )


def _readPassword(stdin: Any) -> str:
    """
    The password: asked twice on a terminal, else the first line of
    C{stdin}.

    @raise CommandError: Empty, or the two differ.
    """
    if stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise CommandError("the two passwords differ")
    else:
        first = stdin.readline().rstrip("\r\n")
    if not first:
        raise CommandError("an empty password")
    return first


async def runPasswd(reactor: Any, options: PasswdOptions, console: Console) -> int:
    """
    Run C{netdemo passwd}.

    @return: The exit status.
    """
    from netdemo.accounts import hashPassword

    console.say(hashPassword(_readPassword(sys.stdin)))
    return 0
