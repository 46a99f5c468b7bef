"""
The hub with thousands of clients, against a real C{twistd netdemo}: what
one client, or a crowd, can make it do to everyone else (issue 11).

Each test plays the worst sender and asserts liveness with generous margins
(the echo service in the same process answers within L{ECHO_PATIENCE},
where the bugs made it wait tens of seconds) and deterministic evidence
(the hub's metrics).  The figures themselves are measured by
C{bench/hubabuse.py}, not here.
"""

from __future__ import annotations

import resource
import socket
import threading
import time
from collections.abc import Callable

from twisted.trial.unittest import SynchronousTestCase

from netdemo.web import RENDER_INTERVAL
from tests.pubsubhelpers import LineSocket
from tests.support import PATIENCE, poll
from tests.test_pubsub_sockets import HubDaemon

#: Idle clients connected to the hub.
CROWD = 3000

#: The longest an echo round trip may take while the hub is abused: the
#: bugs made it tens of seconds; a busy test machine makes it tens of
#: milliseconds at worst.
ECHO_PATIENCE = 2.0


def raiseFileLimit() -> None:
    """
    Let this process (and the daemons it starts) open thousands of sockets.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 16
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def crowdDaemon(*args: str, presence: bool = False) -> HubDaemon:
    """
    A hub and an echo in one daemon, without connection caps, room made
    for a crowd.
    """
    raiseFileLimit()
    needed = 2 * CROWD + 500
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < needed:
        raise AssertionError(f"this test needs {needed} file descriptors")
    return HubDaemon(
        "--tcp",
        "tcp:0:interface=127.0.0.1:backlog=4096",
        "--max-per-peer",
        "0",
        "--max-connections",
        "0",
        "--idle-timeout",
        "0",
        *args,
        presence=presence,
        listeners=3,
    )


def crowd(port: int, count: int = CROWD) -> list[socket.socket]:
    """
    C{count} idle clients of the hub on C{port} (they never read).
    """
    clients = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=PATIENCE)
        clients.append(s)
    return clients


def closeAll(sockets: list[socket.socket]) -> None:
    """
    Close C{sockets}.
    """
    for s in sockets:
        s.close()


class EchoPinger:
    """
    Round trips to the daemon's echo, one after the other, while something
    else happens; each must come back within L{ECHO_PATIENCE}.

    @ivar slowest: The longest round trip so far, in seconds.
    @ivar count: Round trips so far.
    """

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=PATIENCE)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(ECHO_PATIENCE)
        self.slowest = 0.0
        self.count = 0

    def whilst(self, work: Callable[[], None]) -> None:
        """
        Run C{work} in a thread and ping the echo until it is done (at most
        L{PATIENCE} seconds).

        @raise AssertionError: A round trip took longer than
            L{ECHO_PATIENCE}, or C{work} did not finish or failed.
        """
        failures: list[BaseException] = []

        def run() -> None:
            try:
                work()
            except BaseException as e:
                failures.append(e)

        thread = threading.Thread(target=run)
        deadline = time.monotonic() + PATIENCE
        thread.start()
        try:
            while thread.is_alive() and time.monotonic() < deadline:
                start = time.monotonic()
                self.sock.sendall(b"x")
                try:
                    got = self.sock.recv(1)
                except TimeoutError:
                    raise AssertionError(
                        f"the echo did not answer within {ECHO_PATIENCE} s"
                    ) from None
                assert got == b"x", got
                self.slowest = max(self.slowest, time.monotonic() - start)
                self.count += 1
                time.sleep(0.005)
        finally:
            thread.join(PATIENCE)
        assert not thread.is_alive(), "the work did not finish in time"
        if failures:
            raise failures[0]

    def close(self) -> None:
        """
        Close the connection.
        """
        self.sock.close()


def flood(port: int, lines: list[bytes], answer: bytes) -> list[bytes]:
    """
    Send C{lines} at once on a new connection and read the answers, as
    fast as the hub gives them, until as many start with C{answer}.

    @return: The answers.
    """
    client = LineSocket(port)
    try:
        client.send(b"".join(lines))
        return client.collect(answer, len(lines), timeout=PATIENCE)
    finally:
        client.close()


class FloodTests(SynchronousTestCase):
    """
    One client floods a hub that has thousands of idle clients with
    commands that each need a route (item 1): everyone else goes on, and
    the flood is handled a budget at a time.
    """

    daemon: HubDaemon
    crowd: list[socket.socket]

    @classmethod
    def setUpClass(cls) -> None:
        cls.daemon = crowdDaemon()
        try:
            cls.crowd = crowd(cls.daemon.port("pubsub"))
        except BaseException:
            cls.daemon.close()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        closeAll(cls.crowd)
        cls.daemon.close()

    def pinger(self) -> EchoPinger:
        """
        An echo pinger, closed after the test.
        """
        pinger = EchoPinger(self.daemon.port("tcp-echo"))
        self.addCleanup(pinger.close)
        return pinger

    def floodWhilePinging(self, lines: list[bytes], answer: bytes) -> None:
        """
        Flood while pinging the echo; every line is answered, in order, and
        the hub left part of it for later turns at least once per budget.
        """
        time.sleep(RENDER_INTERVAL)  # no render cached before the flood
        before = self.daemon.metric(
            "netdemo_pubsub_deferred_turns_total", service="pubsub"
        )
        answers: list[bytes] = []
        pinger = self.pinger()
        pinger.whilst(
            lambda: answers.extend(flood(self.daemon.port("pubsub"), lines, answer))
        )
        self.assertEqual(len(answers), len(lines))
        self.assertGreater(pinger.count, 0)
        # /metrics is rendered at most twice a second: poll.
        poll(
            lambda: (
                self.daemon.metric(
                    "netdemo_pubsub_deferred_turns_total", service="pubsub"
                )
                - before
                >= len(lines) // 1000 - 1
            ),
            "the deferred turns counted",
        )

    def test_whoFlood(self) -> None:
        """
        10,000 C{/who uN} lines (each a topic nobody has) from one client:
        the echo keeps answering, every C{/who} is answered.
        """
        self.floodWhilePinging(
            [b"/who u%d\n" % i for i in range(10000)], b"+OK who 0: "
        )

    def test_pubFlood(self) -> None:
        """
        10,000 C{/pub uN x} lines (10,000 topics nobody has): the echo keeps
        answering, every line is acknowledged.
        """
        self.floodWhilePinging([b"/pub u%d x\n" % i for i in range(10000)], b"+OK")

    def test_longTopicRefused(self) -> None:
        """
        C{/who} and C{/history} refuse a topic longer than 255 bytes.
        """
        client = LineSocket(self.daemon.port("pubsub"))
        self.addCleanup(client.close)
        long = b"a" * 300
        client.send(b"/who " + long + b"\n/history 3 " + long + b"\n")
        self.assertEqual(
            client.collect(b"-ERR", 2),
            [b"-ERR usage: /who [TOPIC]", b"-ERR usage: /history [N] [TOPIC]"],
        )


class CrowdTests(SynchronousTestCase):
    """
    Thousands of clients arrive at a hub with presence on (item 2), then
    connections come and go (item 3): presence costs a notice per interval,
    not a notice to everyone per arrival, and the echo keeps answering.
    """

    def test_arrivalsAndChurn(self) -> None:
        """
        While 3,000 clients connect, the echo answers within the margin;
        their arrival is told in a few notices.  Then 300 connections come
        and go: the hub sends the crowd a few notices about them, not two
        notices each to every client (which would be megabytes).
        """
        daemon = crowdDaemon(presence=True)
        self.addCleanup(daemon.close)
        port = daemon.port("pubsub")
        pinger = EchoPinger(daemon.port("tcp-echo"))
        self.addCleanup(pinger.close)
        clients: list[socket.socket] = []
        self.addCleanup(closeAll, clients)

        def arrive() -> None:
            clients.extend(crowd(port))
            poll(
                lambda: (
                    daemon.metric(
                        "netdemo_pubsub_presence_events_total", service="pubsub"
                    )
                    >= CROWD
                ),
                f"{CROWD} arrivals",
                interval=0.2,
            )

        pinger.whilst(arrive)
        events = daemon.metric("netdemo_pubsub_presence_events_total", service="pubsub")
        notices = daemon.metric(
            "netdemo_pubsub_presence_notices_total", service="pubsub"
        )
        self.assertEqual(events, CROWD)
        self.assertLess(notices, 100)
        sent = daemon.metric("netdemo_sent_bytes_total", service="pubsub")

        def churn() -> None:
            for _ in range(300):
                LineSocket(port).close()

        pinger.whilst(churn)
        # /metrics may serve a render up to RENDER_INTERVAL old.
        time.sleep(RENDER_INTERVAL)
        churned = daemon.metric("netdemo_sent_bytes_total", service="pubsub") - sent
        self.assertLess(churned, 2_000_000)


class HistoryTests(SynchronousTestCase):
    """
    History replays go at the reader's pace (item 7), and numbers are
    bounded before they are read (item 8).
    """

    def test_sixFullTopics(self) -> None:
        """
        A client that reads as fast as it can and asks for the history of
        six full topics (100 lines of 4 KB each: 2.4 MB, over
        C{--max-pending} 1 MiB) gets all of it, each replay followed by its
        C{+OK}; nobody is disconnected as a slow consumer.
        """
        daemon = HubDaemon()
        self.addCleanup(daemon.close)
        port = daemon.port("pubsub")
        publisher = LineSocket(port)
        self.addCleanup(publisher.close)
        text = b"h" * 4000
        for t in range(6):
            publisher.send(b"".join(b"/pub t%d %s\n" % (t, text) for _ in range(100)))
        self.assertEqual(len(publisher.collect(b"+OK", 600)), 600)
        reader = LineSocket(port, rcvbuf=65536)
        self.addCleanup(reader.close)
        reader.send(b"".join(b"/history t%d\n" % t for t in range(6)) + b"/ping\n")
        reader.collect(b"+OK pong", 1)
        self.assertFalse(reader.closed)
        self.assertEqual(
            reader.matching(b"+OK"),
            [b"+OK history 100 lines, last seq 100"] * 6 + [b"+OK pong"],
        )
        self.assertEqual(len(reader.matching(b"[t")), 600)
        self.assertEqual(
            daemon.metric(
                "netdemo_refused_total", service="pubsub", reason="slow-consumer"
            ),
            0,
        )

    def test_hugeCount(self) -> None:
        """
        C{/history} with a count of 5,000 digits (Python refuses to read
        more than 4,300) replays all the history; the hub logs no error.
        """
        daemon = HubDaemon("--max-line", "10000")
        self.addCleanup(daemon.close)
        client = LineSocket(daemon.port("pubsub"))
        self.addCleanup(client.close)
        client.send(b"one\n/history " + b"7" * 5000 + b"\n")
        self.assertEqual(
            client.collect(b"+OK history", 1), [b"+OK history 1 lines, last seq 1"]
        )
        self.assertNotIn("Traceback", daemon.log())


class IdentityTests(SynchronousTestCase):
    """
    Identities (item 9), on a real hub: nicknames that look alike cannot
    coexist, the hub's own identities are reserved, addresses can be
    hidden, and C1 and bidi controls are escaped.
    """

    def test_identities(self) -> None:
        """
        With C{--hide-addresses}, no client sees another's address; C{Alice}
        and C{aIice} are refused once C{alice} is taken, C{redis} and
        C{client-1} always; U+009B and U+202E arrive escaped.
        """
        daemon = HubDaemon("--hide-addresses")
        self.addCleanup(daemon.close)
        port = daemon.port("pubsub")
        a, b = LineSocket(port), LineSocket(port)
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        self.assertEqual((a.identity, b.identity), (b"client-1", b"client-2"))
        a.send(b"/nick alice\n")
        a.waitFor(b"+OK nick alice")
        b.send(b"/nick Alice\n/nick aIice\n/nick redis\n/nick client-1\n/who\n")
        self.assertEqual(
            b.collect(b"-ERR", 4),
            [
                b"-ERR nick Alice is taken",
                b"-ERR nick aIice is taken",
                b"-ERR nick redis is reserved",
                b"-ERR nick client-1 is reserved",
            ],
        )
        self.assertEqual(b.collect(b"+OK who", 1), [b"+OK who 2: alice client-2"])
        b.send("csi \x9b2J rlo \u202eevil\n".encode())
        self.assertEqual(
            a.waitFor(b"<client-2>"), b"<client-2> csi \\u009b2J rlo \\u202eevil"
        )
        self.assertNotIn(b"127.0.0.1", b"\n".join(a.lines + b.lines))
