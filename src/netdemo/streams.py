# -*- test-case-name: tests.test_streams,tests.test_streams_redis -*-
"""
History that every hub shares, on Redis Streams: the server-side scripts
and the reading of their answers, without I/O.

Under the backplane's prefix (C{PREFIX}, C{netdemo} by default) Redis holds:

  - C{PREFIX:meta}, a hash: C{epoch} (16 hexadecimal digits, made by the
    first hub that finds none) and C{seq:TOPIC} (the last sequence number
    given on each topic);
  - C{PREFIX:stream:TOPIC}, one stream per topic: entry C{SEQ-0} is line
    number SEQ of the topic, with the fields C{i} (who published it) and
    C{l} (the line), trimmed to about C{--history} entries (C{MAXLEN ~}).

L{PUBLISH_SCRIPT} numbers a batch of lines of one topic, appends them to
the topic's stream and publishes them on the backplane channel, all in one
step: the number a subscriber sees live is the one it can resume from, and
the order in which Redis ran the scripts is every hub's order.  The
published message is a hub message (L{netdemo.backplane}) whose header
carries the first number and the epoch: C{netdemo/2 NODE SEQ IDENTITY FIRST
EPOCH}.

If the epoch is missing (Redis restarted without persistence, C{FLUSHALL},
a replica that never had it), the script stores the new one it is given:
every hub then sees that the epoch changed, and positions of the old one
are refused as gone.  A topic whose counter is missing starts at 1 again and
its old stream, if any, is deleted.

Scripts are loaded (C{SCRIPT LOAD}) when the publishing connection is set
up and run by C{EVALSHA}; a Redis that answers C{NOSCRIPT} (it was
restarted, or C{SCRIPT FLUSH}) gets the script itself (C{EVAL}).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from attrs import frozen

from netdemo.hubwire import MAX_SEQ_DIGITS, escapeControls, isIdentity

__all__ = [
    "EPOCH_SCRIPT",
    "PUBLISH_SCRIPT",
    "READ_SCRIPT",
    "Entry",
    "ReadAnswer",
    "Script",
    "isEpoch",
    "metaKey",
    "parseReadAnswer",
    "seqField",
    "streamKey",
]

#: The longest epoch taken from Redis.
MAX_EPOCH = 64


class Script:
    """
    A Lua script, known by its SHA1.

    @ivar body: The script.
    @ivar sha: Its SHA1, as C{EVALSHA} wants it.
    """

    def __init__(self, body: str) -> None:
        self.body = body.encode("ascii")
        self.sha = hashlib.sha1(self.body).hexdigest().encode("ascii")

    def evalsha(self, keys: Sequence[bytes], args: Sequence[bytes]) -> list[Any]:
        """
        The arguments of C{EVALSHA} for C{keys} and C{args}.
        """
        return [b"EVALSHA", self.sha, len(keys), *keys, *args]

    def eval(self, keys: Sequence[bytes], args: Sequence[bytes]) -> list[Any]:
        """
        The arguments of C{EVAL} (the script itself) for C{keys} and
        C{args}.
        """
        return [b"EVAL", self.body, len(keys), *keys, *args]


#: KEYS: the meta hash, the topic's stream.  ARGV: the topic's counter
#: field, the stream's length (0: no stream), the channel, the message's
#: header up to its first number (with the trailing space), an epoch to
#: store if there is none, the identity, then the lines.  Returns the first
#: number and the epoch.  Only the lines that the stream keeps are added
#: (the last C{keep} of a batch), and the stream is trimmed once per batch,
#: at its last line: a third of the cost of trimming at every line.
PUBLISH_SCRIPT = Script(
    """
local meta, stream = KEYS[1], KEYS[2]
local n = #ARGV - 6
local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then
  epoch = ARGV[5]
  redis.call('HSET', meta, 'epoch', epoch)
end
local last = redis.call('HINCRBY', meta, ARGV[1], n)
local first = last - n + 1
local keep = tonumber(ARGV[2])
local text = tostring
if last >= 1e14 then
  text = function(k) return string.format('%d', k) end
end
if first == 1 then
  redis.call('DEL', stream)
end
if keep > 0 then
  local call, who, base = redis.call, ARGV[6], first - 1
  for i = math.max(n - keep + 1, 1), n - 1 do
    call('XADD', stream, text(base + i) .. '-0', 'i', who, 'l', ARGV[6 + i])
  end
  call('XADD', stream, 'MAXLEN', '~', keep, text(last) .. '-0',
    'i', who, 'l', ARGV[6 + n])
end
redis.call('PUBLISH', ARGV[3], ARGV[4] .. text(first) .. ' ' .. epoch .. '\\n'
  .. table.concat(ARGV, '\\n', 7))
return {first, epoch}
"""
)

#: KEYS: the meta hash, the topic's stream.  ARGV: the topic's counter
#: field, the first number wanted (C{-}: any), how many at most (the
#: newest).  Returns the epoch (or false), the topic's last number (or
#: false) and the entries, newest first.
READ_SCRIPT = Script(
    """
local meta, stream = KEYS[1], KEYS[2]
local epoch = redis.call('HGET', meta, 'epoch')
local last = redis.call('HGET', meta, ARGV[1])
local start = ARGV[2]
if start ~= '-' then
  start = start .. '-0'
end
local entries = redis.call('XREVRANGE', stream, '+', start, 'COUNT', ARGV[3])
return {epoch or false, last or false, entries}
"""
)

#: KEYS: the meta hash.  ARGV: an epoch to store if there is none.  Returns
#: the epoch.
EPOCH_SCRIPT = Script(
    """
redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1])
return redis.call('HGET', KEYS[1], 'epoch')
"""
)


def metaKey(prefix: bytes) -> bytes:
    """
    The key of the hash of epoch and counters under C{prefix}.
    """
    return prefix + b":meta"


def streamKey(prefix: bytes, topic: bytes) -> bytes:
    """
    The key of C{topic}'s stream under C{prefix}.
    """
    return prefix + b":stream:" + topic


def seqField(topic: bytes) -> bytes:
    """
    The field of the meta hash that counts C{topic}'s lines.
    """
    return b"seq:" + topic


def isEpoch(value: object) -> bool:
    """
    Whether C{value}, from Redis, is an epoch this hub takes: bytes of
    letters and digits, 1 to L{MAX_EPOCH} of them.
    """
    return (
        isinstance(value, bytes)
        and 0 < len(value) <= MAX_EPOCH
        and value.isascii()
        and value.isalnum()
    )


def _number(value: object) -> int | None:
    """
    A sequence number from Redis (bytes or an integer), or L{None}.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value >= 0 else None
    if isinstance(value, bytes) and value.isdigit() and len(value) <= MAX_SEQ_DIGITS:
        return int(value)
    return None


@frozen
class Entry:
    """
    One line of a topic's stream.

    @ivar seq: Its number.
    @ivar identity: Who published it.
    @ivar line: The line, control characters escaped.
    """

    seq: int
    identity: bytes
    line: bytes


@frozen
class ReadAnswer:
    """
    What L{READ_SCRIPT} answered, checked.

    @ivar epoch: The epoch (empty: Redis has none).
    @ivar last: The topic's last number (0: none given).
    @ivar entries: The lines, oldest first.
    @ivar bad: Entries left out (not a number, no identity, too long).
    """

    epoch: bytes
    last: int
    entries: list[Entry]
    bad: int = 0


def parseEntryId(value: object) -> int | None:
    """
    The sequence number of a stream entry's id (C{SEQ-0}), or L{None}.
    """
    if not isinstance(value, bytes):
        return None
    seq, dash, rest = value.partition(b"-")
    if not dash or rest != b"0":
        return None
    return _number(seq)


def parseReadAnswer(
    reply: object, maxLine: int, newestFirst: bool = True
) -> ReadAnswer:
    """
    Check L{READ_SCRIPT}'s answer: as untrusted as anything from Redis
    (anybody with access may C{XADD}).

    @param maxLine: Lines longer than this are left out.
    @param newestFirst: The entries came newest first (C{XREVRANGE}).
    @raise ValueError: The answer is not shaped as the script's.
    """
    if not isinstance(reply, list) or len(reply) != 3:
        raise ValueError("not an answer of the read script")
    rawEpoch, rawLast, rawEntries = reply
    epoch = rawEpoch if isEpoch(rawEpoch) else b""
    last = _number(rawLast) or 0
    if not isinstance(rawEntries, list):
        raise ValueError("not an answer of the read script")
    entries: list[Entry] = []
    bad = 0
    for item in rawEntries:
        entry = _entry(item, maxLine)
        if entry is None:
            bad += 1
        else:
            entries.append(entry)
    if newestFirst:
        entries.reverse()
    return ReadAnswer(epoch, last, entries, bad)


def _entry(item: object, maxLine: int) -> Entry | None:
    """
    One stream entry (C{[ID, [FIELD, VALUE, ...]]}) as an L{Entry}, or
    L{None} if it is not one of a hub's.
    """
    if not isinstance(item, list) or len(item) != 2:
        return None
    seq = parseEntryId(item[0])
    fields = item[1]
    if seq is None or not isinstance(fields, list) or len(fields) > 8:
        return None
    values = dict(zip(fields[::2], fields[1::2], strict=False))
    identity, line = values.get(b"i"), values.get(b"l")
    if (
        not isinstance(identity, bytes)
        or not isIdentity(identity)
        or not isinstance(line, bytes)
        or len(line) > maxLine
        or b"\n" in line
    ):
        return None
    return Entry(seq, identity, escapeControls(line))


def parsePublishAnswer(reply: object) -> tuple[int, bytes] | None:
    """
    L{PUBLISH_SCRIPT}'s answer: the first number and the epoch, or L{None}
    if it is not shaped so.
    """
    if not isinstance(reply, list) or len(reply) != 2:
        return None
    first = _number(reply[0])
    if first is None or first < 1 or not isEpoch(reply[1]):
        return None
    return first, reply[1]
