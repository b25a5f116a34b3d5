# Build stage: the release binary only.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock clippy.toml ./
COPY crates crates
RUN cargo build --release -p sluice --locked

# Runtime stage: the binary, its configuration, CA certificates for the vendors' TLS.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /srv/sluice sluice
WORKDIR /srv/sluice
COPY --from=build /src/target/release/sluice /usr/local/bin/sluice
COPY config config
COPY prompts prompts
COPY migrations migrations
RUN mkdir -p data && chown sluice data
USER sluice
EXPOSE 8080
ENTRYPOINT ["sluice"]
CMD ["serve", "--listen", "0.0.0.0:8080"]
