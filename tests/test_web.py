"""
Tests for L{netdemo.web}: the status page, C{/status.json}, C{/healthz} and
C{/metrics}, over real HTTP on 127.0.0.1.
"""

from __future__ import annotations

import json
import re
import subprocess
import warnings
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers

from netdemo.metrics import MemoryMetrics, sampleOf
from netdemo.web import (
    SamplesCollector,
    ServerInfo,
    buildHTTPService,
    renderStatusPage,
    statusDocument,
)
from tests.support import requireTool

INFO = ServerInfo(version="9.8.7", startedAt=1000.0)


def _someMetrics() -> MemoryMetrics:
    """
    Metrics as two services would report them, with a listener that has
    closed and a pulled collector.
    """
    metrics = MemoryMetrics()
    metrics.set("netdemo_listener_info", 1, service="tcp-echo", address="127.0.0.1:7")
    metrics.set("netdemo_listener_info", 0, service="tcp-echo", address="[::1]:7")
    metrics.inc("netdemo_connections_total", 3, service="tcp-echo")
    metrics.inc("netdemo_refused_total", 2, service="tcp-echo", reason="max-per-peer")
    metrics.inc("netdemo_refused_total", 1, service="hub", reason="slow-consumer")
    metrics.addCollector(
        lambda: [sampleOf("netdemo_received_bytes_total", 42, service="tcp-echo")]
    )
    return metrics


class StatusDocumentTests(SynchronousTestCase):
    """
    L{statusDocument} groups the samples by service.
    """

    def test_services(self) -> None:
        """
        Every C{service} label becomes one entry, sorted by name, holding its
        series without the C{service} label.
        """
        doc = statusDocument(_someMetrics().samples(), INFO, now=1010.5)
        self.assertEqual([s["name"] for s in doc["services"]], ["hub", "tcp-echo"])
        echo = doc["services"][1]
        values = {m["series"]: m["value"] for m in echo["metrics"]}
        self.assertEqual(
            values,
            {
                'netdemo_connections_total{service="tcp-echo"}': 3,
                'netdemo_received_bytes_total{service="tcp-echo"}': 42,
                'netdemo_refused_total{reason="max-per-peer",service="tcp-echo"}': 2,
            },
        )
        refused = [m for m in echo["metrics"] if m["name"] == "netdemo_refused_total"]
        self.assertEqual(refused[0]["labels"], {"reason": "max-per-peer"})
        self.assertEqual(refused[0]["kind"], "counter")

    def test_listeners(self) -> None:
        """
        Listeners come from C{netdemo_listener_info}: only those at 1, and
        they are not repeated among the metrics.
        """
        doc = statusDocument(_someMetrics().samples(), INFO, now=1010.5)
        echo = doc["services"][1]
        self.assertEqual(echo["listeners"], ["127.0.0.1:7"])
        self.assertNotIn("netdemo_listener_info", [m["name"] for m in echo["metrics"]])

    def test_header(self) -> None:
        """
        The document carries its schema version, the daemon's version, the
        time, the start time and the uptime.
        """
        doc = statusDocument([], INFO, now=1010.5)
        self.assertEqual(
            {k: doc[k] for k in ("schema", "version", "time", "started", "uptime")},
            {
                "schema": 1,
                "version": "9.8.7",
                "time": 1010.5,
                "started": 1000.0,
                "uptime": 10.5,
            },
        )
        self.assertEqual(doc["services"], [])
        self.assertEqual(doc["requests"], 0)

    def test_notANumber(self) -> None:
        """
        A gauge that is not a number (an RTT not measured yet) is C{null} in
        the JSON and a dash on the page.
        """
        metrics = MemoryMetrics()
        metrics.set("netdemo_connections_current", float("nan"), service="x")
        doc = statusDocument(metrics.samples(), INFO, now=1001)
        self.assertIsNone(doc["services"][0]["metrics"][0]["value"])
        json.dumps(doc, allow_nan=False)
        self.assertIn(">\u2013</td>", renderStatusPage(doc))

    def test_pageEscapes(self) -> None:
        """
        Label values reach the page HTML-escaped.
        """
        metrics = MemoryMetrics()
        metrics.inc("netdemo_refused_total", service="x", reason="<b>&\"'")
        page = renderStatusPage(statusDocument(metrics.samples(), INFO, now=1001))
        self.assertNotIn("<b>&", page)
        self.assertIn("&lt;b&gt;&amp;", page)


class CollectorTests(SynchronousTestCase):
    """
    L{SamplesCollector} translates the samples for C{prometheus_client}.
    """

    def test_exposition(self) -> None:
        """
        Counters keep their C{_total} name once, with HELP and TYPE from the
        catalog; the build info and start time are added.
        """
        from prometheus_client import CollectorRegistry, generate_latest

        registry = CollectorRegistry(auto_describe=False)
        registry.register(SamplesCollector(_someMetrics(), INFO))
        text = generate_latest(registry).decode("utf-8")
        self.assertIn("# TYPE netdemo_connections_total counter\n", text)
        self.assertIn('netdemo_connections_total{service="tcp-echo"} 3.0\n', text)
        self.assertIn(
            'netdemo_refused_total{reason="max-per-peer",service="tcp-echo"} 2.0\n',
            text,
        )
        self.assertIn('netdemo_received_bytes_total{service="tcp-echo"} 42.0\n', text)
        self.assertIn('netdemo_build_info{version="9.8.7"} 1.0\n', text)
        self.assertIn("netdemo_start_time_seconds 1000.0\n", text)
        self.assertNotIn("_total_total", text)


class HTTPServiceTests(TestCase):
    """
    The HTTP service on a real socket.
    """

    def setUp(self) -> None:
        self.metrics = _someMetrics()
        self.service = buildHTTPService(
            ["tcp:0:interface=127.0.0.1"], self.metrics, INFO, reactor
        )
        self.service.startService()
        self.addCleanup(self.service.stopService)
        (address,) = self.service.addresses
        self.base = f"http://{address}"
        self.agent = Agent(reactor)

    async def get(
        self, path: str, method: bytes = b"GET", accept: bytes | None = None
    ) -> Any:
        """
        Request C{path}; return the response with its body as C{.body}.
        """
        headers = Headers({b"accept": [accept]} if accept else {})
        response: Any = await self.agent.request(
            method, (self.base + path).encode("ascii"), headers
        )
        with warnings.catch_warnings():
            # Twisted warns when a short body has already arrived and the
            # transport is gone; nothing is lost.
            warnings.filterwarnings("ignore", "Using readBody", DeprecationWarning)
            reading = readBody(response)
        response.body = await reading
        return response

    async def test_listener(self) -> None:
        """
        The service reports its own listener to the metrics, and the status
        page lists it under C{http}.
        """
        response = await self.get("/status.json")
        doc = json.loads(response.body)
        http = [s for s in doc["services"] if s["name"] == "http"]
        self.assertEqual(http[0]["listeners"], [self.base[len("http://") :]])

    async def test_statusPage(self) -> None:
        """
        C{/} is a self-contained HTML page: no external scripts, styles,
        images or fonts, and the numbers are in it without JavaScript.
        """
        response = await self.get("/")
        self.assertEqual(response.code, 200)
        self.assertEqual(
            response.headers.getRawHeaders(b"content-type"),
            [b"text/html; charset=utf-8"],
        )
        page = response.body.decode("utf-8")
        self.assertIn("<title>netdemo status</title>", page)
        self.assertIn('<section id="service-tcp-echo">', page)
        self.assertIn("<code>127.0.0.1:7</code>", page)
        self.assertIn(
            'data-series="netdemo_received_bytes_total{service=&quot;tcp-echo'
            '&quot;}">42<',
            page,
        )
        self.assertEqual(re.findall(r"\b(?:src|href)\s*=\s*\"(?!data:)", page), [])
        self.assertIn('href="data:,"', page)
        self.assertNotIn("url(", page)
        self.assertNotIn("@import", page)

    async def test_countsItself(self) -> None:
        """
        Every request is counted by path, unknown paths as C{other}, and the
        page shows the count.
        """
        await self.get("/")
        await self.get("/healthz")
        missing = await self.get("/no/such/page")
        self.assertEqual(missing.code, 404)
        response = await self.get("/status.json")
        doc = json.loads(response.body)
        self.assertEqual(doc["requests"], 4)
        for path in ("/", "/healthz", "other", "/status.json"):
            self.assertEqual(
                self.metrics.value(
                    "netdemo_http_requests_total", service="http", path=path
                ),
                1,
            )

    async def test_healthz(self) -> None:
        """
        C{/healthz} answers C{ok}.
        """
        response = await self.get("/healthz")
        self.assertEqual((response.code, response.body), (200, b"ok\n"))

    async def test_methodNotAllowed(self) -> None:
        """
        Only GET and HEAD are served.
        """
        response = await self.get("/status.json", method=b"POST")
        self.assertEqual(response.code, 405)
        self.assertEqual(response.headers.getRawHeaders(b"allow"), [b"GET, HEAD"])

    async def test_metrics(self) -> None:
        """
        C{/metrics} is the Prometheus text format, with process metrics.
        """
        response = await self.get("/metrics")
        self.assertEqual(response.code, 200)
        (contentType,) = response.headers.getRawHeaders(b"content-type")
        self.assertTrue(contentType.startswith(b"text/plain; version=0.0.4"))
        self.assertIn(
            b'netdemo_connections_total{service="tcp-echo"} 3.0', response.body
        )
        self.assertIn(b"process_start_time_seconds", response.body)

    async def test_openMetrics(self) -> None:
        """
        A scraper that asks for OpenMetrics gets it.
        """
        response = await self.get(
            "/metrics", accept=b"application/openmetrics-text; version=1.0.0"
        )
        (contentType,) = response.headers.getRawHeaders(b"content-type")
        self.assertTrue(contentType.startswith(b"application/openmetrics-text"))
        self.assertTrue(response.body.endswith(b"# EOF\n"))

    async def test_promtool(self) -> None:
        """
        C{promtool check metrics} passes C{/metrics} without a complaint.
        """
        promtool = requireTool("promtool", "prometheus")
        await self.get("/")
        response = await self.get("/metrics")
        result = subprocess.run(
            [promtool, "check", "metrics"],
            input=response.body,
            capture_output=True,
            timeout=60,
        )
        self.assertEqual(
            (result.returncode, result.stdout, result.stderr), (0, b"", b"")
        )

    async def test_stopped(self) -> None:
        """
        A stopped service reports its listener closed.
        """
        (address,) = self.service.addresses
        await self.service.stopService()
        self.assertEqual(
            self.metrics.value(
                "netdemo_listener_info", service="http", address=address
            ),
            0,
        )
        # Started again by nobody: the cleanup's stopService is harmless.
        self.service.running = False


class ClockTests(SynchronousTestCase):
    """
    The page's clock is the reactor it was built with.
    """

    def test_uptime(self) -> None:
        """
        The uptime is the reactor's time minus the start time.
        """
        from netdemo.web import StatusResource

        clock = Clock()
        clock.advance(1234)
        resource = StatusResource(MemoryMetrics(), INFO, clock)
        self.assertEqual(resource.document()["uptime"], 234)
