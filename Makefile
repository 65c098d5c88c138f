# rtstream: every set-up step lives here, so a fresh machine needs only `make demo` or `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Debian packages of the real peers the suite talks to (and the demo may use).
DEB_PACKAGES := gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
	gstreamer1.0-plugins-ugly ffmpeg orthanc dcmtk dicom3tools mosquitto \
	chromium chromium-driver iproute2 procps python3-venv nodejs janus
DEMO_DEB_PACKAGES := python3-venv
PYTEST_ARGS ?=
# e.g. make demo DEMO_ARGS="--analyze examples/bright_band.py:detect"
DEMO_ARGS ?=

.PHONY: demo test deps demo-deps venv lint typecheck bench clean

demo: demo-deps venv
	$(VENV)/bin/rtstream demo $(DEMO_ARGS)

test: deps venv
	$(PY) -m pytest $(PYTEST_ARGS)

# Install the Debian packages that are missing (from the list in $(1)), when we are root
# and have apt-get; otherwise say which are missing.
define install_debs
	@missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then echo "deps: all Debian packages present"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "deps: installing$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	else echo "deps: missing Debian packages:$$missing (run as root to install them)"; fi
endef

# Everything the suite's real peers need.
deps:
	$(call install_debs,$(DEB_PACKAGES))

# The demo runs on Python packages alone; Debian's Python needs its venv module.
demo-deps:
	$(call install_debs,$(DEMO_DEB_PACKAGES))

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,examples]'
	touch $@

lint: venv
	$(VENV)/bin/ruff check rtstream tests

typecheck: venv
	$(VENV)/bin/mypy

bench: venv
	$(VENV)/bin/rtstream bench wire

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache
