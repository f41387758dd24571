# Additions to the XDC that amaranth-boards generates for the Arty A7 (clock, pins, I/O standards,
# configuration voltage). fpga.build adds this file to the Vivado project of arty_a7 and arty_a7_100.

set_property BITSTREAM.GENERAL.COMPRESS TRUE [current_design]

# The UART pins are asynchronous to the 100 MHz clock: rx goes through hw.uart's two-flop
# synchroniser, tx is a registered output sampled by the FT2232H at <= 12 Mbaud.
set_false_path -from [get_ports uart_0__rx]
set_false_path -to [get_ports uart_0__tx]

# --- DDR3L: LiteDRAM's A7DDRPHY core (fpga.litedram, board build; pins: hw.resources.ARTY_DDR3) --
# Bank 34 holds only the DDR3L pins (VCCO 1.35 V, SSTL135): its input reference is the internal
# VREF at VCCO/2, as LiteX's Arty platform sets (litex_boards/platforms/digilent_arty.py). Harmless
# in a streamed build, where bank 34 is unused.
set_property INTERNAL_VREF 0.675 [get_iobanks 34]

# The core's clock-domain crossings, as litedram_gen writes them to litedram_core.xdc (LiteX's
# Vivado toolchain): MultiReg inputs (mr_ff) are false paths, AsyncResetSynchronizer (ars_ff1/2)
# async presets are false paths and the synchroniser's first stage gets 2 ns to settle. Every
# object query is -quiet: a streamed build has no such cells and these constraints match nothing.
# (The core's PLL clocks are derived by Vivado from clk100's create_clock; litedram_gen emits no
# clock constraints or clock groups of its own.)
set_false_path -quiet -through [get_nets -quiet -hierarchical -filter {mr_ff == TRUE}]
set_false_path -quiet -to [get_pins -quiet -filter {REF_PIN_NAME == PRE} -of_objects [get_cells -quiet -hierarchical -filter {ars_ff1 == TRUE || ars_ff2 == TRUE}]]
set_max_delay 2 -quiet -from [get_pins -quiet -filter {REF_PIN_NAME == C} -of_objects [get_cells -quiet -hierarchical -filter {ars_ff1 == TRUE}]] -to [get_pins -quiet -filter {REF_PIN_NAME == D} -of_objects [get_cells -quiet -hierarchical -filter {ars_ff2 == TRUE}]]
