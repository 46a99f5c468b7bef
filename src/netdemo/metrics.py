# -*- test-case-name: tests.test_metrics -*-
"""
The metrics seam.

Services report to an L{IMetrics} provider and never to each other.  Two
kinds of reporting keep the hot paths lean:

  - I{events} that happen once per connection or per refusal are pushed with
    L{IMetrics.inc} and L{IMetrics.set};
  - I{totals} that change on every read (bytes, lines) stay in plain integer
    attributes of the protocols and are pulled at collection time by a
    collector registered with L{IMetrics.addCollector}.

L{MemoryMetrics} is the in-memory implementation used by the daemon and by
the tests; an exporter (Prometheus, the status page) reads
L{IMetrics.samples}.

Every metric name is declared in L{CATALOG} with its kind and help text, so an
exporter can describe it and a typo fails loudly instead of silently creating
a new series.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from attrs import frozen
from zope.interface import Interface, implementer

__all__ = [
    "CATALOG",
    "IMetrics",
    "MemoryMetrics",
    "MetricSpec",
    "Sample",
    "UnknownMetric",
]


@frozen
class MetricSpec:
    """
    The declaration of one metric.

    @ivar kind: C{"counter"} or C{"gauge"}.
    @ivar help: One line for the exporter's HELP text.
    @ivar labels: The label names every sample of this metric carries.
    """

    kind: str
    help: str
    labels: tuple[str, ...] = ()


#: Every metric netdemo reports.  Names follow Prometheus conventions:
#: counters end in C{_total}, byte counts say C{_bytes}.
CATALOG: dict[str, MetricSpec] = {
    "netdemo_connections_total": MetricSpec(
        "counter", "Connections accepted", ("service",)
    ),
    "netdemo_connections_current": MetricSpec(
        "gauge", "Connections open now", ("service",)
    ),
    "netdemo_refused_total": MetricSpec(
        "counter",
        "Connections or datagrams refused or closed by policy",
        ("service", "reason"),
    ),
    "netdemo_received_bytes_total": MetricSpec(
        "counter", "Payload bytes received from clients", ("service",)
    ),
    "netdemo_sent_bytes_total": MetricSpec(
        "counter", "Payload bytes sent to clients", ("service",)
    ),
    # How a service describes itself to the status page: one series per
    # bound listener, 1 while it listens and 0 once it stopped.
    "netdemo_listener_info": MetricSpec(
        "gauge",
        "Listening sockets of each service: 1 while bound, 0 once closed",
        ("service", "address"),
    ),
    "netdemo_http_requests_total": MetricSpec(
        "counter", "Requests to the status and metrics pages", ("service", "path")
    ),
    "netdemo_http_renders_total": MetricSpec(
        "counter",
        "Renders of the status page, /status.json and /metrics (each format); "
        "requests in between are served the cached result",
        ("service", "path"),
    ),
    "netdemo_http_hub_bad_messages_total": MetricSpec(
        "counter",
        "WebSocket messages to the hub refused: too-big (the connection is "
        "closed), lines (more than one line), json (not a valid object)",
        ("service", "reason"),
    ),
    "netdemo_http_hub_resumes_total": MetricSpec(
        "counter",
        "Hub event streams resumed with a Last-Event-ID (replayed from history)",
        ("service",),
    ),
    "netdemo_pubsub_published_lines_total": MetricSpec(
        "counter", "Lines published to the pub/sub hub", ("service",)
    ),
    "netdemo_pubsub_delivered_lines_total": MetricSpec(
        "counter", "Line deliveries to pub/sub subscribers", ("service",)
    ),
    "netdemo_pubsub_dropped_lines_total": MetricSpec(
        "counter",
        "Lines dropped for slow pub/sub subscribers (drop-oldest policy)",
        ("service",),
    ),
    "netdemo_pubsub_deferred_turns_total": MetricSpec(
        "counter",
        "Times a pub/sub client's input was left for a later reactor turn "
        "(it spent its per-turn budget, --turn-lines or --turn-time)",
        ("service",),
    ),
    "netdemo_pubsub_publish_throttled_total": MetricSpec(
        "counter",
        "Times the hub stopped reading from a pub/sub publisher that published "
        "faster than --publish-rate, until its bucket refilled, by user "
        "(anonymous for clients not logged in, and without --hub-auth)",
        ("service", "user"),
    ),
    "netdemo_pubsub_permission_denied_total": MetricSpec(
        "counter",
        "Pub/sub actions refused by the --hub-auth rights, by user (anonymous "
        "for clients not logged in) and action (publish, subscribe, nick, "
        "history, command)",
        ("service", "user", "action"),
    ),
    "netdemo_pubsub_login_failures_total": MetricSpec(
        "counter",
        "Failed pub/sub /login attempts (wrong name or secret, or too many "
        "from one address)",
        ("service",),
    ),
    "netdemo_accounts_reloads_total": MetricSpec(
        "counter",
        "Reloads of the --hub-auth file on SIGHUP: ok, or error (the previous "
        "accounts stay in use)",
        ("service", "result"),
    ),
    "netdemo_pubsub_presence_events_total": MetricSpec(
        "counter", "Pub/sub joins, leaves and nickname changes", ("service",)
    ),
    "netdemo_pubsub_presence_notices_total": MetricSpec(
        "counter",
        "Pub/sub presence notices sent, each to every subscriber of the default "
        "topic (several events in one --presence-interval make one)",
        ("service",),
    ),
    "netdemo_pubsub_command_errors_total": MetricSpec(
        "counter",
        "Pub/sub commands answered -ERR, by reason (bad-topic, reserved-nick, "
        "nick-taken, usage, unknown-command, ...)",
        ("service", "reason"),
    ),
    "netdemo_broadcast_relayed_chunks_total": MetricSpec(
        "counter",
        "Chunks (reads) the broadcast relay received and relayed to the other clients",
        ("service",),
    ),
    "netdemo_broadcast_delivered_chunks_total": MetricSpec(
        "counter", "Chunk deliveries to broadcast receivers", ("service",)
    ),
    "netdemo_broadcast_dropped_chunks_total": MetricSpec(
        "counter",
        "Chunks dropped for slow broadcast receivers (drop-oldest policy)",
        ("service",),
    ),
    "netdemo_broadcast_dropped_bytes_total": MetricSpec(
        "counter",
        "Bytes of the chunks dropped for slow broadcast receivers (drop-oldest policy)",
        ("service",),
    ),
    "netdemo_backplane_up": MetricSpec(
        "gauge",
        "1 while the backplane's Redis connections both work and Redis "
        "answers PING in time, else 0",
        ("service",),
    ),
    "netdemo_backplane_outages_total": MetricSpec(
        "counter", "Times the backplane lost Redis", ("service",)
    ),
    "netdemo_backplane_sent_lines_total": MetricSpec(
        "counter", "Lines published to the other hubs through Redis", ("service",)
    ),
    "netdemo_backplane_received_lines_total": MetricSpec(
        "counter", "Lines from other hubs delivered to this hub", ("service",)
    ),
    "netdemo_backplane_dropped_total": MetricSpec(
        "counter",
        "Backplane lines dropped: down, queue-full, error (outbound); "
        "duplicate, bad-message, too-long (inbound); too-large counts inbound "
        "messages refused whole",
        ("service", "reason"),
    ),
    "netdemo_backplane_gaps_total": MetricSpec(
        "counter",
        "Messages of other hubs that never arrived (skipped sequence numbers)",
        ("service",),
    ),
    "netdemo_backplane_queued_bytes": MetricSpec(
        "gauge",
        "Bytes waiting to be published to Redis, or published and not answered",
        ("service",),
    ),
    "netdemo_backplane_history_up": MetricSpec(
        "gauge",
        "1 while lines are numbered and stored by Redis (shared history), "
        "else 0 (Redis down, scripts refused)",
        ("service",),
    ),
    "netdemo_backplane_stream_lines_total": MetricSpec(
        "counter",
        "Lines numbered, stored in a Redis stream and published by the script",
        ("service",),
    ),
    "netdemo_backplane_local_lines_total": MetricSpec(
        "counter",
        "Lines the script could not number (Redis down, an error): delivered "
        "on this hub only, marked local",
        ("service",),
    ),
    "netdemo_backplane_script_errors_total": MetricSpec(
        "counter",
        "Shared history scripts that failed or were refused",
        ("service",),
    ),
    "netdemo_backplane_history_reads_total": MetricSpec(
        "counter", "Reads of the shared history (/history, /topics)", ("service",)
    ),
    "netdemo_backplane_history_read_timeouts_total": MetricSpec(
        "counter",
        "Reads of the shared history not answered within the ping timeout "
        "(answered from this hub's)",
        ("service",),
    ),
    "netdemo_backplane_epoch_changes_total": MetricSpec(
        "counter",
        "Times the shared history's epoch changed (Redis lost it)",
        ("service",),
    ),
    "netdemo_datagrams_received_total": MetricSpec(
        "counter", "Datagrams received", ("service",)
    ),
    "netdemo_datagrams_sent_total": MetricSpec(
        "counter", "Datagrams sent (replies, probes, beacons)", ("service",)
    ),
    "netdemo_multicast_peers": MetricSpec(
        "gauge", "Other netdemo instances heard on a multicast group", ("service",)
    ),
    "netdemo_multicast_peer_changes_total": MetricSpec(
        "counter",
        "Changes of the multicast peer table: joined, goodbye, expired, evicted "
        "(a new peer in a full table)",
        ("service", "change"),
    ),
    "netdemo_multicast_peer_received_total": MetricSpec(
        "counter", "Beacons received from one multicast peer", ("service", "peer")
    ),
    "netdemo_multicast_peer_lost_total": MetricSpec(
        "counter",
        "Beacons of one multicast peer never received (sequence gaps)",
        ("service", "peer"),
    ),
    "netdemo_multicast_peer_jitter_seconds": MetricSpec(
        "gauge",
        "Smoothed delay variation of one multicast peer's beacons (RFC 3550)",
        ("service", "peer"),
    ),
    "netdemo_multicast_peer_rtt_seconds": MetricSpec(
        "gauge",
        "Smoothed round-trip time of unicast probes to one multicast peer",
        ("service", "peer"),
    ),
    "netdemo_multicast_peer_rtt_probes_total": MetricSpec(
        "counter",
        "Unicast round-trip probes sent to one multicast peer",
        ("service", "peer"),
    ),
    "netdemo_multicast_peer_rtt_answers_total": MetricSpec(
        "counter",
        "Answers received to round-trip probes of one multicast peer",
        ("service", "peer"),
    ),
    "netdemo_multicast_peer_info": MetricSpec(
        "gauge",
        "1 for each multicast peer in the table, with the address it sends from",
        ("service", "peer", "address"),
    ),
    "netdemo_multicast_peer_last_heard_timestamp_seconds": MetricSpec(
        "gauge",
        "When a beacon of one multicast peer was last received, in seconds "
        "since the epoch",
        ("service", "peer"),
    ),
    "netdemo_udp_peer_probes_total": MetricSpec(
        "counter",
        "Connected-UDP probes by outcome (sent, received, lost, duplicate, "
        "reordered, refused)",
        ("service", "peer", "outcome"),
    ),
    "netdemo_udp_peer_rtt_seconds": MetricSpec(
        "gauge",
        "Connected-UDP probe round-trip time (stat: min, avg, max, mdev, last)",
        ("service", "peer", "stat"),
    ),
}


class UnknownMetric(KeyError):
    """
    A metric name that is not declared in L{CATALOG}.
    """


LabelKey = tuple[tuple[str, str], ...]


@frozen
class Sample:
    """
    One value of one metric, as an exporter sees it.
    """

    name: str
    labels: LabelKey
    value: float

    @property
    def labelDict(self) -> dict[str, str]:
        """
        The labels as a dictionary.
        """
        return dict(self.labels)


Collector = Callable[[], Iterable[Sample]]


class IMetrics(Interface):
    """
    Where services report what they do.
    """

    def inc(name: str, amount: float = 1, **labels: str) -> None:
        """
        Add C{amount} to the counter C{name} with C{labels}.

        @raise UnknownMetric: If C{name} is not in L{CATALOG}.
        """

    def set(name: str, value: float, **labels: str) -> None:
        """
        Set the gauge C{name} with C{labels} to C{value}.

        @raise UnknownMetric: If C{name} is not in L{CATALOG}.
        """

    def addCollector(collector: Collector) -> None:
        """
        Register a callable that returns L{Sample}s computed at collection
        time.  Counters it returns are added to pushed counters of the same
        name and labels.
        """

    def samples() -> list[Sample]:
        """
        Every current value: pushed counters and gauges plus what the
        collectors return now.
        """


def sampleOf(name: str, value: float, **labels: str) -> Sample:
    """
    Build a L{Sample} with its labels in a canonical order.
    """
    return Sample(name, tuple(sorted(labels.items())), value)


@implementer(IMetrics)
class MemoryMetrics:
    """
    Metrics kept in memory.

    @ivar catalog: The declared metrics.
    """

    def __init__(self, catalog: Mapping[str, MetricSpec] = CATALOG) -> None:
        self.catalog = catalog
        self._values: dict[tuple[str, LabelKey], float] = {}
        self._collectors: list[Collector] = []

    def _key(self, name: str, labels: Mapping[str, str]) -> tuple[str, LabelKey]:
        if name not in self.catalog:
            raise UnknownMetric(name)
        return (name, tuple(sorted(labels.items())))

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        key = self._key(name, labels)
        self._values[key] = self._values.get(key, 0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        self._values[self._key(name, labels)] = value

    def addCollector(self, collector: Collector) -> None:
        self._collectors.append(collector)

    def samples(self) -> list[Sample]:
        merged = dict(self._values)
        for collector in self._collectors:
            for sample in collector():
                key = self._key(sample.name, dict(sample.labels))
                if self.catalog[sample.name].kind == "counter":
                    merged[key] = merged.get(key, 0) + sample.value
                else:
                    merged[key] = sample.value
        return [Sample(name, labels, v) for (name, labels), v in merged.items()]

    def value(self, name: str, **labels: str) -> float:
        """
        The current value of one series (0 when it was never reported).
        """
        key = self._key(name, labels)
        for sample in self.samples():
            if (sample.name, sample.labels) == key:
                return sample.value
        return 0
