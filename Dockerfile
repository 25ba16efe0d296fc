# Images for the auth and chat services: small Debian runtimes, running as
# a non-root user.
#
#   docker build --target auth -t chat-backend/auth .
#   docker build --target chat -t chat-backend/chat .
#   docker build --target web -t chat-backend/web .
#
# `auth` and `chat` compile in a Rust builder image. Where images cannot be
# pulled, RUNTIME_IMAGE names a local runtime (scripts/build-offline-images
# makes one) and the *-prebuilt targets copy binaries built on the host
# (BIN_DIR, relative to the build context, default target/release) instead
# of compiling. With the binaries elsewhere (CARGO_TARGET_DIR), make a
# directory holding them the context and pass BIN_DIR=., as
# scripts/compose-smoke does. They come first in this file so that builders
# that run every earlier stage never reach the compiling one for them.
ARG BUILDER_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUNTIME_IMAGE} AS runtime
# A fixed mmap threshold: blocks of 1 MiB or more (argon2id's 19 MiB per
# hash) go back to the system when freed, instead of staying resident in
# one malloc arena per thread that ever hashed (README: Performance).
ENV GLIBC_TUNABLES=glibc.malloc.mmap_threshold=1048576
RUN echo 'app:x:10001:10001::/nonexistent:/usr/sbin/nologin' >> /etc/passwd \
    && echo 'app:x:10001:' >> /etc/group
USER 10001:10001

FROM runtime AS auth-prebuilt
ARG BIN_DIR=target/release
COPY ${BIN_DIR}/auth /usr/local/bin/auth
EXPOSE 50051 8081 9101
HEALTHCHECK --interval=5s --timeout=3s --retries=12 CMD ["/usr/local/bin/auth", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/auth"]

FROM runtime AS chat-prebuilt
ARG BIN_DIR=target/release
COPY ${BIN_DIR}/chat /usr/local/bin/chat
EXPOSE 50052 8082 9102
HEALTHCHECK --interval=5s --timeout=3s --retries=12 CMD ["/usr/local/bin/chat", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/chat"]

FROM runtime AS web-prebuilt
ARG BIN_DIR=target/release
COPY ${BIN_DIR}/web /usr/local/bin/web
EXPOSE 8080
HEALTHCHECK --interval=5s --timeout=3s --retries=12 CMD ["/usr/local/bin/web", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/web"]

FROM ${BUILDER_IMAGE} AS build
RUN apt-get update && apt-get install -y --no-install-recommends protobuf-compiler && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
ENV SQLX_OFFLINE=true
RUN cargo build --release --locked -p auth -p chat -p web \
    && cp target/release/auth target/release/chat target/release/web /usr/local/bin/

FROM runtime AS auth
COPY --from=build /usr/local/bin/auth /usr/local/bin/auth
EXPOSE 50051 8081 9101
HEALTHCHECK --interval=5s --timeout=3s --retries=12 CMD ["/usr/local/bin/auth", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/auth"]

FROM runtime AS chat
COPY --from=build /usr/local/bin/chat /usr/local/bin/chat
EXPOSE 50052 8082 9102
HEALTHCHECK --interval=5s --timeout=3s --retries=12 CMD ["/usr/local/bin/chat", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/chat"]

FROM runtime AS web
COPY --from=build /usr/local/bin/web /usr/local/bin/web
EXPOSE 8080
HEALTHCHECK --interval=5s --timeout=3s --retries=12 CMD ["/usr/local/bin/web", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/web"]
