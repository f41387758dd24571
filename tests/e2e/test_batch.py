"""Batch inference over many simulated boards with Ray (host.batch, docs/batch.md).

v1.1 at 32 (the smallest input) as a 6-bit .sqz model, weights as Huffman streams (the smaller
DRAM image): loading it into a simulated board's DRAM takes ~15 s, an image ~5 s; the boards
share the 2 cores.
Processes are tracked by PID (with their start time, so a reused PID is not mistaken for a
survivor): every process the batch started — Ray's, the actors', the simulated boards' — must
be gone after success, failure and Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fpga.spec.image import bundled_photos
from host import batch
from host.batch import BatchError, DeviceSpec, classify_batch, expand_images, parse_devices

ROOT = Path(__file__).resolve().parents[2]
VARIANT, SIZE, WEIGHTS_MODE = "v1.1", 32, "huffman"
PHOTOS = ROOT / "fpga" / "data" / "photos"


# -- processes by PID ---------------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent PID, start time) of ``pid`` from /proc, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie has ended; only its exit status is left to collect
        return None
    return int(fields[1]), int(fields[19])


def descendants(root: int) -> set[tuple[int, int]]:
    """Every living process below ``root``, as (PID, start time)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))):
            children.setdefault(stat[0], []).append(int(entry.name))
    found, todo = set(), [root]
    while todo:
        for pid in children.get(todo.pop(), []):
            if stat := _stat(pid):
                found.add((pid, stat[1]))
                todo.append(pid)
    return found


def _command(pid: int, whole: bool = False) -> bytes:
    """The program a process runs (``whole``: with its arguments), b"" once it has ended."""
    try:
        line = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
    return line.replace(b"\0", b" ") if whole else line.split(b"\0")[0]


def alive(processes: set[tuple[int, int]]) -> set[tuple[int, int]]:
    return {(pid, start) for pid, start in processes if (s := _stat(pid)) and s[1] == start}


def assert_all_gone(processes: set[tuple[int, int]], within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while alive(processes) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = {pid: _command(pid, whole=True)[:120] for pid, _ in alive(processes)}
    left = {pid: command for pid, command in left.items() if command}  # ended since
    assert not left, f"processes left behind: {left}"


class Watch(threading.Thread):
    """Collects every descendant of ``root`` while it runs (a process may live briefly)."""

    def __init__(self, root: int):
        super().__init__(daemon=True)
        self.root, self.seen, self.running = root, set(), True

    def run(self) -> None:
        while self.running:
            # a new set, not |=: the test thread may be iterating over the old one
            self.seen = self.seen | descendants(self.root)
            time.sleep(0.1)

    def boards(self, binary: Path) -> list[int]:
        """PIDs of the simulated boards (the board binary) alive now."""
        return sorted(pid for pid, _ in alive(self.seen) if _command(pid) == str(binary).encode())

    def stop(self) -> set[tuple[int, int]]:
        self.running = False
        self.join()
        return self.seen


# -- the model and the CLI ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def model_file(tmp_path_factory):
    from fpga.spec.sqz import write_model
    from fpga.toolflow.compress import compress_network

    network, shared, _ = compress_network(VARIANT, 6, None, SIZE)
    path = tmp_path_factory.mktemp("batch") / f"{VARIANT}-{SIZE}.sqz"
    write_model(path, network, shared, 6)
    return path


def cli_args(model: Path, paths: list, devices: str, **options) -> argparse.Namespace:
    """What ``python -m host.infer PATH... --model M --size 32 --weights-mode huffman
    --devices ...`` parses to."""
    values = dict(
        images=[str(p) for p in paths],
        variant=VARIANT,
        model=str(model),
        device="sim",
        size=SIZE,
        weights_mode=WEIGHTS_MODE,
        mode=None,
        json=False,
        board=None,
        baud=None,
        no_progress=True,
        devices=devices,
        ray_address=None,
        csv=None,
    )
    values.update(options)
    return argparse.Namespace(**values)


def start_cli(args: argparse.Namespace) -> subprocess.Popen:
    """``python -m host.infer`` with the options ``args`` holds, in a process of its own (for the
    runs that need to be killed or interrupted)."""
    argv = [*args.images, "--variant", args.variant, "--model", args.model]
    argv += ["--size", str(args.size), "--weights-mode", args.weights_mode]
    argv += ["--devices", args.devices, "--no-progress"]
    if args.csv:
        argv += ["--csv", args.csv]
    return subprocess.Popen(
        # faulthandler: a crash (a CI run once saw SIGSEGV after "interrupted") shows its stack
        [sys.executable, "-X", "faulthandler", "-u", "-m", "host.infer", *argv],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_as_in_a_terminal,
    )


def _as_in_a_terminal() -> None:
    """SIGINT at its default in the CLI, as a terminal's foreground job has it: a runner that
    started the tests as a background job (``cmd &`` without job control) hands them SIGINT
    ignored, which every child inherits and Python then leaves ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# -- without boards ----------------------------------------------------------------------------


def test_paths_expand_to_images_in_order(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "b.png").write_bytes(b"")
    (tmp_path / "a.JPG").write_bytes(b"")
    photos = bundled_photos()
    found = expand_images([str(photos[1]), str(tmp_path), str(PHOTOS / "c[ao]*.jpg")])
    assert found == [photos[1], tmp_path / "a.JPG", tmp_path / "b.png", photos[0], photos[2]]
    for bad in ("missing.jpg", str(tmp_path / "*.gif"), str(tmp_path / "empty")):
        if bad.endswith("empty"):
            Path(bad).mkdir()
        with pytest.raises(BatchError):
            expand_images([bad])


def test_devices_are_a_count_or_urls():
    built = []
    specs = parse_devices("3", binary=lambda: built.append(1) or "/bin/board")
    assert [s.name for s in specs] == ["sim0", "sim1", "sim2"] and built == [1]
    assert {s.binary for s in specs} == {"/bin/board"}
    specs = parse_devices("socket://a:1, /dev/ttyUSB1", lambda url: 12_000_000)
    assert [(s.url, s.baud) for s in specs] == [
        ("socket://a:1", 12_000_000),
        ("/dev/ttyUSB1", 12_000_000),
    ]
    for bad in ("0", "socket://a:1,,", "socket://a:1,socket://a:1"):
        with pytest.raises(BatchError):
            parse_devices(bad, binary=lambda: "/bin/board")


def test_csv_and_ray_address_need_devices(model_file):
    with pytest.raises(BatchError, match="--devices"):
        batch.run(cli_args(model_file, [PHOTOS], None, csv="out.csv"), lambda args: 0)


def test_host_cli_does_not_import_ray():
    """Host start-up time is benchmarked (bench/startup.py): ray only with --devices."""
    done = subprocess.run(
        [sys.executable, "-c", "import sys, host.batch, host.infer; print('ray' in sys.modules)"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "False"


def test_no_board_answers_is_one_error_line(model_file):
    """Every board fails to start (nothing listens on the port): exit 2, no traceback, and Ray
    and its workers are gone afterwards."""
    import socket

    with socket.socket() as s:  # a free port with nothing behind it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = start_cli(cli_args(model_file, [PHOTOS], f"socket://127.0.0.1:{port}"))
    watch = Watch(process.pid)
    watch.start()
    out, err = process.communicate(timeout=120)
    assert_all_gone(watch.stop())
    assert process.returncode == 2, err
    assert "Traceback" not in err
    assert f"socket://127.0.0.1:{port}" in err and "no board" in err


# -- simulated boards --------------------------------------------------------------------------


def test_three_boards_equal_one_board_image_by_image(resident_board_binary, model_file):
    from fpga.spec.sqz import load_for_device
    from host.classify import classify_on_device
    from host.simulated import BoardProcess

    network, compressed = load_for_device(model_file)
    images = bundled_photos()
    options = {"weights_mode": WEIGHTS_MODE, "mode": "resident", "baud": None}
    with BoardProcess(resident_board_binary) as board:
        device = board.open_device()
        try:
            single = classify_on_device(device, network, compressed, images, False, **options)
        finally:
            device.close()

    before = descendants(os.getpid())
    watch = Watch(os.getpid())
    watch.start()
    devices = [DeviceSpec(f"sim{i}", binary=str(resident_board_binary)) for i in range(3)]
    report = classify_batch(images, devices, network, compressed, options, progress=False)
    assert_all_gone(watch.stop() - before)

    assert [r["image"] for r in report.results] == [str(p) for p in images]
    for one, many in zip(single, report.results, strict=True):
        assert many["golden_match"] and one["golden_match"]
        assert many["top5"] == one["top5"], one["image"]
    assert sum(b.done for b in report.boards) == len(images)
    assert not any(b.failed for b in report.boards)
    assert {r["board"] for r in report.results} <= {"sim0", "sim1", "sim2"}


@pytest.mark.parametrize("link", ["uart", "ethernet"])
def test_a_board_streams_its_images(resident_board_binary, model_file, link):
    """One board, four images, over the simulated board's UART and its Ethernet (UDP): they go
    through one ``run_resident_many`` stream (positions 0-3 of stream 0), and the device itself
    reports link traffic served during every run (its ``host_cycles``: the next image's input
    written, the last one's logits read while it computes), which one image at a time never
    has; results in order, each bit-exact."""
    from fpga.spec.sqz import load_for_device
    from sim.board import build

    binary = resident_board_binary if link == "uart" else build(memory=True, ethernet=True)
    network, compressed = load_for_device(model_file)
    photos = bundled_photos()
    images = [*photos, photos[0]]
    options = {"weights_mode": WEIGHTS_MODE, "mode": "resident", "baud": None}
    devices = [DeviceSpec("sim0", binary=str(binary), link=link)]
    before = descendants(os.getpid())
    watch = Watch(os.getpid())
    watch.start()
    report = classify_batch(images, devices, network, compressed, options, progress=False)
    assert_all_gone(watch.stop() - before)

    results = report.results
    assert [r["image"] for r in results] == [str(p) for p in images]
    assert all(r["golden_match"] for r in results)
    assert results[3]["top5"] == results[0]["top5"]
    assert [(r["stream"], r["stream_position"]) for r in results] == [(0, i) for i in range(4)]
    assert all(r["overlapped"] for r in results)
    # the first run had the second input written during it, the last the third one's logits
    # read, the others both
    assert all(r["host_cycles"] > 0 for r in results), [r["host_cycles"] for r in results]
    if link == "ethernet":  # (the UART board's link is its harness's socket: a "stream")
        assert {r["device_link"] for r in results} == {"ethernet"}


def test_a_board_killed_mid_batch(resident_board_binary, model_file, tmp_path):
    """Kill one board's process after the first result: its in-flight images go to another
    board, every other image completes bit-exact, the summary names the board and its PID; a
    file that is no image fails on every board and is reported with its error. Seven images,
    so that every board still holds one when the first result is printed (a streaming board
    holds two: with five, a board could be done with all it would get, and its death go
    unnoticed)."""
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a jpeg")
    out_csv = tmp_path / "results.csv"
    paths = [PHOTOS, broken, PHOTOS]  # 7 images, the broken one fourth
    process = start_cli(cli_args(model_file, paths, "3", csv=str(out_csv)))
    watch = Watch(process.pid)
    watch.start()
    lines, killed = [], None
    for line in process.stdout:
        lines.append(line)
        if killed is None and line.startswith("  board sim"):
            boards = watch.boards(resident_board_binary)
            assert len(boards) == 3, boards
            killed = boards[0]
            os.kill(killed, signal.SIGKILL)
    process.wait(timeout=300)
    err = process.stderr.read()
    assert_all_gone(watch.stop())
    out = "".join(lines)
    assert killed is not None, out + err
    assert process.returncode == 1, out + err  # one image failed
    assert "6 of 7 images on 3 boards" in out, out
    failed_board = [line for line in lines if line.startswith("FAILED board")]
    assert len(failed_board) == 1 and f"pid {killed}" in failed_board[0], out
    assert f"FAILED image {broken}" in out
    assert out.count("equals fpga.spec.golden: yes, bit for bit") == 6, out
    with open(out_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["image"] for r in rows] == [str(p) for p in expand_images([str(p) for p in paths])]
    assert [r["golden_match"] for r in rows] == ["True"] * 3 + [""] + ["True"] * 3
    assert rows[3]["error"] and not rows[3]["board"]
    assert {r["board"] for r in rows} <= {"sim0", "sim1", "sim2", ""}


@contextlib.contextmanager
def busy_machine():
    """A busy-loop child per core for the duration: a user presses Ctrl-C on a busy laptop."""
    spinners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(os.cpu_count() or 1)
    ]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


#: when Ctrl-C comes: seconds after the CLI started (the board build check, the model, Ray's
#: start-up), or "loading" (all three boards up, loading the model into DRAM) and "images"
#: (the first result printed)
INTERRUPT_AT = [4.0, 12.0, "loading", "images"]


@pytest.mark.parametrize("when", INTERRUPT_AT, ids=str)
def test_ctrl_c_stops_every_board(resident_board_binary, model_file, when):
    """SIGINT to the CLI alone (not its process group) on a loaded machine, at every phase:
    exit 130 with one line, and every process the batch started gone within 15 s."""
    with busy_machine():
        process = start_cli(cli_args(model_file, [PHOTOS, PHOTOS], "3"))
        watch = Watch(process.pid)
        watch.start()
        if when == "loading":
            deadline = time.monotonic() + 300
            while len(watch.boards(resident_board_binary)) < 3 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert len(watch.boards(resident_board_binary)) == 3
            time.sleep(3)
        elif when == "images":
            for line in process.stdout:
                if line.startswith("  board sim"):
                    break
        else:
            time.sleep(when)
        assert process.poll() is None, "the batch ended before the interrupt"
        process.send_signal(signal.SIGINT)
        interrupted = time.monotonic()
        try:
            out, err = process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
            pytest.fail(f"the CLI still ran 15 s after SIGINT; its stderr: {err[-2000:]}")
        assert_all_gone(watch.stop(), within=max(0.0, interrupted + 15 - time.monotonic()))
    assert process.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
