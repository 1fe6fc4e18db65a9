# The sqlcommenter operator binary (`sqlcommenter comment|parse|proxy|logs|demo`) and the two example
# applications, in one image. Used by docker-compose.yml for the proxy, the log follower, the demo and the
# example applications, and by deploy/kubernetes/proxy-sidecar.yaml for the proxy.

# ---- build --------------------------------------------------------------------------------------------
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p sqlcommenter-cli --bin sqlcommenter \
 && cargo build --release --locked -p sqlcommenter-demo --example axum_app --example unmodified_app \
 && mkdir -p /out \
 && cp target/release/sqlcommenter /out/sqlcommenter \
 && cp target/release/examples/axum_app /out/sqlcommenter-axum-app \
 && cp target/release/examples/unmodified_app /out/sqlcommenter-unmodified-app

# ---- runtime ------------------------------------------------------------------------------------------
FROM debian:bookworm-slim
# `sqlcommenter demo` starts a throwaway PostgreSQL cluster, so the server binaries are installed. The
# `postgres` user gets a fixed numeric uid so Kubernetes' runAsNonRoot can verify it.
RUN groupadd --system --gid 999 postgres \
 && useradd --system --uid 999 --gid postgres --home-dir /var/lib/postgresql --create-home postgres \
 && apt-get update \
 && apt-get install -y --no-install-recommends postgresql-15 procps ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /work && chown postgres:postgres /work
COPY --from=build /out/ /usr/local/bin/
ENV PG_BINDIR=/usr/lib/postgresql/15/bin
USER 999
WORKDIR /work
# The proxy's default port.
EXPOSE 6432
ENTRYPOINT ["sqlcommenter"]
CMD ["--help"]
