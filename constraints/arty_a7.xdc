# Additions to the XDC that amaranth-boards generates for the Arty A7 (clock, pins, I/O standards,
# configuration voltage). fpga.build adds this file to the Vivado project of arty_a7 and arty_a7_100.

set_property BITSTREAM.GENERAL.COMPRESS TRUE [current_design]

# The UART pins are asynchronous to the 100 MHz clock: rx goes through hw.uart's two-flop
# synchroniser, tx is a registered output sampled by the FT2232H at <= 12 Mbaud.
set_false_path -from [get_ports uart_0__rx]
set_false_path -to [get_ports uart_0__tx]
