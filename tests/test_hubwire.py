"""
Tests for L{netdemo.hubwire}: the hub's grammar with plain calls, no
transport and no reactor.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from netdemo import hubwire
from netdemo.hubwire import (
    CLOSE,
    DEFAULT_TOPIC,
    LINE_TOO_LONG,
    Command,
    Event,
    HubReader,
    LineBuffer,
    Publish,
    Reply,
    escapeControls,
    escapeLines,
    isAnswer,
    isCommand,
    isDotted,
    isIdentity,
    isNick,
    isNode,
    isPattern,
    isQuit,
    isTopic,
    linePrefix,
    parseDelivery,
    patternMatches,
    sequenced,
    sequencedBlock,
    splitSender,
    textLines,
)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    """
    Split C{data} at the given offsets (taken modulo its length plus one).
    """
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces = []
    last = 0
    for p in [*points, len(data)]:
        if p > last:
            pieces.append(data[last:p])
            last = p
    return pieces


def meaning(events: list[Event]) -> tuple[list[object], int]:
    """
    What a list of events means, line by line, and how many C{/pub} lines
    get an answer: the same whatever the reads were (batches, and where
    their answers go, depend on the reads; the lines do not).
    """
    flat: list[object] = []
    acks = 0
    for event in events:
        if isinstance(event, Publish):
            flat.extend((event.topic, line) for line in event.lines)
            acks += event.acks
        else:
            flat.append(event)
    return flat, acks


def feedAll(
    pieces: list[bytes], maxLine: int = 4096, budget: int = 10**9
) -> list[Event]:
    """
    Feed the pieces to one reader, as the hub does: each read, then what
    waits past the budget, until the connection ends (L{CLOSE},
    L{LINE_TOO_LONG}).  Return every event, in order.
    """
    reader = HubReader(maxLine, budget)
    events: list[Event] = []
    for piece in pieces:
        events.extend(reader.feed(piece))
        while reader.waiting and not (events and events[-1] in (CLOSE, LINE_TOO_LONG)):
            events.extend(reader.next())
        if events and events[-1] in (CLOSE, LINE_TOO_LONG):
            break
    return events


class GrammarTests(SynchronousTestCase):
    """
    Topics, patterns, nicknames, identities and their matching.
    """

    def test_patternMatches(self) -> None:
        """
        C{*} matches one token, a final C{>} one or more, others exactly.
        """
        cases = [
            (b"a.b.c", b"a.b.c", True),
            (b"a.b.c", b"a.b", False),
            (b"a.*.c", b"a.x.c", True),
            (b"a.*.c", b"a.x.y.c", False),
            (b"a.>", b"a.b", True),
            (b"a.>", b"a.b.c.d", True),
            (b"a.>", b"a", False),
            (b">", b"anything.at.all", True),
            (b"*", b"one", True),
            (b"*", b"one.two", False),
            (b"a.b", b"a.b.c", False),
        ]
        for pattern, topic, expected in cases:
            self.assertEqual(
                patternMatches(pattern.split(b"."), topic.split(b".")),
                expected,
                (pattern, topic),
            )

    def test_topics(self) -> None:
        """
        A topic is tokens of letters, digits, C{_} and C{-} joined by dots,
        at most 255 bytes unless any length is asked for.
        """
        for good in [b"chat", b"lab.rack-1.temp_c", b"a" * 255]:
            self.assertTrue(isTopic(good), good)
        for bad in [b"", b"a..b", b".a", b"a.", b"a b", b"a.*", b"caf\xc3\xa9"]:
            self.assertFalse(isTopic(bad), bad)
        self.assertFalse(isTopic(b"a" * 256))
        self.assertTrue(isTopic(b"a" * 256, anyLength=True))
        self.assertTrue(isDotted("netdemo.eu-1"))
        self.assertFalse(isDotted("caf\u00e9"))
        self.assertFalse(isDotted("a*b"))

    def test_patterns(self) -> None:
        """
        Patterns use C{*} for one token and a final C{>}.
        """
        for good in [b">", b"*", b"a.*.c", b"a.>", b"*.b.>", b"chat"]:
            self.assertTrue(isPattern(good), good)
        for bad in [b"", b"a.>.b", b">.a", b"a..b", b"a*", b"x" * 256]:
            self.assertFalse(isPattern(bad), bad)

    def test_names(self) -> None:
        """
        Nicknames start with a letter and have at most 32 bytes; nodes are
        one token of at most 64 bytes; identities have no space or angle
        bracket.
        """
        self.assertTrue(isNick(b"a" + b"-" * 31))
        for bad in [b"", b"9lives", b"a" * 33, b"b:c", b"a b"]:
            self.assertFalse(isNick(bad), bad)
        self.assertTrue(isNode(b"0" * 64))
        self.assertFalse(isNode(b"0" * 65))
        self.assertFalse(isNode(b"n!"))
        self.assertTrue(isIdentity(b"[::1]:4000"))
        for bad in [b"", b"a b", b"<a>", b"x" * 65]:
            self.assertFalse(isIdentity(bad), bad)


class TextTests(SynchronousTestCase):
    """
    Escaping, splitting and the prefixes of relayed text.
    """

    def test_escapeControls(self) -> None:
        """
        Control characters but tab are escaped as C{\\xHH}; other bytes,
        invalid UTF-8 included, are left alone.
        """
        self.assertEqual(
            escapeControls(b"a\tb\x00c\x1b[0m\x7f"), b"a\tb\\x00c\\x1b[0m\\x7f"
        )
        self.assertEqual(
            escapeControls(b"caf\xc3\xa9 \xff\xfe"), b"caf\xc3\xa9 \xff\xfe"
        )

    def test_escapeLines(self) -> None:
        """
        A block splits on LF only, empty lines kept, each line escaped.
        """
        self.assertEqual(escapeLines(b"a\n\nb\r"), [b"a", b"", b"b\\x0d"])
        self.assertEqual(escapeLines(b"plain"), [b"plain"])

    def test_textLines(self) -> None:
        """
        A text's lines end in LF or CRLF; empty ones are dropped; a lone CR
        is escaped.
        """
        self.assertEqual(
            textLines(b"a\r\nb\n\nc\rd\n\x07"), [b"a", b"b", b"c\\x0dd", b"\\x07"]
        )
        self.assertEqual(textLines(b"\n\r\n"), [])

    def test_splitSender(self) -> None:
        """
        A text may start with C{<NAME>} and one optional space.
        """
        self.assertEqual(splitSender(b"<ops> back"), (b"ops", b"back"))
        self.assertEqual(splitSender(b"<ops>tight"), (b"ops", b"tight"))
        self.assertEqual(splitSender(b"<not a name> x"), (None, b"<not a name> x"))

    def test_linePrefix(self) -> None:
        """
        The default topic's lines show the sender only; others the topic too.
        """
        self.assertEqual(linePrefix(DEFAULT_TOPIC, b"al"), b"<al> ")
        self.assertEqual(linePrefix(b"t.x", b"al"), b"[t.x] <al> ")

    def test_replies(self) -> None:
        """
        The hub's own lines are as C{docs/protocol.md} shows them.
        """
        self.assertEqual(
            hubwire.greeting(b"127.0.0.1:5", 2, 3),
            b"* welcome to netdemo pubsub, you are 127.0.0.1:5 (client #2, "
            b"3 connected)",
        )
        self.assertEqual(hubwire.joined(b"x", 2), b"* x joined (2 connected)")
        self.assertEqual(hubwire.left(b"x", 1), b"* x left (1 connected)")
        self.assertEqual(hubwire.renamed(b"x", b"al"), b"* x is now al")
        self.assertEqual(hubwire.dropped(8), b"* dropped 8 lines (slow consumer)")
        self.assertEqual(
            hubwire.refused("max-connections"), b"-ERR refused: max-connections\n"
        )
        self.assertEqual(
            hubwire.closing("idle-timeout"), b"-ERR closing: idle-timeout\n"
        )
        self.assertEqual(
            hubwire.tooLong(10), b"-ERR line longer than 10 bytes, closing"
        )
        self.assertEqual(hubwire.usage(b"/echo on|off"), b"-ERR usage: /echo on|off")
        self.assertEqual(
            hubwire.unknownCommand(b"/x\x1b" + b"y" * 100),
            b"-ERR unknown command /x\\x1b" + b"y" * 61,
        )


class ReaderTests(SynchronousTestCase):
    """
    L{HubReader}: bytes in, events out.
    """

    def test_plainLinesOneEvent(self) -> None:
        """
        A read of N plain lines is one L{Publish} event on the default topic
        holding the N lines: the batch the hub writes once per subscriber.
        """
        data = b"".join(b"line %d\n" % i for i in range(500))
        [event] = HubReader(4096).feed(data)
        assert isinstance(event, Publish)
        self.assertEqual(event.topic, DEFAULT_TOPIC)
        self.assertEqual(event.lines, [b"line %d" % i for i in range(500)])
        self.assertEqual(event.acks, 0)

    def test_crlfOneEvent(self) -> None:
        """
        CRLF ends are plain lines too: still one event, without the CRs.
        """
        self.assertEqual(
            HubReader(100).feed(b"one\r\ntwo\nthree\r\n"),
            [Publish(DEFAULT_TOPIC, [b"one", b"two", b"three"])],
        )

    def test_pubBatches(self) -> None:
        """
        Consecutive C{/pub} lines to one topic are one event whose C{acks}
        counts them; a change of topic starts another event.
        """
        data = b"/pub a.b 1\n/PUB a.b 2\n/pub c 3\nplain\n/pub chat 4\n"
        self.assertEqual(
            HubReader(100).feed(data),
            [
                Publish(b"a.b", [b"1", b"2"], 2),
                Publish(b"c", [b"3"], 1),
                Publish(DEFAULT_TOPIC, [b"plain", b"4"], 1),
            ],
        )

    def test_mixed(self) -> None:
        """
        Commands, a bad topic, C{//}, blank lines and control characters each
        mean what the grammar says, in order.
        """
        data = (
            b"a\n\n/nick  bob \n//etc\n/pub a..b x\nbell\x07\n/\n/pub\n"
            b"/Who x\tmore\nb\n"
        )
        self.assertEqual(
            HubReader(100).feed(data),
            [
                Publish(DEFAULT_TOPIC, [b"a"]),
                Command(b"nick", b"bob", b"/nick"),
                Publish(DEFAULT_TOPIC, [b"/etc"]),
                Reply(b"-ERR bad topic a..b"),
                Publish(DEFAULT_TOPIC, [b"bell\\x07"]),
                Command(b"", b"", b"/"),
                Command(b"pub", b"", b"/pub"),
                Command(b"who", b"x\tmore", b"/Who"),
                Publish(DEFAULT_TOPIC, [b"b"]),
            ],
        )

    def test_close(self) -> None:
        """
        C{close} ends the read: nothing after it counts, not even the
        partial line.
        """
        reader = HubReader(100)
        self.assertEqual(
            reader.feed(b"last\nclose\nnever\npartial"),
            [Publish(DEFAULT_TOPIC, [b"last"]), CLOSE],
        )
        self.assertEqual(reader.buffer, b"")

    def test_tooLongLine(self) -> None:
        """
        A complete line over the limit ends the read after the lines before
        it; a partial line over the limit plus one (room for a CR) is
        refused as soon as it is seen.
        """
        self.assertEqual(
            HubReader(10).feed(b"0123456789\n" + b"x" * 11 + b"\nafter\n"),
            [Publish(DEFAULT_TOPIC, [b"0123456789"]), LINE_TOO_LONG],
        )
        reader = HubReader(10)
        self.assertEqual(reader.feed(b"y" * 11), [])
        self.assertEqual(reader.feed(b"y"), [LINE_TOO_LONG])
        self.assertEqual(reader.buffer, b"")
        self.assertEqual(
            HubReader(10).feed(b"ok\n" + b"z" * 12),
            [Publish(DEFAULT_TOPIC, [b"ok"]), LINE_TOO_LONG],
        )
        self.assertEqual(
            HubReader(10).feed(b"0123456789\r\n"),
            [Publish(DEFAULT_TOPIC, [b"0123456789"])],
        )

    def test_partialTicks(self) -> None:
        """
        The age of the partial line starts again with a new partial line or
        any complete line, not with more bytes of the same line.
        """
        reader = HubReader(100)
        reader.feed(b"part")
        reader.partialTicks = 5
        reader.feed(b"more")
        self.assertEqual(reader.partialTicks, 5)
        reader.feed(b"\nnext")
        self.assertEqual((reader.partialTicks, reader.buffer), (0, b"next"))
        reader.discard()
        reader.partialTicks = 3
        reader.feed(b"new")
        self.assertEqual(reader.partialTicks, 0)

    STREAM = (
        b"plain one\r\n/sub t.>\n/pub t.a in topic\r\nctl\x01char\n\n"
        b"/nick chunky\nafter nick\n//slash\n/pub t.b b1\n/pub t.b b2\nend\r\n"
        b"/pub x..y bad\nclose\nignored\n"
    )

    def test_everySplitPoint(self) -> None:
        """
        Cut in two anywhere, or in pieces of any fixed size down to one
        byte, the stream means the same as read whole.
        """
        data = self.STREAM
        expected = meaning(feedAll([data]))
        self.assertIn((b"t.a", b"in topic"), expected[0])
        self.assertEqual(expected[0][-1], CLOSE)
        self.assertEqual(expected[1], 3)
        for cut in range(len(data) + 1):
            self.assertEqual(meaning(feedAll([data[:cut], data[cut:]])), expected, cut)
        for size in range(1, len(data) + 1):
            pieces = [data[i : i + size] for i in range(0, len(data), size)]
            self.assertEqual(meaning(feedAll(pieces)), expected, size)

    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(
            st.sampled_from(
                [b"", b"close", b"/ping", b"//x", b"/pub t.a y", b"/pub t..a y"]
            )
            | st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")),
            max_size=25,
        ),
        st.lists(st.integers(0, 2000), max_size=40),
        st.integers(1, 40),
        st.integers(1, 6),
    )
    def test_anyChunking(
        self, lines: list[bytes], cuts: list[int], maxLine: int, budget: int
    ) -> None:
        """
        Any lines (LF or CRLF), any limit, cut anywhere, read a few lines
        per call: the events mean the same as for the whole stream in one
        read.
        """
        data = b"".join(
            line + (b"\r\n" if i % 3 == 0 else b"\n") for i, line in enumerate(lines)
        )
        whole = meaning(feedAll([data], maxLine))
        self.assertEqual(meaning(feedAll(chunked(data, cuts), maxLine)), whole)
        self.assertEqual(
            meaning(feedAll(chunked(data, cuts), maxLine, budget)), whole, budget
        )

    def test_budget(self) -> None:
        """
        A read of commands gives at most C{budget} lines' events per call;
        the rest wait, in order, and bytes fed meanwhile are kept after
        them; a read of plain lines is one event, whatever the budget.
        """
        reader = HubReader(100, budget=2)
        self.assertEqual(len(reader.feed(b"/a\n/b\n/c\n/d\n/e\npar")), 2)
        self.assertTrue(reader.waiting)
        self.assertEqual(reader.feed(b"tial\n/f\n"), [])
        reader.stash(b"/g\n")
        names = []
        for _ in range(10):
            for event in reader.next():
                names.append(event.name if isinstance(event, Command) else event)
        self.assertFalse(reader.waiting)
        self.assertEqual(
            names, [b"c", b"d", b"e", Publish(DEFAULT_TOPIC, [b"partial"]), b"f", b"g"]
        )
        [event] = reader.feed(b"".join(b"line %d\n" % i for i in range(100)))
        assert isinstance(event, Publish)
        self.assertEqual(len(event.lines), 100)
        self.assertFalse(reader.waiting)

    def test_escapesC1AndBidi(self) -> None:
        """
        A read with a C1 or bidi control (in UTF-8) leaves the fast path,
        and the control is escaped; other UTF-8 keeps the fast path.
        """
        reader = HubReader(100)
        [event] = reader.feed("caf\u00e9 \u201cq\u201d \u2026\n".encode())
        self.assertEqual(
            event, Publish(DEFAULT_TOPIC, ["caf\u00e9 \u201cq\u201d \u2026".encode()])
        )
        [event] = reader.feed("a\u202eb\nc\u009bd\n".encode())
        self.assertEqual(event, Publish(DEFAULT_TOPIC, [b"a\\u202eb", b"c\\u009bd"]))


class LineBufferTests(SynchronousTestCase):
    """
    L{LineBuffer}: the clients' line splitting.
    """

    def test_anyChunking(self) -> None:
        """
        Lines end in LF or CRLF; one CR before the LF is dropped; the last
        line without an end comes out at the end of the stream.
        """
        data = b"a\r\nb\n\nc\rd\r\r\nlast"
        for size in range(1, len(data) + 1):
            lines = LineBuffer()
            got = []
            for i in range(0, len(data), size):
                got.extend(lines.feed(data[i : i + size]))
            got.extend(lines.end())
            self.assertEqual(got, [b"a", b"b", b"", b"c\rd\r", b"last"], size)
            self.assertEqual(lines.partial, b"")


class ClientGrammarTests(SynchronousTestCase):
    """
    How clients read the hub's lines.
    """

    def test_deliveries(self) -> None:
        """
        Default-topic and topic deliveries are parsed; notices and answers
        are not deliveries.
        """
        plain = parseDelivery(b"<alice> hello there")
        assert plain is not None
        self.assertEqual(
            (plain.topic, plain.identity, plain.text),
            (DEFAULT_TOPIC, b"alice", b"hello there"),
        )
        topical = parseDelivery(b"[lab.rack1] <[::1]:4000> 21.5 \xff")
        assert topical is not None
        self.assertEqual(
            (topical.topic, topical.identity, topical.text),
            (b"lab.rack1", b"[::1]:4000", b"21.5 \xff"),
        )
        self.assertIsNone(plain.seq)
        for other in [b"* alice joined (2 connected)", b"+OK pong", b"-ERR x", b""]:
            self.assertIsNone(parseDelivery(other))

    def test_sequenced(self) -> None:
        """
        Numbered deliveries (C{/seq on}) are C{#SEQ} and a space before the
        line; what C{sequencedBlock} and C{sequenced} write reads back.
        """
        block = sequencedBlock(41, b"[t.x] <al> ", [b"a", b"#2 b"])
        self.assertEqual(block, b"#41 [t.x] <al> a\n#42 [t.x] <al> #2 b\n")
        self.assertEqual(
            sequenced(7, [b"<al> x", b"[t] <b> y"]), [b"#7 <al> x", b"#8 [t] <b> y"]
        )
        parsed = [parseDelivery(line) for line in block.splitlines()]
        self.assertEqual(
            [(d.seq, d.topic, d.text) for d in parsed if d is not None],
            [(41, b"t.x", b"a"), (42, b"t.x", b"#2 b")],
        )
        for other in [
            b"#x <al> a",
            b"#1<al> a",
            b"# 1 <al> a",
            b"#" + b"9" * 19 + b" <a> b",
        ]:
            self.assertIsNone(parseDelivery(other))

    def test_answersAndCommands(self) -> None:
        """
        Answers start with C{+OK} or C{-ERR}; commands with one slash or
        are C{close}; C{/quit} and C{close} end the connection.
        """
        self.assertTrue(isAnswer(b"+OK pong"))
        self.assertTrue(isAnswer(b"-ERR x"))
        self.assertFalse(isAnswer(b"* notice"))
        self.assertTrue(isCommand(b"/nick x"))
        self.assertTrue(isCommand(b"close"))
        self.assertFalse(isCommand(b"//text"))
        self.assertFalse(isCommand(b"closed"))
        self.assertTrue(isQuit(b"/QUIT now"))
        self.assertTrue(isQuit(b"close"))
        self.assertFalse(isQuit(b"/quitter"))
