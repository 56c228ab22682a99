# The Floodgate image (docs/deploy.md, "Container image"):
#
#   docker build --build-arg FLOODGATE_COMMIT=$(git rev-parse --short HEAD) -t floodgate:0.1.0 .
#   docker run --rm -p 8080:8080 -p 8081:8081 --stop-timeout 30 \
#     -v "$PWD/examples:/etc/floodgate:ro" floodgate:0.1.0
#
# Two stages on Debian 12. The first builds with the repository's own Makefile (`make build`;
# `make deps-build` installs the Debian packages the server alone needs) and installs with `cmake --install`; the second
# holds the stripped binary, the shared libraries it links and curl for the health check, and
# runs as an unprivileged user. tests/dockerfile_test.py checks that the runtime packages below
# still cover every library the binary links.

FROM debian:12 AS build
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends make \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The packages first, from the Makefile alone, so that a source change reuses this layer.
COPY Makefile ./
RUN make deps-build && rm -rf /var/lib/apt/lists/*
COPY . .
# .git is not sent (.dockerignore): name the commit for --version with this argument.
ARG FLOODGATE_COMMIT=
# Configured before `make build` (which then keeps this configuration): the server only, without
# the tests and micro-benchmarks.
RUN cmake -S . -B /src/build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DFG_BUILD_TESTS=OFF -DFG_BUILD_BENCHMARKS=OFF -DFLOODGATE_COMMIT="${FLOODGATE_COMMIT}"
RUN make build BUILD_DIR=/src/build DEPS=deps-build \
 && cmake --install /src/build --prefix /out/usr --strip \
 && /out/usr/bin/floodgate --version

FROM debian:12
# The shared libraries build/floodgate links (ldd), by their Debian packages (dpkg -S), and curl
# for HEALTHCHECK.
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      libabsl20220623 libc-ares2 libgrpc++1.51 libgrpc29 libnghttp2-14 libprotobuf32 libre2-9 \
      libssl3 libyaml-0-2 libspdlog1.10 libfmt9 zlib1g libstdc++6 libgcc-s1 libc6 \
      ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
# A fixed uid/gid (65532, as deploy/kubernetes/ runs it) so that Kubernetes' runAsNonRoot can
# check it and mounted volumes can be given to it.
RUN groupadd --system --gid 65532 floodgate \
 && useradd --system --uid 65532 --gid 65532 --home-dir /var/lib/floodgate --no-create-home \
      --shell /usr/sbin/nologin floodgate \
 && mkdir -p /etc/floodgate /var/lib/floodgate \
 && chown floodgate:floodgate /var/lib/floodgate
COPY --from=build /out/usr/bin/floodgate /usr/bin/floodgate
COPY --from=build /out/usr/share/floodgate /usr/share/floodgate
COPY --from=build /out/usr/share/doc/floodgate /usr/share/doc/floodgate
# A config to start with (examples/api.yaml); mount your own folder of limits over /etc/floodgate.
COPY examples/api.yaml /etc/floodgate/api.yaml
USER 65532:65532
WORKDIR /var/lib/floodgate
# HTTP (checks, /healthcheck, /metrics, admin), gRPC (Envoy RLS v3), peers (cluster mode).
EXPOSE 8080 8081 7946
# /healthcheck answers 200 while serving and 503 while draining (docs/http_api.md). It assumes
# plain HTTP on 8080: with another --http port or TLS, give `docker run --health-cmd ...`.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8080/healthcheck"]
# SIGTERM drains: a cluster node leaves (at most 2 s), then each front end drains for at most
# --drain-timeout (5 s) plus 1 s; give `docker run --stop-timeout 30` (Docker waits 10 s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["floodgate", "serve"]
# Arguments replace these whole (`docker run IMAGE --config=... ...`, Kubernetes `args:`).
# Flags win over FLOODGATE_* variables and envoyproxy/ratelimit's (PORT, RUNTIME_ROOT, ...): to
# configure the server by variables only, give other arguments (e.g. --drain-timeout=5s).
CMD ["--config=/etc/floodgate", "--state-dir=/var/lib/floodgate", "--http=0.0.0.0:8080", \
     "--grpc=0.0.0.0:8081"]
