# Multi-stage build on Debian 12. The runtime image holds the binary, redis-server
# (for standalone's embedded Redis, once it exists) and curl for the health check; it
# runs as the unprivileged user stargazer (uid 10001). deploy/docker-compose.yml runs it
# as gateway, workers and tools service (docs/operations.md, "Deployment").
FROM debian:12 AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake ninja-build pkg-config \
      libboost-dev libmsgpack-cxx-dev rapidjson-dev libcli11-dev libfmt-dev \
      libhiredis-dev libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake --preset release -DSTARGAZER_BUILD_TESTS=OFF -DSTARGAZER_BUILD_BENCH=OFF \
 && cmake --build --preset release --target stargazer \
 && strip build/release/roles/stargazer

FROM debian:12-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libfmt9 libhiredis0.14 libssl3 ca-certificates redis-server curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 stargazer \
 && useradd --system --uid 10001 --gid stargazer --home-dir /var/lib/stargazer --shell /usr/sbin/nologin stargazer \
 && install -d -o stargazer -g stargazer -m 0750 /var/lib/stargazer /var/lib/stargazer/data
COPY --from=build /src/build/release/roles/stargazer /usr/local/bin/stargazer
# The data directory exists, owned by the user, so that a named volume mounted on it
# starts with that ownership (a directory Docker creates for a mount belongs to root). No
# VOLUME line: every worker would get an anonymous volume it never uses.
USER stargazer:stargazer
WORKDIR /var/lib/stargazer
# Bound to every interface, so the web chat signs people in by invite (--webchat-auth
# auto); `stargazer webchat invite --name NAME` inside the container prints a link.
ENV SG_HTTP_HOST=0.0.0.0 SG_HTTP_PORT=8080 SG_DATA_DIR=/var/lib/stargazer/data SG_LOG_FORMAT=json
EXPOSE 8080
# For gateway and standalone (the HTTP server). Worker and tools processes have no HTTP
# port: disable the check for them (healthcheck: disable: true in compose).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD curl -fsS "http://127.0.0.1:${SG_HTTP_PORT}/healthz" || exit 1
# SIGTERM drains turns in flight for up to --shutdown-timeout (10 s): give `docker stop`
# more than that (docker stop -t 20, stop_grace_period: 20s in compose).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/stargazer"]
CMD ["--role=standalone"]
