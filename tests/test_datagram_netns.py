"""
Two hosts for the datagram services: two network namespaces joined by a
veth pair that the tests create and remove (root; CI runs as root).
Nothing reaches a real network, and the namespaces are the tests' own: the
multicast port is fixed (both hosts must use the same), UDP echo's is
learnt from B's C{listening} event.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
from typing import Any
from unittest import SkipTest

from twisted.trial.unittest import SynchronousTestCase

from tests.support import PATIENCE, Daemon, requireTool

GROUP = "239.255.80.9"
#: A link-local-scope IPv6 group: needs the interface name.
GROUP6 = "ff12::80:9"
PORT = 8001
A, B = "10.77.0.1", "10.77.0.2"

#: Run in namespace B: join the group on B's address, send a probe, record
#: every datagram with its TTL, source and destination for a while.  The
#: group socket is bound to the group's address, not the wildcard: it shares
#: the port with B's responder, and a wildcard-bound socket bound after the
#: responder would get every unicast datagram to the port (the responder
#: shares it through SO_REUSEADDR alone, docs/multicast.md), A's round-trip
#: probes to B included: A would measure no round trip to B.
LISTENER = textwrap.dedent(
    """
    import json, socket, struct, sys, time
    group, port, local = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    seconds = float(sys.argv[4])
    IP_PKTINFO = 8
    m = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    m.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    m.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    m.bind((group, port))
    m.setsockopt(socket.IPPROTO_IP, 49, 0)
    m.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                 socket.inet_aton(group) + socket.inet_aton(local))
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind((local, 0))
    u.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(local))
    for s in (m, u):
        s.setsockopt(socket.IPPROTO_IP, 12, 1)  # IP_RECVTTL
        s.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        s.settimeout(0.1)
    u.sendto(b"Notify 0001", (group, port))
    seen = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for name, s in (("group", m), ("unicast", u)):
            try:
                data, anc, flags, addr = s.recvmsg(65535, 256)
            except TimeoutError:
                continue
            ttl = dst = None
            for level, kind, value in anc:
                if kind == socket.IP_TTL:
                    ttl = struct.unpack("@i", value)[0]
                if kind == IP_PKTINFO:
                    dst = socket.inet_ntoa(value[8:12])
            seen.append({"socket": name, "data": data[:11].decode("latin-1"),
                         "source": addr[0], "ttl": ttl, "destination": dst})
    print(json.dumps(seen))
    """
)


def _run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, timeout=PATIENCE)


def _requireRoot() -> None:
    """
    Network namespaces need root: in CI (which runs as root) its absence
    fails, elsewhere the tests are skipped with the reason.
    """
    if os.geteuid() != 0:
        message = "network namespace tests need root (CI runs as root)"
        if os.environ.get("CI"):
            raise AssertionError(message)
        raise SkipTest(message)


class TwoHostTests(SynchronousTestCase):
    """
    Two daemons, one per namespace.
    """

    nsA: str
    nsB: str
    tag: str
    daemons: list[Daemon]
    a: Daemon
    b: Daemon

    @classmethod
    def setUpClass(cls) -> None:
        _requireRoot()
        requireTool("ip", "iproute2")
        tag = f"{os.getpid() % 100000}"
        cls.nsA, cls.nsB = f"ndA{tag}", f"ndB{tag}"
        cls.tag = tag
        cls.daemons = []
        try:
            _run("ip", "netns", "add", cls.nsA)
            _run("ip", "netns", "add", cls.nsB)
            _run(
                "ip",
                "link",
                "add",
                f"vA{tag}",
                "netns",
                cls.nsA,
                "type",
                "veth",
                "peer",
                "name",
                f"vB{tag}",
                "netns",
                cls.nsB,
            )
            for ns, dev, address in (
                (cls.nsA, f"vA{tag}", A),
                (cls.nsB, f"vB{tag}", B),
            ):
                # No duplicate address detection: the link-local IPv6 address
                # is usable at once.
                _run(
                    "ip", "netns", "exec", ns, "sysctl", "-qw",
                    f"net.ipv6.conf.{dev}.accept_dad=0",
                )  # fmt: skip
                _run("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", dev)
                _run("ip", "-n", ns, "link", "set", dev, "up")
                _run("ip", "-n", ns, "link", "set", "lo", "up")
            cls.b = cls.host(cls.nsB, B, f"vB{tag}")
            echo = cls.b.port("udp-echo")
            cls.a = cls.host(cls.nsA, A, f"vA{tag}", "--udp-peer", f"{B}:{echo}")
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def host(cls, ns: str, address: str, dev: str, *extra: str) -> Daemon:
        """
        The daemon of one host, listening: UDP echo on its address, both
        groups on its interface, beacons every 0.3 s.
        """
        daemon = Daemon(
            "--udp",
            f"{address}:0",
            "--multicast",
            f"{GROUP}:{PORT},interface={address}",
            "--multicast",
            f"[{GROUP6}]:{PORT},interface={dev}",
            "--announce-interval",
            "0.3",
            "--udp-peer-interval",
            "0.2",
            *extra,
            netns=ns,
        )
        cls.daemons.append(daemon)
        daemon.waitListening(3)
        return daemon

    @classmethod
    def tearDownClass(cls) -> None:
        for daemon in cls.daemons:
            daemon.close()
        for ns in (cls.nsA, cls.nsB):
            subprocess.run(
                ["ip", "netns", "del", ns], capture_output=True, timeout=PATIENCE
            )

    def test_1_discovery(self) -> None:
        """
        Each instance finds the other by its beacons.
        """
        self.a.waitFor(rf"multicast: peer \w+ \(.*, {B}\) appeared")
        self.b.waitFor(rf"multicast: peer \w+ \(.*, {A}\) appeared")

    def test_1_discoveryIPv6(self) -> None:
        """
        The same over a link-local IPv6 group, joined by interface name with
        C{setsockopt} (Twisted's own IPv6 join on an interface is broken).
        """
        group = re.escape(GROUP6)
        pattern = rf"peer \w+ \(.*, fe80::[\w:%]+\) appeared on \[{group}\]"
        self.a.waitFor(pattern)
        self.b.waitFor(pattern)

    def test_2_ttlAndUnicastReplies(self) -> None:
        """
        Everything a daemon sends to the group has TTL 1, and a probe to the
        group is answered by unicast to the prober's own address.
        """
        with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
            f.write(LISTENER)
        self.addCleanup(os.unlink, f.name)
        result = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                self.nsB,
                sys.executable,
                f.name,
                GROUP,
                str(PORT),
                B,
                "2.0",
            ],
            capture_output=True,
            timeout=60,
            text=True,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        seen: list[dict[str, Any]] = json.loads(result.stdout)
        fromA = [s for s in seen if s["source"] == A]
        # What A sent to the group (beacons); A's unicast round-trip probes
        # to B's address never reach the group socket.
        beacons = [s for s in fromA if s["destination"] == GROUP]
        self.assertGreaterEqual(len(beacons), 3, seen)
        self.assertEqual({s["ttl"] for s in beacons}, {1})
        self.assertEqual({s["socket"] for s in beacons}, {"group"})
        self.assertEqual(
            {s["data"][:7] for s in fromA if s["destination"] not in (GROUP, B)},
            set(),
        )
        replies = [s for s in fromA if s["socket"] == "unicast"]
        self.assertEqual(
            [(r["data"], r["destination"]) for r in replies], [("Acknowledge", B)]
        )
        # The probe reached the group, and never a reply to it.
        self.assertNotIn(
            "Acknowledge", [s["data"] for s in seen if s["socket"] == "group"]
        )

    def test_2_probeIPv6(self) -> None:
        """
        A probe to the link-local IPv6 group is answered by unicast from A's
        link-local address.
        """
        self.test_1_discoveryIPv6()  # the link and both joins are up
        script = textwrap.dedent(
            """
            import socket, struct, sys
            group, port, dev = sys.argv[1], int(sys.argv[2]), sys.argv[3]
            index = socket.if_nametoindex(dev)
            s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF,
                         struct.pack("@i", index))
            s.settimeout(5)
            s.sendto(b"Notify 0001", (group, port, 0, index))
            data, addr = s.recvfrom(100)
            print(data.decode(), addr[0])
            """
        )
        result = subprocess.run(
            ["ip", "netns", "exec", self.nsB, sys.executable, "-c", script,
             GROUP6, str(PORT), f"vB{self.tag}"],
            capture_output=True, timeout=60, text=True,
        )  # fmt: skip
        self.assertEqual(result.returncode, 0, result.stderr)
        answers = result.stdout.split()
        self.assertEqual(answers[0], "Acknowledge")
        self.assertTrue(answers[1].startswith("fe80::"), answers)

    def test_3_peerLossWhenStopped(self) -> None:
        """
        The connected-UDP link from A to B's echo reports no loss while B
        runs, and reports loss once B is stopped.
        """
        [first] = self.a.waitFor(
            r"udp-peer: [\d.:]+: (\d+) sent, (\d+) received, (\d+) lost"
        )
        self.assertGreater(int(first.group(2)), 0)
        self.assertEqual(int(first.group(3)), 0)
        self.b.stop()
        pattern = r"udp-peer: [\d.:]+: (\d+) sent, (\d+) received, ([1-9]\d*) lost"
        self.a.waitFor(pattern)
        # B left the IPv4 group (its goodbye, or its expiry if the goodbye
        # was lost); A had measured the round trip to it with unicast
        # probes, and says so as B leaves.  That needs B's responder to get
        # A's probes (see LISTENER), and A not to forget B and hear it again
        # (resetting the measurement) when it stood still on a loaded
        # machine: silence is judged after reading what waits.
        self.a.waitFor(
            rf"peer \w+ \(.*, {B}\) left {GROUP}:\d+"
            r".*\((goodbye|expired)\).* rtt [\d.]+ ms"
        )
