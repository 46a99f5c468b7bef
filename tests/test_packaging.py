"""
Test what is shipped, not the checkout: build the wheel, install it into a
fresh virtual environment, and check that C{twistd} finds the plugin there.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import zipfile

from twisted.trial.unittest import SynchronousTestCase

from tests.support import checkoutWheel, venvWith


class WheelTests(SynchronousTestCase):
    """
    The wheel holds exactly the package and the one dropin, and works when
    installed on its own.
    """

    def setUp(self) -> None:
        self.wheel = checkoutWheel()
        self.tmp = tempfile.mkdtemp(prefix="netdemo-wheel-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def test_files(self) -> None:
        """
        Apart from its metadata, the wheel holds C{netdemo/...} and
        C{twisted/plugins/netdemo.py}: no C{dropin.cache}, and no
        C{__init__.py} anywhere under C{twisted/}.
        """
        with zipfile.ZipFile(self.wheel) as wheel:
            names = [n for n in wheel.namelist() if ".dist-info/" not in n]
        others = [
            n
            for n in names
            if not n.startswith("netdemo/") and n != "twisted/plugins/netdemo.py"
        ]
        self.assertEqual(others, [])
        self.assertIn("twisted/plugins/netdemo.py", names)
        self.assertIn("netdemo/tap.py", names)
        self.assertIn("netdemo/py.typed", names)
        self.assertFalse([n for n in names if n.endswith("dropin.cache")])

    def test_installedPlugin(self) -> None:
        """
        In a fresh virtual environment holding only the wheel and its
        dependencies, C{twistd --help} lists netdemo and C{twistd netdemo
        --help} exits 0.
        """
        venv = venvWith(self.tmp, self.wheel)
        twistd = str(venv / "bin" / "twistd")
        listing = subprocess.run(
            [twistd, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=self.tmp,
        )
        self.assertEqual(listing.returncode, 0, listing.stderr)
        self.assertRegex(listing.stdout, r"\n\s+netdemo\s")
        help = subprocess.run(
            [twistd, "netdemo", "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=self.tmp,
        )
        self.assertEqual(help.returncode, 0, help.stderr)
        self.assertIn("--tcp", help.stdout)
        # The installed tree has no __init__.py of ours under twisted/plugins.
        site = next((venv / "lib").glob("python*/site-packages"))
        self.assertTrue((site / "twisted" / "plugins" / "netdemo.py").exists())
