"""
Seed 002 ("daily notes[32]"): its complete program's C{Protocol} and
C{Factory}, connected to C{twistd netdemo --tcp} (C{seed002_client.py}).
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.seeds.programs import Program
from tests.support import Daemon


class EchoTests(SynchronousTestCase):
    """
    The tutorial's protocol plays ping-pong with netdemo's echo.
    """

    def test_pingPong(self) -> None:
        """
        Its welcome comes back byte for byte, then each answer it makes to
        what came back, one C{Echo: } longer each time.
        """
        daemon = Daemon("--tcp", "tcp:0:interface=127.0.0.1")
        self.addCleanup(daemon.close)
        daemon.waitListening(1)
        port = str(daemon.port("tcp-echo"))
        program = Program(self, "seed002_client.py", "127.0.0.1", port)
        program.waitFor("^New connection from: 127.0.0.1$")
        program.waitFor(r"^Received: (Echo: ){3}Welcome! Type something\.\.\.$")
        received = [m[0] for _, m in program.matching("^Received: .*")][:4]
        self.assertEqual(
            received,
            [
                "Received: " + "Echo: " * i + "Welcome! Type something..."
                for i in range(4)
            ],
        )
