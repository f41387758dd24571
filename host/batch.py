"""Batch inference over many boards with Ray: ``python -m host.infer PATH... --devices N|URL,...``.

``PATH`` may be an image, a folder (every file in it that Pillow opens, sorted) or a glob.
``--devices 4`` starts four simulated boards (``python -m sim.board build``, built once); a list
of URLs (``/dev/ttyUSB1,socket://HOST:PORT,pcie:///dev/xdma0``) uses those boards. One Ray actor
per board (:class:`BoardWorker`) opens the transport, loads the model once and classifies the
images it is given; the driver hands the next image to whichever board is free (not a fixed
split) and prints the results in input order as soon as every earlier one is done.

Failures: a board that dies or stops answering is marked failed, and its in-flight image goes to
another board; an image that fails on every live board is reported with its error and the others
still complete; the summary names every failed board. Ctrl-C stops every board and Ray itself.

Ray runs locally with a small footprint (one CPU per board, no dashboard) unless
``--ray-address`` names an existing cluster. ``ray`` is imported only here, inside
:func:`classify_batch`: without ``--devices`` the host never pays for it (``bench/startup.py``).
See docs/batch.md.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from fpga.spec.errors import UserError

#: seconds the driver waits for an actor to stop its board before killing the actor
STOP_TIMEOUT_S = 10.0
#: ``ray.init`` object store for a local run: the model and the results are a few MB
OBJECT_STORE_BYTES = 100 << 20
#: the niceness of a local run's actors and so of the simulated boards they start (Ray's own
#: default is 15, for background work)
WORKER_NICENESS = 0


class BatchError(UserError, ValueError):
    """A bad ``--devices`` / ``--csv`` / image path, or no board could be started."""


def add_arguments(parser) -> None:
    """The batch options of ``python -m host.infer`` (argparse ``parser``)."""
    parser.add_argument(
        "--devices",
        help="classify over many boards with Ray: N simulated boards, or a comma-separated list "
        "of device URLs (one Ray actor per board; images, folders and globs as PATHs)",
    )
    parser.add_argument(
        "--ray-address",
        help="with --devices: join this Ray cluster (default: start Ray locally, one CPU a board)",
    )
    parser.add_argument(
        "--csv",
        metavar="FILE",
        help="with --devices: also write the results to FILE (image, top-5, board, cycles, "
        "golden_match)",
    )


# -- what to run on ---------------------------------------------------------------------------


def expand_images(paths: list[str]) -> list[Path]:
    """Images in order: a file as given, a folder's image files (sorted by name), a glob's
    matches (sorted). Pillow's registered extensions say what an image file is; a path that
    names nothing is a :class:`BatchError`."""
    import glob

    from PIL import Image

    Image.init()
    extensions = {ext.lower() for ext in Image.registered_extensions()}
    images: list[Path] = []
    for spec in paths:
        path = Path(spec)
        if path.is_dir():
            found = sorted(
                p for p in path.iterdir() if p.is_file() and p.suffix.lower() in extensions
            )
            if not found:
                raise BatchError(f"folder {spec} holds no image files")
            images += found
        elif path.exists():
            images.append(path)
        elif glob.has_magic(spec):
            found = sorted(Path(p) for p in glob.glob(spec) if Path(p).is_file())
            if not found:
                raise BatchError(f"no file matches {spec!r}")
            images += found
        else:
            raise BatchError(f"no such image, folder or glob: {spec}")
    return images


@dataclass(frozen=True)
class DeviceSpec:
    """One board of the batch: a simulated one (``binary``, served on ``link``) or a device
    ``url`` (``board``: the registry's board that completes a ``udp://`` URL)."""

    name: str
    url: str = ""
    binary: str = ""
    baud: int | None = None
    link: str = "uart"
    board: str | None = None


def parse_devices(
    value: str, baud_for_url=None, binary=None, link: str = "uart", board: str | None = None
) -> list[DeviceSpec]:
    """``--devices``: a count of simulated boards on ``link`` (``binary()`` builds theirs, once)
    or URLs (``baud_for_url(url)`` gives a serial port's baud, ``board`` completes ``udp://``)."""
    value = value.strip()
    if value.isdigit():
        count = int(value)
        if count < 1:
            raise BatchError("--devices needs at least one board")
        path = str(binary()) if binary else ""
        return [DeviceSpec(f"sim{i}", binary=path, link=link) for i in range(count)]
    urls = [url.strip() for url in value.split(",")]
    if not all(urls):
        raise BatchError(f"--devices {value!r}: an empty URL in the list")
    if len(set(urls)) != len(urls):
        raise BatchError(f"--devices {value!r}: a board is listed twice")
    return [
        DeviceSpec(url, url=url, baud=baud_for_url(url) if baud_for_url else None, board=board)
        for url in urls
    ]


# -- one board ---------------------------------------------------------------------------------


#: images a streaming board holds: one computing while the next one's input is written (and
#: the last one's logits read); one image at a time is depth 1
STREAM_DEPTH = 2


class _Job:
    """One image a streaming board holds: its input, and the stream's answer for it."""

    def __init__(self, x):
        from concurrent.futures import Future

        self.x, self.answer = x, Future()


class BoardWorker:
    """The body of one Ray actor: one board, its transport and its loaded model.

    ``spec.binary``: start that simulated board (a child process of this actor, stopped with
    it); else open ``spec.url``. The model is loaded in the constructor, so :meth:`ready`
    returns once the board can take images.

    In resident mode the board **streams**: a thread of the actor (the only one that uses the
    link) runs ``Device.run_resident_many`` over the images as :meth:`classify` calls hand
    them in, so the next image's input is written and the last one's logits are read while the
    device computes. The driver keeps :data:`STREAM_DEPTH` images on a board and calls
    :meth:`drain` when it has nothing more for it, which lets the stream end (its last image's
    logits come back then). Each :meth:`classify` call preprocesses its image before and
    checks it against fpga.spec.golden after, in its own Ray thread: the host's work stays off
    the link's thread. Streamed mode (no DRAM) has no stream: one image at a time."""

    def __init__(self, spec: DeviceSpec, network, compressed, options: dict):
        from host.driver import Device
        from host.simulated import BoardProcess

        self.spec = spec
        self.board = None
        self.device = None
        self._init_stream()
        start = time.perf_counter()
        try:
            if spec.binary:
                self.board = BoardProcess(spec.binary, spec.link).start()
                self.url = self.board.url
                self.device = self.board.open_device()
            else:
                self.url = spec.url
                self.device = Device.open(spec.url, baud=spec.baud, board=spec.board)
            # IDENTIFY, compile and (resident mode) the model load, once per board
            from host.classify import Session

            self.session = Session(self.device, network, compressed, **options)
        except BaseException:
            self.stop(kill=True)
            raise
        self.load_s = time.perf_counter() - start
        self._start_stream()

    def _init_stream(self) -> None:
        self.lock = threading.Lock()
        # the stream's state, under ``self.cond``: the jobs handed in and not yet taken, by
        # the driver's sequence number (None: its image failed before the stream), the next
        # one the stream takes, the driver's count at its last drain, and why the board can
        # take no more (stopped, gone)
        self.cond = threading.Condition()
        self.jobs: dict[int, _Job | None] = {}
        self.next = self.drained = 0
        self.dead = ""
        self.streams = 0  # streams started (a new one after every drain that ended one)

    def _start_stream(self) -> None:
        """Once the session is there: the stream thread, in resident mode."""
        self.streaming = self.session.mode == "resident"
        if self.streaming:
            threading.Thread(target=self._run_streams, name="stream", daemon=True).start()

    def ready(self) -> dict:
        import socket

        info = self.device.info
        return {
            "name": self.spec.name,
            "url": self.url,
            "host": socket.gethostname(),
            "actor_pid": os.getpid(),
            "board_pid": self.board.process.pid if self.board else None,
            "pes": info.rows * info.cols,
            "load_s": self.load_s,
            "depth": STREAM_DEPTH if self.streaming else 1,
        }

    def classify(self, index: int, path: str, seq: int = 0) -> dict:
        """Image ``index`` at ``path``, the driver's ``seq``-th for this board (counting from 0:
        the stream takes them in that order, however Ray's threads deliver the calls).

        ``{"ok": True, "result": ...}``, or ``{"ok": False, "error": ..., "board_ok": ...,
        "charged": ...}``: ``board_ok`` False when the board itself is gone (its process ended,
        or it does not answer IDENTIFY), so the driver can tell a dead board from an image that
        failed; ``charged`` False for an image that failed only because the stream it was in
        broke on another image (the driver runs it again, anywhere)."""
        if not self.streaming:
            return self._classify_alone(path)
        start = time.perf_counter()
        job = None
        try:
            job = _Job(self.session.prepare(path))
        except Exception as exc:
            error = _describe(exc)
        with self.cond:
            self.jobs[seq] = job if not self.dead else None
            self.cond.notify_all()
            dead = self.dead
        if job is None:
            return {"ok": False, "error": error, "board_ok": not dead, "charged": True}
        if dead:
            return {"ok": False, "error": dead, "board_ok": False, "charged": False}
        outcome = job.answer.result()
        if not outcome["ok"]:
            return outcome
        with self.lock:  # the first result carries the model load (Session state)
            result = self.session.resident_result(path, job.x, *outcome["run"])
        result["board"] = self.spec.name
        result["board_wall_s"] = time.perf_counter() - start
        result["stream"], result["stream_position"] = outcome["stream"]
        return {"ok": True, "result": result}

    def drain(self, sent: int) -> None:
        """The driver has handed this board ``sent`` images in all and has no more for now:
        the stream ends after them (the last one's logits come back); a later image starts a
        new stream."""
        with self.cond:
            self.drained = max(self.drained, sent)
            self.cond.notify_all()

    def _take(self) -> _Job | None:
        """The next job in the driver's order, waiting for it; None when the stream ends: the
        driver drained everything it sent (or the board stopped). Under ``self.cond``."""
        while not self.dead:
            if self.next in self.jobs:
                job = self.jobs.pop(self.next)
                self.next += 1
                if job is not None:
                    return job
            elif self.next == self.drained:
                return None
            else:  # a call still on its way, or more to come before the next drain
                self.cond.wait()
        return None

    def _inputs(self, taken: deque):
        """The stream's inputs as :meth:`classify` hands them in (``taken``: those not yet
        answered)."""
        while True:
            with self.cond:
                job = self._take()
            if job is None:
                return
            taken.append(job)
            yield job.x

    def _run_streams(self) -> None:
        """The stream thread: one ``run_resident_many`` stream after another, as long as the
        driver keeps the board fed; every taken image gets its answer, in order."""
        while True:
            with self.cond:
                while self.next not in self.jobs and not self.dead:
                    self.cond.wait()
                if self.dead:
                    return
            taken: deque[_Job] = deque()
            stream, position = self.streams, 0
            self.streams += 1
            try:
                last = time.perf_counter()
                for sums, stats in self.session.stream(self._inputs(taken)):
                    # wall: since the previous image's logits came back (the first: the start)
                    now = time.perf_counter()
                    job = taken.popleft()
                    run = (sums, stats, now - last)
                    job.answer.set_result({"ok": True, "run": run, "stream": (stream, position)})
                    last, position = now, position + 1
                if taken:  # not expected: run_resident_many answers every input it took
                    raise RuntimeError("the stream ended without the last image's logits")
            except Exception as exc:
                self._stream_failed(taken, _describe(exc))

    def _stream_failed(self, taken: deque, error: str) -> None:
        """A stream broke: the oldest image it held is charged with ``error``, the other one
        goes back to the driver uncharged; a board that no longer answers takes nothing more."""
        board_ok = not self.dead and self._answers()
        with self.cond:
            if not board_ok:
                self.dead = self.dead or f"board gone: {error}"
                taken.extend(job for job in self.jobs.values() if job is not None)
                self.jobs.clear()
            self.cond.notify_all()
        for i, job in enumerate(taken):
            answer = {"ok": False, "error": error, "board_ok": board_ok, "charged": i == 0}
            job.answer.set_result(answer)

    def _classify_alone(self, path: str) -> dict:
        """Streamed mode: the whole image under the lock, nothing overlapped."""
        with self.lock:
            if self.device is None:
                return {"ok": False, "error": "board stopped", "board_ok": False}
            try:
                start = time.perf_counter()
                (result,) = self.session.classify([path], progress=False)
                result["board"] = self.spec.name
                result["board_wall_s"] = time.perf_counter() - start
                return {"ok": True, "result": result}
            except Exception as exc:
                return {"ok": False, "error": _describe(exc), "board_ok": self._answers()}

    def _answers(self) -> bool:
        if self.board is not None and self.board.process.poll() is not None:
            return False
        try:
            self.device.identify()
            return True
        except Exception:
            return False

    def stop(self, kill: bool = False) -> None:
        """Close the link and end the simulated board (at once with ``kill``: Ctrl-C, a failed
        board); safe to call twice and while :meth:`classify` runs (it then fails)."""
        with self.cond:
            self.dead = self.dead or "board stopped"
            waiting = [job for job in self.jobs.values() if job is not None]
            self.jobs.clear()
            self.cond.notify_all()
        for job in waiting:  # (the images the stream took fail with the link it used)
            job.answer.set_result(
                {"ok": False, "error": self.dead, "board_ok": False, "charged": False}
            )
        device, self.device = self.device, None
        if device is not None:
            with contextlib.suppress(Exception):
                device.close()
        board, self.board = self.board, None
        if board is not None:
            if kill:
                board.kill()
            else:
                board.stop()


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# -- the driver --------------------------------------------------------------------------------


@dataclass
class BoardState:
    spec: DeviceSpec
    actor: object
    info: dict = field(default_factory=dict)
    ready: bool = False
    failed: str = ""
    done: int = 0
    busy: set[int] = field(default_factory=set)  # the image indices in flight
    depth: int = 1  # how many it may hold (BoardWorker.ready: STREAM_DEPTH when it streams)
    sent: int = 0  # classify calls made to it
    drained: int = 0  # ``sent`` at its last drain() call


@dataclass
class BatchReport:
    """What :func:`classify_batch` returns: ``results`` in input order (a failed image is
    ``{"image", "error", "tried"}``), the boards, and the timings."""

    results: list[dict]
    boards: list[BoardState]
    wall_s: float
    ready_s: float  # from the start until the last board that came up was ready
    first_image_s: float  # when the first image was handed to a board
    finished_s: list[float | None]  # per image: when its result arrived (None: it failed)

    @property
    def failed_images(self) -> list[dict]:
        return [r for r in self.results if "error" in r]

    @property
    def mismatches(self) -> list[dict]:
        return [r for r in self.results if "error" not in r and not r["golden_match"]]


def _start_ray(address: str | None, boards: int):
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import logging

    import ray

    if address:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    else:
        ray.init(
            num_cpus=boards,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
            object_store_memory=OBJECT_STORE_BYTES,
            # Ray runs its workers at niceness 15, and a simulated board inherits its actor's:
            # on a busy machine a board then got ~2 % of a core and loading a model took
            # minutes (the boards are the work the user asked for, not background jobs)
            _system_config={"worker_niceness": WORKER_NICENESS},
        )
    return ray


def classify_batch(
    images: list[Path],
    devices: list[DeviceSpec],
    network,
    compressed,
    options: dict,
    ray_address: str | None = None,
    progress: bool = True,
    on_result=None,
    stream: bool = True,
) -> BatchReport:
    """Classify ``images`` over ``devices``, one Ray actor each; ``options`` are the keyword
    arguments of the per-image work (``weights_mode``, ``mode``, ``baud``). ``on_result(result,
    bar, boards)`` is called in input order as soon as every earlier result is known.
    ``stream``: each board in resident mode holds the next image while it computes one
    (:class:`BoardWorker`); False gives a board one image at a time (``bench/batch.py``)."""
    start = time.perf_counter()
    boards: list[BoardState] = []
    results: list[dict | None] = [None] * len(images)
    finished: list[float | None] = [None] * len(images)
    ray = None
    try:
        ray = _start_ray(ray_address, len(devices))
        # threads: the images it holds, ready(), drain() and stop() (which must get through
        # while images are in flight)
        worker = ray.remote(num_cpus=1, max_concurrency=STREAM_DEPTH + 4, max_restarts=0)(
            BoardWorker
        )
        shared = (ray.put(network), ray.put(compressed))
        boards = [BoardState(spec, worker.remote(spec, *shared, options)) for spec in devices]
        ready_s, first_s = _schedule(
            ray, images, boards, results, finished, progress, on_result, start, stream
        )
    except BaseException:  # Ctrl-C, or a bug: no polite stops, every board ends now
        _stop_all(ray, boards, at_once=True)
        raise
    _stop_all(ray, boards)
    if boards and not any(b.ready for b in boards):
        raise BatchError(
            "no board could be started: "
            + "; ".join(f"{b.spec.url or b.spec.name} {b.failed}" for b in boards)
        )
    wall = time.perf_counter() - start
    return BatchReport(results, boards, wall, ready_s, first_s, finished)


def _schedule(ray, images, boards, results, finished, progress, on_result, start, stream):
    """The driver loop: feed free boards, collect, requeue, report in order."""
    from ray.exceptions import RayActorError

    pending = deque(range(len(images)))
    tried: dict[int, dict[str, str]] = {}  # image -> {board: error} on boards that still answer
    inflight: dict = {}  # ObjectRef -> (board, image index or None for "ready")
    for board in boards:
        inflight[board.actor.ready.remote()] = (board, None)
    printed = 0
    ready_s = first_s = 0.0
    bar = _progress_bar(len(images), progress)

    def fail_image(index: int, error: str) -> None:
        results[index] = {"image": str(images[index]), "error": error, "tried": tried.get(index)}

    def emit() -> None:
        nonlocal printed
        while printed < len(results) and results[printed] is not None:
            if on_result:
                on_result(results[printed], bar, boards)
            printed += 1

    def requeue(index: int) -> None:
        """Back in line, in input order (the earliest image is the one printing waits for)."""
        pending.append(index)
        ordered = sorted(pending)
        pending.clear()
        pending.extend(ordered)

    def feed(board: BoardState, upto: int) -> None:
        nonlocal first_s
        while len(board.busy) < upto:
            index = next((i for i in pending if board.spec.name not in tried.get(i, {})), None)
            if index is None:
                return
            pending.remove(index)
            board.busy.add(index)
            first_s = first_s or time.perf_counter() - start
            call = board.actor.classify.remote(index, str(images[index]), board.sent)
            inflight[call] = (board, index)
            board.sent += 1

    def drain(board: BoardState) -> None:
        """A board that holds fewer images than it could, and gets no more (one at a time:
        after every image): its stream may end (else it would wait for a next image to overlap
        with). A full streaming board needs none: it answers one image once it has started the
        next."""
        room = len(board.busy) < board.depth or board.depth == 1
        if board.busy and room and board.drained != board.sent:
            board.drained = board.sent
            board.actor.drain.remote(board.sent)

    def settle() -> None:
        """Images that every live board has failed are final; with no board left, all are."""
        live = {b.spec.name for b in boards if not b.failed}
        for index in list(pending):
            errors = tried.get(index, {})
            if not live or live <= set(errors):
                pending.remove(index)
                if errors:
                    fail_image(index, "; ".join(f"{b}: {e}" for b, e in errors.items()))
                else:
                    fail_image(index, "no board left to run it (every board failed)")

    while inflight:
        done, _ = ray.wait(list(inflight), num_returns=1, timeout=0.5)
        for ref in done:
            board, index = inflight.pop(ref)
            board.busy.discard(index)
            try:
                answer = ray.get(ref)
            except RayActorError as exc:
                answer = {"ok": False, "error": _actor_death(exc), "board_ok": False}
            if index is None:  # the board's ready() call
                if answer.get("ok", True):
                    board.info, board.ready = answer, True
                    board.depth = answer.get("depth", 1) if stream else 1
                    ready_s = time.perf_counter() - start
                else:
                    board.failed = f"did not start: {answer['error']}"
            elif answer["ok"]:
                results[index] = answer["result"]
                finished[index] = time.perf_counter() - start
                board.done += 1
                bar.update(1)
            elif board.failed:  # another image the failed board held: run it elsewhere
                requeue(index)
            elif answer["board_ok"]:  # the board is fine: the image failed there
                if answer.get("charged", True):  # (not: its stream broke on another image)
                    tried.setdefault(index, {})[board.spec.name] = answer["error"]
                requeue(index)
            else:  # the board died with this image: it goes back first in line
                board.failed = f"failed during {images[index]}: {answer['error']}"
                requeue(index)
                _stop_board(ray, board)
            if bar is not None:
                bar.set_postfix_str(_counts(boards), refresh=False)
        settle()
        # every free board gets an image before any gets a second one
        live = [b for b in boards if b.ready and not b.failed]
        for level in range(1, max((b.depth for b in live), default=1) + 1):
            for board in live:
                feed(board, min(level, board.depth))
        for board in live:
            drain(board)
        emit()
    settle()
    emit()
    if bar is not None:
        bar.close()
    return ready_s, first_s


def _actor_death(exc) -> str:
    cause = getattr(exc, "cause", None) or getattr(exc, "error_msg", "") or exc
    text = str(cause).strip().splitlines()
    return text[-1] if text else type(exc).__name__


def _counts(boards) -> str:
    return " ".join(f"{b.spec.name}={b.done}{'(failed)' if b.failed else ''}" for b in boards)


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass

    def write(self, text: str) -> None:
        print(text, flush=True)


def _progress_bar(total: int, progress: bool):
    if not progress or not sys.stderr.isatty():
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit="img", file=sys.stderr, dynamic_ncols=True, desc="batch")


def _stop_board(ray, board: BoardState) -> None:
    """A failed board: end its simulated board, then its actor."""
    with contextlib.suppress(Exception):
        ray.get(board.actor.stop.remote(kill=True), timeout=STOP_TIMEOUT_S)
    with contextlib.suppress(Exception):
        ray.kill(board.actor, no_restart=True)


def _stop_all(ray, boards: list[BoardState], at_once: bool = False) -> None:
    """Stop every board and Ray, even on Ctrl-C (a second Ctrl-C waits for this).

    After a finished batch each actor first stops its board politely (up to
    :data:`STOP_TIMEOUT_S`). ``at_once`` (Ctrl-C, an error) skips that: an actor may still be in
    its constructor, loading the model, and would take a stop call only once that is done. Then
    the actors are killed (a simulated board exits when the actor that started it is gone,
    ``sim/board/harness.cpp``), a board process still alive on this host is killed by its PID,
    and Ray shuts down."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        ray = ray or sys.modules.get("ray")  # Ctrl-C inside ray.init: shut down what it started
        if ray is None:
            return
        if not at_once:
            refs = []
            for board in boards:
                with contextlib.suppress(Exception):
                    refs.append(board.actor.stop.remote(kill=True))
            with contextlib.suppress(Exception):
                ray.wait(refs, num_returns=len(refs), timeout=STOP_TIMEOUT_S)
        for board in boards:
            with contextlib.suppress(Exception):
                ray.kill(board.actor, no_restart=True)
        import socket

        here = socket.gethostname()
        for board in boards:
            pid = board.info.get("board_pid")
            if pid and board.info.get("host") == here:
                _kill_if_board(pid, board.spec.binary)
        ray.shutdown()
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)


def _kill_if_board(pid: int, binary: str) -> None:
    """SIGKILL ``pid`` if it is still the simulated board ``binary`` (not a reused PID)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return
    if command == binary:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _kill_descendants() -> None:
    """SIGKILL every process below this one (Linux ``/proc``; elsewhere nothing): what an
    interrupted ``ray.init`` had started before Ray knew of it. Only the CLI calls this: its
    process tree is the batch's own."""
    from host.simulated import proc_stat

    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        if fields := proc_stat(int(entry.name)):
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    todo, found = [os.getpid()], []
    while todo:
        for pid in children.get(todo.pop(), []):
            found.append(pid)
            todo.append(pid)
    for pid in found:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


# -- output ------------------------------------------------------------------------------------

#: the CSV's columns; ``rank{k}_index``/``_label``/``_prob`` for k = 1..5
CSV_COLUMNS = (
    ["image"]
    + [f"rank{k}_{what}" for k in range(1, 6) for what in ("index", "label", "prob")]
    + ["board", "cycles", "golden_match", "error"]
)


def csv_text(results: list[dict]) -> str:
    import csv

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in results:
        row = [r["image"]]
        for k in range(5):
            if "error" in r:
                row += ["", "", ""]
            else:
                entry = r["top5"][k]
                row += [entry["index"], entry["label"], f"{entry['prob']:.6f}"]
        if "error" in r:
            row += ["", "", "", r["error"]]
        else:
            row += [r["board"], r["cycles"], r["golden_match"], ""]
        writer.writerow(row)
    return out.getvalue()


def _print_one(result: dict, bar, boards: list[BoardState]) -> None:
    from host.classify import print_results

    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        if "error" in result:
            print(result["image"])
            print(f"  FAILED: {result['error']}")
        else:
            pes = next(b.info["pes"] for b in boards if b.spec.name == result["board"])
            print_results([result], pes)
            print(f"  board {result['board']}")
    bar.write(text.getvalue().rstrip("\n"))
    sys.stdout.flush()


def summary_lines(report: BatchReport) -> list[str]:
    done = [r for r in report.results if "error" not in r]
    steady = report.wall_s - report.first_image_s
    lines = [
        f"{len(done)} of {len(report.results)} images on {len(report.boards)} boards in "
        f"{report.wall_s:.1f} s ({len(done) / steady if steady > 0 and done else 0:.3f} images/s "
        f"from the first image, handed out at {report.first_image_s:.1f} s)",
        "per board: " + _counts(report.boards),
    ]
    for b in report.boards:
        if b.failed:
            where = b.info.get("url") or b.spec.url or "simulated"
            pid = f", pid {b.info['board_pid']}" if b.info.get("board_pid") else ""
            lines.append(f"FAILED board {b.spec.name} ({where}{pid}): {b.failed}")
    for r in report.failed_images:
        lines.append(f"FAILED image {r['image']}: {r['error']}")
    for r in report.mismatches:
        lines.append(f"MISMATCH with fpga.spec.golden: {r['image']} on board {r['board']}")
    return lines


def run(args, baud_for_serial) -> int:
    """``python -m host.infer PATH... --devices ...`` (``args`` parsed by host.infer with
    :func:`add_arguments`); exit code 0 when every image was classified bit-exact."""
    from fpga.spec.arch import check_variant
    from fpga.spec.graph import check_input_size
    from host.classify import load_network
    from host.simulated import build_binary

    if not args.devices:
        raise BatchError("--ray-address and --csv go with --devices N|URL,...")
    if args.device != "sim":
        raise BatchError("give the boards with --devices only (not --device as well)")
    check_variant(args.variant)
    check_input_size(args.size, "--size")
    images = expand_images(args.images)
    if args.csv and Path(args.csv).is_dir():
        raise BatchError(f"--csv {args.csv} is a folder: give a file name")

    def baud(url: str):
        return baud_for_serial(args)

    link = args.link or "uart"
    devices = parse_devices(
        args.devices, baud, lambda: build_binary(quiet=args.json, link=link), link, args.board
    )
    network, compressed = load_network(args)
    options = {"weights_mode": args.weights_mode, "mode": args.mode, "baud": baud_for_serial(args)}
    try:
        report = classify_batch(
            images,
            devices,
            network,
            compressed,
            options,
            ray_address=args.ray_address,
            progress=not args.no_progress,
            on_result=None if args.json else _print_one,
        )
    except KeyboardInterrupt:
        _kill_descendants()
        raise
    if args.csv:
        from fpga.spec.files import atomic_write

        atomic_write(args.csv, csv_text(report.results).encode())
    if args.json:
        print(json.dumps(report.results, indent=2))
    for line in summary_lines(report):
        print(line, file=sys.stderr if args.json else sys.stdout)
    ok = not report.failed_images and not report.mismatches
    return 0 if ok else 1
