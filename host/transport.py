"""Byte transports selected by URL; the driver only sees ``write(bytes)`` / ``read(n)``.

* ``/dev/ttyUSB1``, ``COM3``, ``socket://127.0.0.1:PORT``, ``loop://``: pyserial
  (``serial_for_url``), so a real UART and the simulated board's socket look the same;
* ``pcie:///dev/xdma0``: an XDMA-style pair of character devices ``<dev>_h2c_0`` (host to card)
  and ``<dev>_c2h_0`` (card to host); ``pcie://H2C,C2H`` names the two paths explicitly (the
  tests bridge two FIFOs to the simulated board this way).
"""

from __future__ import annotations

import os
import select
import time

from fpga.spec.errors import UserError


class TransportError(UserError, ConnectionError):
    """The device behind a URL cannot be opened or has gone away."""


class SerialTransport:
    """A pyserial URL. ``baudrate`` is the UART bit rate (optional for a socket, where pyserial
    ignores it); :attr:`baudrate` is what the port was opened at, 0 when none was given."""

    def __init__(self, url: str, baudrate: int | None, timeout: float = 1.0):
        import serial

        kwargs = {"baudrate": baudrate} if baudrate else {}
        try:
            self.port = serial.serial_for_url(url, timeout=timeout, **kwargs)
        except (serial.SerialException, ValueError, OSError) as exc:
            raise TransportError(f"cannot open {url}: {exc}") from None
        self.url = url
        self.baudrate = self.port.baudrate if baudrate else 0

    def write(self, data: bytes) -> None:
        import serial

        try:
            self.port.write(data)
            self.port.flush()
        except (serial.SerialException, OSError) as exc:
            raise TransportError(f"{self.url}: write failed: {exc}") from None

    def read(self, size: int, timeout: float) -> bytes:
        import serial

        self.port.timeout = timeout
        try:
            return self.port.read(size)
        except (serial.SerialException, OSError) as exc:
            raise TransportError(f"{self.url}: device gone ({exc})") from None

    def close(self) -> None:
        self.port.close()


class PCIeTransport:
    """XDMA streaming character devices: writes go to H2C, reads come from C2H."""

    def __init__(self, url: str):
        spec = url[len("pcie://") :]
        if "," in spec:
            h2c, c2h = spec.split(",", 1)
        else:
            h2c, c2h = f"{spec}_h2c_0", f"{spec}_c2h_0"
        for path in (h2c, c2h):
            if not os.path.exists(path):
                raise TransportError(
                    f"PCIe device {path} not found: is the XDMA driver loaded and the board on?"
                )
        self.url = url
        self.c2h = os.open(c2h, os.O_RDONLY | os.O_NONBLOCK)
        self.h2c = os.open(h2c, os.O_WRONLY)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                written = os.write(self.h2c, view)
                view = view[written:]
        except OSError as exc:
            raise TransportError(f"{self.url}: write failed: {exc}") from None

    def read(self, size: int, timeout: float) -> bytes:
        out = bytearray()
        deadline = time.monotonic() + timeout
        while len(out) < size:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select([self.c2h], [], [], left)
            if not ready:
                break
            try:
                chunk = os.read(self.c2h, size - len(out))
            except BlockingIOError:
                continue
            except OSError as exc:
                raise TransportError(f"{self.url}: device gone ({exc})") from None
            if not chunk:
                time.sleep(0.001)  # FIFO writer not yet there / closed
                continue
            out += chunk
        return bytes(out)

    def close(self) -> None:
        os.close(self.h2c)
        os.close(self.c2h)


def _is_uart(url: str) -> bool:
    """A real serial port (or its pyserial stand-ins ``loop://`` / ``rfc2217://``)."""
    return url.startswith(("/dev/", "loop://", "rfc2217://")) or url.upper().startswith("COM")


def open_transport(url: str, baudrate: int | None = None):
    """Open the transport for ``url`` (see module doc); raises :class:`TransportError`.

    ``baudrate`` is required for a serial port and has no default here: it is a fact of the
    board (``fpga.spec.boards``), which the caller passes on (``--board NAME`` or ``--baud N``).
    A socket records it if given (so a simulated UART board can be checked against it); PCIe
    ignores it.
    """
    if url.startswith("pcie://"):
        return PCIeTransport(url)
    if url.startswith("socket://") or _is_uart(url):
        if url.startswith("/dev/") and not os.path.exists(url):
            raise TransportError(f"no device at {url}: is the board plugged in?")
        if _is_uart(url) and not baudrate:
            raise TransportError(
                f"{url} is a serial port: give its baud rate (--board NAME or --baud N)"
            )
        return SerialTransport(url, baudrate)
    raise TransportError(
        f"unknown device URL {url!r}: use 'sim', a serial port (/dev/ttyUSB1), "
        "socket://HOST:PORT or pcie:///dev/xdma0"
    )
