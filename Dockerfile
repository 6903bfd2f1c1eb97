# syntax=docker/dockerfile:1
# ssm-resync container image with a Docker engine: `make docker-image` (docker build -t
# ssm-resync:dev .). Builder: the toolchain image (Cargo.toml's rust-version must be <= its
# rustc); runtime: distroless with glibc and CA certificates, no shell, non-root.
# `make image` (scripts/image.sh) builds the same image without a Docker engine;
# tests/stack/image.rs keeps the two configs in step (USER, WORKDIR, EXPOSE, ENTRYPOINT, CMD,
# LABEL).

FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# BuildKit cache mounts keep the registry and target/ between builds; the binary is copied
# out of the cached target/ because cache mounts are not part of the image. Only the product
# is built: the workspace's harness/ is a dev-dependency (.dockerignore sends its manifest).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin ssm-resync \
    && install -D -m 0755 target/release/ssm-resync /out/ssm-resync

FROM gcr.io/distroless/cc-debian12:nonroot
#checkov:skip=CKV_DOCKER_2:No HEALTHCHECK: Kubernetes ignores it and probes /healthz and /readyz itself (k8s/base), and distroless has no shell or curl to run one.
LABEL org.opencontainers.image.title="ssm-resync" \
      org.opencontainers.image.description="Force-syncs ExternalSecrets the moment an AWS SSM parameter changes (SNS -> Kubernetes)" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/ssm-resync /ssm-resync
# The distroless nonroot user; k8s/base runs it with the same UID (runAsUser: 65532).
USER 65532:65532
WORKDIR /
# 8080: POST /sns (the webhook the load balancer exposes); 9090: /healthz, /readyz, /metrics.
EXPOSE 8080 9090
ENTRYPOINT ["/ssm-resync"]
CMD ["serve"]
