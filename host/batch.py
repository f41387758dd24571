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


class BoardWorker:
    """The body of one Ray actor: one board, its transport and its loaded model.

    ``spec.binary``: start that simulated board (a child process of this actor, stopped with
    it); else open ``spec.url``. The model is loaded in the constructor, so :meth:`ready`
    returns once the board can take images."""

    def __init__(self, spec: DeviceSpec, network, compressed, options: dict):
        from host.driver import Device
        from host.simulated import BoardProcess

        self.spec = spec
        self.board = None
        self.device = None
        self.lock = threading.Lock()
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
        }

    def classify(self, index: int, path: str) -> dict:
        """``{"ok": True, "result": ...}``, or ``{"ok": False, "error": ..., "board_ok": ...}``:
        ``board_ok`` False when the board itself is gone (its process ended, or it does not
        answer IDENTIFY), so the driver can tell a dead board from an image that failed."""
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
    busy: int | None = None  # the image index in flight


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
) -> BatchReport:
    """Classify ``images`` over ``devices``, one Ray actor each; ``options`` are the keyword
    arguments of the per-image work (``weights_mode``, ``mode``, ``baud``). ``on_result(result,
    bar, boards)`` is called in input order as soon as every earlier result is known."""
    start = time.perf_counter()
    boards: list[BoardState] = []
    results: list[dict | None] = [None] * len(images)
    finished: list[float | None] = [None] * len(images)
    ray = None
    try:
        ray = _start_ray(ray_address, len(devices))
        worker = ray.remote(num_cpus=1, max_concurrency=2, max_restarts=0)(BoardWorker)
        shared = (ray.put(network), ray.put(compressed))
        boards = [BoardState(spec, worker.remote(spec, *shared, options)) for spec in devices]
        ready_s, first_s = _schedule(
            ray, images, boards, results, finished, progress, on_result, start
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


def _schedule(ray, images, boards, results, finished, progress, on_result, start):
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

    def feed(board: BoardState) -> None:
        nonlocal first_s
        for index in list(pending):
            if board.spec.name not in tried.get(index, {}):
                pending.remove(index)
                board.busy = index
                first_s = first_s or time.perf_counter() - start
                inflight[board.actor.classify.remote(index, str(images[index]))] = (board, index)
                return

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
            board.busy = None
            try:
                answer = ray.get(ref)
            except RayActorError as exc:
                answer = {"ok": False, "error": _actor_death(exc), "board_ok": False}
            if index is None:  # the board's ready() call
                if answer.get("ok", True):
                    board.info, board.ready = answer, True
                    ready_s = time.perf_counter() - start
                else:
                    board.failed = f"did not start: {answer['error']}"
            elif answer["ok"]:
                results[index] = answer["result"]
                finished[index] = time.perf_counter() - start
                board.done += 1
                bar.update(1)
            elif answer["board_ok"]:  # the board is fine: the image failed there
                tried.setdefault(index, {})[board.spec.name] = answer["error"]
                pending.appendleft(index)
            else:  # the board died with this image: it goes back first in line
                board.failed = f"failed during {images[index]}: {answer['error']}"
                pending.appendleft(index)
            if board.failed:
                _stop_board(ray, board)
            if bar is not None:
                bar.set_postfix_str(_counts(boards), refresh=False)
        settle()
        for board in boards:
            if board.ready and not board.failed and board.busy is None:
                feed(board)
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
