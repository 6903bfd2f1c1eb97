# The two commands: `make run` (the demo on the local stack) and `make test` (everything).
.PHONY: run test stack-up stack-down stack-status build image docker-image

run:
	scripts/demo.sh

test:
	scripts/test.sh

stack-up:
	scripts/install-deps.sh
	scripts/build-go-tool.sh --all
	scripts/stack.sh up

stack-down:
	scripts/stack.sh down

stack-status:
	scripts/stack.sh status

build:
	cargo build --locked --release --bin ssm-resync

# The container image without a Docker engine (Debian's umoci and skopeo): an OCI layout and
# archives in target/image/, tagged ssm-resync:dev and ghcr.io/example/ssm-resync:<version>.
image:
	scripts/image.sh

# The same image from the Dockerfile; needs a Docker engine (multi-stage build, distroless
# runtime, non-root).
docker-image:
	docker build -t ssm-resync:dev .

# Fuzz each target for FUZZ_SECONDS (cargo-fuzz on the stable toolchain via RUSTC_BOOTSTRAP).
FUZZ_SECONDS ?= 60
.PHONY: fuzz
fuzz:
	scripts/fuzz.sh $(FUZZ_SECONDS)
.PHONY: bench
bench:
	scripts/bench.sh
