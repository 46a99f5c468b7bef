"""
Tests for the systemd units in C{docs/systemd/}: C{systemd-analyze} finds
nothing wrong with them and rates the service's exposure at most 2.0.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import tempfile
import urllib.request
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.support import (
    PATIENCE,
    Daemon,
    notifySocket,
    receiveDatagram,
    requireTool,
    socketActivation,
    twistdPath,
)

UNITS = Path(__file__).resolve().parent.parent / "docs" / "systemd"

#: The install location the units name; the tests put this venv's there.
INSTALLED_TWISTD = "/opt/netdemo/bin/twistd"


class UnitTests(SynchronousTestCase):
    """
    The shipped units pass C{systemd-analyze}.
    """

    def setUp(self) -> None:
        self.analyze = requireTool("systemd-analyze", "systemd")

    def units(self) -> list[Path]:
        """
        The units, copied to a temporary directory with C{ExecStart=} naming
        this checkout's C{twistd}: C{verify} checks that the command exists.
        """
        directory = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, directory)
        twistd = twistdPath()
        copies = []
        for unit in sorted(UNITS.glob("netdemo*.s*")):
            text = unit.read_text().replace(INSTALLED_TWISTD, twistd)
            copy = directory / unit.name
            copy.write_text(text)
            copies.append(copy)
        self.assertEqual(
            [c.name for c in copies],
            [
                "netdemo-echo.socket",
                "netdemo-http.socket",
                "netdemo-udp.socket",
                "netdemo.service",
            ],
        )
        return copies

    def verify(self, units: list[Path]) -> str:
        """
        The output of C{systemd-analyze verify}.
        """
        result = subprocess.run(
            [self.analyze, "verify", *map(str, units)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=units[0].parent,
        )
        return result.stdout + result.stderr

    def test_verify(self) -> None:
        """
        C{systemd-analyze verify} prints nothing for any unit.
        """
        self.assertEqual(self.verify(self.units()), "")

    def test_verifyComplains(self) -> None:
        """
        The check above can fail: an unknown key in the service is reported.
        """
        units = self.units()
        service = units[-1]
        service.write_text(
            service.read_text().replace("[Service]\n", "[Service]\nNoSuchKey=1\n")
        )
        self.assertIn("NoSuchKey", self.verify(units))

    def test_security(self) -> None:
        """
        C{systemd-analyze security --offline=true} rates the service at most
        2.0.
        """
        result = subprocess.run(
            [
                self.analyze,
                "security",
                "--offline=true",
                "--no-pager",
                str(UNITS / "netdemo.service"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        match = re.search(
            r"Overall exposure level for netdemo\.service: (\d+\.\d+)", result.stdout
        )
        self.assertIsNotNone(match, result.stdout + result.stderr)
        assert match is not None
        self.assertLessEqual(float(match.group(1)), 2.0, result.stdout)

    def test_serviceShape(self) -> None:
        """
        The service is C{Type=notify}, runs C{twistd} in the foreground
        without a pidfile, stops with C{KillMode=mixed} and gives the drain
        (5 s by default) time to finish.
        """
        text = (UNITS / "netdemo.service").read_text()
        for line in [
            "Type=notify",
            "KillMode=mixed",
            "DynamicUser=yes",
            "ProtectSystem=strict",
            "CapabilityBoundingSet=",
            "SystemCallFilter=@system-service",
        ]:
            self.assertIn(f"\n{line}\n", text)
        self.assertIn(f"ExecStart={INSTALLED_TWISTD} --nodaemon --pidfile= ", text)
        (stop,) = re.findall(r"\nTimeoutStopSec=(\d+)\n", text)
        self.assertGreater(int(stop), 5)

    def test_socketNames(self) -> None:
        """
        Every socket unit names its descriptor, and every socket the
        service lists is one its command line asks for by that name: a
        stream socket as C{systemd:...:name=NAME}, a datagram socket as
        C{--udp systemd:NAME}.
        """
        text = (UNITS / "netdemo.service").read_text()
        (sockets,) = re.findall(r"\nSockets=(.*)\n", text)
        self.assertEqual(
            sorted(sockets.split()), sorted(u.name for u in UNITS.glob("*.socket"))
        )
        for unit in sorted(UNITS.glob("*.socket")):
            unitText = unit.read_text()
            (name,) = re.findall(r"\nFileDescriptorName=(\S+)\n", unitText)
            if "ListenDatagram=" in unitText:
                self.assertIn(f" --udp systemd:{name}", text)
            else:
                self.assertIn(f":name={name}", text)


class ExecStartTests(SynchronousTestCase):
    """
    The service's command line, run the way its units run it.
    """

    def test_socketActivated(self) -> None:
        """
        C{ExecStart=} of C{netdemo.service}, started the way systemd starts
        it: one inherited socket per socket unit (stream and datagram
        together, which C{systemd-socket-activate} cannot mix), named by
        each unit's C{FileDescriptorName=}, on loopback ports the test
        bound instead of 7 and 8080.  It sends READY=1 naming every listener,
        echoes on the stream connection, echoes a datagram, and serves
        C{/healthz}.
        """
        try:
            with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
                probe.bind(("::1", 0))
        except OSError:
            self.skipTest("no IPv6 loopback address")
        text = (UNITS / "netdemo.service").read_text()
        (execStart,) = re.findall(r"\nExecStart=(.*)\n", text)
        (sockets,) = re.findall(r"\nSockets=(.*)\n", text)
        twistd, *options = execStart.split()
        self.assertEqual(twistd, INSTALLED_TWISTD)
        split = options.index("netdemo")
        units = {
            re.findall(r"\nFileDescriptorName=(\S+)\n", (UNITS / unit).read_text())[
                0
            ]: (UNITS / unit).read_text()
            for unit in sockets.split()
        }
        self.assertEqual(sorted(units), ["echo", "http", "udp"])
        self.assertIn("ListenDatagram=", units["udp"])
        echo = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        echo.bind(("::1", 0))
        echo.listen(16)
        http = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        http.bind(("127.0.0.1", 0))
        http.listen(16)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        inherited = {"echo": echo, "http": http, "udp": udp}
        for sock in inherited.values():
            self.addCleanup(sock.close)
        notify, address = notifySocket(self)
        daemon = Daemon(
            *options[split + 1 :],
            twistdArgs=options[:split],
            env={"NOTIFY_SOCKET": address},
            **socketActivation({name: inherited[name] for name in units}),
        )
        self.addCleanup(daemon.close)
        echoPort = echo.getsockname()[1]
        httpPort = http.getsockname()[1]
        udpPort = udp.getsockname()[1]
        ready = receiveDatagram(notify).decode("utf-8").split("\n")
        self.assertEqual(ready[0], "READY=1")
        for listener in (
            f"http on 127.0.0.1:{httpPort}",
            f"tcp-echo on [::1]:{echoPort}",
            f"127.0.0.1:{udpPort}",
        ):
            self.assertIn(listener, ready[1])
        with socket.create_connection(("::1", echoPort), timeout=PATIENCE) as client:
            client.sendall(b"activated\n")
            client.shutdown(socket.SHUT_WR)
            self.assertEqual(client.makefile("rb").read(), b"activated\n")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(PATIENCE)
            client.connect(("127.0.0.1", udpPort))
            client.send(b"datagram")
            self.assertEqual(client.recv(100), b"datagram")
        # No proxy from the environment for loopback.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(
            f"http://127.0.0.1:{httpPort}/healthz", timeout=PATIENCE
        ) as response:
            self.assertEqual(response.read(), b"ok\n")
        daemon.stop()
