"""
A pub/sub hub in its own process, for the real-socket tests.

Run as C{python -m tests.pubsubserver JSON}, where C{JSON} holds keyword
arguments: C{limits} for L{ConnectionLimits} and C{hub} for L{HubLimits}.
It listens on 127.0.0.1 on a free port and prints C{port N}; then each
line C{metrics} on standard input prints C{metrics JSON} (every sample as
C{[name, labels, value]}); end of input stops it.

Its own process gives the tests a clean RSS to watch and keeps the clients'
threads from competing with the hub for one interpreter.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from twisted.internet import reactor, stdio
from twisted.protocols.basic import LineReceiver

from netdemo.limits import ConnectionLimits, HubLimits
from netdemo.metrics import MemoryMetrics
from netdemo.pubsub import buildPubSubService


class Control(LineReceiver):
    """
    Answer C{metrics} lines; stop the reactor at end of input.
    """

    delimiter = b"\n"

    def __init__(self, metrics: MemoryMetrics) -> None:
        self.metrics = metrics

    def lineReceived(self, line: bytes) -> None:
        """
        Answer a C{metrics} line with every sample.
        """
        if line.strip() == b"metrics":
            samples = [[s.name, s.labelDict, s.value] for s in self.metrics.samples()]
            self.sendLine(b"metrics " + json.dumps(samples).encode())

    def connectionLost(self, reason: Any = None) -> None:
        """
        Standard input closed: stop.
        """
        if reactor.running:  # type: ignore[attr-defined]
            reactor.stop()  # type: ignore[attr-defined]


def main() -> None:
    """
    Start the hub and serve until standard input closes.
    """
    config = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    metrics = MemoryMetrics()
    service = buildPubSubService(
        ["tcp:0:interface=127.0.0.1"],
        ConnectionLimits(**config.get("limits", {})),
        HubLimits(**config.get("hub", {})),
        metrics,
        reactor,  # type: ignore[arg-type]
    )
    service.startService()

    def announce() -> None:
        if not service.ports:
            reactor.callLater(0.01, announce)  # type: ignore[attr-defined]
            return
        sys.stdout.write(f"port {service.ports[0].getHost().port}\n")  # type: ignore[attr-defined]
        sys.stdout.flush()
        stdio.StandardIO(Control(metrics))

    reactor.callWhenRunning(announce)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
