# dubfleet: two commands — `make run` and `make test` (each sets up first if needed).
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-done

.PHONY: setup run test test-fast bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh

run: setup
	$(PY) scripts/run_demo.py

test: setup
	$(VENV)/bin/pytest -ra

test-fast: setup
	$(VENV)/bin/pytest -ra -m "not media"

bench: setup
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) data .pytest_cache
