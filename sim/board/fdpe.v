// Xilinx's FDPE (a D flip-flop with clock enable and asynchronous preset) for Verilator: LiteEth's
// generated core uses four, in LiteX's reset synchroniser. Behaviour as in UG953.
module FDPE #(parameter [0:0] INIT = 1'b1, parameter [0:0] IS_C_INVERTED = 1'b0,
              parameter [0:0] IS_D_INVERTED = 1'b0, parameter [0:0] IS_PRE_INVERTED = 1'b0)
             (output reg Q, input C, input CE, input D, input PRE);
  initial Q = INIT;
  always @(posedge C or posedge PRE)
    if (PRE) Q <= 1'b1;
    else if (CE) Q <= D;
endmodule
