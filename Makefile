# The two commands a newcomer needs: `make demo` and `make test`. Both bootstrap .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
export MUJOCO_GL ?= egl
export PYTHONUNBUFFERED := 1

.PHONY: bootstrap demo lint test test-fast bench clean

bootstrap:
	@bash scripts/bootstrap.sh

demo: bootstrap
	$(PY) -m genil_ros.cli demo $(DEMO_ARGS)

lint: bootstrap
	$(PY) -m ruff check

test: lint
	$(PY) -m pytest test -q -ra $(TEST_ARGS)

bench: bootstrap
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf build install log .pytest_cache
