# -*- test-case-name: tests.test_pubsub -*-
"""
The line-based pub/sub hub: the classic Twisted broadcast chat, grown into
a small broker that people can use from C{nc}.

The grammar is in C{docs/protocol.md} and, as code, in L{netdemo.hubwire}:
lines end in LF or CRLF; a plain line is published to the default topic
L{DEFAULT_TOPIC}; a line that starts with C{/} is a command (C{/sub},
C{/pub}, C{/nick}, ...) answered by one C{+OK} or one C{-ERR} line; notices
start with C{*}.  Who gets a topic's lines is L{netdemo.routing}'s job, the
recent lines L{netdemo.history}'s.  Here are the I/O (L{PubSubProtocol}:
flow control and limits) and the hub itself (L{PubSubFactory}: members,
nicknames, presence, commands, fan-out).

How the hot path stays fast:

  - the lines of one read are split with C{bytes.split} (never
    C{LineReceiver}'s per-line callback) and the common case, a read of
    plain lines, is recognised with a few substring tests over the whole
    read (L{HubReader});
  - all the lines of one read that go to one topic become one C{bytes}
    object, built once with C{bytes.join}, and each subscriber gets it in
    one write: the per-subscriber work is one method call per read, not per
    line;
  - the subscribers of a topic are found in a trie whose cost depends on
    the matching subscriptions only, and cached (L{Router});
  - a subscriber with nothing queued gets the data handed to the kernel at
    once (as in L{netdemo.echo}), which saves two C{epoll_ctl} calls and a
    reactor turn per write.

How one client's work stays bounded: a read that is not all plain lines is
handled at most C{turnLines} lines and C{turnTime} seconds per reactor
turn; past either, the hub stops reading from that client (its transport is
paused) and goes on with the rest on a later turn, in order.  Presence
notices are coalesced: after one notice, the joins, leaves and renames of
the next C{presenceInterval} seconds make one notice, so a storm of joins
costs one notice per interval, not one per join for every client.

How memory stays bounded (L{netdemo.fanout}, shared with the broadcast
relay): every subscriber is an C{IPushProducer} registered on its own
transport, so it learns when the kernel stops taking its data.
The bytes written while it is paused are counted; over C{maxPending}, or
paused for longer than C{writeDeadline}, it is disconnected (the NATS and
Redis semantics), or with the C{drop-oldest} policy its oldest pending lines
are dropped and it is told how many.  The publisher is never paused for a
slow subscriber.  A history replay is streamed at the pace the client reads
it: what else is sent to that client waits behind it (and counts against
C{maxPending}), and its commands are not read meanwhile.

How fast one client may publish (C{--publish-rate}): each connection (each
user, with accounts) has a token bucket; a read with more lines than it
allows is published as far as it allows, and the rest waits, with the
client's transport paused, until the bucket has earned more, so that TCP
slows the client down.  With rate off a client has no bucket: one attribute
test per event.

Who may do what (C{--hub-auth}, L{netdemo.hubauth}): each client has the
rights of its user (or the anonymous ones), each topic's decision cached
there; publishing costs one cached lookup per event, subscribing is checked
once, at C{/sub}, and only the clients with a subscription that overlaps a
deny (L{PubSubFactory.filtered}) are checked at delivery.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IHandshakeListener,
    IListeningPort,
    IReactorTime,
)
from twisted.internet.task import LoopingCall
from twisted.logger import Logger, LogLevel
from zope.interface import implementer

from netdemo import hubwire
from netdemo.accounts import Access
from netdemo.fanout import FanOutFactory, FanOutProtocol
from netdemo.history import History, SharedHistory
from netdemo.hubwire import (
    DEFAULT_TOPIC,
    Command,
    Event,
    HubReader,
    Publish,
    Reply,
    isNick,
    isPattern,
    isReservedNick,
    isTopic,
    linePrefix,
    nickKey,
    parseCount,
)
from netdemo.internals import capAccepts
from netdemo.limits import ConnectionLimits, HubLimits
from netdemo.logs import RateLimitedLog, formatAddress
from netdemo.metrics import IMetrics, sampleOf
from netdemo.routing import MAX_SUBSCRIPTIONS, Router, Subscribed
from netdemo.stream import StreamService
from netdemo.throttle import BucketTable, LineBucket

if TYPE_CHECKING:
    from netdemo.backplane import IBackplane
    from netdemo.hubauth import AccountsFile, HubAccounts, Rights

__all__ = [
    "ACCEPTS_PER_TURN",
    "DEFAULT_TOPIC",
    "ERROR_REASONS",
    "HubService",
    "NOTICE_CHUNK",
    "PubSubFactory",
    "PubSubProtocol",
    "buildPubSubService",
]

SERVICE_NAME = "pubsub"

#: Entries listed by one C{/who} or C{/topics} answer.
MAX_LISTED = 200

#: C{/who} answers kept until the next change of members or subscriptions.
MAX_WHO_CACHED = 64

#: How many sweeps make up one line timeout.
LINE_SWEEPS = 10

#: Connections accepted per listener per reactor turn, at most: a storm of
#: connections is served a batch at a time, between the other connections'
#: turns (Twisted's own batch grows without a bound).
ACCEPTS_PER_TURN = 32

#: Clients sent a presence notice per reactor turn: a notice to thousands
#: is spread over several turns (each send is a system call).
NOTICE_CHUNK = 1000

#: Bytes of a history replay written at once.
REPLAY_CHUNK = 64 * 1024

#: Why a command got C{-ERR}, as the C{reason} label of
#: C{netdemo_pubsub_command_errors_total} says.
ERROR_REASONS = (
    "unknown-command",
    "usage",
    "bad-topic",
    "bad-nick",
    "reserved-nick",
    "nick-taken",
    "too-many-subscriptions",
    "not-subscribed",
)

#: What a refused action was, as the C{action} label of
#: C{netdemo_pubsub_permission_denied_total} says.
PERMISSION_ACTIONS = ("publish", "subscribe", "nick", "history", "command")

#: The commands a client may give before logging in when the accounts file
#: has no C{[anonymous]} table.
OPEN_COMMANDS = frozenset({b"login", b"ping", b"quit"})

#: The answer to one C{/pub} line, as written.
_ACK = hubwire.PUBLISHED + b"\n"

#: No events.
_NONE: list[Event] = []


class _Replay:
    """
    A history replay being streamed to one client.

    @ivar before: What was queued for the client (drop-oldest policy, while
        paused) when the replay began: sent first.
    @ivar entries: The lines to replay, without their ends.
    @ivar index: The first entry not sent yet.
    @ivar final: The line sent after the last entry (C{+OK history N
        lines}), or L{None}.
    """

    __slots__ = ("before", "entries", "final", "index")

    def __init__(
        self, entries: Sequence[bytes], final: bytes | None, before: deque[bytes]
    ) -> None:
        self.before = before
        self.entries = entries
        self.final = final
        self.index = 0

    def nextBlock(self) -> bytes | None:
        """
        The next bytes to write (about L{REPLAY_CHUNK} of them, whole
        lines), or L{None} once every entry was given.
        """
        if self.before:
            return self.before.popleft()
        entries = self.entries
        start = end = self.index
        if start >= len(entries):
            return None
        size = 0
        while end < len(entries) and (size < REPLAY_CHUNK or end == start):
            size += len(entries[end]) + 1
            end += 1
        self.index = end
        return b"\n".join(entries[start:end]) + b"\n"


@implementer(IHandshakeListener)
class PubSubProtocol(FanOutProtocol):
    """
    One hub client, as far as I/O goes: it reads events with a
    L{HubReader} and hands them to the hub, a budget per reactor turn; it
    writes what the hub sends it, applying the slow-consumer policy
    (L{FanOutProtocol}), and streams history replays at its pace; it closes.

    @ivar identity: The name shown to others: C{host:port}, C{client-N} or
        a nickname.
    @ivar key: The key of its nickname (L{nickKey}), if it has one.
    @ivar echo: Whether the client gets its own lines back.
    @ivar sequenced: Whether the client gets each line with its topic's
        sequence number (C{/seq on}).
    @ivar reader: The partial line, and what the complete ones mean.
    @ivar prefixes: Topic -> what precedes this client's lines there (a
        cache kept by the hub).
    @ivar written: Bytes given to the transport.
    @ivar dropped: Lines dropped for this client (drop-oldest policy).
    """

    factory: PubSubFactory
    identity = b"-"
    key: bytes | None = None
    echo = False
    sequenced = False
    # A history replay in progress, and what waits behind it.
    _replay: _Replay | None = None
    _behind: deque[tuple[bytes, int]] | None = None
    _behindBytes = 0
    # Whether reading is held (the transport paused), the events of the
    # current batch not handled yet, and the call that goes on with them.
    _held = False
    _rest: list[Event] = _NONE
    _resumeCall: Any = None
    # The publish rate's bucket (None: no --publish-rate), and whether
    # reading is held because it ran out.
    bucket: LineBucket | None = None
    _throttled = False
    # With --hub-auth: what the client may do, the user it logged in as,
    # the subscriptions whose deliveries are checked one by one, whether it
    # still waits to be subscribed to the default topic, and the login in
    # progress (its input is held meanwhile).
    rights: Rights | None = None
    user: str | None = None
    filtered: set[bytes] | None = None
    defaultPending = False
    _login: Any = None
    _gone = False

    def connectionMade(self) -> None:
        """
        Register as the transport's streaming producer (to learn when it
        pauses), bound the kernel send buffer, and join the hub.
        """
        self.startOutput()
        factory = self.factory
        limits = factory.hubLimits
        host = getattr(self.peer, "host", None)
        if host is not None and not limits.hideAddresses:
            self.identity = formatAddress(self.peer).encode("ascii", "replace")
        else:
            # UNIX sockets and the like (no address tells clients apart),
            # or every client with --hide-addresses.
            self.identity = b"client-%d" % (factory.serial + 1,)
        self.reader = HubReader(limits.maxLine, limits.turnLines)
        self.prefixes: dict[bytes, bytes] = {}
        self.baseIdentity = self.identity
        if limits.publishRate:
            self.bucket = factory.publishBucket()
        if factory.auth is not None:
            self.rights = factory.auth.current.anonymous
        factory.joined(self)

    def handshakeCompleted(self) -> None:
        """
        The TLS handshake is done (Twisted's L{IHandshakeListener}): with
        C{--hub-auth}, a verified client certificate whose subject a user
        of the accounts file names logs the connection in as that user.
        """
        factory = self.factory
        if factory.auth is None or self.user is not None or self._gone:
            return
        from netdemo.tls import peerSubject

        subject = peerSubject(self.transport)
        if subject is not None:
            factory.certificateLogin(self, subject)

    # Output.

    def _sendDetour(self, data: bytes, lines: int) -> None:
        """
        Send while paused, or behind a replay in progress.
        """
        if self._replay is not None:
            self._sendBehind(data, lines)
        else:
            self._sendPaused(data, lines)

    def _write(self, data: bytes) -> None:
        """
        Give C{data} to the transport now, past what waits behind a replay
        (the replay's own writes).
        """
        self._detour = False
        self.send(data, 0)
        self._detour = True

    def _sendBehind(self, data: bytes, lines: int) -> None:
        """
        Queue data behind a replay in progress, within C{maxPending}: past
        it, disconnect (or, drop-oldest, drop the oldest lines waiting).
        """
        behind = self._behind
        assert behind is not None
        behind.append((data, lines))
        self._behindBytes += len(data)
        limits = self.factory.hubLimits
        if self._behindBytes <= limits.maxPending:
            return
        if limits.slowPolicy == "drop-oldest":
            self._behindBytes = self._dropOldest(behind, self._behindBytes)
        else:
            self.slowConsumer("slow-consumer")

    def reply(self, line: bytes) -> None:
        """
        Send one line (without its LF) to this client.
        """
        if not self._closing:
            self.send(line + b"\n", 1)

    def _resumed(self) -> bool:
        """
        The transport resumed: go on with a replay in progress.
        """
        if self._replay is None:
            return False
        self._pump()
        return True

    def droppedNotice(self, units: int, size: int) -> bytes:
        return hubwire.dropped(units) + b"\n"

    def closingLine(self, reason: str) -> bytes:
        return hubwire.closing(reason)

    def shuttingDown(self) -> None:
        """
        Give up a replay in progress, and say that the hub shuts down.
        """
        if self._replay is not None:
            self._replay = self._behind = None
            self._detour = self._paused
        self.reply(hubwire.SHUTTING_DOWN)

    # History replays.

    def replay(self, entries: Sequence[bytes], final: bytes | None) -> None:
        """
        Send C{entries} (lines without their ends), then C{final} (without
        its end) if given, at the pace this client reads them: write while
        the transport takes data, go on when it has sent what it holds.
        Meanwhile whatever else is sent to this client waits behind the
        replay, in order, and this client's input is held.
        """
        if self._closing:
            return
        if self._replay is not None:
            # Not while the input is held; but never out of order.
            block = b"".join(line + b"\n" for line in entries)
            if final is not None:
                block += final + b"\n"
            self.send(block, len(entries) + (final is not None))
            return
        if not entries:
            if final is not None:
                self.reply(final)
            return
        before: deque[bytes] = deque()
        if self._queue:
            # Paused, drop-oldest: what it queued goes first.
            notice = self.takeDropped()
            if notice is not None:
                before.append(notice)
            before.extend(data for data, _ in self._queue)
            self._queue.clear()
            self._pending = 0
        self._replay = _Replay(entries, final, before)
        self._behind = deque()
        self._behindBytes = 0
        self._detour = True
        if not self._paused:
            self._pump()
        if self._replay is not None:
            self._holdInput()

    def _pump(self) -> None:
        """
        Write the replay while the transport takes data; end it after its
        last line.
        """
        replay = self._replay
        assert replay is not None
        while not self._paused:
            if self._closing:
                return
            block = replay.nextBlock()
            if block is None:
                self._endReplay()
                return
            self._write(block)

    def _endReplay(self) -> None:
        """
        The replay was written: write its last line, then what waited
        behind it, and read this client's input again.
        """
        replay, self._replay = self._replay, None
        behind, self._behind = self._behind, None
        self._behindBytes = 0
        assert replay is not None and behind is not None
        if replay.final is not None:
            self._write(replay.final + b"\n")
        self._detour = self._paused
        self._tellDropped()
        while behind and not self._closing:
            data, count = behind.popleft()
            self.send(data, count)
        if (
            self._held
            and self._resumeCall is None
            and not self._closing
            and self._login is None
        ):
            self._resumeCall = self.factory.clock.callLater(0, self._continue)

    # Closing.

    def closeWith(self, reason: str, line: bytes) -> None:
        """
        Send one last line, then close gracefully.
        """
        if self._closing:
            return
        self.reply(line)
        self.closeGracefully(reason)

    def connectionLost(self, reason: Any = None) -> None:
        """
        Cancel the timers, leave the hub, and log the connection.
        """
        if self._resumeCall is not None and self._resumeCall.active():
            self._resumeCall.cancel()
        self._resumeCall = None
        self._replay = self._behind = None
        self._gone = True
        login, self._login = self._login, None
        if login is not None and not isinstance(login, Deferred) and login.active():
            login.cancel()
        super().connectionLost(reason)

    # Input.

    def dataReceived(self, data: bytes) -> None:
        """
        Read the events of this read's complete lines and act on them, in
        order, within this turn's budget.
        """
        self.idleTicks = 0
        self.bytesIn += len(data)
        if self._closing:
            return
        if self._held:
            # A transport that delivers a read after being paused.
            self.reader.stash(data)
            return
        self._handle(self.reader.feed(data))

    def _handle(self, events: list[Event]) -> None:
        """
        Act on C{events} in order, until the connection closes, a replay
        holds the input, or this turn's time budget is spent; the events
        not handled (and any lines the reader still holds) wait for a later
        turn.
        """
        factory = self.factory
        count = len(events)
        deadline = factory.timer() + factory.hubLimits.turnTime if count > 1 else 0.0
        bucket = self.bucket
        rights = self.rights
        for index, event in enumerate(events, 1):
            if isinstance(event, Publish):
                if rights is not None and not rights.mayPublish(event.topic):
                    factory.publishDenied(self, event)
                elif bucket is not None and not self._withinRate(
                    bucket, event, events, index
                ):
                    return
                else:
                    factory.publish(self, event.topic, event.lines)
                    acks = event.acks
                    if acks and not self._closing:
                        self.send(_ACK * acks, acks)
            elif isinstance(event, Command):
                factory.command(self, event)
                # A login may have changed them.
                bucket, rights = self.bucket, self.rights
            elif isinstance(event, Reply):
                factory.count("bad-topic", self)
                self.reply(event.line)
            elif event is hubwire.CLOSE:
                self.closeWith("quit", hubwire.BYE)
            else:
                self._lineTooLong()
            if self._closing:
                return
            if self._replay is not None:
                # A replay began: the rest waits for its end.
                self._rest = events[index:]
                return
            if self._login is not None:
                # A login is being checked: the rest waits for its answer.
                self._rest = events[index:]
                self._holdInput()
                return
            if index < count and factory.timer() > deadline:
                self._defer(events[index:])
                return
        if self.reader.waiting:
            self._defer(_NONE)

    def _withinRate(
        self, bucket: LineBucket, event: Publish, events: list[Event], index: int
    ) -> bool:
        """
        Whether the publisher's bucket allows all the lines of C{event}.  If
        not, publish those it allows, stop reading from this client, and go
        on with the rest of C{event} (and the events after it) once the
        bucket has earned enough (TCP back-pressure slows the publisher:
        nothing is lost, nothing reordered).
        """
        lines = event.lines
        factory = self.factory
        now = factory.clock.seconds()
        granted = bucket.grant(now, len(lines))
        if granted == len(lines):
            return True
        acks = event.acks
        if granted:
            factory.publish(self, event.topic, lines[:granted])
            done = min(acks, granted)
            acks -= done
            if done and not self._closing:
                self.send(_ACK * done, done)
            if self._closing:
                return False
        rest = Publish(event.topic, lines[granted:], acks)
        if not self._throttled:
            self._throttled = True
            factory.throttled(self)
        self._defer([rest, *events[index:]], bucket.wait(now, len(rest.lines)))
        return False

    def _holdInput(self) -> None:
        """
        Stop reading from this client.
        """
        if not self._held:
            self._held = True
            self.transport.pauseProducing()  # type: ignore[union-attr]

    def _defer(self, rest: list[Event], delay: float | None = None) -> None:
        """
        Stop reading, go on with C{rest} (and what the reader holds) on a
        later turn: the next one when this turn's budget is spent, or in
        C{delay} seconds when the publish rate was reached.
        """
        self._rest = rest
        self._holdInput()
        if self._resumeCall is None:
            self._resumeCall = self.factory.clock.callLater(delay or 0, self._continue)
        if delay is None:
            self.factory.deferred(self)

    def _continue(self) -> None:
        """
        A later turn: handle the next events that waited, within the
        budget; once none is left, read from this client again.
        """
        self._resumeCall = None
        if self._closing or self._replay is not None or self._login is not None:
            return
        events, self._rest = self._rest, _NONE
        if self._throttled:
            # Held lines are progress: not an idle connection.
            self.idleTicks = 0
        # Blank lines make no event: then the reader may still hold more.
        self._handle(events or self.reader.next())
        if (
            self._closing
            or self._replay is not None
            or self._resumeCall is not None
            or self._login is not None
        ):
            return
        self._held = self._throttled = False
        self.transport.resumeProducing()  # type: ignore[union-attr]

    def checking(self, login: Any) -> None:
        """
        A login is in progress (a L{Deferred}, or the call that starts it
        once its source address's turn comes): what this client sent after
        it waits for its answer.
        """
        self._login = login

    def checked(self) -> None:
        """
        The login in progress was answered: go on with what waited behind
        it.
        """
        self._login = None
        if self._held and self._resumeCall is None and not self._closing:
            self._resumeCall = self.factory.clock.callLater(0, self._continue)

    @property
    def gone(self) -> bool:
        """
        Whether the connection is closed (or closing).
        """
        return self._gone or self._closing

    @property
    def held(self) -> bool:
        """
        Whether the hub stopped reading from this client for now (its
        turn's budget was spent, or a replay is in progress).
        """
        return self._held

    def _lineTooLong(self) -> None:
        """
        Refuse an overlong line: count it, say why, close.
        """
        self.reader.discard()
        self.factory.refuse("max-line", self.peer)
        self.closeWith("max-line", hubwire.tooLong(self.factory.hubLimits.maxLine))

    def lineTimedOut(self) -> None:
        """
        A partial line took too long to complete.
        """
        self.reader.discard()
        self.factory.refuse("line-timeout", self.peer)
        self.closeWith("line-timeout", hubwire.LINE_TIMED_OUT)


class PubSubFactory(FanOutFactory):
    """
    The hub: its members, their nicknames and subscriptions, the commands,
    the fan-out and the history.

    @ivar hubLimits: The hub's limits and policies.
    @ivar clients: The members (connected and not closing), in the order
        they joined.
    @ivar nicks: The members with a nickname, by its key (L{nickKey}).
    @ivar router: Who is subscribed to what.
    @ivar history: The recent lines of each topic, as delivered.
    @ivar publishedLines: Lines published so far.
    @ivar deliveredLines: Line deliveries so far.
    @ivar droppedLines: Lines dropped for slow consumers (drop-oldest).
    @ivar deferredTurns: Times a client's input was left for a later turn.
    @ivar throttledPublishes: Times the hub stopped reading from a publisher
        over the publish rate (C{--publish-rate}).
    @ivar presenceEvents: Joins, leaves and renames so far.
    @ivar presenceNotices: Presence notices sent (each to every subscriber
        of the default topic).
    @ivar errors: C{-ERR} answers so far, by reason (L{ERROR_REASONS}).
    @ivar timer: The clock of the per-turn time budget, in seconds.
    @ivar backplane: The backplane joining this hub to others, or C{None}.
    @ivar auth: The accounts file (C{--hub-auth}), or C{None}.
    @ivar verifyLogin: Checks a login's secret: given the accounts, a user
        name and a secret, a L{Deferred} firing with the user, or L{None}.
    @ivar filtered: The clients with a subscription whose deliveries are
        checked one by one (it overlaps a deny).
    @ivar denied: Refused actions, by user name and action.
    @ivar loginFailures: Failed logins so far.
    """

    protocol = PubSubProtocol
    backplane: IBackplane | None = None
    # Whether /history is answered from what this hub keeps, even with a
    # shared history (reading it failed).
    _historyLocal = False
    auth: AccountsFile | None = None
    verifyLogin: Callable[..., Deferred[Any]]
    loginThrottle: BucketTable
    _log = Logger()

    def __init__(
        self,
        serviceName: str,
        limits: ConnectionLimits,
        hubLimits: HubLimits,
        metrics: IMetrics,
        clock: IReactorTime,
        backplane: IBackplane | None = None,
        auth: AccountsFile | None = None,
    ) -> None:
        super().__init__(serviceName, limits, metrics, clock)
        self.hubLimits = self.slowLimits = hubLimits
        self.clients: dict[PubSubProtocol, None] = {}
        self.nicks: dict[bytes, PubSubProtocol] = {}
        self.router: Router[PubSubProtocol] = Router()
        # With a backplane that shares history (Redis Streams), Redis numbers
        # the lines and holds the history; else this hub does.
        self.history: History | SharedHistory = (
            SharedHistory(hubLimits.history)
            if getattr(backplane, "streams", False)
            else History(hubLimits.history)
        )
        # The clients with /seq on: while there is none, a publish costs
        # nothing more than before sequence numbers.
        self.sequenced: set[PubSubProtocol] = set()
        self.publishedLines = 0
        self.deliveredLines = 0
        self.droppedLines = 0
        self.deferredTurns = 0
        self.throttledPublishes = 0
        #: Throttled publishers by user (C{anonymous} for clients not
        #: logged in, and for every client without --hub-auth).
        self.throttledBy: dict[str, int] = {}
        self.presenceEvents = 0
        self.presenceNotices = 0
        self.errors = dict.fromkeys(ERROR_REASONS, 0)
        self.timer: Callable[[], float] = time.perf_counter
        self.serial = 0
        self._lineSweeper: LoopingCall | None = None
        self._hubLog = RateLimitedLog(self._log, clock.seconds)
        # Presence: the window that coalesces notices, and what happened
        # in it so far (the one event, while there is only one).
        self._presenceWindow: Any = None
        self._stopped = False
        # Notices still to be sent, a chunk of recipients per turn.
        self._notices: deque[
            tuple[list[PubSubProtocol], PubSubProtocol | None, bytes]
        ] = deque()
        self._noticeCall: Any = None
        self._held = [0, 0, 0]
        self._heldEvent: tuple[PubSubProtocol, bytes] | None = None
        # /who answers by topic (b"" for everyone), until the next change.
        self._who: dict[bytes, bytes] = {}
        self.filtered: dict[PubSubProtocol, None] = {}
        self.denied: dict[tuple[str, str], int] = {}
        self.loginFailures = 0
        self._userBuckets: dict[str, LineBucket] = {}
        metrics.addCollector(self._collectHub)
        if auth is not None:
            from netdemo.hubauth import (
                LOGIN_BURST,
                LOGIN_MAX_WAIT,
                LOGIN_RATE,
                LOGIN_SOURCES,
                LoginVerifier,
            )

            self.auth = auth
            self.verifyLogin = LoginVerifier(clock)
            self.loginThrottle = BucketTable(
                LOGIN_RATE, LOGIN_BURST, LOGIN_SOURCES, LOGIN_MAX_WAIT
            )
            auth.listeners.append(self.applyAccounts)
        # Local lines also go to the backplane; lines of other hubs come
        # back through deliverRemote.
        if backplane is not None:
            self.backplane = backplane
            backplane.attach(self.deliverRemote)
            if isinstance(self.history, SharedHistory):
                backplane.attachOrdered(self.deliverOrdered, self.epochSeen)

    def _collectHub(self) -> list[Any]:
        """
        The hub's totals, computed now.
        """
        service = self.serviceName
        samples = [
            sampleOf(name, value, service=service)
            for name, value in (
                ("netdemo_pubsub_published_lines_total", self.publishedLines),
                ("netdemo_pubsub_delivered_lines_total", self.deliveredLines),
                ("netdemo_pubsub_dropped_lines_total", self.droppedLines),
                ("netdemo_pubsub_deferred_turns_total", self.deferredTurns),
                ("netdemo_pubsub_presence_events_total", self.presenceEvents),
                ("netdemo_pubsub_presence_notices_total", self.presenceNotices),
            )
        ]
        samples.extend(
            sampleOf(
                "netdemo_pubsub_publish_throttled_total",
                count,
                service=service,
                user=user,
            )
            for user, count in (self.throttledBy or {"anonymous": 0}).items()
        )
        samples.extend(
            sampleOf(
                "netdemo_pubsub_command_errors_total",
                count,
                service=service,
                reason=reason,
            )
            for reason, count in self.errors.items()
        )
        if self.auth is not None:
            samples.append(
                sampleOf(
                    "netdemo_pubsub_login_failures_total",
                    self.loginFailures,
                    service=service,
                )
            )
            samples.extend(
                sampleOf(
                    "netdemo_pubsub_permission_denied_total",
                    count,
                    service=service,
                    user=user,
                    action=action,
                )
                for (user, action), count in self.denied.items()
            )
        return samples

    def startFactory(self) -> None:
        """
        Start the idle sweep and the partial-line sweep.
        """
        super().startFactory()
        self._stopped = False
        timeout = self.hubLimits.lineTimeout
        if timeout and self._lineSweeper is None:
            self._lineSweeper = LoopingCall(self.sweepLines)
            self._lineSweeper.clock = self.clock
            self._lineSweeper.start(timeout / LINE_SWEEPS, now=False)

    def stopFactory(self) -> None:
        """
        Stop the sweeps and the presence window: the hub is shutting down,
        its clients leave unannounced.
        """
        super().stopFactory()
        self._stopped = True
        if self._lineSweeper is not None:
            self._lineSweeper.stop()
            self._lineSweeper = None
        for call in (self._presenceWindow, self._noticeCall):
            if call is not None and call.active():
                call.cancel()
        self._presenceWindow = self._noticeCall = None
        self._notices.clear()

    def sweepLines(self) -> None:
        """
        Age every partial line by one sweep; close the connections whose
        partial line is older than the line timeout.  A client whose input
        the hub holds is not aged: the hub is not reading it.
        """
        for p in list(self.clients):
            reader = p.reader
            if reader.buffer and not p.held:
                reader.partialTicks += 1
                if reader.partialTicks > LINE_SWEEPS:
                    p.lineTimedOut()

    def refusalLine(self, reason: str) -> bytes:
        return hubwire.refused(reason)

    def deferred(self, p: PubSubProtocol) -> None:
        """
        Count (and log, at a bounded rate) a client whose input waits for a
        later turn: it spent its turn's budget.
        """
        self.deferredTurns += 1
        self._hubLog.emit(
            "turn-budget",
            LogLevel.info,
            "{service}: {peer} sent more than one turn's work "
            "({lines} lines or {seconds} s); the rest waits for later turns",
            event="turn_budget",
            service=self.serviceName,
            peer=formatAddress(p.peer),
            lines=self.hubLimits.turnLines,
            seconds=self.hubLimits.turnTime,
        )

    def publishBucket(self) -> LineBucket:
        """
        A new publisher's bucket (C{--publish-rate}, C{--publish-burst}),
        full.
        """
        limits = self.hubLimits
        return LineBucket(
            limits.publishRate, limits.publishBucket, self.clock.seconds()
        )

    def throttled(self, p: PubSubProtocol) -> None:
        """
        Count (and log, at a bounded rate) a publisher whose input waits
        because it published faster than C{--publish-rate}.
        """
        self.throttledPublishes += 1
        rights = p.rights
        user = rights.label if rights is not None else "anonymous"
        self.throttledBy[user] = self.throttledBy.get(user, 0) + 1
        limits = self.hubLimits
        self._hubLog.emit(
            "publish-throttled",
            LogLevel.info,
            "{service}: {peer} published faster than {rate} lines/s (burst "
            "{burst}); the hub reads it at that rate",
            event="publish_throttled",
            service=self.serviceName,
            peer=formatAddress(p.peer),
            identity=p.identity.decode("ascii", "replace"),
            rate=limits.publishRate,
            burst=limits.publishBucket,
        )

    def count(self, reason: str, p: PubSubProtocol) -> None:
        """
        Count (and log, at a bounded rate) a command answered C{-ERR}.
        """
        self.errors[reason] += 1
        self._hubLog.emit(
            reason,
            LogLevel.warn,
            "{service}: {peer} sent a command refused ({reason})",
            event="command_error",
            service=self.serviceName,
            peer=formatAddress(p.peer),
            reason=reason,
        )

    def error(self, p: PubSubProtocol, reason: str, line: bytes) -> None:
        """
        Answer a command C{-ERR}, and count it.
        """
        self.count(reason, p)
        p.reply(line)

    # Membership.

    def members(self) -> list[PubSubProtocol]:
        """
        The clients that are connected and not closing.
        """
        return list(self.clients)

    def joined(self, p: PubSubProtocol) -> None:
        """
        Greet a new client (subscribed to the default topic), announce it,
        replay history to it.
        """
        self.serial += 1
        self.clients[p] = None
        rights = p.rights
        if rights is None or rights.subscription(DEFAULT_TOPIC) is not Access.REFUSED:
            self.router.subscribe(p, DEFAULT_TOPIC)
        else:
            p.defaultPending = True
        self._who.clear()
        p.reply(hubwire.greeting(p.identity, self.serial, len(self.clients)))
        if rights is not None and rights.restricted:
            p.reply(hubwire.LOGIN_NEEDED)
        limits = self.hubLimits
        if limits.presence:
            self.presence(p, 0, hubwire.joined)
        if limits.replayOnJoin and not p.defaultPending:
            p.replay(self.history.last(DEFAULT_TOPIC, limits.replayOnJoin), None)

    def attach(self, transport: Any, peer: Any) -> PubSubProtocol:
        """
        Make a hub client of a connection another service accepted (a
        WebSocket or an event stream of the HTTP service, through
        L{netdemo.hubgate.IHubGate}): a member like any other, but under
        that service's connection limits, not the hub's listeners'.
        """
        p = self.protocol()
        p.factory = self
        p.peer = peer
        p.startedAt = self.clock.seconds()
        self.connections[p] = None
        self.metrics.inc("netdemo_connections_total", service=self.serviceName)
        p.makeConnection(transport)
        return p

    def droppedFor(self, p: FanOutProtocol, units: int, size: int) -> None:
        """
        Count the lines dropped for a slow subscriber (drop-oldest).
        """
        self.droppedLines += units

    def left(self, p: PubSubProtocol) -> None:  # type: ignore[override]
        """
        Forget a client that is closing or gone, and announce it.
        """
        if p not in self.clients:
            return
        del self.clients[p]
        if p.key is not None and self.nicks.get(p.key) is p:
            del self.nicks[p.key]
        self.filtered.pop(p, None)
        self.sequenced.discard(p)
        self.router.drop(p)
        self._who.clear()
        if self.hubLimits.presence:
            self.presence(p, 1, hubwire.left)

    def rename(self, p: PubSubProtocol, nick: bytes) -> bool:
        """
        Give C{p} a nickname, unless another client has one that looks the
        same (L{nickKey}).
        """
        key = nickKey(nick)
        holder = self.nicks.get(key)
        if holder is not None and holder is not p:
            return False
        if p.key is not None and self.nicks.get(p.key) is p:
            del self.nicks[p.key]
        self.nicks[key] = p
        p.key = key
        old = p.identity
        p.identity = nick
        p.prefixes.clear()
        self._who.clear()
        if self.hubLimits.presence:
            self.presence(p, 2, lambda new, count: hubwire.renamed(old, new))
        return True

    def presence(
        self, about: PubSubProtocol, kind: int, line: Callable[[bytes, int], bytes]
    ) -> None:
        """
        Tell the default topic's subscribers (but C{about}) of a join (kind
        0), a leave (1) or a rename (2): at once when presence was quiet for
        C{presenceInterval} seconds, else in the one notice that ends the
        interval.

        @param line: The notice, given the identity and how many are
            connected.
        """
        self.presenceEvents += 1
        if self._stopped:
            return
        interval = self.hubLimits.presenceInterval
        if not interval:
            self.notice(about, line(about.identity, len(self.clients)))
            return
        if self._presenceWindow is None:
            self.notice(about, line(about.identity, len(self.clients)))
            self._presenceWindow = self.clock.callLater(interval, self._presenceTick)
            return
        held = self._held
        held[kind] += 1
        if sum(held) == 1:
            self._heldEvent = (about, line(about.identity, len(self.clients)))
        else:
            self._heldEvent = None

    def _presenceTick(self) -> None:
        """
        The end of a presence interval: tell what happened in it in one
        notice, and start another; or, if nothing did, presence is quiet.
        """
        self._presenceWindow = None
        held = self._held
        total = sum(held)
        if not total:
            return
        connected = len(self.clients)
        event, self._heldEvent = self._heldEvent, None
        if event is not None:
            about: PubSubProtocol | None = event[0]
            line = event[1]
        else:
            about = None
            line = hubwire.presenceSummary(held[0], held[1], held[2], connected)
            self._hubLog.emit(
                "presence",
                LogLevel.info,
                "{service}: {events} joins, leaves and renames told in one "
                "notice ({joined} joined, {left} left, {renamed} renamed)",
                event="presence_coalesced",
                service=self.serviceName,
                events=total,
                joined=held[0],
                left=held[1],
                renamed=held[2],
            )
        self._held = [0, 0, 0]
        self.notice(about, line)
        self._presenceWindow = self.clock.callLater(
            self.hubLimits.presenceInterval, self._presenceTick
        )

    def notice(self, about: PubSubProtocol | None, line: bytes) -> None:
        """
        Send a presence line to the default topic's subscribers but C{about}:
        at most L{NOTICE_CHUNK} of them per reactor turn, the first at once.
        """
        self.presenceNotices += 1
        recipients = list(self.router.subscribers(DEFAULT_TOPIC))
        self._notices.append((recipients, about, line + b"\n"))
        if self._noticeCall is None:
            self._sendNotices()

    def _sendNotices(self) -> None:
        """
        Send the notices waiting to their next L{NOTICE_CHUNK} recipients
        (those still connected), in order; leave the rest for the next
        turn.
        """
        self._noticeCall = None
        notices = self._notices
        clients = self.clients
        budget = NOTICE_CHUNK
        while notices and budget > 0:
            recipients, about, data = notices[0]
            chunk = recipients[-budget:]
            del recipients[-budget:]
            budget -= len(chunk)
            for s in chunk:
                if s is not about and s in clients:
                    s.send(data, 1)
            if not recipients:
                notices.popleft()
        if notices and not self._stopped:
            self._noticeCall = self.clock.callLater(0, self._sendNotices)

    # Publishing.

    def prefixFor(self, p: PubSubProtocol, topic: bytes) -> bytes:
        """
        What precedes each of C{p}'s lines on C{topic}.
        """
        prefixes = p.prefixes
        prefix = prefixes.get(topic)
        if prefix is None:
            prefix = linePrefix(topic, p.identity)
            if len(prefixes) >= MAX_SUBSCRIPTIONS:
                prefixes.clear()
            prefixes[topic] = prefix
        return prefix

    def publish(self, sender: PubSubProtocol, topic: bytes, lines: list[bytes]) -> None:
        """
        Deliver lines from C{sender} on C{topic}: one write per subscriber;
        hand them to the backplane, if any.
        """
        self.publishedLines += len(lines)
        backplane = self.backplane
        if backplane is not None and backplane.publish(
            topic, sender.identity, lines, sender
        ):
            # Delivered once Redis has numbered them (deliverOrdered).
            return
        self._fanOut(sender, topic, self.prefixFor(sender, topic), lines)

    def deliverRemote(self, topic: bytes, identity: bytes, lines: list[bytes]) -> None:
        """
        Deliver lines that C{identity} published on another hub (from the
        backplane) to this hub's subscribers.  They are never published
        again.
        """
        self._fanOut(None, topic, linePrefix(topic, identity), lines)

    def deliverOrdered(
        self,
        topic: bytes,
        identity: bytes,
        lines: list[bytes],
        first: int,
        epoch: bytes,
        origin: object,
        answered: bool,
    ) -> bool:
        """
        Deliver lines numbered by Redis from C{first} (shared history), in
        the order of their numbers (L{SharedHistory.accept}); lines of this
        hub that Redis could not number (C{first} 0) at once, marked local.

        @param origin: The local client that published them, or L{None}.
        @param answered: Whether they come with the script's answer.
        @return: Whether they were delivered (else they were already, or
            wait for their turn).
        """
        history = self.history
        assert isinstance(history, SharedHistory)
        if first:
            if epoch.decode("ascii") != history.epoch:
                return False
            gaps = history.gaps
            if not history.accept(topic, first, len(lines), answered):
                return False
            if history.gaps != gaps and self.sequenced:
                # Numbers never delivered here (lost while the subscription
                # was down): clients with /seq on are told, not left to guess.
                self._missed(topic, first - (history.gaps - gaps), first - 1)
        # The publisher (a client of this hub, of any kind) unless it is
        # gone or renamed since.
        sender: Any = origin
        if sender is not None and getattr(sender, "identity", None) == identity:
            prefix = self.prefixFor(sender, topic)
        else:
            prefix = linePrefix(topic, identity)
        self._fanOut(sender, topic, prefix, lines, first)
        return True

    def _missed(self, topic: bytes, start: int, end: int) -> None:
        """
        Tell the subscribers of C{topic} with C{/seq on} that the lines
        numbered C{start} to C{end} were not delivered here.
        """
        notice = hubwire.missed(topic, start, end) + b"\n"
        for s in list(self.router.subscribers(topic)):
            if s.sequenced:
                s.send(notice, 1)

    def epochSeen(self, epoch: bytes) -> None:
        """
        Redis's epoch is C{epoch} (shared history): if it is not the one
        this hub knew, forget the old one's numbers and tell the clients
        with C{/seq on}.
        """
        history = self.history
        text = epoch.decode("ascii")
        if not isinstance(history, SharedHistory) or text == history.epoch:
            return
        history.changeEpoch(text)
        notice = hubwire.epochChanged(epoch) + b"\n"
        for s in list(self.sequenced):
            s.send(notice, 1)

    def _fanOut(
        self,
        sender: PubSubProtocol | None,
        topic: bytes,
        prefix: bytes,
        lines: list[bytes],
        first: int | None = None,
    ) -> None:
        """
        Write lines, each after C{prefix}, to the subscribers of C{topic} (but
        C{sender}, unless it asked for its echo), and remember them.  The
        clients with C{/seq on} get the lines numbered: formatted once for
        all of them, when the first one is met.  C{first} is the number
        Redis gave the first line (shared history); without it the history
        numbers them.
        """
        count = len(lines)
        if count == 1:
            data = prefix + lines[0] + b"\n"
        else:
            data = prefix + (b"\n" + prefix).join(lines) + b"\n"
        if first is None:
            first = self.history.add(topic, prefix, lines)
        else:
            self.history.record(topic, prefix, lines, first)  # type: ignore[union-attr]
        delivered = 0
        # A copy: a subscriber disconnected for being slow leaves the table.
        subscribers = list(self.router.subscribers(topic))
        if self.filtered:
            subscribers = self._permitted(topic, subscribers)
        sequenced = self.sequenced
        if not sequenced or sequenced.isdisjoint(subscribers):
            for s in subscribers:
                if s is sender and not s.echo:
                    continue
                s.send(data, count)
                delivered += 1
        else:
            numbered = None
            for s in subscribers:
                if s is sender and not s.echo:
                    continue
                if s.sequenced:
                    if numbered is None:
                        numbered = hubwire.sequencedBlock(first, prefix, lines)
                    s.send(numbered, count)
                else:
                    s.send(data, count)
                delivered += 1
        self.deliveredLines += count * delivered

    def _permitted(
        self, topic: bytes, subscribers: list[PubSubProtocol]
    ) -> list[PubSubProtocol]:
        """
        C{subscribers} without those whose subscription to C{topic} is
        filtered and whose rights deny it.  The work is the smaller of the
        two lists, each check one cached lookup.
        """
        filtered = self.filtered
        if len(filtered) < len(subscribers):
            denied = {
                s
                for s in filtered
                if s.rights is not None and not s.rights.mayReceive(topic)
            }
            if not denied:
                return subscribers
            return [s for s in subscribers if s not in denied]
        return [
            s
            for s in subscribers
            if s not in filtered or s.rights is None or s.rights.mayReceive(topic)
        ]

    # Accounts (--hub-auth).

    def deny(self, p: PubSubProtocol, action: str, what: bytes, count: int = 1) -> None:
        """
        Answer C{count} refused actions of C{p}
        (C{-ERR permission denied: ACTION WHAT} each), count them by user
        and action, and log them at a bounded rate.
        """
        rights = p.rights
        user = rights.label if rights is not None else "anonymous"
        key = (user, action)
        self.denied[key] = self.denied.get(key, 0) + count
        self._hubLog.emit(
            ("permission-denied", action),
            LogLevel.warn,
            "{service}: {peer} ({user}) was refused {action} {what}",
            event="permission_denied",
            service=self.serviceName,
            peer=formatAddress(p.peer),
            user=user,
            action=action,
            what=hubwire.escapeControls(what[: hubwire.MAX_TOPIC]).decode(
                "utf-8", "replace"
            ),
        )
        if not p.gone:
            text = what if action == "command" else action.encode() + b" " + what
            line = hubwire.permissionDenied(text) + b"\n"
            p.send(line * count, count)

    def publishDenied(self, p: PubSubProtocol, event: Publish) -> None:
        """
        Refuse the lines of C{event}: each is answered C{-ERR}.
        """
        self.deny(p, "publish", event.topic, len(event.lines))

    def applyAccounts(self, accounts: HubAccounts) -> None:
        """
        A new version of the accounts file: apply it to every client at
        once.  A client whose user is gone is closed; the subscriptions no
        longer allowed are dropped, each with a notice; a nickname no
        longer allowed is given up.
        """
        known = set(accounts.users) | {accounts.anonymous.label}
        for key in [k for k in self.denied if k[0] not in known]:
            del self.denied[key]
        for name in [n for n in self.throttledBy if n not in known]:
            del self.throttledBy[name]
        for name in [n for n in self._userBuckets if n not in accounts.users]:
            del self._userBuckets[name]
        for p in list(self.clients):
            if p.user is None:
                self.grant(p, accounts.anonymous)
                continue
            rights = accounts.users.get(p.user)
            if rights is None:
                p.closeWith("account-removed", hubwire.err(b"closing: account removed"))
            else:
                self.grant(p, rights)

    def grant(self, p: PubSubProtocol, rights: Rights) -> None:
        """
        Give C{p} the rights C{rights}: check its subscriptions and nickname
        again, and subscribe it to the default topic if it waited for that.
        """
        p.rights = rights
        filtered: set[bytes] = set()
        for pattern in sorted(self.router.patterns(p)):
            access = rights.subscription(pattern)
            if access is Access.REFUSED:
                self.router.unsubscribe(p, pattern)
                self._who.clear()
                p.reply(hubwire.subscriptionDropped(pattern))
            elif access is Access.FILTERED:
                filtered.add(pattern)
        default = rights.subscription(DEFAULT_TOPIC)
        if p.defaultPending and default is not Access.REFUSED:
            p.defaultPending = False
            self.router.subscribe(p, DEFAULT_TOPIC)
            self._who.clear()
        p.filtered = filtered or None
        if filtered:
            self.filtered[p] = None
        else:
            self.filtered.pop(p, None)
        auth = self.auth
        if (
            p.key is not None
            and auth is not None
            and not auth.current.mayUseNick(rights, p.identity)
        ):
            base = rights.name if p.user is not None else p.baseIdentity
            self.setIdentity(p, base)
        if self.hubLimits.publishRate and p.user is not None:
            bucket = self._userBuckets.get(p.user)
            if bucket is None:
                bucket = self._userBuckets[p.user] = self.publishBucket()
            p.bucket = bucket

    def setIdentity(self, p: PubSubProtocol, identity: bytes) -> None:
        """
        Show C{p} as C{identity} (its user name, or its address), giving up
        any nickname, and tell the others.
        """
        if p.key is not None and self.nicks.get(p.key) is p:
            del self.nicks[p.key]
        p.key = None
        old = p.identity
        if old == identity:
            return
        p.identity = identity
        p.prefixes.clear()
        self._who.clear()
        if self.hubLimits.presence:
            self.presence(p, 2, lambda new, count: hubwire.renamed(old, new))

    def cmd_login(self, p: PubSubProtocol, arg: bytes) -> None:
        """
        C{/login USER SECRET}: check a password or token (in a thread, at
        most a few at once, failed ones from one address slowed down) and
        answer once it is checked; what the client sent after it waits.
        """
        auth = self.auth
        if auth is None:
            self.error(p, "usage", hubwire.err(b"login: this hub has no accounts"))
            return
        if p.user is not None:
            self.error(
                p, "usage", hubwire.err(b"already logged in as " + p.user.encode())
            )
            return
        words = arg.split(None, 1)
        if len(words) != 2:
            self.error(p, "usage", hubwire.usage(b"/login USER SECRET"))
            return
        name = words[0].decode("utf-8", "replace")
        secret = words[1].decode("utf-8", "replace")
        source = getattr(p.peer, "host", None) or "local"
        wait = self.loginThrottle.reserve(source, self.clock.seconds())
        if wait is None:
            self._loginFailed(p, name, "throttled")
            return
        if wait:
            p.checking(
                self.clock.callLater(wait, self._checkLogin, p, name, secret, source)
            )
        else:
            self._checkLogin(p, name, secret, source)

    def _checkLogin(
        self, p: PubSubProtocol, name: str, secret: str, source: str
    ) -> None:
        """
        Check a login's secret, off the reactor thread.
        """
        auth = self.auth
        assert auth is not None
        checked = self.verifyLogin(
            auth.current.accounts, name, secret, lambda: not p.gone
        )
        p.checking(checked)

        def answered(user: Any) -> None:
            if p.gone:
                return
            rights = None
            if user is not None:
                assert self.auth is not None
                rights = self.auth.current.users.get(name)
            if rights is None:
                self._loginFailed(p, name, "bad-secret")
            else:
                self.loginThrottle.refund(source, self.clock.seconds())
                self._loggedIn(p, name, rights)
            p.checked()

        def failed(failure: Any) -> None:
            from netdemo.hubauth import LoginBusy

            if failure.check(LoginBusy):
                # Not the client's failure: its address keeps its turn.
                self.loginThrottle.refund(source, self.clock.seconds())
                why = "busy"
            else:
                self._log.failure(
                    "{service}: checking a login failed",
                    failure,
                    service=self.serviceName,
                )
                why = "error"
            if not p.gone:
                self._loginFailed(p, name, why)
                p.checked()

        checked.addCallbacks(answered, failed)

    def certificateLogin(self, p: PubSubProtocol, subject: str) -> None:
        """
        Log C{p} in as the user its verified client certificate's
        C{subject} maps to (L{netdemo.accounts.User.certificates}); a
        subject no user names leaves it anonymous, logged at a bounded rate.
        """
        auth = self.auth
        assert auth is not None
        user = auth.current.accounts.forCertificate(subject)
        rights = None if user is None else auth.current.users.get(user.name)
        if user is None or rights is None:
            self._hubLog.emit(
                "certificate-unmapped",
                LogLevel.info,
                "{service}: {peer}'s certificate {subject} is no user's",
                event="certificate_unmapped",
                service=self.serviceName,
                peer=formatAddress(p.peer),
                subject=subject,
            )
            return
        self._loggedIn(p, user.name, rights, subject)

    def _loggedIn(
        self, p: PubSubProtocol, name: str, rights: Rights, subject: str | None = None
    ) -> None:
        """
        C{p} proved it is user C{name} (by a secret, or by the certificate
        whose C{subject} is given): give it the user's rights and identity,
        tell it, log it.
        """
        p.user = name
        self.grant(p, rights)
        self.setIdentity(p, rights.name)
        how: dict[str, str] = {} if subject is None else {"subject": subject}
        byCertificate = b"" if subject is None else b" by certificate"
        p.reply(hubwire.ok(b"logged in as " + rights.name + byCertificate))
        self._log.info(
            "{service}: {peer} logged in as {user}"
            + ("" if subject is None else " by certificate {subject}"),
            event="logged_in",
            service=self.serviceName,
            peer=formatAddress(p.peer),
            user=name,
            **how,
        )

    def _loginFailed(self, p: PubSubProtocol, name: str, why: str) -> None:
        """
        Answer a failed login (never saying whether the name or the secret
        was wrong), count it, and log it at a bounded rate: with the name
        only if it is a user's (a password typed as a name is not logged).
        """
        self.loginFailures += 1
        auth = self.auth
        known = auth is not None and name in auth.current.users
        self._hubLog.emit(
            "login-failed",
            LogLevel.warn,
            "{service}: failed login from {peer} as {user} ({why})",
            event="login_failed",
            service=self.serviceName,
            peer=formatAddress(p.peer),
            user=name if known else "(not a user)",
            why=why,
        )
        if not p.gone:
            p.reply(hubwire.LOGIN_BUSY if why == "busy" else hubwire.LOGIN_FAILED)

    # Commands: each answers with exactly one +OK or -ERR line.

    def command(self, p: PubSubProtocol, command: Command) -> None:
        """
        Run one command of C{p} and answer it.
        """
        rights = p.rights
        if (
            rights is not None
            and rights.restricted
            and command.name not in OPEN_COMMANDS
        ):
            shown = hubwire.escapeControls(command.word[:64])
            self.deny(p, "command", shown + b" (log in first)")
            return
        handler = None
        if command.name.isalpha():
            handler = getattr(self, "cmd_" + command.name.decode("ascii"), None)
        if handler is None:
            self.error(p, "unknown-command", hubwire.unknownCommand(command.word))
            return
        handler(p, command.arg)

    def cmd_nick(self, p: PubSubProtocol, arg: bytes) -> None:
        """
        C{/nick NAME}: take a nickname.
        """
        auth = self.auth
        if not isNick(arg):
            self.error(p, "bad-nick", hubwire.BAD_NICK)
        elif (
            auth is not None
            and p.rights is not None
            and not auth.current.mayUseNick(p.rights, arg)
        ):
            self.deny(p, "nick", arg)
        elif isReservedNick(arg):
            self.error(
                p, "reserved-nick", hubwire.err(b"nick " + arg + b" is reserved")
            )
        elif arg != p.identity and not self.rename(p, arg):
            self.error(p, "nick-taken", hubwire.err(b"nick " + arg + b" is taken"))
        else:
            p.reply(hubwire.ok(b"nick " + arg))

    def cmd_sub(self, p: PubSubProtocol, arg: bytes) -> None:
        """
        C{/sub PATTERN}: subscribe.
        """
        if not isPattern(arg):
            self.error(
                p,
                "usage",
                hubwire.usage(b"/sub PATTERN (tokens a.b.c, * one token, > rest)"),
            )
            return
        rights = p.rights
        access = Access.FULL
        if rights is not None:
            access = rights.subscription(arg)
            if access is Access.REFUSED:
                self.deny(p, "subscribe", arg)
                return
        outcome = self.router.subscribe(p, arg)
        if outcome is Subscribed.TOO_MANY:
            self.error(
                p,
                "too-many-subscriptions",
                hubwire.err(b"too many subscriptions (%d)" % (MAX_SUBSCRIPTIONS,)),
            )
            return
        note = b""
        if access is Access.FILTERED:
            if p.filtered is None:
                p.filtered = set()
            p.filtered.add(arg)
            self.filtered[p] = None
            note = b" (filtered: some of its topics are denied)"
        if arg == DEFAULT_TOPIC:
            p.defaultPending = False
        if outcome is Subscribed.ALREADY:
            p.reply(hubwire.ok(b"already subscribed to " + arg + note))
        else:
            self._who.clear()
            p.reply(hubwire.ok(b"subscribed to " + arg + note))

    def cmd_unsub(self, p: PubSubProtocol, arg: bytes) -> None:
        """
        C{/unsub PATTERN}: unsubscribe.
        """
        if self.router.unsubscribe(p, arg):
            filtered = p.filtered
            if filtered is not None and arg in filtered:
                filtered.discard(arg)
                if not filtered:
                    p.filtered = None
                    self.filtered.pop(p, None)
            if arg == DEFAULT_TOPIC:
                p.defaultPending = False
            self._who.clear()
            p.reply(hubwire.ok(b"unsubscribed from " + arg))
        else:
            shown = hubwire.escapeControls(arg[: hubwire.MAX_TOPIC])
            self.error(p, "not-subscribed", hubwire.err(b"not subscribed to " + shown))

    def cmd_pub(self, p: PubSubProtocol, arg: bytes) -> None:
        """
        C{/pub TOPIC text} without text (with text it is no command).
        """
        self.error(p, "usage", hubwire.usage(b"/pub TOPIC text"))

    def cmd_topics(self, p: PubSubProtocol, arg: bytes) -> None:
        """
        C{/topics}: the client's subscriptions and the topics with history.
        """
        backplane: Any = self.backplane
        if isinstance(self.history, SharedHistory) and backplane is not None:
            # Also the topics that only Redis has (one bounded HSCAN step).
            d = backplane.topics(MAX_LISTED)
            if d is not None:
                p.checking(d)

                def answer(found: Any) -> None:
                    if not p.gone:
                        self._topics(p, found if isinstance(found, list) else [])
                        p.checked()

                d.addBoth(answer)
                return
        self._topics(p, [])

    def _topics(self, p: PubSubProtocol, shared: list[bytes]) -> None:
        """
        Answer C{/topics}, with the topics of the shared history too.
        """
        mine = b" ".join(sorted(self.router.patterns(p))[:MAX_LISTED])
        rights = p.rights
        topics = {
            t
            for t in (*self.history.topics(), *shared)
            if rights is None or rights.mayReceive(t)
        }
        known = b" ".join(sorted(topics)[:MAX_LISTED])
        p.reply(hubwire.ok(b"topics subscribed: " + mine + b"; with history: " + known))

    def cmd_who(self, p: PubSubProtocol, arg: bytes) -> None:
        """
        C{/who [TOPIC]}: identities connected, or subscribed to TOPIC.
        """
        if arg and not isTopic(arg):
            self.error(p, "bad-topic", hubwire.usage(b"/who [TOPIC]"))
            return
        answer = self._who.get(arg)
        if answer is None:
            clients: Collection[PubSubProtocol] = (
                self.router.subscribers(arg) if arg else self.clients
            )
            names = sorted(c.identity for c in clients)
            listed = b" ".join(names[:MAX_LISTED])
            more = b" ..." if len(names) > MAX_LISTED else b""
            answer = hubwire.ok(b"who %d: %s%s" % (len(names), listed, more))
            if len(self._who) >= MAX_WHO_CACHED:
                self._who.clear()
            self._who[arg] = answer
        p.reply(answer)

    def cmd_history(self, p: PubSubProtocol, arg: bytes) -> None:
        """
        C{/history [N] [TOPIC]}: replay the last N lines of a topic, at the
        pace the client reads them; C{/history since SEQ [TOPIC]}: the
        lines after SEQ.
        """
        words = arg.split()
        if (
            len(words) > 1
            and words[0].lower() == b"since"
            and words[1].partition(b"@")[0].isdigit()
        ):
            self._historySince(p, words[1:])
            return
        count = self.hubLimits.history
        topic = DEFAULT_TOPIC
        if words:
            number = parseCount(words[0])
            if number is not None:
                words.pop(0)
                # More digits than a count has: all the history there is.
                if number >= 0:
                    count = min(count, number)
        if words:
            topic = words.pop(0)
        if words or not isTopic(topic):
            self.error(p, "bad-topic", hubwire.usage(b"/history [N] [TOPIC]"))
            return
        if p.rights is not None and not p.rights.mayReceive(topic):
            self.deny(p, "history", topic)
            return
        if self._readShared(p, topic, None, count):
            return
        history = self.history
        if p.sequenced:
            entries = history.lastNumbered(topic, count)
        else:
            entries = history.last(topic, count)
        last = history.lastSeq(topic)
        p.replay(entries, hubwire.historyAnswer(len(entries), last))

    def _historySince(self, p: PubSubProtocol, words: list[bytes]) -> None:
        """
        C{/history since SEQ[@EPOCH] [TOPIC]}: replay the lines of a topic
        numbered after SEQ; first a gap notice if history no longer reaches
        back to SEQ + 1 (or SEQ is ahead of the topic's numbering, or of
        another epoch than the history's).
        """
        number, _, asked = words[0].partition(b"@")
        seq = parseCount(number, hubwire.MAX_SEQ_DIGITS)
        topic = words[1] if len(words) > 1 else DEFAULT_TOPIC
        if (
            seq is None
            or seq < 0
            or len(words) > 2
            or not isTopic(topic)
            or len(asked) > 64
            or asked
            and not asked.isalnum()
        ):
            self.error(p, "usage", hubwire.usage(b"/history since SEQ[@EPOCH] [TOPIC]"))
            return
        if p.rights is not None and not p.rights.mayReceive(topic):
            self.deny(p, "history", topic)
            return
        history = self.history
        if asked and asked.decode("ascii") != history.epoch:
            # A position of another epoch: everything kept, after a notice.
            if self._readShared(p, topic, None, self.hubLimits.history, asked, seq):
                return
            entries = [
                hubwire.epochGone(asked),
                *(
                    history.lastNumbered(topic, history.keep)
                    if p.sequenced
                    else history.last(topic, history.keep)
                ),
            ]
            answer = hubwire.historyAnswer(
                len(entries) - 1, history.lastSeq(topic), seq, history.epoch.encode()
            )
            p.replay(entries, answer)
            return
        if self._readShared(p, topic, seq, self.hubLimits.history):
            return
        entries, first, gap = history.replaySince(topic, seq, p.sequenced)
        last = history.lastSeq(topic)
        if gap:
            entries = [hubwire.gap(topic, first), *entries]
        answer = hubwire.historyAnswer(
            len(entries) - gap, last, seq, history.epoch.encode("ascii")
        )
        p.replay(entries, answer)

    def _readShared(
        self,
        p: PubSubProtocol,
        topic: bytes,
        since: int | None,
        count: int,
        goneEpoch: bytes = b"",
        asked: int = 0,
    ) -> bool:
        """
        With a shared history, answer C{/history} from Redis: the C{count}
        last lines of C{topic} (C{since} L{None}) or those numbered after
        C{since}; what C{p} sends meanwhile waits.  If Redis does not
        answer in time, or fails, the lines kept here are replayed.

        @param goneEpoch: The epoch of a position that is gone: its notice
            comes first.
        @param asked: The number of that position.
        @return: Whether the answer comes from Redis (else the caller
            answers from what is kept here).
        """
        backplane: Any = self.backplane
        history = self.history
        if (
            not isinstance(history, SharedHistory)
            or not count
            or backplane is None
            or self._historyLocal
        ):
            return False
        d = backplane.read(topic, since, count)
        if d is None:
            return False
        p.checking(d)

        def answered(answer: Any) -> None:
            if p.gone:
                return
            entries = history.fromRedis(topic, answer.entries, p.sequenced)
            first = answer.entries[0].seq if answer.entries else answer.last + 1
            last = answer.last
            epoch = answer.epoch or history.epoch.encode("ascii")
            notices = []
            if goneEpoch:
                notices.append(hubwire.epochGone(goneEpoch))
            elif since is not None and (since + 1 < first or since > last):
                notices.append(hubwire.gap(topic, first))
            if since is None and not goneEpoch:
                final = hubwire.historyAnswer(len(entries), last)
            else:
                final = hubwire.historyAnswer(
                    len(entries), last, asked if since is None else since, epoch
                )
            p.replay([*notices, *entries], final)
            p.checked()

        def failed(failure: Any) -> None:
            self._hubLog.emit(
                "history-read",
                LogLevel.warn,
                "{service}: reading the shared history of {topic} failed "
                "({why}); answered from this hub's",
                event="history_read_failed",
                service=self.serviceName,
                topic=topic.decode("ascii", "replace"),
                why=failure.getErrorMessage(),
            )
            if p.gone:
                return
            self._historyLocal = True
            try:
                if goneEpoch or since is None:
                    words = [b"%d" % count, topic]
                    if goneEpoch:
                        words = [b"since", b"%d@%s" % (asked, goneEpoch), topic]
                    self.cmd_history(p, b" ".join(words))
                else:
                    self._historySince(p, [b"%d" % since, topic])
            finally:
                self._historyLocal = False
            p.checked()

        d.addCallbacks(answered, failed)
        return True

    def cmd_echo(self, p: PubSubProtocol, arg: bytes) -> None:
        """
        C{/echo on|off}: whether to get one's own lines back.
        """
        value = arg.lower()
        if value not in (b"on", b"off"):
            self.error(p, "usage", hubwire.usage(b"/echo on|off"))
            return
        p.echo = value == b"on"
        p.reply(hubwire.ok(b"echo " + value))

    def cmd_seq(self, p: PubSubProtocol, arg: bytes) -> None:
        """
        C{/seq on|off}: whether to get each delivered line with its topic's
        sequence number (C{#SEQ LINE}); the answer to C{on} names the
        epoch.
        """
        value = arg.lower()
        if value not in (b"on", b"off"):
            self.error(p, "usage", hubwire.usage(b"/seq on|off"))
            return
        p.sequenced = value == b"on"
        if p.sequenced:
            if p in self.clients:
                # Not one that left (the rest of its last read).
                self.sequenced.add(p)
            epoch = self.history.epoch.encode("ascii")
            p.reply(hubwire.ok(b"seq on, epoch " + epoch))
        else:
            self.sequenced.discard(p)
            p.reply(hubwire.ok(b"seq off"))

    def cmd_ping(self, p: PubSubProtocol, arg: bytes) -> None:
        """
        C{/ping}: answer a pong.
        """
        p.reply(hubwire.ok(b"pong"))

    def cmd_quit(self, p: PubSubProtocol, arg: bytes) -> None:
        """
        C{/quit}: say goodbye and close.
        """
        p.closeWith("quit", hubwire.BYE)


class HubService(StreamService):
    """
    The hub's listeners: a L{StreamService} whose TCP listeners accept at
    most L{ACCEPTS_PER_TURN} connections per reactor turn.  With accounts
    (C{--hub-auth}), the first plain-TCP listener on an address other than
    loopback is warned of, once: passwords would cross the network in
    clear text.
    """

    factory: PubSubFactory
    _warned = False
    _log = Logger()

    def listened(self, port: IListeningPort, description: str) -> None:
        capAccepts(port, ACCEPTS_PER_TURN)
        super().listened(port, description)
        if self.factory.auth is not None and not self._warned:
            self._checkPlaintext(port, description)

    def _checkPlaintext(self, port: IListeningPort, description: str) -> None:
        """
        Warn once if C{port} is plain TCP on an address other than
        loopback.
        """
        from twisted.internet.address import IPv4Address, IPv6Address
        from twisted.protocols.tls import TLSMemoryBIOFactory

        from netdemo.hubauth import isLoopback

        address = port.getHost()
        if not isinstance(address, (IPv4Address, IPv6Address)):
            return
        wrapped = getattr(port, "factory", None)
        if description.lstrip().startswith("ssl:") or isinstance(
            wrapped, TLSMemoryBIOFactory
        ):
            return
        if isLoopback(address.host):
            return
        self._warned = True
        self._log.warn(
            "{service}: --hub-auth with a plain-TCP listener on {address}: "
            "passwords and tokens sent with /login cross the network in clear "
            "text; listen on loopback, or use TLS (docs/security.md)",
            event="hub_auth_plaintext",
            service=self.name,
            address=formatAddress(address),
        )


def buildPubSubService(
    descriptions: Iterable[str],
    limits: ConnectionLimits,
    hubLimits: HubLimits,
    metrics: IMetrics,
    reactor: IReactorTime,
    backplane: IBackplane | None = None,
    auth: AccountsFile | None = None,
) -> StreamService:
    """
    Build the pub/sub hub: one listener per endpoint description, all
    sharing one hub.

    @param descriptions: Server endpoint descriptions (C{tcp:8008}, ...).
    @param limits: The connection limits.
    @param hubLimits: The hub's own limits and policies.
    @param metrics: Where to report.
    @param reactor: The reactor to listen with and to time with.
    @param backplane: The backplane joining this hub to others, if any.
    @param auth: The accounts file (C{--hub-auth}), if any.
    """
    factory = PubSubFactory(
        SERVICE_NAME, limits, hubLimits, metrics, reactor, backplane, auth
    )
    return HubService(SERVICE_NAME, factory, descriptions, reactor)
