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

What a client can make the service do is bounded:

  - it is a stream service (L{StatusFactory} is a L{LimitedFactory}):
    C{--max-connections}, C{--max-per-peer} and the descriptor reserve
    apply to it as to echo and the hub, refusals counted;
  - a request's head must be complete within C{--http-header-timeout}
    seconds of the connection's start (or of the first byte after a
    response), however slowly it trickles in; a kept-alive connection waits
    at most a minute for its next request (L{HTTPConnection});
  - a request that declares a body is answered C{413} (C{405} for a method
    other than GET and HEAD) as soon as its head is in, and the connection
    closed: no body is read, nothing is written to disk;
  - pipelined requests are answered at most 16 per reactor turn
    (L{netdemo.internals.WatchedHTTPChannel.requestsPerTurn}), and all
    connections together get L{REQUESTS_PER_TURN} answers per turn before
    each waits its turn in a queue (L{TurnBudget}): many scrapers cannot
    make one reactor turn long, whatever their number;
  - each representation (the page, C{/status.json}, C{/metrics} in each
    format) is rendered at most once every L{RENDER_INTERVAL} seconds and
    served from a cache in between (L{RenderCache}), so any number of
    scrapers costs at most a few renders a second.
"""

from __future__ import annotations

import html
import json
import math
import os
import resource
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from attrs import frozen
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry
from twisted.internet.interfaces import IReactorTime
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from netdemo.internals import WatchedHTTPChannel, directTransport, sendIfIdle
from netdemo.limits import ConnectionLimits, HTTPLimits
from netdemo.metrics import CATALOG, IMetrics, MetricSpec, Sample
from netdemo.stream import LimitedFactory, LimitedProtocol, StreamService

__all__ = [
    "RENDER_INTERVAL",
    "HTTPConnection",
    "HTTPService",
    "RenderCache",
    "ServerInfo",
    "StatusFactory",
    "buildHTTPService",
    "statusDocument",
]

SERVICE_NAME = "http"

#: Seconds a rendered page, C{/status.json} or C{/metrics} is served from
#: the cache before it is rendered again: at most two renders a second of
#: each, however many clients ask.
RENDER_INTERVAL = 0.5

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


def openDescriptors() -> int:
    """
    The number of open file descriptors of this process.

    Linux 6.2 and later report it as the size of C{/proc/self/fd} (a few
    microseconds); older kernels report 0 there, and the entries are
    counted instead, which costs milliseconds with tens of thousands of
    connections open (the render cache bounds how often that runs).
    """
    size = os.stat("/proc/self/fd").st_size
    if size > 0:
        return size
    return len(os.listdir("/proc/self/fd"))


class ProcessMetrics(Collector):
    """
    The standard C{process_*} metrics of C{prometheus_client}'s
    C{ProcessCollector} (same names, help and values), with the open
    descriptors counted by L{openDescriptors}: that collector lists
    C{/proc/self/fd}, 20 ms a scrape with 20,000 connections open.
    """

    def __init__(self) -> None:
        self._ticks = float(os.sysconf("SC_CLK_TCK"))
        self._pagesize = resource.getpagesize()
        self._bootTime = 0.0
        try:
            with open("/proc/stat", "rb") as stat:
                for line in stat:
                    if line.startswith(b"btime "):
                        self._bootTime = float(line.split()[1])
        except OSError:
            pass

    def collect(self) -> Iterable[Metric]:
        """
        Memory, CPU, start time and descriptors, from C{/proc/self}.
        """
        if not self._bootTime:
            return []
        result: list[Metric] = []
        try:
            with open("/proc/self/stat", "rb") as stat:
                parts = stat.read().split(b")")[-1].split()
        except OSError:
            return result
        ticks = self._ticks
        result += [
            GaugeMetricFamily(
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                value=float(parts[20]),
            ),
            GaugeMetricFamily(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                value=float(parts[21]) * self._pagesize,
            ),
            GaugeMetricFamily(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                value=float(parts[19]) / ticks + self._bootTime,
            ),
            CounterMetricFamily(
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
                value=(float(parts[11]) + float(parts[12])) / ticks,
            ),
        ]
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        result += [
            GaugeMetricFamily(
                "process_open_fds",
                "Number of open file descriptors.",
                value=openDescriptors(),
            ),
            GaugeMetricFamily(
                "process_max_fds",
                "Maximum number of open file descriptors.",
                value=float("inf") if soft == resource.RLIM_INFINITY else soft,
            ),
        ]
        return result


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


class RenderCache:
    """
    Rendered representations, each rendered again at most once every
    C{interval} seconds: a request in between gets the previous result.

    The keys are a fixed set (the pages and the exposition formats), so the
    cache is bounded.

    @ivar renders: Renders so far, by key.
    """

    def __init__(
        self,
        clock: IReactorTime,
        interval: float = RENDER_INTERVAL,
        rendered: Callable[[str], None] | None = None,
    ) -> None:
        """
        @param rendered: Called with the key after every render.
        """
        self.clock = clock
        self.interval = interval
        self.rendered = rendered
        self.renders: dict[str, int] = {}
        self._entries: dict[str, tuple[float, bytes]] = {}

    def get(self, key: str, render: Callable[[], bytes]) -> bytes:
        """
        The representation C{key}: cached if it was rendered less than
        C{interval} seconds ago, else C{render()}.
        """
        now = self.clock.seconds()
        entry = self._entries.get(key)
        if entry is not None and 0 <= now - entry[0] < self.interval:
            return entry[1]
        value = render()
        self._entries[key] = (now, value)
        self.renders[key] = self.renders.get(key, 0) + 1
        if self.rendered is not None:
            self.rendered(key)
        return value


class StatusResource(Resource):
    """
    The root of the HTTP service: dispatches the four pages, counts every
    request, and serves the rendered ones from a L{RenderCache}.
    """

    isLeaf = True

    def __init__(
        self,
        metrics: IMetrics,
        info: ServerInfo,
        clock: Any,
        serviceName: str = SERVICE_NAME,
        renderInterval: float = RENDER_INTERVAL,
    ) -> None:
        super().__init__()
        self.metrics = metrics
        self.info = info
        self.clock = clock
        self.serviceName = serviceName
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SamplesCollector(metrics, info))
        self.registry.register(ProcessMetrics())
        self.cache = RenderCache(clock, renderInterval, self._rendered)

    def _rendered(self, key: str) -> None:
        self.metrics.inc(
            "netdemo_http_renders_total", service=self.serviceName, path=key
        )

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
            return self.cache.get(
                path, lambda: renderStatusPage(self.document()).encode("utf-8")
            )
        if path == "/status.json":
            request.setHeader(b"content-type", b"application/json")
            return self.cache.get(
                path,
                lambda: json.dumps(self.document(), indent=1).encode("utf-8") + b"\n",
            )
        if path == "/healthz":
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"ok\n"
        if path == "/metrics":
            accept = request.getHeader(b"accept") or b""
            encoder, contentType = choose_encoder(accept.decode("latin-1"))
            request.setHeader(b"content-type", contentType.encode("ascii"))
            return self.cache.get(
                f"{path} {contentType}", lambda: encoder(self.registry)
            )
        request.setResponseCode(404)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"not found\n"


#: Requests answered per reactor turn by all HTTP connections together
#: before each answered connection waits for a later turn (L{TurnBudget}).
REQUESTS_PER_TURN = 4


class TurnBudget:
    """
    A number of HTTP answers per reactor turn, shared by every connection
    of a service, so that the work one turn does for HTTP does not grow
    with the number of clients asking at once.

    Each answered request spends one unit.  Within the turn's units, and
    while nobody is waiting, a connection goes on reading; otherwise it
    stops reading and joins a first-in, first-out queue, and each later
    turn lets C{perTurn} of the queue read again.  A client that sends its
    next request only after its answer (every scraper) is then answered
    once per round of the queue: twenty scrapers are served in turn, four
    a turn, instead of twenty in every turn while echo and hub clients
    wait behind them.

    A turn answers at most C{perTurn} requests of the connections it lets
    read again plus those of connections let go on in the turn before
    (fewer than C{perTurn}): less than twice C{perTurn}, and C{perTurn}
    while clients queue.  Only the connection's next request is delayed,
    never an answer already made; what waits is in the kernel's receive
    buffer, not in memory here.
    A new connection's first request is answered in the turn it arrives
    (listeners accept at most 32 connections a turn: see
    L{netdemo.internals.capAccepts}).

    @ivar used: Units spent in this turn.
    @ivar waiting: The resumptions of the connections waiting for a turn.
    """

    def __init__(self, clock: IReactorTime, perTurn: int = REQUESTS_PER_TURN) -> None:
        self.clock = clock
        self.perTurn = perTurn
        self.used = 0
        self.waiting: deque[Callable[[], None]] = deque()
        self._turn: Any = None

    def mayGoOn(self, resume: Callable[[], None]) -> bool:
        """
        A request was answered: spend a unit.

        @return: L{True} if the connection may go on reading in this turn;
            L{False} if it must wait, C{resume} being queued to let it
            read again.
        """
        self.used += 1
        if self._turn is None:
            self._turn = self.clock.callLater(0, self._nextTurn)
        if self.used < self.perTurn and not self.waiting:
            return True
        self.waiting.append(resume)
        return False

    def _nextTurn(self) -> None:
        """
        A new turn: the units are back; the first C{perTurn} waiting
        connections read again.
        """
        self._turn = None
        self.used = 0
        waiting = self.waiting
        for _ in range(min(self.perTurn, len(waiting))):
            waiting.popleft()()
        if waiting:
            self._turn = self.clock.callLater(0, self._nextTurn)

    def stop(self) -> None:
        """
        Forget the next turn (the service stops).
        """
        if self._turn is not None and self._turn.active():
            self._turn.cancel()
        self._turn = None
        self.waiting.clear()


class QuietSite(Site):
    """
    A L{Site} without an access log line per request: the status page polls
    every two seconds, and every request is counted in the metrics instead.
    """

    noisy = False
    displayTracebacks = False
    # HTTP/1.1 only (no HTTP/2), with the hooks the connection needs.
    protocol = WatchedHTTPChannel  # type: ignore[assignment]

    def log(self, request: http.Request) -> None:
        """
        Log nothing.
        """


def _response(status: bytes, body: bytes, *headers: bytes) -> bytes:
    """
    A whole HTTP/1.1 response that closes the connection.
    """
    head = [
        b"HTTP/1.1 " + status,
        b"content-type: text/plain; charset=utf-8",
        b"content-length: %d" % (len(body),),
        b"cache-control: no-store",
        b"connection: close",
        *headers,
    ]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


#: The answer to a request that declares a body on GET or HEAD.
TOO_LARGE = _response(b"413 Content Too Large", b"request bodies are not accepted\n")

#: The answer to a request that declares a body on another method.
NOT_ALLOWED = _response(
    b"405 Method Not Allowed", b"method not allowed\n", b"allow: GET, HEAD"
)

#: Sent (if the socket takes it at once) when a head is not complete in time.
TIMED_OUT = _response(b"408 Request Timeout", b"request head not complete in time\n")


class HTTPConnection(LimitedProtocol):
    """
    One HTTP connection: Twisted's HTTP/1.1 channel inside a connection of
    a stream service (limits, drain, byte counts), with one timer that
    bounds what a client may hold:

      - while a request's head is incomplete: the header deadline, from the
        connection's start or from the first byte after the previous
        response, not moved by later bytes; when it passes, the client gets
        a C{408} if its socket takes it at once, and the connection closes
        (counted and logged as C{header-timeout});
      - between requests on a kept-alive connection: the keep-alive timeout;
      - while closing: the drain deadline, then an abort.

    A request that declares a body is refused as soon as its head is in
    (L{bodyDeclared}).

    @ivar channel: The HTTP channel, writing to the same transport.
    @ivar written: Response body bytes written.
    """

    factory: StatusFactory
    channel: Any = None
    _timer: Any = None
    _idle = False
    _refused = False

    @property
    def bytesOut(self) -> int:
        """
        Response body bytes written (counted as each response is finished).
        """
        return self.written

    def connectionMade(self) -> None:
        channel = self.factory.site.buildProtocol(self.peer)
        channel.watcher = self
        self.channel = channel
        channel.makeConnection(self.transport)
        self._arm(self.factory.httpLimits.headerTimeout, self._headTimedOut)

    def _arm(self, seconds: float, expire: Callable[[], None]) -> None:
        """
        Run C{expire} in C{seconds}, instead of what was scheduled.
        """
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = self.factory.clock.callLater(seconds, expire)

    def dataReceived(self, data: bytes) -> None:
        self.idleTicks = 0
        self.bytesIn += len(data)
        if self._refused:
            return
        if self._idle:
            # The first byte of the next request starts its header deadline.
            self._idle = False
            self._arm(self.factory.httpLimits.headerTimeout, self._headTimedOut)
        channel = self.channel
        channel.newRead()
        channel.dataReceived(data)

    # The channel's watcher (netdemo.internals.WatchedHTTPChannel).

    def headReceived(self) -> None:
        """
        A request's head is complete: its deadline is met.
        """
        self._idle = False
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def bodyDeclared(self, method: bytes, length: int | None) -> bytes:
        """
        The request declares a body, which no page takes: refuse it before
        any of it is read.

        @return: The response: C{405} for a method other than GET and HEAD,
            else C{413}.
        """
        self._refused = True
        self.factory.refuse("request-body", self.peer)
        self._closing("request-body")
        return TOO_LARGE if method in (b"GET", b"HEAD") else NOT_ALLOWED

    def requestFinished(self, request: Any) -> None:
        """
        A response is finished: count it; wait for the next request.
        """
        self.written += request.sentLength
        self._idle = True
        self._arm(self.factory.httpLimits.keepAliveTimeout, self._keepAliveEnded)

    def mayGoOn(self, resume: Callable[[], None]) -> bool:
        """
        Whether the channel may read on in this turn (the service's
        L{TurnBudget}).
        """
        return self.factory.turns.mayGoOn(resume)

    # Timers.

    def _headTimedOut(self) -> None:
        self._timer = None
        self.factory.refuse("header-timeout", self.peer)
        direct = directTransport(self.transport)
        if direct is not None:
            sendIfIdle(direct, TIMED_OUT)
        self.closeGracefully("header-timeout")

    def _keepAliveEnded(self) -> None:
        self._timer = None
        self.closeGracefully("keep-alive-timeout")

    def _closing(self, reason: str) -> None:
        """
        The connection is closing: abort it if it is still open after the
        drain deadline (a peer that never reads).
        """
        if self.closeReason is None:
            self.closeReason = reason
        self._arm(self.factory.limits.drain or 1.0, self._abortNow)

    def _abortNow(self) -> None:
        self._timer = None
        self.transport.abortConnection()  # type: ignore[union-attr]

    def closeGracefully(self, reason: str) -> None:
        """
        Close once what is queued is sent; abort after the drain deadline.
        """
        self._refused = True
        self._closing(reason)
        self.channel.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self.channel.connectionLost(reason)
        super().connectionLost(reason)


class StatusFactory(LimitedFactory):
    """
    The HTTP service's factory: the limits of every stream service, and the
    L{Site} that answers the requests of each L{HTTPConnection}.

    Finished connections are not logged (the status page polls every two
    seconds); refusals are, as for every service.
    """

    protocol = HTTPConnection
    logClosed = False

    def __init__(
        self,
        serviceName: str,
        limits: ConnectionLimits,
        httpLimits: HTTPLimits,
        metrics: IMetrics,
        clock: IReactorTime,
        site: Site,
    ) -> None:
        super().__init__(serviceName, limits, metrics, clock)
        self.httpLimits = httpLimits
        self.site = site
        self.turns = TurnBudget(clock)

    def unsentNow(self) -> int:
        """
        Nothing: HTTP counts response bodies as they are written.
        """
        return 0

    def stopFactory(self) -> None:
        self.turns.stop()
        super().stopFactory()


class HTTPService(StreamService):
    """
    The HTTP status service: a stream service (see L{StreamService}) whose
    connections are answered by the status L{Site}.
    """

    factory: StatusFactory

    @property
    def site(self) -> Site:
        """
        The site answering the requests.
        """
        return self.factory.site


def buildHTTPService(
    descriptions: Iterable[str],
    metrics: IMetrics,
    info: ServerInfo,
    reactor: Any,
    limits: ConnectionLimits | None = None,
    httpLimits: HTTPLimits | None = None,
) -> HTTPService:
    """
    Build the HTTP status service.

    @param descriptions: Server endpoint descriptions (C{tcp:8080}, ...).
    @param metrics: What the pages show; the pages' own requests are
        counted there too.
    @param info: The version and start time shown on the page.
    @param reactor: The reactor to listen with; its C{seconds} is the
        clock of the page.
    @param limits: The connection limits, as for every stream service.
    @param httpLimits: The header deadline and keep-alive timeout.
    """
    site = QuietSite(
        StatusResource(metrics, info, reactor),
        parsePOSTFormSubmission=False,
        # The connection's own timers (HTTPConnection) replace Twisted's
        # idle timeout, which every byte resets.
        timeout=None,
        reactor=reactor,
    )
    factory = StatusFactory(
        SERVICE_NAME,
        limits or ConnectionLimits(),
        httpLimits or HTTPLimits(),
        metrics,
        reactor,
        site,
    )
    return HTTPService(SERVICE_NAME, factory, descriptions, reactor)
