"""
Tests for L{netdemo.tls} (TLS listeners from C{ssl:} descriptions, client
certificates, reloading), L{netdemo.signals}, and the TLS listeners of a
real daemon reached by C{openssl s_client}, C{ncat --ssl} and C{curl}.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netdemo.metrics import MemoryMetrics
from netdemo.signals import chainSignal
from netdemo.stream import ListeningService
from netdemo.tap import Options
from netdemo.tls import (
    ReloadingServerTLS,
    TLSFileError,
    TLSListener,
    loadCertificates,
    parseTLSDescription,
    peerSubject,
    withClientCA,
)
from tests.support import (
    PATIENCE,
    Daemon,
    captureEvents,
    requireTool,
    runTwistd,
    waitUntil,
)
from tests.tlshelpers import PKI, makeCertificate, makePKI


def tempPKI(testCase: Any) -> PKI:
    """
    A fresh L{PKI} in a directory removed after the test.
    """
    directory = tempfile.mkdtemp(prefix="netdemo-tls-")
    testCase.addCleanup(shutil.rmtree, directory, True)
    return makePKI(directory)


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


class DescriptionTests(SynchronousTestCase):
    """
    L{parseTLSDescription} reads Twisted's C{ssl:} fields and C{clientCA}.
    """

    def test_fields(self) -> None:
        """
        Every field, with backslash escapes as Twisted reads them.
        """
        listener = parseTLSDescription(
            r"ssl:8443:privateKey=k\:1.pem:certKey=c.pem:interface=\:\:1"
            ":backlog=7:clientCA=ca.pem:extraCertChain=x.pem"
        )
        self.assertEqual(
            listener,
            TLSListener(
                8443,
                privateKey="k:1.pem",
                certKey="c.pem",
                interface="::1",
                backlog=7,
                clientCA="ca.pem",
                extraCertChain="x.pem",
            ),
        )

    def test_defaults(self) -> None:
        """
        Twisted's defaults: C{server.pem}, every address, a backlog of 50.
        """
        self.assertEqual(parseTLSDescription("ssl:443"), TLSListener(443))

    def test_refused(self) -> None:
        """
        An unknown field, a second port, a port out of range or not a
        number are refused in one line.
        """
        for description, fragment in [
            ("ssl:1:sslmethod=TLSv1_METHOD", "no field 'sslmethod'"),
            ("ssl:1:2", "one port"),
            ("ssl:70000", "70000"),
            ("ssl:x", "whole numbers"),
        ]:
            error = self.assertRaises(ValueError, parseTLSDescription, description)
            self.assertIn(fragment, str(error))

    @given(st.text(st.characters(exclude_categories=["Cs"]), min_size=1))
    def test_anyPath(self, path: str) -> None:
        """
        Any file name survives being written into a description and read
        back, whatever C{:}, C{=} and C{\\} it holds.
        """
        added = withClientCA("ssl:1:privateKey=k", path)
        self.assertEqual(parseTLSDescription(added).clientCA, path)

    def test_withClientCA(self) -> None:
        """
        C{clientCA} is added, escaped, unless the description names one.
        """
        added = withClientCA("ssl:1:privateKey=k", "/a:b/ca.pem")
        self.assertEqual(parseTLSDescription(added).clientCA, "/a:b/ca.pem")
        own = "ssl:1:privateKey=k:clientCA=mine.pem"
        self.assertEqual(withClientCA(own, "other.pem"), own)


class OptionTests(SynchronousTestCase):
    """
    C{twistd netdemo} checks TLS listeners when it reads its options.
    """

    def setUp(self) -> None:
        self.pki = tempPKI(self)

    def assertUsageError(self, args: list[str], *fragments: str) -> None:
        error = self.assertRaises(UsageError, parse, *args)
        self.assertNotIn("\n", str(error))
        for fragment in fragments:
            self.assertIn(fragment, str(error))

    def test_everyStreamService(self) -> None:
        """
        Each stream service and HTTP accept an C{ssl:} description, kept
        as given.
        """
        description = self.pki.serverDescription()
        for service in ("tcp", "pubsub", "broadcast", "http"):
            options = parse(f"--{service}", description)
            self.assertEqual(options[service], [description])

    def test_missingFiles(self) -> None:
        """
        A missing key or certificate file is one line naming the option and
        the file.
        """
        missing = os.path.join(self.pki.directory, "missing.pem")
        self.assertUsageError(
            ["--pubsub", f"ssl:0:privateKey={missing}:certKey={self.pki.cert}"],
            "--pubsub",
            "privateKey",
            missing,
        )
        self.assertUsageError(
            ["--http", f"ssl:0:privateKey={self.pki.key}:certKey={missing}"],
            "--http",
            "certKey",
            missing,
        )

    def test_keyNotMatchingCertificate(self) -> None:
        """
        A key that is not the certificate's is refused.
        """
        self.assertUsageError(
            [
                "--tcp",
                f"ssl:0:privateKey={self.pki.clientKey}:certKey={self.pki.cert}",
            ],
            "--tcp",
            "does not match",
        )

    def test_unknownField(self) -> None:
        """
        A field netdemo does not know is refused, naming the option.
        """
        self.assertUsageError(
            ["--broadcast", "ssl:0:sslmethod=SSLv23_METHOD"],
            "--broadcast",
            "sslmethod",
        )

    def test_clientCA(self) -> None:
        """
        C{--tls-client-ca} is added to every C{ssl:} listener, not to the
        others.
        """
        options = parse(
            "--tcp",
            self.pki.serverDescription(),
            "--tcp",
            "tcp:0",
            "--tls-client-ca",
            self.pki.ca,
        )
        first, second = options["tcp"]
        self.assertEqual(parseTLSDescription(first).clientCA, self.pki.ca)
        self.assertEqual(second, "tcp:0")

    def test_clientCAErrors(self) -> None:
        """
        C{--tls-client-ca} needs a readable file of certificates and an
        C{ssl:} listener.
        """
        self.assertUsageError(
            ["--tcp", self.pki.serverDescription(), "--tls-client-ca", "/nonexistent"],
            "--tls-client-ca",
            "/nonexistent",
        )
        self.assertUsageError(
            ["--tcp", self.pki.serverDescription(), "--tls-client-ca", self.pki.key],
            "--tls-client-ca",
            "no PEM certificate",
        )
        self.assertUsageError(
            ["--tcp", "tcp:0", "--tls-client-ca", self.pki.ca],
            "--tls-client-ca needs an ssl: listener",
        )

    def test_processExit(self) -> None:
        """
        The real C{twistd netdemo} says it in one line and exits with status
        1, without a traceback.
        """
        result = runTwistd("--tcp", "ssl:0:privateKey=/nonexistent/key.pem")
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        self.assertNotIn("Traceback", result.stdout + result.stderr)
        lines = [line for line in result.stderr.splitlines() if "--tcp" in line]
        self.assertEqual(len(lines), 1, result.stderr)
        self.assertIn("/nonexistent/key.pem", lines[0])


class ReloadTests(SynchronousTestCase):
    """
    L{ReloadingServerTLS.reload} reads the files again, keeping the old
    certificates when the new ones are broken.
    """

    def setUp(self) -> None:
        self.pki = tempPKI(self)
        self.listener = parseTLSDescription(self.pki.serverDescription())

    def subject(self, tls: ReloadingServerTLS) -> str:
        connection = tls.serverConnectionForTLS(None)
        certificate = connection.get_certificate()
        assert certificate is not None
        subject: str = certificate.to_cryptography().subject.rfc4514_string()
        return subject

    def replaceServerCertificate(self, common: str) -> None:
        """
        Write a new server certificate and key, from the same CA, over the
        old files.
        """
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        with open(self.pki.ca, "rb") as f:
            ca = x509.load_pem_x509_certificate(f.read())
        # The CA's key is not kept: a new CA of the same name signs.
        caCert, caKey = makeCertificate(ca.subject.rfc4514_string()[3:])
        cert, key = makeCertificate(common, (caCert, caKey), server=True)
        with open(self.pki.key, "wb") as f:
            f.write(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
        with open(self.pki.cert, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        with open(self.pki.key, "rb") as f:
            load_pem_private_key(f.read(), None)

    def test_reload(self) -> None:
        """
        New connections get the new certificate; one event says so.
        """
        events = captureEvents(self)
        tls = ReloadingServerTLS(self.listener, "tcp-echo ssl:0")
        self.assertEqual(self.subject(tls), "CN=server")
        self.replaceServerCertificate("renewed")
        self.assertTrue(tls.reload())
        self.assertEqual(self.subject(tls), "CN=renewed")
        self.assertEqual([e["event"] for e in events], ["tls_reloaded"])

    def test_brokenFileKeepsOld(self) -> None:
        """
        A broken file is logged as an error and the old certificate stays.
        """
        from twisted.logger import LogLevel

        events = captureEvents(self)
        tls = ReloadingServerTLS(self.listener, "tcp-echo ssl:0")
        with open(self.pki.cert, "w") as f:
            f.write("not a certificate\n")
        self.assertFalse(tls.reload())
        self.assertEqual(self.subject(tls), "CN=server")
        [event] = events
        self.assertEqual(event["event"], "tls_reload_failed")
        self.assertEqual(event["log_level"], LogLevel.error)
        self.assertIn(self.pki.cert, event["reason"])

    def test_loadMissing(self) -> None:
        """
        L{loadCertificates} names a file it cannot read.
        """
        error = self.assertRaises(
            TLSFileError,
            loadCertificates,
            TLSListener(0, privateKey="/nonexistent/k.pem"),
        )
        self.assertIn("/nonexistent/k.pem", str(error))


class ReportTests(SynchronousTestCase):
    """
    A TLS listener says so in its C{listening} event.
    """

    def test_tlsKey(self) -> None:
        """
        C{tls=True} adds a C{tls} key to the event; other listeners have
        none.
        """
        from netdemo.listening import ListenerReport

        events = captureEvents(self)
        report = ListenerReport("pubsub", MemoryMetrics())
        report.bound("tls:127.0.0.1:1", "ssl:1", "TLS", tls=True)
        report.bound("127.0.0.1:2", "tcp:2")
        self.assertEqual([e.get("tls") for e in events], [True, None])
        self.assertEqual(events[0]["detail"], "TLS")


class FakeReactor:
    """
    Runs what C{callFromThread} is given at once.
    """

    def callFromThread(self, f: Any, *args: Any) -> None:
        f(*args)


class ChainSignalTests(SynchronousTestCase):
    """
    L{chainSignal} lets several users share a signal.
    """

    def setUp(self) -> None:
        original = signal.getsignal(signal.SIGHUP)
        self.addCleanup(signal.signal, signal.SIGHUP, original)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)

    def test_chain(self) -> None:
        """
        Each user is called, whatever was installed before; the default
        action (ending the process) is not.
        """
        calls: list[str] = []
        chainSignal(signal.SIGHUP, lambda: calls.append("a"), FakeReactor())
        chainSignal(signal.SIGHUP, lambda: calls.append("b"), FakeReactor())
        signal.raise_signal(signal.SIGHUP)
        self.assertEqual(sorted(calls), ["a", "b"])

    def test_uninstall(self) -> None:
        """
        A user uninstalled in the middle of the chain is no longer called
        and the others still are; the last uninstalled gives the signal back
        to the one before.
        """
        calls: list[str] = []
        first = chainSignal(signal.SIGHUP, lambda: calls.append("a"), FakeReactor())
        last = chainSignal(signal.SIGHUP, lambda: calls.append("b"), FakeReactor())
        first()
        signal.raise_signal(signal.SIGHUP)
        self.assertEqual(calls, ["b"])
        last()
        signal.raise_signal(signal.SIGHUP)
        self.assertEqual(calls, ["b"])

    def test_uninstallOnly(self) -> None:
        """
        A single user uninstalled gives the signal back to what it was.
        """
        chainSignal(signal.SIGHUP, lambda: None, FakeReactor())()
        self.assertEqual(signal.getsignal(signal.SIGHUP), signal.SIG_DFL)


class Collecting(Protocol):
    """
    A server protocol that remembers itself and echoes.
    """

    def connectionMade(self) -> None:
        self.factory.made.append(self)

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]


class Client(Protocol):
    """
    A client that collects what it receives.
    """

    def __init__(self) -> None:
        self.received = b""
        self.lost: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(None)


class InProcessTests(TestCase):
    """
    A TLS listener of a L{ListeningService} in this process's reactor.
    """

    def setUp(self) -> None:
        self.pki = tempPKI(self)

    async def listen(self, description: str) -> tuple[Any, int]:
        factory = Factory.forProtocol(Collecting)
        factory.made = []  # type: ignore[attr-defined]
        service = ListeningService(
            "test", factory, [description], MemoryMetrics(), reactor
        )
        service.startService()
        self.addCleanup(service.stopService)
        self.assertTrue(await service.whenListening())
        [address] = service.addresses
        self.assertTrue(address.startswith("tls:127.0.0.1:"), address)
        port: int = service.ports[0].getHost().port  # type: ignore[attr-defined]
        return factory, port

    async def connect(self, port: int, cert: str | None, key: str | None) -> Client:
        from twisted.internet.endpoints import (
            HostnameEndpoint,
            connectProtocol,
            wrapClientTLS,
        )
        from twisted.internet.ssl import (
            Certificate,
            PrivateCertificate,
            optionsForClientTLS,
        )

        with open(self.pki.ca, "rb") as f:
            trust = Certificate.loadPEM(f.read())
        client = None
        if cert is not None and key is not None:
            with open(cert, "rb") as f, open(key, "rb") as g:
                client = PrivateCertificate.loadPEM(f.read() + g.read())
        endpoint = wrapClientTLS(
            optionsForClientTLS("127.0.0.1", trust, client),
            HostnameEndpoint(reactor, "127.0.0.1", port),
        )
        protocol = Client()
        await connectProtocol(endpoint, protocol)
        self.addCleanup(lambda: protocol.lost)
        self.addCleanup(protocol.transport.loseConnection)  # type: ignore[union-attr]
        return protocol

    async def test_peerSubject(self) -> None:
        """
        With C{clientCA}, the server side sees the client certificate's
        subject.
        """
        factory, port = await self.listen(
            withClientCA(self.pki.serverDescription(), self.pki.ca)
        )
        client = await self.connect(port, self.pki.clientCert, self.pki.clientKey)
        client.transport.write(b"hello")  # type: ignore[union-attr]
        await waitUntil(lambda: client.received == b"hello", "the echo")
        [server] = factory.made
        self.assertEqual(peerSubject(server.transport), "CN=alice")

    async def test_noClientCertificate(self) -> None:
        """
        Without C{clientCA}, there is no peer subject; without TLS either.
        """
        factory, port = await self.listen(self.pki.serverDescription())
        client = await self.connect(port, None, None)
        client.transport.write(b"hi")  # type: ignore[union-attr]
        await waitUntil(lambda: client.received == b"hi", "the echo")
        [server] = factory.made
        self.assertIsNone(peerSubject(server.transport))
        self.assertIsNone(peerSubject(object()))


def converse(argv: list[str], send: bytes, until: bytes) -> bytes:
    """
    What a client program prints (output and errors) after it is sent
    C{send}, with its input left open: until C{until} appears, or it ends,
    or PATIENCE passes.
    """
    process = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(send)
    process.stdin.flush()
    output = b""
    deadline = time.monotonic() + PATIENCE
    while until not in output and time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 1.0)
        if ready:
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:
                break
            output += chunk
    process.kill()
    process.communicate(timeout=PATIENCE)
    return output


class DaemonTests(SynchronousTestCase):
    """
    A real daemon's TLS listeners, reached by real TLS clients.
    """

    def setUp(self) -> None:
        self.pki = tempPKI(self)

    def daemon(
        self,
        *args: str,
        services: tuple[str, ...],
        twistdArgs: tuple[str, ...] | list[str] = (),
    ) -> Daemon:
        arguments = []
        for service in services:
            arguments += [f"--{service}", self.pki.serverDescription()]
        daemon = Daemon(*arguments, *args, twistdArgs=twistdArgs)
        self.addCleanup(daemon.close)
        daemon.waitListening(len(services))
        return daemon

    def sClient(self, port: int, send: bytes, until: bytes, *extra: str) -> bytes:
        """
        What C{openssl s_client} prints, connected to the daemon (trusting
        the test CA and checking its address), after sending C{send}: until
        C{until} appears, or the server closes.
        """
        openssl = requireTool("openssl", "openssl")
        return converse(
            [
                openssl,
                "s_client",
                "-connect",
                f"127.0.0.1:{port}",
                "-CAfile",
                self.pki.ca,
                "-verify_return_error",
                "-verify_ip",
                "127.0.0.1",
                "-ign_eof",
                *extra,
            ],
            send,
            until,
        )

    def subjectSeen(self, port: int) -> bytes:
        """
        What C{openssl s_client} prints of the handshake, with the server
        certificate's subject.
        """
        return self.sClient(port, b"", b"Verify return code")

    def test_echoHubAndStatusPage(self) -> None:
        """
        C{openssl s_client} and C{ncat --ssl} reach a TLS echo, hub and
        broadcast relay; C{curl --cacert} gets the TLS status page, which
        lists the listeners as C{tls:ADDRESS}; the C{listening} events say
        TLS.
        """
        daemon = self.daemon(services=("tcp", "pubsub", "broadcast", "http"))
        for service, address in daemon.listening:
            self.assertTrue(address.startswith("tls:127.0.0.1:"), (service, address))
        echo = self.sClient(
            daemon.port("tcp-echo"), b"hello over tls\n", b"hello over tls"
        )
        self.assertIn(b"Verify return code: 0 (ok)", echo)
        self.assertIn(b"hello over tls", echo)
        relay = self.subjectSeen(daemon.port("broadcast"))
        self.assertIn(b"Verify return code: 0 (ok)", relay)
        ncat = requireTool("ncat", "ncat")
        hub = converse(
            [
                ncat,
                "--ssl",
                "--ssl-verify",
                "--ssl-trustfile",
                self.pki.ca,
                "localhost",
                str(daemon.port("pubsub")),
            ],
            b"/ping\n/quit\n",
            b"+OK bye",
        )
        self.assertIn(b"* welcome to", hub)
        self.assertIn(b"+OK pong", hub)
        curl = requireTool("curl", "curl")
        page = subprocess.run(
            [
                curl,
                "-sS",
                "--cacert",
                self.pki.ca,
                f"https://127.0.0.1:{daemon.port('http')}/metrics",
            ],
            capture_output=True,
            timeout=PATIENCE,
            text=True,
        )
        self.assertEqual(page.returncode, 0, page.stderr)
        address = daemon.addresses("pubsub")[0]
        self.assertTrue(address.startswith("tls:127.0.0.1:"), address)
        self.assertIn(
            f'netdemo_listener_info{{address="{address}",service="pubsub"}} 1.0',
            page.stdout,
        )
        self.assertRegex(
            daemon.log(), r"pubsub: listening on tls:\S+ \(ssl:.*\), TLS\n"
        )

    def test_clientCertificates(self) -> None:
        """
        With C{--tls-client-ca}, a client without a certificate or with one
        from another CA is refused; one with a certificate from the CA is
        served.
        """
        daemon = self.daemon("--tls-client-ca", self.pki.ca, services=("pubsub",))
        port = daemon.port("pubsub")
        good = self.sClient(
            port,
            b"/ping\n/quit\n",
            b"+OK bye",
            "-cert",
            self.pki.clientCert,
            "-key",
            self.pki.clientKey,
        )
        self.assertIn(b"+OK pong", good)
        for extra in [
            (),
            ("-cert", self.pki.foreignCert, "-key", self.pki.foreignKey),
        ]:
            refused = self.sClient(port, b"/ping\n/quit\n", b"+OK bye", *extra)
            self.assertNotIn(b"welcome", refused, extra)
            self.assertNotIn(b"+OK", refused, extra)
            self.assertRegex(refused, rb"alert (certificate required|unknown ca)")
        self.assertIn("client certificates required", daemon.log())

    def test_certificateMappedToUser(self) -> None:
        """
        With C{--hub-auth} and C{--tls-client-ca}, a client whose verified
        certificate's subject a user names is logged in as that user at the
        handshake, with that user's rights; after the file is edited and
        C{SIGHUP}, a subject no user names stays anonymous.
        """
        accounts = os.path.join(self.pki.directory, "accounts.toml")
        with open(accounts, "w") as f:
            f.write(
                '[users.alice]\ncertificate = "CN=alice"\n'
                'publish = { allow = ["lab.>"] }\n'
                'subscribe = { allow = ["lab.>"] }\n'
            )
        daemon = self.daemon(
            "--tls-client-ca",
            self.pki.ca,
            "--hub-auth",
            accounts,
            twistdArgs=["--logger=netdemo.logs.jsonObserver"],
            services=("pubsub",),
        )
        port = daemon.port("pubsub")
        alice = ("-cert", self.pki.clientCert, "-key", self.pki.clientKey)
        seen = self.sClient(
            port, b"/pub lab.x hi\n/pub other.x hi\n/quit\n", b"+OK bye", *alice
        )
        self.assertIn(b"+OK logged in as alice by certificate", seen)
        self.assertIn(
            b"by certificate\n+OK\n-ERR permission denied: publish other.x\n", seen
        )
        [event] = daemon.waitEvent("logged_in")
        self.assertEqual((event["user"], event["subject"]), ("alice", "CN=alice"))
        with open(accounts, "w") as f:
            f.write('[users.bob]\ncertificate = "CN=bob"\n')
        daemon.process.send_signal(signal.SIGHUP)
        daemon.waitEvent("accounts_reloaded")
        seen = self.sClient(port, b"/pub lab.x hi\n/quit\n", b"+OK bye", *alice)
        self.assertNotIn(b"logged in", seen)
        self.assertIn(b"-ERR permission denied", seen)
        [unmapped] = daemon.waitEvent("certificate_unmapped")
        self.assertEqual(unmapped["subject"], "CN=alice")

    def test_reloadOnSIGHUP(self) -> None:
        """
        After the files are replaced and C{SIGHUP}, a new connection gets
        the new certificate; a broken file on a later C{SIGHUP} is logged
        and the certificate stays; the daemon keeps running.
        """
        daemon = self.daemon(services=("tcp", "http"))
        port = daemon.port("tcp-echo")
        self.assertIn(b"subject=CN = server", self.subjectSeen(port))
        renewed = makePKI(os.path.join(self.pki.directory, "renewed"), "renewed")
        shutil.copyfile(renewed.cert, self.pki.cert)
        shutil.copyfile(renewed.key, self.pki.key)
        shutil.copyfile(renewed.ca, self.pki.ca)
        daemon.process.send_signal(signal.SIGHUP)
        daemon.waitFor(r"tcp-echo ssl:.*: TLS certificates reloaded")
        daemon.waitFor(r"http ssl:.*: TLS certificates reloaded")
        self.assertIn(b"subject=CN = renewed", self.subjectSeen(port))
        with open(self.pki.cert, "w") as f:
            f.write("broken\n")
        daemon.process.send_signal(signal.SIGHUP)
        daemon.waitFor(r"TLS certificates not reloaded, keeping the old ones")
        self.assertIn(b"subject=CN = renewed", self.subjectSeen(port))
        self.assertIsNone(daemon.process.poll())
