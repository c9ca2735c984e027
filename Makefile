# recovery-fs: the two commands of the README are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 20490
BIND   ?= 0.0.0.0
DEMO   ?= .cache/demo-storage
STATE  ?= .cache/state

.PHONY: all deps-run deps-test venv run demo test check lint unit proto e2e bench bench-short bench-writes bench-tls soak fuzz fuzz-short clean

all: check

deps-run:
	tools/install-deps tools/apt-run.txt

deps-test: deps-run
	tools/install-deps tools/apt-test.txt

# the C extensions (setup.py) are built in place by the editable install: rebuilt when a source changes
NATIVE_SRC := $(wildcard $(addsuffix /*.c,xdr nfsd nfsd/* nfsd/*/* merge exports instant))
$(BIN)/.installed: setup.cfg setup.py $(NATIVE_SRC)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $@

venv: deps-run $(BIN)/.installed

## make run: a demo storage tree, then the server on it in the foreground.
## The demo's own exports list: any host, any source port (EXPORTS= to change).
EXPORTS ?= /recover/images *(ro,insecure)
run: venv
	$(BIN)/recovery-fs demo --storage $(DEMO)
	@mkdir -p $(STATE)
	@printf '# written by make run\n%s\n' '$(EXPORTS)' > $(STATE)/exports
	@echo "exports ($(STATE)/exports):"; $(BIN)/recovery-fs exports show --exports $(STATE)/exports --state-dir $(STATE)
	$(BIN)/recovery-fs serve --storage $(DEMO) --bind $(BIND) --port $(PORT) \
	    --no-portmap --state-dir $(STATE) --log-file $(STATE)/recovery_fs.log \
	    --exports $(STATE)/exports --print-mount

## make check: lint, types and the fast tests.
lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check xdr nfsd merge exports instant
	$(BIN)/mypy

check: lint
	$(BIN)/pytest -m "not e2e and not slow" tests

## make test: everything CI runs; then the unit and protocol suites again on the
## pure-Python twins of the C extensions (setup.py), as a machine without a compiler runs.
test: deps-test venv lint
	$(BIN)/pytest tests
	RECOVERY_FS_PURE=1 $(BIN)/pytest -q tests/unit tests/proto

bench: deps-test venv
	bench/run --full && bench/instant_bench --full

bench-short: deps-test venv
	bench/run --short

## make bench-writes: instant recovery's writes against ganesha's read-write export
## (docs/performance-writes.md); the short form runs in make test.
bench-writes: deps-test venv
	bench/instant_bench --full --update-docs

## make bench-tls: sequential 1 MiB READ over RPC-with-TLS against plain TCP (docs/performance.md).
bench-tls: venv
	$(BIN)/python bench/tls_read.py --update-docs

## make soak: the hostile loads of issue 7, full size, recovery-fs and ganesha side by side.
soak: deps-test venv
	bench/soak --full

## make fuzz: atheris over the sans-IO path for FUZZ_SECONDS (tests/fuzz/README.md);
## crashes land in tests/fuzz/crashes/, where tests/unit/test_fuzz_corpus.py replays them.
FUZZ_SECONDS ?= 600
fuzz: venv
	@mkdir -p .cache/fuzz-corpus
	$(BIN)/python -m tests.fuzz.fuzz_rpc -max_total_time=$(FUZZ_SECONDS) -timeout=10 \
	    -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix=tests/fuzz/crashes/ \
	    .cache/fuzz-corpus tests/fuzz/corpus

## make fuzz-short: the 30 s run that make test includes.
fuzz-short: venv
	$(BIN)/pytest tests/fuzz/test_fuzz_short.py

clean:
	rm -rf $(VENV) .cache build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
