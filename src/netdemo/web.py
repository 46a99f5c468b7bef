# -*- test-case-name: tests.test_web -*-
"""
The HTTP status service: C{--http DESC}.

The pages, all computed at request time from L{IMetrics.samples} (nothing
on the services' hot paths):

  - C{/}: an HTML dashboard with no external assets: headline figures with
    units and graphs of the last 15 minutes, multicast peers, the
    backplane, and every service's series under human names (the
    formatting is L{netdemo.dashboard}'s).  It is complete without
    JavaScript; with it (C{/static/dashboard.js}), it follows
    C{/status/events} (or polls C{/status.json} every two seconds when
    refused) and puts the new texts in place;
  - C{/status.json}: everything the page shows, for programs (schema in
    C{docs/operations.md}, L{STATUS_SCHEMA});
  - C{/healthz}: C{ok} while the reactor answers;
  - C{/metrics}: the Prometheus exposition format (or OpenMetrics, by
    C{Accept}), written by C{prometheus_client} from a custom collector that
    translates the samples: no second set of counters;
  - C{/status/events}: the C{/status.json} document as Server-Sent Events
    every L{EVENT_INTERVAL} seconds (L{EventStreams}: at most
    L{MAX_EVENT_STREAMS}, slow readers closed), which the page listens to
    instead of polling;
  - C{/static/dashboard.js} and C{/static/dashboard.css}, package data.

Rates and graphs come from a L{Sampler}: every L{SAMPLE_INTERVAL} seconds
it reads the samples once into a bounded L{RateRing}.  Every response
carries a strict Content-Security-Policy (L{CONTENT_SECURITY_POLICY}).

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

import heapq
import html
import json
import math
import os
import resource
from collections import deque
from collections.abc import Callable, Container, Iterable, Mapping
from importlib.resources import files
from operator import attrgetter
from typing import Any

from attrs import frozen
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from netdemo.dashboard import (
    BYTES,
    COUNT,
    HISTORY_SPAN,
    PERCENT,
    SAMPLE_INTERVAL,
    SECONDS,
    TITLES,
    RateRing,
    formatBytes,
    formatCount,
    formatDuration,
    formatPercent,
    formatRate,
    formatSeconds,
    formatValue,
    headlineTotals,
    sparkPath,
    title,
    unitOf,
)
from netdemo.internals import (
    WatchedHTTPChannel,
    directTransport,
    sendIfIdle,
    unsentBytes,
)
from netdemo.limits import ConnectionLimits, HTTPLimits
from netdemo.logs import formatAddress
from netdemo.metrics import CATALOG, IMetrics, MetricSpec, Sample
from netdemo.stream import (
    LimitedConnection,
    LimitedFactory,
    LimitedProtocol,
    StreamService,
)

__all__ = [
    "RENDER_INTERVAL",
    "HTTPConnection",
    "HTTPService",
    "RenderCache",
    "Sampler",
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

#: The version of the C{/status.json} layout (C{docs/operations.md}),
#: bumped on every change of it: 2 added the formatted texts, rates,
#: headline, history, panels, connections, collapsed rows and the process
#: metrics; 3 the hub's panel (C{panels.hub}).
STATUS_SCHEMA = 3

#: The paths counted by name; anything else is counted as C{other}.
PATHS = (
    "/",
    "/status.json",
    "/status/events",
    "/healthz",
    "/metrics",
    "/static/dashboard.js",
    "/static/dashboard.css",
    "/hub",
    "/hub/ws",
    "/hub/events",
    "/static/hub.js",
    "/static/hub.css",
)

LISTENER_METRIC = "netdemo_listener_info"


@frozen
class ServerInfo:
    """
    What the status page says about the daemon itself.

    @ivar version: The netdemo version.
    @ivar startedAt: When the daemon started, in seconds since the epoch.
    @ivar hostname: The host's name.
    @ivar instance: This run's instance id (the one multicast beacons
        carry); empty when there is none.
    """

    version: str
    startedAt: float
    hostname: str = ""
    instance: str = ""


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
    if spec is not None:
        return spec.kind
    return "counter" if name.endswith("_total") else "gauge"


def _row(
    name: str,
    series: str,
    labels: dict[str, str],
    value: float,
    kind: str,
    rates: Mapping[str, float],
) -> dict[str, Any]:
    """
    One series as C{/status.json} carries it: its raw value, and its human
    name, value and rate as the page shows them.
    """
    unit = unitOf(name)
    finite = value if math.isfinite(value) else None
    row: dict[str, Any] = {
        "series": series,
        "name": name,
        "kind": kind,
        "labels": labels,
        # JSON has no NaN or infinity (an RTT not measured yet).
        "value": finite,
        "title": title(name, labels),
        "unit": unit,
        "text": formatValue(finite, unit),
    }
    if kind == "counter":
        rate = rates.get(series)
        row["rate"] = rate
        row["rate_text"] = formatRate(rate, unit) if rate is not None else MEASURING
    return row


#: What the page shows for a rate before two samples were taken.
MEASURING = "measuring\u2026"

#: How a multicast peer's loss or RTT is graded on the page.
LOSS_WARN, LOSS_BAD = 1.0, 5.0
RTT_WARN, RTT_BAD = 0.05, 0.2


def _grade(value: float | None, warn: float, bad: float) -> str:
    if value is None:
        return "unknown"
    if value >= bad:
        return "bad"
    return "warn" if value >= warn else "ok"


def _peerPanel(rows: Iterable[Mapping[str, Any]], now: float) -> list[dict[str, Any]]:
    """
    The multicast peers, one entry each, from the per-peer series.
    """
    peers: dict[str, dict[str, Any]] = {}
    for row in rows:
        label = row["labels"].get("peer")
        if label is None or not row["name"].startswith("netdemo_multicast_peer_"):
            continue
        field = row["name"][len("netdemo_multicast_peer_") :]
        entry = peers.setdefault(label, {"peer": label})
        entry[field] = row["value"]
        if field == "info":
            entry["address"] = row["labels"].get("address")
    result = []
    for label in sorted(peers):
        peer = peers[label]
        heard = peer.get("last_heard_timestamp_seconds")
        ago = max(0.0, now - heard) if heard is not None else None
        received = peer.get("received_total") or 0
        lost = peer.get("lost_total") or 0
        heard = received + lost
        loss = 100.0 * lost / heard if heard else None
        jitter = peer.get("jitter_seconds")
        rtt = peer.get("rtt_seconds")
        result.append(
            {
                "peer": label,
                "address": peer.get("address"),
                "address_text": peer.get("address") or "\u2013",
                "last_heard": heard,
                "last_heard_text": f"{formatDuration(ago)} ago"
                if ago is not None
                else "\u2013",
                "received": received,
                "lost": lost,
                "loss_percent": loss,
                "loss_text": formatPercent(loss) if loss is not None else "\u2013",
                "loss_grade": _grade(loss, LOSS_WARN, LOSS_BAD),
                "jitter": jitter,
                "jitter_text": formatValue(jitter, SECONDS),
                "rtt": rtt,
                "rtt_text": formatValue(rtt, SECONDS)
                if rtt is not None
                else "not measured",
                "rtt_grade": _grade(rtt, RTT_WARN, RTT_BAD),
            }
        )
    return result


def _collapse(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """
    Mark the rows the page leaves out: a metric with several series (by
    reason, by path) that are all zero is one line, C{TITLE: none}, on the
    page, whose zeros are not news.  Every row gets C{shown}.

    @return: The collapsed metrics: C{name}, C{title}, C{text}.
    """
    byName: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        byName.setdefault(row["name"], []).append(row)
        row["shown"] = True
    collapsed = []
    for name, group in byName.items():
        if len(group) > 1 and all(row["value"] == 0 for row in group):
            for row in group:
                row["shown"] = False
            collapsed.append(
                {"name": name, "title": TITLES.get(name, name), "text": "none"}
            )
    return collapsed


def _udpPeerPanel(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """
    The C{--udp-peer} targets, one entry each: probes by outcome, loss and
    round-trip times.
    """
    peers: dict[str, dict[str, Any]] = {}
    for row in rows:
        peer = row["labels"].get("peer")
        if peer is None:
            continue
        if row["name"] == "netdemo_udp_peer_probes_total":
            entry = peers.setdefault(peer, {"peer": peer, "probes": {}, "rtt": {}})
            entry["probes"][row["labels"].get("outcome", "?")] = row["value"] or 0
        elif row["name"] == "netdemo_udp_peer_rtt_seconds":
            entry = peers.setdefault(peer, {"peer": peer, "probes": {}, "rtt": {}})
            entry["rtt"][row["labels"].get("stat", "?")] = row["value"]
    result = []
    for name in sorted(peers):
        entry = peers[name]
        probes, rtt = entry["probes"], entry["rtt"]
        sent = probes.get("sent", 0)
        lost = probes.get("lost", 0)
        judged = probes.get("received", 0) + lost
        loss = 100.0 * lost / judged if judged else None
        entry.update(
            {
                "sent_text": formatCount(sent),
                "lost_text": formatCount(lost),
                "loss_percent": loss,
                "loss_text": formatPercent(loss) if loss is not None else "\u2013",
                "loss_grade": _grade(loss, LOSS_WARN, LOSS_BAD),
                "rtt_text": " / ".join(
                    formatValue(rtt.get(stat), SECONDS)
                    for stat in ("min", "avg", "max")
                )
                if rtt
                else "not measured",
                "rtt_grade": _grade(rtt.get("avg"), RTT_WARN, RTT_BAD),
            }
        )
        result.append(entry)
    return result


def _refusals(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """
    A service's refusals by reason, and one line saying them (C{none}).
    """
    reasons = {
        row["labels"].get("reason", "?"): row["value"] or 0
        for row in rows
        if row["name"] == "netdemo_refused_total"
    }
    total = sum(reasons.values())
    if not total:
        text = "none"
    else:
        text = ", ".join(
            f"{formatCount(count)} {reason}"
            for reason, count in sorted(reasons.items(), key=lambda kv: -kv[1])
            if count
        )
    return {"total": total, "by_reason": reasons, "text": text}


def _backplane(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """
    The backplane's state, queue and drops.
    """
    up = None
    queued = 0.0
    gaps = 0.0
    drops: dict[str, float] = {}
    for row in rows:
        if row["name"] == "netdemo_backplane_up":
            up = row["value"]
        elif row["name"] == "netdemo_backplane_gaps_total":
            gaps = row["value"] or 0.0
        elif row["name"] == "netdemo_backplane_queued_bytes":
            queued = row["value"] or 0.0
        elif row["name"] == "netdemo_backplane_dropped_total":
            drops[row["labels"].get("reason", "?")] = row["value"] or 0
    dropped = sum(drops.values())
    return {
        "state": "unknown" if up is None else ("up" if up else "down"),
        "queued_bytes": queued,
        "queued_text": formatBytes(queued),
        "gaps": gaps,
        "gaps_text": "none" if not gaps else formatCount(gaps),
        "dropped": dropped,
        "dropped_text": "none"
        if not dropped
        else ", ".join(
            f"{formatCount(n)} {reason}" for reason, n in sorted(drops.items()) if n
        ),
    }


#: The headline figures shown only while a service reports the metric.
_SHOWN_WITH = {
    "linesIn": "netdemo_pubsub_published_lines_total",
    "linesOut": "netdemo_pubsub_published_lines_total",
    "datagramsIn": "netdemo_datagrams_received_total",
    "datagramsOut": "netdemo_datagrams_received_total",
}


def _headline(
    totals: Mapping[str, float],
    ring: RateRing | None,
    process: Mapping[str, float],
    limits: ConnectionLimits | None,
    reported: Container[str],
) -> list[dict[str, Any]]:
    """
    The headline figures: value, its text with units, and a detail line.
    Hub lines and datagrams are left out when no service reports them (no
    hub, no UDP service), where their zero would say nothing.
    """

    def latest(key: str) -> float | None:
        return ring.latest(key) if ring is not None else None

    def rate(key: str, unit: str) -> str:
        value = latest(key)
        return formatRate(value, unit) if value is not None else MEASURING

    figures: list[dict[str, Any]] = []

    def add(key: str, name: str, value: float | None, text: str, detail: str) -> None:
        figures.append(
            {"key": key, "title": name, "value": value, "text": text, "detail": detail}
        )

    open = totals.get("connections", 0.0)
    if limits is None or not limits.maxConnections:
        allowed = "no limit per service"
    else:
        allowed = f"limit {formatCount(limits.maxConnections)} per service"
    if limits is not None and limits.maxPerPeer:
        allowed += f", {formatCount(limits.maxPerPeer)} per peer"
    add("connections", "connections open", open, formatCount(open), allowed)
    for key, name, unit in (
        ("bytesIn", "received", BYTES),
        ("bytesOut", "sent", BYTES),
        ("linesIn", "hub lines published", COUNT),
        ("linesOut", "hub lines delivered", COUNT),
        ("datagramsIn", "datagrams received", COUNT),
        ("datagramsOut", "datagrams sent", COUNT),
    ):
        if _SHOWN_WITH.get(key, LISTENER_METRIC) not in reported:
            continue
        total = totals.get(key, 0.0)
        add(
            key,
            name,
            latest(key),
            rate(key, unit),
            f"{formatValue(total, unit)} in total",
        )
    refused = totals.get("refusals", 0.0)
    add(
        "refusals",
        "refusals",
        refused,
        "none" if not refused else formatCount(refused),
        rate("refusals", COUNT) if refused else "since start",
    )
    cpu = process.get("process_cpu_seconds_total")
    add(
        "cpu",
        "CPU (of one core)",
        latest("cpu"),
        rate("cpu", PERCENT),
        f"{formatSeconds(cpu)} in total" if cpu is not None else "",
    )
    rss = process.get("process_resident_memory_bytes")
    add(
        "rss",
        "resident memory",
        rss,
        formatValue(rss, BYTES),
        f"virtual {formatValue(process.get('process_virtual_memory_bytes'), BYTES)}",
    )
    fds = process.get("process_open_fds")
    most = process.get("process_max_fds")
    add(
        "fds",
        "open file descriptors",
        fds,
        formatValue(fds, COUNT),
        f"limit {formatValue(most, COUNT)}"
        if most is not None and math.isfinite(most)
        else "no limit",
    )
    return figures


def historyOf(ring: RateRing | None) -> dict[str, Any]:
    """
    The headline series over the last minutes, with their graphs: the
    C{history} of L{statusDocument}.
    """
    if ring is None:
        return {"interval": None, "span": 0, "times": [], "series": []}
    series = []
    for spec in ring.series:
        values = list(ring.values[spec.key])
        known = [v for v in values if v is not None]
        peak = max(known) if known else None
        series.append(
            {
                "key": spec.key,
                "title": spec.title,
                "unit": spec.unit,
                "rate": spec.rate,
                "values": values,
                "peak": peak,
                "peak_text": (formatRate if spec.rate else formatValue)(
                    peak, spec.unit
                ),
                "path": sparkPath(values, ring.size, GRAPH_WIDTH, GRAPH_HEIGHT),
            }
        )
    return {
        "interval": ring.interval,
        "span": ring.interval * ring.size,
        "times": list(ring.times),
        "series": series,
    }


#: The connections the page lists: the ones with the most traffic.
TOP_CONNECTIONS = 10


def topConnections(
    factories: Iterable[LimitedFactory], now: float, count: int = TOP_CONNECTIONS
) -> list[dict[str, Any]]:
    """
    The C{count} open connections with the most traffic (bytes received
    plus bytes written) over the services of C{factories}, most first: one
    pass over each service's connections (C{heapq.nlargest}, O(n log
    count)), then the transports of the C{count} chosen only.
    """
    best: list[tuple[int, LimitedConnection, LimitedFactory, int]] = []
    for factory in factories:
        written = attrgetter(factory.writtenAttribute)

        def traffic(p: LimitedConnection, written: Any = written) -> int:
            return int(p.bytesIn + written(p))

        for p in heapq.nlargest(count, factory.connections, key=traffic):
            best.append((traffic(p), p, factory, int(written(p))))
    best.sort(key=lambda entry: -entry[0])
    rows = []
    for _, p, factory, handed in best[:count]:
        pending = unsentBytes(p.transport)
        age = max(0.0, now - p.startedAt)
        rows.append(
            {
                "service": factory.serviceName,
                "peer": formatAddress(p.peer),
                "age": age,
                "age_text": formatDuration(age),
                "bytes_in": p.bytesIn,
                "bytes_in_text": formatBytes(p.bytesIn),
                "bytes_out": handed - pending,
                "bytes_out_text": formatBytes(handed - pending),
                "pending": pending,
                "pending_text": formatBytes(pending),
            }
        )
    return rows


#: The graphs' SVG view box.
GRAPH_WIDTH, GRAPH_HEIGHT = 180.0, 40.0


def statusDocument(
    samples: Iterable[Sample],
    info: ServerInfo,
    now: float,
    catalog: Mapping[str, MetricSpec] = CATALOG,
    *,
    ring: RateRing | None = None,
    process: Mapping[str, float] | None = None,
    limits: ConnectionLimits | None = None,
    connections: list[dict[str, Any]] | None = None,
    history: dict[str, Any] | None = None,
    hub: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """
    The C{/status.json} document (schema in C{docs/operations.md}):
    everything the status page shows.

    @param samples: Every current sample.
    @param now: The time, in seconds since the epoch.
    @param ring: The history of the headline rates, and the rate of each
        counter series; without it, no rates.
    @param process: The C{process_*} values (L{ProcessMetrics.values}).
    @param limits: The stream services' connection limits.
    @param connections: The L{topConnections}.
    @param history: The C{history} part, if already made from C{ring}.
    @param hub: The hub's panel (L{netdemo.webhub.HubWeb.panel}), when the
        daemon runs a hub.
    """
    process = process or {}
    rates = ring.rates if ring is not None else {}
    samples = list(samples)
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
            _row(
                sample.name,
                seriesKey(sample),
                labels,
                sample.value,
                _kind(catalog, sample.name),
                rates,
            )
        )
    for name in sorted(process):
        other.append(_row(name, name, {}, process[name], _kind(catalog, name), rates))
    for entry in services.values():
        entry["refusals"] = _refusals(entry["metrics"])
        entry["collapsed"] = _collapse(entry["metrics"])
    panels: dict[str, Any] = {}
    if "multicast" in services:
        panels["multicast"] = {
            "peers": _peerPanel(services["multicast"]["metrics"], now)
        }
    udpPeers = _udpPeerPanel(
        row for entry in services.values() for row in entry["metrics"]
    )
    if udpPeers:
        panels["udp_peers"] = udpPeers
    if "backplane" in services:
        panels["backplane"] = _backplane(services["backplane"]["metrics"])
    if hub is not None:
        panels["hub"] = hub
    requests = sum(
        sample["value"]
        for sample in services.get(SERVICE_NAME, {}).get("metrics", [])
        if sample["name"] == "netdemo_http_requests_total"
    )
    uptime = max(0.0, now - info.startedAt)
    return {
        "schema": STATUS_SCHEMA,
        "version": info.version,
        "hostname": info.hostname,
        "instance": info.instance,
        "time": now,
        "time_text": _isoTime(now),
        "started": info.startedAt,
        "uptime": uptime,
        "uptime_text": formatDuration(uptime),
        "requests": requests,
        "requests_text": formatCount(requests),
        "limits": None
        if limits is None
        else {
            "max_connections": limits.maxConnections,
            "max_per_peer": limits.maxPerPeer,
        },
        "headline": _headline(
            headlineTotals(samples),
            ring,
            process,
            limits,
            {s.name for s in samples} | {LISTENER_METRIC},
        ),
        "history": history if history is not None else historyOf(ring),
        "panels": panels,
        "connections": connections or [],
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


#: The help texts of the C{process_*} metrics (C{prometheus_client}'s).
_PROCESS_HELP = {
    "process_virtual_memory_bytes": "Virtual memory size in bytes.",
    "process_resident_memory_bytes": "Resident memory size in bytes.",
    "process_start_time_seconds": (
        "Start time of the process since unix epoch in seconds."
    ),
    "process_cpu_seconds_total": "Total user and system CPU time spent in seconds.",
    "process_open_fds": "Number of open file descriptors.",
    "process_max_fds": "Maximum number of open file descriptors.",
}


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

    def _stat(self) -> list[bytes] | None:
        """
        The fields of C{/proc/self/stat} after the command name.
        """
        if not self._bootTime:
            return None
        try:
            with open("/proc/self/stat", "rb") as stat:
                return stat.read().split(b")")[-1].split()
        except OSError:
            return None

    def cpuSeconds(self) -> float | None:
        """
        The user and system CPU time of the process so far (one read of
        C{/proc/self/stat}); L{None} where it cannot be read.
        """
        parts = self._stat()
        if parts is None:
            return None
        return (float(parts[11]) + float(parts[12])) / self._ticks

    def values(self) -> dict[str, float]:
        """
        The C{process_*} values by metric name (empty where C{/proc} cannot
        be read).
        """
        parts = self._stat()
        if parts is None:
            return {}
        ticks = self._ticks
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        return {
            "process_virtual_memory_bytes": float(parts[20]),
            "process_resident_memory_bytes": float(parts[21]) * self._pagesize,
            "process_start_time_seconds": float(parts[19]) / ticks + self._bootTime,
            "process_cpu_seconds_total": (float(parts[11]) + float(parts[12])) / ticks,
            "process_open_fds": float(openDescriptors()),
            "process_max_fds": float("inf")
            if soft == resource.RLIM_INFINITY
            else float(soft),
        }

    def collect(self) -> Iterable[Metric]:
        """
        Memory, CPU, start time and descriptors, from C{/proc/self}.
        """
        values = self.values()
        result: list[Metric] = []
        for name, help in _PROCESS_HELP.items():
            if name not in values:
                continue
            family = (
                CounterMetricFamily if name.endswith("_total") else GaugeMetricFamily
            )
            result.append(family(name, help, value=values[name]))
        return result


def _isoTime(seconds: float) -> str:
    import datetime

    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


#: The header every response of the service carries: scripts and styles
#: only from the daemon's own C{/static/} files, no inline script or style,
#: nothing from anywhere else, no framing.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
CSP_HEADER = CONTENT_SECURITY_POLICY.encode("ascii")


def _asset(name: str) -> bytes:
    return (files("netdemo") / "static" / name).read_bytes()


#: The page's script and style sheet: path, content type, body.
STATIC: dict[str, tuple[bytes, bytes]] = {
    "/static/dashboard.js": (
        b"text/javascript; charset=utf-8",
        _asset("dashboard.js"),
    ),
    "/static/dashboard.css": (b"text/css; charset=utf-8", _asset("dashboard.css")),
    "/static/hub.js": (b"text/javascript; charset=utf-8", _asset("hub.js")),
    "/static/hub.css": (b"text/css; charset=utf-8", _asset("hub.css")),
}


def _graph(series: Mapping[str, Any]) -> str:
    """
    One headline series as an inline SVG graph.
    """
    e = html.escape
    key = e(series["key"], quote=True)
    return (
        f'<svg class="graph" data-graph="{key}" viewBox="0 0 {GRAPH_WIDTH:g} '
        f'{GRAPH_HEIGHT:g}" preserveAspectRatio="none" role="img" '
        f'aria-label="{e(series["title"], quote=True)}, last 15 minutes">'
        f'<path d="{e(series["path"], quote=True)}" data-path="{key}" '
        'vector-effect="non-scaling-stroke"/></svg>'
        f'<span class="peak">peak <span data-peak="{key}">'
        f"{e(series['peak_text'])}</span></span>"
    )


def renderStatusPage(doc: Mapping[str, Any]) -> str:
    """
    The HTML status page for a L{statusDocument}: complete without
    JavaScript; C{/static/dashboard.js} updates it from C{/status.json}.
    """
    e = html.escape
    graphs = {s["key"]: s for s in doc["history"]["series"]}
    instance = f" &middot; instance {e(doc['instance'])}" if doc["instance"] else ""
    host = e(doc["hostname"]) if doc["hostname"] else "netdemo"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="color-scheme" content="light dark">',
        # An empty icon, so that browsers do not ask for /favicon.ico.
        '<link rel="icon" href="data:,">',
        '<link rel="stylesheet" href="static/dashboard.css">',
        '<noscript><meta http-equiv="refresh" content="5"></noscript>',
        "<title>netdemo status</title>",
        '<script src="static/dashboard.js" defer></script></head><body>',
        f"<header><h1>netdemo status <small>{host}</small></h1>",
        f'<div class="meta">version {e(doc["version"])}{instance} &middot; up '
        f'<span id="uptime">{e(doc["uptime_text"])}</span> &middot; updated '
        f'<span id="updated">{e(doc["time_text"])}</span> &middot; '
        f'<span id="requests">{e(doc["requests_text"])}</span> requests to this page'
        "</div>",
        '<nav><a href="metrics">/metrics</a> <a href="status.json">/status.json</a>'
        + (
            ' <a href="hub">the hub</a>'
            if any(s["name"] == "pubsub" for s in doc["services"])
            else ""
        )
        + "</nav></header>",
        '<div class="cards">',
    ]
    for figure in doc["headline"]:
        key = e(figure["key"], quote=True)
        graph = graphs.get(figure["key"])
        parts.append(
            f'<div class="card" id="card-{key}"><span class="title">'
            f"{e(figure['title'])}</span>"
            f'<b data-headline="{key}">{e(figure["text"])}</b>'
            f'<span class="detail" data-detail="{key}">{e(figure["detail"])}</span>'
            + (_graph(graph) if graph is not None else "")
            + "</div>"
        )
    parts.append("</div>")
    panels = doc["panels"]
    if "multicast" in panels:
        parts.append(_peersPanel(panels["multicast"]["peers"]))
    if "udp_peers" in panels:
        parts.append(_udpPeersPanel(panels["udp_peers"]))
    if "backplane" in panels:
        b = panels["backplane"]
        parts.append(
            '<section id="panel-backplane"><h2>backplane</h2><table>'
            f'<tr><td>Redis</td><td class="n state-{e(b["state"])}" '
            f'data-panel="backplane.state">{e(b["state"])}</td></tr>'
            f'<tr><td>waiting for Redis</td><td class="n" '
            f'data-panel="backplane.queued_text">{e(b["queued_text"])}</td></tr>'
            f'<tr><td>messages lost between hubs</td><td class="n" '
            f'data-panel="backplane.gaps_text">{e(b["gaps_text"])}</td></tr>'
            f'<tr><td>lines dropped</td><td class="n" '
            f'data-panel="backplane.dropped_text">{e(b["dropped_text"])}</td></tr>'
            "</table></section>"
        )
    if "hub" in panels:
        parts.append(_hubPanel(panels["hub"]))
    parts.append(_connectionsPanel(doc["connections"]))
    for service in doc["services"]:
        parts.append(_serviceSection(service))
    parts.append(_serviceSection({"name": "process", "metrics": doc["metrics"]}))
    parts.append("</body></html>")
    return "\n".join(parts)


#: The columns of the hub's topics table: field and heading.
HUB_TOPIC_COLUMNS = (
    ("topic", "topic"),
    ("subscribers", "subscribers"),
    ("rate_text", "lines/s"),
    ("history_text", "history"),
    ("last_seq_text", "last seq"),
)


def _hubPanel(hub: Mapping[str, Any]) -> str:
    """
    The hub: its busiest topics, who is connected.
    """
    e = html.escape
    numeric = ' class="n"'
    head = "".join(
        f"<th{numeric if i else ''}>{e(h)}</th>"
        for i, (_, h) in enumerate(HUB_TOPIC_COLUMNS)
    )
    parts = [
        '<section id="panel-hub"><h2>hub: topics, busiest first '
        f'(<span data-panel="hub.topic_count">{hub["topic_count"]}</span> with '
        "history)</h2>",
        f"<table><thead><tr>{head}</tr></thead><tbody data-hub-topics>",
    ]
    for t in hub["topics"]:
        parts.append(
            "<tr>"
            + "".join(
                f"<td{numeric if i else ''}>{e(str(t[k]))}</td>"
                for i, (k, _) in enumerate(HUB_TOPIC_COLUMNS)
            )
            + "</tr>"
        )
    present = ", ".join(hub["present"]) or "none"
    parts.append(
        "</tbody></table>"
        f'<p><span data-panel="hub.connected">{hub["connected"]}</span> connected; '
        f'nicknames: <span data-panel="hub.present">{e(present)}</span></p>'
        '<p><a href="hub">open the hub</a></p></section>'
    )
    return "".join(parts)


#: The columns of the connections table: field and heading.
CONNECTION_COLUMNS = (
    ("service", "service"),
    ("peer", "peer"),
    ("age_text", "age"),
    ("bytes_in_text", "received"),
    ("bytes_out_text", "sent"),
    ("pending_text", "pending"),
)


def _connectionsPanel(connections: Iterable[Mapping[str, Any]]) -> str:
    """
    The connections with the most traffic.
    """
    e = html.escape
    numeric = ' class="n"'
    head = "".join(
        f"<th{numeric if i > 2 else ''}>{e(h)}</th>"
        for i, (_, h) in enumerate(CONNECTION_COLUMNS)
    )
    rows = [
        '<section id="panel-connections">'
        f"<h2>connections, most traffic first (top {TOP_CONNECTIONS})</h2>",
        f"<table><thead><tr>{head}</tr></thead><tbody data-connections>",
    ]
    for c in connections:
        rows.append(
            "<tr>"
            + "".join(
                f"<td{numeric if i > 2 else ''}>{e(str(c[k]))}</td>"
                for i, (k, _) in enumerate(CONNECTION_COLUMNS)
            )
            + "</tr>"
        )
    rows.append("</tbody></table></section>")
    return "".join(rows)


def _udpPeersPanel(peers: Iterable[Mapping[str, Any]]) -> str:
    """
    The C{--udp-peer} targets table.
    """
    e = html.escape
    rows = [
        '<section id="panel-udp-peers"><h2>UDP peers</h2>',
        '<table><tr><th>peer</th><th class="n">probes sent</th>'
        '<th class="n">lost</th><th class="n">loss</th>'
        '<th class="n">RTT min / avg / max</th></tr>',
    ]
    for peer in peers:
        key = e(peer["peer"], quote=True)
        rows.append(
            f'<tr data-udp-peer="{key}"><td>{e(peer["peer"])}</td>'
            f'<td class="n" data-field="sent_text">{e(peer["sent_text"])}</td>'
            f'<td class="n" data-field="lost_text">{e(peer["lost_text"])}</td>'
            f'<td class="n grade-{e(peer["loss_grade"])}" data-field="loss_text">'
            f"{e(peer['loss_text'])}</td>"
            f'<td class="n grade-{e(peer["rtt_grade"])}" data-field="rtt_text">'
            f"{e(peer['rtt_text'])}</td></tr>"
        )
    rows.append("</table></section>")
    return "".join(rows)


def _peersPanel(peers: Iterable[Mapping[str, Any]]) -> str:
    """
    The multicast peers table.
    """
    e = html.escape
    rows = [
        '<section id="panel-multicast"><h2>multicast peers</h2>',
        '<table class="peers"><tr><th>peer</th><th>address</th>'
        '<th class="n">last heard</th><th class="n">beacons</th>'
        '<th class="n">lost</th><th class="n">loss</th><th class="n">jitter</th>'
        '<th class="n">RTT</th></tr>',
    ]
    count = 0
    for peer in peers:
        count += 1
        key = e(peer["peer"], quote=True)
        rows.append(
            f'<tr data-peer="{key}"><td>{e(peer["peer"])}</td>'
            f'<td data-field="address_text">{e(peer["address_text"])}</td>'
            f'<td class="n" data-field="last_heard_text">'
            f"{e(peer['last_heard_text'])}</td>"
            f'<td class="n" data-field="received">{formatCount(peer["received"])}</td>'
            f'<td class="n" data-field="lost">{formatCount(peer["lost"])}</td>'
            f'<td class="n grade-{e(peer["loss_grade"])}" data-field="loss_text">'
            f"{e(peer['loss_text'])}</td>"
            f'<td class="n" data-field="jitter_text">{e(peer["jitter_text"])}</td>'
            f'<td class="n grade-{e(peer["rtt_grade"])}" data-field="rtt_text">'
            f"{e(peer['rtt_text'])}</td></tr>"
        )
    if not count:
        rows.append('<tr><td colspan="8">no peers heard</td></tr>')
    rows.append("</table></section>")
    return "".join(rows)


def _serviceSection(service: Mapping[str, Any]) -> str:
    """
    One service's section: its listeners, its refusals, and a row per
    series with its human name, value and rate (a multicast peer's series
    are in the peers table instead).
    """
    e = html.escape
    name = e(service["name"])
    parts = [f'<section id="service-{name}"><h2>{name}</h2>']
    if "listeners" in service:
        listeners = "".join(f"<code>{e(a)}</code>" for a in service["listeners"])
        parts.append(
            f'<div class="listeners">listening on {listeners}</div>'
            if listeners
            else '<div class="listeners">not listening</div>'
        )
    if "refusals" in service:
        parts.append(
            f'<div class="refusals">refusals: <span data-refusals="{name}">'
            f"{e(service['refusals']['text'])}</span></div>"
        )
    parts.append(
        '<table><tr><th>what</th><th class="n">value</th>'
        '<th class="n">per second</th></tr>'
    )
    for c in service.get("collapsed", ()):
        parts.append(
            f'<tr><td>{e(c["title"])}</td><td class="n">{e(c["text"])}</td>'
            '<td class="n"></td></tr>'
        )
    for m in service["metrics"]:
        if not m.get("shown", True):
            continue
        if "peer" in m["labels"] and m["name"].startswith("netdemo_multicast_peer_"):
            continue
        series = e(m["series"], quote=True)
        rate = (
            f'<td class="n" data-rate="{series}">{e(m["rate_text"])}</td>'
            if m["kind"] == "counter"
            else '<td class="n"></td>'
        )
        help = CATALOG[m["name"]].help if m["name"] in CATALOG else m["name"]
        parts.append(
            f'<tr><td title="{e(help, quote=True)}">{e(m["title"])}</td>'
            f'<td class="n" data-series="{series}">{e(m["text"])}</td>'
            f"{rate}</tr>"
        )
    parts.append("</table></section>")
    return "\n".join(parts)


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


class Sampler:
    """
    Every L{SAMPLE_INTERVAL} seconds, the headline totals and every counter
    series into a L{RateRing}: the page's graphs and rates.

    A sample reads L{IMetrics.samples} once (what one C{/metrics} scrape
    reads: the services' own totals, no connection is looked at in Python)
    and the process's CPU time from C{/proc/self/stat}; it keeps one number
    per series, and the ring a fixed number of points: neither grows with
    the clients.
    """

    def __init__(
        self,
        metrics: IMetrics,
        clock: IReactorTime,
        process: ProcessMetrics,
        interval: float = SAMPLE_INTERVAL,
        span: float = HISTORY_SPAN,
        catalog: Mapping[str, MetricSpec] = CATALOG,
    ) -> None:
        self.metrics = metrics
        self.clock = clock
        self.process = process
        self.catalog = catalog
        self.interval = interval
        self.ring = RateRing(max(2, round(span / interval)), interval=interval)
        self._loop: LoopingCall | None = None

    def sample(self) -> None:
        """
        Take one sample now.
        """
        samples = self.metrics.samples()
        totals = headlineTotals(samples)
        counters = {
            seriesKey(s): s.value
            for s in samples
            if _kind(self.catalog, s.name) == "counter" and math.isfinite(s.value)
        }
        cpu = self.process.cpuSeconds()
        if cpu is not None:
            totals["cpuSeconds"] = cpu
            counters["process_cpu_seconds_total"] = cpu
        self.ring.record(self.clock.seconds(), totals, counters)

    def start(self) -> None:
        """
        Sample now and every L{interval} seconds.
        """
        if self._loop is None:
            self._loop = LoopingCall(self.sample)
            self._loop.clock = self.clock
            self._loop.start(self.interval, now=True)

    def stop(self) -> None:
        """
        Stop sampling (the history is kept).
        """
        if self._loop is not None:
            if self._loop.running:
                self._loop.stop()
            self._loop = None


#: Seconds between two events of C{/status/events} (the page's former poll
#: period).
EVENT_INTERVAL = 2.0

#: Event streams (C{/status/events}) open at once per HTTP service; one more
#: is answered C{503} and counted as C{event-streams}.
MAX_EVENT_STREAMS = 16

#: Bytes an event stream may leave unsent (its client not reading) when the
#: next event is due; more, and it is closed, counted as C{slow-consumer}.
EVENT_STREAM_BACKLOG = 256 * 1024

#: Every this many events, the stream also carries a comment line, a
#: heartbeat for proxies that look for one.
HEARTBEAT_EVERY = 5

#: The answer when L{MAX_EVENT_STREAMS} are open.
TOO_MANY_STREAMS = b"too many event streams; poll /status.json\n"


class EventStreams:
    """
    The C{/status/events} clients: Server-Sent Events, one C{status} event
    (the C{/status.json} document, on one line) every L{EVENT_INTERVAL}
    seconds to all of them.

    The event is rendered once for all clients, through the render cache;
    the timer runs only while a client is connected.  At most C{limit}
    streams are open; a client whose backlog exceeds L{EVENT_STREAM_BACKLOG}
    when an event is due is closed (it reconnects on its own, as every
    C{EventSource} does).  Each stream is an HTTP connection of the service,
    under its connection limits; the bytes written are counted as they go,
    so the idle sweep sees a stream that receives events as busy.
    """

    def __init__(
        self,
        clock: IReactorTime,
        render: Callable[[], bytes],
        refuse: Callable[[str, Any], None],
        interval: float = EVENT_INTERVAL,
        limit: int = MAX_EVENT_STREAMS,
    ) -> None:
        self.clock = clock
        self.render = render
        self.refuse = refuse
        self.interval = interval
        self.limit = limit
        self.clients: dict[Request, None] = {}
        self.sent = 0
        self._loop: LoopingCall | None = None

    def add(self, request: Request) -> bool:
        """
        Start a stream on C{request}; L{False} if the streams are at their
        limit.
        """
        if len(self.clients) >= self.limit:
            return False
        request.setHeader(b"content-type", b"text/event-stream")
        request.setHeader(b"x-accel-buffering", b"no")
        self.clients[request] = None
        request.notifyFinish().addBoth(lambda _: self.clients.pop(request, None))
        self._write(request, b"retry: %d\n\n" % (int(self.interval * 1000),))
        self._write(request, self.render())
        if self._loop is None:
            self._loop = LoopingCall(self._tick)
            self._loop.clock = self.clock
            self._loop.start(self.interval, now=False)
        return True

    def _write(self, request: Request, data: bytes) -> None:
        request.write(data)
        watcher = getattr(request.channel, "watcher", None)
        if watcher is not None:
            watcher.written += len(data)
            watcher.streamed += len(data)

    def _tick(self) -> None:
        """
        One event to every client; stop the timer when none is left.
        """
        if not self.clients:
            self.stop()
            return
        self.sent += 1
        event = self.render()
        if self.sent % HEARTBEAT_EVERY == 0:
            event = b": heartbeat\n\n" + event
        for request in list(self.clients):
            channel: Any = request.channel
            transport: Any = channel.transport if channel is not None else None
            if transport is None:
                self.clients.pop(request, None)
                continue
            if unsentBytes(directTransport(transport) or transport) > (
                EVENT_STREAM_BACKLOG
            ):
                self.clients.pop(request, None)
                self.refuse("slow-consumer", getattr(channel, "watcher", None))
                transport.abortConnection()
                continue
            self._write(request, event)

    def stop(self) -> None:
        """
        End every stream (the service stops) and the timer.
        """
        if self._loop is not None:
            if self._loop.running:
                self._loop.stop()
            self._loop = None
        for request in list(self.clients):
            self.clients.pop(request, None)
            if request.channel is not None:
                request.finish()


class StatusResource(Resource):
    """
    The root of the HTTP service: dispatches the pages, counts every
    request, and serves the rendered ones from a L{RenderCache}.  Every
    response carries L{CONTENT_SECURITY_POLICY}.
    """

    isLeaf = True

    def __init__(
        self,
        metrics: IMetrics,
        info: ServerInfo,
        clock: Any,
        serviceName: str = SERVICE_NAME,
        renderInterval: float = RENDER_INTERVAL,
        limits: ConnectionLimits | None = None,
        sampleInterval: float = SAMPLE_INTERVAL,
    ) -> None:
        super().__init__()
        self.metrics = metrics
        self.info = info
        self.clock = clock
        self.serviceName = serviceName
        self.limits = limits
        self.process = ProcessMetrics()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SamplesCollector(metrics, info))
        self.registry.register(self.process)
        self.cache = RenderCache(clock, renderInterval, self._rendered)
        # Every series the page's own requests make exists from the start,
        # so that the page it serves does not find a new one (and reload
        # itself) at its first event.
        for path in PATHS:
            metrics.inc(
                "netdemo_http_requests_total", 0, service=serviceName, path=path
            )
        for path in ("/", "/status.json", "/status/events"):
            metrics.inc("netdemo_http_renders_total", 0, service=serviceName, path=path)
        self.sampler = Sampler(metrics, clock, self.process, sampleInterval)
        #: The stream services whose connections the page lists.
        self.sources: list[LimitedFactory] = []
        #: Where a refusal is counted and logged (the service's factory).
        self.refuse: Callable[[str, Any], None] = self._countRefusal
        self.events = EventStreams(
            clock,
            lambda: self.cache.get("/status/events", self._event),
            lambda reason, watcher: self.refuse(reason, getattr(watcher, "peer", None)),
        )
        self._connections: tuple[float, list[dict[str, Any]]] | None = None
        self._history: tuple[Any, dict[str, Any]] | None = None
        #: The hub's paths (L{netdemo.webhub.HubWeb}), when there is a hub.
        self.hub: Any = None

    def _rendered(self, key: str) -> None:
        self.metrics.inc(
            "netdemo_http_renders_total", service=self.serviceName, path=key
        )

    def _countRefusal(self, reason: str, peer: Any) -> None:
        self.metrics.inc(
            "netdemo_refused_total", service=self.serviceName, reason=reason
        )

    def _event(self) -> bytes:
        """
        One C{status} event: the document on one line.
        """
        data = json.dumps(self.document(), separators=(",", ":"), allow_nan=False)
        return b"event: status\ndata: " + data.encode("utf-8") + b"\n\n"

    def connections(self) -> list[dict[str, Any]]:
        """
        The L{topConnections}: looked for at most once every render
        interval, for the page and C{/status.json} both.
        """
        now = self.clock.seconds()
        cached = self._connections
        if cached is None or not 0 <= now - cached[0] < self.cache.interval:
            cached = self._connections = (now, topConnections(self.sources, now))
        return cached[1]

    def history(self) -> dict[str, Any]:
        """
        The C{history} of the document: made again only after a sample.
        """
        times = self.sampler.ring.times
        key = (len(times), times[-1] if times else None)
        cached = self._history
        if cached is None or cached[0] != key:
            cached = self._history = (key, historyOf(self.sampler.ring))
        return cached[1]

    def document(self) -> dict[str, Any]:
        """
        The current L{statusDocument}.
        """
        return statusDocument(
            self.metrics.samples(),
            self.info,
            self.clock.seconds(),
            ring=self.sampler.ring,
            process=self.process.values(),
            limits=self.limits,
            connections=self.connections(),
            history=self.history(),
            hub=None if self.hub is None else self.hub.panel(self.clock.seconds()),
        )

    def render(self, request: Request) -> bytes:
        path = request.path.decode("utf-8", "replace")
        counted = path if path in PATHS else "other"
        self.metrics.inc(
            "netdemo_http_requests_total", service=self.serviceName, path=counted
        )
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"content-security-policy", CSP_HEADER)
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"referrer-policy", b"no-referrer")
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
                lambda: (
                    json.dumps(
                        self.document(), separators=(",", ":"), allow_nan=False
                    ).encode("utf-8")
                    + b"\n"
                ),
            )
        if path == "/status/events":
            if request.method == b"HEAD":
                request.setHeader(b"content-type", b"text/event-stream")
                return b""
            if self.events.add(request):
                return NOT_DONE_YET  # type: ignore[return-value]
            self.refuse("event-streams", request.getClientAddress())
            request.setResponseCode(503)
            request.setHeader(b"retry-after", b"30")
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return TOO_MANY_STREAMS
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
        if self.hub is not None and (path == "/hub" or path.startswith("/hub/")):
            answer: bytes = self.hub.render(request, path)
            return answer
        static = STATIC.get(path)
        if static is not None:
            request.setHeader(b"content-type", static[0])
            return static[1]
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
        b"content-security-policy: " + CSP_HEADER,
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
    #: Bytes of the current response written as they went (an event
    #: stream), already in C{written}.
    streamed = 0
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
        self.written += request.sentLength - self.streamed
        self.streamed = 0
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

    def startService(self) -> None:
        super().startService()
        resource = self.site.resource
        # The stream services run next to this one (and this one): their
        # connections are listed on the page.
        siblings = list(self.parent) if self.parent is not None else []
        resource.sources = [self.factory] + [
            service.factory
            for service in siblings
            if service is not self
            and isinstance(getattr(service, "factory", None), LimitedFactory)
        ]
        resource.refuse = self.factory.refuse
        if resource.hub is not None:
            resource.hub.refuse = self.factory.refuse
        resource.sampler.start()

    def stopService(self) -> Deferred[None]:
        self.site.resource.sampler.stop()
        self.site.resource.events.stop()
        if self.site.resource.hub is not None:
            self.site.resource.hub.stop()
        return super().stopService()

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
    hub: Any = None,
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
    @param httpLimits: The header deadline and keep-alive timeout, the hub
        streams' limit and origins.
    @param hub: The hub (an L{netdemo.hubgate.IHubGate}) to serve at
        C{/hub}, if any.
    """
    httpLimits = httpLimits or HTTPLimits()
    resource = StatusResource(metrics, info, reactor, limits=limits)
    if hub is not None:
        from netdemo.webhub import HubWeb

        resource.hub = HubWeb(
            hub,
            metrics,
            reactor,
            httpLimits.origins,
            httpLimits.hubStreams,
            SERVICE_NAME,
            _asset("hub.html"),
        )
    site = QuietSite(
        resource,
        parsePOSTFormSubmission=False,
        # The connection's own timers (HTTPConnection) replace Twisted's
        # idle timeout, which every byte resets.
        timeout=None,
        reactor=reactor,
    )
    factory = StatusFactory(
        SERVICE_NAME,
        limits or ConnectionLimits(),
        httpLimits,
        metrics,
        reactor,
        site,
    )
    return HTTPService(SERVICE_NAME, factory, descriptions, reactor)
