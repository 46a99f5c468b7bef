"""
Seed 001 ("Twisted 框架 初印象"): its three servers are the TCP echo, the
web counter and the chat room; the clients it has you use are C{telnet}
(here C{nc}, netcat-openbsd) and a browser (here C{urllib}).  netdemo runs
all three systems: C{--tcp}, C{--http} (whose request counter counts each
client's requests) and C{--pubsub}.
"""

from __future__ import annotations

import re
import urllib.request

from tests.seeds.programs import DaemonTestCase, Program
from tests.support import PATIENCE, poll, requireTool


class TutorialTests(DaemonTestCase):
    """
    The tutorial's clients against one daemon running its three systems.
    """

    DAEMON_ARGS = (
        "--tcp",
        "tcp:0:interface=127.0.0.1",
        "--pubsub",
        "tcp:0:interface=127.0.0.1",
        "--http",
        "tcp:0:interface=127.0.0.1",
    )
    LISTENERS = 3

    def telnet(self, service: str) -> Program:
        """
        C{telnet localhost PORT}, as the tutorial says (C{nc}).
        """
        nc = requireTool("nc", "netcat-openbsd")
        port = str(self.daemon.port(service))
        return Program(self, "telnet", command=[nc, "127.0.0.1", port])

    def test_echo(self) -> None:
        """
        What is typed at the echo comes back.
        """
        echo = self.telnet("tcp-echo")
        echo.write(b"hello, echo\n")
        echo.waitFor("^hello, echo$")

    def test_chat(self) -> None:
        """
        Two terminals on the chat room: what one types, the other sees,
        after the sender's address, as in the tutorial's chat.
        """
        first, second = self.telnet("pubsub"), self.telnet("pubsub")
        for terminal in (first, second):
            terminal.waitFor(r"^\* welcome to netdemo pubsub")
        first.write(b"hi from the first terminal\n")
        [(_, line)] = second.waitFor(
            r"^<(127\.0\.0\.1:\d+)> hi from the first terminal$"
        )
        second.write(b"and from the second\n")
        first.waitFor(r"^<127\.0\.0\.1:\d+> and from the second$")
        self.assertNotEqual(line[1], "")

    def test_counter(self) -> None:
        """
        The web counter counts every request: a browser's requests of the
        status page are counted, one by one (C{/metrics} is rendered at most
        twice a second: the count shows in a render after the requests).
        """
        host, port = self.daemon.address("http")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        series = 'netdemo_http_requests_total{path="/",service="http"}'

        def count() -> int:
            with opener.open(f"http://{host}:{port}/metrics", timeout=PATIENCE) as r:
                text = r.read().decode()
            match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
            return int(float(match[1])) if match else 0

        before = count()
        for _ in range(5):
            with opener.open(f"http://{host}:{port}/", timeout=PATIENCE) as page:
                self.assertEqual(page.status, 200)
        poll(lambda: count() == before + 5, f"{before + 5} requests counted")
