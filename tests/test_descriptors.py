"""
Tests for the descriptor reserve of the stream services
(L{netdemo.stream.DescriptorReserve}): near the process's descriptor limit,
every stream listener refuses new connections at once, counted and logged
at a bounded rate, instead of letting Twisted accept and drop them.
"""

from __future__ import annotations

import os
import resource
import socket
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from netdemo.echo import EchoFactory
from netdemo.limits import ConnectionLimits
from netdemo.metrics import MemoryMetrics
from netdemo.stream import DescriptorReserve, lowestFreeDescriptor
from tests.support import PATIENCE, Daemon, poll, requireTool


class LowestFreeTests(SynchronousTestCase):
    """
    L{lowestFreeDescriptor} is the number the next descriptor gets.
    """

    def test_nextOpen(self) -> None:
        """
        A file opened next gets the number it said.
        """
        expected = lowestFreeDescriptor()
        fd = os.open(os.devnull, os.O_RDONLY)
        self.addCleanup(os.close, fd)
        self.assertEqual(fd, expected)
        self.assertGreater(lowestFreeDescriptor(), fd)


class ReserveTests(SynchronousTestCase):
    """
    L{DescriptorReserve} compares the lowest free descriptor with the limit.
    """

    def test_threshold(self) -> None:
        """
        Exhausted once the lowest free number is within C{reserve} of the
        limit.
        """
        lowest = [89]
        reserve = DescriptorReserve(10, lambda: 100, lambda: lowest[0])
        self.assertFalse(reserve.exhausted())
        lowest[0] = 90
        self.assertTrue(reserve.exhausted())

    def test_off(self) -> None:
        """
        A reserve of 0 never looks.
        """

        def never() -> int:
            raise AssertionError("looked")

        reserve = DescriptorReserve(0, never, never)
        self.assertFalse(reserve.exhausted())

    def test_limitReadAgain(self) -> None:
        """
        Near the limit, the limit is read again: a raised limit counts.
        """
        limits = [100, 1000]
        reserve = DescriptorReserve(10, lambda: limits.pop(0), lambda: 95)
        self.assertFalse(reserve.exhausted())

    def test_factoryRefuses(self) -> None:
        """
        A stream factory refuses a connection while the reserve is
        exhausted, counts it, and keeps no trace of it.
        """
        metrics = MemoryMetrics()
        factory = EchoFactory("tcp-echo", ConnectionLimits(), metrics, Clock())
        factory.descriptors = DescriptorReserve(10, lambda: 100, lambda: 95)
        self.assertIsNone(factory.buildProtocol(IPv4Address("TCP", "10.0.0.1", 1)))
        self.assertEqual(
            metrics.value(
                "netdemo_refused_total", service="tcp-echo", reason="fd-reserve"
            ),
            1,
        )
        self.assertEqual(factory.perPeer, {})
        self.assertEqual(
            metrics.value("netdemo_connections_total", service="tcp-echo"), 0
        )


#: The daemon's descriptor limit in L{DaemonReserveTests}.
LIMIT = 256

#: Its reserve.
RESERVE = 32


def _served(address: tuple[str, int], request: bytes, answer: bytes) -> Any:
    """
    Connect, send C{request} and read: the socket if the reply starts with
    C{answer}, L{None} if the daemon closed the connection instead.
    """
    s = socket.create_connection(address, timeout=PATIENCE)
    try:
        s.sendall(request)
        reply = s.recv(len(answer))
    except ConnectionError:
        reply = b""
    if reply == answer:
        return s
    s.close()
    if reply:
        raise AssertionError(f"unexpected reply {reply!r}")
    return None


class DaemonReserveTests(SynchronousTestCase):
    """
    A real daemon whose descriptor limit is low: HTTP connections take
    every descriptor but the reserve, then echo, the hub and HTTP refuse new
    connections cleanly, and serve again once some close.
    """

    def test_everyListenerRefusesCleanly(self) -> None:
        """
        At the reserve, an echo client is closed at once, a hub client gets
        the reason line, each service logs one C{refused} event, and Twisted
        never reaches C{EMFILE}; closing a few connections frees the
        listeners.
        """
        prlimit = requireTool("prlimit", "util-linux")
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < 4 * LIMIT:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4 * LIMIT), hard))
        here = "tcp:0:interface=127.0.0.1"
        daemon = Daemon(
            *("--tcp", here, "--pubsub", here, "--http", here),
            *("--max-connections", "0", "--max-per-peer", "0"),
            *("--fd-reserve", str(RESERVE), "--no-presence"),
            twistdArgs=["--logger=netdemo.logs.jsonObserver"],
            launcher=[prlimit, f"--nofile={LIMIT}:{LIMIT}", "--"],
        )
        self.addCleanup(daemon.close)
        daemon.waitListening(3)
        held: list[socket.socket] = []

        def closeHeld() -> None:
            for s in held:
                s.close()

        self.addCleanup(closeHeld)
        http = daemon.address("http")
        healthz = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        for _ in range(LIMIT):
            s = _served(http, healthz, b"HTTP/1.1 200")
            if s is None:
                break
            held.append(s)
        else:
            self.fail(f"{LIMIT} HTTP connections accepted under a limit of {LIMIT}")
        self.assertLess(len(held), LIMIT - RESERVE)
        self.assertIsNone(_served(daemon.address("tcp-echo"), b"x", b"x"))
        hub = socket.create_connection(daemon.address("pubsub"), timeout=PATIENCE)
        self.addCleanup(hub.close)
        self.assertEqual(hub.makefile("rb").readline(), b"-ERR refused: fd-reserve\n")
        for s in held[:5]:
            s.close()
        del held[:5]
        echo = poll(
            lambda: _served(daemon.address("tcp-echo"), b"x", b"x"),
            "echo to serve again",
        )
        held.append(echo)
        refusals = [
            e for e in daemon.waitEvent("refused", 3) if e.get("reason") == "fd-reserve"
        ]
        self.assertEqual(
            sorted({e["service"] for e in refusals}), ["http", "pubsub", "tcp-echo"]
        )
        # At most one line per service every 10 s, however many refusals.
        self.assertLessEqual(len(refusals), 6)
        self.assertNotIn("EMFILE", daemon.log())
        self.assertNotIn("Traceback", daemon.log())
