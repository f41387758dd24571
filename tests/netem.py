"""A lossy UDP proxy for tests: between a host and any UDP device, it drops, duplicates, delays
and reorders datagrams at seeded rates, both directions, and counts what it did.

``LossyProxy(device_address, loss=0.05, ...)`` listens on 127.0.0.1 (``proxy.url`` is
``udp://127.0.0.1:PORT``: give the host that); every datagram from the host goes to the device
from the proxy's own socket, and every datagram from the device goes back to the host that sent
last. Each datagram's fate is drawn from a ``random.Random`` per direction seeded with ``seed``,
so the n-th datagram each way meets the same fate on every run (which datagram is the n-th still
depends on the host's timing). Fates, in this order:

* ``loss``: dropped;
* ``duplicate``: sent twice (the copy right after the original, or after its delay);
* ``reorder``: held back until the next datagram the same way has gone out (at most
  ``max_hold`` seconds), so the two arrive swapped;
* ``delay``: sent after a uniform ``0 .. max_delay`` seconds (datagrams sent meanwhile overtake
  it).

Holds and delays are short (milliseconds): a datagram is never held for longer than the host and
the device take for a few requests, as on a real network, where a duplicate that arrives
seconds later is not a thing to design for (``docs/protocol.md``, "UDP link"). Pure standard
library, no project imports: it serves the Python fake device and the simulated board alike.
"""

from __future__ import annotations

import heapq
import random
import select
import socket
import threading
import time
from collections import Counter

#: the two directions, as :attr:`LossyProxy.counts` names them
TO_DEVICE, TO_HOST = "to_device", "to_host"


class LossyProxy:
    """A UDP proxy on 127.0.0.1 in front of the device at ``device`` ``(ip, port)``; see the
    module doc. ``counts[direction]`` counts ``received``, ``sent``, ``dropped``,
    ``duplicated``, ``reordered`` and ``delayed`` datagrams."""

    def __init__(
        self,
        device: tuple[str, int],
        loss: float = 0.0,
        duplicate: float = 0.0,
        reorder: float = 0.0,
        delay: float = 0.0,
        seed: int = 0,
        max_delay: float = 0.003,
        max_hold: float = 0.005,
    ):
        self.device = device
        self.rates = {"loss": loss, "duplicate": duplicate, "reorder": reorder, "delay": delay}
        self.max_delay, self.max_hold = max_delay, max_hold
        self.rng = {way: random.Random(f"{seed}:{way}") for way in (TO_DEVICE, TO_HOST)}
        self.counts = {way: Counter() for way in (TO_DEVICE, TO_HOST)}
        self.host_side = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.host_side.bind(("127.0.0.1", 0))
        self.device_side = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.device_side.bind(("127.0.0.1", 0))
        self.url = f"udp://127.0.0.1:{self.host_side.getsockname()[1]}"
        self.host: tuple[str, int] | None = None  # the host that sent last
        self._timers: list[tuple[float, int, str, bytes]] = []  # (when, order, way, datagram)
        self._held: dict[str, tuple[float, bytes] | None] = {TO_DEVICE: None, TO_HOST: None}
        self._order = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="LossyProxy", daemon=True)
        self._thread.start()

    def total(self, what: str) -> int:
        """``what`` (``dropped``, ``sent`` ...) summed over both directions."""
        return sum(counts[what] for counts in self.counts.values())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.host_side.close()
        self.device_side.close()

    def __enter__(self) -> LossyProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the loop --------------------------------------------------------------------------------
    def _serve(self) -> None:
        sockets = [self.host_side, self.device_side]
        while not self._stop.is_set():
            self._release(time.monotonic())
            ready, _, _ = select.select(sockets, [], [], self._wait())
            for sock in ready:
                try:
                    data, sender = sock.recvfrom(65535)
                except OSError:  # an ICMP error from an earlier datagram
                    continue
                if sock is self.host_side:
                    self.host = sender
                    self._route(TO_DEVICE, data)
                elif self.host is not None:
                    self._route(TO_HOST, data)

    def _wait(self) -> float:
        """Seconds until the next timer or held datagram is due (at most 0.05)."""
        due = [when for when, *_ in self._timers[:1]]
        due += [held[0] for held in self._held.values() if held is not None]
        return max(0.0, min([time.monotonic() + 0.05, *due]) - time.monotonic())

    def _release(self, now: float) -> None:
        while self._timers and self._timers[0][0] <= now:
            _, _, way, data = heapq.heappop(self._timers)
            self._send(way, data)
        for way, held in self._held.items():
            if held is not None and held[0] <= now:
                self._held[way] = None
                self._send(way, held[1])

    def _route(self, way: str, data: bytes) -> None:
        """Decide the fate of one datagram going ``way``."""
        counts, rng = self.counts[way], self.rng[way]
        counts["received"] += 1
        draws = {fate: rng.random() < rate for fate, rate in self.rates.items()}
        wait = rng.uniform(0, self.max_delay)
        if draws["loss"]:
            counts["dropped"] += 1
            return
        copies = 2 if draws["duplicate"] else 1
        counts["duplicated"] += copies - 1
        if draws["reorder"] and self._held[way] is None:
            counts["reordered"] += 1
            self._held[way] = (time.monotonic() + self.max_hold, data)
            copies -= 1
        for _ in range(copies):
            if draws["delay"]:
                counts["delayed"] += 1
                self._order += 1
                heapq.heappush(self._timers, (time.monotonic() + wait, self._order, way, data))
            else:
                self._send(way, data)

    def _send(self, way: str, data: bytes) -> None:
        if way == TO_DEVICE:
            self.device_side.sendto(data, self.device)
        else:
            self.host_side.sendto(data, self.host)
        self.counts[way]["sent"] += 1
        held = self._held[way]
        if held is not None and held[1] is not data:  # the held one goes right after this one
            self._held[way] = None
            self._send(way, held[1])
