"""
Every shell example of C{README.md} and C{docs/*.md}, run against the daemon
C{make run} starts, and checked against what the document says it prints.

Nothing is listed by hand: the examples are read from the Markdown when this
module is imported, so a new example is tested (or has to match a rule) as
soon as it is written.  C{python -m tests.test_examples} lists every example
with the rule that runs or excludes it.

Finding the examples
====================
  - The lines of every fenced block labelled C{sh}, C{shell}, C{bash} or
    C{console}; an indented block (inside a list) is dedented; a line ending
    in a backslash continues on the next.
  - C{sh}: each line is one example; a trailing C{# comment} is not part of
    the command, and C{# prints: TEXT} (or C{# -> TEXT}) in it is what the
    command prints on its standard output (C{...} in TEXT stands for
    anything).
  - C{console}: each C{$ } line is one example, and the lines that follow
    it, up to the next C{$ }, are its transcript.
  - An unlabelled block whose first line starts with a command (C{twistd},
    C{netdemo}, C{nc}, ...) fails L{ExampleRulesTests}: label it C{sh}.
  - An HTML comment on the line before a block,
    C{<!-- example: skip (REASON) -->}, excludes the whole block: for the
    few transcripts no rule can run (another client's messages, the history
    earlier sessions left).  Readers do not see it.

Which examples run: L{RULES}, the first that matches
=====================================================
Excluded, each with its reason: C{make} targets; installing software
(C{pip}, C{install}, C{python3 -m venv}); a system-wide install or systemd
(C{/opt/netdemo}, C{systemctl}, C{journalctl}); a Redis set-up
(C{redis-cli}); a daemon of its own (C{twistd} without C{--help}); a
benchmark (C{bench/...}); a template (a placeholder such as C{COMMAND} or
C{NEW}); sessions shown side by side; and commands that address another
port or host than make run's (a daemon their block starts, another
machine).  Run: C{--help} and C{--version} (they need no daemon), and
every command whose addresses (C{HOST:PORT}, C{HOST PORT},
C{TCP:HOST:PORT}) are all make run's, read from C{netdemo.tap.DEFAULTS}:
on a loopback address (C{127.0.0.1}, C{localhost}, C{[::1]}) any of its
ports counts, so an example that uses C{[::1]} while the daemon listens on
127.0.0.1 only runs, and fails.  A command that
matches no rule fails L{ExampleRulesTests.test_everyCommandMatchesARule}.
An excluded example is not run, and is not reported as a skipped test
either: L{ExcludedExamplesTests} checks what can be checked without running
it (its rule gives a reason, and C{bash -n} parses it), and
C{python -m tests.test_examples} lists every example with its rule.

How they run: L{DefaultDaemonExamplesTests}
===========================================
One daemon with exactly make run's service set (C{twistd -n --pidfile=
netdemo}, no service options) on the fixed default ports, inside a network
namespace the tests create (and remove), so nothing on the host is in the
way; the reactor is the suite's (C{--reactor=netdemo} under C{make test
REACTOR=netdemo}, as make run uses; Twisted's default otherwise).  Each
example is one test, named after its file and line: C{sh -c COMMAND} inside
the namespace, with the venv's C{bin} first on C{PATH}, standard input
closed, in a directory that looks like the checkout (links to its top-level
entries, for C{.venv/bin/netdemo} and C{bench/run.py}) and holds C{app.log},
the log file the docs pipe from.

  - A program it uses that is not installed skips it, or fails it in CI
    (L{requireTool}: C{.ci/run} installs them).
  - It must exit with status 0 within L{TIMEOUT} seconds, print its
    C{# prints:} text, and print its transcript's lines in order (on
    standard output or error; other lines may come between them; each
    number stands for any number: times, ports and counts vary from run to
    run; a C{...} line for lines left out).
  - An interactive session (C{nc}, C{socat -} or C{netdemo chat} reading the
    terminal, not a pipe or a file) is replayed: the transcript's lines the
    hub or the client prints (C{* }, C{+OK}, C{-ERR}, C{<}, C{[},
    C{netdemo: }) are expected, the others are what the user typed, and are
    its standard input.
  - Commands that run until Ctrl-C (C{netdemo tail}, C{netdemo mcast listen}
    without C{-c}, C{tail -f}) run in the background while the commands
    after them in their block run (the "in another terminal" of the docs);
    they pass if they printed their C{# prints:} text and their
    transcript's first line (the rest of a transcript shows what others
    send later) and are still running; then Ctrl-C (C{SIGINT}) stops them.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from attrs import frozen
from twisted.trial.unittest import SynchronousTestCase

from tests.support import (
    PATIENCE,
    ROOT,
    Daemon,
    NetworkNamespace,
    poll,
    requireRoot,
    requireTool,
)

#: The longest one example may run, in seconds (the slowest documented one,
#: a five-probe ping, takes about 4).
TIMEOUT = 20.0

#: How long a command that runs until Ctrl-C and says nothing when it is
#: ready (C{tail -f app.log | netdemo pub ...}) is given to start.
QUIET_START = 1.0

#: The lines with which netdemo's clients say they are set up.
_READY = re.compile(r"^(netdemo: connected to |LISTEN |PROBE |PING )", re.M)

#: The commands that print one of those before they follow: the commands
#: after them in their block wait for it.
_SAYS_READY = re.compile(r"^\S*\bnetdemo (tail|mcast listen)\b[^|]*$")

#: The block languages whose lines are shell commands.
SHELL_LANGUAGES = frozenset({"sh", "shell", "bash", "console"})

_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<language>[\w+-]*)")
_MARKER = re.compile(r"<!--\s*example:\s*skip\s*\((?P<reason>.+)\)\s*-->")
_PRINTS = re.compile(r"(?:^|\s)(?:prints:|->)\s*(?P<text>.+)$")

#: Transcript lines printed by the hub or a netdemo client; in an
#: interactive transcript, the other lines are typed.
_PRINTED = re.compile(r"^(\* |\+OK|-ERR|<|\[|netdemo: )")

#: Programs that read the terminal when nothing is piped into them.
_INTERACTIVE = re.compile(r"^((nc|ncat|telnet|netdemo chat)\b|socat - )")

#: Commands that run until Ctrl-C.
_FOLLOWERS = (
    re.compile(r"\bnetdemo tail\b"),
    re.compile(r"\bmcast listen\b(?!.*\s-c\s*[1-9])"),
    re.compile(r"\btail -f\b"),
)

#: A host and port: C{127.0.0.1:8007}, C{[::1]:8008}, C{TCP:localhost:8007},
#: C{host.example:8009}; or C{127.0.0.1 8007} (as C{nc} takes them).
_ADDRESSES = (
    re.compile(
        r"(?<![\w.])(?P<host>\[[0-9A-Fa-f:.]+\]|\d{1,3}(?:\.\d{1,3}){3}|localhost"
        r"|[A-Za-z][\w-]*(?:\.[\w-]+)+):(?P<port>\d+)(?!\d)"
    ),
    re.compile(
        r"(?<![\w.:])(?P<host>\d{1,3}(?:\.\d{1,3}){3}|localhost)\s+(?P<port>\d+)(?=\s|$)"
    ),
)

#: The Debian packages of the programs examples use (for L{requireTool}).
_PACKAGES = {"nc": "netcat-openbsd", "socat": "socat", "curl": "curl", "jq": "jq"}

#: Shell builtins that are no program of their own.
_BUILTINS = frozenset({"cd", "export", "set", "exit", "read", "true", "false"})

#: The options that print help or versions.
_HELP = frozenset({"--help", "--version", "--help-reactors"})

#: A placeholder the reader replaces: an upper-case word (not a socat
#: address type such as C{TCP:}), or C{...}.
_PLACEHOLDER = re.compile(r"(?<![A-Za-z])[A-Z][A-Z_]{2,}(?![A-Za-z:])|(?<!\S)\.\.\.")


@frozen
class Example:
    """
    One command of the documentation.

    @ivar path: The document, relative to the checkout.
    @ivar line: The command's (first) line there.
    @ivar command: The shell command, continuations joined, comment removed.
    @ivar comment: Its trailing comment.
    @ivar transcript: The lines shown after it (C{console} blocks).
    @ivar later: The commands after it in its block.
    @ivar marker: The reason of the block's C{example: skip} marker.
    @ivar sideBySide: Whether it is one of two sessions shown side by side.
    """

    path: str
    line: int
    command: str
    comment: str = ""
    transcript: tuple[str, ...] = ()
    later: tuple[str, ...] = ()
    marker: str | None = None
    sideBySide: bool = False

    @property
    def where(self) -> str:
        """
        C{path:line}.
        """
        return f"{self.path}:{self.line}"

    @property
    def prints(self) -> str | None:
        """
        What its comment says it prints, if it does.
        """
        match = _PRINTS.search(self.comment)
        return match["text"].strip() if match else None

    @property
    def interactive(self) -> bool:
        """
        Whether it reads the terminal: a session whose typed lines are in
        its transcript.
        """
        program, _, rest = self.command.partition(" ")
        bare = f"{Path(program).name} {rest}"
        return bool(_INTERACTIVE.match(bare)) and not re.search(r"[|<]", rest)

    @property
    def follows(self) -> bool:
        """
        Whether it runs until Ctrl-C.
        """
        return any(pattern.search(self.command) for pattern in _FOLLOWERS)

    @property
    def typed(self) -> str:
        """
        What the user types, for an interactive session.
        """
        if not self.interactive:
            return ""
        return "".join(
            line + "\n"
            for line in self.transcript
            if line.strip() and not _PRINTED.match(line)
        )

    @property
    def expected(self) -> list[str]:
        """
        The transcript lines it must print.
        """
        return [
            line
            for line in self.transcript
            if line.strip() and (not self.interactive or _PRINTED.match(line))
        ]

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """
        The hosts and ports it addresses, hosts without brackets.
        """
        return [
            (match["host"].strip("[]").lower(), int(match["port"]))
            for pattern in _ADDRESSES
            for match in pattern.finditer(self.command)
        ]


def splitComment(line: str) -> tuple[str, str]:
    """
    A shell line's command and its trailing comment (a C{#} at the start of
    a word, outside quotes).
    """
    quote = ""
    for index, char in enumerate(line):
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index].rstrip(), line[index + 1 :].strip()
    return line.rstrip(), ""


@frozen
class Block:
    """
    A fenced block of a Markdown document.

    @ivar line: The line of its first content line.
    @ivar lines: Its lines, dedented to the fence.
    @ivar marker: The reason of an C{example: skip} marker before it.
    """

    path: str
    line: int
    language: str
    lines: tuple[str, ...]
    marker: str | None


def fencedBlocks(path: Path) -> list[Block]:
    """
    The fenced blocks of the Markdown document C{path}.
    """
    text = path.read_text().splitlines()
    name = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name
    blocks = []
    index = 0
    while index < len(text):
        opening = _FENCE.match(text[index])
        if not opening:
            index += 1
            continue
        before = next((t for t in reversed(text[:index]) if t.strip()), "")
        marker = _MARKER.search(before)
        indent = len(opening["indent"])
        body = []
        index += 1
        start = index + 1
        while index < len(text) and not text[index].strip().startswith(
            opening["fence"]
        ):
            line = text[index]
            body.append(line[min(indent, len(line) - len(line.lstrip())) :])
            index += 1
        blocks.append(
            Block(
                name,
                start,
                opening["language"].lower(),
                tuple(body),
                marker["reason"] if marker else None,
            )
        )
        index += 1
    return blocks


def _logicalLines(block: Block) -> list[tuple[int, str]]:
    """
    A block's lines with their line numbers, backslash continuations joined.
    """
    joined: list[tuple[int, str]] = []
    continued = False
    for offset, line in enumerate(block.lines):
        if continued:
            number, previous = joined[-1]
            joined[-1] = (number, previous[:-1].rstrip() + " " + line.strip())
        else:
            joined.append((block.line + offset, line.rstrip()))
        continued = joined[-1][1].endswith("\\")
    return joined


def blockExamples(block: Block) -> list[Example]:
    """
    The commands of a C{sh} or C{console} block (none for other blocks).
    """
    if block.language not in SHELL_LANGUAGES:
        return []
    found: list[tuple[int, str, str, list[str], bool]] = []
    for number, line in _logicalLines(block):
        if block.language == "console":
            if line.startswith("$ "):
                command, comment = splitComment(line[2:])
                sideBySide = bool(re.search(r"\S\s{2,}\$ ", line))
                found.append((number, command.strip(), comment, [], sideBySide))
            elif found:
                found[-1][3].append(line)
        elif line.strip() and not line.lstrip().startswith("#"):
            command, comment = splitComment(line)
            found.append((number, command.strip(), comment, [], False))
    return [
        Example(
            block.path,
            number,
            command,
            comment,
            tuple(transcript),
            tuple(c for _, c, _, _, _ in found[position + 1 :]),
            block.marker,
            sideBySide,
        )
        for position, (number, command, comment, transcript, sideBySide) in (
            enumerate(found)
        )
    ]


def documents() -> list[Path]:
    """
    The documents whose examples are tested.
    """
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def allExamples(paths: Iterable[Path] | None = None) -> list[Example]:
    """
    Every example of C{paths} (the documents).
    """
    return [
        example
        for path in (documents() if paths is None else paths)
        for block in fencedBlocks(path)
        for example in blockExamples(block)
    ]


def defaultAddresses() -> frozenset[tuple[str, int]]:
    """
    The hosts and ports of make run's daemon: C{netdemo.tap.DEFAULTS}, the
    set C{twistd netdemo} starts when given no service option.
    """
    from netdemo.tap import DEFAULTS

    found = set()
    for descriptions in DEFAULTS.values():
        for description in descriptions:
            match = re.match(r"tcp6?:(\d+):interface=([^:]+)", description)
            if match:
                found.add((match[2].replace("\\", ""), int(match[1])))
            elif match := re.match(r"\[?([^\]]+?)\]?:(\d+)(,|$)", description):
                found.add((match[1], int(match[2])))
    return frozenset(found)


def _programs(command: str) -> list[str]:
    """
    The program names of a command's pipelines and lists.
    """
    return [
        Path(words[0]).name
        for part in re.split(r"\|\|?|&&|;", command)
        if (words := part.split())
    ]


def _againstDefaults(example: Example) -> bool | None:
    """
    Whether every address C{example} names is make run's (L{None} when it
    names none).  A loopback address (C{127.0.0.1}, C{localhost},
    C{[::1]}) with one of make run's ports counts as make run's even when
    the daemon does not listen there: such an example runs, and fails.
    """
    if not example.addresses:
        return None
    defaults = defaultAddresses()
    ports = {port for host, port in defaults if _isLoopback(host)}
    return all(
        (host, port) in defaults or (_isLoopback(host) and port in ports)
        for host, port in example.addresses
    )


def _isLoopback(host: str) -> bool:
    """
    Whether C{host} (without brackets) names a loopback address.
    """
    return host in ("localhost", "::1") or host.startswith("127.")


@frozen
class Rule:
    """
    Which examples run, and why the others do not.

    @ivar name: A short name, for listings.
    @ivar reason: Why it runs, or why not.
    @ivar runs: Whether the examples it matches run.
    @ivar matches: Whether it applies to an example.
    """

    name: str
    reason: str
    runs: bool
    matches: Callable[[Example], bool]


#: The rules, the first that matches wins.
RULES: Sequence[Rule] = (
    Rule(
        "side-by-side",
        "two sessions shown side by side (two terminals at once)",
        False,
        lambda e: e.sideBySide,
    ),
    Rule(
        "make",
        "a make target (sets up .venv, runs the suites or the benchmarks)",
        False,
        lambda e: "make" in _programs(e.command),
    ),
    Rule(
        "install",
        "installs software",
        False,
        lambda e: (
            bool({"pip", "pip3", "install", "apt-get"} & {*_programs(e.command)})
            or "-m venv" in e.command
        ),
    ),
    Rule(
        "system",
        "needs a system-wide install or systemd (/opt/netdemo, systemctl, journalctl)",
        False,
        lambda e: (
            "/opt/" in e.command
            or bool({"systemctl", "journalctl"} & {*_programs(e.command)})
        ),
    ),
    Rule(
        "redis",
        "needs a Redis backplane set-up (docs/scaling.md)",
        False,
        lambda e: bool({"redis-cli", "redis-server"} & {*_programs(e.command)}),
    ),
    Rule(
        "help",
        "prints help or versions, which needs no daemon",
        True,
        lambda e: (
            bool(_HELP & {*e.command.split()}) and not _PLACEHOLDER.search(e.command)
        ),
    ),
    Rule(
        "daemon",
        "starts a daemon of its own (twistd)",
        False,
        lambda e: "twistd" in _programs(e.command),
    ),
    Rule(
        "bench",
        "a benchmark (make bench; docs/benchmarks.md)",
        False,
        lambda e: any(word.startswith("bench/") for word in e.command.split()),
    ),
    Rule(
        "placeholder",
        "a template with placeholders (COMMAND, NEW, ...)",
        False,
        lambda e: bool(_PLACEHOLDER.search(e.command)),
    ),
    Rule(
        "elsewhere",
        "addresses what make run's daemon does not listen on "
        "(another port or host: a daemon its block starts, another machine)",
        False,
        lambda e: _againstDefaults(e) is False,
    ),
    Rule(
        "default",
        "runs against make run's daemon",
        True,
        lambda e: _againstDefaults(e) is True,
    ),
)


def classify(example: Example) -> Rule | None:
    """
    The rule for C{example}: its block's marker, else the first of L{RULES}
    that matches; L{None} when none does.
    """
    if example.marker is not None:
        return Rule("marker", example.marker, False, lambda e: True)
    return next((rule for rule in RULES if rule.matches(example)), None)


#: Every example of the documents, read once.
EXAMPLES = allExamples()

#: The first word of an unlabelled block that makes it look like commands.
_COMMANDS = re.compile(
    r"^(twistd|netdemo|nc|ncat|socat|curl|make|pip|python3?|systemctl|"
    r"journalctl|redis-cli|\.venv/|/opt/)"
)


def _testName(example: Example) -> str:
    """
    The test method's name for C{example}: its file and line.
    """
    stem = re.sub(r"\W", "_", Path(example.path).stem)
    return f"test_{stem}_{example.line:03d}"


def _pattern(text: str, numbers: bool) -> re.Pattern[str]:
    """
    A documented output line as a regular expression: C{...} stands for
    anything and, with C{numbers}, each number for any number.
    """
    split = r"(\.\.\.|\d+(?:\.\d+)?)" if numbers else r"(\.\.\.)"
    parts = []
    for part in re.split(split, text.strip()):
        if part == "...":
            parts.append(".*?")
        elif numbers and re.fullmatch(r"\d+(?:\.\d+)?", part):
            parts.append(r"\d+(?:\.\d+)?")
        else:
            parts.append(re.escape(part))
    return re.compile("".join(parts))


def missingLines(expected: Sequence[str], stdout: str, stderr: str) -> list[str]:
    """
    The lines of C{expected} (a transcript) that C{stdout} and C{stderr} do
    not show in order: each must match a whole line of one of them, after
    the lines matched before it there.
    """
    streams = [stdout.splitlines(), stderr.splitlines()]
    cursors = [0, 0]
    missing = []
    for line in expected:
        if line.strip() == "...":
            continue
        pattern = _pattern(line, numbers=True)
        for stream, lines in enumerate(streams):
            found = next(
                (
                    i
                    for i in range(cursors[stream], len(lines))
                    if pattern.fullmatch(lines[i].strip())
                ),
                None,
            )
            if found is not None:
                cursors[stream] = found + 1
                break
        else:
            missing.append(line)
    return missing


def _report(example: Example, status: object, stdout: str, stderr: str) -> str:
    """
    What an example did, for a failure message.
    """
    return (
        f"{example.where}: {example.command}\nexit status: {status}\n"
        f"standard output:\n{stdout[-3000:]}\nstandard error:\n{stderr[-3000:]}"
    )


class ExampleRulesTests(SynchronousTestCase):
    """
    How examples are read from the Markdown and which rule each meets; no
    daemon, no root.
    """

    def parse(self, markdown: str) -> list[Example]:
        """
        The examples of a Markdown text.
        """
        directory = Path(tempfile.mkdtemp(prefix="netdemo-md-"))
        self.addCleanup(shutil.rmtree, directory, True)
        (directory / "doc.md").write_text(markdown)
        return allExamples([directory / "doc.md"])

    def test_shBlocks(self) -> None:
        """
        Each line of a C{sh} block is a command; a trailing comment is left
        out, and C{# prints:} in it is what the command prints; backslash
        continuations are joined; an indented block is dedented; other
        languages are not commands.
        """
        examples = self.parse(
            "Text\n\n```sh\n"
            "echo '# not a comment' | nc -N 127.0.0.1 8007  # prints: # not a\n"
            "# a comment line\n"
            "netdemo pub 127.0.0.1:8008 \\\n    lab.x 1\n```\n\n"
            "- item\n\n  ```sh\n  netdemo --help\n  ```\n\n"
            "```python\nprint(1)\n```\n"
        )
        self.assertEqual(
            [(e.line, e.command, e.prints) for e in examples],
            [
                (4, "echo '# not a comment' | nc -N 127.0.0.1 8007", "# not a"),
                (6, "netdemo pub 127.0.0.1:8008 lab.x 1", None),
                (13, "netdemo --help", None),
            ],
        )
        self.assertEqual(examples[0].later, (examples[1].command,))

    def test_consoleBlocks(self) -> None:
        """
        In a C{console} block each C{$ } line is a command and the lines
        after it its transcript; an interactive session's typed lines are
        its input, the hub's lines what it must print.
        """
        [ping, session] = self.parse(
            "```console\n$ netdemo ping tcp 127.0.0.1:8007 -c 1\nPING x\n"
            "$ nc localhost 8008\n* welcome\n/ping\n+OK pong\n```\n"
        )
        self.assertEqual(ping.transcript, ("PING x",))
        self.assertEqual(ping.expected, ["PING x"])
        self.assertFalse(ping.interactive)
        for command in (".venv/bin/netdemo chat h:1", "socat - TCP:h:1", "nc h 1"):
            self.assertTrue(Example("doc.md", 1, command).interactive, command)
        for command in ("nc -N h 1 < f", "echo x | socat - TCP:h:1", "socat -h"):
            self.assertFalse(Example("doc.md", 1, command).interactive, command)
        self.assertTrue(session.interactive)
        self.assertEqual(session.typed, "/ping\n")
        self.assertEqual(session.expected, ["* welcome", "+OK pong"])

    def test_marker(self) -> None:
        """
        An C{example: skip} comment before a block excludes its examples,
        with its reason.
        """
        [example] = self.parse(
            "<!-- example: skip (needs two hosts) -->\n```sh\nnetdemo --help\n```\n"
        )
        rule = classify(example)
        assert rule is not None
        self.assertEqual(
            (rule.name, rule.runs, rule.reason), ("marker", False, "needs two hosts")
        )

    def test_rules(self) -> None:
        """
        Commands against make run's addresses run, and so does C{--help};
        the others are excluded by the rule that names why.
        """
        cases = {
            "make run": "make",
            "pip install .": "install",
            "/opt/netdemo/bin/twistd netdemo --help": "system",
            "twistd netdemo --help": "help",
            "netdemo --version": "help",
            "twistd -n netdemo --tcp 8007": "daemon",
            ".venv/bin/python bench/udp.py --seconds 1": "bench",
            "netdemo COMMAND --help": "placeholder",
            "echo hi | socat -t1 - UDP:127.0.0.1:9000": "elsewhere",
            "netdemo pub [::1]:8008 x y": "default",
            "nc hostb.example:8007": "elsewhere",
            "nc -N 127.0.0.1 8007": "default",
            "socat - TCP:localhost:8007": "default",
            "netdemo mcast probe 239.255.80.1:8001 -I 127.0.0.1": "default",
            "ls": None,
        }
        for command, name in cases.items():
            rule = classify(Example("doc.md", 1, command))
            self.assertEqual(rule and rule.name, name, command)

    def test_everyCommandMatchesARule(self) -> None:
        """
        Every example of README.md and docs/*.md runs or is excluded by a
        rule: a new kind of example needs a rule (or a marker), never
        silence.
        """
        unmatched = [f"{e.where}: {e.command}" for e in EXAMPLES if not classify(e)]
        self.assertEqual(unmatched, [], "examples that match no rule of RULES")

    def test_unlabelledCommands(self) -> None:
        """
        A fenced block without a language does not start with a command:
        commands are labelled C{sh} (or C{console}), so that they are found.
        """
        unlabelled = [
            f"{block.path}:{block.line}: {block.lines[0].strip()}"
            for path in documents()
            for block in fencedBlocks(path)
            if not block.language
            and block.lines
            and _COMMANDS.match(block.lines[0].strip())
        ]
        self.assertEqual(unlabelled, [], "label these blocks sh")

    def test_found(self) -> None:
        """
        The README's first example is found and runs: the reading of the
        documents has not silently broken.
        """
        [hello] = [e for e in EXAMPLES if e.command.startswith("echo hello | nc")]
        self.assertEqual((hello.path, hello.prints), ("README.md", "hello"))
        rule = classify(hello)
        self.assertTrue(rule and rule.runs)
        self.assertGreater(
            sum(1 for e in EXAMPLES if (r := classify(e)) and r.runs), 10
        )

    def test_transcripts(self) -> None:
        """
        Transcript lines must come in order, each a whole line of standard
        output or error; numbers stand for any number, C{...} for anything.
        """
        out = "PING 1\n3 sent, time 2015 ms\n"
        self.assertEqual(missingLines(["PING 1", "3 sent, time 2002 ms"], out, ""), [])
        self.assertEqual(
            missingLines(["netdemo: x ...", "PING 1"], out, "netdemo: x y"), []
        )
        self.assertEqual(
            missingLines(["3 sent, time 1 ms", "PING 1"], out, ""), ["PING 1"]
        )
        self.assertEqual(missingLines(["3 received"], out, ""), ["3 received"])


class ExcludedExamplesTests(SynchronousTestCase):
    """
    The examples no rule runs against make run's daemon: each is checked
    without running it (its rule says why it is not run, and it parses as
    shell), one test each.
    """

    def check(self, example: Example, rule: Rule) -> None:
        """
        C{example}'s rule gives a reason, and C{bash -n} parses it.
        """
        self.assertFalse(rule.runs)
        self.assertTrue(rule.reason.strip(), f"rule {rule.name} gives no reason")
        parsed = subprocess.run(
            ["bash", "-n", "-c", example.command],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        self.assertEqual(
            parsed.returncode,
            0,
            f"{example.where}: not shell ({parsed.stderr.strip()})",
        )


class DefaultDaemonExamplesTests(SynchronousTestCase):
    """
    The examples that run against make run's daemon, each a test named
    after its file and line.
    """

    namespace: NetworkNamespace | None
    daemon: Daemon | None
    workdir: Path
    env: dict[str, str]

    @classmethod
    def setUpClass(cls) -> None:
        requireRoot("the documentation's examples (make run's fixed ports)")
        cls.namespace = None
        cls.daemon = None
        cls.workdir = Path(tempfile.mkdtemp(prefix="netdemo-examples-"))
        try:
            for entry in ROOT.iterdir():
                (cls.workdir / entry.name).symlink_to(entry)
            (cls.workdir / "app.log").write_text("started\nlistening\n")
            venvBin = str(Path(sys.executable).parent)
            cls.env = {
                **os.environ,
                "PATH": f"{venvBin}:{os.environ.get('PATH', '/usr/bin:/bin')}",
                "COLUMNS": "80",
            }
            cls.namespace = NetworkNamespace("ndex")
            cls.daemon = Daemon(netns=cls.namespace.name)
            cls.daemon.waitFor(r" ready \(.*\): Listening")
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        if cls.daemon is not None:
            cls.daemon.close()
        if cls.namespace is not None:
            cls.namespace.close()
        shutil.rmtree(cls.workdir, ignore_errors=True)

    def test_daemonIsMakeRuns(self) -> None:
        """
        The daemon listens on exactly the addresses the rules count as make
        run's (C{netdemo.tap.DEFAULTS}).
        """
        assert self.daemon is not None
        listening = self.daemon.waitListening(len(defaultAddresses()))
        self.assertEqual(
            {
                (host.strip("[]"), int(port))
                for _, address in listening
                for host, _, port in [address.rpartition(":")]
            },
            set(defaultAddresses()),
        )

    def popen(
        self, command: str, stdin: int, stdout: int, stderr: int
    ) -> subprocess.Popen[bytes]:
        """
        C{sh -c command} in the namespace, in the working directory, in a
        session of its own (so that it can be stopped with its children).
        """
        assert self.namespace is not None
        return subprocess.Popen(
            self.namespace.command("sh", "-c", command),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            cwd=self.workdir,
            env=self.env,
            start_new_session=True,
        )

    def stop(self, process: subprocess.Popen[bytes], sig: int) -> None:
        """
        Send C{sig} to C{process} and its children, and wait for it; kill
        them all if it does not exit within L{PATIENCE}.
        """
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(PATIENCE)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def shell(self, command: str, typed: str = "") -> tuple[int | None, str, str]:
        """
        Run C{command} to its end (at most L{TIMEOUT} seconds), typing
        C{typed} on its standard input (closed when empty).

        @return: Its exit status (L{None} if it had to be stopped), standard
            output and standard error.
        """
        process = self.popen(
            command,
            subprocess.PIPE if typed else subprocess.DEVNULL,
            subprocess.PIPE,
            subprocess.PIPE,
        )
        try:
            out, err = process.communicate(typed.encode() if typed else None, TIMEOUT)
            status: int | None = process.returncode
        except subprocess.TimeoutExpired:
            self.stop(process, signal.SIGKILL)
            out, err = process.communicate()
            status = None
        return status, out.decode(errors="replace"), err.decode(errors="replace")

    def check(self, example: Example) -> None:
        """
        Run C{example} and check its exit status and documented output.
        """
        for program in _programs(example.command):
            if program not in _BUILTINS and not shutil.which(
                program, path=self.env["PATH"]
            ):
                requireTool(program, _PACKAGES.get(program))
        if example.follows:
            return self.checkFollower(example)
        status, out, err = self.shell(example.command, example.typed)
        report = _report(example, status, out, err)
        self.assertEqual(status, 0, report)
        if example.prints is not None:
            self.assertTrue(
                _pattern(example.prints, numbers=False).search(out),
                f"does not print {example.prints!r}:\n{report}",
            )
        missing = missingLines(example.expected, out, err)
        self.assertEqual(missing, [], f"documented lines not printed:\n{report}")

    def checkFollower(self, example: Example) -> None:
        """
        Run C{example}, which runs until Ctrl-C, while the commands after it
        in its block run; it must print what is documented, and still run.
        """
        paths = [self.workdir / f"example-{example.line}.{n}" for n in ("out", "err")]
        with open(paths[0], "wb") as out, open(paths[1], "wb") as err:
            process = self.popen(
                example.command, subprocess.DEVNULL, out.fileno(), err.fileno()
            )
        self.addCleanup(self.stop, process, signal.SIGKILL)

        def output() -> tuple[str, str]:
            return (
                paths[0].read_text(errors="replace"),
                paths[1].read_text(errors="replace"),
            )

        with contextlib.suppress(AssertionError):  # the checks below report
            poll(
                lambda: _READY.search("".join(output())) or process.poll() is not None,
                "its ready line",
                PATIENCE if _SAYS_READY.match(example.command) else QUIET_START,
            )
        expected = example.expected[:1]

        def printed() -> bool:
            stdout, stderr = output()
            return not missingLines(expected, stdout, stderr) and (
                example.prints is None
                or bool(_pattern(example.prints, numbers=False).search(stdout))
            )

        # The commands after it, up to the one that makes it print what is
        # documented (the others are tests of their own).
        drivers = []
        for command in example.later:
            drivers.append((command, self.shell(command)))
            if printed():
                break
        with contextlib.suppress(AssertionError):
            poll(lambda: printed() or process.poll() is not None, "its output", TIMEOUT)
        report = _report(example, process.poll(), *output()) + "".join(
            f"\nthen {command}: {result}" for command, result in drivers
        )
        self.assertTrue(printed(), f"does not print what is documented:\n{report}")
        self.assertIsNone(process.poll(), f"ended before Ctrl-C:\n{report}")
        self.stop(process, signal.SIGINT)


def _addTests() -> None:
    """
    One test per example: a run of L{DefaultDaemonExamplesTests}, or a
    check of L{ExcludedExamplesTests} that does not run it.
    """
    for example in EXAMPLES:
        rule = classify(example)
        if rule is None:
            continue  # ExampleRulesTests.test_everyCommandMatchesARule fails
        if rule.runs:

            def run(
                self: DefaultDaemonExamplesTests, example: Example = example
            ) -> None:
                self.check(example)

            run.__doc__ = f"{example.where}: {example.command}"
            setattr(DefaultDaemonExamplesTests, _testName(example), run)
        else:

            def parse(
                self: ExcludedExamplesTests,
                example: Example = example,
                rule: Rule = rule,
            ) -> None:
                self.check(example, rule)

            parse.__doc__ = (
                f"{example.where}: not run ({rule.reason}; rule {rule.name}), "
                f"parses as shell: {example.command}"
            )
            setattr(ExcludedExamplesTests, _testName(example), parse)


_addTests()


if __name__ == "__main__":
    for example in EXAMPLES:
        rule = classify(example)
        verdict = "NO RULE" if rule is None else ("run" if rule.runs else "skip")
        name = rule.name if rule else "-"
        print(f"{example.where:24} {verdict:7} {name:12} {example.command}")
