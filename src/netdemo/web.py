# -*- test-case-name: tests.test_web -*-
"""
The HTTP status service: C{--http DESC}.

Four pages, all computed at request time from L{IMetrics.samples} (nothing
on the services' hot paths):

  - C{/}: an HTML status page with no external assets.  It is complete
    without JavaScript; with it, it polls C{/status.json} every two seconds
    and updates the numbers and the per-second rates in place;
  - C{/status.json}: the same data for programs (schema in
    C{docs/operations.md});
  - C{/healthz}: C{ok} while the reactor answers;
  - C{/metrics}: the Prometheus exposition format (or OpenMetrics, by
    C{Accept}), written by C{prometheus_client} from a custom collector that
    translates the samples: no second set of counters.

Services describe themselves to this page only through the metrics: every
series with a C{service} label belongs to that service, and the
C{netdemo_listener_info} series (1 while bound) are its listeners.  So a new
service appears here without this module knowing about it.

The page counts its own requests in C{netdemo_http_requests_total}.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from attrs import frozen
from prometheus_client.core import Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from netdemo.metrics import CATALOG, IMetrics, MetricSpec, Sample
from netdemo.stream import ListeningService

__all__ = [
    "HTTPService",
    "ServerInfo",
    "buildHTTPService",
    "statusDocument",
]

SERVICE_NAME = "http"

#: The version of the C{/status.json} layout; bumped on incompatible change.
STATUS_SCHEMA = 1

#: The paths counted by name; anything else is counted as C{other}.
PATHS = ("/", "/status.json", "/healthz", "/metrics")

LISTENER_METRIC = "netdemo_listener_info"


@frozen
class ServerInfo:
    """
    What the status page says about the daemon itself.

    @ivar version: The netdemo version.
    @ivar startedAt: When the daemon started, in seconds since the epoch.
    """

    version: str
    startedAt: float


def seriesKey(sample: Sample) -> str:
    """
    The Prometheus-style name of one series: C{name{k="v",...}}.
    """
    if not sample.labels:
        return sample.name
    inner = ",".join(f'{k}="{v}"' for k, v in sample.labels)
    return f"{sample.name}{{{inner}}}"


def _kind(catalog: Mapping[str, MetricSpec], name: str) -> str:
    spec = catalog.get(name)
    return spec.kind if spec is not None else "gauge"


def statusDocument(
    samples: Iterable[Sample],
    info: ServerInfo,
    now: float,
    catalog: Mapping[str, MetricSpec] = CATALOG,
) -> dict[str, Any]:
    """
    The C{/status.json} document (see C{docs/operations.md}).

    @param samples: Every current sample.
    @param now: The time, in seconds since the epoch.
    """
    services: dict[str, dict[str, Any]] = {}
    other: list[dict[str, Any]] = []
    for sample in sorted(samples, key=lambda s: (s.name, s.labels)):
        labels = sample.labelDict
        service = labels.pop("service", None)
        if service is None:
            target = other
        else:
            entry = services.setdefault(
                service, {"name": service, "listeners": [], "metrics": []}
            )
            if sample.name == LISTENER_METRIC:
                if sample.value:
                    entry["listeners"].append(labels.get("address", "?"))
                continue
            target = entry["metrics"]
        target.append(
            {
                "series": seriesKey(sample),
                "name": sample.name,
                "kind": _kind(catalog, sample.name),
                "labels": labels,
                # JSON has no NaN or infinity (an RTT not measured yet).
                "value": sample.value if math.isfinite(sample.value) else None,
            }
        )
    requests = sum(
        sample["value"]
        for sample in services.get(SERVICE_NAME, {}).get("metrics", [])
        if sample["name"] == "netdemo_http_requests_total"
    )
    return {
        "schema": STATUS_SCHEMA,
        "version": info.version,
        "time": now,
        "started": info.startedAt,
        "uptime": max(0.0, now - info.startedAt),
        "requests": requests,
        "services": [services[name] for name in sorted(services)],
        "metrics": other,
    }


class SamplesCollector(Collector):
    """
    A C{prometheus_client} collector that reads L{IMetrics.samples} when
    scraped, with kinds and help texts from the catalog.
    """

    def __init__(
        self,
        metrics: IMetrics,
        info: ServerInfo,
        catalog: Mapping[str, MetricSpec] = CATALOG,
    ) -> None:
        self.metrics = metrics
        self.info = info
        self.catalog = catalog

    def describe(self) -> Iterable[Metric]:
        """
        Nothing: the series are only known when collected.
        """
        return []

    def collect(self) -> Iterable[Metric]:
        """
        One family per catalog entry, with the current samples.
        """
        families: dict[str, Metric] = {}
        for name, spec in self.catalog.items():
            family = name
            if spec.kind == "counter" and name.endswith("_total"):
                family = name[: -len("_total")]
            families[name] = Metric(family, spec.help, spec.kind)
        for sample in self.metrics.samples():
            families[sample.name].add_sample(
                sample.name, sample.labelDict, sample.value
            )
        yield from families.values()
        build = Metric("netdemo_build_info", "The running netdemo version", "gauge")
        build.add_sample("netdemo_build_info", {"version": self.info.version}, 1)
        yield build
        started = Metric(
            "netdemo_start_time_seconds",
            "When the daemon started, in seconds since the epoch",
            "gauge",
        )
        started.add_sample("netdemo_start_time_seconds", {}, self.info.startedAt)
        yield started


def _format(value: float | None) -> str:
    if value is None:
        return "\u2013"
    if value == int(value):
        return str(int(value))
    return f"{value:.3f}"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    text = f"{hours}h {minutes:02d}m {seconds:02d}s"
    return f"{days}d {text}" if days else text


_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1d232a;background:#f6f7f9}
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:0 0 .3em}
.meta{color:#56606b;margin-bottom:1em}
.cards{display:flex;gap:1em;flex-wrap:wrap;margin-bottom:1em}
.card{background:#fff;border:1px solid #d9dee4;border-radius:6px;padding:.6em 1em}
.card b{display:block;font-size:1.5em}
section{background:#fff;border:1px solid #d9dee4;border-radius:6px;padding:.8em 1em;
margin-bottom:1em}
table{border-collapse:collapse;width:100%;table-layout:fixed}
th:nth-child(1){width:40%}th:nth-child(2){width:30%}
td,th{text-align:left;padding:.15em .6em;border-bottom:1px solid #eef0f3}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.listeners code{background:#eef2f6;padding:0 .3em;margin-right:.4em}
.labels{color:#56606b}.stale{color:#b3261e}
"""

_SCRIPT = """
(function(){
  var previous = null, period = 2000;
  function fmt(v){
    if(v === null) return '\u2013';
    return Number.isInteger(v) ? String(v) : v.toFixed(3);}
  function dur(s){s=Math.floor(s);var d=Math.floor(s/86400);s%=86400;
    var h=Math.floor(s/3600);s%=3600;var m=Math.floor(s/60);s%=60;
    var t=h+'h '+String(m).padStart(2,'0')+'m '+String(s).padStart(2,'0')+'s';
    return d?d+'d '+t:t;}
  function set(id, text){var e=document.getElementById(id);if(e)e.textContent=text;}
  function update(doc){
    var seen = {}, missing = false, inRate = 0, outRate = 0, open = 0;
    doc.services.forEach(function(svc){
      svc.metrics.forEach(function(m){
        seen[m.series] = m.value;
        var cell = document.querySelector('[data-series="'+CSS.escape(m.series)+'"]');
        if(!cell){missing = true;return;}
        cell.textContent = fmt(m.value);
        if(m.kind === 'counter'){
          var rate = '\\u2013';
          if(previous && m.series in previous.values && doc.time > previous.time
             && m.value !== null && previous.values[m.series] !== null){
            var r = (m.value - previous.values[m.series])/(doc.time - previous.time);
            rate = r.toFixed(1);
            if(m.name === 'netdemo_received_bytes_total') inRate += r;
            if(m.name === 'netdemo_sent_bytes_total') outRate += r;
          }
          var rc = document.querySelector('[data-rate="'+CSS.escape(m.series)+'"]');
          if(rc) rc.textContent = rate;
        }
        if(m.name === 'netdemo_connections_current') open += m.value;
      });
    });
    set('uptime', dur(doc.uptime));
    set('requests', fmt(doc.requests));
    set('open', fmt(open));
    if(previous){set('in-rate', inRate.toFixed(1));set('out-rate', outRate.toFixed(1));}
    set('updated', new Date(doc.time*1000).toISOString());
    document.getElementById('updated').className = '';
    previous = {time: doc.time, values: seen};
    if(missing) location.reload();
  }
  function poll(){
    fetch('status.json', {cache: 'no-store'}).then(function(r){return r.json();})
      .then(update).catch(function(){
        document.getElementById('updated').className = 'stale';})
      .finally(function(){setTimeout(poll, period);});
  }
  poll();
})();
"""


def renderStatusPage(doc: Mapping[str, Any]) -> str:
    """
    The HTML status page for a L{statusDocument}.
    """
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width">',
        # An empty icon, so that browsers do not ask for /favicon.ico.
        '<link rel="icon" href="data:,">',
        '<noscript><meta http-equiv="refresh" content="5"></noscript>',
        "<title>netdemo status</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>netdemo status</h1>",
        f'<div class="meta">version {e(doc["version"])} &middot; up '
        f'<span id="uptime">{_duration(doc["uptime"])}</span> &middot; updated '
        f'<span id="updated">{e(_isoTime(doc["time"]))}</span></div>',
        '<div class="cards">',
        f'<div class="card">open connections<b id="open">'
        f"{_format(_total(doc, 'netdemo_connections_current'))}</b></div>",
        '<div class="card">bytes in/s<b id="in-rate">&ndash;</b></div>',
        '<div class="card">bytes out/s<b id="out-rate">&ndash;</b></div>',
        f'<div class="card">requests to this page<b id="requests">'
        f"{_format(doc['requests'])}</b></div>",
        "</div>",
    ]
    for service in doc["services"]:
        name = e(service["name"])
        listeners = (
            "".join(f"<code>{e(a)}</code>" for a in service["listeners"])
            or "not listening"
        )
        parts += [
            f'<section id="service-{name}"><h2>{name}</h2>',
            f'<div class="listeners">listening on {listeners}</div>',
            "<table><tr><th>metric</th><th>labels</th>"
            '<th class="n">value</th><th class="n">per second</th></tr>',
        ]
        for m in service["metrics"]:
            series = e(m["series"], quote=True)
            labels = ", ".join(f"{k}={v}" for k, v in sorted(m["labels"].items()))
            rate = (
                f'<td class="n" data-rate="{series}">&ndash;</td>'
                if m["kind"] == "counter"
                else '<td class="n"></td>'
            )
            help = CATALOG[m["name"]].help if m["name"] in CATALOG else ""
            parts.append(
                f'<tr><td title="{e(help, quote=True)}">{e(m["name"])}</td>'
                f'<td class="labels">{e(labels)}</td>'
                f'<td class="n" data-series="{series}">{_format(m["value"])}</td>'
                f"{rate}</tr>"
            )
        parts.append("</table></section>")
    parts.append(f"<script>{_SCRIPT}</script></body></html>")
    return "\n".join(parts)


def _total(doc: Mapping[str, Any], name: str) -> float:
    return float(
        sum(
            m["value"]
            for service in doc["services"]
            for m in service["metrics"]
            if m["name"] == name and m["value"] is not None
        )
    )


def _isoTime(seconds: float) -> str:
    import datetime

    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class StatusResource(Resource):
    """
    The root of the HTTP service: dispatches the four pages and counts
    every request.
    """

    isLeaf = True

    def __init__(
        self,
        metrics: IMetrics,
        info: ServerInfo,
        clock: Any,
        serviceName: str = SERVICE_NAME,
    ) -> None:
        super().__init__()
        self.metrics = metrics
        self.info = info
        self.clock = clock
        self.serviceName = serviceName
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SamplesCollector(metrics, info))
        ProcessCollector(registry=self.registry)

    def document(self) -> dict[str, Any]:
        """
        The current L{statusDocument}.
        """
        return statusDocument(self.metrics.samples(), self.info, self.clock.seconds())

    def render(self, request: Request) -> bytes:
        path = request.path.decode("utf-8", "replace")
        counted = path if path in PATHS else "other"
        self.metrics.inc(
            "netdemo_http_requests_total", service=self.serviceName, path=counted
        )
        request.setHeader(b"cache-control", b"no-store")
        if request.method not in (b"GET", b"HEAD"):
            request.setResponseCode(405)
            request.setHeader(b"allow", b"GET, HEAD")
            return b"method not allowed\n"
        if path == "/":
            request.setHeader(b"content-type", b"text/html; charset=utf-8")
            return renderStatusPage(self.document()).encode("utf-8")
        if path == "/status.json":
            request.setHeader(b"content-type", b"application/json")
            return json.dumps(self.document(), indent=1).encode("utf-8") + b"\n"
        if path == "/healthz":
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"ok\n"
        if path == "/metrics":
            accept = request.getHeader(b"accept") or b""
            encoder, contentType = choose_encoder(accept.decode("latin-1"))
            request.setHeader(b"content-type", contentType.encode("ascii"))
            return encoder(self.registry)
        request.setResponseCode(404)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"not found\n"


class QuietSite(Site):
    """
    A L{Site} without an access log line per request: the status page polls
    every two seconds, and every request is counted in the metrics instead.
    """

    noisy = False
    displayTracebacks = False

    def log(self, request: http.Request) -> None:
        """
        Log nothing.
        """


class HTTPService(ListeningService):
    """
    The HTTP status service: one listener per endpoint description (see
    L{ListeningService}) serving the status L{Site}.
    """

    def __init__(
        self,
        name: str,
        site: Site,
        descriptions: Iterable[str],
        metrics: IMetrics,
        reactor: Any,
    ) -> None:
        super().__init__(name, site, descriptions, metrics, reactor)
        self.site = site


def buildHTTPService(
    descriptions: Iterable[str],
    metrics: IMetrics,
    info: ServerInfo,
    reactor: Any,
) -> HTTPService:
    """
    Build the HTTP status service.

    @param descriptions: Server endpoint descriptions (C{tcp:8080}, ...).
    @param metrics: What the pages show; the pages' own requests are
        counted there too.
    @param info: The version and start time shown on the page.
    @param reactor: The reactor to listen with; its C{seconds} is the
        clock of the page.
    """
    # Idle HTTP connections are closed after a minute (Twisted's default is
    # twelve hours).
    site = QuietSite(
        StatusResource(metrics, info, reactor),
        parsePOSTFormSubmission=False,
        timeout=60,
        reactor=reactor,
    )
    return HTTPService(SERVICE_NAME, site, descriptions, metrics, reactor)
