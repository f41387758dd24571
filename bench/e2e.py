"""End-to-end benchmark: full-network wall time on the simulated board, link bytes vs the
minimum, and predicted images/s on real links from the measured cycles and bytes.

Assumptions (stated, not measured): the Arty A7 engine clock is the config's clock
(100 MHz); a 12 Mbaud 8N1 UART moves 1.2 MB/s; PCIe Gen2 x1 moves ~400 MB/s after 8b/10b and
TLP overhead. Transfers and compute do not overlap in this host driver, so the time per image
is compute + transfer: both rates come from ``host.classify.predicted_images_per_s`` (PCIe as
the UART rate that moves the same bytes per second, 10 bits a byte).

Streamed mode: ``bench._board.board_run`` walks the program with ``fpga.compiler.program.execute``
on the streamed-mode board (``BoardProcess(sim.board.build())``, no DRAM), never through
``host.classify``'s default mode choice.
"""

from bench._board import board_run
from fpga.spec.boards import DEFAULT_BOARD, get_board
from fpga.spec.protocol import LinkKind, LinkRate
from host.classify import predicted_images_per_s

UART = LinkRate(LinkKind.UART, get_board(DEFAULT_BOARD).baud)  # the Arty A7's 12 Mbaud 8N1 UART
PCIE_GEN2_X1_BYTES_PER_S = 400e6


def main() -> dict:
    rows = []
    print(
        f"{'network':<12} {'weights':<8} {'wall (sim)':>10} {'cycles':>12} {'link MB':>8} "
        f"{'min MB':>7} {'framed MB':>9} {'img/s UART':>10} {'img/s PCIe':>10} {'golden':>7}"
    )
    for variant, size, mode in (
        ("v1.0", 227, "indices"),
        ("v1.0", 227, "huffman"),
        ("v1.1", 224, "indices"),
        ("v1.1", 224, "huffman"),
    ):
        run = board_run(variant, size, mode)
        cycles = sum(s.cycles for s in run["stats"])
        payload = sum(s.link_bytes for s in run["stats"])
        framed = run["framed_link_bytes"]
        clock = run["config"].clock_mhz * 1e6
        compute = cycles / clock
        # a UART's time does not depend on the frames (no per-frame overhead beyond the bytes)
        uart = predicted_images_per_s(cycles, clock, UART.seconds(framed, 0))
        pcie = predicted_images_per_s(cycles, clock, framed / PCIE_GEN2_X1_BYTES_PER_S)
        row = {
            "variant": variant,
            "size": size,
            "weights_mode": mode,
            "wall_s": run["wall_s"],
            "cycles": cycles,
            "link_bytes": payload,
            "minimum_link_bytes": run["program"].minimum_link_bytes,
            "framed_link_bytes": framed,
            "compute_bound_images_per_s": 1 / compute,
            "uart_12mbaud_images_per_s": uart,
            "pcie_gen2_x1_images_per_s": pcie,
            "golden_match": run["golden_match"],
        }
        rows.append(row)
        print(
            f"{variant + '@' + str(size):<12} {mode:<8} {run['wall_s']:>9.1f}s {cycles:>12,} "
            f"{payload / 1e6:>8.2f} {row['minimum_link_bytes'] / 1e6:>7.2f} "
            f"{framed / 1e6:>9.2f} {uart:>10.3f} {pcie:>10.1f} {str(run['golden_match']):>7}"
        )
    for row in rows:
        print(
            f"{row['variant']} ({row['weights_mode']}): compute-bound "
            f"{row['compute_bound_images_per_s']:.1f} images/s "
            f"at {run['config'].clock_mhz:.0f} MHz; link is "
            f"{row['link_bytes'] / row['minimum_link_bytes']:.2f}x the minimum for this "
            "residency mode (activations round-trip through the host between layers)"
        )
    return {"rows": rows}
