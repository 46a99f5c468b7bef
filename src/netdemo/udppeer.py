# -*- test-case-name: tests.test_udppeer -*-
"""
The connected-UDP peer link: watch the UDP path to another host's echo.

L{UDPPeerProber} C{connect()}s a UDP socket to one peer (a name is resolved
once, at start) and sends a sequence-numbered, timestamped probe every
interval to the peer's UDP echo.  It counts what came back:

  - C{sent}, C{received};
  - C{lost}: probes with no reply after L{UDPPeerProber.timeout} seconds;
  - C{duplicate}: a second reply to the same probe;
  - C{reordered}: a reply to an older probe after a newer one;
  - C{refused}: ICMP port-unreachable reports (C{connectionRefused}); a
    hint only, since Linux reports them unreliably (twisted/twisted#6467);

and the round-trip time: min, avg, max and mdev (the standard deviation, as
C{ping} prints it) over the replies, plus the last one.

The socket is L{listenConnected}'s, shared with C{netdemo ping udp}: an
ICMP error does not close it.  A probe is counted lost only once the
reactor has read the replies waiting (L{AfterReading}), so a process that
stood still for a while does not count replies sitting unread as losses.

A probe is 32 bytes::

    b"NDPEER01" | sequence (8 bytes) | send time (double) | instance (8 bytes)

all big-endian; the send time is the prober's own clock, so only the prober
interprets it.  The peer's echo answers with the same bytes.
"""

from __future__ import annotations

import ipaddress
import math
import os
import struct
from typing import Any

from attrs import frozen
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger, LogLevel

from netdemo.datagram import AfterReading, listenConnected, stopPorts
from netdemo.logs import RateLimitedLog
from netdemo.metrics import IMetrics, Sample, sampleOf

__all__ = ["PeerTarget", "UDPPeerProber", "buildUDPPeerService", "parsePeerTarget"]

SERVICE_NAME = "udp-peer"
MAGIC = b"NDPEER01"
_PROBE = struct.Struct("!8sQdQ")

#: Sequence numbers remembered for duplicate detection.
HISTORY = 1024

#: A C{peer_report} event is logged every this many probes, and at stop.
REPORT_EVERY = 10


@frozen
class PeerTarget:
    """
    One C{--udp-peer HOST:PORT}.
    """

    host: str
    port: int

    def __str__(self) -> str:
        return (
            f"[{self.host}]:{self.port}"
            if ":" in self.host
            else f"{self.host}:{self.port}"
        )


def parsePeerTarget(value: str) -> PeerTarget:
    """
    Parse C{HOST:PORT} or C{[IPV6]:PORT}.

    @raise ValueError: Naming the value.
    """
    text = value.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise ValueError(f"{value!r} is not [ADDRESS]:PORT")
        host, portText = text[1:end], text[end + 2 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{value!r}: {host!r} is not an IPv6 address") from None
    else:
        host, sep, portText = text.rpartition(":")
        if not sep or not host or ":" in host:
            raise ValueError(f"{value!r} is not HOST:PORT (IPv6 as [ADDRESS]:PORT)")
    if not portText.isdigit() or not 1 <= int(portText) <= 65535:
        raise ValueError(f"{value!r}: port {portText!r} is not between 1 and 65535")
    return PeerTarget(host, int(portText))


class UDPPeerProber(DatagramProtocol):
    """
    Probe one peer's UDP echo over a connected socket.

    @ivar outstanding: Sequence number to send time of unanswered probes.
    """

    #: No C{Starting ...}/C{Stopping ...} lines: netdemo logs its own.
    noisy = False

    _log = Logger()

    def __init__(
        self, target: PeerTarget, address: str, interval: float, clock: Any
    ) -> None:
        self.target = target
        self.address = address
        self.interval = interval
        self.timeout = max(3 * interval, 2.0)
        self.clock = clock
        self.instance = int.from_bytes(os.urandom(8), "big")
        self.sequence = 0
        self.outstanding: dict[int, float] = {}
        self.answered: dict[int, None] = {}
        self.highest = -1
        self.counts = dict.fromkeys(
            ("sent", "received", "lost", "duplicate", "reordered", "refused"), 0
        )
        self.rttMin = math.inf
        self.rttMax = 0.0
        self.rttLast = 0.0
        self._rttMean = 0.0
        self._rttM2 = 0.0
        self._loop: LoopingCall | None = None
        self._later = AfterReading(clock)
        self._lostLog = RateLimitedLog(self._log, clock.seconds)

    def startProtocol(self) -> None:
        self.transport.connect(self.address, self.target.port)  # type: ignore[union-attr]
        self._loop = LoopingCall(self.tick)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=True)
        self._log.info(
            "{service}: probing {peer} ({address}) every {interval} s",
            event="peer_probing",
            service=SERVICE_NAME,
            peer=str(self.target),
            address=self.address,
            interval=self.interval,
        )

    def stopProtocol(self) -> None:
        self._later.cancel()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
            self.report()
        self._loop = None

    def report(self) -> None:
        """
        Log the counts and round-trip times so far.
        """
        c = self.counts
        self._log.info(
            "{service}: {peer}: {sent} sent, {received} received, {lost} lost, "
            "{duplicate} duplicate, {reordered} reordered, {refused} refused; "
            "rtt min/avg/max/mdev {rttMin:.6f}/{rttAvg:.6f}/{rttMax:.6f}/"
            "{rttMdev:.6f} s",
            event="peer_report",
            service=SERVICE_NAME,
            peer=str(self.target),
            rttMin=self.rttMin if c["received"] else 0.0,
            rttAvg=self.rttAvg,
            rttMax=self.rttMax,
            rttMdev=self.rttMdev,
            **c,
        )

    def tick(self) -> None:
        """
        Send the next probe; once the replies waiting have been read,
        count the probes unanswered for L{timeout} as lost.
        """
        now = self.clock.seconds()
        self._later.call("expire", self.expire, now)
        seq = self.sequence
        self.sequence += 1
        if seq and seq % REPORT_EVERY == 0:
            self.report()
        try:
            transport: Any = self.transport
            transport.write(_PROBE.pack(MAGIC, seq, now, self.instance))
        except Exception as e:
            # No route, full buffer: the probe will be counted lost.
            self._warn(
                "send",
                "cannot send to {peer}: {error}",
                "peer_send_failed",
                error=str(e),
            )
        self.outstanding[seq] = now
        self.counts["sent"] += 1

    def expire(self, asOf: float) -> None:
        """
        Count the probes sent L{timeout} seconds or more before C{asOf} and
        still unanswered as lost.
        """
        for seq, sentAt in list(self.outstanding.items()):
            if asOf - sentAt >= self.timeout:
                del self.outstanding[seq]
                self.counts["lost"] += 1
                self._warn(
                    "lost", "probe {seq} to {peer} lost", "peer_probe_lost", seq=seq
                )

    def _warn(self, kind: str, text: str, event: str, **fields: Any) -> None:
        """
        Log a warning about the link, at most one of each C{kind} every few
        seconds.
        """
        self._lostLog.emit(
            kind,
            LogLevel.warn,
            "{service}: " + text,
            event=event,
            service=SERVICE_NAME,
            peer=str(self.target),
            **fields,
        )

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        if len(datagram) != _PROBE.size:
            return
        magic, seq, sentAt, instance = _PROBE.unpack(datagram)
        if magic != MAGIC or instance != self.instance or seq >= self.sequence:
            return
        if seq in self.answered:
            self.counts["duplicate"] += 1
            return
        sentAt = self.outstanding.pop(seq, None)
        if sentAt is None:
            # Answered after it was counted lost: a late reply.
            return
        self.answered[seq] = None
        if len(self.answered) > HISTORY:
            del self.answered[next(iter(self.answered))]
        if seq < self.highest:
            self.counts["reordered"] += 1
        else:
            self.highest = seq
        rtt = self.clock.seconds() - sentAt
        self.counts["received"] += 1
        n = self.counts["received"]
        self.rttLast = rtt
        self.rttMin = min(self.rttMin, rtt)
        self.rttMax = max(self.rttMax, rtt)
        delta = rtt - self._rttMean
        self._rttMean += delta / n
        self._rttM2 += delta * (rtt - self._rttMean)

    def connectionRefused(self) -> None:
        self.counts["refused"] += 1

    @property
    def rttAvg(self) -> float:
        """
        The mean round-trip time of the replies, 0 before the first.
        """
        return self._rttMean

    @property
    def rttMdev(self) -> float:
        """
        The standard deviation of the round-trip times.
        """
        n = self.counts["received"]
        return math.sqrt(self._rttM2 / n) if n else 0.0

    def collect(self) -> list[Sample]:
        """
        The counts and round-trip statistics, for L{IMetrics.addCollector}.
        """
        peer = str(self.target)
        samples = [
            sampleOf(
                "netdemo_udp_peer_probes_total",
                v,
                service=SERVICE_NAME,
                peer=peer,
                outcome=k,
            )
            for k, v in self.counts.items()
        ]
        sent = self.counts["sent"]
        samples.append(
            sampleOf("netdemo_datagrams_sent_total", sent, service=SERVICE_NAME)
        )
        if self.counts["received"]:
            for stat, value in (
                ("min", self.rttMin),
                ("avg", self.rttAvg),
                ("max", self.rttMax),
                ("mdev", self.rttMdev),
                ("last", self.rttLast),
            ):
                samples.append(
                    sampleOf(
                        "netdemo_udp_peer_rtt_seconds",
                        value,
                        service=SERVICE_NAME,
                        peer=peer,
                        stat=stat,
                    )
                )
        return samples


class _PeerLink(Service):
    """
    Resolve one peer's name, then listen on an ephemeral port connected to
    it (L{listenConnected}).  A name that does not resolve is logged and
    retried every interval: the daemon keeps running.  The port is a
    client's, so it is not reported as a listener.
    """

    _log = Logger()

    def __init__(
        self, target: PeerTarget, interval: float, metrics: IMetrics, reactor: Any
    ) -> None:
        self.setName(f"{SERVICE_NAME} {target}")
        self.target = target
        self.interval = interval
        self.reactor = reactor
        self.metrics = metrics
        self.prober: UDPPeerProber | None = None
        self.port: IListeningPort | None = None
        self._retry: Any = None
        self.resolved: Deferred[None] = Deferred()

    def startService(self) -> None:
        super().startService()
        self._resolve()

    def _resolve(self) -> None:
        self._retry = None
        host = self.target.host
        try:
            ipaddress.ip_address(host)
        except ValueError:
            d = self.reactor.resolve(host)
        else:
            d = Deferred()
            d.callback(host)
        d.addCallbacks(self._listen, self._failed)

    def _failed(self, failure: Any) -> None:
        self._log.error(
            "{service}: cannot resolve {peer}: {error}; retrying in {interval} s",
            event="peer_resolve_failed",
            service=SERVICE_NAME,
            peer=str(self.target),
            error=failure.getErrorMessage(),
            interval=self.interval,
        )
        if self.running:
            self._retry = self.reactor.callLater(max(self.interval, 1.0), self._resolve)

    def _listen(self, address: str) -> None:
        if not self.running:
            return
        prober = UDPPeerProber(self.target, address, self.interval, self.reactor)
        self.port = listenConnected(self.reactor, prober, ":" in address)
        self.prober = prober
        self.metrics.addCollector(prober.collect)
        self.resolved.callback(None)

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        port, self.port = self.port, None
        return succeed(None) if port is None else stopPorts([port])


def buildUDPPeerService(
    targets: list[PeerTarget],
    interval: float,
    metrics: IMetrics,
    reactor: Any,
) -> MultiService:
    """
    Build the connected-UDP peer link: one prober per target.

    @param targets: The peers' UDP echo addresses.
    @param interval: Seconds between probes.
    @param metrics: Where to report.
    @param reactor: The reactor to resolve, listen and time with.
    """
    top = MultiService()
    top.setName(SERVICE_NAME)
    for target in targets:
        _PeerLink(target, interval, metrics, reactor).setServiceParent(top)
    return top
