# bedside: `make run` and `make test` are the two commands the README promises.
CARGO ?= cargo
OPERATOR := target/debug/bedside-operator
MEDIA_NODE := target/debug/bedside-media-node

.PHONY: run test test-deps build crd lint fmt bench

## run: build, print the HealthcareTenant CRD, and check the examples as a pipeline would
run: build
	@echo "== The HealthcareTenant CRD (crds/healthcaretenant.yaml) =="
	@$(OPERATOR) crd | head -n 40
	@echo "   ... ($$($(OPERATOR) crd | wc -l) lines; apply with: kubectl apply --server-side -f crds/healthcaretenant.yaml)"
	@echo
	@echo "== bedside-operator validate examples/*.yaml =="
	@$(OPERATOR) validate examples/*.yaml
	@echo
	@echo "== A tenant that unlocks recording is refused, with the reason =="
	@$(OPERATOR) validate examples/invalid/recording-enabled.yaml || true
	@echo
	@echo "== bedside-media-node check-config examples/node-config/mercy-clinic.yaml =="
	@$(MEDIA_NODE) check-config examples/node-config/mercy-clinic.yaml

build:
	$(CARGO) build --locked --bins

## test: install what the tests need (Debian/Ubuntu), then run formatting, lints and every test
test: test-deps
	$(CARGO) fmt --all --check
	$(CARGO) clippy --locked --workspace --all-targets --all-features -- -D warnings
	$(CARGO) nextest run --locked --workspace --all-features --no-fail-fast

test-deps:
	./scripts/test-deps.sh

## crd: regenerate the committed CRD (the chart carries the same file)
crd:
	$(CARGO) run --locked -q -p bedside-operator -- crd > crds/healthcaretenant.yaml
	cp crds/healthcaretenant.yaml charts/bedside/crds/healthcaretenant.yaml

fmt:
	$(CARGO) fmt --all

bench:
	$(CARGO) bench --locked -p bedside-benches
