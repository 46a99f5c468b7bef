"""
netdemo's benchmarks (C{make bench}): every section in one run.

A section is a module in C{bench/} listed in L{SECTIONS}, in one of two
shapes:

  - integrated: C{section(harness) -> harness.Section} runs and returns
    tables (markdown) and data (JSON-serialisable).  It starts servers with
    C{harness.startServer} or C{harness.startNetdemo} (pinned
    to the server CPU) and drives them with C{harness.loadgen} /
    C{harness.holding} (pinned to the other CPU), and reads
    C{harness.args.duration}, C{.warmup}, C{.repeat} (set by C{--quick}).
    It may define C{addArguments(parser)} for options of its own.
  - standalone: C{main(argv) -> int}, a script with its own command line.
    It is called in-process with the words of C{--NAME-args} (with
    C{--quick}, of C{--NAME-quick-args} when the module defines
    C{QUICK_ARGS}, a list); its output is shown and kept, verbatim, in
    C{results.md}.

A listed module that does not exist yet is skipped.  Results go to
C{bench/results/} (git-ignored): C{results.json}, C{results.md}, one JSON
per section and the plots.  C{--update-docs} also rewrites the sections of
C{docs/benchmarks.md} between C{<!-- bench:NAME -->} and
C{<!-- /bench:NAME -->} and copies the plots to C{docs/images/}.

Usage: C{python bench/run.py [--quick] [--only echo,memory] [--duration S]
[--repeat N] [--update-docs]}
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import platform
import re
import shlex
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from types import ModuleType

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import BENCH, ROOT, Harness, Section  # noqa: E402

#: (section name, module in bench/), in the order they run.
SECTIONS = [
    ("echo", "tcp_echo"),
    ("memory", "idle_memory"),
    ("fanout", "fanout"),
    ("backplane", "backplane"),
    ("udp", "udp"),
]

DOCS = ROOT / "docs" / "benchmarks.md"


def available() -> dict[str, ModuleType]:
    """
    The section modules that exist, by section name.
    """
    modules: dict[str, ModuleType] = {}
    for name, module in SECTIONS:
        if (BENCH / f"{module}.py").exists():
            modules[name] = importlib.import_module(module)
    return modules


def parseArguments(
    modules: dict[str, ModuleType], argv: list[str]
) -> argparse.Namespace:
    """
    The command line, with every section's own options.
    """
    parser = argparse.ArgumentParser(
        description="Run netdemo's benchmarks.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--only",
        default=",".join(modules),
        help="comma-separated sections to run, of: " + ", ".join(modules),
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="one short repeat (about a minute), for a smoke test",
    )
    parser.add_argument(
        "--duration", type=float, default=3.0, help="measured seconds per run"
    )
    parser.add_argument(
        "--warmup", type=float, default=1.0, help="warm-up seconds per run"
    )
    parser.add_argument(
        "--repeat", type=int, default=2, help="repeats of every run (ranges)"
    )
    parser.add_argument(
        "--no-pin", action="store_true", help="do not pin processes to CPUs"
    )
    parser.add_argument(
        "--results", type=Path, default=BENCH / "results", help="output directory"
    )
    parser.add_argument(
        "--update-docs",
        action="store_true",
        help="rewrite the marked sections of docs/benchmarks.md and copy the "
        "plots to docs/images/",
    )
    for name, module in modules.items():
        addArguments = getattr(module, "addArguments", None)
        if addArguments is not None:
            addArguments(parser)
        elif not hasattr(module, "section"):
            parser.add_argument(
                f"--{name}-args",
                default="",
                help=f"arguments for bench/{module.__name__}.py (standalone section)",
            )
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.repeat = 1.0, 0.5, 1
    unknown = set(args.only.split(",")) - set(modules) - {""}
    if unknown:
        parser.error(
            f"--only: no section {', '.join(sorted(unknown))} "
            f"(available: {', '.join(modules)})"
        )
    if args.duration <= 0 or args.warmup < 0 or args.repeat < 1:
        parser.error("--duration must be > 0, --warmup >= 0, --repeat >= 1")
    return args


def updateDocs(sections: list[Section]) -> None:
    """
    Replace each section's marked block in C{docs/benchmarks.md}; copy the
    plots next to it.
    """
    if not DOCS.exists():
        print(f"{DOCS} does not exist: not updated")
        return
    text = DOCS.read_text()
    for section in sections:
        pattern = re.compile(
            rf"(<!-- bench:{section.name} -->\n).*?(<!-- /bench:{section.name} -->)",
            re.DOTALL,
        )
        if pattern.search(text):
            text = pattern.sub(
                lambda m, s=section: m.group(1) + s.markdown + "\n" + m.group(2),
                text,
            )
        for plot in section.plots:
            shutil.copyfile(plot, DOCS.parent / "images" / f"benchmarks-{plot.name}")
    DOCS.write_text(text)
    print(f"updated {DOCS}")


class _Tee(io.TextIOBase):
    """
    Write to standard output and keep a copy.
    """

    def __init__(self, out: io.TextIOBase | object) -> None:
        self.out = out
        self.copy = io.StringIO()

    def write(self, text: str) -> int:
        self.out.write(text)  # type: ignore[attr-defined]
        self.out.flush()  # type: ignore[attr-defined]
        return self.copy.write(text)


def runSection(name: str, module: ModuleType, harness: Harness) -> Section:
    """
    Run one section, integrated or standalone.
    """
    if hasattr(module, "section"):
        section: Section = module.section(harness)
        return section
    args = harness.args
    words = shlex.split(getattr(args, f"{name}_args", ""))
    if args.quick and not words:
        words = list(getattr(module, "QUICK_ARGS", []))
    tee = _Tee(sys.stdout)
    with contextlib.redirect_stdout(tee):  # type: ignore[type-var]
        status = module.main(words)
    output = tee.copy.getvalue().rstrip()
    command = " ".join(["python", f"bench/{module.__name__}.py", *words])
    return Section(
        name=name,
        title=name,
        markdown=f"`{command}` (exit status {status}):\n\n```\n{output}\n```",
        data={"command": command, "status": status, "output": output},
    )


def main(argv: list[str]) -> int:
    """
    Run the selected sections and write the results.
    """
    modules = available()
    args = parseArguments(modules, argv)
    args.results.mkdir(parents=True, exist_ok=True)
    harness = Harness(args, args.results)
    print(f"netdemo benchmarks: {harness.describe()}", flush=True)
    started = time.monotonic()
    sections: list[Section] = []
    for name in args.only.split(","):
        if not name:
            continue
        print(f"== {name}", flush=True)
        section = runSection(name, modules[name], harness)
        sections.append(section)
        (args.results / f"{name}.json").write_text(
            json.dumps(asdict(section), indent=1, default=str)
        )
    markdown = "\n\n".join(f"## {s.title}\n\n{s.markdown}" for s in sections)
    (args.results / "results.md").write_text(markdown + "\n")
    (args.results / "results.json").write_text(
        json.dumps(
            {
                "machine": {
                    "python": platform.python_version(),
                    "platform": platform.platform(),
                    "setup": harness.describe(),
                },
                "arguments": {k: str(v) for k, v in vars(args).items()},
                "sections": [asdict(s) for s in sections],
            },
            indent=1,
            default=str,
        )
    )
    print()
    print(markdown)
    print()
    print(
        f"{time.monotonic() - started:.0f} s; results in {args.results}/ "
        "(results.md, results.json, plots)"
    )
    if args.update_docs:
        updateDocs(sections)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
