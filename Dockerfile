# syntax=docker/dockerfile:1
# enc's container: the release build of scripts/build-release (the one CI runs) in a small,
# non-root, distroless image.

# Base images by digest (Dependabot keeps them current): a rebuild gets the bytes reviewed.
FROM rust:1.95-bookworm@sha256:6258907abe69656e41cd992e0b705cdcfabcbbe3db374f92ed2d47121282d4a1 AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock askama.toml ./
COPY scripts/build-release scripts/build-release
# Dependencies first, against stub sources, so this layer is reused until Cargo.lock changes.
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && scripts/build-release \
    && rm -rf src target/release/enc target/release/deps/enc-* target/release/deps/libenc-* \
              target/release/.fingerprint/enc-*
COPY src src
ARG ENC_GIT_SHA=unknown
ENV ENC_GIT_SHA=${ENC_GIT_SHA}
RUN scripts/build-release

FROM gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f
COPY --from=build /src/target/release/enc /usr/local/bin/enc
ENV ENC_LISTEN=0.0.0.0:8080 \
    ENC_LOG_FORMAT=json
EXPOSE 8080
# 65532 is distroless's "nonroot" user.
USER 65532:65532
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/enc", "healthcheck"]
# Exec form: enc is PID 1 and receives SIGTERM itself, so shutdown is graceful.
ENTRYPOINT ["/usr/local/bin/enc"]
CMD ["serve"]
