"""
Seed 003 ("How to use twisted to realize TCP Communication in python"):
its client, with the factory that reconnects, against C{twistd netdemo
--tcp}, with the daemon restarted under it.

The test holds the listening socket and hands it to each daemon the way
systemd does (L{socketActivation}), so the port is the test's own across
the restart.
"""

from __future__ import annotations

import socket

from twisted.trial.unittest import SynchronousTestCase

from tests.seeds.programs import SLEEP, Program
from tests.support import Daemon, socketActivation

HELLO = r"^Received msg Hello server, I am the client .* from Tcp Server "
ANSWER = r"^Received msg response from the client .* from Tcp Server "


class ReconnectTests(SynchronousTestCase):
    """
    The tutorial's reconnecting client survives a restart of the daemon.
    """

    def daemon(self, listener: socket.socket) -> Daemon:
        """
        A daemon whose echo listens on the test's socket.
        """
        daemon = Daemon(
            "--tcp",
            "systemd:domain=INET:name=echo",
            **socketActivation({"echo": listener}),
        )
        self.addCleanup(daemon.close)
        daemon.waitListening(1)
        return daemon

    def test_restart(self) -> None:
        """
        The client's messages come back; when the daemon stops, the client
        reconnects; once a new daemon runs, its hello comes back again and
        the exchange goes on.
        """
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = str(listener.getsockname()[1])
        first = self.daemon(listener)
        client = Program(self, "seed003_client.py", "127.0.0.1", port, SLEEP, SLEEP)
        client.waitFor(HELLO)
        client.waitFor(ANSWER, 2)
        first.stop()
        client.waitFor(r"^Lost Connection from Tcp Server \('127\.0\.0\.1', \d+\)")
        client.waitFor("^Connected To Tcp Server ", 2)
        answers = len(client.matching(ANSWER))
        self.daemon(listener)
        client.waitFor(HELLO, 2)
        client.waitFor(ANSWER, answers + 2)
