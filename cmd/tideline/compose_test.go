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

// loadCompose loads docker-compose.yml with compose-go, as docker compose
// does, with env in place of a .env file.
func loadCompose(t *testing.T, env ...string) (*types.Project, error) {
	t.Helper()
	opts, err := cli.NewProjectOptions([]string{"../../docker-compose.yml"}, cli.WithName("tideline"), cli.WithWorkingDirectory("../.."),
		cli.WithEnv(env), cli.WithInterpolation(true))
	if err != nil {
		t.Fatal(err)
	}
	return opts.LoadProject(t.Context())
}

// TestComposeFile loads docker-compose.yml with compose-go, as docker
// compose does, and holds it to what the README promises: every part, the
// published ports on 127.0.0.1 unless .env says otherwise, health checks,
// start-up order on health, restart policies, memory limits, named volumes
// for every stateful service, credentials only from .env, tideline's
// services built once from the Dockerfile and never pulled, their commands
// accepted by this binary's own flag parsing, and addresses that name
// services of the file. `make compose-test` runs the file for real; this
// test keeps what that run found from coming back.
func TestComposeFile(t *testing.T) {
	if _, err := loadCompose(t); err == nil || !strings.Contains(err.Error(), "TIDELINE_S3_SECRET_KEY") {
		t.Errorf("docker-compose.yml loads without TIDELINE_S3_SECRET_KEY (err %v); it must refuse to start without the secrets of .env", err)
	}
	p, err := loadCompose(t, "TIDELINE_S3_ACCESS_KEY=someone", "TIDELINE_S3_SECRET_KEY=s3cr3t-from-env", "TIDELINE_NATS_USER=natsuser", "TIDELINE_NATS_PASSWORD=natspass")
	if err != nil {
		t.Fatalf("docker-compose.yml does not load: %v", err)
	}
	example, err := os.ReadFile("../../.env.example")
	if err != nil {
		t.Fatalf(".env.example, the template of the .env compose reads: %v", err)
	}
	for _, k := range []string{"TIDELINE_S3_ACCESS_KEY=", "TIDELINE_S3_SECRET_KEY=", "TIDELINE_NATS_USER=", "TIDELINE_NATS_PASSWORD=", "TIDELINE_TOKEN=", "TIDELINE_BIND=127.0.0.1"} {
		if !strings.Contains(string(example), "\n"+k) {
			t.Errorf(".env.example has no line %s...", k)
		}
	}
	if cmd := strings.Join(p.Services["nats"].Command, " "); !strings.Contains(cmd, "--user natsuser --pass natspass") {
		t.Errorf("NATS runs %q; want clients to log in with the user and password of .env", cmd)
	}
	stateful := map[string]string{"nats": "/data", "temporal": "/home/temporal", "minio": "/data"}
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
			if pc.HostIP != "127.0.0.1" {
				t.Errorf("%s publishes %s on %q; want 127.0.0.1 unless TIDELINE_BIND says otherwise", name, pc.Published, pc.HostIP)
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, ports) {
			t.Errorf("%s publishes %v, want %v", name, got, ports)
		}
		if name != "gen" && (svc.HealthCheck == nil || len(svc.HealthCheck.Test) < 2) {
			t.Errorf("%s has no health check", name)
		}
		if svc.Restart != types.RestartPolicyUnlessStopped {
			t.Errorf("%s restarts %q; want unless-stopped", name, svc.Restart)
		}
		if svc.Deploy == nil || svc.Deploy.Resources.Limits == nil || svc.Deploy.Resources.Limits.MemoryBytes == 0 {
			t.Errorf("%s has no memory limit", name)
		}
		if dir, ok := stateful[name]; ok {
			named := slices.ContainsFunc(svc.Volumes, func(v types.ServiceVolumeConfig) bool {
				return v.Type == types.VolumeTypeVolume && v.Target == dir && p.Volumes[v.Source].Name != ""
			})
			if !named {
				t.Errorf("%s keeps its data in %s, which is not a named volume: %+v", name, dir, svc.Volumes)
			}
		}
		for k, v := range svc.Environment {
			if v != nil && strings.Contains(*v, "tideline-dev-secret") {
				t.Errorf("%s: %s is a secret written in the file; it must come from .env", name, k)
			}
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
		if svc.PullPolicy != types.PullPolicyNever {
			t.Errorf("%s has pull_policy %q; want never (no registry has tideline:dev)", name, svc.PullPolicy)
		}
		if svc.HealthCheck != nil && len(svc.HealthCheck.Test) > 2 && svc.HealthCheck.Test[1] != "tideline" {
			t.Errorf("%s's health check runs %q; the image has no curl or wget, use tideline healthcheck", name, svc.HealthCheck.Test[1])
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
		if u := svc.Environment["TIDELINE_NATS_URL"]; u == nil || !strings.HasPrefix(*u, "nats://natsuser:natspass@nats:") {
			t.Errorf("%s is not told where NATS is, with the credentials of .env: %v", name, u)
		}
	}
	if built != 1 {
		t.Errorf("%d services build the image; want one, the others reuse tideline:dev", built)
	}
	docker, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"AS build", "CGO_ENABLED=1", "COPY --from=build", "ENTRYPOINT [\"tideline\"]", "COPY build/modules/ /modules/", "file:///modules,"} {
		if !strings.Contains(string(docker), want) {
			t.Errorf("the Dockerfile lacks %q: it must be a multi-stage cgo build that reads modules from build/modules/ first", want)
		}
	}
	if runtime := string(docker)[strings.LastIndex(string(docker), "\nFROM "):]; strings.Contains(runtime, "apt-get") {
		t.Errorf("the Dockerfile's runtime stage runs apt-get: its build would need a package mirror")
	}
	if !fileExists("../../build/modules/README.md") {
		t.Errorf("build/modules/README.md is missing: the Dockerfile's COPY build/modules/ needs the directory")
	}
	ignore, err := os.ReadFile("../../.dockerignore")
	if err != nil {
		t.Fatalf(".dockerignore: %v (without it .git, bin/ and .tideline/ go into the build context)", err)
	}
	for _, want := range []string{".git", "bin", ".tideline", ".env"} {
		if !slices.Contains(strings.Fields(string(ignore)), want) {
			t.Errorf(".dockerignore does not leave out %s", want)
		}
	}

	// The temporalio/temporal image runs as uid 1000 and has no /data: a
	// named volume mounted at a path the image lacks is root-owned, and the
	// dev server cannot create its database there. Its database must be in
	// the volume at the temporal user's home.
	tmp := p.Services["temporal"]
	if tmp.User == "" && !slices.Contains(tmp.Command, "/home/temporal/temporal.db") {
		t.Errorf("temporal's --db-filename is not in /home/temporal, the volume the image's user owns: %q", tmp.Command)
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
