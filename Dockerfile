# syntax=docker/dockerfile:1
# Multi-stage build of flagger-rs. Targets:
#   flagger     (default, the last stage): the operator, non-root, nothing but the binary and CA roots
#   loadtester  the webhook load tester with `hey`
# Build: docker build -t flagger-rs .            docker build --target loadtester -t flagger-rs-loadtester .

FROM rust:1-bookworm AS builder
WORKDIR /src
# Dependencies first, so source edits reuse this layer: build against stub sources of every crate.
COPY Cargo.toml Cargo.lock ./
COPY rollout/Cargo.toml rollout/Cargo.toml
COPY actors/Cargo.toml actors/Cargo.toml
COPY testbed/Cargo.toml testbed/Cargo.toml
COPY bench/Cargo.toml bench/Cargo.toml
RUN mkdir -p src/bin/flagger-loadtester rollout/src actors/src testbed/src bench/src \
 && echo 'fn main() {}' > src/main.rs \
 && echo 'fn main() {}' > src/bin/flagger-loadtester/main.rs \
 && echo 'fn main() {}' > testbed/src/main.rs \
 && echo 'fn main() {}' > bench/src/main.rs \
 && touch rollout/src/lib.rs actors/src/lib.rs testbed/src/lib.rs bench/src/lib.rs \
 && cargo build --release --locked --bin flagger --bin flagger-loadtester || true
COPY . .
# Touch the real sources so cargo rebuilds them over the stubs.
RUN find src rollout/src actors/src testbed/src -name '*.rs' -exec touch {} + \
 && cargo build --release --locked --bin flagger --bin flagger-loadtester \
 && install -D target/release/flagger /out/flagger \
 && install -D target/release/flagger-loadtester /out/flagger-loadtester

FROM debian:bookworm-slim AS loadtester
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates hey curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin app
COPY --from=builder /out/flagger-loadtester /usr/local/bin/flagger-loadtester
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/flagger-loadtester"]
CMD ["--port=8080"]

FROM gcr.io/distroless/cc-debian12:nonroot AS flagger
COPY --from=builder /out/flagger /usr/local/bin/flagger
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/flagger"]
