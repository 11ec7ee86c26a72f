# tideline's one binary, for docker-compose.yml. DuckDB needs cgo, so the
# build stage has a C toolchain (the golang image) and the runtime stage the
# C library it links against (Debian's, like the build's).
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=1 go build -trimpath -ldflags "-s -w" -o /out/tideline ./cmd/tideline

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/tideline /usr/local/bin/tideline
COPY examples /opt/tideline/examples
WORKDIR /opt/tideline
ENV TIDELINE_SPEC=/opt/tideline/examples/payments/tideline.yaml \
    TIDELINE_CACHE=/tmp/tideline-cache
USER 65532:65532
ENTRYPOINT ["tideline"]
CMD ["--help"]
