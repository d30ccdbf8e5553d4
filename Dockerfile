# Polarway worker image: built with the full toolchain, run on a slim base as a non-root user.
#
#   docker build -t polarway .
#   docker run -p 50051:50051 polarway
#
# Targets:
#   (default) runtime  the worker built from this source (release profile, stripped).
#   host               the same runtime around a binary built on a Debian bookworm host (glibc
#                      2.36): the build context is a directory holding deploy/bin/polarway-grpc,
#                      so the image builds in seconds. The tests use it:
#                        mkdir -p ctx/deploy/bin && cp target/debug/polarway-grpc ctx/deploy/bin/
#                        docker build --target host -t polarway -f Dockerfile ctx
#
# Layers: the dependencies build in a layer of their own, keyed by Cargo.toml and Cargo.lock only,
# so a change to the source rebuilds the project's crate and not Polars or DataFusion. The stages
# are ordered so that `--target host` builds nothing of Rust on the legacy builder either.

FROM debian:bookworm-slim AS runtime-base
# ca-certificates for TLS to object stores. /state is owned by the worker's user, so a named volume
# mounted there (deploy/docker-compose.volume.yml) starts out writable.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 polarway \
    && useradd --uid 10001 --gid polarway --no-log-init --shell /usr/sbin/nologin \
        --home-dir /var/lib/polarway --create-home polarway \
    && install -d -o polarway -g polarway /state
USER polarway
WORKDIR /var/lib/polarway
ENV POLARWAY_BIND_ADDRESS=0.0.0.0:50051 \
    POLARWAY_LOG_FORMAT=json \
    POLARWAY_METRICS_ADDRESS=0.0.0.0:9464
EXPOSE 50051 9464
# Healthy when /readyz answers 200: the worker listens and is not draining. bash's /dev/tcp needs
# no extra tools in the image.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${POLARWAY_METRICS_ADDRESS##*:} && printf 'GET /readyz HTTP/1.0\\r\\n\\r\\n' >&3 && read -r _ code _ <&3 && [ \"$code\" = 200 ]"]
ENTRYPOINT ["/usr/local/bin/polarway-grpc"]

FROM runtime-base AS host
COPY deploy/bin/ /usr/local/bin/

FROM rust:1.95-bookworm AS deps
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# Every target Cargo.toml declares, as an empty stand-in: cargo needs them to read the manifest.
RUN mkdir -p src tests/it benches flight-sql-examples \
    && touch src/lib.rs \
    && for f in src/main.rs tests/it/main.rs benches/flight.rs benches/hot_paths.rs flight-sql-examples/flight_sql.rs; do \
        echo 'fn main() {}' > "$f"; done \
    && cargo build --locked --release --bin polarway-grpc \
    && rm -rf src tests benches flight-sql-examples

FROM deps AS build
COPY src ./src
COPY benches ./benches
COPY tests ./tests
COPY flight-sql-examples ./flight-sql-examples
# The copied files keep the context's times, which can be older than the stand-ins' build.
RUN find src -name '*.rs' -exec touch {} + \
    && cargo build --locked --release --bin polarway-grpc \
    && strip target/release/polarway-grpc \
    && install -D target/release/polarway-grpc /out/polarway-grpc

FROM runtime-base AS runtime
COPY --from=build /out/polarway-grpc /usr/local/bin/polarway-grpc
