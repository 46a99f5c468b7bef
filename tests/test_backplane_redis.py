"""
The backplane with a real C{redis-server} and real C{twistd} hubs.

Each test starts its own C{redis-server} on a free loopback port (no
persistence) and its hubs as C{twistd -n netdemo --pubsub tcp:0:...
--backplane redis://127.0.0.1:PORT?prefix=...}; it learns their ports from
their logs, and stops everything it started.  Clients are blocking sockets.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")

pytestmark = pytest.mark.skipif(
    REDIS_SERVER is None or REDIS_CLI is None,
    reason="redis-server and redis-cli (Debian package redis-server) are not "
    "installed; .ci/run installs them",
)

#: The longest any single wait may take.
PATIENCE = 30.0

UP = "backplane: connected to"
DOWN = "unreachable"


def freePort() -> int:
    """
    A loopback TCP port that was free a moment ago.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def waitFor(
    condition: Callable[[], bool], what: str, timeout: float = PATIENCE
) -> None:
    """
    Poll C{condition} until it holds, failing after C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class RedisServer:
    """
    A C{redis-server} on 127.0.0.1, without persistence.
    """

    def __init__(self) -> None:
        self.port = freePort()
        self.process: subprocess.Popen[bytes] | None = None
        self.options: list[str] = []

    def start(self) -> None:
        """
        Start it and wait until it answers C{PING} (in plain TCP).
        """
        assert REDIS_SERVER is not None
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                *self.options,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        waitFor(self.answers, "redis-server to answer PING")

    def answers(self) -> bool:
        """
        Whether it answers C{PING} now.
        """
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                s.sendall(b"PING\r\n")
                return s.recv(7) in (b"+PONG\r\n", b"-NOAUTH")
        except OSError:
            return False

    def kill(self) -> None:
        """
        Kill it (C{SIGKILL}: no goodbye to its clients).
        """
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(PATIENCE)
        self.process = None

    def cli(self, *args: str) -> str:
        """
        Run C{redis-cli} against it.
        """
        assert REDIS_CLI is not None
        done = subprocess.run(
            [REDIS_CLI, "-h", "127.0.0.1", "-p", str(self.port), *args],
            capture_output=True,
            timeout=PATIENCE,
            check=True,
        )
        return done.stdout.decode()


class Hub:
    """
    A C{twistd netdemo} hub joined to a backplane.
    """

    def __init__(self, directory: Path, name: str, url: str, extra: Sequence[str] = ()):
        self.log = directory / f"{name}.log"
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        self.process = subprocess.Popen(
            [
                twistd,
                "-n",
                "--pidfile=",
                f"--logfile={self.log}",
                "netdemo",
                "--pubsub",
                "tcp:0:interface=127.0.0.1",
                "--no-presence",
                "--backplane",
                url,
                *extra,
            ],
            cwd=directory,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.port = 0

    def text(self) -> str:
        """
        The log so far.
        """
        return self.log.read_text() if self.log.exists() else ""

    def listening(self) -> bool:
        """
        Whether it listens (and remember where).
        """
        match = re.search(r"pubsub: listening on 127\.0\.0\.1:(\d+)", self.text())
        if match is not None:
            self.port = int(match.group(1))
        if self.process.poll() is not None:
            raise AssertionError(f"twistd exited:\n{self.text()}")
        return match is not None

    def count(self, text: str) -> int:
        """
        How many times C{text} is in the log.
        """
        return self.text().count(text)

    def stop(self) -> None:
        """
        Stop it.
        """
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(PATIENCE)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Client:
    """
    A hub client on a blocking socket; collects the relayed lines.
    """

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=PATIENCE)
        self.buffer = b""
        self.lines: list[bytes] = []
        self.lock = threading.Lock()
        greeting = self.readLine()
        assert greeting.startswith(b"* welcome"), greeting
        self.identity = greeting.split(b"you are ")[1].split(b" ")[0]

    def readLine(self) -> bytes:
        """
        Read one line (blocking).
        """
        while b"\n" not in self.buffer:
            data = self.sock.recv(65536)
            if not data:
                raise AssertionError("the hub closed the connection")
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line

    def send(self, data: bytes) -> None:
        """
        Send bytes to the hub.
        """
        self.sock.sendall(data)

    def collect(self, count: int, timeout: float = PATIENCE) -> list[bytes]:
        """
        Read until C{count} relayed lines (those starting with C{<} or C{[})
        arrived in all, then wait a little longer for any extra one.
        """
        deadline = time.monotonic() + timeout
        while len(self.lines) < count and time.monotonic() < deadline:
            self._readSome(deadline)
        settle = time.monotonic() + 0.5
        while time.monotonic() < settle:
            self._readSome(settle)
        return self.lines

    def _readSome(self, deadline: float) -> None:
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return
        if not data:
            raise AssertionError("the hub closed the connection")
        self.buffer += data
        *complete, self.buffer = self.buffer.split(b"\n")
        self.lines.extend(line for line in complete if line.startswith((b"<", b"[")))

    def close(self) -> None:
        """
        Close the connection.
        """
        self.sock.close()


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    """
    A C{redis-server} (not yet started), killed after the test.
    """
    server = RedisServer()
    yield server
    server.kill()


@pytest.fixture
def hubs(tmp_path: Path, redis: RedisServer) -> Iterator[Callable[[int], list[Hub]]]:
    """
    Start C{count} hubs on C{redis}, with a prefix of their own; they are
    stopped after the test.
    """
    started: list[Hub] = []
    prefix = f"t{os.getpid()}x{redis.port}"

    def start(count: int) -> list[Hub]:
        new = [
            Hub(
                tmp_path,
                f"hub{len(started) + i}",
                f"redis://127.0.0.1:{redis.port}?prefix={prefix}",
            )
            for i in range(count)
        ]
        started.extend(new)
        for hub in new:
            waitFor(hub.listening, "the hub to listen")
        return new

    start.prefix = prefix  # type: ignore[attr-defined]
    yield start
    for hub in started:
        hub.stop()


def up(hub: Hub, times: int = 1) -> Callable[[], bool]:
    """
    A condition: C{hub} logged that its backplane is up C{times} times.
    """
    return lambda: hub.count(UP) >= times


def test_twoHubsExactlyOnceInOrder(redis: RedisServer, hubs: Any) -> None:
    """
    With two hubs, 300 lines from a client of hub A reach a client of A and
    two clients of B exactly once each, in order.
    """
    redis.start()
    a, b = hubs(2)
    for hub in (a, b):
        waitFor(up(hub), "the backplane to come up")
    sender, peer = Client(a.port), Client(a.port)
    remote = [Client(b.port), Client(b.port)]
    data = b"".join(b"line %d\n" % i for i in range(300))
    for i in range(0, len(data), 1000):
        sender.send(data[i : i + 1000])
    expected = [b"<%s> line %d" % (sender.identity, i) for i in range(300)]
    for client in [peer, *remote]:
        assert client.collect(300) == expected
    assert sender.collect(0) == []


def test_threeHubsAndRedisCli(redis: RedisServer, hubs: Any) -> None:
    """
    With three hubs, a line from a client of A reaches the clients of B and
    C exactly once; C{redis-cli PUBLISH} on C{PREFIX.chat} reaches the
    clients of every hub, and on C{PREFIX.news.eu} only the subscribers of
    C{news.>}.
    """
    redis.start()
    a, b, c = hubs(3)
    for hub in (a, b, c):
        waitFor(up(hub), "the backplane to come up")
    sender = Client(a.port)
    clients = [Client(a.port), Client(b.port), Client(c.port)]
    news = Client(c.port)
    news.send(b"/sub news.>\n")
    assert news.readLine() == b"+OK subscribed to news.>"
    sender.send(b"from a\n")
    for client in clients:
        assert client.collect(1) == [b"<%s> from a" % sender.identity]
    prefix = hubs.prefix
    assert redis.cli("PUBLISH", f"{prefix}.chat", "<ops> hello from redis-cli") == (
        "3\n"
    )
    redis.cli("PUBLISH", f"{prefix}.news.eu", "rain")
    for client in [sender, *clients]:
        assert client.collect(len(client.lines) + 1)[-1:] == [
            b"<ops> hello from redis-cli"
        ]
    assert news.collect(3) == [
        b"<%s> from a" % sender.identity,
        b"<ops> hello from redis-cli",
        b"[news.eu] <redis> rain",
    ]
    for client in clients:
        assert len(client.lines) == 2


def test_redisOutages(redis: RedisServer, hubs: Any) -> None:
    """
    Redis down when the hubs start, then killed and restarted while a client
    of A publishes a line every 20 ms: the other client of A gets every line
    in order throughout; B's client gets lines once Redis is up, loses
    (only) lines of the outage, never a duplicate, and gets lines again
    after the restart.  Each outage is logged once.
    """
    a, b = hubs(2)
    for hub in (a, b):
        waitFor(lambda hub=hub: hub.count(DOWN) >= 1, "the outage to be logged")
    sender, peer, remote = Client(a.port), Client(a.port), Client(b.port)
    sender.send(b"before redis\n")
    assert peer.collect(1) == [b"<%s> before redis" % sender.identity]

    sent = 0
    stop = threading.Event()

    def stream() -> None:
        nonlocal sent
        while not stop.is_set() and sent < 5000:
            sender.send(b"s %d\n" % sent)
            sent += 1
            time.sleep(0.02)

    streamer = threading.Thread(target=stream)
    streamer.start()
    try:
        redis.start()
        for hub in (a, b):
            waitFor(up(hub), "the backplane to come up")
        firstCross = remote.collect(1, PATIENCE)
        assert firstCross, "nothing crossed once Redis was up"
        redis.kill()
        for hub in (a, b):
            waitFor(lambda hub=hub: hub.count(DOWN) >= 2, "the outage to be logged")
        killedAt = sent
        time.sleep(1.0)
        redis.start()
        for hub in (a, b):
            waitFor(up(hub, 2), "the backplane to come back")
        restartedAt = sent
        remote.collect(len(remote.lines) + 10)
    finally:
        stop.set()
        streamer.join(PATIENCE)
    total = sent
    local = peer.collect(total + 1)
    assert local == [b"<%s> before redis" % sender.identity] + [
        b"<%s> s %d" % (sender.identity, i) for i in range(total)
    ]
    crossed = [int(line.rsplit(b" ", 1)[1]) for line in remote.collect(0)]
    assert crossed == sorted(set(crossed)), "duplicates or disorder"
    assert crossed[0] < killedAt
    assert crossed[-1] >= restartedAt
    for hub in (a, b):
        assert hub.count(DOWN) == 2, hub.text()
        assert hub.count(UP) == 2, hub.text()


def test_aclUserAndPasswordFile(tmp_path: Path, redis: RedisServer) -> None:
    """
    With a Redis that only lets an ACL user publish and subscribe under the
    prefix, a hub with that user and its password in
    C{--backplane-password-file} joins (C{redis-cli PUBLISH} as that user
    reaches its client); a hub with a wrong password logs the refusal once
    and still serves its own clients.
    """
    redis.options = [
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
    ]
    redis.start()
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    good = Hub(
        tmp_path,
        "good",
        f"redis://hub@127.0.0.1:{redis.port}?prefix=acl",
        ["--backplane-password-file", str(secret)],
    )
    bad = Hub(tmp_path, "bad", f"redis://hub:wrong@127.0.0.1:{redis.port}?prefix=acl")
    try:
        for hub in (good, bad):
            waitFor(hub.listening, "the hub to listen")
        waitFor(up(good), "the backplane to come up")
        waitFor(lambda: bad.count("refused us") >= 1, "the refusal to be logged")
        client = Client(good.port)
        sender, peer = Client(bad.port), Client(bad.port)
        received = redis.cli(
            "--user",
            "hub",
            "--pass",
            "s3cret",
            "--no-auth-warning",
            "PUBLISH",
            "acl.chat",
            "<ops> members only",
        )
        assert received == "1\n"
        assert client.collect(1) == [b"<ops> members only"]
        sender.send(b"local only\n")
        assert peer.collect(1) == [b"<%s> local only" % sender.identity]
        assert client.collect(1) == [b"<ops> members only"]
        assert bad.count("refused us") == 1, bad.text()
        assert "s3cret" not in good.text() + bad.text()
        assert "wrong" not in bad.text()
    finally:
        good.stop()
        bad.stop()


def writeCertificates(directory: Path) -> tuple[Path, Path, Path]:
    """
    Write a CA certificate and a server key and certificate (for
    C{localhost}, signed by that CA) as PEM files.

    @return: The CA, the server certificate and the server key paths.
    """
    import datetime

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


def test_tls(tmp_path: Path, redis: RedisServer) -> None:
    """
    Over C{rediss://}, a hub that trusts the server's CA (C{ca=FILE}) joins:
    C{redis-cli --tls PUBLISH} reaches its client; a hub that only trusts the
    system's CAs refuses the certificate and logs it once.
    """
    ca, cert, key = writeCertificates(tmp_path)
    redis.options = [
        "--port",
        "0",
        "--tls-port",
        str(redis.port),
        "--tls-cert-file",
        str(cert),
        "--tls-key-file",
        str(key),
        "--tls-ca-cert-file",
        str(ca),
        "--tls-auth-clients",
        "no",
    ]
    redis.answers = lambda: True  # type: ignore[method-assign]
    redis.start()
    tlsCli = ["--tls", "--cacert", str(ca), "--sni", "localhost"]
    waitFor(
        lambda: (
            subprocess.run(
                [REDIS_CLI or "redis-cli", "-p", str(redis.port), *tlsCli, "PING"],
                capture_output=True,
                timeout=PATIENCE,
            ).stdout
            == b"PONG\n"
        ),
        "redis-server to answer PING over TLS",
    )
    trusting = Hub(
        tmp_path, "trusting", f"rediss://localhost:{redis.port}?prefix=tls&ca={ca}"
    )
    doubting = Hub(tmp_path, "doubting", f"rediss://localhost:{redis.port}?prefix=tls")
    try:
        for hub in (trusting, doubting):
            waitFor(hub.listening, "the hub to listen")
        waitFor(up(trusting), "the backplane to come up")
        waitFor(lambda: doubting.count(DOWN) >= 1, "the refusal to be logged")
        assert "certificate verify failed" in doubting.text()
        client = Client(trusting.port)
        received = subprocess.run(
            [
                REDIS_CLI or "redis-cli",
                "-p",
                str(redis.port),
                *tlsCli,
                "PUBLISH",
                "tls.chat",
                "<ops> encrypted",
            ],
            capture_output=True,
            timeout=PATIENCE,
            check=True,
        ).stdout
        assert received == b"1\n"
        assert client.collect(1) == [b"<ops> encrypted"]
        assert doubting.count(DOWN) == 1
        assert doubting.count(UP) == 0
    finally:
        trusting.stop()
        doubting.stop()
