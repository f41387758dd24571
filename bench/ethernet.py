"""The Ethernet path's numbers that exist before the SoC serves UDP (issue 33, in progress): the
LiteEth UDP core's size on each Arty (Yosys fit of the generated core alone), and what the link
rate would give: images/s per board over 100 Mbit Ethernet against its 12 Mbaud UART, from the
cost model's device cycles (``fpga.compiler.traffic.device_cycles``) and each image's framed link
bytes, with link and compute overlapped, and which side bounds it."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

#: the networks and input sizes of the goals
NETWORKS = (("v1.0", 227), ("v1.1", 224))
#: issue 33's goals: images/s over Ethernet, overlapped (index weights)
GOALS = {("arty_a7_100", "v1.1"): 50.0, ("arty_a7", "v1.1"): 15.0}


def framed(payload_bytes: int, max_payload: int) -> tuple[int, int]:
    """``payload_bytes`` of MEM_WRITE / MEM_READ data as link bytes and frames: each frame of at
    most ``max_payload`` carries its request header, and adds sync, frame header and CRC."""
    from fpga.spec.protocol import FRAME_OVERHEAD, MEM_WRITE_REQUEST

    data = max_payload - MEM_WRITE_REQUEST.size
    frames = -(-payload_bytes // data)
    return payload_bytes + frames * (FRAME_OVERHEAD + MEM_WRITE_REQUEST.size), frames


def core_sizes() -> list[dict]:
    from fpga.build import liteeth
    from fpga.build.flow import yosys_xilinx_report
    from fpga.spec.boards import BOARDS

    rows = []
    for name, board in BOARDS.items():
        if board.ethernet is None:
            continue
        core = liteeth.generate(name)
        with tempfile.TemporaryDirectory() as work:
            verilog = Path(work) / core.verilog.name
            shutil.copyfile(core.verilog, verilog)
            fit = yosys_xilinx_report(verilog, liteeth.CORE_NAME)
        cap = board.capacity
        row = {
            "board": name,
            "lut": fit["lut"],
            "lutram": fit["lutram"],
            "ff": fit["ff"],
            "bram36": fit["bram"],
            "lut_share": fit["lut"] / cap["lut"],
            "ff_share": fit["ff"] / cap["ff"],
        }
        rows.append(row)
        print(
            f"  {name:12} LiteEth UDP core (MII, raw port): {row['lut']:,} LUT "
            f"({row['lut_share']:.1%} of {cap['lut']:,}; {row['lutram']} as RAM), "
            f"{row['ff']:,} FF ({row['ff_share']:.1%}), {row['bram36']:g} RAMB36"
        )
    return rows


def predictions() -> list[dict]:
    from fpga.compiler.program import compile_network
    from fpga.compiler.resident import compile_resident
    from fpga.compiler.traffic import device_cycles
    from fpga.spec.boards import BOARDS
    from fpga.spec.network import shape_network
    from fpga.spec.protocol import LinkKind, LinkRate
    from host.classify import predicted_images_per_s

    rows = []
    for name, board in BOARDS.items():
        if board.ethernet is None:
            continue
        config, hz = board.config, board.clock_mhz * 1e6
        payload = config.max_payload  # a MEM_WRITE / MEM_READ frame's payload
        ethernet = LinkRate(LinkKind.ETHERNET, board.ethernet.rate_mbps * 10**6)
        uart_link = LinkRate(LinkKind.UART, board.baud)
        for variant, size in NETWORKS:
            program = compile_network(shape_network(variant, size), config, split=True)
            image = compile_resident(program, input_size=size)
            cycles = device_cycles(image)["total"]
            link, frames = framed(image.link_bytes_per_image(), payload)
            compute_s, ether_s = cycles / hz, ethernet.seconds(link, frames)
            uart_s = uart_link.seconds(link, frames)
            uart = predicted_images_per_s(cycles, hz, uart_s, overlap=True)
            ether = predicted_images_per_s(cycles, hz, ether_s, overlap=True)
            goal = GOALS.get((name, variant))
            row = {
                "board": name,
                "variant": variant,
                "device_cycles": cycles,
                "link_bytes_per_image": link,
                "uart_images_per_s": uart,
                "ethernet_images_per_s": ether,
                "ethernet_bound": "compute" if compute_s >= ether_s else "link",
                "goal": goal,
            }
            rows.append(row)
            verdict = (
                ""
                if goal is None
                else f" (goal >= {goal:g}, {'met' if ether >= goal else 'NOT met'})"
            )
            print(
                f"  {name:12} {variant}: device {compute_s * 1e3:6.1f} ms, link {link:,} B = "
                f"{ether_s * 1e3:5.1f} ms over Ethernet ({uart_s * 1e3:6.1f} ms over "
                f"the UART): {ether:5.1f} images/s over Ethernet, {row['ethernet_bound']}-bound"
                f"{verdict}; {uart:.2f} over the UART"
            )
    return rows


def main() -> dict:
    from fpga.spec.protocol import ETHERNET_DATAGRAM_OVERHEAD

    print("LiteEth UDP core alone (Yosys synth_xilinx fit; not yet in the SoC):")
    sizes = core_sizes()
    print(
        "\npredicted images/s, link and compute overlapped (cost model; index weights; "
        f"Ethernet: 100 Mbit/s less {ETHERNET_DATAGRAM_OVERHEAD} bytes a datagram):"
    )
    return {"core": sizes, "predicted": predictions()}
