"""
The status page in a real headless browser (Debian's C{chromium}, driven
with Selenium and C{chromedriver}): its live numbers follow real traffic to
a real C{twistd netdemo}.  The screenshot it takes is the one
C{docs/operations.md} shows: run it with C{NETDEMO_SCREENSHOT=docs} to
replace C{docs/images/status-page.png} (other runs keep it in a temporary
directory).
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.support import Daemon, poll, requireTool

SCREENSHOT = (
    Path(__file__).resolve().parent.parent / "docs" / "images" / "status-page.png"
)

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
        listener; while traffic flows the received-bytes counter climbs to
        what was sent, its rate and the open connection count become
        non-zero, and the page's own request counter goes up as it
        refreshes itself.  Nothing is loaded from anywhere but the daemon.
        """
        echo, http = _startDaemon(self)
        driver = self.browser()
        base = f"http://{http}/"
        driver.get(base)
        self.assertEqual(driver.title, "netdemo status")
        section = driver.find_element("id", "service-tcp-echo")
        self.assertIn(f"listening on {echo}", section.text)

        def text(selector: str) -> str:
            value: str = driver.execute_script(
                "var e = document.querySelector(arguments[0]);"
                "return e ? e.textContent : null;",
                selector,
            )
            return value

        received = "[data-series='netdemo_received_bytes_total{service=\"tcp-echo\"}']"
        rate = "[data-rate='netdemo_received_bytes_total{service=\"tcp-echo\"}']"
        # The card counts every service's connections, the page's own too.
        opened = "[data-series='netdemo_connections_current{service=\"tcp-echo\"}']"
        self.assertEqual(text(received), "0")
        first = int(text("#requests"))
        self.waitFor(
            lambda: int(text("#requests")) > first + 1, "the page to refresh itself"
        )

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
                and int(text("#open")) >= 2
                and text(rate) not in ("\u2013", "0.0")
                and float(text(rate)) > 0
            ),
            "a non-zero byte rate and one open connection",
            during=traffic,
        )
        self.assertGreater(sent, 0)
        if os.environ.get("NETDEMO_SCREENSHOT") == "docs":
            screenshot = SCREENSHOT
        else:
            # Keep the tree clean on ordinary runs.
            screenshot = Path(tempfile.mkdtemp()) / SCREENSHOT.name
            self.addCleanup(shutil.rmtree, screenshot.parent)
        self.assertTrue(driver.save_screenshot(str(screenshot)))
        self.assertEqual(screenshot.read_bytes()[:8], b"\x89PNG\r\n\x1a\n")
        final = sent
        self.waitFor(
            lambda: text(received) == str(final), f"received bytes to reach {final}"
        )
        resources = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name);"
        )
        self.assertTrue(resources, "the page fetched status.json")
        for url in resources:
            self.assertTrue(url.startswith(base), url)
