"""
A model-based test of the hub: hypothesis drives connects, subscriptions,
publications, stalls, resumes and disconnects against an in-memory hub and
checks every client's output against a simple model.
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
)
from twisted.trial.unittest import SynchronousTestCase

from netdemo.hubwire import DEFAULT_TOPIC, patternMatches
from netdemo.limits import HubLimits
from tests.pubsubhelpers import FakeClient, FakeHub

TOPICS = [DEFAULT_TOPIC, b"a.b", b"a.c", b"x.b", b"a.b.c"]
PATTERNS = [DEFAULT_TOPIC, b"a.*", b"a.>", b"a.b", b"*.b", b">"]
TEXT = st.from_regex(rb"[a-z0-9][a-z0-9 .]{0,30}", fullmatch=True).filter(
    lambda t: t != b"close"
)


class Model:
    """
    What one client should have received.

    @ivar expected: The relayed lines it should have, in order.
    @ivar stalled: Whether its transport is paused now.
    @ivar left: Whether the connection is closed, by either side.
    @ivar closedByHub: Whether the hub closed it.
    @ivar stalledWhenClosed: Whether it was stalled when the hub closed it.
    """

    def __init__(self, client: FakeClient) -> None:
        self.client = client
        self.patterns = {DEFAULT_TOPIC}
        self.expected: list[bytes] = []
        self.stalled = False
        self.left = False
        self.closedByHub = False
        self.stalledWhenClosed = False


def relayed(client: FakeClient) -> list[bytes]:
    """
    The relayed lines a client received (command answers left out).
    """
    return [line for line in client.received() if line.startswith((b"<", b"["))]


class HubMachine(RuleBasedStateMachine):
    """
    Clients come and go, subscribe, publish and stall.  Every live client
    that is not stalled has received exactly the model's lines; the hub
    only ever disconnects stalled clients, and a disconnected client got a
    prefix of its lines.
    """

    clients = Bundle("clients")

    def __init__(self) -> None:
        super().__init__()
        self.hub = FakeHub(
            HubLimits(presence=False, maxPending=600, writeDeadline=0, history=0)
        )
        self.models: list[Model] = []

    def teardown(self) -> None:
        self.hub.stop()

    def noteClosures(self) -> None:
        """
        Record the clients that the hub closed during the last action.
        """
        for model in self.models:
            if model.client.closed and not model.left:
                model.left = model.closedByHub = True
                model.stalledWhenClosed = model.stalled

    @rule(target=clients)
    def connect(self) -> Model:
        """
        A client connects.
        """
        model = Model(self.hub.connect())
        self.models.append(model)
        return model

    @rule(model=clients, pattern=st.sampled_from(PATTERNS))
    def subscribe(self, model: Model, pattern: bytes) -> None:
        """
        A client subscribes to a pattern.
        """
        if not model.client.closed:
            model.client.send(b"/sub " + pattern + b"\n")
            model.patterns.add(pattern)
        self.noteClosures()

    @rule(model=clients, pattern=st.sampled_from(PATTERNS))
    def unsubscribe(self, model: Model, pattern: bytes) -> None:
        """
        A client unsubscribes (possibly from something it never had).
        """
        if not model.client.closed:
            model.client.send(b"/unsub " + pattern + b"\n")
            model.patterns.discard(pattern)
        self.noteClosures()

    @rule(
        model=clients,
        topic=st.sampled_from(TOPICS),
        texts=st.lists(TEXT, min_size=1, max_size=8),
        cut=st.integers(0, 400),
    )
    def publish(self, model: Model, topic: bytes, texts: list[bytes], cut: int) -> None:
        """
        A client publishes lines to a topic, in two reads cut anywhere.
        """
        sender = model.client
        if sender.closed:
            return
        if topic == DEFAULT_TOPIC:
            data = b"".join(t + b"\n" for t in texts)
            prefix = b"<" + sender.identity + b"> "
        else:
            data = b"".join(b"/pub " + topic + b" " + t + b"\n" for t in texts)
            prefix = b"[" + topic + b"] <" + sender.identity + b"> "
        tokens = topic.split(b".")
        for other in self.models:
            if other is model or other.left:
                continue
            if any(patternMatches(p.split(b"."), tokens) for p in other.patterns):
                other.expected.extend(prefix + t for t in texts)
        cut %= len(data) + 1
        sender.send(data[:cut])
        sender.send(data[cut:])
        self.noteClosures()

    @rule(model=clients)
    def stall(self, model: Model) -> None:
        """
        A client stops reading: its transport pauses the hub's writes.
        """
        if not model.client.closed and not model.stalled:
            model.client.protocol.pauseProducing()
            model.stalled = True

    @rule(model=clients)
    def resume(self, model: Model) -> None:
        """
        A stalled client catches up: its transport resumes.
        """
        if not model.client.closed and model.stalled:
            model.client.protocol.resumeProducing()
            model.stalled = False
        self.noteClosures()

    @rule(model=consumes(clients))
    def disconnect(self, model: Model) -> None:
        """
        A client goes away.
        """
        if not model.client.closed:
            model.client.transport.loseConnection()
        model.left = True

    @invariant()
    def liveClientsGetTheirLines(self) -> None:
        """
        Live clients have exactly the model's lines; only stalled clients
        were disconnected by the hub, and they got a prefix.
        """
        for model in self.models:
            got = relayed(model.client)
            if not model.left:
                assert got == model.expected, (got, model.expected)
            elif model.closedByHub:
                assert model.stalledWhenClosed
                assert got == model.expected[: len(got)]


HubMachine.TestCase.settings = settings(
    max_examples=80, stateful_step_count=40, deadline=None
)
TestHubModel = HubMachine.TestCase


class ResumeModelTests(SynchronousTestCase):
    """
    A subscriber that leaves and comes back with C{/history since}, over
    interleavings of publishing, leaving and resuming.
    """

    @settings(max_examples=100, deadline=None)
    @given(
        st.integers(0, 4),
        st.lists(
            st.one_of(
                st.tuples(
                    st.just("pub"), st.sampled_from([b"a", b"b"]), st.integers(1, 5)
                ),
                st.tuples(st.just("leave"), st.just(b""), st.just(0)),
                st.tuples(st.just("resume"), st.just(b""), st.just(0)),
            ),
            max_size=30,
        ),
    )
    def test_noDuplicateNoSilentGap(
        self, keep: int, steps: list[tuple[str, bytes, int]]
    ) -> None:
        """
        Every line numbered on a topic reaches the subscriber exactly once,
        live or by a resume, unless the resume said there was a gap that
        covers it; numbers on a topic only grow.
        """
        hub = FakeHub(HubLimits(history=keep))
        self.addCleanup(hub.stop)
        publisher = hub.connect()
        published: dict[bytes, int] = {b"a": 0, b"b": 0}
        seen: dict[bytes, list[int]] = {b"a": [], b"b": []}
        excused: dict[bytes, set[int]] = {b"a": set(), b"b": set()}
        subscriber: FakeClient | None = None
        serial = 0

        def connect() -> FakeClient:
            client = hub.connect()
            client.send(b"/seq on\n/sub a\n/sub b\n")
            client.new()
            return client

        def read(client: FakeClient) -> None:
            for line in client.new():
                match = re.match(rb"#(\d+) \[(\w+)\] ", line)
                gap = re.match(rb"\* gap: history of (\w+) starts at seq (\d+)", line)
                if match is not None:
                    seen[match[2]].append(int(match[1]))
                elif gap is not None:
                    topic, first = gap[1], int(gap[2])
                    last = seen[topic][-1] if seen[topic] else 0
                    excused[topic].update(range(last + 1, first))

        subscriber = connect()
        for kind, topic, count in steps:
            if kind == "pub":
                lines = b"".join(
                    b"/pub %s %d\n" % (topic, serial + i) for i in range(count)
                )
                serial += count
                publisher.send(lines)
                published[topic] += count
                if subscriber is not None:
                    read(subscriber)
            elif kind == "leave" and subscriber is not None:
                subscriber.send(b"/quit\n")
                read(subscriber)
                subscriber = None
            elif kind == "resume" and subscriber is None:
                subscriber = connect()
                for t in (b"a", b"b"):
                    last = seen[t][-1] if seen[t] else 0
                    subscriber.send(b"/history since %d %s\n" % (last, t))
                read(subscriber)
        for t in (b"a", b"b"):
            numbers = seen[t]
            self.assertEqual(numbers, sorted(set(numbers)), t)
            expected = set(range(1, published[t] + 1))
            if subscriber is None:
                # Not connected at the end: what came after it left is
                # for its next resume.
                expected = {n for n in expected if n <= (numbers[-1] if numbers else 0)}
            self.assertEqual(expected - set(numbers) - excused[t], set(), t)
