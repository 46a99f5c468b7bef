"""
netdemo's benchmarks (C{make bench}): every section in one run.

A section is a module in C{bench/} listed in L{SECTIONS}, with
C{section(harness, options) -> harness.Section} and
C{addArguments(parser)}, in one of two shapes:

  - its options are C{bench/run.py}'s (C{--echo-servers}, ...), and it
    reads C{.duration}, C{.warmup}, C{.repeat} (set by C{--quick}); it
    returns tables (markdown) and data (JSON-serialisable);
  - it has a command line of its own (it defines C{QUICK_ARGS}, its words
    under C{--quick}) and runs alone too (C{python bench/udp.py ...}); here
    it gets the words of C{--NAME-args}, and what it prints is kept
    verbatim in C{results.md}.

Sections start servers with C{harness.start} (pinned to the server CPU,
see C{bench/launch.py} and C{bench/catalog.py}) and drive them with
C{harness.loadgen} / C{harness.holding} (pinned to the other CPU).

Results go to C{bench/results/} (git-ignored): C{results.json},
C{results.md}, one JSON per section and the plots, each with the run's
provenance (commit, versions, CPU model: C{bench/provenance.py}).
C{--update-docs} also rewrites the sections of C{docs/benchmarks.md} between
C{<!-- bench:NAME -->} and C{<!-- /bench:NAME -->} and copies the plots to
C{docs/images/}.

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

if __package__ in (None, ""):  # run as python bench/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (  # noqa: E402
    BENCH,
    RESULTS,
    ROOT,
    TOOLS,
    Harness,
    Section,
    buildTool,
    sectionParser,
)

#: (section name, module in bench/), in the order they run.
SECTIONS = [
    ("echo", "tcp_echo"),
    ("memory", "idle_memory"),
    ("fanout", "fanout"),
    ("webfanout", "webfanout"),
    ("backplane", "backplane"),
    ("hubabuse", "hubabuse"),
    ("broadcast", "broadcast"),
    ("udp", "udp"),
    ("httpabuse", "httpabuse"),
]

DOCS = ROOT / "docs" / "benchmarks.md"


def available() -> dict[str, ModuleType]:
    """
    The section modules that exist, by section name.
    """
    modules: dict[str, ModuleType] = {}
    for name, module in SECTIONS:
        if (BENCH / f"{module}.py").exists():
            modules[name] = importlib.import_module(f"bench.{module}")
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
        "--results", type=Path, default=RESULTS, help="output directory"
    )
    parser.add_argument(
        "--update-docs",
        action="store_true",
        help="rewrite the marked sections of docs/benchmarks.md and copy the "
        "plots to docs/images/",
    )
    for name, module in modules.items():
        if hasCommandLine(module):
            parser.add_argument(
                f"--{name}-args",
                default="",
                help=f"arguments for {sectionParser(module).prog} (see its --help)",
            )
        else:
            module.addArguments(parser)
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


def hasCommandLine(module: ModuleType) -> bool:
    """
    Whether a section has a command line of its own.
    """
    return hasattr(module, "QUICK_ARGS")


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
        match = pattern.search(text)
        if match:
            block = section.markdown + "\n"
            text = text[: match.end(1)] + block + text[match.start(2) :]
        for plot in section.plots:
            shutil.copyfile(plot, DOCS.parent / "images" / f"benchmarks-{plot.name}")
    DOCS.write_text(text)
    print(f"updated {DOCS}")


class _Tee(io.StringIO):
    """
    Keep a copy of what is written to standard output.
    """

    def __init__(self, out: io.TextIOBase) -> None:
        super().__init__()
        self.out = out

    def write(self, text: str) -> int:
        self.out.write(text)
        self.out.flush()
        return super().write(text)


def runSection(name: str, module: ModuleType, harness: Harness) -> Section:
    """
    Run one section; its markdown starts with the run's provenance.
    """
    args = harness.args
    if not hasCommandLine(module):
        section: Section = module.section(harness, args)
    else:
        words = shlex.split(getattr(args, f"{name}_args", ""))
        if args.quick and not words:
            words = list(module.QUICK_ARGS)
        options = sectionParser(module).parse_args(words)
        tee = _Tee(sys.stdout)  # type: ignore[arg-type]
        with contextlib.redirect_stdout(tee):
            section = module.section(harness, options)
        output = tee.getvalue().rstrip()
        command = " ".join(["python", sectionParser(module).prog, *words])
        section.markdown = f"`{command}`:\n\n```\n{output}\n```"
        section.data["command"] = command
    section.markdown = f"{harness.provenance.line()}.\n\n{section.markdown}"
    return section


def main(argv: list[str]) -> int:
    """
    Run the selected sections and write the results.
    """
    modules = available()
    args = parseArguments(modules, argv)
    args.results.mkdir(parents=True, exist_ok=True)
    harness = Harness(args, args.results)
    for tool in TOOLS:
        buildTool(tool)
    header = harness.header()
    print(f"netdemo benchmarks: {header}", flush=True)
    started = time.monotonic()
    sections: list[Section] = []
    for name in args.only.split(","):
        if not name:
            continue
        print(f"== {name}", flush=True)
        section = runSection(name, modules[name], harness)
        sections.append(section)
        (args.results / f"{name}.json").write_text(
            json.dumps(harness.record(section), indent=1, default=str)
        )
    markdown = "\n\n".join(f"## {s.title}\n\n{s.markdown}" for s in sections)
    (args.results / "results.md").write_text(f"{header}\n\n{markdown}\n")
    (args.results / "results.json").write_text(
        json.dumps(
            {
                "provenance": harness.provenance.asDict(),
                "machine": {
                    "platform": platform.platform(),
                    "setup": header,
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
