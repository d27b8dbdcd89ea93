# Every target does its own set-up: system packages (as root), .venv, pinned Python packages, compiled modules.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
DATA ?= $(CURDIR)/var

.PHONY: build run test bench clean api-docs rpm
.DEFAULT_GOAL := build

$(VENV)/.stamp-system: tools/system-deps.sh
	bash tools/system-deps.sh
	$(PYTHON) -m venv $(VENV)
	touch $@

# Build requirements come from pyproject.toml's [build-system], the one place they are pinned.
$(VENV)/.stamp-deps: $(VENV)/.stamp-system pyproject.toml
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $$($(PY) -c "import tomllib; print(' '.join(tomllib.load(open('pyproject.toml','rb'))['build-system']['requires']))")
	$(PY) -m pip install -q --no-build-isolation -e '.[test]'
	touch $@

build: $(VENV)/.stamp-deps $(VENV)/bin/xapi-nfs-mount
	$(PY) setup.py -q build_ext --inplace -j 2

# The userspace NFS client (FUSE over libnfs) that nfs and iso SRs use where the kernel has no NFS,
# next to the interpreter where the drivers look; without libnfs or fuse3 it is left out (mount.nfs only).
$(VENV)/bin/xapi-nfs-mount: csrc/nfs_fuse.c $(VENV)/.stamp-system
	@if pkg-config --exists libnfs fuse3 2>/dev/null; then \
		echo "cc -o $@ csrc/nfs_fuse.c"; \
		$(CC) -O2 -Wall -o $@ csrc/nfs_fuse.c $$(pkg-config --cflags --libs fuse3 libnfs); \
	else echo "xapi-nfs-mount not built: no libnfs-dev or libfuse3-dev (tools/system-deps.sh installs them)"; fi

run: build
	XAPI_DATA_DIR=$${XAPI_DATA_DIR:-$(DATA)} $(VENV)/bin/xapi serve --http-port 8080 --https-port 8443 --auth $${XAPI_AUTH:-local}

test: build
	bash tools/node-deps.sh
	$(PY) -m pytest -q tests

bench: build
	$(PY) bench/run_all.py

clean:
	rm -rf build $(VENV) xapi/*.so xapi/_*.c *.egg-info

# Client stubs (xapi/client.pyi) and the API reference (docs/api.md), generated from xapi/datamodel.
api-docs: $(VENV)/.stamp-deps
	$(PY) tools/gen_api.py

# Binary RPM for dom0 (packaging/xapi.spec) from the committed tree (git archive HEAD), built with
# the venv's Cython/cffi; leaves build/rpm/RPMS/<arch>/pyxapi-*.rpm. --nodeps: Debian's rpm
# database knows none of the spec's BuildRequires.
RPM_TOP := $(CURDIR)/build/rpm
RPM_VERSION = $(shell $(PY) -c "import tomllib; print(tomllib.load(open('pyproject.toml','rb'))['project']['version'])")
rpm: $(VENV)/.stamp-deps
	rm -rf $(RPM_TOP)
	mkdir -p $(RPM_TOP)/SOURCES $(RPM_TOP)/SPECS
	git archive --format=tar.gz --prefix=pyxapi-$(RPM_VERSION)/ -o $(RPM_TOP)/SOURCES/pyxapi-$(RPM_VERSION).tar.gz HEAD
	cp packaging/*.sh packaging/xapi.conf packaging/xe-completion packaging/logrotate-xapi packaging/systemd/* $(RPM_TOP)/SOURCES/
	cp packaging/pam.d/xapi.dom0 $(RPM_TOP)/SOURCES/pam.d-xapi
	rpmbuild -bb --nodeps --define "_topdir $(RPM_TOP)" --define "__python3 $(CURDIR)/$(PY)" \
		--define "pyxapi_version $(RPM_VERSION)" \
		$(if $(shell pkg-config --exists libnfs fuse3 2>/dev/null && echo y),,--without nfs_fuse) packaging/xapi.spec
