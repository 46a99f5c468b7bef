"""
C{--user}, C{--password-file} and C{--token-file} of C{netdemo chat},
C{tail} and C{pub}: the secret is read from a file and sent with C{/login}
before anything else, on every connection.  The runners run in this process
against a hub with accounts on loopback (its secrets checked in the
reactor's thread pool, as in the daemon).
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from netdemo.accounts import loadAccounts
from netdemo.clients import chat
from netdemo.hubauth import AccountsFile
from netdemo.metrics import MemoryMetrics
from tests.support import waitUntil
from tests.test_cli_hub import Runners, notes, output, parse, typing
from tests.test_pubsub_auth import ACCOUNTS, ALICE, BOB, ROOT, accountsFile


class LoginOptionTests(SynchronousTestCase):
    """
    The options, checked when parsed.
    """

    def test_read(self) -> None:
        """
        The first line of the file is the secret (its end, LF or CRLF, left
        out), for each of the three commands.
        """
        path = accountsFile(self, "pass word\r\nsecond line\n")
        for command in (
            ["chat", "127.0.0.1:8008"],
            ["tail", "127.0.0.1:8008"],
            ["pub", "127.0.0.1:8008", "t", "x"],
        ):
            options = parse(*command, "--user", "bob", "--password-file", path)
            self.assertEqual(options["login"], b"/login bob pass word")
            self.assertIsNone(parse(*command)["login"])

    def test_bad(self) -> None:
        """
        Each mistake is one line naming the option.
        """
        good = accountsFile(self, "secret\n")
        empty = accountsFile(self, "\nsecret\n")
        for argv, message in [
            (["--password-file", good], "--password-file needs --user"),
            (["--token-file", good], "--token-file needs --user"),
            (["--user", "bob"], "--user needs one of --password-file and --token-file"),
            (
                ["--user", "bob", "--password-file", good, "--token-file", good],
                "--user needs one of",
            ),
            (
                ["--user", "bob", "--token-file", "/nonexistent/x"],
                "--token-file '/nonexistent/x': cannot read it",
            ),
            (
                ["--user", "bob", "--token-file", empty],
                f"--token-file {empty!r}: its first line is empty",
            ),
            (["--user", "", "--token-file", good], "--user '' is not a user name"),
        ]:
            with self.assertRaises(UsageError) as caught:
                parse("pub", "127.0.0.1:8008", "t", "x", *argv)
            self.assertIn(message, str(caught.exception))


class LoginRunnerTests(Runners):
    """
    The clients log in to a hub with accounts.
    """

    def setUp(self) -> Deferred[None]:  # type: ignore[override]
        self.patchInterrupts()
        path = accountsFile(self, ACCOUNTS)
        auth = AccountsFile(path, loadAccounts(ACCOUNTS), MemoryMetrics())

        async def start() -> None:
            self.hub = await self.startHub(auth=auth)

        return Deferred.fromCoroutine(start())

    def secret(self, value: str) -> str:
        """
        A file holding C{value}, removed after the test.
        """
        return accountsFile(self, value + "\n")

    async def test_pub(self) -> None:
        """
        C{pub --user --token-file} publishes as the user; a wrong token
        fails the run with the hub's answer.
        """
        watcher = await self.hub.watcher()
        await watcher.command(b"/login root " + ROOT.encode(), b"+OK logged in")
        await watcher.command(b"/sub lab.>", b"+OK subscribed")
        argv = ["pub", self.hub.target, "lab.x", "21.5", "--user", "alice"]
        self.assertEqual(
            await self.launch(*argv, "--token-file", self.secret(ALICE)), 0
        )
        self.assertEqual(await watcher.waitFor(b"[lab.x]"), [b"[lab.x] <alice> 21.5"])
        message = await self.fails(*argv, "--token-file", self.secret("wrong"))
        self.assertIn("the hub refused the login as alice: -ERR login failed", message)

    async def test_tail(self) -> None:
        """
        C{tail --user --password-file} logs in (a password: scrypt in a
        thread) before it subscribes; a pattern its user may not have is
        refused.
        """
        running = self.launch(
            "tail",
            self.hub.target,
            "--sub",
            "lab.>",
            "--user",
            "bob",
            "--password-file",
            self.secret(BOB),
        )
        await waitUntil(lambda: "connected to" in notes(self.console), "connected")
        watcher = await self.hub.watcher()
        await watcher.command(b"/login root " + ROOT.encode(), b"+OK logged in")
        await watcher.command(b"/pub lab.y hi", b"+OK")
        await waitUntil(lambda: b"hi" in output(self.console), "the line")
        self.interrupted.callback(None)
        self.assertEqual(await running, 0)
        self.assertEqual(output(self.console), b"[lab.y] <root> hi\n")
        message = await self.fails(
            "tail",
            self.hub.target,
            "-s",
            ">",
            "--user",
            "bob",
            "--password-file",
            self.secret(BOB),
        )
        self.assertIn("-ERR permission denied: subscribe >", message)

    async def test_chat(self) -> None:
        """
        C{chat --user --token-file} logs in before it takes its nickname and
        sends its lines.
        """
        watcher = await self.hub.watcher()
        await watcher.command(b"/login alice " + ALICE.encode(), b"+OK logged in")
        self.patch(chat, "standardIO", typing(b"hello\n"))
        self.assertEqual(
            await self.launch(
                "chat",
                self.hub.target,
                "--user",
                "root",
                "--token-file",
                self.secret(ROOT),
            ),
            0,
        )
        self.assertEqual(await watcher.waitFor(b"<root>"), [b"<root> hello"])
