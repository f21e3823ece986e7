# twoline — the two set-up commands are `make run` and `make test`.
# On a fresh machine with only python3 (3.11) they bootstrap uv into .tools/ and sync the workspace.

SHELL := /bin/bash
# Trust the platform's certificate store, as pip does (works behind TLS-inspecting proxies too).
export UV_SYSTEM_CERTS ?= true
UV := $(shell command -v uv 2>/dev/null || echo $(CURDIR)/.tools/bin/uv)

.PHONY: bootstrap run test pytest lint format demo bench clean

$(CURDIR)/.tools/bin/uv:
	python3 -m venv .tools
	.tools/bin/pip install --quiet uv

bootstrap: $(UV)
	$(UV) sync --frozen --quiet

## run: the embedded stack (nats-server, dev token issuer, five services on SQLite); Ctrl-C stops it
run: bootstrap
	$(UV) run --frozen twoline run

## demo: the dual-track story against the stack `make run` started (in another terminal)
demo: bootstrap
	$(UV) run --frozen twoline demo

## bench: speed and memory figures from a stack of its own (BENCH_ARGS="--people 200")
bench: bootstrap
	$(UV) run --frozen twoline bench $(BENCH_ARGS)

## test: ruff (format + check), then the whole suite
test: lint pytest

lint: bootstrap
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen ruff check .

# pytest exits 5 when it collected no tests: that is a failure here, never a pass.
pytest: bootstrap
	@set +e; $(UV) run --frozen pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

format: bootstrap
	$(UV) run --frozen ruff format .
	$(UV) run --frozen ruff check --fix .

clean:
	rm -rf .twoline .pytest_cache .ruff_cache
