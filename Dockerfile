# syntax=docker/dockerfile:1
# The shop's services in one image: `docker build -t atoll-shop .`, then
# `docker run atoll-shop serve orders` (configuration through ATOLL_* environment variables).
# The image also holds the `atoll` operator tool and the shop's manifests
# (/usr/share/atoll/topics): `docker run --entrypoint atoll atoll-shop apply /usr/share/atoll/topics`.

# --- build: the release binary, librdkafka compiled in ---
FROM rust:1.95-slim-bookworm AS build
# OpenSSL (Debian's, patched by Debian's security updates) for TLS and SASL to Kafka, https to
# the schema registry and the OTLP collector, and TLS to PostgreSQL.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential python3 perl pkg-config libssl-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p example-shop -p atoll-cli \
    && cp target/release/shop target/release/atoll /usr/local/bin/

# --- runtime: slim, non-root ---
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin atoll
COPY --from=build /usr/local/bin/shop /usr/local/bin/atoll /usr/local/bin/
COPY --from=build /src/topics /usr/share/atoll/topics
USER 10001:10001
# Health and metrics: /health/live, /health/ready, /metrics.
ENV ATOLL_HTTP__ADDR=0.0.0.0:8080
EXPOSE 8080
# `shop health` asks /health/ready on ATOLL_HTTP__ADDR: no curl needed in the image.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 CMD ["shop", "health"]
# SIGTERM stops a service gracefully (finish in-flight records, commit, leave the group).
STOPSIGNAL SIGTERM
ENTRYPOINT ["shop"]
CMD ["serve", "orders"]
