"""A board's stream in host.batch.BoardWorker, without Ray or a board: the actor's calls arrive
in any order and the stream takes them in the driver's; an image's answer comes once the next
one has started, or once the driver drains the board; a broken stream charges the image it
broke on and hands the other back; a board that is gone fails everything at once.

A fake session stands for ``host.classify.Session``: its ``stream`` follows
``Device.run_resident_many``'s order (write x_i, then answer x_{i-1}; the last one at the end).
tests/e2e/test_batch.py runs the real thing on simulated boards."""

from __future__ import annotations

import threading
import time

import pytest

from host.batch import BoardWorker, DeviceSpec


class FakeSession:
    mode = "resident"

    def __init__(self, fail_writing: str = ""):
        self.fail_writing = fail_writing
        self.log: list[str] = []

    def prepare(self, path: str) -> str:
        if path.startswith("bad"):
            raise ValueError(f"{path} is no image")
        return path

    def stream(self, inputs):
        previous = None
        for x in inputs:
            if x == self.fail_writing:
                raise ConnectionError(f"link broke writing {x}")
            self.log.append(f"write {x}")
            if previous is not None:
                yield f"logits {previous}", {}
            previous = x
        if previous is not None:
            yield f"logits {previous}", {}

    def resident_result(self, path, x, sums, stats, wall) -> dict:
        return {"image": path, "sums": sums}


class FakeDevice:
    def __init__(self, answers: bool = True):
        self.answers = answers

    def identify(self):
        if not self.answers:
            raise ConnectionError("no answer")

    def close(self) -> None:
        pass


def worker(session: FakeSession, answers: bool = True) -> BoardWorker:
    w = BoardWorker.__new__(BoardWorker)  # no board, no Ray: the stream alone
    w.spec, w.board, w.device, w.session = DeviceSpec("fake"), None, FakeDevice(answers), session
    w._init_stream()
    w._start_stream()
    return w


class Call(threading.Thread):
    """``worker.classify(...)`` in a thread of its own, as Ray's threaded actor runs it."""

    def __init__(self, w: BoardWorker, index: int, path: str, seq: int):
        super().__init__(daemon=True)
        self.args, self.w, self.answer = (index, path, seq), w, None
        self.start()

    def run(self) -> None:
        self.answer = self.w.classify(*self.args)

    def result(self) -> dict:
        self.join(timeout=5)
        assert not self.is_alive(), f"classify{self.args} still waits"
        return self.answer


def waits(call: Call) -> bool:
    call.join(timeout=0.3)
    return call.is_alive()


def test_calls_stream_in_the_drivers_order_and_drain_ends_the_stream():
    session = FakeSession()
    w = worker(session)
    b = Call(w, 7, "b", seq=1)  # Ray's threads may deliver the second call first
    assert waits(b) and session.log == []
    a = Call(w, 6, "a", seq=0)
    # a's answer comes once b has been written (the device computes b meanwhile)
    assert a.result()["result"] | {"board_wall_s": 0} == {
        "image": "a",
        "sums": "logits a",
        "board": "fake",
        "board_wall_s": 0,
        "stream": 0,
        "stream_position": 0,
    }
    assert session.log == ["write a", "write b"]
    assert waits(b)  # no next image and no drain: b's stream waits for one
    w.drain(2)
    assert b.result()["result"]["sums"] == "logits b"
    assert (b.answer["result"]["stream"], b.answer["result"]["stream_position"]) == (0, 1)
    c = Call(w, 8, "c", seq=2)  # a later image starts a new stream
    assert waits(c)
    w.drain(3)
    assert (c.result()["result"]["stream"], c.answer["result"]["stream_position"]) == (1, 0)
    w.stop()


def test_a_drain_before_the_calls_it_counts_arrive():
    w = worker(FakeSession())
    w.drain(2)  # Ray may run drain() before the two classify calls it counts
    a, b = Call(w, 0, "a", seq=0), Call(w, 1, "b", seq=1)
    assert [a.result()["ok"], b.result()["ok"]] == [True, True]
    assert [a.answer["result"]["stream_position"], b.answer["result"]["stream_position"]] == [0, 1]
    w.stop()


def test_a_bad_image_fails_alone_and_the_stream_goes_on():
    w = worker(FakeSession())
    bad, a = Call(w, 0, "bad.jpg", seq=0), Call(w, 1, "a", seq=1)
    answer = bad.result()
    assert answer["ok"] is False and answer["board_ok"] and answer["charged"]
    assert "no image" in answer["error"]
    w.drain(2)
    assert a.result()["result"]["sums"] == "logits a"
    w.stop()


@pytest.mark.parametrize("answers", [True, False], ids=["board answers", "board gone"])
def test_a_broken_stream(answers):
    """The link breaks writing b while a computes: a (the older) is charged with the error, b
    goes back uncharged. A board that still answers streams on; one that is gone fails every
    later image at once."""
    w = worker(FakeSession(fail_writing="b"), answers=answers)
    a, b = Call(w, 0, "a", seq=0), Call(w, 1, "b", seq=1)
    first, second = a.result(), b.result()
    assert not first["ok"] and not second["ok"]
    assert "link broke writing b" in first["error"]
    assert (first["charged"], second["charged"]) == (True, False)
    assert first["board_ok"] is answers and second["board_ok"] is answers
    c = Call(w, 2, "c", seq=2)
    if answers:
        w.drain(3)
        assert c.result()["ok"] and c.answer["result"]["stream"] == 1
    else:
        answer = c.result()
        assert not answer["ok"] and not answer["board_ok"] and "board gone" in answer["error"]
    w.stop()


def test_stop_fails_the_images_a_board_holds():
    w = worker(FakeSession())
    b = Call(w, 1, "b", seq=1)  # waits for seq 0, which never comes
    assert waits(b)
    start = time.monotonic()
    w.stop()
    answer = b.result()
    assert not answer["ok"] and not answer["board_ok"] and time.monotonic() - start < 2
