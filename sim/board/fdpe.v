// Simulation model of the Xilinx FDPE primitive (a flip-flop with asynchronous preset): the
// generated LiteEth core's reset synchronisers (LiteX's AsyncResetSynchronizer) use four.
module FDPE #(parameter [0:0] INIT = 1'b1) (output reg Q, input C, input CE, input D, input PRE);
  initial Q = INIT;
  always @(posedge C or posedge PRE) if (PRE) Q <= 1'b1; else if (CE) Q <= D;
endmodule
