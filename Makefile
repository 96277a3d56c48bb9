# mvr: set-up, demo and tests, reached through `./run demo` and `./run test` (the README's Quick start).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO ?= demo
export MVR_CACHE ?= $(HOME)/.cache/mvr

.PHONY: demo test serve system-deps test-deps clean-demo

# Debian packages mvr needs at run time, installed only if missing; the tests also drive a real browser.
APT_INSTALL = $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq
system-deps:
	@command -v ffmpeg >/dev/null && $(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || \
	  { $(APT_INSTALL) ffmpeg python3-venv >/dev/null; }

# The Ray cluster test runs its cluster in a loopback-only network namespace: util-linux's unshare (essential on
# Debian) and iproute2's ip.
test-deps: system-deps
	@command -v chromium >/dev/null || { $(APT_INSTALL) chromium >/dev/null; }
	@command -v ip >/dev/null || { $(APT_INSTALL) iproute2 >/dev/null; }

# The lean install (no torch: EfficientNet-Lite0 and MusiCNN run on ONNX Runtime) for the demo and the dashboard;
# the tests add their own extra (torch as the ONNX graphs' oracle, pytest, Ray, the pyAudioAnalysis oracle).
$(BIN)/mvr: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[web,plots,map]'
	@touch $@

$(VENV)/.test-extra: $(BIN)/mvr
	$(BIN)/pip install -q -e '.[web,plots,map,test]'
	@touch $@

# Builds a small labelled collection from real open media, indexes it, and shows one query per modality.
demo: system-deps $(BIN)/mvr
	$(BIN)/mvr dataset build $(DEMO)/collection --size small
	$(BIN)/mvr index $(DEMO)/collection/manifest.csv --catalog $(DEMO)/catalog --quiet
	$(BIN)/mvr tune --catalog $(DEMO)/catalog
	@query=$$(sed -n 2p $(DEMO)/collection/manifest.csv | cut -d, -f1); \
	for modality in audio musicnn visual fused; do \
	  echo; $(BIN)/mvr query $(DEMO)/collection/$$query --catalog $(DEMO)/catalog --modality $$modality || exit 1; \
	done

test: test-deps $(VENV)/.test-extra
	$(BIN)/python -m pytest -q

# The dashboard over the demo catalog, on http://127.0.0.1:8000
serve: $(BIN)/mvr
	$(BIN)/mvr serve --catalog $(DEMO)/catalog

clean-demo:
	rm -rf $(DEMO)
