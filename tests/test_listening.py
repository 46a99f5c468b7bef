"""
Tests for L{netdemo.listening}: the C{listening} report, the clean exit on
a bind failure, and L{IListener} as the stream L{ListeningService} provides
it.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from netdemo.listening import (
    LISTENER_METRIC,
    IListener,
    ListenerReport,
    exitOnBindFailure,
)
from netdemo.metrics import MemoryMetrics
from netdemo.stream import ListeningService
from tests.support import captureEvents


class StoppablePort:
    """
    The least of a listening port: stopping it works.
    """

    def stopListening(self) -> None:
        """
        Nothing to close.
        """

    def getHost(self) -> IPv4Address:
        """
        Where it pretends to listen.
        """
        return IPv4Address("TCP", "127.0.0.1", 8007)


class PendingEndpoint:
    """
    A server endpoint whose C{listen} waits for the test.
    """

    def __init__(self) -> None:
        self.listening: Deferred[Any] = Deferred()

    def listen(self, factory: Any) -> Deferred[Any]:
        return self.listening


class ListenerReportTests(SynchronousTestCase):
    """
    L{ListenerReport} logs and counts each bound address the same way.
    """

    def test_bound(self) -> None:
        """
        Each bound address is one C{listening} event and one
        C{netdemo_listener_info} series at 1, with the same service and
        address.
        """
        events = captureEvents(self)
        metrics = MemoryMetrics()
        report = ListenerReport("tcp-echo", metrics)
        report.bound("127.0.0.1:8007", "tcp:8007:interface=127.0.0.1")
        report.bound("[::1]:8007", "tcp6:8007")
        self.assertEqual(report.addresses, ["127.0.0.1:8007", "[::1]:8007"])
        listening = [e for e in events if e.get("event") == "listening"]
        self.assertEqual(
            [(e["service"], e["address"], e["description"]) for e in listening],
            [
                ("tcp-echo", "127.0.0.1:8007", "tcp:8007:interface=127.0.0.1"),
                ("tcp-echo", "[::1]:8007", "tcp6:8007"),
            ],
        )
        for address in report.addresses:
            self.assertEqual(
                metrics.value(LISTENER_METRIC, service="tcp-echo", address=address),
                1,
            )

    def test_closed(self) -> None:
        """
        Once closed, every series of the service is 0 and no address is
        left.
        """
        metrics = MemoryMetrics()
        report = ListenerReport("http", metrics)
        report.bound("127.0.0.1:8080", "tcp:8080")
        report.closed()
        self.assertEqual(report.addresses, [])
        self.assertEqual(
            metrics.value(LISTENER_METRIC, service="http", address="127.0.0.1:8080"),
            0,
        )

    def test_withoutMetrics(self) -> None:
        """
        Without metrics the events are still logged.
        """
        events = captureEvents(self)
        report = ListenerReport("udp-echo", None)
        report.bound("127.0.0.1:8009", "127.0.0.1:8009")
        report.closed()
        self.assertEqual([e.get("event") for e in events], ["listening"])


class ExitOnBindFailureTests(SynchronousTestCase):
    """
    L{exitOnBindFailure} turns a failure to bind into one line and exit
    status 1.
    """

    def test_result(self) -> None:
        """
        What the call returns is returned.
        """
        self.assertEqual(exitOnBindFailure(lambda: 42), 42)

    def test_bindFailures(self) -> None:
        """
        L{CannotListenError} and L{OSError} become L{SystemExit} with one
        line naming the trouble, which C{twistd} prints before it exits
        with status 1.
        """

        def busy() -> None:
            raise CannotListenError("127.0.0.1", 8007, OSError(98, "in use"))

        def denied() -> None:
            raise PermissionError(13, "Permission denied")

        for start, text in [(busy, "8007"), (denied, "Permission denied")]:
            exit = self.assertRaises(SystemExit, exitOnBindFailure, start)
            message = str(exit.code)
            self.assertTrue(message.startswith("netdemo: cannot start: "), message)
            self.assertIn(text, message)
            self.assertNotIn("\n", message)

    def test_otherErrors(self) -> None:
        """
        Other exceptions pass through: they are bugs, and C{twistd} shows
        their traceback.
        """

        def bug() -> None:
            raise ZeroDivisionError()

        self.assertRaises(ZeroDivisionError, exitOnBindFailure, bug)


class ListeningServiceTests(SynchronousTestCase):
    """
    The stream L{ListeningService} provides L{IListener}: it says when its
    endpoints are bound, or that one failed.
    """

    def service(self, *endpoints: Any) -> tuple[ListeningService, MemoryMetrics]:
        """
        A started service listening on C{endpoints}, stopped after the test.
        """
        metrics = MemoryMetrics()
        service = ListeningService("test", Factory(), [], metrics, Clock())
        for number, endpoint in enumerate(endpoints):
            service.addEndpoint(endpoint, f"endpoint {number}")
        service.startService()
        self.addCleanup(service.stopService)
        return service, metrics

    def test_interface(self) -> None:
        """
        L{ListeningService} provides L{IListener}.
        """
        service, _ = self.service()
        self.assertTrue(verifyObject(IListener, service))

    def test_nothingToBind(self) -> None:
        """
        With no endpoint, it listens at once.
        """
        service, _ = self.service()
        self.assertIs(self.successResultOf(service.whenListening()), True)

    def test_pending(self) -> None:
        """
        L{IListener.whenListening} fires with L{True} only once every
        endpoint is bound, and the bound address is reported.
        """
        first, second = PendingEndpoint(), PendingEndpoint()
        service, metrics = self.service(first, second)
        listening = service.whenListening()
        first.listening.callback(StoppablePort())
        self.assertNoResult(listening)
        second.listening.callback(StoppablePort())
        self.assertIs(self.successResultOf(listening), True)
        self.assertEqual(service.addresses, ["127.0.0.1:8007"] * 2)
        self.assertEqual(
            metrics.value(LISTENER_METRIC, service="test", address="127.0.0.1:8007"),
            1,
        )

    def test_failing(self) -> None:
        """
        An endpoint that fails to listen makes L{IListener.whenListening}
        fire with L{False}; the failure is logged, not raised.
        """
        pending = PendingEndpoint()
        service, _ = self.service(pending)
        listening = service.whenListening()
        pending.listening.errback(CannotListenError("127.0.0.1", 8007, OSError()))
        self.assertIs(self.successResultOf(listening), False)
        self.assertEqual(len(self.flushLoggedErrors(CannotListenError)), 1)
        self.assertEqual(service.addresses, [])
