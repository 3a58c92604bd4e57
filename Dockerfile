# syntax=docker/dockerfile:1
#
# ghalistener: a drop-in replacement image for ARC's listener.
#
# The binary lives at /ghalistener, the path ARC's controller puts in the listener pod's
# `command`, so the image can replace the Go listener through `listenerTemplate` unchanged.
#
#   docker build \
#     --build-arg VERSION=0.1.0 --build-arg COMMIT=$(git rev-parse HEAD) \
#     -t ghcr.io/gha-listener-rs/ghalistener:0.1.0 .
#
# Build stage: a release build of the `listener-bin` package, pinned to Cargo.lock.
ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
WORKDIR /src

# Version and commit are compiled in (read with option_env! by the binary) so that
# `ghalistener --version` and the start-up log name the exact build.
ARG VERSION=dev
ARG COMMIT=unknown
ENV GHALISTENER_VERSION=${VERSION} \
    GHALISTENER_COMMIT=${COMMIT} \
    CARGO_TERM_COLOR=never \
    CARGO_NET_RETRY=5

# The whole workspace is needed: Cargo resolves every member, even when building one package.
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates

# The cache mounts keep the registry and the target directory between builds; the binary is
# copied out in the same step because a cache mount is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p listener-bin --bin ghalistener \
 && install -D -m 0755 target/release/ghalistener /out/ghalistener

# Runtime stage: distroless "cc" has glibc, libgcc_s and the CA bundle at
# /etc/ssl/certs/ca-certificates.crt (read by rustls-native-certs), no shell, no package
# manager. The :nonroot tag runs as uid/gid 65532.
FROM ${RUNTIME_IMAGE}

ARG VERSION=dev
ARG COMMIT=unknown
ARG CREATED=""
LABEL org.opencontainers.image.title="ghalistener" \
      org.opencontainers.image.description="Rust drop-in replacement for the actions-runner-controller scale-set listener" \
      org.opencontainers.image.source="https://github.com/gha-listener-rs/gha-listener-rs" \
      org.opencontainers.image.url="https://github.com/gha-listener-rs/gha-listener-rs" \
      org.opencontainers.image.documentation="https://github.com/gha-listener-rs/gha-listener-rs/blob/main/docs/install.md" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}" \
      org.opencontainers.image.created="${CREATED}"

COPY --from=build --chown=0:0 /out/ghalistener /ghalistener

# Explicit, so the root store does not depend on probing well-known paths.
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
# Numeric uid so Kubernetes can verify runAsNonRoot without a passwd lookup.
USER 65532:65532
# ARC sets LISTENER_CONFIG_PATH and mounts config.json; metrics default to :8080 when the
# controller enables them (--listener-metrics-addr).
EXPOSE 8080
ENTRYPOINT ["/ghalistener"]
