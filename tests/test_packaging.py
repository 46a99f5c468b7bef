"""
Test what is shipped, not the checkout: build the wheel, install it into a
fresh virtual environment, and check that C{twistd} finds the plugin there.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import unittest
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class WheelTests(unittest.TestCase):
    """
    The wheel holds exactly the package and the one dropin, and works when
    installed on its own.
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.tmp = tempfile.TemporaryDirectory(prefix="netdemo-wheel-")
        out = Path(cls.tmp.name) / "dist"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "-q",
                "-w",
                str(out),
                str(ROOT),
            ],
            check=True,
            capture_output=True,
            timeout=300,
        )
        [cls.wheel] = out.glob("netdemo-*.whl")

    @classmethod
    def tearDownClass(cls) -> None:
        cls.tmp.cleanup()

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
        venv = Path(self.tmp.name) / "venv"
        subprocess.run(
            [sys.executable, "-m", "venv", str(venv)], check=True, timeout=120
        )
        subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "-q",
                str(self.wheel),
            ],
            check=True,
            capture_output=True,
            timeout=600,
        )
        twistd = str(venv / "bin" / "twistd")
        listing = subprocess.run(
            [twistd, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=self.tmp.name,
        )
        self.assertEqual(listing.returncode, 0, listing.stderr)
        self.assertRegex(listing.stdout, r"\n\s+netdemo\s")
        help = subprocess.run(
            [twistd, "netdemo", "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=self.tmp.name,
        )
        self.assertEqual(help.returncode, 0, help.stderr)
        self.assertIn("--tcp", help.stdout)
        # The installed tree has no __init__.py of ours under twisted/plugins.
        site = next((venv / "lib").glob("python*/site-packages"))
        self.assertTrue((site / "twisted" / "plugins" / "netdemo.py").exists())
