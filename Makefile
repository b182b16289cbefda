# Shortcuts; each target sets up what it needs first (scripts/setup is idempotent).
.PHONY: quickstart test bench bench-quick
quickstart:
	scripts/wsibench run workloads/quickstart.toml
test:
	scripts/test
bench:
	scripts/bench
bench-quick:
	scripts/bench --quick
