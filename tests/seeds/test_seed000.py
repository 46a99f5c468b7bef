"""
Seed 000, the TCP broadcast system ("Spreader"): its client program
(C{seed000_client.py}, which sends C{hello,i am xx <time>} with no newline
and prints whatever arrives) against C{twistd netdemo --broadcast}.
"""

from __future__ import annotations

import datetime
import re
import socket
import threading
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.seeds.programs import SLEEP, Program
from tests.support import PATIENCE, Daemon, poll

#: A hello of the seed client, as printed by another: its send time.
HELLO = (
    r"hello,i am xx (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d{6})?)"
    r"(?=hello|\s|\.|$)"
)

#: How long a hello may take to reach the other client.
WITHIN = datetime.timedelta(seconds=1)


def welcome(number: int, connected: int) -> str:
    """
    The welcome line of client C{number}, as its client prints it.
    """
    return (
        rf"^\* welcome to netdemo broadcast, you are client #{number} "
        rf"\({connected} connected\)$"
    )


class BroadcastTests(SynchronousTestCase):
    """
    Two seed clients hear each other; C{close} closes; a receiver that never
    reads is cut off without delaying them.
    """

    def daemon(self, *args: str) -> Daemon:
        """
        A daemon with the relay and its status page, logging JSON lines,
        stopped after the test.
        """
        daemon = Daemon(
            "--broadcast",
            "tcp:0:interface=127.0.0.1",
            "--http",
            "tcp:0:interface=127.0.0.1",
            *args,
            twistdArgs=["--logger=netdemo.logs.jsonObserver"],
        )
        self.addCleanup(daemon.close)
        daemon.waitListening(2)
        return daemon

    def clients(self, daemon: Daemon) -> tuple[Program, Program]:
        """
        Two seed clients, the first greeted before the second connects.
        """
        port = str(daemon.port("broadcast"))
        first = Program(self, "seed000_client.py", "127.0.0.1", port, SLEEP)
        first.waitFor(welcome(1, 1))
        second = Program(self, "seed000_client.py", "127.0.0.1", port, SLEEP)
        second.waitFor(welcome(2, 2))
        return first, second

    def assertHeardWithin(self, program: Program, count: int, since: int = 0) -> int:
        """
        C{program} printed C{count} more hellos of the other client (after
        the first C{since}), each within L{WITHIN} of its sending.

        @return: How many it printed in all.
        """
        heard = program.waitFor(HELLO, since + count)
        for when, match in heard[since:]:
            sent = datetime.datetime.fromisoformat(match[1])
            self.assertLess(when - sent, WITHIN, f"{match[0]} printed at {when}")
        return len(heard)

    def test_hearEachOther(self) -> None:
        """
        Each of two seed clients sees a welcome with its number, and prints
        the other's hellos (no newline) within a second of their sending.
        On SIGTERM each is told, and the daemon drains and exits.
        """
        daemon = self.daemon()
        first, second = self.clients(daemon)
        for program in (first, second):
            self.assertHeardWithin(program, 3)
        daemon.stop()
        # The seed client prints each read as it comes, and a hello (which
        # has no newline) read together with the notice is printed on the
        # notice's line, before it.
        for program in (first, second):
            program.waitFor(r"\* server shutting down$")
        closed = [e for e in daemon.events() if e.get("event") == "connection_closed"]
        self.assertEqual([e["reason"] for e in closed], ["shutdown", "shutdown"])

    def test_close(self) -> None:
        """
        A client that sends C{close} is closed (the seed's rule), and the
        others never see it.
        """
        daemon = self.daemon()
        first, second = self.clients(daemon)
        with socket.create_connection(
            ("127.0.0.1", daemon.port("broadcast")), timeout=PATIENCE
        ) as closer:
            closer.recv(100)
            closer.sendall(b"close")
            while closer.recv(1 << 16):
                pass
        self.assertHeardWithin(first, 2)
        for program in (first, second):
            self.assertEqual(program.matching(r"close"), [])
        [closed] = daemon.waitEvent("connection_closed")
        self.assertEqual((closed["service"], closed["reason"]), ("broadcast", "close"))

    def flood(self, *policy: str) -> tuple[Daemon, socket.socket, int]:
        """
        Two seed clients and a third client that never reads; 100 MB sent
        to everyone while the seed clients keep up.  The seed clients heard
        each other within a second throughout.

        @param policy: The daemon's slow-consumer options.
        @return: The daemon, the third client's socket, and by how much the
            daemon's RSS grew at most.
        """
        daemon = self.daemon(*policy, "--max-pending", "1MiB", "--idle-timeout", "0")
        first, second = self.clients(daemon)
        heard = [self.assertHeardWithin(p, 1) for p in (first, second)]
        stalled = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(stalled.close)
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", daemon.port("broadcast")))
        flooder = socket.create_connection(
            ("127.0.0.1", daemon.port("broadcast")), timeout=PATIENCE
        )
        self.addCleanup(flooder.close)
        baseline = daemon.rss()
        peak = [baseline]
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], daemon.rss())
                done.wait(0.1)

        watcher = threading.Thread(target=watch)
        watcher.start()
        self.addCleanup(watcher.join, PATIENCE)
        self.addCleanup(done.set)
        total = 100 * 1000 * 1000
        block = b"." * (64 * 1024)
        # The seed clients are processes that print all they get: the
        # flood stays at most WINDOW bytes ahead of the slower, so that only
        # the stalled client falls behind.
        window = 512 * 1024
        sent = 0
        started = time.monotonic()
        while sent < total:
            floor = sent - window
            try:
                poll(
                    lambda: min(first.received, second.received) >= floor,  # noqa: B023
                    f"the seed clients to read {floor} bytes",
                    interval=0.002,
                )
            except AssertionError as e:
                # Once seen in a full run on a loaded machine: say who stalled.
                raise AssertionError(
                    f"{e}: {sent} sent; read {first.received} and "
                    f"{second.received}; exit codes {first.process.poll()} and "
                    f"{second.process.poll()}; slow consumers cut "
                    + str(
                        daemon.statusValue(
                            "netdemo_refused_total",
                            service="broadcast",
                            reason="slow-consumer",
                        )
                    )
                ) from None
            flooder.sendall(block)
            sent += len(block)
        poll(
            lambda: min(first.received, second.received) >= total,
            "the seed clients to read everything",
        )
        elapsed = time.monotonic() - started
        done.set()
        for program, before in zip((first, second), heard, strict=True):
            self.assertHeardWithin(program, 2, before)
            late = [
                m[0]
                for when, m in program.matching(HELLO)
                if when - datetime.datetime.fromisoformat(m[1]) >= WITHIN
            ]
            self.assertEqual(late, [], f"late hellos in {elapsed:.1f} s of flood")
        return daemon, stalled, peak[0] - baseline

    def test_stalledReceiverCut(self) -> None:
        """
        A third client that never reads while 100 MB are sent to everyone
        does not delay the two seed clients, is cut off by the default
        slow-consumer policy, and the daemon's RSS grows by less than 32 MB.
        """
        daemon, stalled, grown = self.flood()
        self.assertEqual(
            daemon.statusValue(
                "netdemo_refused_total", service="broadcast", reason="slow-consumer"
            ),
            1,
        )
        self.assertLess(grown, 32 * 1024 * 1024)
        with self.assertRaises(OSError):
            stalled.settimeout(PATIENCE)
            while stalled.recv(1 << 16):
                pass
            raise ConnectionResetError("closed without a reset")

    def test_stalledReceiverTrimmed(self) -> None:
        """
        With C{--slow-policy drop-oldest}, the third client stays connected
        while whole chunks are dropped for it, the others are not delayed,
        the daemon's RSS grows by less than 32 MB, and once it reads it is
        told how many bytes it missed.
        """
        daemon, stalled, grown = self.flood("--slow-policy", "drop-oldest")
        self.assertLess(grown, 32 * 1024 * 1024)

        def dropped() -> float:
            return daemon.statusValue(
                "netdemo_broadcast_dropped_bytes_total", service="broadcast"
            )

        self.assertGreater(dropped(), 90 * 1000 * 1000)
        # The total read now can still grow: the flood is over once the seed
        # clients received as many bytes as were sent, their hellos to each
        # other included, so the last chunk may still be on its way (and be
        # dropped for the third client).  So the total is compared once the
        # third client was told, and read again until it agrees: the status
        # page is rendered at most every half second (web.RENDER_INTERVAL),
        # and the seed clients' hellos keep the stream below moving.  What
        # was dropped is told in one notice or several (one goes out
        # whenever the client's queue drains); together they tell every
        # dropped byte, and no more.
        stalled.settimeout(PATIENCE)
        notice = re.compile(
            rb"\* dropped (\d+) bytes in \d+ chunks \(slow consumer\)\n"
        )
        told = 0
        notices = 0
        total = 0.0
        unread = b""
        deadline = time.monotonic() + PATIENCE
        while time.monotonic() < deadline:
            chunk = stalled.recv(1 << 20)
            self.assertTrue(chunk, "closed")
            unread += chunk
            end = 0
            for match in notice.finditer(unread):
                told += int(match[1])
                notices += 1
                end = match.end()
            # A notice split between two reads is found whole next time.
            unread = unread[end:][-200:]
            if notices:
                total = dropped()
                if told == total:
                    break
        self.assertGreater(notices, 0)
        self.assertEqual(told, total, f"in {notices} notices")
