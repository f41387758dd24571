"""Byte transports selected by URL; the driver only sees ``write(bytes)`` / ``read(n)``.

* ``/dev/ttyUSB1``, ``COM3``, ``socket://127.0.0.1:PORT``, ``loop://``: pyserial
  (``serial_for_url``), so a real UART and the simulated board's socket look the same;
* ``pcie:///dev/xdma0``: an XDMA-style pair of character devices ``<dev>_h2c_0`` (host to card)
  and ``<dev>_c2h_0`` (card to host); ``pcie://H2C,C2H`` names the two paths explicitly (the
  tests bridge two FIFOs to the simulated board this way);
* ``udp://HOST:PORT``: the board's Ethernet link (:class:`UdpTransport`), one frame per datagram
  both ways; ``udp://HOST`` takes the port, ``udp://`` the address and the port, from the board
  registry (``--board NAME``, ``fpga.spec.boards``: the Arty A7's 192.168.1.50:2000). The host
  binds the same UDP port number on its side (the board answers to the port it listens on,
  :func:`udp_local_port`).
"""

from __future__ import annotations

import ipaddress
import os
import select
import socket
import time
from urllib.parse import urlsplit

from fpga.spec.boards import BOARDS, DEFAULT_BOARD, get_board
from fpga.spec.errors import UserError
from fpga.spec.protocol import UDP_MAX_DATAGRAM, FrameError, decode_frame


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


class UdpTransport:
    """A board's UDP link: each :meth:`write` is one datagram (one whole frame, at most
    :data:`UDP_MAX_DATAGRAM` bytes) to ``address``; :meth:`read` hands out the bytes of the
    datagrams received from the board's IPv4 address, each one whole frame, in arrival order.

    The socket is bound to ``local_port`` of this host (0: one the kernel picks): the board
    answers at that port (:func:`udp_local_port`). A datagram from another address
    (:attr:`ignored`) or one that is not exactly one frame with a good CRC (:attr:`malformed`)
    is dropped, so the driver's frame parser never sees a partial frame. Nothing here retries:
    the driver resends a request whose answer does not come (``host.driver``)."""

    #: the driver's cue: whole frames per datagram (windowed transfers, no resync run of zeros)
    datagrams = True

    def __init__(self, url: str, address: tuple[str, int], local_port: int = 0):
        self.url = url
        self.address = address
        self.ignored = 0
        self.malformed = 0
        self.buffer = bytearray()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            if local_port:
                # several boards answer the same port number on this host: each session's
                # socket shares it and is connected to its board, and the kernel hands each
                # connected socket its own board's datagrams (a batch over many boards)
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if hasattr(socket, "SO_REUSEPORT"):
                    self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            self.sock.bind(("0.0.0.0", local_port))
            if local_port:
                self.sock.connect(address)
        except OSError as exc:
            self.sock.close()
            raise TransportError(
                f"{url}: cannot bind UDP port {local_port} on this host, where the board answers "
                f"({exc.strerror or exc}): is another session talking to a board?"
            ) from None
        self.local_port = self.sock.getsockname()[1]

    def write(self, data: bytes) -> None:
        if len(data) > UDP_MAX_DATAGRAM:
            raise TransportError(
                f"{self.url}: a {len(data)}-byte frame does not fit one datagram "
                f"({UDP_MAX_DATAGRAM} bytes)"
            )
        try:
            self.sock.sendto(data, self.address)
        except OSError as exc:
            raise TransportError(f"{self.url}: cannot send to the board: {exc}") from None

    def _receive(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for a datagram; keep it if it is the board's and one frame."""
        ready, _, _ = select.select([self.sock], [], [], max(timeout, 0.0))
        if not ready:
            return
        try:
            data, (sender, _port) = self.sock.recvfrom(65535)
        except OSError:  # an ICMP error from an earlier datagram: the timeout speaks for it
            return
        if sender != self.address[0]:
            self.ignored += 1
            return
        try:
            decode_frame(data)
        except FrameError:
            self.malformed += 1
            return
        self.buffer += data

    def read(self, size: int, timeout: float) -> bytes:
        """Up to ``size`` bytes of received frames, waiting up to ``timeout`` s for a datagram
        when none is buffered."""
        deadline = time.monotonic() + timeout
        while not self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._receive(left)
        out = bytes(self.buffer[:size])
        del self.buffer[:size]
        return out

    def close(self) -> None:
        self.sock.close()


def udp_local_port(address: tuple[str, int]) -> int:
    """The UDP port the host binds to talk to the board at ``address``: the board's own port
    number (LiteEth's raw UDP port routes by destination port, so the board answers the port it
    listens on: ``hw.soc.link.udp``); 0, any free port, for a board at a loopback address (the
    simulated board: its network, ``sim/board/ethernet.h``, takes a datagram from
    127.0.0.1:P as the host's at the board's port and answers 127.0.0.1:P, and the board's port
    number on 127.0.0.1 is its own socket's)."""
    return 0 if ipaddress.ip_address(address[0]).is_loopback else address[1]


def udp_address(url: str, board: str | None = None) -> tuple[str, int]:
    """The IPv4 address and port of ``udp://HOST:PORT``; ``udp://HOST`` takes the port and
    ``udp://`` the address too from the board registry's Ethernet endpoint of ``board``
    (default :data:`DEFAULT_BOARD`). Raises :class:`TransportError` naming the right form."""
    form = "give udp://IP:PORT (e.g. udp://192.168.1.50:2000), or udp:// and --board NAME"
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise TransportError(f"bad device URL {url!r} ({exc}): {form}") from None
    if parts.path or parts.query or parts.fragment or parts.username or parts.password:
        raise TransportError(f"bad device URL {url!r}: {form}")
    if (host is None) != (parts.netloc == ""):  # "udp://:2000" has a port and no host
        raise TransportError(f"bad device URL {url!r}: no host before the port; {form}")
    if host is None or port is None:
        name = board or DEFAULT_BOARD
        ethernet = get_board(name).ethernet
        if ethernet is None:
            with_ethernet = ", ".join(sorted(n for n, b in BOARDS.items() if b.ethernet))
            raise TransportError(
                f"{url!r} takes the board's address, and the board {name} has no Ethernet: "
                f"give udp://IP:PORT, or --board with one of {with_ethernet}"
            )
        host = ethernet.ip_address if host is None else host
        port = ethernet.udp_port if port is None else port
    if port == 0:
        raise TransportError(f"bad device URL {url!r}: port 0; {form}")
    if ":" in host:  # urlsplit's hostname of udp://[::1]:2000
        raise TransportError(f"bad device URL {url!r}: the board's link is IPv4; {form}")
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_DGRAM)
    except (OSError, UnicodeError) as exc:
        raise TransportError(f"cannot resolve the host of {url!r} ({exc}): {form}") from None
    return infos[0][4][0], port


def _is_uart(url: str) -> bool:
    """A real serial port (or its pyserial stand-ins ``loop://`` / ``rfc2217://``)."""
    return url.startswith(("/dev/", "loop://", "rfc2217://")) or url.upper().startswith("COM")


def open_transport(url: str, baudrate: int | None = None, board: str | None = None):
    """Open the transport for ``url`` (see module doc); raises :class:`TransportError`.

    ``baudrate`` is required for a serial port and has no default here: it is a fact of the
    board (``fpga.spec.boards``), which the caller passes on (``--board NAME`` or ``--baud N``).
    A socket records it if given (so a simulated UART board can be checked against it); PCIe
    and UDP ignore it. ``board``: the board whose Ethernet endpoint completes ``udp://`` and
    ``udp://HOST`` (default :data:`fpga.spec.boards.DEFAULT_BOARD`).
    """
    if url.startswith("pcie://"):
        return PCIeTransport(url)
    if url.startswith("udp://"):
        address = udp_address(url, board)
        return UdpTransport(f"udp://{address[0]}:{address[1]}", address, udp_local_port(address))
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
        "socket://HOST:PORT, udp://IP:PORT or pcie:///dev/xdma0"
    )
