# -*- test-case-name: tests.test_cli_hub -*-
"""
C{netdemo tail HOST:PORT [--sub PATTERN]...}: subscribe to the pub/sub hub
and print every message delivered, as the hub sent it or as JSON.

Deliveries go to the console's byte output, byte for byte; notices to its
notices.  When nobody reads the output any more (C{| head}), tail ends
quietly.

With C{--json}, C{--since} or C{--resume}, tail asks the hub for sequence
numbers (C{/seq on}).  To resume it subscribes first, then asks for the
lines after its position (C{/history since SEQ TOPIC}); what arrives meanwhile
(the replay and live lines, which may overlap) is held, then printed in
sequence order without the numbers already seen; from then on a line
numbered at or below the last one printed for its topic is dropped.
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timezone
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python import usage

from netdemo.clients.common import (
    CommandError,
    Console,
    GnuOptions,
    countCoerce,
    parseHostPort,
    plural,
    whenInterrupted,
)
from netdemo.clients.hubclient import (
    KEEPALIVE_OPTION,
    LOGIN_OPTIONS,
    TIMEOUT_OPTION,
    HubConnection,
    HubSession,
    isGreeting,
    logIn,
    readLogin,
    text,
)
from netdemo.clients.tlsclient import TLSClientOptions
from netdemo.hubwire import (
    DEFAULT_TOPIC,
    ERR,
    MAX_SEQ_DIGITS,
    Delivery,
    isTopic,
    parseDelivery,
    patternMatches,
)

__all__ = [
    "MAX_HELD_LINES",
    "MAX_RESUME_BYTES",
    "MAX_RESUME_TOPICS",
    "TailOptions",
    "asJSON",
    "readResume",
    "runTail",
    "topicMatches",
]

#: Lines held while resuming (the replays and what arrives meanwhile);
#: past it, the oldest are printed at once and a possible gap is told.
MAX_HELD_LINES = 100_000

#: The largest C{--resume} file read, and the most topics it holds.
MAX_RESUME_BYTES = 1 << 20
MAX_RESUME_TOPICS = 10_000

#: Seconds between two writes of the C{--resume} file (and one at the end).
RESUME_INTERVAL = 1.0

_EPOCH = re.compile(rb"epoch ([0-9A-Za-z]{1,64})")
_LAST_SEQ = re.compile(rb"last seq ([0-9]{1,18})")
_EPOCH_CHANGED = b"* epoch changed to "


def _historyCoerce(value: str) -> int:
    """
    Coerce C{--history}: a whole number, at least 0.
    """
    return countCoerce(value)


def _sinceCoerce(value: str) -> int:
    """
    Coerce C{--since}: a sequence number, at least 0.
    """
    if not value.isdigit() or len(value) > MAX_SEQ_DIGITS:
        raise ValueError(f"{value!r} is not a sequence number (0 to 18 digits)")
    return int(value)


def readResume(path: str) -> tuple[str | None, dict[str, int]]:
    """
    Read a C{--resume} file: the hub's epoch and the last sequence number
    seen per topic.  A file that does not exist is an empty one.

    @raise usage.UsageError: It is not a resume file, or too large.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_RESUME_BYTES + 1)
    except FileNotFoundError:
        return None, {}
    except OSError as e:
        raise usage.UsageError(f"--resume {path!r}: {e.strerror}") from None
    bad = usage.UsageError(f"--resume {path!r} is not a netdemo tail resume file")
    if len(data) > MAX_RESUME_BYTES:
        raise bad
    try:
        state = json.loads(data)
    except ValueError:
        raise bad from None
    if not isinstance(state, dict):
        raise bad
    epoch, topics = state.get("epoch"), state.get("topics")
    if (
        not (
            epoch is None
            or isinstance(epoch, str)
            and _EPOCH.fullmatch(b"epoch " + epoch.encode("ascii", "replace"))
        )
        or not isinstance(topics, dict)
        or len(topics) > MAX_RESUME_TOPICS
    ):
        raise bad
    positions: dict[str, int] = {}
    for topic, seq in topics.items():
        if (
            not isTopic(topic.encode("ascii", "replace"))
            or type(seq) is not int
            or not 0 <= seq < 10**MAX_SEQ_DIGITS
        ):
            raise bad
        positions[topic] = seq
    return epoch, positions


def writeResume(path: str, epoch: str | None, positions: dict[str, int]) -> None:
    """
    Write a C{--resume} file at once (a new file renamed over the old).
    """
    temporary = f"{path}.tmp{os.getpid()}"
    with open(temporary, "w", encoding="ascii") as f:
        json.dump({"epoch": epoch, "topics": positions}, f, sort_keys=True)
        f.write("\n")
    os.replace(temporary, path)


class TailOptions(TLSClientOptions, GnuOptions):
    """
    C{netdemo tail HOST:PORT [--sub PATTERN]... [--history N] [--json]}.
    """

    synopsis = (
        "HOST:PORT [--sub PATTERN]... [--history N | --since SEQ] "
        "[--resume FILE] [--json] [--tls ...]"
    )
    longdesc = (
        "Subscribe to the pub/sub hub and print every message delivered, one "
        "per line: as the hub sends it, or with --json as a JSON object with "
        "topic, identity, text, received (UTC), history and seq (the line's "
        "sequence number on its topic). Patterns follow "
        "the hub's rules (* one token, a final > one or more). Without --sub "
        "you get the default topic, chat. The subscriptions are renewed after "
        "every reconnection; /ping every --keepalive seconds keeps a quiet "
        "subscription open. --history N first replays the last N lines kept "
        "of every topic that a pattern matches (on the first connection "
        "only). --since SEQ first prints the lines numbered after SEQ of every "
        "such topic, then follows, with no line twice and none missed between "
        "(a gap in the hub's history is told on standard error). --resume FILE "
        "remembers the last sequence number seen per topic in FILE and the "
        "next run goes on from there (a hub restarted since starts over at "
        "what it kept, and says so); after a reconnection tail resumes too. "
        "Notices go to standard error; Ctrl-C prints a summary there.\n\n"
        "Examples:\n"
        "  netdemo tail 127.0.0.1:8008\n"
        "  netdemo tail localhost:8008 --sub 'lab.>' --sub alerts --history 10\n"
        "  netdemo tail 127.0.0.1:8008 -s '>' --json | jq .text\n"
        "  netdemo tail 127.0.0.1:8008 -s alerts --resume alerts.pos\n"
        "  netdemo tail 127.0.0.1:8008 -s 'lab.>' --user al --password-file pw"
    )
    optFlags = [["json", "j", "One JSON object per message"]]
    optParameters: list[list[Any]] = [
        [
            "history",
            None,
            0,
            "Lines of history to replay per matching topic first",
            _historyCoerce,
        ],
        [
            "since",
            None,
            None,
            "Print the lines numbered after SEQ of every matching topic first",
            _sinceCoerce,
        ],
        ["resume", None, None, "Remember and resume from the last line seen in FILE"],
        KEEPALIVE_OPTION,
        TIMEOUT_OPTION,
        *LOGIN_OPTIONS,
    ]

    def __init__(self) -> None:
        super().__init__()
        self["subs"] = []

    def opt_sub(self, pattern: str) -> None:
        """
        Subscribe to PATTERN (repeatable) [default: chat]
        """
        self["subs"].append(pattern)

    opt_s = opt_sub

    def parseArgs(self, target: str) -> None:  # type: ignore[override]
        self["host"], self["port"] = parseHostPort(target)

    def postOptions(self) -> None:
        if not self["subs"]:
            self["subs"] = [DEFAULT_TOPIC.decode()]
        for pattern in self["subs"]:
            if not pattern or any(c.isspace() for c in pattern):
                raise usage.UsageError(f"--sub {pattern!r} is not a pattern")
        if self["since"] is not None and self["history"]:
            raise usage.UsageError("--since and --history exclude each other")
        self["epoch"], self["positions"] = (
            (None, {}) if self["resume"] is None else readResume(self["resume"])
        )
        readLogin(self)


def topicMatches(pattern: str, topic: str) -> bool:
    """
    Whether a hub pattern matches a topic (C{*} one token, a final C{>}
    one or more).
    """
    return patternMatches(pattern.encode().split(b"."), topic.encode().split(b"."))


def asJSON(delivery: Delivery, received: datetime, history: bool) -> str:
    """
    A delivery as one JSON object (one line): C{topic}, C{identity},
    C{text} (invalid UTF-8 replaced), C{received} (UTC, ISO 8601),
    C{history} (whether the line was replayed from the hub's history) and
    C{seq} (its sequence number on its topic, or null); C{local} (true)
    for a line its hub marked as delivered while Redis was down (C{#- }).
    """
    stamp = received.isoformat(timespec="microseconds").replace("+00:00", "Z")
    record: dict[str, Any] = {
        "topic": delivery.topic.decode("ascii", "replace"),
        "identity": delivery.identity.decode("utf-8", "replace"),
        "text": delivery.text.decode("utf-8", "replace"),
        "received": stamp,
        "history": history,
        "seq": delivery.seq,
    }
    if delivery.local:
        # Shared history: delivered by its hub while Redis was down.
        record["local"] = True
    return json.dumps(record, ensure_ascii=False)


class Tail:
    """
    The state of a C{netdemo tail} run.

    @ivar stopped: Fires when the run should end (Ctrl-C, or nobody reads
        the output).
    @ivar sequenced: Whether deliveries are numbered (C{/seq on}).
    @ivar epoch: The hub's epoch (from C{/seq on}, or the resume file).
    @ivar positions: Topic -> the last sequence number printed.
    @ivar held: While resuming, the deliveries that wait to be printed in
        sequence order, with their lines as printed.
    """

    def __init__(self, reactor: Any, options: TailOptions, console: Console) -> None:
        self.reactor = reactor
        self.options = options
        self.console = console
        self.patterns: list[str] = options["subs"]
        self.messages = 0
        self.replayed = 0
        self.skipped = 0
        self.replaying = False
        self.sequenced = bool(
            options["json"]
            or options["since"] is not None
            or options["resume"] is not None
        )
        self.epoch: str | None = options["epoch"]
        self.positions: dict[str, int] = dict(options["positions"])
        self.held: list[tuple[Delivery, bytes]] | None = None
        self.historyLast: dict[str, int] = {}
        self._saved = -RESUME_INTERVAL
        self._changed = False
        self.out = console.bytesOut()
        self.session = HubSession.fromOptions(
            reactor, console, options, self.hubLine, self.setUp, self.flush
        )
        self.stopped: Deferred[None] = Deferred()

    def hubLine(self, line: bytes) -> None:
        """
        Print a delivery (held while resuming); notices and stray lines are
        notices.
        """
        delivery = parseDelivery(line)
        if delivery is None:
            if line.startswith(_EPOCH_CHANGED):
                self.epochChanged(line[len(_EPOCH_CHANGED) :])
            settingUp = self.session.connection is None
            if not isGreeting(line) and not (settingUp and line.startswith(ERR)):
                self.console.note(f"hub: {text(line)}")
            return
        if delivery.seq is not None or delivery.local:
            # As the hub sends it without /seq on.
            line = line.split(b" ", 1)[1]
        held = self.held
        if held is not None:
            held.append((delivery, line))
            if len(held) > MAX_HELD_LINES:
                self.console.note(
                    f"tail: more than {MAX_HELD_LINES} lines arrived while "
                    "resuming; printed before the rest, lines may be missing"
                )
                self.release()
                self.held = []
            return
        self.emit(delivery, line, self.replaying)

    def epochChanged(self, epoch: bytes) -> None:
        """
        The hub's shared history lost its past (C{* epoch changed to E}):
        numbers start again from 1, so every position goes back to 0.
        """
        if not _EPOCH.fullmatch(b"epoch " + epoch):
            return
        self.epoch = epoch.decode("ascii")
        self.positions = dict.fromkeys(self.positions, 0)
        self._changed = True

    def emit(self, delivery: Delivery, line: bytes, history: bool) -> None:
        """
        Print a delivery, unless its sequence number was printed already.
        """
        seq = delivery.seq
        if seq is not None:
            topic = delivery.topic.decode("ascii", "replace")
            positions = self.positions
            last = positions.pop(topic, None)
            if last is not None and seq <= last:
                positions[topic] = last
                self.skipped += 1
                return
            positions[topic] = seq
            if len(positions) > MAX_RESUME_TOPICS:
                del positions[next(iter(positions))]
            self._changed = True
        self.messages += 1
        if history:
            self.replayed += 1
        if self.options["json"]:
            received = datetime.now(timezone.utc)
            self.write(asJSON(delivery, received, history).encode() + b"\n")
        else:
            self.write(line + b"\n")

    def release(self, unnumbered: bool = True) -> None:
        """
        Print what was held while resuming, in sequence order per topic;
        the lines without a number too, unless told not to.
        """
        held, self.held = self.held, None
        if not held:
            return
        if not unnumbered:
            held = [entry for entry in held if entry[0].seq is not None]
        # Topic by topic, in the order they came first; each topic's lines
        # in the order of their numbers.
        order: dict[bytes, int] = {}
        for delivery, _ in held:
            order.setdefault(delivery.topic, len(order))
        held.sort(key=lambda entry: (order[entry[0].topic], entry[0].seq or 0))
        for delivery, line in held:
            topic = delivery.topic.decode("ascii", "replace")
            seq = delivery.seq or 0
            self.emit(delivery, line, seq <= self.historyLast.get(topic, 0))

    def write(self, data: bytes) -> None:
        """
        Write to the output; when its reader has gone (C{| head}), stop.
        """
        try:
            self.out.write(data)
        except BrokenPipeError:
            self.outputGone()

    def flush(self) -> None:
        """
        Flush the output (after each read from the hub), and save the
        positions (at most once every L{RESUME_INTERVAL} seconds).
        """
        try:
            self.out.flush()
        except BrokenPipeError:
            self.outputGone()
        if self._changed and self.reactor.seconds() - self._saved >= RESUME_INTERVAL:
            self.save()

    def save(self) -> None:
        """
        Write the C{--resume} file, if asked for and anything changed.
        """
        path = self.options["resume"]
        if path is None or not self._changed:
            return
        self._changed = False
        self._saved = self.reactor.seconds()
        try:
            writeResume(path, self.epoch, self.positions)
        except OSError as e:
            self.console.note(f"tail: cannot write --resume {path!r}: {e.strerror}")

    def outputGone(self) -> None:
        """
        Nobody reads the output any more: end quietly.  If it is a
        descriptor (standard output), point it at C{/dev/null}, so that
        what is still buffered can be flushed at exit without an error.
        """
        try:
            descriptor = self.out.fileno()
        except (AttributeError, OSError, ValueError):
            descriptor = None
        if descriptor is not None:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, descriptor)
            os.close(devnull)
        if not self.stopped.called:
            self.stopped.callback(None)

    async def _setUp(self, connection: HubConnection, first: bool) -> None:
        """
        Number deliveries if needed, unsubscribe from the default topic
        unless asked for, subscribe to every pattern, then resume or (on
        the first connection) replay the history.
        """
        # Until it is known whether a resume or a replay follows, and then
        # until it is done (the replays and the live lines may overlap),
        # deliveries are held, and printed in order.
        if self.sequenced:
            self.held = []
        try:
            await logIn(connection, self.options)
            resuming = False
            if self.sequenced:
                resuming = await self._numbered(connection, first)
            replaying = first and bool(self.options["history"]) and not resuming
            if not (resuming or replaying and self.sequenced):
                self.release()
            wanted = [p.encode("utf-8") for p in self.patterns]
            if DEFAULT_TOPIC not in wanted:
                await connection.command(b"/unsub " + DEFAULT_TOPIC)
            for pattern in wanted:
                answer = await connection.command(b"/sub " + pattern)
                if answer.startswith(ERR):
                    if first:
                        raise CommandError(
                            f"the hub refused --sub {text(pattern)!r}: {text(answer)}"
                        )
                    self.console.note(f"subscription: {text(answer)}")
            if resuming:
                await self._resume(connection, first)
                # What came before /seq on took effect was published before
                # the resume's /history since: in its replay, or its gap.
                self.release(unnumbered=False)
            elif replaying:
                await self._replay(connection)
        finally:
            self.release()

    async def _numbered(self, connection: HubConnection, first: bool) -> bool:
        """
        Ask for numbered deliveries (C{/seq on}) and check the hub's epoch.

        @return: Whether to resume (C{--since}, C{--resume} or a position
            from an earlier connection).
        """
        answer = await connection.command(b"/seq on")
        match = _EPOCH.search(answer)
        if answer.startswith(ERR) or match is None:
            if self.options["since"] is not None or self.options["resume"]:
                raise CommandError(f"the hub does not number its lines: {text(answer)}")
            self.console.note(f"hub: {text(answer)} (no sequence numbers)")
            self.sequenced = False
            return False
        epoch = match[1].decode("ascii")
        if self.epoch is not None and epoch != self.epoch and self.positions:
            self.console.note(
                f"tail: the hub restarted (epoch {epoch}, was {self.epoch}): "
                "resuming from the first line it kept"
            )
            self.positions = dict.fromkeys(self.positions, 0)
            self._changed = True
        if self.epoch != epoch:
            self.epoch = epoch
            self._changed = True
        return bool(self.positions) or (first and self.options["since"] is not None)

    async def _resume(self, connection: HubConnection, first: bool) -> None:
        """
        Ask for the lines after the position of every matching topic: the
        positions seen, and on the first connection C{--since} for the
        other topics with history (and the patterns that are topics).
        """
        since: dict[str, int] = {
            t: seq
            for t, seq in self.positions.items()
            if any(topicMatches(p, t) for p in self.patterns)
        }
        start = self.options["since"]
        if first and start is not None:
            answer = await connection.command(b"/topics")
            _, _, known = text(answer).partition("with history:")
            candidates = [*self.patterns, *known.split()]
            for topic in candidates:
                if (
                    topic not in since
                    and isTopic(topic.encode("ascii", "replace"))
                    and any(topicMatches(p, topic) for p in self.patterns)
                ):
                    since[topic] = start
        # The epoch too, when known: a hub whose history is of another
        # epoch says that the position is gone, and replays all it kept.
        epoch = f"@{self.epoch}" if self.epoch else ""
        for topic, seq in since.items():
            answer = await connection.command(
                f"/history since {seq}{epoch} {topic}".encode("ascii", "replace")
            )
            match = _LAST_SEQ.search(answer)
            if answer.startswith(ERR) or match is None:
                self.console.note(f"resume {topic}: {text(answer)}")
                continue
            self.historyLast[topic] = int(match[1])

    async def _replay(self, connection: HubConnection) -> None:
        """
        Replay the history of every topic that the hub keeps history for and
        a pattern matches.
        """
        answer = await connection.command(b"/topics")
        _, _, known = text(answer).partition("with history:")
        topics = [
            t
            for t in known.split()
            if t != "..." and any(topicMatches(p, t) for p in self.patterns)
        ]
        for topic in topics:
            self.replaying = True
            try:
                answer = await connection.command(
                    f"/history {self.options['history']} {topic}".encode()
                )
            finally:
                self.replaying = False
            match = _LAST_SEQ.search(answer)
            if match is not None:
                self.historyLast[topic] = int(match[1])

    def setUp(self, connection: HubConnection, first: bool) -> Deferred[None]:
        """
        Subscribe (again); on the first connection, replay the history.
        """
        return Deferred.fromCoroutine(self._setUp(connection, first))

    def summary(self) -> str:
        """
        The closing notice.
        """
        return (
            f"tail of {self.session.target} ended: "
            f"{plural(self.messages, 'message')} ({self.replayed} from history), "
            f"{plural(max(self.session.connections - 1, 0), 'reconnection')}"
        )


async def runTail(reactor: Any, options: TailOptions, console: Console) -> int:
    """
    Run C{netdemo tail}.

    @return: The exit status.
    """
    tail = Tail(reactor, options, console)
    interrupted = whenInterrupted(reactor)

    def stop(_: object) -> None:
        if not tail.stopped.called:
            tail.stopped.callback(None)

    interrupted.addCallback(stop)
    await tail.session.start()
    await tail.stopped
    await tail.session.stop()
    tail.flush()
    tail.save()
    console.note(tail.summary())
    return 0
