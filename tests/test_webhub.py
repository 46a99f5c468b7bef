"""
The hub over WebSocket (C{/hub/ws}) and Server-Sent Events
(C{/hub/events}) on a real C{twistd netdemo}, driven by a maintained
WebSocket client library (C{websocket-client}, not the server's own code)
and plain sockets; and the frame and event encoders without I/O.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import urllib.error
import urllib.request
from functools import partial
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from netdemo.webhub import (
    MAX_ID_BYTES,
    EventStream,
    JSONFrames,
    TextFrames,
    _Events,
    messageLimit,
    parseEventId,
    textFrame,
)
from tests.support import Daemon, poll, readUntil
from tests.test_backplane_redis import BackplaneHub, RedisCase

#: Seconds any one step may take, at most (the machine is shared).
STEP = 30.0


def wsConnect(http: str, path: str = "/hub/ws", **kwargs: Any) -> Any:
    """
    A C{websocket-client} connection to the daemon's C{path}.
    """
    import websocket

    return websocket.create_connection(f"ws://{http}{path}", timeout=STEP, **kwargs)


def hubDaemon(*options: str) -> tuple[Daemon, str]:
    """
    A daemon with the hub and HTTP on loopback (and C{options}), listening,
    and its HTTP listener's C{host:port}.  The caller closes it.
    """
    daemon = Daemon(
        "--pubsub=tcp:0:interface=127.0.0.1",
        "--http=tcp:0:interface=127.0.0.1",
        *options,
    )
    try:
        daemon.waitListening(2, STEP)
    except BaseException:
        daemon.close()
        raise
    host, port = daemon.address("http")
    return daemon, f"{host}:{port}"


def recvUntil(ws: Any, predicate: Any, limit: int = 200) -> list[str]:
    """
    Messages received until one satisfies C{predicate} (it included).
    """
    seen = []
    for _ in range(limit):
        message = ws.recv()
        seen.append(message)
        if predicate(message):
            return seen
    raise AssertionError(f"nothing matched in {seen!r}")


def closeCode(ws: Any) -> int:
    """
    The status code of the close frame the server sends next (messages
    before it are skipped).
    """
    for _ in range(100):
        opcode, frame = ws.recv_data_frame(True)
        if opcode == 0x8:
            return int.from_bytes(frame.data[:2], "big")
    raise AssertionError("no close frame")


class HubClient:
    """
    A plain TCP hub client, as C{nc} is.
    """

    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = socket.create_connection(address, timeout=STEP)
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        return self.file.readline().rstrip(b"\n")

    def until(self, predicate: Any) -> list[bytes]:
        seen = []
        for _ in range(200):
            line = self.line()
            seen.append(line)
            if predicate(line):
                return seen
        raise AssertionError(f"nothing matched in {seen!r}")

    def close(self) -> None:
        self.file.close()
        self.sock.close()


class EncoderTests(SynchronousTestCase):
    """
    What the hub writes, as frames and events.
    """

    def test_textFrameLengths(self) -> None:
        """
        A text frame's length takes 7 bits below 126 bytes, 16 bits below
        64 KiB, 64 bits above; the payload follows unchanged.
        """
        for size, header in ((0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)):
            frame = textFrame(b"x" * size)
            self.assertEqual(len(frame), header + size)
            self.assertEqual(frame[0], 0x81)
        self.assertEqual(textFrame(b"hi"), b"\x81\x02hi")
        self.assertEqual(textFrame(b"x" * 200)[1:4], b"\x7e\x00\xc8")

    def test_textFramesOncePerBlock(self) -> None:
        """
        Each line is one frame; the same block (a fan-out writes one object
        to every subscriber) is encoded once; invalid UTF-8 is replaced (a
        text frame must be UTF-8).
        """
        frames = TextFrames()
        block = b"<a> one\n<a> two\n"
        out = frames(block)
        self.assertEqual(out, textFrame(b"<a> one") + textFrame(b"<a> two"))
        self.assertIs(frames(block), out)
        self.assertEqual(frames(b"<a> \xff\n"), textFrame("<a> \ufffd".encode()))

    def test_jsonObjects(self) -> None:
        """
        Deliveries become C{{topic, from, seq, time, text}}, answers
        C{{ok, text}}, notices C{{notice}}.
        """
        clock = Clock()
        clock.advance(12.5)
        frames = JSONFrames(clock.seconds)
        out = frames(b"#7 [lab.x] <ann> hello\n+OK pong\n-ERR no\n* hi\n<bob> x\n")
        import websocket

        objects = []
        rest = out
        while rest:
            size = rest[1]
            objects.append(json.loads(rest[2 : 2 + size]))
            rest = rest[2 + size :]
        self.assertEqual(
            objects,
            [
                {
                    "topic": "lab.x",
                    "from": "ann",
                    "seq": 7,
                    "time": 12.5,
                    "text": "hello",
                },
                {"ok": True, "text": "pong"},
                {"ok": False, "text": "no"},
                {"notice": "hi"},
                {
                    "topic": "chat",
                    "from": "bob",
                    "seq": None,
                    "time": 12.5,
                    "text": "x",
                },
            ],
        )
        self.assertTrue(websocket)

    def test_eventIds(self) -> None:
        """
        An event's id is the epoch and each topic's position, the most
        recent last; at most 32 topics, and 2 KiB; L{parseEventId} reads it
        back; a gap notice becomes a C{gap} event.
        """
        stream = EventStream(_Events(Clock().seconds), "e1", {})
        out = stream(b"#3 [a] <x> one\n#9 [b] <x> two\n#4 [a] <x> three\n")
        ids = [line for line in out.split(b"\n") if line.startswith(b"id: ")]
        self.assertEqual(ids, [b"id: e1 a=3", b"id: e1 a=3 b=9", b"id: e1 b=9 a=4"])
        self.assertEqual(parseEventId(b"e1 b=9 a=4"), ("e1", {b"b": 9, b"a": 4}, False))
        self.assertEqual(parseEventId(b"e1! b=9"), ("e1", {b"b": 9}, True))
        self.assertEqual(parseEventId(b"e1! bad!=3 d=2"), ("e1", {b"d": 2}, False))
        many = b"".join(b"#1 [t%d] <x> l\n" % i for i in range(40))
        out = stream(many)
        last = [line for line in out.split(b"\n") if line.startswith(b"id: ")][-1]
        self.assertEqual(len(parseEventId(last[4:])[1]), 32)
        long = b"".join(
            b"#1 [%s] <x> l\n" % (b"t" * 200 + b"%d" % i) for i in range(20)
        )
        out = stream(long)
        last = [line for line in out.split(b"\n") if line.startswith(b"id: ")][-1]
        self.assertLessEqual(len(last) - 4, MAX_ID_BYTES)
        gap = stream(b"* gap: history of a starts at seq 5\n")
        self.assertEqual(gap, b'event: gap\ndata: {"topic":"a","first":5}\n\n')


class WebSocketHubTests(SynchronousTestCase):
    """
    C{/hub/ws} on a real daemon: a WebSocket client is a hub client like
    any other.
    """

    daemon: Daemon
    http: str

    @classmethod
    def setUpClass(cls) -> None:
        cls.daemon, cls.http = hubDaemon(
            "--http-origin=https://example.org",
            "--max-line=1000",
            # The tests share the daemon: no notices of each other's clients.
            "--no-presence",
        )

    @classmethod
    def tearDownClass(cls) -> None:
        cls.daemon.close()

    def ws(self, path: str = "/hub/ws", **kwargs: Any) -> Any:
        ws = wsConnect(self.http, path, **kwargs)
        self.addCleanup(ws.close)
        return ws

    def tcp(self) -> HubClient:
        client = HubClient(self.daemon.address("pubsub"))
        self.addCleanup(client.close)
        client.line()
        return client

    def test_textMode(self) -> None:
        """
        In text mode each message is one hub line both ways: the greeting,
        commands and their answers, publications between a WebSocket and a
        TCP client on two topics, each delivered once and never echoed to
        its sender; a message with several lines is refused, answered and
        counted.
        """
        ws = self.ws()
        self.assertRegex(ws.recv(), r"^\* welcome to netdemo pubsub, you are ")
        ws.send("/nick webby")
        self.assertEqual(ws.recv(), "+OK nick webby")
        ws.send("/sub lab.>")
        self.assertEqual(ws.recv(), "+OK subscribed to lab.>")
        ws.send("/ping")
        self.assertEqual(ws.recv(), "+OK pong")
        nc = self.tcp()
        nc.send(b"/nick tcpy\n/sub lab.x\n")
        nc.until(lambda line: line.startswith(b"+OK subscribed"))
        nc.send(b"from tcp\n/pub lab.x tcp lab\n")
        got = recvUntil(ws, lambda m: "tcp lab" in m)
        self.assertIn("<tcpy> from tcp", got)
        self.assertIn("[lab.x] <tcpy> tcp lab", got)
        ws.send("from ws")
        ws.send("/pub lab.x ws lab\n")
        lines = nc.until(lambda line: b"ws lab" in line)
        self.assertIn(b"<webby> from ws", lines)
        self.assertIn(b"[lab.x] <webby> ws lab", lines)
        recvUntil(ws, lambda m: m == "+OK")
        ws.send("/who")
        who = recvUntil(ws, lambda m: m.startswith("+OK who"))[-1]
        self.assertIn("webby", who)
        self.assertIn("tcpy", who)
        ws.send("/history 5")
        replay = recvUntil(ws, lambda m: m.startswith("+OK history"))
        self.assertIn("<webby> from ws", replay)
        before = self.daemon.statusValue(
            "netdemo_http_hub_bad_messages_total", service="http", reason="lines"
        )
        ws.send("one\ntwo")
        self.assertEqual(
            recvUntil(ws, lambda m: m.startswith("-ERR"))[-1],
            "-ERR bad message: one line per message",
        )
        poll(
            lambda: (
                self.daemon.statusValue(
                    "netdemo_http_hub_bad_messages_total",
                    service="http",
                    reason="lines",
                )
                == before + 1
            ),
            "the bad message to be counted",
            STEP,
        )
        ws.send("/quit")
        self.assertEqual(recvUntil(ws, lambda m: m == "+OK bye")[-1], "+OK bye")

    def test_jsonMode(self) -> None:
        """
        With C{?format=json}, deliveries carry topic, sender, sequence
        number, time and text; the client publishes with C{{topic, text}}
        and gives commands with C{{command, arg}}; a message that is no such
        object is refused with an answer.
        """
        ws = self.ws("/hub/ws?format=json")
        self.assertIn("notice", json.loads(ws.recv()))
        self.assertRegex(json.loads(ws.recv())["text"], "^seq on, epoch [0-9a-f]+$")
        ws.send(json.dumps({"command": "sub", "arg": "jlab.*"}))
        self.assertEqual(
            json.loads(ws.recv()), {"ok": True, "text": "subscribed to jlab.*"}
        )
        nc = self.tcp()
        nc.send(b"/sub jlab.x\n")
        nc.until(lambda line: line.startswith(b"+OK subscribed"))
        nc.send(b"/pub jlab.x caf\xc3\xa9\n")
        got = [json.loads(m) for m in recvUntil(ws, lambda m: "caf" in m)]
        delivery = got[-1]
        self.assertEqual(delivery["topic"], "jlab.x")
        self.assertEqual(delivery["text"], "café")
        self.assertIsInstance(delivery["seq"], int)
        self.assertIsInstance(delivery["time"], float)
        self.assertRegex(delivery["from"], r"^127\.0\.0\.1:\d+$")
        ws.send(json.dumps({"topic": "jlab.x", "text": "/not a command"}))
        self.assertEqual(json.loads(ws.recv()), {"ok": True, "text": ""})
        self.assertTrue(
            nc.until(lambda line: b"not a command" in line)[-1].endswith(
                b"> /not a command"
            )
        )
        for bad in ("[1]", "{", json.dumps({"command": "s u b"}), "[" * 5000):
            ws.send(bad)
            answer = json.loads(ws.recv())
            self.assertEqual(answer["ok"], False, bad)
            self.assertIn("bad message", answer["text"])
        ws.send(json.dumps({"command": "nosuch"}))
        self.assertEqual(json.loads(ws.recv())["ok"], False)

    def test_messageLimit(self) -> None:
        """
        An incoming message longer than L{messageLimit} closes the WebSocket
        with 1009 (message too big), counted; a message of exactly the
        limit is read (and, over the hub's line limit, refused by the hub
        as a TCP line would be).
        """
        limit = messageLimit(1000)
        ws = self.ws()
        ws.recv()
        ws.send("x" * limit)
        self.assertRegex(ws.recv(), "^-ERR line longer than 1000 bytes, closing")
        ws = self.ws()
        ws.recv()
        ws.send("x" * (limit + 1))
        self.assertEqual(closeCode(ws), 1009)
        poll(
            lambda: (
                self.daemon.statusValue(
                    "netdemo_http_hub_bad_messages_total",
                    service="http",
                    reason="too-big",
                )
                >= 1
            ),
            "the message to be counted",
            STEP,
        )

    def test_origin(self) -> None:
        """
        A WebSocket or event stream from a page of another origin is
        refused with 403 and counted; the page's own origin and the origins
        given with C{--http-origin} are accepted.
        """
        import websocket

        before = self.daemon.statusValue(
            "netdemo_refused_total", service="http", reason="origin"
        )
        with self.assertRaises(websocket.WebSocketBadStatusException) as caught:
            wsConnect(self.http, origin="http://evil.example")
        self.assertEqual(caught.exception.status_code, 403)
        request = urllib.request.Request(
            f"http://{self.http}/hub/events?sub=chat",
            headers={"Origin": "http://evil.example"},
        )
        with self.assertRaises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=STEP)
        self.assertEqual(refused.exception.code, 403)
        refused.exception.close()
        poll(
            lambda: (
                self.daemon.statusValue(
                    "netdemo_refused_total", service="http", reason="origin"
                )
                == before + 2
            ),
            "both refusals to be counted",
            STEP,
        )
        for origin in (f"http://{self.http}", "https://example.org"):
            ws = self.ws(origin=origin)
            self.assertRegex(ws.recv(), r"^\* welcome")

    def test_notAHandshake(self) -> None:
        """
        A plain request for C{/hub/ws} is answered 400, by netdemo (not
        logged as an error by Twisted's WebSocket resource).
        """
        with self.assertRaises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(f"http://{self.http}/hub/ws", timeout=STEP)
        self.assertEqual(caught.exception.code, 400)
        self.assertIn(b"WebSocket handshake", caught.exception.read())
        caught.exception.close()

    def test_eventStream(self) -> None:
        """
        C{/hub/events} sends each delivery on the subscribed topics as an
        event whose id carries the epoch and the topic's position; with
        C{Last-Event-ID} a new stream is replayed what was published in
        between, from the hub's history, then goes on live.
        """
        nc = self.tcp()
        stream = EventReader(self.http, "/hub/events?sub=sse.>")
        self.addCleanup(stream.close)
        stream.waitFor(lambda e: "subscribed to sse.>" in e.get("data", ""))
        nc.send(b"/pub sse.a one\n/pub sse.b two\n/pub other x\n")
        events = stream.waitFor(lambda e: '"two"' in e.get("data", ""))
        deliveries = [e for e in events if "id" in e and "data" in e]
        self.assertEqual(
            [json.loads(e["data"])["text"] for e in deliveries], ["one", "two"]
        )
        lastId = deliveries[-1]["id"]
        self.assertRegex(lastId, r"^[0-9a-f]{16}!? sse\.a=\d+ sse\.b=\d+$")
        stream.close()
        nc.send(b"/pub sse.a three\n/pub sse.b four\n")
        nc.until(lambda line: line == b"+OK")
        nc.until(lambda line: line == b"+OK")
        resumed = EventReader(self.http, "/hub/events?sub=sse.>", lastId)
        self.addCleanup(resumed.close)
        events = resumed.waitFor(lambda e: '"four"' in e.get("data", ""))
        texts = [
            json.loads(e["data"])["text"] for e in events if "id" in e and "data" in e
        ]
        self.assertEqual(texts, ["three", "four"])
        nc.send(b"/pub sse.a five\n")
        events = resumed.waitFor(lambda e: '"five"' in e.get("data", ""))
        b = _position(lastId, "sse.b") + 1
        a = _position(lastId, "sse.a") + 2
        self.assertTrue(events[-1]["id"].endswith(f" sse.b={b} sse.a={a}"))

    def test_sharedHistoryLines(self) -> None:
        """
        With a shared history: a line delivered while Redis was down
        (C{#- }) is an event without an id, marked local (the browser's last
        id stays); the notice of lines this hub did not get is a C{gap}
        event; after the notice of a new epoch the ids name the new epoch
        and no position of the old one.
        """
        from netdemo import hubwire

        clock = Clock()
        stream = EventStream(_Events(clock.seconds), "old", {b"a": 3}, True)
        out = stream(b"#- [a] <x> while down\n")
        self.assertEqual(
            out,
            b'data: {"topic":"a","from":"x","seq":null,"time":0.0,'
            b'"text":"while down","local":true}\n\n',
        )
        out = stream(hubwire.missed(b"a", 4, 6) + b"\n")
        self.assertEqual(
            out,
            b'event: gap\ndata: {"topic":"a","first":7,"missed":[4,6]}\n\n',
        )
        out = stream(hubwire.epochChanged(b"new1") + b"\n#1 [b] <x> y\n")
        self.assertIn(b"event: hub\n", out)
        self.assertIn(b"id: new1 b=1\n", out)

    def test_resumeOrder(self) -> None:
        """
        While its replays are pending, a resumed stream holds back a live
        line that does not follow its topic's position, sends the replayed
        ones in order, never one twice, and what it held once they are
        answered; a replay that starts later than asked moves the position
        to where it starts.
        """
        stream = EventStream(_Events(Clock().seconds), "e", {b"a": 2, b"n": 0}, True, 2)

        def texts(out: bytes) -> list[str]:
            found = [
                json.loads(line[6:])
                for line in out.split(b"\n")
                if line.startswith(b"data: {")
            ]
            return [m["text"] for m in found if "topic" in m and "text" in m]

        self.assertEqual(texts(stream(b"#5 [a] <x> five\n#9 [n] <x> nine\n")), [])
        out = stream(b"#3 [a] <x> three\n#4 [a] <x> four\n#5 [a] <x> five\n")
        self.assertEqual(texts(out), ["three", "four", "five"])
        out = stream(
            b"+OK history 3 lines since 2, last seq 5, epoch e\n"
            b"* gap: history of n starts at seq 8\n#8 [n] <x> eight\n"
        )
        self.assertEqual(texts(out), ["eight", "nine"])
        self.assertIn(b"event: gap", out)
        out = stream(b"+OK history 1 lines since 0, last seq 9, epoch e\n")
        self.assertEqual(stream.pending, 0)
        self.assertEqual(texts(stream(b"#10 [n] <x> ten\n#9 [n] <x> nine\n")), ["ten"])
        self.assertEqual(stream.eventId(), b"e! a=5 n=10")

    def test_eventIdComplete(self) -> None:
        """
        A new stream's first id names where each of its topics is (C{!}
        after the epoch: all of them); the positions a stream keeps stay
        complete until one is left out of the id.
        """
        stream = EventStream(_Events(Clock().seconds), "e1", {b"a": 4}, True)
        self.assertEqual(stream.eventId(), b"e1! a=4")
        stream(b"".join(b"#1 [t%d] <x> l\n" % i for i in range(32)))
        self.assertEqual(stream.eventId().split(b" ")[0], b"e1")

    def test_eventStreamGapAndEpoch(self) -> None:
        """
        Resuming from a position the history no longer reaches back to
        gives a C{gap} event naming the first line it can give, then those
        lines; an id of another epoch (a restarted hub) is replayed
        everything this hub has of its topics.
        """
        nc = self.tcp()
        nc.send(b"".join(b"/pub gap.a line %d\n" % i for i in range(110)))
        nc.send(b"/pub gap.b only\n")
        for _ in range(111):
            nc.until(lambda line: line == b"+OK")
        probe = EventReader(self.http, "/hub/events?sub=gap.*")
        self.addCleanup(probe.close)
        hello = probe.waitFor(lambda e: "seq on, epoch" in e.get("data", ""))
        epoch = json.loads(
            [e for e in hello if "seq on" in e.get("data", "")][0]["data"]
        )["text"].split()[-1]
        probe.close()
        resumed = EventReader(self.http, "/hub/events?sub=gap.*", f"{epoch} gap.a=2")
        self.addCleanup(resumed.close)
        events = resumed.waitFor(lambda e: '"line 109"' in e.get("data", ""))
        gaps = [json.loads(e["data"]) for e in events if e.get("event") == "gap"]
        self.assertEqual(gaps, [{"topic": "gap.a", "first": 11}])
        texts = [
            json.loads(e["data"])["text"] for e in events if "id" in e and "data" in e
        ]
        self.assertEqual(texts, [f"line {i}" for i in range(10, 110)])
        other = EventReader(
            self.http, "/hub/events?sub=gap.*", "0123456789abcdef gap.b=7"
        )
        self.addCleanup(other.close)
        events = other.waitFor(lambda e: '"only"' in e.get("data", ""))
        self.assertEqual(
            [json.loads(e["data"])["seq"] for e in events if "id" in e and "data" in e],
            [1],
        )
        self.assertNotIn("gap", [e.get("event") for e in events])

    def test_eventStreamNewTopic(self) -> None:
        """
        A topic that matches a stream's patterns and gets its first line
        while the browser is away is replayed when it resumes: the stream's
        first id named every topic it had (none), so the new one is after.
        """
        stream = EventReader(self.http, "/hub/events?sub=fresh.>")
        self.addCleanup(stream.close)
        first = stream.waitFor(lambda e: "id" in e)
        lastId = [e for e in first if "id" in e][-1]["id"]
        self.assertRegex(lastId, r"^[0-9a-f]{16}!$")
        stream.close()
        nc = self.tcp()
        nc.send(b"/pub fresh.topic first words\n")
        nc.until(lambda line: line == b"+OK")
        resumed = EventReader(self.http, "/hub/events?sub=fresh.>", lastId)
        self.addCleanup(resumed.close)
        events = resumed.waitFor(lambda e: "first words" in e.get("data", ""))
        delivery = json.loads(
            [e for e in events if "data" in e and "id" in e][-1]["data"]
        )
        self.assertEqual((delivery["topic"], delivery["seq"]), ("fresh.topic", 1))


def _position(eventId: str, topic: str) -> int:
    return parseEventId(eventId.encode())[1][topic.encode()]


class EventReader:
    """
    A plain HTTP client of an event stream (C{http.client}), reading its
    events in a thread.
    """

    def __init__(self, address: str, path: str, lastId: str | None = None) -> None:
        from http.client import HTTPConnection

        host, port = address.rsplit(":", 1)
        self.connection = HTTPConnection(host, int(port), timeout=STEP)
        headers = {} if lastId is None else {"Last-Event-ID": lastId}
        self.connection.request("GET", path, headers=headers)
        self.response = self.connection.getresponse()
        self.status = self.response.status
        self.events: list[dict[str, str]] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        event: dict[str, str] = {}
        try:
            while True:
                line = self.response.readline()
                if not line:
                    break
                text = line.decode().rstrip("\n")
                if not text:
                    if event:
                        with self.lock:
                            self.events.append(event)
                    event = {}
                    continue
                name, _, value = text.partition(": ")
                if name in ("id", "data", "event"):
                    event[name] = value
        except (OSError, ValueError, AttributeError):
            pass

    def waitFor(self, predicate: Any) -> list[dict[str, str]]:
        """
        The events received so far (forgotten from here), once one matches.
        """

        def found() -> bool:
            with self.lock:
                return any(predicate(e) for e in self.events)

        poll(found, "an event", STEP)
        with self.lock:
            events, self.events = self.events, []
        return events

    def close(self) -> None:
        sock = self.connection.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.thread.join(STEP)
        self.connection.close()


class StreamLimitTests(SynchronousTestCase):
    """
    The bounds of C{/hub/ws} and C{/hub/events}: how many may be open, and
    the slow-consumer policy.
    """

    def setUp(self) -> None:
        self.daemon, self.http = hubDaemon(
            "--http-hub-streams=2", "--max-pending=64KiB"
        )
        self.addCleanup(self.daemon.close)

    def test_shutdown(self) -> None:
        """
        On SIGTERM a WebSocket client is told the hub shuts down and gets a
        normal close (1000), an event stream the same notice before its
        connection ends, and the daemon exits.
        """
        ws = wsConnect(self.http)
        self.addCleanup(ws.close)
        ws.recv()
        stream = EventReader(self.http, "/hub/events?sub=a")
        self.addCleanup(stream.close)
        stream.waitFor(lambda e: "subscribed to a" in e.get("data", ""))
        self.daemon.stop()
        self.assertEqual(
            recvUntil(ws, lambda m: m.startswith("* server"))[-1],
            "* server shutting down",
        )
        self.assertEqual(closeCode(ws), 1000)
        stream.waitFor(lambda e: "shutting down" in e.get("data", ""))

    def test_streamLimit(self) -> None:
        """
        Past C{--http-hub-streams} WebSockets and event streams together,
        one more is answered 503 and counted as C{hub-streams}; once one
        closes, a new one is served.
        """
        import websocket

        first = wsConnect(self.http)
        self.addCleanup(first.close)
        first.recv()
        events = EventReader(self.http, "/hub/events?sub=a")
        self.addCleanup(events.close)
        self.assertEqual(events.status, 200)
        events.waitFor(lambda e: "subscribed to a" in e.get("data", ""))
        with self.assertRaises(websocket.WebSocketBadStatusException) as caught:
            wsConnect(self.http)
        self.assertEqual(caught.exception.status_code, 503)
        refused = EventReader(self.http, "/hub/events?sub=a")
        self.addCleanup(refused.close)
        self.assertEqual(refused.status, 503)
        poll(
            lambda: (
                self.daemon.statusValue(
                    "netdemo_refused_total", service="http", reason="hub-streams"
                )
                == 2
            ),
            "both refusals to be counted",
            STEP,
        )
        first.close()
        poll(
            lambda: (
                self.daemon.statusValue("netdemo_connections_current", service="pubsub")
                == 1
            ),
            "the WebSocket's hub client to leave",
            STEP,
        )
        again = wsConnect(self.http)
        self.addCleanup(again.close)
        self.assertRegex(again.recv(), r"^\* welcome")

    def test_pausedReaderCut(self) -> None:
        """
        A WebSocket client that stops reading is disconnected by the hub's
        slow-consumer policy (C{--max-pending}) once what it was sent while
        paused passes the limit, counted as a TCP subscriber's would be;
        another WebSocket client gets every line.
        """
        stalled = wsConnect(
            self.http, sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),)
        )
        self.addCleanup(stalled.close)
        stalled.recv()
        reader = wsConnect(self.http)
        self.addCleanup(reader.close)
        reader.recv()
        publisher = HubClient(self.daemon.address("pubsub"))
        self.addCleanup(publisher.close)
        count = 3000
        line = b"x" * 1000
        received: list[str] = []

        def read() -> None:
            while True:
                message = reader.recv()
                if message.startswith("<"):
                    received.append(message)
                    if len(received) == count:
                        return

        def caughtUp(start: int) -> bool:
            return len(received) >= start

        thread = threading.Thread(target=read, daemon=True)
        thread.start()
        # Paced by the reader: it is never far behind, so only the stalled
        # client falls behind by more than the kernel's buffers hold.
        for start in range(0, count, 50):
            publisher.send(
                b"".join(b"%d %s\n" % (i, line) for i in range(start, start + 50))
            )
            poll(partial(caughtUp, start), "the reader to catch up", STEP)
        thread.join(STEP)
        self.assertEqual(len(received), count)
        self.assertEqual([int(m.split(" ")[1]) for m in received], list(range(count)))
        poll(
            lambda: (
                self.daemon.statusValue(
                    "netdemo_refused_total", service="pubsub", reason="slow-consumer"
                )
                == 1
            ),
            "the stalled WebSocket to be cut",
            STEP,
        )

    def test_eventStreamBurst(self) -> None:
        """
        An event stream whose client reads is not cut by a burst larger
        than C{--max-pending} (six publishers' 60 KiB at once, which the
        hub fans out in one reactor turn): its events go to the socket at
        once, as a TCP subscriber's lines do, and only what the kernel
        does not take counts as pending.
        """
        stream = EventReader(self.http, "/hub/events?sub=burst")
        self.addCleanup(stream.close)
        stream.waitFor(lambda e: "subscribed to burst" in e.get("data", ""))
        publishers = [HubClient(self.daemon.address("pubsub")) for _ in range(6)]
        for publisher in publishers:
            self.addCleanup(publisher.close)
            publisher.line()
        data = b"".join(b"/pub burst %d %s\n" % (i, b"y" * 990) for i in range(60))
        start = threading.Event()

        def send(publisher: HubClient) -> None:
            start.wait(STEP)
            publisher.send(data)

        threads = [threading.Thread(target=send, args=(p,)) for p in publishers]
        for thread in threads:
            thread.start()
        start.set()
        for thread in threads:
            thread.join(STEP)
        received: list[dict[str, str]] = []

        def allReceived() -> bool:
            received.extend(stream.waitFor(lambda e: True))
            return sum("id" in e and "data" in e for e in received) == 360

        poll(allReceived, "every line of the burst", STEP)
        self.assertEqual(
            self.daemon.statusValue(
                "netdemo_refused_total", service="pubsub", reason="slow-consumer"
            ),
            0,
        )


class OptionsAndTimerTests(SynchronousTestCase):
    """
    The options, and the event streams' heartbeat.
    """

    def test_options(self) -> None:
        """
        C{--http-origin} (repeatable) takes origins, lower-cased and
        without a final slash, and refuses anything else in one line;
        C{--http-hub-streams} bounds the streams; both reach the HTTP
        service's limits.
        """
        from twisted.python.usage import UsageError

        from netdemo.tap import Options

        options = Options()
        options.parseOptions(
            [
                "--http=tcp:0",
                "--http-origin=HTTPS://App.Example.org/",
                "--http-origin=http://127.0.0.1:9000",
                "--http-hub-streams=5",
            ]
        )
        limits = options.httpLimits()
        self.assertEqual(
            limits.origins, ("https://app.example.org", "http://127.0.0.1:9000")
        )
        self.assertEqual(limits.hubStreams, 5)
        self.assertEqual(Options().httpLimits().hubStreams, 1000)
        for bad in ("example.org", "ftp://x", "https://", "https://x/path"):
            with self.assertRaises(UsageError) as caught:
                Options().parseOptions(["--http=tcp:0", f"--http-origin={bad}"])
            self.assertIn("--http-origin", str(caught.exception))

    def test_heartbeat(self) -> None:
        """
        Every L{HEARTBEAT} seconds each open event stream gets a comment;
        the timer stops once none is open.
        """
        from netdemo.metrics import MemoryMetrics
        from netdemo.webhub import HEARTBEAT, HubWeb

        clock = Clock()
        web = HubWeb(object(), MemoryMetrics(), clock)  # type: ignore[arg-type]
        sent: list[bytes] = []

        class Stream:
            disconnecting = False

            def raw(self, data: bytes) -> None:
                sent.append(data)

        stream = Stream()
        web.streams[stream] = None  # type: ignore[index]
        web._startHeartbeat()
        clock.advance(HEARTBEAT - 0.1)
        self.assertEqual(sent, [])
        clock.advance(0.1)
        self.assertEqual(sent, [b": heartbeat\n\n"])
        del web.streams[stream]  # type: ignore[arg-type]
        clock.advance(HEARTBEAT)
        self.assertEqual(clock.getDelayedCalls(), [])


class AccountsTests(SynchronousTestCase):
    """
    With C{--hub-auth}: a WebSocket logs in with C{/login}, an event stream
    with C{user=} and C{token=}; the rights apply to both as to TCP clients.
    """

    def test_accounts(self) -> None:
        """
        An event stream logged in as alice gets the lines of the topics
        she may read and not the others; one with a wrong token is told
        its login failed and gets nothing; a WebSocket that logs in is
        answered as a TCP client is, and may then subscribe.
        """
        from tests.test_pubsub_auth import ACCOUNTS, ALICE, ROOT, accountsFile

        daemon = Daemon(
            "--pubsub=tcp:0:interface=127.0.0.1",
            "--http=tcp:0:interface=127.0.0.1",
            f"--hub-auth={accountsFile(self, ACCOUNTS)}",
        )
        self.addCleanup(daemon.close)
        daemon.waitListening(2, STEP)
        host, port = daemon.address("http")
        http = f"{host}:{port}"
        alice = EventReader(http, f"/hub/events?sub=lab.>&user=alice&token={ALICE}")
        self.addCleanup(alice.close)
        alice.waitFor(lambda e: "subscribed to lab.>" in e.get("data", ""))
        wrong = EventReader(http, "/hub/events?sub=lab.>&user=alice&token=nope")
        self.addCleanup(wrong.close)
        refused = wrong.waitFor(lambda e: "login failed" in e.get("data", ""))
        ws = wsConnect(http)
        self.addCleanup(ws.close)
        ws.send(f"/login alice {ALICE}")
        self.assertIn("+OK logged in as alice", recvUntil(ws, lambda m: "+OK" in m))
        ws.send("/sub lab.>")
        recvUntil(ws, lambda m: m.startswith("+OK subscribed to lab.>"))
        root = HubClient(daemon.address("pubsub"))
        self.addCleanup(root.close)
        root.send(f"/login root {ROOT}\n".encode())
        root.until(lambda line: line.startswith(b"+OK logged in"))
        root.send(b"/pub lab.secret.x hidden\n/pub lab.x visible\n")
        events = alice.waitFor(lambda e: "visible" in e.get("data", ""))
        texts = [
            json.loads(e["data"])["text"] for e in events if "id" in e and "data" in e
        ]
        self.assertEqual(texts, ["visible"])
        self.assertIn("<root> visible", recvUntil(ws, lambda m: "visible" in m)[-1])
        with wrong.lock:
            refused += wrong.events
        self.assertFalse([e for e in refused if "id" in e and "data" in e])


def _unframe(data: bytes) -> list[bytes]:
    """
    The payloads of unmasked server frames.
    """
    out = []
    while data:
        size = data[1] & 0x7F
        start = 2
        if size == 126:
            size, start = int.from_bytes(data[2:4], "big"), 4
        elif size == 127:
            size, start = int.from_bytes(data[2:10], "big"), 10
        out.append(data[start : start + size])
        data = data[start + size :]
    return out


class EncoderPropertyTests(SynchronousTestCase):
    """
    The encoders for any input.
    """

    @given(st.lists(st.binary(max_size=300).map(lambda b: b.replace(b"\n", b" "))))
    def test_textFramesAreTheLines(self, lines: list[bytes]) -> None:
        """
        Text mode sends each line as one frame whose payload is the line
        (valid UTF-8, as it is when it was).
        """
        if not lines:
            return
        block = b"".join(line + b"\n" for line in lines)
        payloads = _unframe(TextFrames()(block))
        self.assertEqual(
            payloads, [line.decode("utf-8", "replace").encode() for line in lines]
        )

    @given(
        st.lists(
            st.sampled_from([b"a", b"b.c", b"d" * 200, b"e.f.g"])
            | st.integers(0, 60).map(lambda i: b"t%d" % i),
            min_size=1,
        ),
        st.integers(0, 10**12),
    )
    def test_eventIdsRoundTrip(self, topics: list[bytes], base: int) -> None:
        """
        After any deliveries (numbered upwards, as a hub numbers them), an
        event's id is at most 2 KiB and 32 topics, names the topic just
        delivered at its position, and reads back as the positions it was
        made of.
        """
        deliveries = [(topic, base + i + 1) for i, topic in enumerate(topics)]
        stream = EventStream(_Events(Clock().seconds), "0123456789abcdef", {})
        block = b"".join(
            b"#%d [%s] <x> y\n" % (seq, topic) for topic, seq in deliveries
        )
        out = stream(block)
        last = [line for line in out.split(b"\n") if line.startswith(b"id: ")][-1][4:]
        self.assertLessEqual(len(last), MAX_ID_BYTES)
        epoch, positions, complete = parseEventId(last)
        self.assertEqual(epoch, "0123456789abcdef")
        self.assertFalse(complete)
        self.assertLessEqual(len(positions), 32)
        topic, seq = deliveries[-1]
        self.assertEqual(positions[topic], seq)
        self.assertEqual(positions, stream.positions)


class HubPanelTests(SynchronousTestCase):
    """
    The status page's hub panel (L{netdemo.webhub.HubWeb.panel}).
    """

    def test_panel(self) -> None:
        """
        Topics are listed busiest first by lines/s measured over at least
        two seconds (before that, by their last sequence number), with
        subscribers and history, at most 20; the clients connected and the
        nicknames; the page shows them, escaped.
        """
        from netdemo.metrics import MemoryMetrics
        from netdemo.web import ServerInfo, renderStatusPage, statusDocument
        from netdemo.webhub import TOP_TOPICS, HubWeb

        class Gate:
            rows = [(b"a", 1, 10, 10), (b"b<x", 2, 5, 50)] + [
                (b"t%d" % i, 0, 1, 1) for i in range(30)
            ]

            def topics(self) -> list[tuple[bytes, int, int, int]]:
                return list(self.rows)

            def present(self, limit: int) -> tuple[int, list[bytes]]:
                return 7, [b"alice", b"bob"][:limit]

        clock = Clock()
        gate = Gate()
        web = HubWeb(gate, MemoryMetrics(), clock)  # type: ignore[arg-type]
        clock.advance(100)
        first = web.panel(clock.seconds())
        self.assertEqual([t["topic"] for t in first["topics"][:2]], ["b<x", "a"])
        self.assertIsNone(first["topics"][0]["rate"])
        self.assertEqual(len(first["topics"]), TOP_TOPICS)
        self.assertEqual(first["topic_count"], 32)
        self.assertEqual((first["connected"], first["present"]), (7, ["alice", "bob"]))
        gate.rows[0] = (b"a", 1, 10, 40)
        clock.advance(1)
        self.assertIsNone(web.panel(clock.seconds())["topics"][0]["rate"])
        clock.advance(1)
        second = web.panel(clock.seconds())
        top = second["topics"][0]
        self.assertEqual(
            (top["topic"], top["rate"], top["rate_text"], top["subscribers"]),
            ("a", 15.0, "15/s", 1),
        )
        self.assertEqual(second["topics"][1]["rate"], 0.0)
        doc = statusDocument([], ServerInfo("1", 0.0), clock.seconds(), hub=second)
        self.assertEqual(doc["panels"]["hub"], second)
        page = renderStatusPage(doc)
        self.assertIn("<td>b&lt;x</td>", page)
        self.assertIn('data-panel="hub.present">alice, bob<', page)


class SharedHistoryTests(RedisCase):
    """
    Event streams over hubs that share their history through Redis
    (C{--backplane}, issue 16).
    """

    def test_resumeOnAnotherHub(self) -> None:
        """
        A browser whose event stream on one hub drops resumes on another
        hub (behind a load balancer, say) with its C{Last-Event-ID}: the
        numbers and the epoch are Redis's, so it is replayed exactly what
        it missed, whichever hub the lines were published on.
        """
        redis = self.redis()
        url = f"redis://127.0.0.1:{redis.port}?prefix=sse{redis.port}"
        hubs = []
        for _ in range(2):
            hub = BackplaneHub(url, "--http", "tcp:0:interface=127.0.0.1")
            self.addCleanup(hub.close)
            hubs.append(hub)
        http = ["{}:{}".format(*hub.address("http")) for hub in hubs]
        first = EventReader(http[0], "/hub/events?sub=lab.>")
        self.addCleanup(first.close)
        first.waitFor(lambda e: "subscribed to lab.>" in e.get("data", ""))
        publisher = HubClient(hubs[0].address("pubsub"))
        self.addCleanup(publisher.close)
        publisher.line()
        for i in range(3):
            publisher.send(b"/pub lab.x line %d\n" % i)
            publisher.until(lambda line: line == b"+OK")
        events = first.waitFor(lambda e: "line 2" in e.get("data", ""))
        deliveries = [e for e in events if "id" in e and "data" in e]
        lastId = deliveries[-1]["id"]
        first.close()
        other = HubClient(hubs[1].address("pubsub"))
        self.addCleanup(other.close)
        other.line()
        for i in range(3, 6):
            other.send(b"/pub lab.x line %d\n" % i)
            other.until(lambda line: line == b"+OK")
        resumed = EventReader(http[1], "/hub/events?sub=lab.>", lastId)
        self.addCleanup(resumed.close)
        events = resumed.waitFor(lambda e: "line 5" in e.get("data", ""))
        seen = [
            json.loads(e["data"])
            for e in deliveries + events
            if "id" in e and "data" in e
        ]
        self.assertEqual([m["text"] for m in seen], [f"line {i}" for i in range(6)])
        seqs = [m["seq"] for m in seen]
        self.assertEqual(seqs, list(range(seqs[0], seqs[0] + 6)))


class TLSTests(SynchronousTestCase):
    """
    The hub over C{wss:} and C{https:} (an C{ssl:} HTTP listener): the
    path for transports whose socket netdemo does not write to itself.
    """

    def test_wssAndEvents(self) -> None:
        """
        A WebSocket over TLS publishes and receives; an event stream over
        TLS receives, its events chunked by Twisted.
        """
        import shutil
        import ssl
        import tempfile

        from tests.tlshelpers import makePKI

        directory = tempfile.mkdtemp(prefix="netdemo-tls-")
        self.addCleanup(shutil.rmtree, directory, True)
        pki = makePKI(directory)
        daemon = Daemon(
            "--pubsub=tcp:0:interface=127.0.0.1",
            f"--http={pki.serverDescription()}",
            "--no-presence",
        )
        self.addCleanup(daemon.close)
        daemon.waitListening(2, STEP)
        host, port = daemon.address("http")
        import websocket

        ws = websocket.create_connection(
            f"wss://{host}:{port}/hub/ws",
            timeout=STEP,
            sslopt={"ca_certs": pki.ca, "check_hostname": False},
        )
        self.addCleanup(ws.close)
        self.assertRegex(str(ws.recv()), r"^\* welcome")
        ws.send("/sub tls.x")
        self.assertEqual(ws.recv(), "+OK subscribed to tls.x")
        context = ssl.create_default_context(cafile=pki.ca)
        context.check_hostname = False
        from http.client import HTTPSConnection

        connection = HTTPSConnection(host, port, timeout=STEP, context=context)
        self.addCleanup(connection.close)
        connection.request("GET", "/hub/events?sub=tls.x")
        response = connection.getresponse()
        self.assertEqual(response.status, 200)
        nc = HubClient(daemon.address("pubsub"))
        self.addCleanup(nc.close)
        nc.line()
        nc.send(b"/sub tls.x\n")
        nc.until(lambda line: line.startswith(b"+OK subscribed"))
        nc.send(b"/pub tls.x secret\n")
        self.assertEqual(recvUntil(ws, lambda m: "secret" in m)[-1][-6:], "secret")
        ws.send("/pub tls.x from wss")
        self.assertIn(b"from wss", nc.until(lambda line: b"from wss" in line)[-1])
        seen = b""
        while b'"secret"' not in seen:
            line = response.readline()
            self.assertTrue(line, "the stream ended")
            seen += line


class ManyStreamsTests(SynchronousTestCase):
    """
    The stream limit at its default (1000), the way an attacker would meet
    it: a thousand WebSocket handshakes at once from several addresses.
    """

    SOURCES = 8

    def setUp(self) -> None:
        self.daemon, self.http = hubDaemon()
        self.addCleanup(self.daemon.close)
        self.port = self.daemon.address("http")[1]
        self.sockets: list[socket.socket] = []
        self.addCleanup(self._closeAll)

    def _closeAll(self) -> None:
        for s in self.sockets:
            s.close()

    def _handshake(self, source: str) -> socket.socket:
        """
        Start a raw WebSocket handshake from C{source}; the answer is read
        later.
        """
        s = socket.create_connection(
            ("127.0.0.1", self.port), timeout=STEP, source_address=(source, 0)
        )
        self.sockets.append(s)
        s.sendall(
            b"GET /hub/ws HTTP/1.1\r\nHost: " + self.http.encode() + b"\r\n"
            b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n"
            b"Origin: http://" + self.http.encode() + b"\r\n\r\n"
        )
        return s

    def test_thousandStreams(self) -> None:
        """
        A thousand WebSockets from eight addresses are all served; the next
        one is answered 503 and counted; one line published over TCP reaches
        every one of the thousand; a plain hub client is still served at
        once; when they all leave, the hub's client count falls to the one
        TCP client.
        """
        sources = [f"127.0.0.{i + 1}" for i in range(self.SOURCES)]
        streams = [self._handshake(sources[i % self.SOURCES]) for i in range(1000)]
        for s in streams:
            self.assertIn(b" 101 ", readUntil(s, b"\r\n\r\n").split(b"\r\n")[0])
        extra = self._handshake(sources[0])
        self.assertIn(b" 503 ", readUntil(extra, b"\r\n").split(b"\r\n")[0])
        poll(
            lambda: (
                self.daemon.statusValue(
                    "netdemo_refused_total", service="http", reason="hub-streams"
                )
                == 1
            ),
            "the refusal to be counted",
            STEP,
        )
        poll(
            lambda: (
                self.daemon.statusValue("netdemo_connections_current", service="pubsub")
                == 1000
            ),
            "a thousand hub clients",
            STEP,
        )
        nc = HubClient(self.daemon.address("pubsub"))
        self.addCleanup(nc.close)
        nc.send(b"attack of the thousand\n")
        for s in streams:
            self.assertIn(b"attack of the thousand", readUntil(s, b"thousand"))
        nc.send(b"/ping\n")
        nc.until(lambda line: line == b"+OK pong")
        self._closeAll()
        self.sockets = []
        poll(
            lambda: (
                self.daemon.statusValue("netdemo_connections_current", service="pubsub")
                == 1
            ),
            "the thousand hub clients to leave",
            STEP * 2,
        )
