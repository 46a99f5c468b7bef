"""
Tests for C{tools/deps.py}, the import graph of C{src/netdemo} (C{make
deps}), and the rules it checks on the real source: no import cycle, no
service module importing another.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from textwrap import dedent

from tools.deps import (
    LAZY,
    TOP,
    TYPE,
    Edge,
    cycles,
    importGraph,
    report,
    serviceImports,
)
from twisted.trial.unittest import SynchronousTestCase

from tests.support import ROOT

SCRIPT = ROOT / "tools" / "deps.py"


class GraphTests(SynchronousTestCase):
    """
    The graph of a small package written by the test.
    """

    def package(self, files: dict[str, str]) -> Path:
        """
        A package C{pkg} holding C{files} (name relative to the package:
        source), removed after the test.
        """
        directory = Path(tempfile.mkdtemp(prefix="netdemo-deps-")) / "pkg"
        self.addCleanup(shutil.rmtree, directory.parent)
        for name, source in {"__init__.py": "", **files}.items():
            path = directory / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(dedent(source))
        return directory

    def test_kinds(self) -> None:
        """
        Imports at the top, inside functions and under C{TYPE_CHECKING} are
        all edges, marked; relative imports and C{from pkg import module}
        resolve to the module; other packages are left out; a module
        imported several ways is listed once, the way that binds most.
        """
        graph = importGraph(
            self.package(
                {
                    "a.py": """
                        from __future__ import annotations
                        import os
                        from typing import TYPE_CHECKING
                        from pkg import b
                        from .sub import c
                        if TYPE_CHECKING:
                            from pkg.d import Thing
                            from pkg.t import Other
                            from . import b
                        def f():
                            import pkg.e
                            from pkg import d
                    """,
                    "b.py": "",
                    "d.py": "",
                    "e.py": "import pkg\n",
                    "t.py": "",
                    "sub/__init__.py": "from . import c\nfrom .. import b\n",
                    "sub/c.py": "from ..b import name\n",
                }
            )
        )
        self.assertEqual(
            [(edge.target, edge.kind) for edge in graph["pkg.a"]],
            [
                ("pkg.b", TOP),
                ("pkg.d", LAZY),
                ("pkg.e", LAZY),
                ("pkg.sub.c", TOP),
                ("pkg.t", TYPE),
            ],
        )
        self.assertEqual([e.target for e in graph["pkg.e"]], ["pkg"])
        self.assertEqual([e.target for e in graph["pkg.sub"]], ["pkg.b", "pkg.sub.c"])
        self.assertEqual([e.target for e in graph["pkg.sub.c"]], ["pkg.b"])
        self.assertEqual(cycles(graph), [])

    def test_cycle(self) -> None:
        """
        Modules importing each other around a loop are reported with the
        loop, even when one import is lazy and another type-only.
        """
        graph = importGraph(
            self.package(
                {
                    "x.py": "def f():\n    from pkg import y\n",
                    "y.py": "import typing\nif typing.TYPE_CHECKING:\n"
                    "    import pkg.z\n",
                    "z.py": "import pkg.x\n",
                    "w.py": "import pkg.x\n",
                }
            )
        )
        [loop] = cycles(graph)
        self.assertEqual(
            [(e.source, e.target, e.kind) for e in loop],
            [
                ("pkg.x", "pkg.y", LAZY),
                ("pkg.y", "pkg.z", TYPE),
                ("pkg.z", "pkg.x", TOP),
            ],
        )
        lines, ok = report(graph, "pkg")
        self.assertFalse(ok)
        self.assertIn("cycles: 1", lines)
        self.assertIn("  x -> y (lazy) -> z (type) -> x", lines)

    def test_services(self) -> None:
        """
        A service module importing another is reported with its line;
        other modules may import services, and services other modules.
        """
        graph = importGraph(
            self.package(
                {
                    "echo.py": "from pkg import limits\n",
                    "limits.py": "",
                    "multicast.py": "import os\n\nfrom pkg.udpecho import guard\n",
                    "udpecho.py": "from pkg import limits\n",
                    "tap.py": "from pkg import echo, multicast, udpecho\n",
                }
            )
        )
        self.assertEqual(
            serviceImports(graph, "pkg"),
            [Edge("pkg.multicast", "pkg.udpecho", TOP, 3)],
        )
        lines, ok = report(graph, "pkg")
        self.assertFalse(ok)
        self.assertIn("  multicast:3 -> udpecho", lines)
        self.assertIn("tap -> echo, multicast, udpecho", lines)


class SourceTests(SynchronousTestCase):
    """
    The rules hold for C{src/netdemo}.
    """

    def test_makeDeps(self) -> None:
        """
        C{tools/deps.py} (what C{make deps} runs) lists every module and
        exits 0: no import cycle, and no service module imports another.
        """
        result = subprocess.run(
            [sys.executable, str(SCRIPT)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertIn("\ntap -> ", result.stdout)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("\ncycles: none\n", result.stdout)

    def test_usage(self) -> None:
        """
        An option it does not know is one usage line and status 2.
        """
        result = subprocess.run(
            [sys.executable, str(SCRIPT), "--dot"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual((result.returncode, result.stdout), (2, ""))
        self.assertEqual(result.stderr.count("\n"), 1)

    def test_testCaseNames(self) -> None:
        """
        Every module's C{test-case-name} header names test modules that
        exist.
        """
        header = re.compile(r"^# -\*- test-case-name: (\S+) -\*-$", re.M)
        for path in [*(ROOT / "src").rglob("*.py"), SCRIPT]:
            for match in header.finditer(path.read_text()):
                for name in match.group(1).split(","):
                    module = ROOT / Path(*name.split(".")).with_suffix(".py")
                    self.assertTrue(module.exists(), f"{path}: {name}")
