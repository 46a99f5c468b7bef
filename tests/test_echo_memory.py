"""
What echo clients that send and never read cost a real daemon: the
documented bound per connection (C{docs/usage.md}), in process memory and
in the kernel's send buffer.
"""

from __future__ import annotations

import re
import resource
import select
import socket
import subprocess
import time

from twisted.trial.unittest import SynchronousTestCase

from netdemo.echo import SEND_BUFFER
from tests.support import PATIENCE, Daemon, requireTool

#: Clients that never read.
CLIENTS = 1000

#: The documented bound of process memory per such client, in KiB
#: (measured: 29 to 35).
BOUND_KIB = 48


def rssKiB(pid: int) -> int:
    """
    The resident memory of process C{pid}, in KiB.
    """
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() // 1024


def fill(clients: list[socket.socket]) -> int:
    """
    Send on every client until no client can send more: the daemon has
    stopped reading from all of them.  Bounded by L{PATIENCE}.

    @return: Bytes sent in all.
    """
    chunk = b"x" * 65536
    poller = select.poll()
    byDescriptor = {c.fileno(): c for c in clients}
    for c in clients:
        poller.register(c, select.POLLOUT)
    sent = 0
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        # Quiet for half a second: every send buffer is full and stays so.
        writable = poller.poll(500)
        if not writable:
            return sent
        for fd, _ in writable:
            c = byDescriptor[fd]
            try:
                while True:
                    sent += c.send(chunk)
            except BlockingIOError:
                pass
    raise AssertionError(f"clients could still send after {PATIENCE:g} s")


class NonReadingClientsTests(SynchronousTestCase):
    """
    A thousand echo clients that send and never read.
    """

    def test_boundedPerConnection(self) -> None:
        """
        Each costs the daemon less than L{BOUND_KIB} KiB of resident memory,
        its kernel send buffer stays at twice L{SEND_BUFFER}, and the echo
        still serves others.
        """
        ss = requireTool("ss", "iproute2")
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < 3 * CLIENTS:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 3 * CLIENTS), hard))
        with Daemon(
            "--tcp", "tcp:0:interface=127.0.0.1:backlog=1024", "--max-per-peer", "0"
        ) as daemon:
            daemon.waitListening(1)
            address = daemon.address("tcp-echo")
            probe = socket.create_connection(address, timeout=PATIENCE)
            self.addCleanup(probe.close)
            probe.sendall(b"warm")
            self.assertEqual(probe.recv(4), b"warm")
            before = rssKiB(daemon.process.pid)
            clients = []
            for _ in range(CLIENTS):
                c = socket.socket()
                self.addCleanup(c.close)
                # Small buffers on the client's side: the test measures the
                # daemon, not its own kernel memory.
                c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
                c.connect(address)
                c.setblocking(False)
                clients.append(c)
            fill(clients)
            perClient = (rssKiB(daemon.process.pid) - before) / CLIENTS
            self.assertLess(perClient, BOUND_KIB)
            listing = subprocess.run(
                [
                    ss,
                    "-tmnH",
                    "state",
                    "established",
                    # The daemon's address, not only its port: another
                    # daemon (a parallel run) may have the same port on
                    # another address.
                    f"( src {address[0]}:{address[1]} )",
                ],
                capture_output=True,
                text=True,
                check=True,
                timeout=PATIENCE,
            ).stdout
            sendBuffers = [int(tb) for tb in re.findall(r"\btb(\d+)", listing)]
            self.assertEqual(len(sendBuffers), CLIENTS + 1)
            self.assertEqual(set(sendBuffers), {2 * SEND_BUFFER})
            probe.sendall(b"still")
            self.assertEqual(probe.recv(5), b"still")
