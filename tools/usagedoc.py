"""
Keep the C{twistd netdemo --help} shown in C{docs/usage.md} the real one.

C{python tools/usagedoc.py} rewrites the block between the
C{<!-- help:start -->} and C{<!-- help:end -->} markers with the help that
C{twistd netdemo --help} prints (80 columns); C{--check} only says whether it
would change anything (C{tests/test_tap_help.py} checks it too, so that the
docs cannot drift from the code).
"""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "usage.md"
START = "<!-- help:start -->"
END = "<!-- help:end -->"


def helpText() -> str:
    """
    What C{twistd netdemo --help} prints.
    """
    from twisted.scripts.twistd import ServerOptions  # type: ignore[attr-defined]

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        ServerOptions().parseOptions(["netdemo", "--help"])
    return out.getvalue()


def rendered(document: str) -> str:
    """
    C{document} with its help block replaced by the real help.

    @raise ValueError: The markers are missing.
    """
    head, start, rest = document.partition(START)
    _, end, tail = rest.partition(END)
    if not start or not end:
        raise ValueError(f"{DOC.name} has no {START} ... {END} block")
    block = "\n```text\n$ twistd netdemo --help\n" + helpText().rstrip() + "\n```\n"
    return head + start + block + end + tail


def main(argv: list[str]) -> int:
    """
    Rewrite the block, or with C{--check} report whether it is current.
    """
    document = DOC.read_text(encoding="utf-8")
    wanted = rendered(document)
    if "--check" in argv:
        if wanted != document:
            print(f"{DOC} is out of date: run python tools/usagedoc.py")
            return 1
        return 0
    if wanted != document:
        DOC.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
