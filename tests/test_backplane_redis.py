"""
The backplane with a real C{redis-server} and real C{twistd} hubs.

Each test starts its own C{redis-server} (L{ExternalServer}: on a loopback
port it bound itself, no persistence) and its hubs (L{Daemon}:
C{twistd -n netdemo --pubsub tcp:0:... --backplane
redis://127.0.0.1:PORT?prefix=...}), learning their ports from their logs,
and stops everything it started.  Clients are blocking sockets.
"""

from __future__ import annotations

import datetime
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import urllib.request
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.pubsubhelpers import LineSocket
from tests.support import PATIENCE, Daemon, ExternalServer, poll, requireTool

UP = "backplane: connected to"
DOWN = "unreachable"

#: What relayed lines start with.
RELAYED = (b"<", b"[")


#: Lines of the hub's log that say it refused a message from Redis.
TOO_LARGE = "refused a message from Redis"


class BackplaneHub(Daemon):
    """
    A C{twistd netdemo} hub on loopback joined to a backplane, listening.
    """

    def __init__(self, url: str, *extra: str) -> None:
        super().__init__(
            "--pubsub",
            "tcp:0:interface=127.0.0.1",
            "--no-presence",
            "--backplane",
            url,
            *extra,
        )
        self.waitListening(2 if "--http" in extra else 1)

    def metric(self, series: str) -> float:
        """
        The value of one series of C{/metrics} (C{--http} needed).
        """
        host, port = self.address("http")
        with urllib.request.urlopen(
            f"http://{host}:{port}/metrics", timeout=PATIENCE
        ) as response:
            text = response.read().decode()
        match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
        assert match is not None, f"{series} not in /metrics"
        return float(match.group(1))

    def memory(self, field: str) -> int:
        """
        A size of the process from C{/proc/PID/status} (C{VmRSS},
        C{VmHWM}: its peak), in bytes.
        """
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(rf"^{field}:\s+(\d+) kB$", status, re.MULTILINE)
        assert match is not None, status
        return int(match.group(1)) * 1024

    def count(self, text: str) -> int:
        """
        How many times C{text} is in the log.
        """
        return self.log().count(text)

    def waitCount(self, text: str, times: int = 1) -> None:
        """
        Wait until C{text} is in the log C{times} times.
        """
        poll(lambda: self.count(text) >= times, f"{text!r} logged {times} times")


class RedisCase(SynchronousTestCase):
    """
    Tests of hubs joined through a real Redis: its server, its hubs, their
    clients, C{redis-cli}.
    """

    def setUp(self) -> None:
        self.server = requireTool("redis-server", "redis-server")
        self.cli = requireTool("redis-cli", "redis-server")
        self.directory = Path(tempfile.mkdtemp(prefix="netdemo-test-"))
        self.addCleanup(shutil.rmtree, self.directory, True)

    def redis(self, *options: str, tls: bool = False) -> ExternalServer:
        """
        A C{redis-server} on 127.0.0.1 without persistence, started (over
        TLS only, when C{tls}), stopped after the test.
        """

        def command(port: int) -> list[str]:
            ports = ["--port", "0", "--tls-port"] if tls else ["--port"]
            return [
                self.server,
                *ports,
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                *options,
            ]

        server = ExternalServer(
            command,
            ready="Ready to accept connections",
            inUse="Address already in use",
            name="redis-server",
        )
        self.addCleanup(server.close)
        server.start()
        return server

    def hubs(
        self, redis: ExternalServer, count: int, *extra: str
    ) -> list[BackplaneHub]:
        """
        C{count} hubs joined through C{redis}, with a prefix of their own,
        stopped after the test.
        """
        self.prefix = f"t{os.getpid()}x{redis.port}"
        url = f"redis://127.0.0.1:{redis.port}?prefix={self.prefix}"
        started = []
        for _ in range(count):
            hub = BackplaneHub(url, *extra)
            self.addCleanup(hub.close)
            started.append(hub)
        return started

    def client(self, hub: Daemon) -> LineSocket:
        """
        A client of C{hub}, closed after the test.
        """
        client = LineSocket(hub.port("pubsub"))
        self.addCleanup(client.close)
        return client

    def redisCli(self, port: int, *args: str) -> bytes:
        """
        Run C{redis-cli} against the Redis on C{port}.
        """
        return subprocess.run(
            [self.cli, "-h", "127.0.0.1", "-p", str(port), *args],
            capture_output=True,
            timeout=PATIENCE,
            check=True,
        ).stdout


class RedisTests(RedisCase):
    """
    Hubs joined through a real Redis.
    """

    def test_twoHubsExactlyOnceInOrder(self) -> None:
        """
        With two hubs, 300 lines from a client of hub A reach a client of A
        and two clients of B exactly once each, in order.
        """
        a, b = self.hubs(self.redis(), 2)
        for hub in (a, b):
            hub.waitCount(UP)
        sender, peer = self.client(a), self.client(a)
        remote = [self.client(b), self.client(b)]
        data = b"".join(b"line %d\n" % i for i in range(300))
        for i in range(0, len(data), 1000):
            sender.send(data[i : i + 1000])
        expected = [b"<%s> line %d" % (sender.identity, i) for i in range(300)]
        for client in [peer, *remote]:
            self.assertEqual(client.collect(RELAYED, 300, settle=0.5), expected)
        self.assertEqual(sender.collect(RELAYED, 0, settle=0.5), [])

    def test_threeHubsAndRedisCli(self) -> None:
        """
        With three hubs, a line from a client of A reaches the clients of B
        and C exactly once; C{redis-cli PUBLISH} on C{PREFIX.chat} reaches
        the clients of every hub, and on C{PREFIX.news.eu} only the
        subscribers of C{news.>}.
        """
        redis = self.redis()
        a, b, c = self.hubs(redis, 3)
        for hub in (a, b, c):
            hub.waitCount(UP)
        sender = self.client(a)
        clients = [self.client(a), self.client(b), self.client(c)]
        news = self.client(c)
        news.send(b"/sub news.>\n")
        news.waitFor(b"+OK subscribed to news.>")
        sender.send(b"from a\n")
        for client in clients:
            self.assertEqual(
                client.collect(RELAYED, 1), [b"<%s> from a" % sender.identity]
            )
        published = self.redisCli(
            redis.port, "PUBLISH", f"{self.prefix}.chat", "<ops> hello from redis-cli"
        )
        self.assertEqual(published, b"3\n")
        self.redisCli(redis.port, "PUBLISH", f"{self.prefix}.news.eu", "rain")
        ops = b"<ops> hello from redis-cli"
        self.assertEqual(sender.collect(RELAYED, 1), [ops])
        self.assertEqual(
            news.collect(RELAYED, 3, settle=0.5),
            [b"<%s> from a" % sender.identity, ops, b"[news.eu] <redis> rain"],
        )
        for client in clients:
            self.assertEqual(client.collect(RELAYED, 2, settle=0.5)[1:], [ops])

    def test_redisOutages(self) -> None:
        """
        Redis down when the hubs start, then killed and restarted while a
        client of A publishes a line every 20 ms: the other client of A gets
        every line in order throughout; B's client gets lines once Redis is
        up, loses (only) lines of the outage, never a duplicate, and gets
        lines again after the restart.  Each outage is logged once.
        """
        redis = self.redis()
        redis.stop()
        a, b = self.hubs(redis, 2)
        for hub in (a, b):
            hub.waitCount(DOWN)
        sender, peer, remote = self.client(a), self.client(a), self.client(b)
        sender.send(b"before redis\n")
        self.assertEqual(
            peer.collect(RELAYED, 1), [b"<%s> before redis" % sender.identity]
        )

        sent = 0
        stop = threading.Event()

        def stream() -> None:
            nonlocal sent
            while not stop.is_set() and sent < 5000:
                sender.send(b"s %d\n" % sent)
                sent += 1
                stop.wait(0.02)

        streamer = threading.Thread(target=stream)
        streamer.start()
        try:
            redis.start(redis.port)
            for hub in (a, b):
                hub.waitCount(UP)
            self.assertTrue(remote.collect(RELAYED, 1), "nothing crossed")
            redis.stop()
            for hub in (a, b):
                hub.waitCount(DOWN, 2)
            killedAt = sent
            poll(lambda: sent >= killedAt + 50, "lines sent during the outage")
            redis.start(redis.port)
            for hub in (a, b):
                hub.waitCount(UP, 2)
            restartedAt = sent

            def crossedSinceRestart() -> bool:
                numbers = [int(line.split()[-1]) for line in remote.receive()[1:]]
                return bool(numbers) and numbers[-1] >= restartedAt

            poll(crossedSinceRestart, "lines published after the restart to cross")
        finally:
            stop.set()
            streamer.join(PATIENCE)
        total = sent
        local = peer.collect(RELAYED, total + 1)
        self.assertEqual(
            local,
            [b"<%s> before redis" % sender.identity]
            + [b"<%s> s %d" % (sender.identity, i) for i in range(total)],
        )
        crossed = [
            int(line.rsplit(b" ", 1)[1])
            for line in remote.collect(RELAYED, 0, settle=0.5)
        ]
        self.assertEqual(crossed, sorted(set(crossed)), "duplicates or disorder")
        self.assertLess(crossed[0], killedAt)
        self.assertGreaterEqual(crossed[-1], restartedAt)
        for hub in (a, b):
            self.assertEqual(hub.count(DOWN), 2, hub.log())
            self.assertEqual(hub.count(UP), 2, hub.log())

    def publishRaw(self, port: int, channel: str, payload: bytes) -> int:
        """
        C{PUBLISH} a payload of any size to the Redis on C{port}, over a
        socket of the test's own (a command line could not hold it).

        @return: How many subscribers Redis says received it.
        """
        with socket.create_connection(("127.0.0.1", port), PATIENCE) as sock:
            name = channel.encode()
            sock.sendall(
                b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n"
                % (len(name), name, len(payload))
            )
            sock.sendall(payload)
            sock.sendall(b"\r\n")
            answer = b""
            while not answer.endswith(b"\r\n"):
                data = sock.recv(100)
                self.assertTrue(data, "Redis closed the connection")
                answer += data
        self.assertTrue(answer.startswith(b":"), answer)
        return int(answer[1:])

    def test_hugeMessageRefused(self) -> None:
        """
        A 10 MiB C{PUBLISH} (100-byte lines) to a hub with 50 subscribers
        that do not read raises the hub's peak RSS by less than 64 MB (the
        hub used to copy it to each subscriber: +561 MB): the message is
        refused whole, counted and logged once.  A message within
        C{--backplane-max-message} that would hand each subscriber more than
        C{--max-pending} (1-byte lines from a 64-character name) is refused
        too.  The next message reaches every subscriber.
        """
        redis = self.redis()
        [hub] = self.hubs(redis, 1, "--http", "tcp:0:interface=127.0.0.1")
        hub.waitCount(UP)
        subscribers = [self.client(hub) for _ in range(50)]
        before = hub.memory("VmRSS")
        channel = f"{self.prefix}.chat"
        huge = (b"x" * 99 + b"\n") * ((10 << 20) // 100)
        self.assertEqual(self.publishRaw(redis.port, channel, huge), 1)
        del huge
        hub.waitCount(TOO_LARGE)
        wide = b"<" + b"n" * 64 + b"> " + b"x\n" * 32000
        self.assertEqual(self.publishRaw(redis.port, channel, wide), 1)
        series = (
            'netdemo_backplane_dropped_total{reason="too-large",service="backplane"}'
        )
        poll(lambda: hub.metric(series) == 2, "two messages refused")
        self.assertEqual(self.publishRaw(redis.port, channel, b"<ops> after"), 1)
        for subscriber in subscribers:
            self.assertEqual(subscriber.collect(RELAYED, 1), [b"<ops> after"])
        grown = hub.memory("VmHWM") - before
        self.assertLess(grown, 64 << 20, f"peak RSS grew by {grown >> 20} MiB")
        self.assertEqual(hub.count(TOO_LARGE), 1, hub.log())
        self.assertIn(
            "(10485700 bytes long, more than --backplane-max-message", hub.log()
        )
        self.assertEqual(hub.count(DOWN), 0, hub.log())

    def test_frozenRedis(self) -> None:
        """
        Redis frozen (C{SIGSTOP}): each hub reports it down once, a ping
        timeout after an unanswered C{PING} (C{backplane_down},
        C{netdemo_backplane_up} 0), delivers locally, and drops lines for
        the backplane as C{down} with nothing queued; Redis resumed
        (C{SIGCONT}), each reports it up and lines cross again.
        """
        redis = self.redis()
        a, b = self.hubs(
            redis,
            2,
            "--backplane-ping",
            "0.5",
            "--backplane-ping-timeout",
            "1",
            "--http",
            "tcp:0:interface=127.0.0.1",
        )
        for hub in (a, b):
            hub.waitCount(UP)
        sender, peer, remote = self.client(a), self.client(a), self.client(b)
        sender.send(b"before\n")
        self.assertEqual(remote.collect(RELAYED, 1), [b"<%s> before" % sender.identity])
        assert redis.process is not None
        pid = redis.process.pid
        os.kill(pid, signal.SIGSTOP)
        self.addCleanup(os.kill, pid, signal.SIGCONT)
        for hub in (a, b):
            hub.waitCount("no answer to PING within 1 s")
            self.assertEqual(hub.metric('netdemo_backplane_up{service="backplane"}'), 0)
        sender.send(b"during\n")
        self.assertEqual(
            peer.collect(RELAYED, 2)[1:], [b"<%s> during" % sender.identity]
        )
        down = 'netdemo_backplane_dropped_total{reason="down",service="backplane"}'
        poll(lambda: a.metric(down) >= 1, "the line dropped for the backplane")
        self.assertEqual(
            a.metric('netdemo_backplane_queued_bytes{service="backplane"}'), 0
        )
        os.kill(pid, signal.SIGCONT)
        for hub in (a, b):
            hub.waitCount(UP, 2)
            self.assertEqual(hub.metric('netdemo_backplane_up{service="backplane"}'), 1)
        sender.send(b"after\n")
        self.assertEqual(
            remote.collect(RELAYED, 2, settle=0.5)[1:],
            [b"<%s> after" % sender.identity],
        )
        for hub in (a, b):
            self.assertEqual(hub.count(DOWN), 1, hub.log())

    def test_aclUserAndPasswordFile(self) -> None:
        """
        With a Redis that only lets an ACL user publish and subscribe under
        the prefix, a hub with that user and its password in
        C{--backplane-password-file} joins (C{redis-cli PUBLISH} as that
        user reaches its client); a hub with a wrong password logs the
        refusal once and still serves its own clients.
        """
        redis = self.redis(
            "--user",
            "hub",
            "on",
            ">s3cret",
            "resetchannels",
            "&acl.*",
            "-@all",
            "+publish",
            "+psubscribe",
            "+ping",
            "--user",
            "default",
            "off",
        )
        secret = self.directory / "password"
        secret.write_text("s3cret\n")
        url = f"redis://hub@127.0.0.1:{redis.port}?prefix=acl"
        good = BackplaneHub(url, "--backplane-password-file", str(secret))
        self.addCleanup(good.close)
        bad = BackplaneHub(f"redis://hub:wrong@127.0.0.1:{redis.port}?prefix=acl")
        self.addCleanup(bad.close)
        good.waitCount(UP)
        bad.waitCount("refused us")
        client = self.client(good)
        sender, peer = self.client(bad), self.client(bad)
        received = self.redisCli(
            redis.port,
            "--user",
            "hub",
            "--pass",
            "s3cret",
            "--no-auth-warning",
            "PUBLISH",
            "acl.chat",
            "<ops> members only",
        )
        self.assertEqual(received, b"1\n")
        self.assertEqual(client.collect(RELAYED, 1), [b"<ops> members only"])
        sender.send(b"local only\n")
        self.assertEqual(
            peer.collect(RELAYED, 1), [b"<%s> local only" % sender.identity]
        )
        self.assertEqual(
            client.collect(RELAYED, 1, settle=0.5), [b"<ops> members only"]
        )
        self.assertEqual(bad.count("refused us"), 1, bad.log())
        # This user may not run scripts: no shared history, said once.
        self.assertEqual(good.count("refused the shared history's scripts"), 1)
        self.assertNotIn("s3cret", good.log() + bad.log())
        self.assertNotIn("wrong", bad.log())

    def test_tls(self) -> None:
        """
        Over C{rediss://}, a hub that trusts the server's CA (C{ca=FILE})
        joins: C{redis-cli --tls PUBLISH} reaches its client; a hub that
        only trusts the system's CAs refuses the certificate and logs it
        once.
        """
        ca, cert, key = writeCertificates(self.directory)
        redis = self.redis(
            "--tls-cert-file",
            str(cert),
            "--tls-key-file",
            str(key),
            "--tls-ca-cert-file",
            str(ca),
            "--tls-auth-clients",
            "no",
            tls=True,
        )
        url = f"rediss://localhost:{redis.port}?prefix=tls"
        trusting = BackplaneHub(f"{url}&ca={ca}")
        self.addCleanup(trusting.close)
        doubting = BackplaneHub(url)
        self.addCleanup(doubting.close)
        trusting.waitCount(UP)
        doubting.waitCount(DOWN)
        self.assertIn("certificate verify failed", doubting.log())
        client = self.client(trusting)
        tlsCli = ["--tls", "--cacert", str(ca), "--sni", "localhost"]
        received = self.redisCli(
            redis.port, *tlsCli, "PUBLISH", "tls.chat", "<ops> encrypted"
        )
        self.assertEqual(received, b"1\n")
        self.assertEqual(client.collect(RELAYED, 1), [b"<ops> encrypted"])
        self.assertEqual(doubting.count(DOWN), 1)
        self.assertEqual(doubting.count(UP), 0)


def writeCertificates(directory: Path) -> tuple[Path, Path, Path]:
    """
    Write a CA certificate and a server key and certificate (for
    C{localhost}, signed by that CA) as PEM files.

    @return: The CA, the server certificate and the server key paths.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def certificate(
        subject: str, key: Any, issuer: str, signer: Any, ca: bool
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName("localhost")]), False
            )
        return builder.sign(signer, hashes.SHA256())

    caKey = ec.generate_private_key(ec.SECP256R1())
    serverKey = ec.generate_private_key(ec.SECP256R1())
    caCert = certificate("netdemo test CA", caKey, "netdemo test CA", caKey, True)
    serverCert = certificate("localhost", serverKey, "netdemo test CA", caKey, False)
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(caCert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(serverCert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        serverKey.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths
