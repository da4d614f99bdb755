# ebb's container image. The build stage runs `make static` (the release build, statically linked),
# the binary that `make test` also tests and smoke-tests (tests/k8s/test_static_smoke.py: the binary's dynamic dependencies, a
# proxied request, a clean exit on SIGTERM). No Docker engine runs on the development machines or
# in CI, so this file itself is not built there.
#
#   docker build -t ebb .
#   docker run --rm -p 8080:8080 -p 9901:9901 -e EBB_UPSTREAM=host.docker.internal:3000 ebb

FROM debian:bookworm AS build
# Only what `make static` needs; the test tools of `make deps` (node, Go, nginx...) stay out.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      g++ cmake make pkg-config libuv1-dev node-llhttp libyaml-cpp-dev libnghttp2-dev python3 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# DEPS_CHECK names the build tools only, so `make deps` finds nothing missing and installs
# nothing more; tests/ is not in the context (.dockerignore), so no npm install either.
# The context has no .git: the commit for ebb_build_info and --version comes in as REVISION.
ARG REVISION=unknown
RUN make static CMAKE_ARGS="-DEBB_COMMIT=${REVISION}" DEPS_CHECK="/usr/bin/g++ /usr/bin/cmake /usr/bin/pkg-config /usr/include/uv.h \
      /usr/share/llhttp/llhttp.c /usr/include/yaml-cpp/yaml.h /usr/include/nghttp2/nghttp2.h /usr/bin/python3" \
 && strip build/ebb

# The static build links libuv, llhttp, nghttp2, yaml-cpp, libstdc++ and libgcc in; what it still loads is glibc
# (libc.so.6 and the loader: the smoke test fails on anything else). glibc stays dynamic because
# a fully static glibc cannot load NSS, which getaddrinfo needs to resolve an upstream host name.
# So the base is the smallest image with glibc: distroless base without OpenSSL (ebb speaks
# plain HTTP to the app and the kubelet). It also has /etc/passwd with the nonroot user 65532.
FROM gcr.io/distroless/base-nossl-debian12
# OCI annotations; set version and revision at build time:
#   docker build --build-arg VERSION=0.1.0 --build-arg REVISION=$(git rev-parse HEAD) -t ebb .
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="ebb" \
      org.opencontainers.image.description="Drain-aware HTTP/1.1 and h2c reverse-proxy sidecar for zero-downtime rolling deploys on Kubernetes" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="gcr.io/distroless/base-nossl-debian12" \
      org.opencontainers.image.documentation="deploy/README.md"
COPY --from=build /src/build/ebb /usr/local/bin/ebb
COPY config/ebb.yaml /etc/ebb/ebb.yaml
USER 65532:65532
# 8080: the proxy listener (the Service targets it); 9901: admin (probes, /metrics, /drain).
EXPOSE 8080 9901
# ebb reads /etc/ebb/ebb.yaml when present; EBB_* environment variables override any key.
ENTRYPOINT ["/usr/local/bin/ebb"]
