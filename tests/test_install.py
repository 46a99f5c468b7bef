"""
The install instructions of C{docs/operations.md}: after the plugin cache
is regenerated as the installing user, a service user that cannot write
C{site-packages} starts C{twistd netdemo} without an errno 13 complaint.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.support import ROOT, Daemon, checkoutWheel, requireTool, venvWith

#: The command of the install instructions, with the venv's python first.
REGENERATE = (
    "-c",
    "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))",
)

#: The user the daemon runs as in this test.
NOBODY = 65534


class PluginCacheTests(SynchronousTestCase):
    """
    Install a wheel into a fresh virtual environment as root, then run
    C{twistd netdemo} as an unprivileged user.
    """

    def setUp(self) -> None:
        if os.geteuid() != 0:
            self.skipTest("needs root, to run the daemon as another user")
        self.setpriv = requireTool("setpriv", "util-linux")
        self.tmp = tempfile.mkdtemp(prefix="netdemo-install-")
        self.addCleanup(shutil.rmtree, self.tmp)
        os.chmod(self.tmp, 0o755)

    def runAsServiceUser(self, venv: Path) -> str:
        """
        Run the daemon as the service user until it is ready; return its
        log.
        """
        with Daemon(
            "--tcp=tcp:0:interface=127.0.0.1",
            "--http=tcp:0:interface=127.0.0.1",
            launcher=[
                self.setpriv,
                f"--reuid={NOBODY}",
                f"--regid={NOBODY}",
                "--clear-groups",
            ],
            twistd=str(venv / "bin" / "twistd"),
            # The service user cannot write the daemon's own directory.
            twistdArgs=["--logfile=-"],
            cwd=self.tmp,
        ) as daemon:
            daemon.waitFor(r"netdemo \S+ ready \(", timeout=60)
            daemon.stop()
            return daemon.log()

    def test_regenerated(self) -> None:
        """
        Before the documented command, the service user's daemon logs
        errno 13 for the plugin cache; after it, it does not.
        """
        operations = (ROOT / "docs" / "operations.md").read_text()
        self.assertIn(f'/opt/netdemo/bin/python -c "{REGENERATE[1]}"', operations)
        venv = venvWith(self.tmp, checkoutWheel())
        complaint = "Unable to write to plugin cache"
        self.assertIn(complaint, self.runAsServiceUser(venv))
        subprocess.run(
            [str(venv / "bin" / "python"), *REGENERATE], check=True, timeout=120
        )
        log = self.runAsServiceUser(venv)
        self.assertNotIn(complaint, log)
        self.assertIn("tcp-echo: listening on 127.0.0.1:", log)
