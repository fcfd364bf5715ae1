# rumq in a container: a multi-stage build, a small runtime image, a non-root user,
# the data on a volume, the documented default configuration. docs/operations.md.
#
#   docker build -t rumq .
#   docker run -d --name rumq -p 1883:1883 -v rumq-data:/data rumq
#
# The default config listens on 0.0.0.0:1883; mount your own over
# /etc/rumq/rumq.toml to change it (a password file, for one: docs/security.md).

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
# Only the broker and what it depends on; --locked: exactly Cargo.lock's versions.
RUN cargo build --release --locked -p rumq-broker \
 && strip target/release/rumq-broker

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --user-group --home-dir /data --shell /usr/sbin/nologin rumq \
 && mkdir -p /data /etc/rumq \
 && chown rumq:rumq /data \
 && chmod 0750 /data
COPY --from=build /src/target/release/rumq-broker /usr/local/bin/rumq-broker
COPY config/rumq.toml /etc/rumq/rumq.toml
USER rumq
VOLUME ["/data"]
EXPOSE 1883
# SIGTERM shuts down gracefully: connections closed, the log closed cleanly.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/rumq-broker", "--config", "/etc/rumq/rumq.toml", "--data-dir", "/data"]
