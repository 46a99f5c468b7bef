"""
Seed 004, UDP, connected UDP and multicast: its three programs against
C{twistd netdemo --udp} and C{--multicast}.

The multicast peer sends to 224.0.0.1 on whatever route there is, so it
runs only in a network namespace of the test's own, where the only
interface is C{lo}: nothing leaves the host.
"""

from __future__ import annotations

import os
import subprocess
from unittest import SkipTest

from twisted.trial.unittest import SynchronousTestCase

from tests.seeds.programs import SLEEP, DaemonTestCase, Program
from tests.support import PATIENCE, Daemon, requireTool

#: What the seed's programs print of each echoed message.
HELLO = r"^hello,i am \d{4}-\d\d-\d\d \d\d:\d\d:\d\d"

#: The command of the done-when item, word for word.
EXACTLY = ["-n", "netdemo", "--tcp", "8007", "--multicast", "224.0.0.1:8001"]


class UDPTests(DaemonTestCase):
    """
    The plain and the connected UDP programs get their messages back from
    netdemo's UDP echo.
    """

    DAEMON_ARGS = ("--udp", "127.0.0.1:0")

    def test_plain(self) -> None:
        """
        The plain UDP program's messages come back from the echo's address.
        """
        port = self.daemon.port("udp-echo")
        program = Program(self, "seed004_udp.py", "127.0.0.1", str(port), SLEEP)
        program.waitFor(HELLO, 2)
        senders = {m[0] for _, m in program.matching(r"^got data from .*")}
        self.assertEqual(senders, {f"got data from ('127.0.0.1', {port})"})

    def test_connected(self) -> None:
        """
        The connected UDP program connects, and its messages come back.
        """
        port = self.daemon.port("udp-echo")
        program = Program(self, "seed004_connected.py", "127.0.0.1", str(port), SLEEP)
        program.waitFor("^连接已经创建$")
        program.waitFor(HELLO, 2)
        self.assertEqual(program.matching("发送失败"), [])


def _ip(*args: str) -> None:
    """
    Run C{ip ARGS}.
    """
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=PATIENCE)


class MulticastTests(SynchronousTestCase):
    """
    The multicast peer against the mission's own command line, in a network
    namespace of the test's own.
    """

    def namespace(self) -> str:
        """
        A new network namespace with C{lo} up and a multicast route on it
        (with 127.0.0.1 as the source: without it the kernel sends from
        0.0.0.0, which no responder answers), removed after the test.
        """
        if os.geteuid() != 0:
            raise SkipTest("network namespaces need root (CI runs as root)")
        requireTool("ip", "iproute2")
        name = f"nds4{os.getpid() % 100000}"
        try:
            _ip("netns", "add", name)
        except subprocess.CalledProcessError as e:
            raise SkipTest(f"ip netns is unavailable here: {e.stderr!r}") from None
        self.addCleanup(_ip, "netns", "delete", name)
        _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", name, "route", "add", "224.0.0.0/4", "dev", "lo", "src", "127.0.0.1")
        return name

    def test_bareNotifyAnswered(self) -> None:
        """
        The seed's peer, sharing port 8001 through C{listenMultiple}, sends
        the bare 6-byte C{Notify} to 224.0.0.1:8001 and gets a unicast
        C{Acknowledge} from C{twistd -n netdemo --tcp 8007 --multicast
        224.0.0.1:8001}.
        """
        name = self.namespace()
        # The daemon's command line is exactly the mission's: the launcher
        # runs "$0" (the twistd that Daemon would run) with EXACTLY, and
        # drops what Daemon adds (no pid file, a log file, the reactor); it
        # logs to its output and writes twistd.pid in its own directory.
        script = 'exec "$0" ' + " ".join(EXACTLY)
        daemon = Daemon(launcher=["ip", "netns", "exec", name, "sh", "-c", script])
        self.addCleanup(daemon.close)
        daemon.waitListening(2)
        peer = Program(self, "seed004_multicast.py", netns=name)
        peer.waitFor(
            r"^datagram b'Acknowledge' received from \('127\.0\.0\.1', 8001\)$"
        )
