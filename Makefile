# The two entry points are `make run` and `make test`; both install whatever is
# missing first and are safe to run again.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMPS := .stamps

# Debian packages the project, its tests and its VM image build need. docker.io brings
# the docker CLI (/usr/bin/docker) and the reference dockerd of the differential tests.
APT_PACKAGES := python3-venv python3-dev gcc pkg-config libvirt-dev \
	busybox-static docker-registry skopeo umoci mmdebstrap zstd \
	iptables iproute2 procps e2fsprogs apache2-utils \
	qemu-system-x86 qemu-utils libvirt-daemon-system openssh-client openssh-server sshfs libxml2-utils \
	docker.io tini libseccomp2

ENGINE_SOCKET ?= /run/dockyard/docker.sock
ENGINE_ROOT ?= /var/lib/dockyard

.PHONY: run run-native test lint deps venv clean-venv

# Builds the guest image if missing, creates the default machine once, boots it
# (a no-op when it runs) and prints the DOCKER_HOST line to use.
run: deps venv
	$(VENV)/bin/dockyard machine image build
	@if $(VENV)/bin/dockyard machine status --json | grep -q '"not-created"'; then \
	  $(VENV)/bin/dockyard machine init; fi
	$(VENV)/bin/dockyard machine start

# The engine natively on this Linux host, without a VM (foreground).
run-native: deps venv
	@echo "Dockyard engine (native): export DOCKER_HOST=unix://$(ENGINE_SOCKET)"
	@$(PY) -m desktop.docker_context --host unix://$(ENGINE_SOCKET)
	$(VENV)/bin/dockyard-agent serve --socket $(ENGINE_SOCKET) --root $(ENGINE_ROOT)

test: deps venv lint
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

clean-venv:
	rm -rf $(VENV) $(STAMPS)
