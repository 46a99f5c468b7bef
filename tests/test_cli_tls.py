"""
Tests for C{--tls} of the stream clients (L{netdemo.clients.tlsclient}):
C{netdemo ping tcp}, C{pub}, C{tail} and C{chat} in this process, against
TLS listeners in the test's reactor.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netdemo.cli import parseCommandLine
from netdemo.clients import chat, pub, tail
from netdemo.clients.common import CommandError
from netdemo.clients.ping import runPing
from netdemo.echo import buildEchoService
from netdemo.limits import ConnectionLimits
from netdemo.metrics import MemoryMetrics
from netdemo.stream import StreamService
from netdemo.tls import withClientCA
from tests.pubsubhelpers import hubFactory
from tests.support import waitUntil
from tests.test_cli_hub import memoryConsole, notes, output, typing
from tests.test_tls import tempPKI
from tests.tlshelpers import PKI, makePKI


def parse(*args: str) -> Any:
    return parseCommandLine(list(args)).subOptions


class OptionTests(SynchronousTestCase):
    """
    C{--tls}, C{--ca}, C{--cert} and C{--key} are checked when parsed.
    """

    def setUp(self) -> None:
        self.pki = tempPKI(self)

    def assertRefused(self, args: list[str], fragment: str) -> None:
        error = self.assertRaises(UsageError, parse, *args)
        self.assertNotIn("\n", str(error))
        self.assertIn(fragment, str(error))

    def test_everyClient(self) -> None:
        """
        C{ping tcp}, C{chat}, C{tail} and C{pub} take them; without
        C{--tls} there is no TLS.
        """
        for command in (
            ["ping", "tcp", "127.0.0.1:7"],
            ["chat", "127.0.0.1:8"],
            ["tail", "127.0.0.1:8"],
            ["pub", "127.0.0.1:8", "t", "m"],
        ):
            self.assertIsNone(parse(*command).tlsClient)
            options = parse(*command, "--tls", "--ca", self.pki.ca)
            self.assertIsNotNone(options.tlsClient)

    def test_errors(self) -> None:
        """
        A file option without C{--tls}, C{--cert} without C{--key}, a file
        that cannot be read or used, and C{--tls} over UDP are one line.
        """
        target = ["pub", "127.0.0.1:8", "t", "m"]
        self.assertRefused([*target, "--ca", self.pki.ca], "--ca needs --tls")
        self.assertRefused(
            [*target, "--tls", "--cert", self.pki.clientCert], "--cert and --key"
        )
        self.assertRefused([*target, "--tls", "--ca", "/nonexistent"], "/nonexistent")
        self.assertRefused(
            [*target, "--tls", "--ca", self.pki.clientKey], "no PEM certificate"
        )
        self.assertRefused(
            [
                *target,
                "--tls",
                "--cert",
                self.pki.clientCert,
                "--key",
                self.pki.foreignKey,
            ],
            "not a PEM certificate and its unencrypted key",
        )
        self.assertRefused(["ping", "udp", "127.0.0.1:9", "--tls"], "--tls is for tcp")


class RunnerTests(TestCase):
    """
    The clients over TLS, in this process.
    """

    def setUp(self) -> None:
        self.pki = tempPKI(self)
        self.console = memoryConsole()
        self.interrupted: Deferred[None] = Deferred()
        for module in (chat, tail):
            self.patch(module, "whenInterrupted", lambda reactor: self.interrupted)

    async def listen(self, service: StreamService) -> int:
        service.startService()
        self.addCleanup(service.stopService)
        self.assertTrue(await service.whenListening())
        port: int = service.ports[0].getHost().port  # type: ignore[attr-defined]
        return port

    async def echo(self, pki: PKI | None = None) -> int:
        description = (pki or self.pki).serverDescription()
        return await self.listen(
            buildEchoService(
                [description], ConnectionLimits(), MemoryMetrics(), reactor
            )
        )

    async def hub(self, clientCA: bool = False) -> int:
        description = self.pki.serverDescription()
        if clientCA:
            description = withClientCA(description, self.pki.ca)
        factory = hubFactory(MemoryMetrics(), reactor)
        return await self.listen(
            StreamService("pubsub", factory, [description], reactor)
        )

    async def ping(self, *args: str) -> int:
        options = parseCommandLine(["ping", "tcp", *args, "-c", "2", "-i", "0.01"])
        code: int = await runPing(reactor, options.subOptions, self.console)
        return code

    async def pingFails(self, *args: str) -> str:
        with self.assertRaises(CommandError) as caught:
            await self.ping(*args)
        message = str(caught.exception)
        self.assertNotIn("\n", message)
        return message

    async def test_ping(self) -> None:
        """
        C{ping tcp --tls} with the right CA gets its answers, by address
        or by name.
        """
        port = await self.echo()
        for host in ("127.0.0.1", "localhost"):
            self.assertEqual(
                await self.ping(f"{host}:{port}", "--tls", "--ca", self.pki.ca), 0
            )
        self.assertEqual(
            self.console.out.getvalue().count("2 received, 0% loss"),  # type: ignore[attr-defined]
            2,
        )

    async def test_wrongCA(self) -> None:
        """
        A server certificate from a CA the client does not trust is a
        one-line error.
        """
        port = await self.echo()
        message = await self.pingFails(
            f"127.0.0.1:{port}", "--tls", "--ca", self.pki.foreignCA
        )
        self.assertIn(f"cannot connect to 127.0.0.1:{port}", message)
        self.assertIn("TLS handshake failed: certificate verify failed", message)

    async def test_wrongName(self) -> None:
        """
        A certificate for another name is refused, saying so.
        """
        other = makePKI(self.pki.directory + "/other", hosts=("example.invalid",))
        port = await self.echo(other)
        message = await self.pingFails(f"127.0.0.1:{port}", "--tls", "--ca", other.ca)
        self.assertIn("not for this name or address", message)

    async def test_clientCertificate(self) -> None:
        """
        C{pub --tls --cert --key} publishes to a hub that requires client
        certificates, which C{tail --tls} with one receives; C{pub} without
        a certificate is refused in one line.
        """
        port = await self.hub(clientCA=True)
        target = f"127.0.0.1:{port}"
        client = ["--tls", "--ca", self.pki.ca]
        client += ["--cert", self.pki.clientCert, "--key", self.pki.clientKey]
        options = parseCommandLine(["tail", target, "--sub", "lab", *client])
        tailing = Deferred.fromCoroutine(
            tail.runTail(reactor, options.subOptions, self.console)
        )
        await waitUntil(lambda: "connected to" in notes(self.console), "connected")
        options = parseCommandLine(["pub", target, "lab", "over", "tls", *client])
        published = memoryConsole()
        self.assertEqual(await pub.runPub(reactor, options.subOptions, published), 0)
        await waitUntil(lambda: b"over tls" in output(self.console), "the delivery")
        self.interrupted.callback(None)
        self.assertEqual(await tailing, 0)
        options = parseCommandLine(
            ["pub", target, "lab", "x", "--tls", "--ca", self.pki.ca]
        )
        with self.assertRaises(CommandError) as caught:
            await pub.runPub(reactor, options.subOptions, memoryConsole())
        # TLS 1.3: the server refuses the certificate after the handshake.
        self.assertIn("(tlsv13 alert certificate required)", str(caught.exception))
        self.assertNotIn("\n", str(caught.exception))

    async def test_tailWithoutCertificate(self) -> None:
        """
        C{tail --tls} without a client certificate, to a hub that requires
        one, fails in one line that says so.
        """
        port = await self.hub(clientCA=True)
        options = parseCommandLine(
            ["tail", f"127.0.0.1:{port}", "--tls", "--ca", self.pki.ca]
        )
        with self.assertRaises(CommandError) as caught:
            await tail.runTail(reactor, options.subOptions, self.console)
        message = str(caught.exception)
        self.assertNotIn("\n", message)
        self.assertIn("certificate required", message)

    async def test_chat(self) -> None:
        """
        C{chat --tls} connects by name, shows the greeting and answers, and
        ends with its input.
        """
        port = await self.hub()
        self.patch(chat, "standardIO", typing(b"/ping\n"))
        options = parseCommandLine(
            ["chat", f"localhost:{port}", "--tls", "--ca", self.pki.ca]
        )
        code = await chat.runChat(reactor, options.subOptions, self.console)
        self.assertEqual(code, 0)
        self.assertIn(f"connected to localhost:{port}", notes(self.console))
        self.assertIn("hub: * welcome to netdemo pubsub", notes(self.console))
        self.assertIn(b"+OK pong", output(self.console))
