# The credits service: a multi-stage build into a minimal, non-root runtime image.
#
#   docker build -t credits-service .
#   docker run --rm -p 8080:8080 \
#     -e CREDITS_ADMIN_TOKEN=... -e CREDITS_TENANT_TOKENS=acme=... credits-service
#
# Stage 1 compiles the release binary (the whole workspace is copied because cargo needs
# every member's manifest; only the credits-service binary is built).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY metered-clock ./metered-clock
COPY credits-core ./credits-core
COPY audit-chain ./audit-chain
COPY resilience ./resilience
COPY bayes-ab ./bayes-ab
COPY canary ./canary
COPY credits-postgres ./credits-postgres
COPY credits-service ./credits-service
COPY sim ./sim
COPY docs ./docs
COPY src ./src
COPY benches ./benches
COPY examples ./examples
RUN cargo build --locked --release -p credits-service --bin credits-service \
    && cp target/release/credits-service /credits-service

# Stage 2: distroless base (glibc, CA certificates, no shell, no package manager), running
# as the unprivileged "nobody" user (uid 65534, as the Kubernetes manifests require). The
# root filesystem can be mounted read-only: the service writes nothing to disk.
FROM gcr.io/distroless/cc-debian12
COPY --from=build /credits-service /usr/local/bin/credits-service
USER 65534:65534
ENV CREDITS_LISTEN_ADDR=0.0.0.0:8080 \
    CREDITS_LOG_FORMAT=json
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/credits-service"]
