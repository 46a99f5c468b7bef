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
                "schema": 3,
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
        self.assertEqual(doc["services"][0]["metrics"][0]["text"], "\u2013")

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
            '&quot;}">42 B<',
            page,
        )
        # Only the daemon's own script and style sheet, and links to its
        # other pages.
        self.assertEqual(
            sorted(re.findall(r"\b(?:src|href)\s*=\s*\"(?!data:)([^\"]*)\"", page)),
            [
                "metrics",
                "static/dashboard.css",
                "static/dashboard.js",
                "status.json",
            ],
        )
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

    async def test_contentSecurityPolicy(self) -> None:
        """
        Every response carries a strict Content-Security-Policy: scripts,
        styles and fetches only from the daemon, no inline script, no
        framing.
        """
        for path in ("/", "/status.json", "/metrics", "/healthz", "/nothing"):
            response = await self.get(path)
            (policy,) = response.headers.getRawHeaders(b"content-security-policy")
            directives = dict(
                (d.split(" ", 1) + [""])[:2] for d in policy.decode().split("; ")
            )
            self.assertEqual(directives["default-src"], "'none'")
            self.assertEqual(directives["script-src"], "'self'")
            self.assertEqual(directives["style-src"], "'self'")
            self.assertEqual(directives["frame-ancestors"], "'none'")
            self.assertNotIn("unsafe-inline", policy.decode())
        from netdemo.web import NOT_ALLOWED, TIMED_OUT, TOO_LARGE

        for refusal in (TOO_LARGE, NOT_ALLOWED, TIMED_OUT):
            self.assertIn(b"\r\ncontent-security-policy: default-src 'none'", refusal)
        page = (await self.get("/")).body.decode()
        self.assertNotIn("<script>", page)
        self.assertNotIn("<style", page)
        self.assertNotIn(" style=", page)

    async def test_static(self) -> None:
        """
        The page's script and style sheet are served with their types.
        """
        script = await self.get("/static/dashboard.js")
        self.assertEqual(
            script.headers.getRawHeaders(b"content-type"),
            [b"text/javascript; charset=utf-8"],
        )
        self.assertIn(b"status.json", script.body)
        style = await self.get("/static/dashboard.css")
        self.assertEqual(
            style.headers.getRawHeaders(b"content-type"), [b"text/css; charset=utf-8"]
        )
        self.assertIn(b"prefers-color-scheme:dark", style.body)
        self.assertNotIn(b"url(", style.body)

    async def test_ownConnection(self) -> None:
        """
        The connection asking is among the connections listed.
        """
        doc = json.loads((await self.get("/status.json")).body)
        self.assertIn(
            ("http", "127.0.0.1"),
            [(c["service"], c["peer"].rsplit(":", 1)[0]) for c in doc["connections"]],
        )

    async def events(self) -> tuple[Any, Any]:
        """
        Open C{/status/events}; return the response and a protocol that
        collects its body (C{.data}) and fires C{.first} at its first
        event.
        """
        from twisted.internet.defer import Deferred
        from twisted.internet.protocol import Protocol

        class Collect(Protocol):
            def __init__(self) -> None:
                self.data = b""
                self.first: Deferred[None] = Deferred()
                self.lost: Deferred[None] = Deferred()

            def dataReceived(self, data: bytes) -> None:
                self.data += data
                event = self.data.partition(b"event: status")[2]
                if b"\n\n" in event and not self.first.called:
                    self.first.callback(None)

            def connectionLost(self, reason: Any = None) -> None:
                self.lost.callback(None)

        response: Any = await self.agent.request(
            b"GET", (self.base + "/status/events").encode("ascii")
        )
        collect = Collect()
        response.deliverBody(collect)
        return response, collect

    async def test_events(self) -> None:
        """
        C{/status/events} is a stream of C{status} events, each the
        C{/status.json} document on one line, under the same
        Content-Security-Policy; stopping the service ends it.
        """
        response, collect = await self.events()
        self.assertEqual(
            response.headers.getRawHeaders(b"content-type"), [b"text/event-stream"]
        )
        self.assertTrue(response.headers.getRawHeaders(b"content-security-policy"))
        await collect.first
        self.assertTrue(collect.data.startswith(b"retry: 2000\n\nevent: status\n"))
        line = collect.data.split(b"\n")[3]
        self.assertTrue(line.startswith(b"data: {"))
        doc = json.loads(line[len(b"data: ") :])
        self.assertEqual(doc["schema"], 3)
        self.assertIn("tcp-echo", [s["name"] for s in doc["services"]])
        await self.service.stopService()
        await collect.lost
        self.service.running = False

    async def test_eventStreamLimit(self) -> None:
        """
        Over the limit of event streams, a client gets C{503} and the
        refusal is counted.
        """
        self.service.site.resource.events.limit = 1
        _, collect = await self.events()
        await collect.first
        refused = await self.get("/status/events")
        self.assertEqual(refused.code, 503)
        self.assertEqual(refused.headers.getRawHeaders(b"retry-after"), [b"30"])
        self.assertEqual(
            self.metrics.value(
                "netdemo_refused_total", service="http", reason="event-streams"
            ),
            1,
        )
        await self.service.stopService()
        await collect.lost
        self.service.running = False

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


class DashboardDocumentTests(SynchronousTestCase):
    """
    C{/status.json} carries everything the dashboard shows: human names,
    texts with units, rates, the headline, the history and the panels.
    """

    def setUp(self) -> None:
        from netdemo.limits import ConnectionLimits
        from netdemo.web import StatusResource

        self.clock = Clock()
        self.clock.advance(2000)
        self.metrics = _someMetrics()
        self.resource = StatusResource(
            self.metrics,
            ServerInfo("9.8.7", 1000.0, "lab-host", "0123456789ab"),
            self.clock,
            limits=ConnectionLimits(maxConnections=500, maxPerPeer=8),
            sampleInterval=5.0,
        )

    def test_rows(self) -> None:
        """
        Every series has a human name and its value with units; a counter
        has a rate once two samples were taken; each service says its
        refusals, C{none} when there are none.
        """
        self.resource.sampler.sample()
        self.metrics.inc("netdemo_connections_total", 10, service="tcp-echo")
        self.clock.advance(5)
        self.resource.sampler.sample()
        doc = self.resource.document()
        json.dumps(doc, allow_nan=False)
        services = {s["name"]: s for s in doc["services"]}
        self.assertEqual(list(services), ["http", "hub", "tcp-echo"])
        echo = {m["name"]: m for m in services["tcp-echo"]["metrics"]}
        received = echo["netdemo_received_bytes_total"]
        self.assertEqual((received["title"], received["text"]), ("received", "42 B"))
        self.assertEqual(received["rate_text"], "0 B/s")
        accepted = echo["netdemo_connections_total"]
        self.assertEqual(accepted["title"], "connections accepted")
        self.assertEqual((accepted["rate"], accepted["rate_text"]), (2.0, "2/s"))
        self.assertEqual(services["tcp-echo"]["refusals"]["text"], "2 max-per-peer")
        self.assertEqual(services["hub"]["refusals"]["text"], "1 slow-consumer")
        self.assertEqual(
            services["hub"]["metrics"][0]["title"], "refused (slow-consumer)"
        )
        # The page's own requests and renders are there from the start, all
        # zero: one line each.
        self.assertEqual(
            [c["title"] for c in services["http"]["collapsed"]],
            ["renders", "requests"],
        )

    def test_noRefusals(self) -> None:
        """
        A service that refused nothing says so.
        """
        metrics = MemoryMetrics()
        metrics.inc("netdemo_connections_total", service="x")
        doc = statusDocument(metrics.samples(), INFO, now=1001)
        self.assertEqual(
            doc["services"][0]["refusals"],
            {"total": 0, "by_reason": {}, "text": "none"},
        )
        figures = {f["key"]: f for f in doc["headline"]}
        self.assertEqual(figures["refusals"]["text"], "none")

    def test_header(self) -> None:
        """
        The host name, instance id, version, limits and texts of the
        header.
        """
        doc = self.resource.document()
        self.assertEqual(
            {k: doc[k] for k in ("hostname", "instance", "version", "uptime_text")},
            {
                "hostname": "lab-host",
                "instance": "0123456789ab",
                "version": "9.8.7",
                "uptime_text": "16m 40s",
            },
        )
        self.assertEqual(doc["limits"], {"max_connections": 500, "max_per_peer": 8})
        page = renderStatusPage(doc)
        self.assertIn("lab-host", page)
        self.assertIn("instance 0123456789ab", page)

    def test_headline(self) -> None:
        """
        The headline figures, with units: rates once measured, totals,
        connections against their limit, refusals, CPU, memory and
        descriptors.
        """
        first = {f["key"]: f for f in self.resource.document()["headline"]}
        self.assertEqual(first["bytesIn"]["text"], "measuring\u2026")
        self.resource.sampler.sample()
        self.metrics.addCollector(
            lambda: [
                sampleOf(
                    "netdemo_received_bytes_total", 5 * 103731.2, service="tcp-echo"
                )
            ]
        )
        self.clock.advance(5)
        self.resource.sampler.sample()
        figures = {f["key"]: f for f in self.resource.document()["headline"]}
        self.assertEqual(
            [f["key"] for f in self.resource.document()["headline"]],
            ["connections", "bytesIn", "bytesOut", "refusals", "cpu", "rss", "fds"],
        )
        self.assertEqual(figures["bytesIn"]["text"], "101.3 KiB/s")
        self.assertEqual(figures["bytesIn"]["detail"], "506.5 KiB in total")
        self.assertEqual(figures["connections"]["text"], "0")
        self.assertEqual(
            figures["connections"]["detail"], "limit 500 per service, 8 per peer"
        )
        self.assertEqual(figures["refusals"]["text"], "3")
        self.assertRegex(figures["cpu"]["text"], r"^\d+(\.\d)? %$")
        self.assertRegex(figures["rss"]["text"], r"^\d+\.\d MiB$")
        self.assertRegex(figures["fds"]["text"], r"^\d[\d,]*$")

    def test_headlineServices(self) -> None:
        """
        Hub lines and datagrams are headline figures only while a hub or a
        UDP service reports them.
        """
        metrics = MemoryMetrics()
        metrics.inc("netdemo_pubsub_published_lines_total", 5, service="hub")
        metrics.inc("netdemo_datagrams_received_total", 7, service="udp-echo")
        doc = statusDocument(metrics.samples(), INFO, now=1001)
        figures = {f["key"]: f for f in doc["headline"]}
        self.assertEqual(figures["linesIn"]["detail"], "5 in total")
        self.assertEqual(figures["linesOut"]["detail"], "0 in total")
        self.assertEqual(figures["datagramsIn"]["detail"], "7 in total")
        self.assertEqual(figures["datagramsIn"]["text"], "measuring\u2026")

    def test_history(self) -> None:
        """
        The history holds one point per sample for every headline series,
        with its graph path and peak; the page draws each as inline SVG.
        """
        for i in range(3):
            self.metrics.inc("netdemo_connections_total", service="tcp-echo")
            self.metrics.set("netdemo_connections_current", i, service="tcp-echo")
            self.resource.sampler.sample()
            self.clock.advance(5)
        history = self.resource.document()["history"]
        self.assertEqual(history["interval"], 5.0)
        self.assertEqual(history["span"], 900.0)
        self.assertEqual(history["times"], [2000.0, 2005.0, 2010.0])
        series = {s["key"]: s for s in history["series"]}
        self.assertEqual(series["connections"]["values"], [0, 1, 2])
        self.assertEqual(series["connections"]["peak_text"], "2")
        self.assertEqual(
            series["connections"]["path"], "M178.0,40.0L179.0,20.0L180.0,0.0"
        )
        doc = self.resource.document()
        page = renderStatusPage(doc)
        self.assertIn(
            'd="M178.0,40.0L179.0,20.0L180.0,0.0" data-path="connections"', page
        )
        # A graph on each headline card that has a history.
        drawn = [f["key"] for f in doc["headline"] if f["key"] in series]
        self.assertEqual(
            drawn, ["connections", "bytesIn", "bytesOut", "refusals", "cpu"]
        )
        self.assertEqual(page.count("<svg "), len(drawn))
        # Made again only after a sample.
        first = self.resource.history()
        self.assertIs(self.resource.history(), first)
        self.resource.sampler.sample()
        self.assertEqual(len(self.resource.history()["times"]), 4)

    def test_processMetrics(self) -> None:
        """
        The top-level C{metrics} hold the process's CPU time, memory and
        descriptors, with units.
        """
        doc = self.resource.document()
        rows = {m["name"]: m for m in doc["metrics"]}
        self.assertIn("process_resident_memory_bytes", rows)
        self.assertEqual(
            rows["process_resident_memory_bytes"]["title"], "resident memory"
        )
        self.assertRegex(rows["process_resident_memory_bytes"]["text"], r"MiB$")
        self.assertRegex(rows["process_start_time_seconds"]["text"], r"Z$")
        self.assertEqual(rows["process_open_fds"]["kind"], "gauge")
        self.assertEqual(rows["process_cpu_seconds_total"]["kind"], "counter")

    def test_multicastPanel(self) -> None:
        """
        The multicast peers, one row each, with loss in per cent, jitter
        and RTT in ms, graded; the per-peer series are not repeated in the
        service's table.
        """
        metrics = MemoryMetrics()
        labels = {"service": "multicast", "peer": "lab-b/aa"}
        metrics.inc("netdemo_multicast_peer_received_total", 97, **labels)
        metrics.inc("netdemo_multicast_peer_lost_total", 3, **labels)
        metrics.set("netdemo_multicast_peer_jitter_seconds", 0.0, **labels)
        metrics.set("netdemo_multicast_peer_rtt_seconds", 0.0123, **labels)
        metrics.set("netdemo_multicast_peers", 1, service="multicast")
        metrics.set(
            "netdemo_multicast_peer_last_heard_timestamp_seconds", 998.5, **labels
        )
        metrics.set("netdemo_multicast_peer_info", 1, address="192.0.2.7", **labels)
        doc = statusDocument(metrics.samples(), INFO, now=1001)
        [peer] = doc["panels"]["multicast"]["peers"]
        self.assertEqual(
            (peer["address_text"], peer["last_heard_text"]), ("192.0.2.7", "2 s ago")
        )
        self.assertEqual(
            {k: peer[k] for k in ("peer", "loss_text", "jitter_text", "rtt_text")},
            {
                "peer": "lab-b/aa",
                "loss_text": "3 %",
                "jitter_text": "0 ms",
                "rtt_text": "12.3 ms",
            },
        )
        self.assertEqual((peer["loss_grade"], peer["rtt_grade"]), ("warn", "ok"))
        page = renderStatusPage(doc)
        self.assertIn('<tr data-peer="lab-b/aa">', page)
        self.assertIn('class="n grade-warn" data-field="loss_text">3 %<', page)
        self.assertNotIn("beacons lost (lab-b/aa)", page)
        self.assertIn('<td data-field="address_text">192.0.2.7</td>', page)
        self.assertIn(">peers heard<", page)

    def test_udpPeerPanel(self) -> None:
        """
        Each C{--udp-peer} target: probes sent, lost, loss in per cent and
        RTT min / avg / max in ms; C{not measured} before an answer.
        """
        metrics = MemoryMetrics()
        for outcome, count in (("sent", 200), ("received", 190), ("lost", 10)):
            metrics.inc(
                "netdemo_udp_peer_probes_total",
                count,
                service="udp-peer",
                peer="192.0.2.1:7",
                outcome=outcome,
            )
        for stat, value in (("min", 0.001), ("avg", 0.0021), ("max", 0.25)):
            metrics.set(
                "netdemo_udp_peer_rtt_seconds",
                value,
                service="udp-peer",
                peer="192.0.2.1:7",
                stat=stat,
            )
        metrics.inc(
            "netdemo_udp_peer_probes_total",
            3,
            service="udp-peer",
            peer="192.0.2.2:7",
            outcome="sent",
        )
        doc = statusDocument(metrics.samples(), INFO, now=1001)
        first, second = doc["panels"]["udp_peers"]
        self.assertEqual(
            {k: first[k] for k in ("peer", "sent_text", "loss_text", "rtt_text")},
            {
                "peer": "192.0.2.1:7",
                "sent_text": "200",
                "loss_text": "5 %",
                "rtt_text": "1.00 ms / 2.10 ms / 250 ms",
            },
        )
        self.assertEqual((first["loss_grade"], first["rtt_grade"]), ("bad", "ok"))
        self.assertEqual(second["rtt_text"], "not measured")
        self.assertIn(
            '<tr data-udp-peer="192.0.2.1:7"><td>192.0.2.1:7</td>',
            renderStatusPage(doc),
        )

    def test_collapsedZeros(self) -> None:
        """
        A metric whose series (by reason) are all zero is one line on the
        page, C{commands refused: none}; once one is not zero, every series
        is a row again.
        """
        metrics = MemoryMetrics()
        for reason in ("bad-nick", "bad-topic", "usage"):
            metrics.inc(
                "netdemo_pubsub_command_errors_total", 0, service="hub", reason=reason
            )
        metrics.inc("netdemo_connections_total", 0, service="hub")
        doc = statusDocument(metrics.samples(), INFO, now=1001)
        [hub] = doc["services"]
        self.assertEqual(
            hub["collapsed"],
            [
                {
                    "name": "netdemo_pubsub_command_errors_total",
                    "title": "commands refused",
                    "text": "none",
                }
            ],
        )
        self.assertEqual(
            [(m["name"], m["shown"]) for m in hub["metrics"]],
            [("netdemo_connections_total", True)]
            + [("netdemo_pubsub_command_errors_total", False)] * 3,
        )
        page = renderStatusPage(doc)
        self.assertIn('<tr><td>commands refused</td><td class="n">none</td>', page)
        self.assertNotIn("commands refused (usage)", page)
        self.assertIn(">connections accepted<", page)
        metrics.inc(
            "netdemo_pubsub_command_errors_total", service="hub", reason="usage"
        )
        doc = statusDocument(metrics.samples(), INFO, now=1002)
        self.assertEqual(doc["services"][0]["collapsed"], [])
        self.assertIn("commands refused (usage)", renderStatusPage(doc))

    def test_backplanePanel(self) -> None:
        """
        The backplane's state, queue and drops.
        """
        metrics = MemoryMetrics()
        metrics.set("netdemo_backplane_up", 0, service="backplane")
        metrics.set("netdemo_backplane_queued_bytes", 2048, service="backplane")
        metrics.inc(
            "netdemo_backplane_dropped_total", 4, service="backplane", reason="down"
        )
        doc = statusDocument(metrics.samples(), INFO, now=1001)
        self.assertEqual(
            doc["panels"]["backplane"],
            {
                "state": "down",
                "queued_bytes": 2048,
                "queued_text": "2.0 KiB",
                "gaps": 0,
                "gaps_text": "none",
                "dropped": 4,
                "dropped_text": "4 down",
            },
        )
        self.assertIn(
            'class="n state-down" data-panel="backplane.state"', renderStatusPage(doc)
        )


class SamplerTests(SynchronousTestCase):
    """
    L{netdemo.web.Sampler} fills the history on the reactor's clock.
    """

    def test_loop(self) -> None:
        """
        Started, it samples at once and every interval; stopped, it leaves
        nothing scheduled; the history keeps at most span / interval
        points.
        """
        from netdemo.web import ProcessMetrics, Sampler

        clock = Clock()
        metrics = MemoryMetrics()
        sampler = Sampler(metrics, clock, ProcessMetrics(), interval=5.0, span=60.0)
        sampler.start()
        self.assertEqual(len(sampler.ring.times), 1)
        for _ in range(20):
            metrics.inc("netdemo_received_bytes_total", 500, service="x")
            clock.advance(5)
        self.assertEqual(len(sampler.ring.times), 12)
        self.assertEqual(sampler.ring.latest("bytesIn"), 100.0)
        self.assertEqual(
            sampler.ring.rates['netdemo_received_bytes_total{service="x"}'], 100.0
        )
        sampler.stop()
        self.assertEqual(clock.getDelayedCalls(), [])
        sampler.stop()

    def test_service(self) -> None:
        """
        The HTTP service samples while it runs.
        """
        from twisted.internet.testing import MemoryReactorClock

        memory = MemoryReactorClock()
        service = buildHTTPService(["tcp:0"], MemoryMetrics(), INFO, memory)
        service.startService()
        sampler = service.site.resource.sampler
        self.assertEqual(len(sampler.ring.times), 1)
        memory.advance(5)
        self.assertEqual(len(sampler.ring.times), 2)
        service.stopService()
        memory.advance(5)
        self.assertEqual(len(sampler.ring.times), 2)


class _Connection:
    """
    A connection as L{topConnections} sees it.
    """

    transport = None

    def __init__(self, peer: str, bytesIn: int, written: int, startedAt: float):
        from twisted.internet.address import IPv4Address

        self.peer = IPv4Address("TCP", peer, 4000)
        self.bytesIn = bytesIn
        self.written = written
        self.startedAt = startedAt


class _Factory:
    """
    A stream service's factory as L{topConnections} sees it.
    """

    writtenAttribute = "written"

    def __init__(self, name: str, *connections: _Connection) -> None:
        self.serviceName = name
        self.connections = dict.fromkeys(connections)


class TopConnectionsTests(SynchronousTestCase):
    """
    L{netdemo.web.topConnections} lists the busiest connections.
    """

    def test_top(self) -> None:
        """
        The connections with the most bytes in and out over every service,
        most first, at most C{count}, with their age and bytes in units.
        """
        from netdemo.web import topConnections

        echo = _Factory(
            "tcp-echo",
            _Connection("10.0.0.1", 100, 100, 990.0),
            _Connection("10.0.0.2", 5000, 0, 900.0),
            _Connection("10.0.0.3", 1, 1, 999.0),
        )
        hub = _Factory("hub", _Connection("10.0.0.4", 2048, 2048, 0.0))
        rows = topConnections([echo, hub], now=1000.0, count=3)  # type: ignore[list-item]
        self.assertEqual(
            [(r["service"], r["peer"]) for r in rows],
            [
                ("tcp-echo", "10.0.0.2:4000"),
                ("hub", "10.0.0.4:4000"),
                ("tcp-echo", "10.0.0.1:4000"),
            ],
        )
        self.assertEqual(
            {
                k: rows[1][k]
                for k in ("age_text", "bytes_in_text", "bytes_out_text", "pending_text")
            },
            {
                "age_text": "16m 40s",
                "bytes_in_text": "2.0 KiB",
                "bytes_out_text": "2.0 KiB",
                "pending_text": "0 B",
            },
        )
        self.assertEqual(topConnections([], now=1.0), [])

    def test_page(self) -> None:
        """
        The page lists them in a table.
        """
        doc = statusDocument(
            [],
            INFO,
            now=1001,
            connections=[
                {
                    "service": "tcp-echo",
                    "peer": "10.0.0.2:4000",
                    "age_text": "1 s",
                    "bytes_in_text": "<5 B>",
                    "bytes_out_text": "0 B",
                    "pending_text": "0 B",
                }
            ],
        )
        page = renderStatusPage(doc)
        self.assertIn(
            "<tr><td>tcp-echo</td><td>10.0.0.2:4000</td><td>1 s</td>"
            '<td class="n">&lt;5 B&gt;</td>',
            page,
        )

    def test_siblings(self) -> None:
        """
        Started next to other stream services, the HTTP service lists
        their connections and its own.
        """
        from twisted.application.service import MultiService
        from twisted.internet.testing import MemoryReactorClock

        from netdemo.echo import buildEchoService
        from netdemo.limits import ConnectionLimits

        memory = MemoryReactorClock()
        metrics = MemoryMetrics()
        top = MultiService()
        echo = buildEchoService(["tcp:0"], ConnectionLimits(), metrics, memory)
        echo.setServiceParent(top)
        http = buildHTTPService(["tcp:0"], metrics, INFO, memory)
        http.setServiceParent(top)
        top.startService()
        self.addCleanup(top.stopService)
        self.assertEqual(http.site.resource.sources, [http.factory, echo.factory])


class _StreamChannel:
    """
    What L{EventStreams} uses of a request's channel.
    """

    def __init__(self) -> None:
        from twisted.internet.testing import StringTransport

        self.transport = StringTransport()
        self.aborted = False
        self.transport.abortConnection = self.abort  # type: ignore[method-assign]
        self.watcher = type(
            "Watcher", (), {"written": 0, "streamed": 0, "peer": None}
        )()

    def abort(self) -> None:
        self.aborted = True


class _StreamRequest:
    """
    What L{EventStreams} uses of a request.
    """

    def __init__(self) -> None:
        from twisted.internet.defer import Deferred

        self.channel: Any = _StreamChannel()
        self.headers: dict[bytes, bytes] = {}
        self.body = b""
        self.finished = Deferred[None]()
        self.done = False

    def setHeader(self, name: bytes, value: bytes) -> None:
        self.headers[name] = value

    def write(self, data: bytes) -> None:
        self.body += data

    def notifyFinish(self) -> Any:
        return self.finished

    def finish(self) -> None:
        self.done = True
        self.finished.callback(None)


class EventStreamsTests(SynchronousTestCase):
    """
    L{netdemo.web.EventStreams}: C{/status/events} on a clock.
    """

    def setUp(self) -> None:
        from netdemo.web import EventStreams

        self.clock = Clock()
        self.renders = 0
        self.refused: list[str] = []

        def render() -> bytes:
            self.renders += 1
            return b"event: status\ndata: {}\n\n"

        self.streams = EventStreams(
            self.clock,
            render,
            lambda reason, watcher: self.refused.append(reason),
            interval=2.0,
            limit=2,
        )

    def test_events(self) -> None:
        """
        A stream starts with its retry time and an event, then gets one
        event every interval, rendered once for all streams, with a
        heartbeat comment every fifth; its bytes are counted on the
        connection as they are written.
        """
        a, b = _StreamRequest(), _StreamRequest()
        self.assertTrue(self.streams.add(a))  # type: ignore[arg-type]
        self.assertTrue(self.streams.add(b))  # type: ignore[arg-type]
        self.assertEqual(a.headers[b"content-type"], b"text/event-stream")
        self.assertEqual(a.body, b"retry: 2000\n\nevent: status\ndata: {}\n\n")
        self.renders = 0
        self.clock.advance(2.0)
        self.assertEqual(self.renders, 1)
        self.assertEqual(a.body.count(b"event: status"), 2)
        self.assertEqual(b.body.count(b"event: status"), 2)
        self.clock.pump([2.0] * 4)
        self.assertEqual(a.body.count(b"event: status"), 6)
        self.assertEqual(a.body.count(b": heartbeat\n\n"), 1)
        self.assertEqual(a.channel.watcher.written, len(a.body))
        self.assertEqual(a.channel.watcher.streamed, len(a.body))

    def test_limit(self) -> None:
        """
        At most C{limit} streams; a closed one makes room; the timer stops
        once none is left.
        """
        a, b, c = _StreamRequest(), _StreamRequest(), _StreamRequest()
        self.assertTrue(self.streams.add(a))  # type: ignore[arg-type]
        self.assertTrue(self.streams.add(b))  # type: ignore[arg-type]
        self.assertFalse(self.streams.add(c))  # type: ignore[arg-type]
        self.assertEqual(c.body, b"")
        a.finished.errback(Exception("client gone"))
        self.assertTrue(self.streams.add(c))  # type: ignore[arg-type]
        b.finish()
        c.finish()
        self.clock.advance(2.0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_slowConsumer(self) -> None:
        """
        A stream whose client leaves too much unsent is closed and counted;
        the others go on.
        """
        from netdemo import web

        a, b = _StreamRequest(), _StreamRequest()
        self.streams.add(a)  # type: ignore[arg-type]
        self.streams.add(b)  # type: ignore[arg-type]
        slow = a.channel.transport
        self.patch(
            web,
            "unsentBytes",
            lambda t: web.EVENT_STREAM_BACKLOG + 1 if t is slow else 0,
        )
        self.clock.advance(2.0)
        self.assertTrue(a.channel.aborted)
        self.assertFalse(b.channel.aborted)
        self.assertEqual(self.refused, ["slow-consumer"])
        self.assertEqual(b.body.count(b"event: status"), 2)
        self.assertEqual(list(self.streams.clients), [b])

    def test_stop(self) -> None:
        """
        Stopping ends every stream and the timer.
        """
        a = _StreamRequest()
        self.streams.add(a)  # type: ignore[arg-type]
        self.streams.stop()
        self.assertTrue(a.done)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class PackageDataTests(SynchronousTestCase):
    """
    The page's script and style sheet are package data.
    """

    def test_wheel(self) -> None:
        """
        The wheel holds C{netdemo/static/dashboard.js} and
        C{dashboard.css}, the same bytes as the service serves.
        """
        import zipfile

        from netdemo.web import STATIC
        from tests.support import checkoutWheel

        with zipfile.ZipFile(checkoutWheel()) as wheel:
            for name in ("dashboard.js", "dashboard.css"):
                self.assertEqual(
                    wheel.read(f"netdemo/static/{name}"), STATIC[f"/static/{name}"][1]
                )
