// UDP echo over the generated LiteEth core (fpga.build.liteeth, raw port "host"): the test top of
// the simulated board's Ethernet (sim/board/ethernet.h, tests/sim/test_eth_network.py).
//
// Every datagram the core delivers is stored whole, then sent back to its sender: ip_address
// kept, dst_port := src_port, src_port := dst_port, same length. host_source_ready stays high:
// the core's receive path has no packet buffer (the raw port has no FIFO, the MAC a 32-entry
// clock-crossing FIFO after its CRC check), so a stall loses bytes of the datagram arriving
// (silently: see ethernet.h). A datagram that does not fit the buffer (or arrives with `error`)
// is dropped whole.
//
// host_sink_dst_port is also the port LiteEth routes received datagrams by: it is LISTEN_PORT
// while nothing is being sent, and the reply's port while one is (a datagram reaching the UDP
// layer then is delivered only if the two are equal: the harness's host port translation makes
// every host send from LISTEN_PORT).
module eth_loopback #(
    parameter [15:0] LISTEN_PORT = 16'd2000,
    parameter DEPTH_LOG2 = 14  // 16 KiB of datagrams
) (
    input  wire       clk,
    input  wire       rst,
    input  wire       eth_mii_clocks_tx,
    input  wire       eth_mii_clocks_rx,
    input  wire [3:0] eth_mii_rx_data,
    input  wire       eth_mii_rx_dv,
    input  wire       eth_mii_rx_er,
    input  wire       eth_mii_col,
    input  wire       eth_mii_crs,
    output wire [3:0] eth_mii_tx_data,
    output wire       eth_mii_tx_en,
    output wire       eth_mii_rst_n,
    output wire       eth_mii_mdc,
    output wire       idle,           // nothing buffered or being received
    output reg [31:0] echoed,         // datagrams sent back
    output reg [31:0] dropped,        // datagrams dropped (no room, or error)
    output reg [31:0] errors          // of which with `error` set by the core
);
    localparam DEPTH = 1 << DEPTH_LOG2;
    localparam META = 16;  // datagrams buffered at most

    wire [7:0]  src_data;
    wire [15:0] src_dst_port, src_src_port, src_length;
    wire [31:0] src_ip;
    wire        src_valid, src_last, src_last_be, src_error;
    wire        sink_ready;
    reg         sink_valid;
    wire [15:0] sink_dst_port;
    wire        mdio;

    reg  [7:0]  mem [0:DEPTH-1];
    reg  [DEPTH_LOG2:0] wr, wr_commit, rd;  // one more bit than the address: full vs empty
    reg  [31:0] meta_ip   [0:META-1];
    reg  [15:0] meta_src  [0:META-1];
    reg  [15:0] meta_dst  [0:META-1];
    reg  [15:0] meta_len  [0:META-1];
    reg  [4:0]  meta_wr, meta_rd;
    reg         receiving, discarding;
    reg  [15:0] count;  // bytes of the datagram being received
    reg  [15:0] sent;   // bytes of the datagram being sent
    reg  [31:0] cur_ip;
    reg  [15:0] cur_src, cur_dst;

    wire [3:0]  mi = meta_rd[3:0];
    wire        have = meta_wr != meta_rd;
    wire [DEPTH_LOG2:0] used = wr - rd;
    wire [4:0]  queued = meta_wr - meta_rd;  // (sized: a 32-bit difference would not wrap)
    wire        room = (DEPTH - used) >= 2048 && queued < META;
    wire        sink_last = sent + 16'd1 == meta_len[mi];
    assign sink_dst_port = have ? meta_src[mi] : LISTEN_PORT;
    assign idle = !have && !receiving;

    liteeth_core core (
        .sys_clock(clk),
        .sys_reset(rst),
        .mii_clocks_tx(eth_mii_clocks_tx),
        .mii_clocks_rx(eth_mii_clocks_rx),
        .mii_rx_data(eth_mii_rx_data),
        .mii_rx_dv(eth_mii_rx_dv),
        .mii_rx_er(eth_mii_rx_er),
        .mii_col(eth_mii_col),
        .mii_crs(eth_mii_crs),
        .mii_tx_data(eth_mii_tx_data),
        .mii_tx_en(eth_mii_tx_en),
        .mii_rst_n(eth_mii_rst_n),
        .mii_mdc(eth_mii_mdc),
        .mii_mdio(mdio),
        .host_source_valid(src_valid),
        .host_source_ready(1'b1),
        .host_source_last(src_last),
        .host_source_last_be(src_last_be),
        .host_source_data(src_data),
        .host_source_error(src_error),
        .host_source_ip_address(src_ip),
        .host_source_src_port(src_src_port),
        .host_source_dst_port(src_dst_port),
        .host_source_length(src_length),
        .host_sink_valid(have),
        .host_sink_ready(sink_ready),
        .host_sink_last(sink_last),
        .host_sink_last_be(1'b1),
        .host_sink_data(mem[rd[DEPTH_LOG2-1:0]]),
        .host_sink_ip_address(meta_ip[mi]),
        .host_sink_src_port(meta_dst[mi]),
        .host_sink_dst_port(sink_dst_port),
        .host_sink_length(meta_len[mi])
    );

    always @(posedge clk) begin
        if (rst) begin
            wr <= 0; wr_commit <= 0; rd <= 0; meta_wr <= 0; meta_rd <= 0;
            receiving <= 0; discarding <= 0; count <= 0; sent <= 0;
            echoed <= 0; dropped <= 0; errors <= 0;
        end else begin
            // receive: always ready
            if (src_valid) begin
                if (!receiving) begin  // first byte: room for a whole datagram?
                    receiving <= !src_last;
                    discarding <= !room;
                    cur_ip <= src_ip; cur_src <= src_src_port; cur_dst <= src_dst_port;
                end
                if (receiving ? !discarding : room) begin
                    mem[wr[DEPTH_LOG2-1:0]] <= src_data;
                    wr <= wr + 1'd1;
                end
                count <= receiving ? count + 16'd1 : 16'd1;
                if (src_last) begin
                    receiving <= 0;
                    if ((receiving ? discarding : !room) || src_error) begin
                        wr <= wr_commit;
                        dropped <= dropped + 1;
                        if (src_error) errors <= errors + 1;
                    end else begin
                        meta_ip[meta_wr[3:0]]  <= receiving ? cur_ip : src_ip;
                        meta_src[meta_wr[3:0]] <= receiving ? cur_src : src_src_port;
                        meta_dst[meta_wr[3:0]] <= receiving ? cur_dst : src_dst_port;
                        meta_len[meta_wr[3:0]] <= receiving ? count + 16'd1 : 16'd1;
                        meta_wr <= meta_wr + 1'd1;
                        wr_commit <= wr + 1'd1;
                    end
                end
            end
            // send
            if (have && sink_ready) begin
                rd <= rd + 1'd1;
                sent <= sink_last ? 16'd0 : sent + 16'd1;
                if (sink_last) begin
                    meta_rd <= meta_rd + 1'd1;
                    echoed <= echoed + 1;
                end
            end
        end
    end
endmodule
