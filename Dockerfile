# Multi-stage build on Debian 12. The runtime image holds the binary, redis-server
# (for standalone's embedded Redis) and curl for the health check; it runs as a
# non-root user.
FROM debian:12 AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake ninja-build pkg-config \
      libboost-dev libmsgpack-cxx-dev rapidjson-dev libcli11-dev libfmt-dev catch2 \
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
 && useradd --system --create-home --home-dir /var/lib/stargazer stargazer
COPY --from=build /src/build/release/roles/stargazer /usr/local/bin/stargazer
USER stargazer
WORKDIR /var/lib/stargazer
ENV SG_HTTP_HOST=0.0.0.0 SG_HTTP_PORT=8080 SG_DATA_DIR=/var/lib/stargazer/data SG_LOG_FORMAT=json
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s \
  CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["/usr/local/bin/stargazer"]
CMD ["--role=standalone"]
