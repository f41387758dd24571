"""LiteDRAM's native user port as Amaranth streams: the generated controller behind a wrapper.

``fpga.build.litedram`` generates the controller (``litedram_core``, Verilog);
:class:`LiteDRAMNative` instantiates it with ``Instance`` and gives the rest of the SoC three
valid/ready streams with ``data.StructLayout`` payloads (:class:`NativePortSignature`, from the
initiator's side):

- ``cmd``   (we, addr): one command per ``data_width``-bit word; ``addr`` counts words.
- ``wdata`` (data, we): the data of write commands, in command order; ``we`` is a byte mask.
- ``rdata`` (data): the data of read commands, in command order.

Why a wrapper and not the raw port: LiteDRAM's native port is *not* a flow-controlled stream on
the data side. Its crossbar ignores ``rdata.ready`` (read data arrives when the DRAM returns it)
and ``wdata.valid`` (the controller takes ``wdata`` when *it* is ready, after the command). The
wrapper makes both real streams: read data lands in a ``read_buffer_depth``-word FIFO and a read
command is passed only while a FIFO slot is free for its word (credits), and write data is
buffered in a ``write_buffer_depth``-word FIFO and a write command is passed only when its data
word is already there. So any producer/consumer backpressure is safe, and up to
``read_buffer_depth`` reads are in flight (enough to cover the controller's read latency, ~20
cycles in the simulated DDR3 core, see docs/dram.md).

Reset and ``ready``: no command reaches the controller until the wrapper's domain is out of reset,
the core's ``user_rst`` is low and ``settle_cycles`` more cycles have passed (a command given
while the core leaves reset shifts every later read by one word), and, on a board,
``init_done`` is set and ``init_error`` is not (the Arty's DDR3 core has LiteDRAM's SERV init
CPU, whose BIOS runs the init and leveling and sets ``init_done``, and also ``init_error`` when the
calibration failed; the ULX3S's SDR core inits in hardware). ``ready`` says so.
The simulated core is reset only at power-on; do not reset the wrapper with transfers in flight.

Clocks: *sim* (``litedram_gen --sim``): the core's ``clk`` input is the wrapper's domain clock
(``sync`` unless renamed) and its ``user_clk`` is the same net, so the controller, the wrapper and
everything that talks to it run in one clock. *board*: the core's PLL takes the board oscillator
on ``clk_in`` (with ``rst_in``; on the ULX3S ``clk_in`` is the fabric clock itself) and gives its
``user_clk``/``user_rst`` out: the parent defines the clock domain ``domain`` from them (the SoC's
``sync``: 100 MHz on the Arty A7, the PLL's fabric clock on the ULX3S), which the wrapper then
runs in; logic in another clock crosses with async FIFOs.
"""

from __future__ import annotations

from amaranth import ClockSignal, Const, Instance, Module, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

#: read-data FIFO depth in words = reads in flight (the DMA reader sizes its bursts from it)
READ_BUFFER_DEPTH = 32
#: write-data FIFO depth in words
WRITE_BUFFER_DEPTH = 16
#: cycles after user_rst falls before the first command (the controller's own FSMs leave reset)
SETTLE_CYCLES = 16


def core_instance(module: str, core_ports: dict, connections: dict, pads: dict) -> Instance:
    """The ``Instance`` of a generated LiteX core (LiteDRAM's, LiteEth's) with ``connections``
    (Amaranth's ``i_``/``o_``/``io_`` keywords), each of ``pads`` (``{core port: IO value}``,
    the board's pins) on its port in the direction ``core_ports`` (``{name: (direction,
    width)}``) gives it (a port it does not list: inout), and every input left unconnected
    held at 0."""
    connections = dict(connections)
    for name, value in pads.items():
        direction = core_ports.get(name, ("inout", None))[0]
        connections[{"input": "i_", "output": "o_", "inout": "io_"}[direction] + name] = value
    named = {key.split("_", 1)[1] for key in connections}
    for name, (direction, width) in core_ports.items():
        if direction == "input" and name not in named:
            connections[f"i_{name}"] = Const(0, width)
    return Instance(module, **connections)


def cmd_layout(address_width: int) -> data.StructLayout:
    return data.StructLayout({"we": 1, "addr": address_width})


def wdata_layout(data_width: int) -> data.StructLayout:
    return data.StructLayout({"data": data_width, "we": data_width // 8})


def rdata_layout(data_width: int) -> data.StructLayout:
    return data.StructLayout({"data": data_width})


class NativePortSignature(wiring.Signature):
    """LiteDRAM's native port from the initiator's side (a DMA): ``cmd``/``wdata`` out,
    ``rdata`` in. The controller wrapper takes it flipped (``In(...)``)."""

    def __init__(self, data_width: int, address_width: int):
        if data_width % 8:
            raise ValueError(f"native port data width {data_width} is not whole bytes")
        self.data_width = data_width
        self.address_width = address_width
        super().__init__(
            {
                "cmd": Out(stream.Signature(cmd_layout(address_width))),
                "wdata": Out(stream.Signature(wdata_layout(data_width))),
                "rdata": In(stream.Signature(rdata_layout(data_width))),
            }
        )

    def __eq__(self, other):
        return (
            type(other) is NativePortSignature
            and other.data_width == self.data_width
            and other.address_width == self.address_width
        )

    def __hash__(self):
        return hash((self.data_width, self.address_width))

    def __repr__(self):
        return f"NativePortSignature({self.data_width}, {self.address_width})"


class LiteDRAMNative(wiring.Component):
    """The generated LiteDRAM core behind :class:`NativePortSignature` streams.

    ``data_width``/``address_width``: the core's native port (``fpga.build.litedram.NativePort``:
    128/24 on the Arty A7's DDR3, 16/24 on the ULX3S SDR). ``core_ports``: the core's top-level
    ports ``{name: (direction, width)}`` (``GeneratedCore.ports``); inputs the wrapper does not
    drive (``wb_ctrl_*``, ``sim_trace``) are tied to 0, and board ``pads`` (``{port name:
    IO value}``, the DRAM pins, e.g. from ``platform.request(..., dir="-")``) are passed through
    by name with the direction the core declares.

    Ports: ``port`` (the native port, flipped), ``ready`` (commands are accepted), ``idle`` (no
    command in flight, buffers empty), ``init_error`` (the core's), ``protocol_error`` (sticky: the
    controller took write data the wrapper did not hold — must never happen). Board only:
    ``clk_in``/``rst_in`` (the core's clock input and reset), ``user_clk``/``user_rst`` (the
    clock and reset of ``domain``, which the parent defines from them).
    """

    def __init__(
        self,
        data_width: int,
        address_width: int,
        *,
        sim: bool = True,
        core_ports: dict | None = None,
        pads: dict | None = None,
        module: str = "litedram_core",
        domain: str = "sync",
        read_buffer_depth: int = READ_BUFFER_DEPTH,
        write_buffer_depth: int = WRITE_BUFFER_DEPTH,
        settle_cycles: int = SETTLE_CYCLES,
    ):
        self.data_width = data_width
        self.address_width = address_width
        self.sim = sim
        self.core_ports = dict(core_ports or {})
        self.pads = dict(pads or {})
        self.module = module
        self.domain = domain
        self.read_buffer_depth = read_buffer_depth
        self.write_buffer_depth = write_buffer_depth
        self.settle_cycles = settle_cycles
        members = {
            "port": In(NativePortSignature(data_width, address_width)),
            "ready": Out(1),
            "idle": Out(1),
            "init_error": Out(1),
            "protocol_error": Out(1),
        }
        if not sim:
            members.update(clk_in=In(1), rst_in=In(1), user_clk=Out(1), user_rst=Out(1))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        dw = self.data_width
        prefix = "user_port_native_0_"

        core_cmd_valid = Signal()
        core_cmd_ready = Signal()
        core_wdata_ready = Signal()
        core_rdata_valid = Signal()
        core_rdata = Signal(dw)
        user_rst = Signal()
        init_done = Signal()

        m.submodules.read_buffer = read_buffer = fifo.SyncFIFO(
            width=dw, depth=self.read_buffer_depth
        )
        wlayout = wdata_layout(dw)
        m.submodules.write_buffer = write_buffer = fifo.SyncFIFO(
            width=wlayout.size, depth=self.write_buffer_depth
        )
        write_head = data.View(wlayout, write_buffer.r_data)

        connections = {
            f"i_{prefix}cmd_valid": core_cmd_valid,
            f"o_{prefix}cmd_ready": core_cmd_ready,
            f"i_{prefix}cmd_we": self.port.cmd.payload.we,
            f"i_{prefix}cmd_addr": self.port.cmd.payload.addr,
            f"i_{prefix}wdata_valid": write_buffer.r_rdy,
            f"o_{prefix}wdata_ready": core_wdata_ready,
            f"i_{prefix}wdata_data": write_head.data,
            f"i_{prefix}wdata_we": write_head.we,
            f"o_{prefix}rdata_valid": core_rdata_valid,
            f"i_{prefix}rdata_ready": Const(1),  # ignored by LiteDRAM: the FIFO always has room
            f"o_{prefix}rdata_data": core_rdata,
            "o_user_rst": user_rst,
            "o_init_done": init_done,
            "o_init_error": self.init_error,
        }
        if self.sim:
            connections["i_clk"] = ClockSignal(self.domain)
        else:
            connections.update(i_clk=self.clk_in, i_rst=self.rst_in, o_user_clk=self.user_clk)
            m.d.comb += self.user_rst.eq(user_rst)
        # wb_ctrl_*, sim_trace: unused inputs, held at 0
        m.submodules.core = core_instance(self.module, self.core_ports, connections, self.pads)

        sync = m.d[self.domain]

        # ready: out of reset, settled, (board) initialized
        settle = Signal(range(self.settle_cycles + 1), init=self.settle_cycles)
        with m.If(user_rst):
            sync += settle.eq(self.settle_cycles)
        with m.Elif(settle != 0):
            sync += settle.eq(settle - 1)
        initialized = init_done & ~self.init_error if not self.sim else 1
        m.d.comb += self.ready.eq((settle == 0) & ~user_rst & initialized)

        # read credits: a read command needs a free read-buffer slot for its word
        read_credits = Signal(range(self.read_buffer_depth + 1), init=self.read_buffer_depth)
        # write data words in the buffer that no write command has claimed yet
        unclaimed = Signal(range(self.write_buffer_depth + 1))

        cmd = self.port.cmd
        allowed = Signal()
        with m.If(cmd.payload.we):
            m.d.comb += allowed.eq(self.ready & (unclaimed != 0))
        with m.Else():
            m.d.comb += allowed.eq(self.ready & (read_credits != 0))
        m.d.comb += [
            core_cmd_valid.eq(cmd.valid & allowed),
            cmd.ready.eq(core_cmd_ready & allowed),
        ]
        read_issued = Signal()
        write_issued = Signal()
        m.d.comb += [
            read_issued.eq(cmd.valid & cmd.ready & ~cmd.payload.we),
            write_issued.eq(cmd.valid & cmd.ready & cmd.payload.we),
        ]

        # read path: the controller pushes unconditionally, the consumer pops
        m.d.comb += [
            read_buffer.w_en.eq(core_rdata_valid),
            read_buffer.w_data.eq(core_rdata),
            self.port.rdata.valid.eq(read_buffer.r_rdy),
            self.port.rdata.payload.data.eq(read_buffer.r_data),
            read_buffer.r_en.eq(self.port.rdata.ready),
        ]
        read_returned = Signal()
        m.d.comb += read_returned.eq(self.port.rdata.valid & self.port.rdata.ready)
        sync += read_credits.eq(read_credits - read_issued + read_returned)

        # write path: the producer pushes, the controller pops when it writes
        m.d.comb += [
            write_buffer.w_en.eq(self.port.wdata.valid),
            write_buffer.w_data.eq(self.port.wdata.payload.as_value()),
            self.port.wdata.ready.eq(write_buffer.w_rdy),
            write_buffer.r_en.eq(core_wdata_ready),
        ]
        write_pushed = Signal()
        m.d.comb += write_pushed.eq(self.port.wdata.valid & self.port.wdata.ready)
        sync += unclaimed.eq(unclaimed + write_pushed - write_issued)
        with m.If(core_wdata_ready & ~write_buffer.r_rdy):
            sync += self.protocol_error.eq(1)

        m.d.comb += self.idle.eq(
            (read_credits == self.read_buffer_depth) & (write_buffer.level == 0)
        )
        return m
