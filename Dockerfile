# locklab: the lab's four binaries in one small image.
#
#   docker compose up            # builds this image on first use, then runs the lab
#   docker build -t locklab .    # or build it on its own
#
# The build stage starts FROM rust:1-bookworm (which has libpq-dev and MariaDB's client
# library) and the runtime stage FROM debian:bookworm-slim: building this file needs
# access to a container registry (Docker Hub), to Debian's mirror and to crates.io. Without a registry, use docker/Dockerfile.host (binaries built on
# the host, base image made locally by scripts/make-base-image), as scripts/compose-test
# does.

# ---- build ----
FROM rust:1-bookworm AS build
WORKDIR /src
# Only what the workspace build reads (.dockerignore keeps target/ and the rest out).
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
COPY migrations ./migrations
# `locklab advise` embeds these snippets.
COPY advice ./advice
# --locked: build exactly the committed Cargo.lock.
RUN ["cargo", "build", "--release", "--workspace", "--locked"]

# ---- base: the client libraries the server backends load (libpq, MariaDB's) ----
# scripts/make-base-image puts the same packages into its locally made base.
FROM debian:bookworm-slim AS base
RUN ["sh", "-c", "apt-get update && apt-get install -y --no-install-recommends libpq5 libmariadb3 && rm -rf /var/lib/apt/lists/*"]

# ---- runtime (keep in step with docker/Dockerfile.host) ----
FROM base
# A fixed non-root uid, so files on the volume have the same owner in every container.
RUN ["useradd", "--uid", "10001", "--user-group", "--no-create-home", "--home-dir", "/data", "--shell", "/usr/sbin/nologin", "locklab"]
# SQLite writes -journal, -wal and -shm files beside the database, so the user must own
# the directory, not only the file. An empty named volume mounted here copies this owner.
RUN ["install", "-d", "-m", "0755", "-o", "locklab", "-g", "locklab", "/data"]
COPY --from=build /src/target/release/locklab /src/target/release/webui /src/target/release/runbuilds /src/target/release/buildinfohelper /usr/local/bin/
ENV DATABASE_URL=/data/locklab.sqlite3
USER locklab
WORKDIR /data
EXPOSE 8000 8001 8002
CMD ["locklab", "--help"]
