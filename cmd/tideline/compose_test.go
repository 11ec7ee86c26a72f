package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

// TestComposeFile loads docker-compose.yml with compose-go, as docker
// compose does (no Docker engine runs here), and holds it to what the
// README promises: every part, the published ports, health checks,
// start-up order on health, tideline's services built from the Dockerfile,
// their commands accepted by this binary's own flag parsing, and addresses
// that name services of the file.
func TestComposeFile(t *testing.T) {
	opts, err := cli.NewProjectOptions([]string{"../../docker-compose.yml"}, cli.WithName("tideline"), cli.WithWorkingDirectory("../.."))
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(t.Context())
	if err != nil {
		t.Fatalf("docker-compose.yml does not load: %v", err)
	}
	want := map[string][]string{ // service -> published ports
		"nats": {"4222"}, "temporal": {"7233", "8233"}, "minio": {"9000", "9001"},
		"stream": {"8081"}, "worker": {"8082"}, "serve": {"8080"}, "score": {"8083"}, "gen": nil,
	}
	for name, ports := range want {
		svc, ok := p.Services[name]
		if !ok {
			t.Errorf("no service %s", name)
			continue
		}
		var got []string
		for _, pc := range svc.Ports {
			got = append(got, pc.Published)
			if pc.Published != "" && pc.Published != "0" && pc.Target != mustAtoi(t, pc.Published) {
				t.Errorf("%s publishes %s on container port %d; the README's ports are the same inside and out", name, pc.Published, pc.Target)
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, ports) {
			t.Errorf("%s publishes %v, want %v", name, got, ports)
		}
		if name != "gen" && (svc.HealthCheck == nil || len(svc.HealthCheck.Test) < 2) {
			t.Errorf("%s has no health check", name)
		}
		for dep, d := range svc.DependsOn {
			if _, ok := p.Services[dep]; !ok {
				t.Errorf("%s depends on %s, which is not a service", name, dep)
			}
			if d.Condition != types.ServiceConditionHealthy {
				t.Errorf("%s waits for %s to be %q; want service_healthy", name, dep, d.Condition)
			}
		}
	}
	deps := map[string][]string{"stream": {"nats"}, "worker": {"minio", "stream", "temporal"}, "serve": {"minio", "stream"}, "score": {"minio", "stream"}, "gen": {"stream"}}
	for name, want := range deps {
		var got []string
		for d := range p.Services[name].DependsOn {
			got = append(got, d)
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("%s depends on %v, want %v", name, got, want)
		}
	}

	// tideline's own services: the image built from the Dockerfile, a
	// command this binary accepts, and addresses of services in the file.
	built := 0
	for _, name := range []string{"stream", "worker", "serve", "score", "gen"} {
		svc := p.Services[name]
		if svc.Image != "tideline:dev" {
			t.Errorf("%s runs image %q, want tideline:dev", name, svc.Image)
		}
		if svc.Build != nil {
			built++
			if df := filepath.Join(svc.Build.Context, cmpOr(svc.Build.Dockerfile, "Dockerfile")); !fileExists(df) {
				t.Errorf("%s builds from %s, which does not exist", name, df)
			}
		}
		root := newRoot()
		cmd, args, err := root.Find(svc.Command)
		if err == nil {
			err = cmd.ParseFlags(args)
		}
		if err != nil || cmd == root {
			t.Errorf("%s's command %q is not one tideline accepts: %v", name, svc.Command, err)
		}
		for k, v := range svc.Environment {
			if v == nil || !strings.HasPrefix(k, "TIDELINE_") {
				continue
			}
			for _, host := range []string{"nats:", "temporal:", "minio:"} {
				if strings.Contains(*v, host) {
					if _, ok := p.Services[strings.TrimSuffix(host, ":")]; !ok {
						t.Errorf("%s: %s=%s names no service", name, k, *v)
					}
				}
			}
		}
		if svc.Environment["TIDELINE_NATS_URL"] == nil {
			t.Errorf("%s is not told where NATS is", name)
		}
	}
	if built != 1 {
		t.Errorf("%d services build the image; want one, the others reuse tideline:dev", built)
	}
	docker, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"AS build", "CGO_ENABLED=1", "COPY --from=build", "ENTRYPOINT [\"tideline\"]"} {
		if !strings.Contains(string(docker), want) {
			t.Errorf("the Dockerfile lacks %q: it must be a multi-stage cgo build", want)
		}
	}
}

func mustAtoi(t *testing.T, s string) uint32 {
	var n uint32
	for _, c := range s {
		if c < '0' || c > '9' {
			t.Fatalf("port %q is not a number", s)
		}
		n = n*10 + uint32(c-'0')
	}
	return n
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
