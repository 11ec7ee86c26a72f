# tideline's one binary, for docker-compose.yml. DuckDB needs cgo, so the
# build stage has a C toolchain (the golang image); the runtime stage is
# Debian's slim image with nothing installed (its C library is the build's),
# so building it needs no package mirror. Health checks run
# `tideline healthcheck URL`, since the image has no curl.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
# Modules come from build/modules/ first (an offline GOPROXY tree that
# `make compose-test` fills; empty otherwise), then from the default proxy.
COPY build/modules/ /modules/
RUN GOPROXY="file:///modules,$(go env GOPROXY)" go mod download
COPY . .
RUN CGO_ENABLED=1 go build -trimpath -ldflags "-s -w" -o /out/tideline ./cmd/tideline

FROM debian:bookworm-slim
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/tideline /usr/local/bin/tideline
COPY examples /opt/tideline/examples
WORKDIR /opt/tideline
ENV TIDELINE_SPEC=/opt/tideline/examples/payments/tideline.yaml \
    TIDELINE_CACHE=/tmp/tideline-cache
USER 65532:65532
ENTRYPOINT ["tideline"]
CMD ["--help"]
