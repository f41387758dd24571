"""The Ethernet path's numbers that exist before the SoC serves UDP (issue 33, in progress): the
LiteEth UDP core's size on each Arty (Yosys fit of the generated core alone), and what the link
rate would give: images/s per board over 100 Mbit Ethernet against its 12 Mbaud UART, from the
cost model's device cycles (``fpga.compiler.traffic.device_cycles``) and each image's framed link
bytes, with link and compute overlapped, and which side bounds it."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

#: bytes each Ethernet frame adds to its UDP payload on the wire: preamble + SFD 8, MAC header
#: 14, IPv4 20, UDP 8, FCS 4, inter-frame gap 12
WIRE_OVERHEAD = 8 + 14 + 20 + 8 + 4 + 12
#: the networks and input sizes of the goals
NETWORKS = (("v1.0", 227), ("v1.1", 224))
#: issue 33's goals: images/s over Ethernet, overlapped (index weights)
GOALS = {("arty_a7_100", "v1.1"): 50.0, ("arty_a7", "v1.1"): 15.0}


def ethernet_bytes_per_s(rate_mbps: int, payload: int) -> float:
    """Payload bytes a second at ``rate_mbps`` in datagrams of ``payload`` bytes."""
    return rate_mbps * 1e6 / 8 * payload / (payload + WIRE_OVERHEAD)


def framed(payload_bytes: int, max_payload: int) -> int:
    """``payload_bytes`` of MEM_WRITE / MEM_READ data as link bytes: each frame of at most
    ``max_payload`` carries its request header, and adds sync, frame header and CRC."""
    from fpga.spec.protocol import FRAME_OVERHEAD, MEM_WRITE_REQUEST

    data = max_payload - MEM_WRITE_REQUEST.size
    frames = -(-payload_bytes // data)
    return payload_bytes + frames * (FRAME_OVERHEAD + MEM_WRITE_REQUEST.size)


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
    from host.classify import predicted_images_per_s

    rows = []
    for name, board in BOARDS.items():
        if board.ethernet is None:
            continue
        config, hz = board.config, board.clock_mhz * 1e6
        payload = config.max_payload  # a MEM_WRITE / MEM_READ frame's payload
        rate = ethernet_bytes_per_s(board.ethernet.rate_mbps, payload)
        for variant, size in NETWORKS:
            program = compile_network(shape_network(variant, size), config, split=True)
            image = compile_resident(program, input_size=size)
            cycles = device_cycles(image)["total"]
            link = framed(image.link_bytes_per_image(), payload)
            compute_s, ether_s = cycles / hz, link / rate
            uart = predicted_images_per_s(cycles, hz, link, board.baud, overlap=True)
            ether = 1 / max(compute_s, ether_s)
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
                f"{ether_s * 1e3:5.1f} ms over Ethernet ({link / board.baud * 10e3:6.1f} ms over "
                f"the UART): {ether:5.1f} images/s over Ethernet, {row['ethernet_bound']}-bound"
                f"{verdict}; {uart:.2f} over the UART"
            )
    return rows


def main() -> dict:
    print("LiteEth UDP core alone (Yosys synth_xilinx fit; not yet in the SoC):")
    sizes = core_sizes()
    print(
        "\npredicted images/s, link and compute overlapped (cost model; index weights; "
        f"Ethernet: 100 Mbit/s less {WIRE_OVERHEAD} bytes a datagram):"
    )
    return {"core": sizes, "predicted": predictions()}
