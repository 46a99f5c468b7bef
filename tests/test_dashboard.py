"""
Tests for L{netdemo.dashboard}: the status page's units, names, headline
totals, history ring and graphs.
"""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from netdemo.dashboard import (
    BYTES,
    COUNT,
    HEADLINE_SERIES,
    PERCENT,
    SECONDS,
    TIMESTAMP,
    RateRing,
    SeriesSpec,
    formatBytes,
    formatCount,
    formatDuration,
    formatPercent,
    formatRate,
    formatSeconds,
    formatTimestamp,
    formatValue,
    headlineTotals,
    sparkPath,
    title,
    unitOf,
)
from netdemo.metrics import CATALOG, sampleOf

_MULTIPLIERS = {
    "B": 1,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
    "TiB": 1024**4,
    "PiB": 1024**5,
    "EiB": 1024**6,
}


class FormatTests(SynchronousTestCase):
    """
    Numbers get units and grouping.
    """

    def test_bytes(self) -> None:
        """
        Bytes are shown in IEC binary units with one decimal once scaled.
        """
        self.assertEqual(formatBytes(0), "0 B")
        self.assertEqual(formatBytes(512), "512 B")
        self.assertEqual(formatBytes(1023), "1023 B")
        self.assertEqual(formatBytes(1024), "1.0 KiB")
        self.assertEqual(formatBytes(103731.2), "101.3 KiB")
        self.assertEqual(formatBytes(8.4 * 1024**2), "8.4 MiB")
        self.assertEqual(formatBytes(1024**2 - 1), "1.0 MiB")
        self.assertEqual(formatBytes(-2048), "-2.0 KiB")
        self.assertEqual(formatBytes(float("nan")), "\u2013")

    @given(st.floats(min_value=0, max_value=1e21, allow_nan=False))
    def test_bytesRoundTrip(self, value: float) -> None:
        """
        Any byte count reads back within half a unit of its last decimal,
        with a number below 1024 and a known unit.
        """
        text = formatBytes(value)
        match = re.fullmatch(r"(\d+(?:\.\d)?) (B|[KMGTPE]iB)", text)
        assert match is not None, text
        number, unit = float(match.group(1)), match.group(2)
        self.assertLess(number, 1024)
        if unit != "B":
            self.assertIn(".", match.group(1))
            self.assertGreaterEqual(value, 1024)
        multiplier = _MULTIPLIERS[unit]
        self.assertLessEqual(abs(number * multiplier - value), 0.05 * multiplier + 1)

    def test_count(self) -> None:
        """
        Counts are grouped by thousands; fractions keep one decimal, two
        below one.
        """
        self.assertEqual(formatCount(0), "0")
        self.assertEqual(formatCount(12345), "12,345")
        self.assertEqual(formatCount(1234567.0), "1,234,567")
        self.assertEqual(formatCount(12.34), "12.3")
        self.assertEqual(formatCount(0.25), "0.25")
        self.assertEqual(formatCount(float("inf")), "\u2013")

    @given(st.integers(min_value=0, max_value=10**15))
    def test_countGrouping(self, value: int) -> None:
        """
        A grouped count reads back as itself, in groups of three digits.
        """
        text = formatCount(value)
        self.assertRegex(text, r"^\d{1,3}(,\d{3})*$")
        self.assertEqual(int(text.replace(",", "")), value)

    def test_seconds(self) -> None:
        """
        Short times keep three significant digits in µs, ms or s; zero is
        C{0 ms}, not C{0.000}.
        """
        self.assertEqual(formatSeconds(0), "0 ms")
        self.assertEqual(formatSeconds(0.012), "12.0 ms")
        self.assertEqual(formatSeconds(0.0123), "12.3 ms")
        self.assertEqual(formatSeconds(0.00042), "420 µs")
        self.assertEqual(formatSeconds(0.0000004), "0.40 µs")
        self.assertEqual(formatSeconds(0.9996), "1.00 s")
        self.assertEqual(formatSeconds(1.25), "1.25 s")
        self.assertEqual(formatSeconds(5000), "5,000 s")

    @given(st.floats(min_value=1e-6, max_value=999, allow_nan=False))
    def test_secondsRoundTrip(self, value: float) -> None:
        """
        A time reads back within 0.5 % (three significant digits).
        """
        text = formatSeconds(value)
        match = re.fullmatch(r"([\d.]+) (µs|ms|s)", text)
        assert match is not None, text
        scale = {"µs": 1e-6, "ms": 1e-3, "s": 1.0}[match.group(2)]
        self.assertLess(float(match.group(1)), 1000)
        self.assertLessEqual(abs(float(match.group(1)) * scale - value), value * 0.005)

    def test_duration(self) -> None:
        """
        Ages and uptimes in seconds, minutes, hours and days.
        """
        self.assertEqual(formatDuration(4.9), "4 s")
        self.assertEqual(formatDuration(185), "3m 05s")
        self.assertEqual(formatDuration(7445), "2h 04m 05s")
        self.assertEqual(formatDuration(93845), "1d 2h 04m 05s")
        self.assertEqual(formatDuration(-3), "0 s")

    def test_percentAndRates(self) -> None:
        """
        Percentages and rates carry their unit; unknown values are a dash.
        """
        self.assertEqual(formatPercent(2.345), "2.3 %")
        self.assertEqual(formatPercent(100), "100 %")
        self.assertEqual(formatRate(103731.2, BYTES), "101.3 KiB/s")
        self.assertEqual(formatRate(12.5, COUNT), "12.5/s")
        self.assertEqual(formatRate(3.0, PERCENT), "3 %")
        self.assertEqual(formatRate(None, BYTES), "\u2013")
        self.assertEqual(formatValue(0.012, SECONDS), "12.0 ms")
        self.assertEqual(formatValue(None, COUNT), "\u2013")

    def test_units(self) -> None:
        """
        The unit follows the metric's name.
        """
        self.assertEqual(unitOf("netdemo_received_bytes_total"), BYTES)
        self.assertEqual(unitOf("netdemo_backplane_queued_bytes"), BYTES)
        self.assertEqual(unitOf("netdemo_multicast_peer_rtt_seconds"), SECONDS)
        self.assertEqual(unitOf("process_cpu_seconds_total"), SECONDS)
        self.assertEqual(unitOf("netdemo_refused_total"), COUNT)

    def test_titles(self) -> None:
        """
        Every metric of the catalog has a human name, which is not its
        Prometheus name; label values follow in parentheses.
        """
        for name in CATALOG:
            shown = title(name, {})
            self.assertNotIn("netdemo_", shown)
            self.assertNotIn("_total", shown)
        self.assertEqual(
            title("netdemo_refused_total", {"reason": "max-per-peer"}),
            "refused (max-per-peer)",
        )


class HeadlineTests(SynchronousTestCase):
    """
    L{headlineTotals} sums each total over the services.
    """

    def test_sums(self) -> None:
        """
        Bytes, lines, datagrams, refusals and open connections are summed
        over every service; a missing total is 0; NaN is left out.
        """
        totals = headlineTotals(
            [
                sampleOf("netdemo_received_bytes_total", 10, service="a"),
                sampleOf("netdemo_received_bytes_total", 5, service="b"),
                sampleOf("netdemo_sent_bytes_total", 7, service="a"),
                sampleOf("netdemo_refused_total", 2, service="a", reason="x"),
                sampleOf("netdemo_refused_total", 3, service="b", reason="y"),
                sampleOf("netdemo_connections_current", 4, service="a"),
                sampleOf("netdemo_datagrams_received_total", float("nan"), service="u"),
            ]
        )
        self.assertEqual(totals["bytesIn"], 15)
        self.assertEqual(totals["bytesOut"], 7)
        self.assertEqual(totals["refusals"], 5)
        self.assertEqual(totals["connections"], 4)
        self.assertEqual(totals["linesIn"], 0)
        self.assertEqual(totals["datagramsIn"], 0)


class RateRingTests(SynchronousTestCase):
    """
    L{RateRing} keeps a bounded history of rates.
    """

    def test_rates(self) -> None:
        """
        A rate series gets no point at the first call, then the total's
        change per second; a value series gets the total itself; CPU
        seconds become per cent of one core.
        """
        ring = RateRing(size=10)
        ring.record(100.0, {"bytesIn": 0, "connections": 3, "cpuSeconds": 1.0})
        ring.record(105.0, {"bytesIn": 5000, "connections": 4, "cpuSeconds": 1.5})
        self.assertEqual(list(ring.values["bytesIn"]), [None, 1000.0])
        self.assertEqual(list(ring.values["connections"]), [3, 4])
        self.assertEqual(list(ring.values["cpu"]), [None, 10.0])
        self.assertEqual(list(ring.times), [100.0, 105.0])
        self.assertEqual(ring.latest("bytesIn"), 1000.0)

    def test_bounded(self) -> None:
        """
        Only the newest C{size} points are kept, whatever the number of
        calls.
        """
        ring = RateRing(size=3)
        for i in range(100):
            ring.record(float(i), {"bytesIn": float(i * i)})
        self.assertEqual(list(ring.times), [97.0, 98.0, 99.0])
        self.assertEqual(list(ring.values["bytesIn"]), [193.0, 195.0, 197.0])
        for points in ring.values.values():
            self.assertEqual(len(points), 3)

    def test_reset(self) -> None:
        """
        A total that went down, or no time between two calls, gives no
        rate rather than a negative or infinite one.
        """
        ring = RateRing(size=5)
        ring.record(1.0, {"bytesIn": 100})
        ring.record(2.0, {"bytesIn": 50})
        ring.record(2.0, {"bytesIn": 60})
        self.assertEqual(list(ring.values["bytesIn"]), [None, None, None])

    def test_counterRates(self) -> None:
        """
        The rates of every counter series over the latest interval replace
        the previous ones.
        """
        ring = RateRing(size=5)
        ring.record(0.0, {}, {"a": 0, "b": 10})
        self.assertEqual(ring.rates, {})
        ring.record(2.0, {}, {"a": 4, "b": 10, "c": 1})
        self.assertEqual(ring.rates, {"a": 2.0, "b": 0.0})
        ring.record(4.0, {}, {"a": 8})
        self.assertEqual(ring.rates, {"a": 2.0})

    @given(
        st.integers(min_value=1, max_value=20),
        st.lists(
            st.tuples(
                st.floats(min_value=-1, max_value=100, allow_nan=False),
                st.floats(min_value=0, max_value=1e12, allow_nan=False),
            ),
            max_size=60,
        ),
    )
    def test_anySequence(self, size: int, steps: list[tuple[float, float]]) -> None:
        """
        Whatever the clock and the totals do (time going back, totals
        going down), the ring holds at most C{size} points per series, one
        per time, and no rate is negative or infinite.
        """
        ring = RateRing(size=size)
        now = 0.0
        for elapsed, total in steps:
            now += elapsed
            ring.record(now, {"bytesIn": total, "connections": total}, {"x": total})
        self.assertLessEqual(len(ring.times), size)
        for points in ring.values.values():
            self.assertEqual(len(points), len(ring.times))
        for point in ring.values["bytesIn"]:
            self.assertTrue(point is None or 0 <= point < float("inf"), point)
        for rate in ring.rates.values():
            self.assertTrue(0 <= rate < float("inf"), rate)

    def test_tinyInterval(self) -> None:
        """
        An interval so short that the rate overflows gives no rate.
        """
        ring = RateRing(size=3)
        ring.record(0.0, {"bytesIn": 0.0}, {"x": 0.0})
        ring.record(5e-324, {"bytesIn": 1e12}, {"x": 1e12})
        self.assertEqual(ring.latest("bytesIn"), None)
        self.assertEqual(ring.rates, {})

    def test_series(self) -> None:
        """
        Custom series; a size below one is refused.
        """
        ring = RateRing(size=2, series=[SeriesSpec("x", "x", "x", COUNT)])
        self.assertEqual(list(ring.values), ["x"])
        self.assertRaises(ValueError, RateRing, 0)
        self.assertIn("cpu", [s.key for s in HEADLINE_SERIES])


class SparkPathTests(SynchronousTestCase):
    """
    L{sparkPath} draws a series.
    """

    def test_path(self) -> None:
        """
        The newest point is at the right edge, the largest at the top, zero
        at the bottom; a missing point starts a new line.
        """
        self.assertEqual(
            sparkPath([0.0, 2.0, None, 1.0], slots=5, width=8, height=10),
            "M2.0,10.0L4.0,0.0M8.0,5.0",
        )

    def test_empty(self) -> None:
        """
        Nothing to draw draws nothing; all zeros lie on the bottom.
        """
        self.assertEqual(sparkPath([], slots=5), "")
        self.assertEqual(sparkPath([None], slots=5), "")
        self.assertEqual(
            sparkPath([0.0, 0.0], slots=2, width=1, height=3), "M0.0,3.0L1.0,3.0"
        )


class MoreFormatTests(SynchronousTestCase):
    """
    Moments and CPU time.
    """

    def test_timestamp(self) -> None:
        """
        A C{..._time_seconds} metric is a moment, shown in UTC.
        """
        self.assertEqual(unitOf("process_start_time_seconds"), TIMESTAMP)
        self.assertEqual(formatValue(1796398811.5, TIMESTAMP), "2026-12-04T15:40:11Z")
        self.assertEqual(formatTimestamp(float("nan")), "\u2013")

    def test_cpuRate(self) -> None:
        """
        Seconds per second (CPU time) is a percentage of one core.
        """
        self.assertEqual(formatRate(0.25, SECONDS), "25 %")
        self.assertEqual(formatRate(None, SECONDS), "\u2013")
