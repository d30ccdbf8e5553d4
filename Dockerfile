# Polarway worker image: build with the full toolchain, run on a slim base as a non-root user.
#   docker build -t polarway .
#   docker run -p 50051:50051 polarway

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY tests ./tests
RUN cargo build --locked --release --bin polarway-grpc

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/polarway --create-home polarway
COPY --from=build /src/target/release/polarway-grpc /usr/local/bin/polarway-grpc
USER polarway
WORKDIR /var/lib/polarway
ENV POLARWAY_BIND_ADDRESS=0.0.0.0:50051 \
    POLARWAY_LOG_FORMAT=json \
    POLARWAY_METRICS_ADDRESS=0.0.0.0:9464
EXPOSE 50051 9464
# The worker answers gRPC health once it listens; a TCP probe needs no extra tools.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/50051"]
ENTRYPOINT ["/usr/local/bin/polarway-grpc"]
