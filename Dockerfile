# The `crossfade` binary in a small non-root image: controller (`crossfade controller --kube`),
# proxy and CLI alike. Build from the repository root:
#
#   docker build -t crossfade:dev .
#
# Stage 1 compiles with the toolchain the repository pins (rust-toolchain.toml, 1.95.0) and the
# exact dependency versions of Cargo.lock (--locked). TLS is rustls (no OpenSSL), so the binary
# needs only glibc and libgcc at run time; it allocates with mimalloc, linked in (Cargo.toml feature
# `mimalloc`).
# This is the plain release build (`cargo build --release`). The README's p99 target is met by the
# profile-guided build (bench/pgo.sh, whose training run needs h2load, wrk and llvm-profdata) and
# missed by this one (README, Benchmark; docs/bench-2026-12-05-figures.md): for the proxy's best
# latency, build the binary with bench/pgo.sh and copy it into the final stage instead.
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Manifests first: the dependency layer is rebuilt only when they change.
COPY rust-toolchain.toml Cargo.toml Cargo.lock ./
# Cargo's configuration: the compile-time defaults of mimalloc, the binary's allocator (its first
# arena committed on demand), which its C source is built with in the dependency layer below.
COPY .cargo .cargo
COPY proxy/Cargo.toml proxy/Cargo.toml
COPY controller/Cargo.toml controller/Cargo.toml
# The patched hyper that Cargo.toml's [patch.crates-io] points at (vendor/hyper/PATCHES.md).
COPY vendor vendor
RUN mkdir -p src proxy/src controller/src \
    && echo 'fn main() {}' > src/main.rs \
    && touch proxy/src/lib.rs controller/src/lib.rs \
    && cargo build --release --locked --bin crossfade \
    && rm -rf src proxy/src controller/src
# The sources (.dockerignore keeps target/ and .git out).
COPY . .
# `crossfade --version` names the commit (build.rs); without .git here it says `(unknown commit)`
# unless it is given: `docker build --build-arg CROSSFADE_COMMIT=$(git rev-parse --short=7 HEAD) .`
ARG CROSSFADE_COMMIT=
ENV CROSSFADE_COMMIT=${CROSSFADE_COMMIT}
# Touch the crate roots so cargo rebuilds them over the placeholder layer's artefacts.
RUN touch src/main.rs proxy/src/lib.rs controller/src/lib.rs \
    && cargo build --release --locked --bin crossfade \
    && install -D -m 0755 target/release/crossfade /out/crossfade

# Stage 2: distroless with glibc and libgcc (the `cc` variant), user nonroot (uid 65532), no
# shell and no package manager. deploy/controller/deployment.yaml runs it with a read-only root
# filesystem and every capability dropped.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/crossfade /usr/local/bin/crossfade
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/crossfade"]
CMD ["--help"]
