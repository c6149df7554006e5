"""The sampler's local index (uniform draws, updates under eviction, quarantined episodes) and the RESP reader,
without Redis."""

from __future__ import annotations

import socket
import threading

import numpy as np
import pytest

from replay.errors import MESSAGE_LIMIT, REDIS_DOWN, ReplayConnectionError, ReplayEmptyError
from replay.index import QUARANTINED, ChunkIndex
from replay.server import Address
from replay.wire import RespConnection, RespError, _pack


def test_draws_are_exactly_uniform_over_valid_starts():
    index = ChunkIndex(head=5, steps=np.array([1, 4, 9, 2]))  # frames 2, 5, 10, 3
    length = 3
    assert index.starts(length).tolist() == [0, 3, 8, 1] and index.total_starts(length) == 12
    seqs, starts = index.draw(120_000, length, np.random.default_rng(0))
    assert set(seqs.tolist()) == {6, 7, 8}  # episode 5 (2 frames) has no chunk of 3
    cells, counts = np.unique(np.stack([seqs, starts]), axis=1, return_counts=True)
    valid = {(6, k) for k in range(3)} | {(7, k) for k in range(8)} | {(8, 0)}
    assert {tuple(c) for c in cells.T.tolist()} == valid
    assert np.abs(counts / 10_000 - 1).max() < 0.06


def test_updates_follow_appends_and_evictions():
    index = ChunkIndex()
    assert index.tail == 0 and len(index) == 0
    index = index.updated(head=1, tail=3, first=1, new_steps=[4, 5, 6])
    assert (index.head, index.tail, index.steps.tolist()) == (1, 3, [4, 5, 6])
    index = index.updated(head=3, tail=5, first=4, new_steps=[7, 8])  # 1, 2 evicted; 4, 5 added
    assert (index.head, index.tail, index.steps.tolist()) == (3, 5, [6, 7, 8])
    index = index.updated(head=9, tail=10, first=9, new_steps=[1, 2])  # everything known evicted
    assert (index.head, index.steps.tolist()) == (9, [1, 2])
    assert index.updated(head=9, tail=10, first=11, new_steps=[]) is index
    with pytest.raises(ValueError, match="inconsistent index update"):
        index.updated(head=9, tail=12, first=12, new_steps=[3])  # skips 11


def test_empty_index_explains():
    with pytest.raises(ReplayEmptyError, match="no chunk of 4 frames: 2 episode\\(s\\), the longest with 3 frames"):
        ChunkIndex(1, np.array([1, 2])).draw(1, 4, np.random.default_rng(0))


def test_quarantined_episodes_have_no_starts_and_are_never_drawn():
    index = ChunkIndex(head=3, steps=np.array([4, QUARANTINED, 2, QUARANTINED]))
    assert index.starts(1).tolist() == [5, 0, 3, 0] and index.live == 2 and len(index) == 4
    seqs, _ = index.draw(10_000, 2, np.random.default_rng(1))
    assert set(seqs.tolist()) == {3, 5}
    assert index.steps_of(np.array([5, 3])).tolist() == [2, 4]
    with pytest.raises(ReplayEmptyError, match="holds no episode yet"):
        ChunkIndex(1, np.array([QUARANTINED, QUARANTINED])).draw(1, 1, np.random.default_rng(0))
    with pytest.raises(ReplayEmptyError, match="no chunk of 6 frames: 2 episode"):
        index.draw(1, 6, np.random.default_rng(0))


def serve(replies: bytes, chunk: int) -> Address:
    """A one-shot server on a Unix socket pair that answers with ``replies``, ``chunk`` bytes at a time."""
    ours, theirs = socket.socketpair()

    def run():
        theirs.recv(1 << 16)
        for i in range(0, len(replies), chunk):
            theirs.sendall(replies[i:i + chunk])
        theirs.close()

    threading.Thread(target=run, daemon=True).start()
    return ours


@pytest.mark.parametrize("chunk", [1, 7, 1 << 20])
def test_resp_reader_handles_every_reply_type_and_split_reads(chunk):
    big = bytes(range(256)) * 160  # 40 KiB: more than half the read buffer, so it goes straight to the sink
    replies = (b"$5\r\nhello\r\n" + b"$%d\r\n" % len(big) + big + b"\r\n" + b"$3\r\nabc\r\n" + b"$0\r\n\r\n"
               + b":42\r\n+OK\r\n-ERR nope\r\n$-1\r\n*2\r\n:1\r\n*1\r\n$1\r\nx\r\n")
    connection = RespConnection(Address(path="unused"))
    connection._sock = serve(replies, chunk)  # a connected socket, as after login
    small, large = bytearray(5), bytearray(len(big))
    got = connection.pipeline([("GET", "k")] * 9, [memoryview(small), memoryview(large), memoryview(bytearray(4)),
                                                   None, None, None, None, None, None])
    assert got[:2] == [True, True] and bytes(small) == b"hello" and bytes(large) == big
    assert got[2] == b"abc"  # size differs from the sink: returned as bytes
    assert got[3:5] == [b"", 42] and got[5] == "OK"
    assert isinstance(got[6], RespError) and str(got[6]) == "ERR nope"
    assert got[7] is None and got[8] == [1, [b"x"]]


def test_resp_reader_reports_a_dropped_connection():
    connection = RespConnection(Address(path="unused"))
    connection._sock = serve(b"$10\r\nabc", 100)
    with pytest.raises(ReplayConnectionError, match="closed the connection"):
        connection.call("GET", "k")
    assert not connection.connected


def test_pack_is_resp():
    assert _pack([("SET", b"k", 12)]) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n12\r\n"
    with pytest.raises(TypeError):
        _pack([("SET", 1.5)])


@pytest.mark.parametrize("reply", [b"-LOADING Redis is loading the dataset in memory\r\n",
                                   b"-BUSY Redis is busy running a script. You can only call SCRIPT KILL\r\n"])
def test_a_server_that_is_not_ready_raises_a_retryable_error(reply):
    connection = RespConnection(Address(path="unused"))
    connection._sock = serve(reply, 100)
    with pytest.raises(ReplayConnectionError, match="is not ready.*wait and retry") as info:
        connection.call("EVALSHA", "abc", 0)
    assert isinstance(info.value, REDIS_DOWN) and len(str(info.value)) <= MESSAGE_LIMIT
    connection._sock = serve(b"$1\r\nx\r\n" + reply, 100)  # in a pipeline too, after the replies are read
    with pytest.raises(ReplayConnectionError, match="is not ready"):
        connection.pipeline([("GET", "k"), ("GET", "k")])
    connection._sock = serve(b"-ERR something else\r\n", 100)
    with pytest.raises(RespError, match="ERR something else"):  # other errors stay errors
        connection.call("GET", "k")


def test_callbacks_run_as_each_reply_arrives():
    big = bytes(range(256)) * 200
    connection = RespConnection(Address(path="unused"))
    connection._sock = serve(b"$3\r\nabc\r\n" + b"$%d\r\n" % len(big) + big + b"\r\n" + b":7\r\n", 1000)
    sink = bytearray(len(big))
    seen = []
    got = connection.pipeline([("GET", "a"), ("GET", "b"), ("INCR", "c")], [None, memoryview(sink), None],
                              [lambda reply: seen.append(("a", reply)),
                               lambda reply: seen.append(("b", reply, bytes(sink) == big)), None])
    assert seen == [("a", b"abc"), ("b", True, True)] and got == [b"abc", True, 7]

    connection._sock = serve(b"$1\r\nx\r\n$1\r\ny\r\n", 100)

    def fail(reply):
        raise KeyError("from the callback")

    with pytest.raises(KeyError, match="from the callback"):
        connection.pipeline([("GET", "a"), ("GET", "b")], callbacks=[fail, None])
    assert not connection.connected  # the second reply is unread: the stream position is lost
