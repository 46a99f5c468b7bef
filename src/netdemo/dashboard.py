# -*- test-case-name: tests.test_dashboard -*-
"""
The status page as a dashboard: what it shows, in pure functions.

  - numbers with units and grouping (L{formatBytes}, L{formatCount},
    L{formatSeconds}, L{formatRate}, ...): byte quantities in IEC binary
    units (C{101.3 KiB/s}, C{8.4 MiB}), times in the unit that keeps three
    significant digits (C{420 µs}, C{12.3 ms}, C{1.25 s}), counts grouped by
    thousands (C{12,345});
  - human names for the metrics (L{title}), never Prometheus names;
  - the headline totals of a set of samples (L{headlineTotals}): sums over
    services of the totals the metrics already keep, nothing per
    connection;
  - L{RateRing}: the bounded in-process history of the headline rates
    (the last 15 minutes, one point every few seconds), and the per-series
    rates of the latest interval;
  - L{sparkPath}: one series drawn as an SVG path.

Nothing here reads a clock, a socket or a file: C{netdemo.web} feeds it.
"""

from __future__ import annotations

import datetime
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence

from attrs import frozen

from netdemo.metrics import Sample

__all__ = [
    "HEADLINE_SERIES",
    "HISTORY_SPAN",
    "SAMPLE_INTERVAL",
    "RateRing",
    "TITLES",
    "SeriesSpec",
    "formatTimestamp",
    "formatBytes",
    "formatCount",
    "formatDuration",
    "formatPercent",
    "formatRate",
    "formatSeconds",
    "formatValue",
    "headlineTotals",
    "sparkPath",
    "title",
    "unitOf",
]

#: Seconds between two samples of the headline rates.
SAMPLE_INTERVAL = 5.0

#: Seconds of history kept: the last 15 minutes.
HISTORY_SPAN = 900.0

_BINARY = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def formatCount(value: float) -> str:
    """
    A count, grouped by thousands: C{12,345}; a fraction with one decimal
    (C{2.5}), or two below 1 (C{0.25}) so a slow rate is not shown as 0.
    """
    if not math.isfinite(value):
        return "\u2013"
    if value == int(value):
        return f"{int(value):,}"
    if abs(value) < 1:
        return f"{value:,.2f}"
    return f"{value:,.1f}"


def formatBytes(value: float) -> str:
    """
    A number of bytes in IEC binary units: C{512 B}, C{101.3 KiB},
    C{8.4 MiB}; one decimal once scaled, and never C{1024.0} of a unit.
    """
    if not math.isfinite(value):
        return "\u2013"
    sign = "-" if value < 0 else ""
    value = abs(value)
    if value < 1024:
        text = f"{value:.0f}" if value == int(value) else f"{value:.1f}"
        return f"{sign}{text} B"
    scaled = value
    for unit in _BINARY[1:]:
        scaled /= 1024
        if round(scaled, 1) < 1024 or unit == _BINARY[-1]:
            return f"{sign}{scaled:.1f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def _threeDigits(value: float) -> str:
    """
    C{value} (between 1 and 1000) with three significant digits.
    """
    if value >= 99.95:
        return f"{value:.0f}"
    if value >= 9.995:
        return f"{value:.1f}"
    return f"{value:.2f}"


def formatSeconds(value: float) -> str:
    """
    A short time (an RTT, a jitter) with three significant digits:
    C{420 µs}, C{12.3 ms}, C{1.25 s}; C{0 ms} when it is zero.
    """
    if not math.isfinite(value):
        return "\u2013"
    if value == 0:
        return "0 ms"
    sign = "-" if value < 0 else ""
    value = abs(value)
    for scale, unit in ((1e-6, "µs"), (1e-3, "ms"), (1.0, "s")):
        scaled = value / scale
        if scaled < 999.5 or unit == "s":
            if scaled < 1 and unit == "µs":
                return f"{sign}{scaled:.2f} µs"
            if unit == "s" and scaled >= 999.5:
                return f"{sign}{scaled:,.0f} s"
            return f"{sign}{_threeDigits(scaled)} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def formatDuration(seconds: float) -> str:
    """
    An age or an uptime: C{42 s}, C{3m 05s}, C{2h 04m 05s}, C{1d 2h 04m 05s}.
    """
    if not math.isfinite(seconds):
        return "\u2013"
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole} s"
    days, whole = divmod(whole, 86400)
    hours, whole = divmod(whole, 3600)
    minutes, whole = divmod(whole, 60)
    if not days and not hours:
        return f"{minutes}m {whole:02d}s"
    text = f"{hours}h {minutes:02d}m {whole:02d}s"
    return f"{days}d {text}" if days else text


def formatPercent(value: float) -> str:
    """
    A percentage with one decimal: C{0.5 %}, C{100 %}.
    """
    if not math.isfinite(value):
        return "\u2013"
    if value == int(value):
        return f"{int(value)} %"
    return f"{value:.1f} %"


#: The units a value can be shown in.
BYTES, SECONDS, COUNT, PERCENT = "bytes", "seconds", "count", "percent"
#: A moment, in seconds since the epoch.
TIMESTAMP = "timestamp"


def formatTimestamp(value: float) -> str:
    """
    A moment in UTC, to the second: C{2026-12-04T15:32:47Z}.
    """
    if not math.isfinite(value):
        return "\u2013"
    moment = datetime.datetime.fromtimestamp(value, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def formatValue(value: float | None, unit: str) -> str:
    """
    C{value} in C{unit} (L{BYTES}, L{SECONDS}, L{PERCENT} or L{COUNT});
    a dash when there is none.
    """
    if value is None or not math.isfinite(value):
        return "\u2013"
    if unit == BYTES:
        return formatBytes(value)
    if unit == SECONDS:
        return formatSeconds(value)
    if unit == PERCENT:
        return formatPercent(value)
    if unit == TIMESTAMP:
        return formatTimestamp(value)
    return formatCount(value)


def formatRate(value: float | None, unit: str) -> str:
    """
    A rate per second: C{101.3 KiB/s}, C{12.5/s}; a percentage (of one
    CPU) as it is; seconds per second (CPU time) as a percentage.
    """
    if unit == PERCENT:
        return formatValue(value, unit)
    if unit == SECONDS:
        return formatValue(None if value is None else value * 100, PERCENT)
    text = formatValue(value, unit)
    return text if text == "\u2013" else f"{text}/s"


def unitOf(name: str) -> str:
    """
    The unit of the metric C{name}, from its name (Prometheus conventions).
    """
    if "_bytes" in name:
        return BYTES
    if name.endswith(("_time_seconds", "_timestamp_seconds")):
        return TIMESTAMP
    if name.endswith("_seconds") or "_seconds_" in name:
        return SECONDS
    return COUNT


#: A human name for every metric the page may show.
TITLES: dict[str, str] = {
    "netdemo_connections_total": "connections accepted",
    "netdemo_connections_current": "connections open",
    "netdemo_refused_total": "refused",
    "netdemo_received_bytes_total": "received",
    "netdemo_sent_bytes_total": "sent",
    "netdemo_listener_info": "listener",
    "netdemo_http_requests_total": "requests",
    "netdemo_http_renders_total": "renders",
    "netdemo_http_hub_bad_messages_total": "hub messages refused",
    "netdemo_http_hub_resumes_total": "hub event streams resumed",
    "netdemo_pubsub_published_lines_total": "lines published",
    "netdemo_pubsub_delivered_lines_total": "lines delivered",
    "netdemo_pubsub_dropped_lines_total": "lines dropped for slow subscribers",
    "netdemo_pubsub_deferred_turns_total": "input deferred to a later turn",
    "netdemo_pubsub_presence_events_total": "joins, leaves and renames",
    "netdemo_pubsub_presence_notices_total": "presence notices sent",
    "netdemo_pubsub_command_errors_total": "commands refused",
    "netdemo_pubsub_publish_throttled_total": "publishers slowed to --publish-rate",
    "netdemo_pubsub_permission_denied_total": "actions refused by the accounts",
    "netdemo_pubsub_login_failures_total": "failed logins",
    "netdemo_accounts_reloads_total": "accounts file reloads",
    "netdemo_broadcast_relayed_chunks_total": "chunks relayed",
    "netdemo_broadcast_delivered_chunks_total": "chunks delivered",
    "netdemo_broadcast_dropped_chunks_total": "chunks dropped for slow receivers",
    "netdemo_broadcast_dropped_bytes_total": "dropped for slow receivers",
    "netdemo_backplane_up": "Redis reachable",
    "netdemo_backplane_outages_total": "outages",
    "netdemo_backplane_sent_lines_total": "lines sent to other hubs",
    "netdemo_backplane_received_lines_total": "lines from other hubs",
    "netdemo_backplane_dropped_total": "lines dropped",
    "netdemo_backplane_gaps_total": "messages lost between hubs",
    "netdemo_backplane_queued_bytes": "waiting for Redis",
    "netdemo_backplane_history_up": "shared history working",
    "netdemo_backplane_stream_lines_total": "lines stored in Redis streams",
    "netdemo_backplane_local_lines_total": "lines kept local (not numbered)",
    "netdemo_backplane_script_errors_total": "history script errors",
    "netdemo_backplane_history_reads_total": "shared history reads",
    "netdemo_backplane_history_read_timeouts_total": "shared history read timeouts",
    "netdemo_backplane_epoch_changes_total": "history epoch changes",
    "netdemo_datagrams_received_total": "datagrams received",
    "netdemo_datagrams_sent_total": "datagrams sent",
    "netdemo_multicast_peers": "peers heard",
    "netdemo_multicast_peer_changes_total": "peer table changes",
    "netdemo_multicast_peer_received_total": "beacons received",
    "netdemo_multicast_peer_lost_total": "beacons lost",
    "netdemo_multicast_peer_jitter_seconds": "jitter",
    "netdemo_multicast_peer_rtt_seconds": "round-trip time",
    "netdemo_multicast_peer_rtt_probes_total": "round-trip probes sent",
    "netdemo_multicast_peer_rtt_answers_total": "round-trip probes answered",
    "netdemo_multicast_peer_info": "peer address",
    "netdemo_multicast_peer_last_heard_timestamp_seconds": "last heard",
    "netdemo_udp_peer_probes_total": "probes",
    "netdemo_udp_peer_rtt_seconds": "round-trip time",
    "process_cpu_seconds_total": "CPU time",
    "process_resident_memory_bytes": "resident memory",
    "process_virtual_memory_bytes": "virtual memory",
    "process_open_fds": "open file descriptors",
    "process_max_fds": "file descriptor limit",
    "process_start_time_seconds": "started",
}


def title(name: str, labels: Mapping[str, str]) -> str:
    """
    The human name of one series: the metric's title, then its labels'
    values in parentheses (C{refused (max-per-peer)}).
    """
    base = TITLES.get(name, name)
    values = [labels[k] for k in sorted(labels)]
    if not values:
        return base
    return f"{base} ({', '.join(values)})"


#: The metric names summed into each headline total.
_TOTALS: dict[str, str] = {
    "netdemo_received_bytes_total": "bytesIn",
    "netdemo_sent_bytes_total": "bytesOut",
    "netdemo_pubsub_published_lines_total": "linesIn",
    "netdemo_pubsub_delivered_lines_total": "linesOut",
    "netdemo_datagrams_received_total": "datagramsIn",
    "netdemo_datagrams_sent_total": "datagramsOut",
    "netdemo_refused_total": "refusals",
    "netdemo_connections_current": "connections",
}


def headlineTotals(samples: Iterable[Sample]) -> dict[str, float]:
    """
    The daemon's totals, each summed over every service: one pass over the
    samples, whose number does not grow with the clients.
    """
    totals = dict.fromkeys(_TOTALS.values(), 0.0)
    for sample in samples:
        key = _TOTALS.get(sample.name)
        if key is not None and math.isfinite(sample.value):
            totals[key] += sample.value
    return totals


@frozen
class SeriesSpec:
    """
    One series of the history.

    @ivar key: Its name in C{/status.json} and in the page.
    @ivar total: The total it is computed from (L{headlineTotals}, or
        C{cpuSeconds}).
    @ivar title: Its human name.
    @ivar unit: L{BYTES}, L{COUNT} or L{PERCENT}.
    @ivar rate: Whether it is the total's rate per second (else the
        total's value).
    @ivar scale: What the rate is multiplied by (100 for CPU per cent).
    """

    key: str
    total: str
    title: str
    unit: str
    rate: bool = True
    scale: float = 1.0


#: The headline series, in the page's order.
HEADLINE_SERIES: tuple[SeriesSpec, ...] = (
    SeriesSpec("connections", "connections", "connections open", COUNT, rate=False),
    SeriesSpec("bytesIn", "bytesIn", "received", BYTES),
    SeriesSpec("bytesOut", "bytesOut", "sent", BYTES),
    SeriesSpec("linesIn", "linesIn", "hub lines published", COUNT),
    SeriesSpec("linesOut", "linesOut", "hub lines delivered", COUNT),
    SeriesSpec("datagramsIn", "datagramsIn", "datagrams received", COUNT),
    SeriesSpec("datagramsOut", "datagramsOut", "datagrams sent", COUNT),
    SeriesSpec("refusals", "refusals", "refusals", COUNT),
    SeriesSpec("cpu", "cpuSeconds", "CPU (of one core)", PERCENT, scale=100.0),
)


class RateRing:
    """
    The recent history of the headline series, and the rate of every
    counter series over the latest interval.

    L{record} is given the totals at one moment; each series gets one point
    per call (a rate from the previous call's totals, or the total itself),
    and at most C{size} points are kept: memory and the cost of a call
    depend on the number of series, never on the number of clients.  A
    total that went down (a restarted source) or an interval that is not
    positive gives no rate (L{None}) for that point.

    @ivar times: When each point was taken.
    @ivar values: Per series key, its points (L{None} where unknown).
    @ivar rates: Per counter series (by its key in the page), its rate
        over the latest interval.
    """

    def __init__(
        self,
        size: int = int(HISTORY_SPAN / SAMPLE_INTERVAL),
        series: Sequence[SeriesSpec] = HEADLINE_SERIES,
        interval: float = SAMPLE_INTERVAL,
    ) -> None:
        """
        @param size: The most points kept of each series.
        @param interval: The seconds between points its caller means to
            keep (only reported).
        """
        if size < 1:
            raise ValueError(f"size must be at least 1, not {size}")
        self.size = size
        self.interval = interval
        self.series = tuple(series)
        self.times: deque[float] = deque(maxlen=size)
        self.values: dict[str, deque[float | None]] = {
            s.key: deque(maxlen=size) for s in self.series
        }
        self.rates: dict[str, float] = {}
        self._previous: tuple[float, Mapping[str, float]] | None = None
        self._previousSeries: dict[str, float] = {}

    def record(
        self,
        now: float,
        totals: Mapping[str, float],
        counters: Mapping[str, float] | None = None,
    ) -> None:
        """
        Add one point to every series.

        @param totals: The current totals, by L{SeriesSpec.total}; a
            missing one counts as unknown.
        @param counters: The current value of every counter series (by any
            key): their rates over the interval since the previous call
            replace L{rates}.
        """
        previous = self._previous
        elapsed = now - previous[0] if previous is not None else 0.0
        for spec in self.series:
            current = totals.get(spec.total)
            point: float | None
            if not spec.rate:
                point = current
            elif previous is None or current is None or elapsed <= 0:
                point = None
            else:
                before = previous[1].get(spec.total)
                if before is None or current < before:
                    point = None
                else:
                    point = (current - before) / elapsed * spec.scale
                    if not math.isfinite(point):
                        point = None
            self.values[spec.key].append(point)
        self.times.append(now)
        self._previous = (now, dict(totals))
        if counters is not None:
            rates = {}
            if elapsed > 0:
                for key, value in counters.items():
                    before = self._previousSeries.get(key)
                    if before is not None and value >= before:
                        rate = (value - before) / elapsed
                        if math.isfinite(rate):
                            rates[key] = rate
            self.rates = rates
            self._previousSeries = dict(counters)

    def latest(self, key: str) -> float | None:
        """
        The newest point of series C{key} (L{None} before any).
        """
        points = self.values[key]
        return points[-1] if points else None


def sparkPath(
    values: Sequence[float | None],
    slots: int,
    width: float = 100.0,
    height: float = 30.0,
) -> str:
    """
    An SVG path drawing C{values} (the newest last, at the right edge) as a
    line on a C{width} by C{height} box holding C{slots} points: zero at the
    bottom, the largest value at the top; a gap where a value is L{None}.
    Empty when there is nothing to draw.
    """
    known = [v for v in values if v is not None and math.isfinite(v)]
    if not known or slots < 2:
        return ""
    top = max(known)
    scale = height / top if top > 0 else 0.0
    step = width / (slots - 1)
    offset = slots - len(values)
    parts = []
    pen = "M"
    for index, value in enumerate(values):
        if value is None or not math.isfinite(value):
            pen = "M"
            continue
        x = (offset + index) * step
        y = height - max(0.0, value) * scale
        parts.append(f"{pen}{x:.1f},{y:.1f}")
        pen = "L"
    return "".join(parts)
