"""
The hub in a real headless browser (Debian's C{chromium}, driven with
Selenium and C{chromedriver}, as C{tests/test_browser.py} drives the status
page): two C{/hub} tabs and a plain TCP client chat on two topics (the
screenshot C{docs/protocol.md} shows: run with C{NETDEMO_SCREENSHOT=docs}
to replace C{docs/images/hub-page.png}); a tab reading C{lab.>} over
Server-Sent Events keeps a contiguous sequence across a server-side drop;
a page of another origin is refused; a WebSocket client that stops reading
is cut while the tabs go on.
"""

from __future__ import annotations

import socket
import threading
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests import test_browser
from tests.support import Daemon, poll
from tests.test_browser import STEP, run
from tests.test_webhub import HubClient, wsConnect


class HubPageBrowserTests(SynchronousTestCase):
    """
    The C{/hub} page as people use it.
    """

    def setUp(self) -> None:
        test_browser.StatusPageBrowserTests.setUp(self)  # type: ignore[arg-type]

    def browser(self) -> Any:
        """
        A headless Chromium with a fresh profile, closed after the test (as
        the status page's tests make it).
        """
        return test_browser.StatusPageBrowserTests.browser(self)  # type: ignore[arg-type]

    def daemon(self, *args: str) -> tuple[Daemon, str]:
        daemon = Daemon(
            "--pubsub=tcp:0:interface=127.0.0.1",
            "--http=tcp:0:interface=127.0.0.1",
            *args,
        )
        self.addCleanup(daemon.close)
        daemon.waitListening(2, STEP)
        host, port = daemon.address("http")
        return daemon, f"{host}:{port}"

    def received(self, driver: Any, tab: str) -> list[tuple[str, str, str]]:
        """
        What the tab was delivered: (topic, sender, text) each.
        """
        driver.switch_to.window(tab)
        items = run(driver, "return window.netdemoHub.received;")
        return [(m["topic"], m["from"], m["text"]) for m in items]

    def hasAtLeast(self, driver: Any, tab: str, count: int) -> bool:
        """
        Whether the tab was delivered at least C{count} lines.
        """
        return len(self.received(driver, tab)) >= count

    def hasExactly(
        self, driver: Any, tab: str, expected: list[tuple[str, str, str]]
    ) -> bool:
        """
        Whether the tab was delivered exactly C{expected}, in any order.
        """
        return sorted(self.received(driver, tab)) == expected

    def open(self, driver: Any, url: str, new: bool = True) -> str:
        """
        Open C{url} in a new tab (or the current one); return the tab.
        """
        if new:
            driver.switch_to.new_window("tab")
        driver.get(url)
        return str(driver.current_window_handle)

    def submit(self, driver: Any, tab: str, form: str, **fields: str) -> None:
        """
        Fill in and submit one of the page's forms, as a person would.
        """
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys

        driver.switch_to.window(tab)
        last = None
        for name, value in fields.items():
            element = driver.find_element(By.ID, f"{form}-{name}")
            element.clear()
            element.send_keys(value)
            last = element
        assert last is not None
        last.send_keys(Keys.ENTER)

    def test_chatInAllDirections(self) -> None:
        """
        Two tabs and a TCP client (as C{nc}) chat on C{chat} and C{lab.x}:
        everyone gets every line of the others exactly once, from the right
        sender on the right topic, and never their own.  Then a WebSocket
        client that stops reading is cut by the slow-consumer policy while
        both tabs get every line of a flood.
        """
        daemon, http = self.daemon("--max-pending=64KiB")
        driver = self.browser()
        tabs: dict[str, str] = {}
        for name in ("alice", "bob"):
            tab = self.open(driver, f"http://{http}/hub", new=bool(tabs))
            self.assertEqual(driver.title, "netdemo hub")
            poll(
                lambda: run(driver, "return window.netdemoHub.opened;") == 1,
                "the WebSocket to open",
                STEP,
            )
            self.submit(driver, tab, "nick", name=name)
            self.submit(driver, tab, "sub", pattern="lab.x")
            # Answered in order: the nickname was answered before.
            poll(
                lambda: "lab.x" in run(driver, "return window.netdemoHub.subs;"),
                "the nickname and subscription",
                STEP,
            )
            tabs[name] = tab
        nc = HubClient(daemon.address("pubsub"))
        self.addCleanup(nc.close)
        nc.line()
        nc.send(b"/nick carol\n/sub lab.x\n")
        nc.until(lambda line: line.startswith(b"+OK subscribed"))
        for name in ("alice", "bob"):
            driver.switch_to.window(tabs[name])
            poll(
                lambda: "carol" in run(driver, "return window.netdemoHub.who;"),
                "the tab to see carol present",
                STEP,
            )
        for name, tab in tabs.items():
            self.submit(driver, tab, "send", topic="chat", text=f"{name} on chat")
            self.submit(driver, tab, "send", topic="lab.x", text=f"{name} on lab")
        nc.send(b"carol on chat\n/pub lab.x carol on lab\n")
        lines = {
            ("chat", "alice", "alice on chat"),
            ("lab.x", "alice", "alice on lab"),
            ("chat", "bob", "bob on chat"),
            ("lab.x", "bob", "bob on lab"),
            ("chat", "carol", "carol on chat"),
            ("lab.x", "carol", "carol on lab"),
        }
        for name, tab in tabs.items():
            expected = sorted(line for line in lines if line[1] != name)
            poll(
                partial(self.hasExactly, driver, tab, expected),
                f"{name}'s tab to get the others' lines",
                STEP,
            )
        seen: list[bytes] = []
        for _ in range(4):
            seen.extend(
                nc.until(lambda line: line.startswith((b"<", b"[")) and b" on " in line)
            )
        deliveries = sorted(line for line in seen if b" on " in line)
        self.assertEqual(
            deliveries,
            sorted(
                [
                    b"<alice> alice on chat",
                    b"<bob> bob on chat",
                    b"[lab.x] <alice> alice on lab",
                    b"[lab.x] <bob> bob on lab",
                ]
            ),
        )
        # The picture docs/protocol.md shows (NETDEMO_SCREENSHOT=docs).
        driver.switch_to.window(tabs["bob"])
        test_browser.StatusPageBrowserTests.screenshot(
            self,  # type: ignore[arg-type]
            driver,
            test_browser.SCREENSHOT.with_name("hub-page.png"),
        )
        for name, tab in tabs.items():
            # Still exactly once, now that carol got everything too.
            self.assertTrue(
                self.hasExactly(
                    driver, tab, sorted(line for line in lines if line[1] != name)
                )
            )
        # The slow consumer: a WebSocket client that stops reading.
        stalled = wsConnect(
            http, sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),)
        )
        self.addCleanup(stalled.close)
        stalled.recv()
        stalled.send("/sub flood")
        for tab in tabs.values():
            self.submit(driver, tab, "sub", pattern="flood")
            poll(
                lambda: "flood" in run(driver, "return window.netdemoHub.subs;"),
                "the tab's subscription",
                STEP,
            )
        before = {name: len(self.received(driver, tab)) for name, tab in tabs.items()}
        total = 1500
        line = b"z" * 1000
        for start in range(0, total, 100):
            nc.send(
                b"".join(
                    b"/pub flood %d %s\n" % (i, line) for i in range(start, start + 100)
                )
            )
            for name, tab in tabs.items():
                poll(
                    partial(self.hasAtLeast, driver, tab, before[name] + start + 100),
                    f"{name}'s tab to get the flood",
                    STEP,
                )
        for tab in tabs.values():
            flood = [m for m in self.received(driver, tab) if m[0] == "flood"]
            self.assertEqual(
                [int(m[2].split(" ")[0]) for m in flood], list(range(total))
            )
        poll(
            lambda: (
                daemon.statusValue(
                    "netdemo_refused_total", service="pubsub", reason="slow-consumer"
                )
                == 1
            ),
            "the stalled client to be cut",
            STEP,
        )

    def test_eventStreamResumes(self) -> None:
        """
        A tab reading C{lab.>} over Server-Sent Events, whose connection the
        daemon drops (its idle timeout), reconnects with C{Last-Event-ID}
        and is replayed what was published meanwhile: each topic's
        sequence stays contiguous, nothing twice.
        """
        daemon, http = self.daemon("--idle-timeout=2")
        driver = self.browser()
        self.open(driver, f"http://{http}/hub?sse=lab.%3E", new=False)
        poll(
            lambda: run(driver, "return window.netdemoHub.opened;") >= 1,
            "the event stream to open",
            STEP,
        )
        errors = run(driver, "return window.netdemoHub.errors;")

        def publish(start: int, stop: int) -> None:
            client = HubClient(daemon.address("pubsub"))
            try:
                client.line()
                for i in range(start, stop):
                    topic = b"lab.a" if i % 2 else b"lab.b.c"
                    client.send(b"/pub %s line %d\n" % (topic, i))
                    client.until(lambda line: line == b"+OK")
            finally:
                client.close()

        def texts() -> list[str]:
            return [m[2] for m in self.received(driver, driver.current_window_handle)]

        publish(0, 6)
        poll(lambda: len(texts()) == 6, "the first lines", STEP)
        poll(
            lambda: run(driver, "return window.netdemoHub.errors;") > errors,
            "the daemon to drop the idle stream",
            STEP,
        )
        publish(6, 12)
        poll(lambda: len(texts()) >= 12, "the lines published after the drop", STEP)
        # Each topic in order; a replay gives one topic's lines, then the
        # next one's.
        self.assertEqual(len(texts()), 12)
        self.assertEqual(sorted(texts()), sorted(f"line {i}" for i in range(12)))
        received = run(driver, "return window.netdemoHub.received;")
        for topic in ("lab.a", "lab.b.c"):
            mine = [m for m in received if m["topic"] == topic]
            seqs = [m["seq"] for m in mine]
            self.assertEqual(seqs, list(range(seqs[0], seqs[0] + 6)), topic)
            numbers = [int(m["text"].split()[1]) for m in mine]
            self.assertEqual(numbers, sorted(numbers), topic)
        self.assertEqual(run(driver, "return window.netdemoHub.gaps;"), [])
        self.assertGreaterEqual(
            daemon.statusValue("netdemo_http_hub_resumes_total", service="http"), 1
        )

    def test_otherOriginRefused(self) -> None:
        """
        A page served from another origin that opens the hub's WebSocket
        and event stream is refused (403, counted as C{origin}): its socket
        never opens.
        """
        daemon, http = self.daemon()
        page = (
            "<!DOCTYPE html><title>other</title><script>"
            "window.result = {ws: 'pending', es: 'pending'};"
            f"var ws = new WebSocket('ws://{http}/hub/ws');"
            "ws.onopen = function () { window.result.ws = 'open'; };"
            "ws.onclose = function () { if (window.result.ws === 'pending')"
            " window.result.ws = 'refused'; };"
            f"var es = new EventSource('http://{http}/hub/events?sub=chat');"
            "es.onopen = function () { window.result.es = 'open'; };"
            "es.onerror = function () { if (window.result.es === 'pending')"
            " window.result.es = 'refused'; es.close(); };"
            "</script>"
        ).encode()

        class Page(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("content-type", "text/html")
                self.send_header("content-length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        self.addCleanup(thread.join, STEP)
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        driver = self.browser()
        driver.get(f"http://127.0.0.1:{server.server_address[1]}/")
        poll(
            lambda: (
                run(driver, "return window.result;")
                == {"ws": "refused", "es": "refused"}
            ),
            "both to be refused",
            STEP,
        )
        self.assertEqual(
            daemon.statusValue(
                "netdemo_refused_total", service="http", reason="origin"
            ),
            2,
        )
