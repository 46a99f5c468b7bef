"""
The status page in a real headless browser (Debian's C{chromium}, driven
with Selenium and C{chromedriver}): its live numbers follow real traffic to
a real C{twistd netdemo}.  The screenshots C{test_dashboard} takes are the
ones C{docs/operations.md} shows: run it with C{NETDEMO_SCREENSHOT=docs} to
replace C{docs/images/status-page.png} and C{status-page-dark.png} (other
runs keep them in a temporary directory).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from netdemo.dashboard import formatBytes
from tests.support import Daemon, poll, requireTool

SCREENSHOT = (
    Path(__file__).resolve().parent.parent / "docs" / "images" / "status-page.png"
)
DARK_SCREENSHOT = SCREENSHOT.with_name("status-page-dark.png")

#: A figure with a unit: C{51.8 MiB}, C{101.3 KiB/s}.
UNIT = r"^[\d.,]+ (B|KiB|MiB|GiB)(/s)?$"

#: Seconds any one step may take, at most (the machine is shared).
STEP = 60.0

#: The flags that make Chromium run headless as root in a container, and
#: never reach past loopback.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1100,900",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]


def run(driver: Any, script: str, *args: Any) -> Any:
    """
    C{driver.execute_script}, tried again (for at most L{STEP} seconds)
    while the page is being loaded.
    """
    from selenium.common.exceptions import JavascriptException, TimeoutException

    deadline = time.monotonic() + STEP
    while True:
        try:
            return driver.execute_script(script, *args)
        except (JavascriptException, TimeoutException):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _startDaemon(testCase: SynchronousTestCase) -> tuple[str, str]:
    """
    Start C{twistd netdemo} with the echo and HTTP services on ephemeral
    loopback ports; return their addresses, from its C{listening} events.
    """
    daemon = Daemon(
        "--tcp=tcp:0:interface=127.0.0.1", "--http=tcp:0:interface=127.0.0.1"
    )
    testCase.addCleanup(daemon.close)
    daemon.waitListening(2, STEP)
    return daemon.addresses("tcp-echo")[0], daemon.addresses("http")[0]


class StatusPageBrowserTests(SynchronousTestCase):
    """
    The status page as a person sees it.
    """

    def setUp(self) -> None:
        self.chromium = requireTool("chromium", "chromium")
        self.chromedriver = requireTool("chromedriver", "chromium-driver")

    def browser(self) -> Any:
        """
        A headless Chromium with a fresh profile, closed after the test.
        """
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        profile = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, profile, True)
        options = webdriver.ChromeOptions()
        options.binary_location = self.chromium
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(
            options=options, service=Service(executable_path=self.chromedriver)
        )
        self.addCleanup(driver.quit)
        driver.set_page_load_timeout(STEP)
        return driver

    def waitFor(self, condition: Any, what: str, during: Any = None) -> Any:
        """
        Poll C{condition()} until it is true (at most L{STEP} seconds),
        calling C{during()} between polls.
        """

        def check() -> Any:
            value = condition()
            if not value and during is not None:
                during()
            return value

        return poll(check, what, STEP, interval=0.1)

    def test_liveNumbers(self) -> None:
        """
        Loaded in Chromium, the page shows the echo service and its
        listener; while traffic flows the received-bytes figure climbs to
        what was sent, with its unit, its rate and the open connection
        count become non-zero, the received-bytes graph is drawn and
        changes, and the page is kept up to date by its event stream
        (C{/status/events}).  Its style sheet and script (the only assets,
        from the daemon itself, under its Content-Security-Policy) apply;
        in dark mode its colours follow.  Nothing is loaded from anywhere
        but the daemon.
        """
        echo, http = _startDaemon(self)
        driver = self.browser()
        base = f"http://{http}/"
        driver.get(base)
        self.assertEqual(driver.title, "netdemo status")
        self.assertIn(
            f"listening on {echo}",
            run(driver, "return document.getElementById('service-tcp-echo').innerText"),
        )

        def text(selector: str) -> str:
            value: str = run(
                driver,
                "var e = document.querySelector(arguments[0]);"
                "return e ? e.textContent : null;",
                selector,
            )
            return value

        def path(key: str) -> str:
            value: str = run(
                driver,
                "var e = document.querySelector('[data-path=\"' + arguments[0]"
                " + '\"]'); return e ? e.getAttribute('d') : null;",
                key,
            )
            return value

        def count(selector: str) -> int:
            return int(text(selector).replace(",", ""))

        self.assertEqual(
            run(
                driver,
                "return getComputedStyle(document.querySelector('.cards')).display",
            ),
            "grid",
            "the style sheet applies",
        )
        received = "[data-series='netdemo_received_bytes_total{service=\"tcp-echo\"}']"
        rate = "[data-headline='bytesIn']"
        # The card counts every service's connections, the page's own too.
        opened = "[data-series='netdemo_connections_current{service=\"tcp-echo\"}']"
        self.assertEqual(text(received), "0 B")
        for key in ("connections", "bytesIn", "cpu", "rss", "fds", "refusals"):
            self.assertIsNotNone(text(f"[data-headline='{key}']"), key)
        self.assertRegex(text("[data-headline='rss']"), UNIT)
        first = text("#updated")
        self.waitFor(
            lambda: (
                text("#updated") != first
                and run(driver, "return document.body?.dataset.live") == "events"
            ),
            "the page to be updated by its event stream",
        )
        self.assertGreaterEqual(count("#requests"), 3)
        before = path("bytesIn")

        host, port = echo.rsplit(":", 1)
        client = socket.create_connection((host, int(port)), timeout=STEP)
        self.addCleanup(client.close)
        sent = 0
        chunk = b"x" * 10000

        def traffic() -> None:
            nonlocal sent
            if sent < 2_000_000:
                client.sendall(chunk)
                sent += len(chunk)
                echoed = client.recv(len(chunk), socket.MSG_WAITALL)
                self.assertEqual(len(echoed), len(chunk))

        self.waitFor(
            lambda: (
                text(opened) == "1"
                and count("[data-headline='connections']") >= 2
                and re.fullmatch(r"[\d.]+ (B|KiB|MiB)/s", text(rate))
                and text(rate) != "0 B/s"
            ),
            "a non-zero byte rate and one open connection",
            during=traffic,
        )
        self.assertGreater(sent, 0)
        self.waitFor(
            lambda: (
                path("bytesIn") not in ("", before)
                and re.search(r"L[\d.]+,(?!40\.0)", path("bytesIn"))
            ),
            "the received-bytes graph to rise",
            during=traffic,
        )
        self.assertRegex(text("[data-peak='bytesIn']"), UNIT)
        light = self.screenshot(driver, Path("light.png"))
        background = run(
            driver, "return getComputedStyle(document.body).backgroundColor"
        )
        driver.execute_cdp_cmd(
            "Emulation.setEmulatedMedia",
            {"features": [{"name": "prefers-color-scheme", "value": "dark"}]},
        )
        self.assertNotEqual(
            run(driver, "return getComputedStyle(document.body).backgroundColor"),
            background,
            "the page follows prefers-color-scheme",
        )
        dark = self.screenshot(driver, Path("dark.png"))
        self.assertNotEqual(light, dark)
        final = sent
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
            base + "status.json", timeout=STEP
        ) as response:
            document = json.load(response)
        self.assertEqual(document["schema"], 3)
        self.waitFor(
            lambda: text(received) == formatBytes(final),
            f"received bytes to reach {formatBytes(final)}",
        )
        resources = run(
            driver, "return performance.getEntriesByType('resource').map(e => e.name);"
        )
        self.assertTrue(resources, "the page fetched status.json")
        for url in resources:
            self.assertTrue(url.startswith(base), url)
        self.assertIn(base + "static/dashboard.js", resources)

    def test_pollingFallback(self) -> None:
        """
        When the daemon has as many event streams open as it allows, the
        page it refuses one (C{503}) polls C{/status.json} instead, and
        stays up to date.
        """
        from netdemo.web import MAX_EVENT_STREAMS

        _, http = _startDaemon(self)
        host, port = http.rsplit(":", 1)
        for _ in range(MAX_EVENT_STREAMS):
            stream = socket.create_connection((host, int(port)), timeout=STEP)
            self.addCleanup(stream.close)
            stream.sendall(b"GET /status/events HTTP/1.1\r\nHost: x\r\n\r\n")
            self.assertTrue(stream.recv(100).startswith(b"HTTP/1.1 200 "))
        driver = self.browser()
        driver.get(f"http://{http}/")

        def state() -> tuple[str, str]:
            live, updated = run(
                driver,
                "return [document.body?.dataset.live || '',"
                " document.getElementById('updated').textContent];",
            )
            return str(live), str(updated)

        first = state()[1]
        self.waitFor(
            lambda: state()[0] == "polling" and state()[1] != first,
            "the page to poll once its event stream is refused",
        )

    def test_dashboard(self) -> None:
        """
        With traffic flowing from echo, the hub, UDP echo, and a second
        instance on the multicast group, the page shows hub lines and
        datagrams per second with their graphs rising, the busiest
        connections (echo's and the hub's), the hub's busiest topic with
        its subscribers and lines/s, and the other instance in the
        multicast peers table with its address, loss and jitter.  Its
        screenshots, light and dark, are the ones C{docs/operations.md}
        shows.
        """
        from tests.test_datagram_flood import heldPort

        _, port = heldPort(self)
        group = f"239.255.80.115:{port},interface=127.0.0.1"
        daemon = Daemon(
            "--tcp=tcp:0:interface=127.0.0.1",
            "--pubsub=tcp:0:interface=127.0.0.1",
            "--udp=127.0.0.1:0",
            f"--multicast={group}",
            "--announce-interval=0.3",
            "--http=tcp:0:interface=127.0.0.1",
        )
        self.addCleanup(daemon.close)
        daemon.waitListening(5, STEP)
        other = Daemon(f"--multicast={group}", "--announce-interval=0.3")
        self.addCleanup(other.close)
        other.waitListening(1, STEP)
        driver = self.browser()
        driver.get(f"http://{daemon.addresses('http')[0]}/")

        def text(selector: str) -> str | None:
            value: str | None = run(
                driver,
                "var e = document.querySelector(arguments[0]);"
                "return e ? e.textContent : null;",
                selector,
            )
            return value

        echo = socket.create_connection(daemon.address("tcp-echo"), timeout=STEP)
        self.addCleanup(echo.close)
        publisher = socket.create_connection(daemon.address("pubsub"), timeout=STEP)
        self.addCleanup(publisher.close)
        reader = socket.create_connection(daemon.address("pubsub"), timeout=STEP)
        self.addCleanup(reader.close)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(udp.close)
        udpEcho = daemon.address("udp-echo")
        for sock in (reader, udp, publisher):
            sock.setblocking(False)
        rounds = 0

        def traffic() -> None:
            nonlocal rounds
            if rounds >= 3000:
                return
            rounds += 1
            echo.sendall(b"y" * 2000)
            echo.recv(2000, socket.MSG_WAITALL)
            publisher.sendall(b"reading %d\n" % rounds)
            udp.sendto(b"ping %d" % rounds, udpEcho)
            for sock in (reader, udp, publisher):
                try:
                    while sock.recv(65536):
                        pass
                except BlockingIOError:
                    pass

        def moving(key: str) -> bool:
            shown = text(f"[data-headline='{key}']") or ""
            path = run(
                driver,
                "var e = document.querySelector('[data-path=\"' + arguments[0]"
                " + '\"]'); return e ? e.getAttribute('d') : '';",
                key,
            )
            return bool(
                re.fullmatch(r"[\d.,]+/s", shown)
                and shown != "0/s"
                and re.search(r"L[\d.]+,(?!40\.0)", path)
            )

        self.waitFor(
            lambda: moving("linesIn") and moving("linesOut") and moving("datagramsIn"),
            "hub lines and datagrams per second, graphed",
            during=traffic,
        )
        self.waitFor(
            lambda: (
                run(
                    driver,
                    "return document.querySelectorAll('#panel-multicast tr[data-peer]')"
                    ".length",
                )
                == 1
            ),
            "the other instance in the multicast peers table",
            during=traffic,
        )
        cells = run(
            driver,
            "return Array.from(document.querySelectorAll("
            "'#panel-multicast tr[data-peer] td')).map(e => e.textContent)",
        )
        self.assertEqual(cells[1], "127.0.0.1")
        self.assertRegex(cells[2], r"^\d+ s ago$")
        self.assertRegex(cells[5], r"^[\d.]+ %$")
        self.assertRegex(cells[6], r"^[\d.]+ (µs|ms|s)$")
        self.waitFor(
            lambda: (
                {"tcp-echo", "pubsub"}
                <= set(
                    run(
                        driver,
                        "return Array.from(document.querySelectorAll("
                        "'[data-connections] tr td:first-child'))"
                        ".map(e => e.textContent)",
                    )
                )
            ),
            "echo and hub connections in the connections table",
            during=traffic,
        )

        def hubRow() -> list[str]:
            cells: list[str] = run(
                driver,
                "return Array.from(document.querySelectorAll("
                "'[data-hub-topics] tr:first-child td')).map(e => e.textContent)",
            )
            return cells

        self.waitFor(
            lambda: (
                (row := hubRow())
                and row[:2] == ["chat", "2"]
                and re.fullmatch(r"[\d.,]+/s", row[2])
                and row[2] != "0/s"
            ),
            "the busiest topic, its subscribers and lines/s in the hub panel",
            during=traffic,
        )
        # On a phone's width the page needs no sideways scrolling (wide
        # tables scroll inside their sections).
        driver.set_window_size(390, 844)
        self.waitFor(
            lambda: run(
                driver,
                "return document.documentElement.scrollWidth"
                " <= document.documentElement.clientWidth"
                " && window.innerWidth <= 400",
            ),
            "the page to fit a phone's width",
        )
        self.screenshot(driver, SCREENSHOT)
        driver.execute_cdp_cmd(
            "Emulation.setEmulatedMedia",
            {"features": [{"name": "prefers-color-scheme", "value": "dark"}]},
        )
        self.screenshot(driver, DARK_SCREENSHOT)

    def screenshot(self, driver: Any, path: Path) -> bytes:
        """
        Save a screenshot of the whole page to C{path} if
        C{NETDEMO_SCREENSHOT=docs} and C{path} is absolute, else to a
        temporary directory; return it.
        """
        if os.environ.get("NETDEMO_SCREENSHOT") != "docs" or not path.is_absolute():
            # Keep the tree clean on ordinary runs.
            path = Path(tempfile.mkdtemp()) / path.name
            self.addCleanup(shutil.rmtree, path.parent)
        height = run(driver, "return document.body.scrollHeight")
        # The top of a long page: the figures, the panels and the
        # connections.
        driver.set_window_size(1100, min(max(900, height + 40), 1500))
        self.assertTrue(driver.save_screenshot(str(path)))
        data = path.read_bytes()
        self.assertEqual(data[:8], b"\x89PNG\r\n\x1a\n")
        return data
