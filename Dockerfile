# Build stage: the release binary, optimised with a profile of its own request path (deploy/build-pgo.sh:
# a sixth fewer instructions a request, about twice a plain build's time). `--build-arg PGO=0` builds it plain.
FROM rust:1-slim-bookworm AS build
ARG PGO=1
WORKDIR /src
# make: jemalloc, the binary's allocator, is built from its C sources. curl and llvm-tools: the profile's
# training requests and its merge.
RUN apt-get update && apt-get install -y --no-install-recommends make curl && rm -rf /var/lib/apt/lists/* \
    && rustup component add llvm-tools
COPY Cargo.toml Cargo.lock clippy.toml ./
COPY crates crates
# The migrations are compiled into the binary; the training serves the shipped prompt templates.
COPY migrations migrations
COPY prompts prompts
COPY deploy/build-pgo.sh deploy/
RUN if [ "$PGO" = 1 ]; then deploy/build-pgo.sh && cp target/pgo/optimised/release/sluice /sluice; \
    else cargo build --release -p sluice --locked && cp target/release/sluice /sluice; fi

# Runtime stage: the binary, its configuration, CA certificates for the vendors' TLS.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /srv/sluice sluice
WORKDIR /srv/sluice
COPY --from=build /sluice /usr/local/bin/sluice
COPY config config
COPY prompts prompts
COPY migrations migrations
RUN mkdir -p data && chown sluice data
USER sluice
EXPOSE 8080
# Keys come from the environment, never from the image: SLUICE_ADMIN_KEY (at least 32 characters) for the
# admin API, vendor keys such as OPENAI_API_KEY, and optionally SLUICE_API_KEY as a client key. The
# gateway refuses to listen beyond loopback while a client key is written literally in its configuration.
# The first virtual key, with the container running:
#   docker exec CONTAINER sluice tenants create team && docker exec CONTAINER sluice keys create team
# Shutdown drains for up to 20 s, then flushes the usage ledger for up to 5 s: stop with a grace of 30 s
# (`docker stop -t 30`, `docker run --stop-timeout 30`; Kubernetes' default of 30 s fits).
STOPSIGNAL SIGTERM
ENTRYPOINT ["sluice"]
CMD ["serve", "--listen", "0.0.0.0:8080"]
