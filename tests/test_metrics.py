"""
Tests for L{netdemo.metrics}: the metric catalog and L{MemoryMetrics}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from netdemo.metrics import (
    CATALOG,
    IMetrics,
    MemoryMetrics,
    MetricSpec,
    Sample,
    UnknownMetric,
    sampleOf,
)


class CatalogTests(SynchronousTestCase):
    """
    Every metric is declared once, following Prometheus conventions.
    """

    def test_conventions(self) -> None:
        """
        Names start with C{netdemo_}; counters, and only counters, end in
        C{_total}; every metric has a kind, one line of help and a
        C{service} label first.
        """
        for name, spec in CATALOG.items():
            self.assertTrue(name.startswith("netdemo_"), name)
            self.assertIn(spec.kind, ("counter", "gauge"), name)
            self.assertEqual(name.endswith("_total"), spec.kind == "counter", name)
            self.assertTrue(spec.help, name)
            self.assertNotIn("\n", spec.help, name)
            self.assertEqual(spec.labels[:1], ("service",), name)

    def test_specIsAValue(self) -> None:
        """
        L{MetricSpec} compares by value and cannot be changed.
        """
        spec = MetricSpec("gauge", "Things", ("service",))
        self.assertEqual(spec, MetricSpec("gauge", "Things", ("service",)))
        self.assertRaises(AttributeError, setattr, spec, "kind", "counter")


class SampleTests(SynchronousTestCase):
    """
    L{Sample} and L{sampleOf}.
    """

    def test_canonicalLabels(self) -> None:
        """
        L{sampleOf} sorts the labels, so samples with the same labels given
        in another order are equal.
        """
        first = sampleOf("netdemo_refused_total", 2, service="x", reason="y")
        second = sampleOf("netdemo_refused_total", 2, reason="y", service="x")
        self.assertEqual(first, second)
        self.assertEqual(first.labels, (("reason", "y"), ("service", "x")))
        self.assertEqual(first.labelDict, {"reason": "y", "service": "x"})


class MemoryMetricsTests(SynchronousTestCase):
    """
    L{MemoryMetrics} keeps pushed values and asks collectors at collection
    time.
    """

    def test_interface(self) -> None:
        """
        L{MemoryMetrics} provides L{IMetrics}.
        """
        self.assertTrue(verifyObject(IMetrics, MemoryMetrics()))

    def test_counterAndGauge(self) -> None:
        """
        C{inc} adds (1 by default), C{set} replaces; each label set is its
        own series, and a series never reported is 0.
        """
        metrics = MemoryMetrics()
        metrics.inc("netdemo_connections_total", service="a")
        metrics.inc("netdemo_connections_total", 2, service="a")
        metrics.inc("netdemo_connections_total", service="b")
        metrics.set("netdemo_connections_current", 5, service="a")
        metrics.set("netdemo_connections_current", 3, service="a")
        self.assertEqual(metrics.value("netdemo_connections_total", service="a"), 3)
        self.assertEqual(metrics.value("netdemo_connections_total", service="b"), 1)
        self.assertEqual(metrics.value("netdemo_connections_current", service="a"), 3)
        self.assertEqual(metrics.value("netdemo_connections_total", service="c"), 0)
        self.assertEqual(
            sorted(metrics.samples(), key=lambda s: (s.name, s.labels)),
            [
                sampleOf("netdemo_connections_current", 3, service="a"),
                sampleOf("netdemo_connections_total", 3, service="a"),
                sampleOf("netdemo_connections_total", 1, service="b"),
            ],
        )

    def test_unknownMetric(self) -> None:
        """
        A name that is not in the catalog raises L{UnknownMetric} (a
        L{KeyError}) naming it, whatever the call.
        """
        metrics = MemoryMetrics()
        for call, args in [
            (metrics.inc, ("netdemo_typo_total",)),
            (metrics.set, ("netdemo_typo", 1)),
            (metrics.value, ("netdemo_typo",)),
        ]:
            error = self.assertRaises(UnknownMetric, call, *args, service="x")
            self.assertIsInstance(error, KeyError)
            self.assertIn("netdemo_typo", str(error))

    def test_ownCatalog(self) -> None:
        """
        A catalog of its own declares what may be reported.
        """
        metrics = MemoryMetrics({"mine_total": MetricSpec("counter", "Mine")})
        metrics.inc("mine_total")
        self.assertEqual(metrics.value("mine_total"), 1)
        self.assertRaises(UnknownMetric, metrics.inc, "netdemo_connections_total")

    def test_collectors(self) -> None:
        """
        Collectors are asked on every collection: a counter they return is
        added to the pushed counter of the same series, a gauge replaces
        the pushed value.
        """
        metrics = MemoryMetrics()
        received = [10]
        metrics.inc("netdemo_received_bytes_total", 5, service="x")
        metrics.set("netdemo_connections_current", 1, service="x")
        metrics.addCollector(
            lambda: [
                sampleOf("netdemo_received_bytes_total", received[0], service="x"),
                sampleOf("netdemo_connections_current", 7, service="x"),
            ]
        )
        self.assertEqual(metrics.value("netdemo_received_bytes_total", service="x"), 15)
        received[0] = 20
        self.assertEqual(metrics.value("netdemo_received_bytes_total", service="x"), 25)
        self.assertEqual(metrics.value("netdemo_connections_current", service="x"), 7)

    def test_collectorUnknownMetric(self) -> None:
        """
        A collector returning an undeclared metric fails the collection.
        """
        metrics = MemoryMetrics()
        metrics.addCollector(lambda: [Sample("netdemo_typo", (), 1)])
        self.assertRaises(UnknownMetric, metrics.samples)
