# Shortcuts; each target sets up what it needs first (scripts/setup is idempotent).
.PHONY: quickstart test bench bench-quick bench-history bench-compare docs
BASE ?= main
N ?= 10
quickstart:
	scripts/wsibench run workloads/quickstart.toml
test:
	scripts/test
bench:            # record HEAD in asv's own virtualenv, publish .asv/html
	scripts/bench
bench-quick:      # one sample of every benchmark in .venv, nothing saved
	scripts/bench --quick
bench-history:    # record the last N commits of main: make bench-history N=20
	scripts/bench --history $(N)
bench-compare:    # the regression gate, HEAD against BASE: make bench-compare BASE=origin/main
	scripts/bench --compare $(BASE)
docs:             # regenerate docs/run-record.md and docs/workload-reference.md
	scripts/setup && .venv/bin/python -m harness.docs
