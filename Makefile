# cynic.cluster — every set-up step is here, so that a fresh Debian 12 machine (as root) needs
# only `make lab` or `make test`. Each step is skipped when already done.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV        := .venv
PY          := $(CURDIR)/$(VENV)/bin/python
BIN         := $(CURDIR)/$(VENV)/bin
CACHE       := .cache
IMAGE       := cynic-lab/debian12:latest
IMAGE_13    := cynic-lab/debian13:latest
WHEELHOUSE  := $(CACHE)/wheelhouse
# The same wheels for Debian 13 hosts (python3 3.13): the cluster scenario's lb and data hosts.
WHEELHOUSE_PY313 := $(CACHE)/wheelhouse-py313
STANDINS    := $(CACHE)/standins
COLLECTIONS := $(CACHE)/collections
export ANSIBLE_COLLECTIONS_PATH := $(CURDIR)/$(COLLECTIONS)
export ANSIBLE_INJECT_FACT_VARS := false
export PATH := $(BIN):$(PATH)

.PHONY: help
help:
	@echo "make lab        deploy the whole cluster into local containers and print where it answers"
	@echo "make lab-down   remove the lab containers"
	@echo "make test       lint, sanity, unit/integration tests, galaxy build+install, molecule"
	@echo "make stress     the 150 req/s check against the lab, report in reports/"
	@echo "make docs       docs/VARIABLES.md from the roles' argument specs; make changelog: CHANGELOG.md"
	@echo "make bench-node / make bench / make bench-kernel   benchmarks that write reports/"

# --- set-up ------------------------------------------------------------------------------------
$(VENV)/.installed: requirements/controller.txt
	@command -v python3 >/dev/null || { apt-get update -q && apt-get install -y -q python3 python3-venv; }
	@test -x $(PY) || python3 -m venv $(VENV) || { apt-get update -q && apt-get install -y -q python3-venv && python3 -m venv $(VENV); }
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements/controller.txt
	$(BIN)/pip install -q --no-deps -e cynic_node
	touch $@

.PHONY: venv
venv: $(VENV)/.installed $(COLLECTIONS)/ansible_collections/cynic/cluster

# Ansible finds this checkout as the collection cynic.cluster through a link.
$(COLLECTIONS)/ansible_collections/cynic/cluster:
	mkdir -p $(COLLECTIONS)/ansible_collections/cynic
	ln -sfn $(CURDIR) $@

.PHONY: docker
docker:
	@scripts/ensure-docker.sh

# Debian 12 and Debian 13 base images (each about 65 s the first time, skipped once it exists).
.PHONY: image
image: docker
	@scripts/build-image.sh $(IMAGE) bookworm
	@scripts/build-image.sh $(IMAGE_13) trixie

$(WHEELHOUSE)/.built: requirements/wheelhouse.txt $(VENV)/.installed
	mkdir -p $(WHEELHOUSE)
	$(BIN)/pip wheel -q -w $(WHEELHOUSE) -r requirements/wheelhouse.txt
	touch $@

.PHONY: wheelhouse
wheelhouse: $(WHEELHOUSE)/.built

# Debian 13's python3 is 3.13, another ABI than the controller's 3.11: the binary wheels of the same
# requirements for CPython 3.13 (pip download, no build), for the stand-ins' and the load
# generator's virtualenvs on the Debian 13 hosts of the cluster scenario.
PY313_PLATFORMS := manylinux_2_34_x86_64 manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
                   manylinux_2_5_x86_64 manylinux1_x86_64
$(WHEELHOUSE_PY313)/.built: requirements/wheelhouse.txt $(VENV)/.installed
	mkdir -p $(WHEELHOUSE_PY313)
	$(BIN)/pip download -q --only-binary=:all: --implementation cp --python-version 3.13 --abi cp313 \
	  $(addprefix --platform ,$(PY313_PLATFORMS)) -d $(WHEELHOUSE_PY313) -r requirements/wheelhouse.txt
	touch $@

.PHONY: wheelhouse-py313
wheelhouse-py313: $(WHEELHOUSE_PY313)/.built

# Release-shaped archives of the test stand-ins (tests/standins), checked by the roles exactly
# like the official ones.
STANDIN_SRC := $(shell find tests/standins -type f -not -name '*.pyc' -not -path '*/__pycache__/*' 2>/dev/null)
$(STANDINS)/.built: $(STANDIN_SRC)
	mkdir -p $(STANDINS)
	tests/standins/surreal/package.sh $(STANDINS)
	tests/standins/ollama/package.sh $(STANDINS)
	touch $@

.PHONY: standins
standins: $(STANDINS)/.built

.PHONY: setup
setup: venv image wheelhouse wheelhouse-py313 standins

# --- checks --------------------------------------------------------------------------------------
.PHONY: lint
lint: venv
	$(BIN)/yamllint -s .
	@command -v shellcheck >/dev/null || { apt-get update -q >/dev/null; DEBIAN_FRONTEND=noninteractive apt-get install -y -q shellcheck >/dev/null; }
	shellcheck scripts/*.sh .ci/run tests/standins/*/package.sh
	$(BIN)/ansible-lint --profile production
	$(BIN)/antsibull-changelog lint
	$(BIN)/ruff check plugins tests tools cynic_node scripts
	cd cynic_node && $(BIN)/mypy
	$(PY) scripts/check-argspecs.py
	for p in playbooks/*.yml playbooks/drills/*.yml; do [ -f "$$p" ] || continue; \
	  $(BIN)/ansible-playbook -i inventories/example --syntax-check "$$p" >/dev/null || exit 1; done
	$(BIN)/ansible-inventory -i inventories/lab --graph >/dev/null

# CHANGELOG.md from changelogs/: the new fragments join galaxy.yml's version (the one being prepared).
# The plugin cache is rebuilt on every run (so it never lists a plugin that is gone) and not kept.
.PHONY: changelog
changelog: venv
	$(BIN)/antsibull-changelog release --update-existing && rm -f changelogs/.plugin-cache.yaml

# docs/VARIABLES.md from the roles' argument specs (tests/unit/scripts/test_variables_doc.py fails when it is stale).
.PHONY: docs
docs: venv
	$(PY) scripts/gen_variables_doc.py

.PHONY: sanity
sanity: venv
	scripts/sanity.sh

# Debian's nginx binary, unpacked (never installed: no service starts), for the tests that run
# `nginx -t` on the rendered load-balancer config.
NGINX_ROOT := $(CACHE)/nginx
$(NGINX_ROOT)/usr/sbin/nginx:
	rm -rf $(NGINX_ROOT) && mkdir -p $(NGINX_ROOT)/debs
	cd $(NGINX_ROOT)/debs && { apt-get download -q nginx nginx-common 2>/dev/null || { apt-get update -q >/dev/null && apt-get download -q nginx nginx-common; }; }
	for deb in $(NGINX_ROOT)/debs/*.deb; do dpkg-deb -x "$$deb" $(NGINX_ROOT); done

.PHONY: unit
# One worker per CPU, except for the tests that compare timings measured in one run (a latency
# ratio, a kept rate, overlapping LLM calls): another worker's load would skew one side of the
# comparison, so they run alone, after the rest.
# The firewall tests run nftables in containers of the lab images (without them they skip).
UNIT_WORKERS ?= auto
TIMED_TESTS := cynic_node/tests/test_ws_flood.py cynic_node/tests/test_linear_time.py cynic_node/tests/test_scoring.py \
               cynic_node/tests/test_llm_tier.py tests/unit/plugins/module_utils/test_cynic_load.py \
               tests/standins/ollama/test_serving.py
PYTEST_UNIT := NGINX_BIN=$(CURDIR)/$(NGINX_ROOT)/usr/sbin/nginx $(PY) -m pytest -q
unit: venv image $(NGINX_ROOT)/usr/sbin/nginx
	$(PYTEST_UNIT) -n $(UNIT_WORKERS) --durations=15 $(addprefix --ignore=,$(TIMED_TESTS)) \
	  tests/unit tests/standins cynic_node/tests
	$(PYTEST_UNIT) $(TIMED_TESTS)

.PHONY: galaxy
# Build the collection and install the tarball offline into an empty path (not the checkout's link),
# then check that Ansible finds its roles and modules there.
GALAXY_DIR := $(CURDIR)/$(CACHE)/galaxy
galaxy: venv
	rm -rf $(GALAXY_DIR) && mkdir -p $(GALAXY_DIR)/installed
	$(BIN)/ansible-galaxy collection build --output-path $(GALAXY_DIR) .
	ANSIBLE_COLLECTIONS_PATH=$(GALAXY_DIR)/installed $(BIN)/ansible-galaxy collection install --offline \
	  -p $(GALAXY_DIR)/installed $(GALAXY_DIR)/cynic-cluster-*.tar.gz
	cd /tmp && ANSIBLE_COLLECTIONS_PATH=$(GALAXY_DIR)/installed $(BIN)/ansible-doc -l cynic.cluster \
	  | tee $(GALAXY_DIR)/modules.txt
	grep -q '^cynic.cluster.cynic_stress ' $(GALAXY_DIR)/modules.txt
	grep -q '^cynic.cluster.cynic_cluster_facts ' $(GALAXY_DIR)/modules.txt
	cd /tmp && ANSIBLE_COLLECTIONS_PATH=$(GALAXY_DIR)/installed $(BIN)/ansible-doc -t role -l cynic.cluster \
	  | tee $(GALAXY_DIR)/roles.txt
	for r in surrealdb ollama cynic nginx_lb loadgen firewall stress; do grep -q "^cynic.cluster.$$r:" $(GALAXY_DIR)/roles.txt || { echo "role $$r missing from the built collection"; exit 1; }; done
	@echo "galaxy: built and installed offline: $$(ls $(GALAXY_DIR)/*.tar.gz)"

SCENARIOS ?= $(notdir $(patsubst %/molecule.yml,%,$(wildcard molecule/*/molecule.yml)))
.PHONY: molecule
molecule: setup
	@for s in $(SCENARIOS); do \
	  echo "==> molecule test -s $$s"; start=$$(date +%s); \
	  $(BIN)/molecule test -s $$s || exit 1; \
	  echo "==> molecule test -s $$s passed in $$(( $$(date +%s) - start )) s"; \
	done

.PHONY: test
test: lint sanity unit galaxy molecule
	@echo "make test: all green"

# --- the lab -------------------------------------------------------------------------------------
.PHONY: lab
lab: setup
	scripts/lab.sh up

# The 150 req/s check against the lab (playbooks/stress.yml, the role cynic.cluster.stress; extra options: make stress ARGS='-e stress_rate=300').
.PHONY: stress
stress: lab
	ansible-playbook -i inventories/lab playbooks/stress.yml $(ARGS)

.PHONY: lab-down
lab-down:
	scripts/lab.sh down

# --- benchmarks (they write reports/, they assert nothing) --------------------------------------
.PHONY: bench-node
bench-node: setup
	mkdir -p reports
	$(PY) cynic_node/bench/bench_node.py --out reports/bench-node.md

# Cost of the journal's fsync policy (none/batch/line) x SurrealDB's sync before acknowledge
# (false/true) for one node at fixed 150 and 400 req/s, ABCDEF FEDCBA, data in /var/tmp; writes
# reports/bench-journal.md (about 6 min, after waiting up to 45 min for running molecule tests).
.PHONY: bench-journal
bench-journal: setup
	mkdir -p reports
	$(PY) cynic_node/bench/bench_journal.py --out reports/bench-journal.md

# Capacity of the lab cluster: ramps the rate until p99 > 100 ms, an error or a drop; then the LLM tier with one and
# two Ollama servers (90 % REFLEX / 10 % MICRO, a second container cynic-lab-llm2 for the run; scripts/bench.py
# --skip-llm leaves it out); writes reports/bench-cluster.md.
.PHONY: bench
bench: lab
	$(PY) scripts/bench.py --out reports/bench-cluster.md

# The public CYNIC kernel (../shared/cynic-kernel/) in its own container, converged like the molecule scenario
# kernel: capacity of 1 instance direct and 1/2/3 through nginx, CPU per judgment, duplicates under least_conn
# and cell affinity; writes reports/bench-kernel.md (about 20 min). Needs nothing else running on the machine.
.PHONY: bench-kernel
bench-kernel: setup
	$(PY) scripts/bench_kernel.py --out reports/bench-kernel.md
