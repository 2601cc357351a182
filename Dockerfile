# syntax=docker/dockerfile:1
# The signal-gateway image: a static musl binary on an empty base, run as the
# numeric user 65532. hack/image.sh builds the same image without a daemon
# (and is what the tests check); this file is for builders that have one:
#   docker build -t localhost/signal-gateway:0.1.0 .
# Pin the base images by digest in your registry mirror for bit-for-bit builds.

FROM docker.io/library/rust:1.95.0-bookworm AS build
ARG MUSL_TOOLS_VERSION=1.2.3-1
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools=${MUSL_TOOLS_VERSION} \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    CC_x86_64_unknown_linux_musl=musl-gcc \
    cargo build --release --locked --target x86_64-unknown-linux-musl --bin signal-gateway \
 && install -D -m 0755 target/x86_64-unknown-linux-musl/release/signal-gateway /out/usr/local/bin/signal-gateway

FROM docker.io/library/debian:bookworm-slim AS rootfs
# The Mozilla roots of this exact Debian package, as update-ca-certificates writes them.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates=20250419~deb12u2 \
 && rm -rf /var/lib/apt/lists/*
RUN mkdir -p /out/etc/ssl/certs /out/home/nonroot /out/tmp \
 && find /usr/share/ca-certificates/mozilla -name '*.crt' | LC_ALL=C sort | xargs cat > /out/etc/ssl/certs/ca-certificates.crt \
 && printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > /out/etc/passwd \
 && printf 'root:x:0:\nnonroot:x:65532:\n' > /out/etc/group \
 && chown 65532:65532 /out/home/nonroot && chmod 0700 /out/home/nonroot && chmod 1777 /out/tmp

FROM scratch
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="signal-gateway" \
      org.opencontainers.image.description="Turns Alertmanager and Kubernetes Event signals into exactly one active RemediationRequest per problem" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="scratch"
COPY --from=rootfs /out/ /
COPY --from=build /out/ /
ENV PATH=/usr/local/bin SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
WORKDIR /
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/signal-gateway"]
CMD ["serve"]
