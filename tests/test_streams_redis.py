"""
Shared history on Redis Streams (L{netdemo.streams}) with a real
C{redis-server} and real C{twistd} hubs: numbering, resuming on another hub,
restarts of a hub and of Redis, epochs, and Redis outages.

The hubs and Redis are those of L{tests.test_backplane_redis}; clients are
blocking sockets with C{/seq on}.
"""

from __future__ import annotations

import json
import re
import signal

from tests.pubsubhelpers import LineSocket
from tests.support import poll
from tests.test_backplane_redis import DOWN, UP, BackplaneHub, RedisCase
from tests.test_cli_hub import Running

#: What numbered deliveries start with.
NUMBERED = b"#"

_NUMBER = re.compile(rb"#([0-9]+) ")


def numbers(lines: list[bytes]) -> list[int]:
    """
    The sequence numbers of numbered lines (C{#SEQ ...}), in order.
    """
    found = []
    for line in lines:
        match = _NUMBER.match(line)
        if match is not None:
            found.append(int(match.group(1)))
    return found


def epochOf(answer: bytes) -> bytes:
    """
    The epoch an answer names (C{... epoch E}).
    """
    match = re.search(rb"epoch ([0-9a-zA-Z]+)", answer)
    assert match is not None, answer
    return match.group(1)


class StreamsTests(RedisCase):
    """
    Hubs sharing their history through a real Redis.
    """

    def numbered(self, hub: BackplaneHub) -> LineSocket:
        """
        A client of C{hub} with C{/seq on}.
        """
        client = self.client(hub)
        client.send(b"/seq on\n")
        client.epoch = epochOf(client.waitFor(b"+OK seq on"))  # type: ignore[attr-defined]
        return client

    def history(self, client: LineSocket, command: bytes) -> tuple[list[bytes], bytes]:
        """
        Send a C{/history} command; the lines of the replay (numbered ones
        and notices) and the answer.
        """
        start = len(client.receive())
        client.send(command + b"\n")
        answer = client.waitFor(b"+OK history")
        end = client.lines.index(answer, start)
        replay = [
            line
            for line in client.lines[start:end]
            if line.startswith((NUMBERED, b"* gap"))
        ]
        return replay, answer

    def test_threeHubsResumeElsewhere(self) -> None:
        """
        1,000 lines published across three hubs on one topic are numbered
        1..1000, and every hub delivers them in that order; a subscriber of
        hub B that leaves after number 400 and resumes on hub C since 400
        gets exactly 401..1000, in that order; C{/history} is the same on
        all three hubs.
        """
        redis = self.redis()
        hubs = self.hubs(redis, 3, "--history", "1000")
        for hub in hubs:
            hub.waitCount(UP)
        watchers = [self.numbered(hub) for hub in hubs]
        leaver = self.numbered(hubs[1])
        senders = [self.client(hub) for hub in hubs]
        for batch in range(100):
            sender = senders[batch % 3]
            sender.send(b"".join(b"m %d.%d\n" % (batch, i) for i in range(10)))
        seen = [w.collect(NUMBERED, 1000) for w in watchers]
        for lines in seen:
            self.assertEqual(numbers(lines), list(range(1, 1001)))
        self.assertEqual(seen[0], seen[1])
        self.assertEqual(seen[0], seen[2])
        # Every hub shows each publisher's lines in the order it sent them.
        texts = [line.split(b"> ", 1)[1] for line in seen[0]]
        for index in range(3):
            mine = [t for t in texts if int(t.split()[1].split(b".")[0]) % 3 == index]
            self.assertEqual(
                mine, sorted(mine, key=lambda t: tuple(map(int, t[2:].split(b"."))))
            )
        kept = [
            line for line in leaver.collect(NUMBERED, 1000) if numbers([line])[0] <= 400
        ]
        leaver.close()
        self.assertEqual(kept, seen[0][:400])
        resumer = self.numbered(hubs[2])
        self.assertEqual(resumer.epoch, leaver.epoch)  # type: ignore[attr-defined]
        replay, answer = self.history(
            resumer,
            b"/history since 400@" + leaver.epoch,  # type: ignore[attr-defined]
        )
        self.assertEqual(replay, seen[0][400:])
        self.assertIn(b"last seq 1000", answer)
        histories = [self.history(w, b"/history 1000")[0] for w in watchers]
        self.assertEqual(histories[0], seen[0])
        self.assertEqual(histories[1], seen[0])
        self.assertEqual(histories[2], seen[0])

    def test_restarts(self) -> None:
        """
        A hub started after lines were published serves the whole history
        at once (and replays it on join); Redis restarted with its
        append-only file keeps it (same epoch, same numbers); Redis
        restarted empty (or C{FLUSHALL}) makes a resume answer that its
        epoch is gone and clients with C{/seq on} told that the epoch
        changed, never a replay of other lines.
        """
        directory = self.directory / "aof"
        directory.mkdir()
        redis = self.redis("--appendonly", "yes", "--dir", str(directory))
        (a,) = self.hubs(redis, 1, "--history", "50")
        a.waitCount(UP)
        sender = self.numbered(a)
        sender.send(b"/echo on\n")
        sender.send(b"".join(b"old %d\n" % i for i in range(30)))
        first = sender.collect(NUMBERED, 30)
        self.assertEqual(numbers(first), list(range(1, 31)))
        (b,) = self.hubs(redis, 1, "--history", "50", "--replay-on-join", "3")
        b.waitCount(UP)
        late = self.numbered(b)
        # Its replay on join comes from Redis too.
        self.assertEqual(
            late.matching(b"<"),
            [b"<%s> old %d" % (sender.identity, i) for i in (27, 28, 29)],
        )
        replay, answer = self.history(late, b"/history 50")
        self.assertEqual(replay, first)
        self.assertIn(b"last seq 30", answer)

        # Redis restarted from its append-only file: the same history.
        redis.stop()
        for hub in (a, b):
            hub.waitCount(DOWN)
        redis.start(redis.port)
        for hub in (a, b):
            hub.waitCount(UP, 2)
        replay, _ = self.history(late, b"/history since 20@" + late.epoch)  # type: ignore[attr-defined]
        self.assertEqual(replay, first[20:])

        # FLUSHALL: the epoch is gone.
        self.redisCli(redis.port, "FLUSHALL")
        sender.send(b"new 0\n")
        notice = late.waitFor(b"* epoch changed to ")
        newEpoch = notice.rsplit(b" ", 1)[1]
        self.assertNotEqual(newEpoch, late.epoch)  # type: ignore[attr-defined]
        self.assertEqual(late.waitFor(b"new 0"), b"#1 <%s> new 0" % sender.identity)
        resumer = self.numbered(a)
        self.assertEqual(resumer.epoch, newEpoch)  # type: ignore[attr-defined]
        replay, answer = self.history(
            resumer,
            b"/history since 30@" + late.epoch,  # type: ignore[attr-defined]
        )
        self.assertEqual(
            replay,
            [
                b"* gap: epoch %s is gone" % late.epoch,  # type: ignore[attr-defined]
                b"#1 <%s> new 0" % sender.identity,
            ],
        )
        self.assertIn(b"epoch " + newEpoch, answer)
        for hub in (a, b):
            self.assertEqual(hub.count("epoch changed"), 1, hub.log())

    def test_redisDown(self) -> None:
        """
        While Redis is down, a hub's clients still get each other's lines,
        marked local (C{#- }), and its history keeps them marked;
        C{/status.json} shows the shared history down and counts the local
        lines; once Redis is back, numbering goes on where it was, and no
        line is delivered twice.
        """
        directory = self.directory / "aof"
        directory.mkdir()
        redis = self.redis("--appendonly", "yes", "--dir", str(directory))
        a, b = self.hubs(redis, 2, "--http", "tcp:0:interface=127.0.0.1")
        for hub in (a, b):
            hub.waitCount(UP)
        historyUp = ("netdemo_backplane_history_up", {"service": "backplane"})
        self.assertEqual(a.statusValue(historyUp[0], **historyUp[1]), 1)
        sender, local, remote = self.numbered(a), self.numbered(a), self.numbered(b)
        sender.send(b"up 1\n")
        expected = [b"#1 <%s> up 1" % sender.identity]
        self.assertEqual(local.collect(NUMBERED, 1), expected)
        self.assertEqual(remote.collect(NUMBERED, 1), expected)
        redis.stop()
        for hub in (a, b):
            hub.waitCount(DOWN)
        sender.send(b"down 1\n")
        marked = b"#- <%s> down 1" % sender.identity
        self.assertEqual(local.collect(NUMBERED, 2)[1:], [marked])
        replay, answer = self.history(self.numbered(a), b"/history 10")
        self.assertEqual(replay, [*expected, marked])
        # The status document is cached for a moment.
        poll(
            lambda: a.statusValue(historyUp[0], **historyUp[1]) == 0,
            "the shared history shown down",
        )
        self.assertEqual(
            a.statusValue("netdemo_backplane_local_lines_total", service="backplane"),
            1,
        )
        redis.start(redis.port)
        for hub in (a, b):
            hub.waitCount(UP, 2)
        sender.send(b"up 2\n")
        after = b"#2 <%s> up 2" % sender.identity
        self.assertEqual(
            local.collect(NUMBERED, 3, settle=0.5), [*expected, marked, after]
        )
        self.assertEqual(remote.collect(NUMBERED, 2, settle=0.5), [*expected, after])

    def test_trimmed(self) -> None:
        """
        The stream keeps about C{--history} lines: C{/history} gives the
        last ones, and a resume from before them starts with a gap notice.
        A message naming another epoch changes nothing.  A Redis that lost
        the scripts gets them again.
        """
        redis = self.redis()
        (hub,) = self.hubs(redis, 1, "--history", "5")
        hub.waitCount(UP)
        sender = self.numbered(hub)
        sender.send(b"/echo on\n" + b"".join(b"n %d\n" % i for i in range(12)))
        sent = sender.collect(NUMBERED, 12)
        replay, answer = self.history(sender, b"/history")
        self.assertEqual(replay, sent[7:])
        self.assertIn(b"5 lines, last seq 12", answer)
        replay, answer = self.history(sender, b"/history since 2")
        self.assertEqual(replay, [b"* gap: history of chat starts at seq 8", *sent[7:]])
        length = self.redisCli(redis.port, "XLEN", f"{self.prefix}:stream:chat")
        # Only the lines a stream keeps are added (of one batch, its last 5).
        self.assertEqual(int(length), 5)
        # A numbered message naming another epoch, from anyone who may
        # PUBLISH: Redis is asked, and says otherwise; the message is dropped.
        forged = "netdemo/2 n1 1 mallory 13 0f0f0f0f0f0f0f0f\nforged"
        self.redisCli(redis.port, "PUBLISH", f"{self.prefix}.chat", forged)
        sender.send(b"after\n")
        self.assertEqual(sender.waitFor(b"after"), b"#13 <%s> after" % sender.identity)
        self.assertEqual(sender.matching(b"#13"), [b"#13 <%s> after" % sender.identity])
        self.assertNotIn(b"forged", b"\n".join(sender.receive()))
        self.assertEqual(hub.count("epoch changed"), 0, hub.log())
        # Redis forgot the scripts (SCRIPT FLUSH, a restart): EVAL instead.
        self.redisCli(redis.port, "SCRIPT", "FLUSH")
        replay, _ = self.history(sender, b"/history since 12")
        self.assertEqual(replay, [b"#13 <%s> after" % sender.identity])
        sender.send(b"again\n")
        self.assertEqual(sender.waitFor(b"again"), b"#14 <%s> again" % sender.identity)
        self.assertNotIn("failed", hub.log())

    def test_tailResumesOnAnotherHub(self) -> None:
        """
        C{netdemo tail --resume FILE --json} on hub B, stopped after 400
        lines and started again with the same FILE on hub C, prints exactly
        the lines after the 400th, those published meanwhile (from the
        shared history) and then live ones, each once, in order.
        """
        redis = self.redis()
        a, b, c = self.hubs(redis, 3, "--history", "1000")
        for hub in (a, b, c):
            hub.waitCount(UP)
        path = str(self.directory / "tail.pos")
        first = Running(
            "tail", f"127.0.0.1:{b.port('pubsub')}", "--json", "--resume", path
        )
        self.addCleanup(first.kill)
        first.waitFor("stderr", "connected to")
        publishers = [self.client(hub) for hub in (a, b, c)]
        for i in range(40):
            publishers[i % 3].send(b"".join(b"x %d.%d\n" % (i, j) for j in range(10)))
        first.waitFor("stdout", '"seq": 400[,}]')
        self.assertEqual(first.finish(signal.SIGINT), 0, first.text("stderr"))
        printed = [json.loads(line) for line in first.out["stdout"]]
        self.assertEqual([p["seq"] for p in printed], list(range(1, 401)))
        for i in range(40, 60):
            publishers[i % 3].send(b"".join(b"x %d.%d\n" % (i, j) for j in range(10)))
        # Asked again until all 600 are numbered: the last publishes may
        # still be on their way through Redis when first asked.
        watcher = self.numbered(a)
        poll(
            lambda: b"last seq 600" in self.history(watcher, b"/history since 599")[1],
            "the 600th line numbered",
            interval=0.1,
        )
        second = Running(
            "tail", f"127.0.0.1:{c.port('pubsub')}", "--json", "--resume", path
        )
        self.addCleanup(second.kill)
        second.waitFor("stdout", '"seq": 600[,}]')
        publishers[0].send(b"live\n")
        second.waitFor("stdout", '"seq": 601[,}]')
        self.assertEqual(second.finish(signal.SIGINT), 0, second.text("stderr"))
        resumed = [json.loads(line) for line in second.out["stdout"]]
        self.assertEqual([r["seq"] for r in resumed], list(range(401, 602)))
        self.assertEqual(resumed[-1]["text"], "live")
        self.assertTrue(all(r["history"] for r in resumed[:200]))

    def test_aclForSharedHistory(self) -> None:
        """
        With a Redis whose only user for the hubs is the one
        C{docs/scaling.md} gives for the shared history (its channels, its
        keys, the script commands), two hubs number and share history: no
        refusal is logged, a line published on A is numbered on B and in
        B's C{/history}.
        """
        redis = self.redis(
            "--user",
            "hub",
            "on",
            ">s3cret",
            "resetchannels",
            "&acl2.*",
            "resetkeys",
            "~acl2:*",
            "-@all",
            # As docs/scaling.md gives them.
            *("+publish", "+psubscribe", "+ping", "+evalsha", "+eval"),
            *("+script|load", "+hincrby", "+hget", "+hset", "+hsetnx"),
            *("+hscan", "+xadd", "+xrevrange", "+del"),
            "--user",
            "default",
            "off",
        )
        url = f"redis://hub:s3cret@127.0.0.1:{redis.port}?prefix=acl2"
        a, b = BackplaneHub(url), BackplaneHub(url)
        for hub in (a, b):
            self.addCleanup(hub.close)
            hub.waitCount(UP)
        sender, receiver = self.client(a), self.numbered(b)
        receiver.send(b"/sub acl.t\n")
        receiver.waitFor(b"+OK subscribed")
        sender.send(b"/pub acl.t ok\n")
        line = b"#1 [acl.t] <%s> ok" % sender.identity
        self.assertEqual(receiver.waitFor(b"ok"), line)
        replay, _ = self.history(receiver, b"/history since 0 acl.t")
        self.assertEqual(replay, [line])
        receiver.send(b"/topics\n")
        self.assertIn(b"acl.t", receiver.waitFor(b"+OK topics"))
        for hub in (a, b):
            self.assertNotIn("refused", hub.log())
            self.assertNotIn("failed", hub.log())
