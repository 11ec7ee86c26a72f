package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
)

func run(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errb bytes.Buffer
	root := newRoot()
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&errb)
	err = root.ExecuteContext(t.Context())
	return out.String(), errb.String(), err
}

func TestSpecCheck(t *testing.T) {
	out, _, err := run(t, "spec", "check", "../../examples/payments/tideline.yaml")
	if err != nil {
		t.Fatalf("example spec: %v", err)
	}
	for _, want := range []string{"2 stream(s), 6 view(s)", "stream payments", "view card_5m", "window=5m0s every 1m0s", "window=session 5m0s (at most 15m0s)"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	_, stderr, err := run(t, "spec", "check", "../../spec/testdata/broken.yaml")
	if err == nil || !strings.Contains(err.Error(), "3 error(s)") {
		t.Fatalf("broken spec: err = %v, want 3 errors", err)
	}
	if n := strings.Count(stderr, "broken.yaml:"); n != 3 {
		t.Errorf("want 3 positioned errors, got %d:\n%s", n, stderr)
	}
	if _, _, err := run(t, "spec", "check", "no/such/file.yaml"); err == nil || !strings.Contains(err.Error(), "no/such/file.yaml") {
		t.Errorf("missing file: err = %v, want one naming the file", err)
	}
}

// TestQueryLocal reads an empty local lake through `tideline query --local`
// in each output format, and refuses what serve refuses.
func TestQueryLocal(t *testing.T) {
	lakeURL := "file://" + t.TempDir()
	common := []string{"query", "--local", "--spec", "../../examples/payments/tideline.yaml", "--lake", lakeURL, "--cache", t.TempDir()}
	for format, want := range map[string]string{
		"table": "windows  sources\n0        0\n(1 rows)\n",
		"csv":   "windows,sources\n0,0\n",
		"json":  `"columns": [`,
	} {
		out, _, err := run(t, append(common, "--format", format, "SELECT count(*) AS windows, count(DISTINCT source) AS sources FROM merchant_minute")...)
		if err != nil || !strings.Contains(out, want) {
			t.Errorf("--format %s: %q, %v; want %q", format, out, err, want)
		}
	}
	if _, _, err := run(t, append(common, "DROP VIEW merchant_minute")...); err == nil || !strings.Contains(err.Error(), "only a SELECT") {
		t.Errorf("DROP through query --local: %v", err)
	}
	if _, _, err := run(t, append(common, "--format", "xml", "SELECT 1")...); err == nil || !strings.Contains(err.Error(), "xml") {
		t.Errorf("--format xml: %v", err)
	}
}

// TestBadNumberInEnvironment starts the commands with TIDELINE_REPLICAS set
// to something that is not a number, in a child process (the program stops
// at once): it exits 2 with a message naming the variable, and does not
// carry on with a default.
func TestBadNumberInEnvironment(t *testing.T) {
	if os.Getenv("TIDELINE_TEST_BAD_ENV") == "1" {
		newRoot()
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestBadNumberInEnvironment$")
	cmd.Env = append(os.Environ(), "TIDELINE_TEST_BAD_ENV=1", "TIDELINE_REPLICAS=three")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(string(out), `TIDELINE_REPLICAS="three" is not a whole number`) {
		t.Fatalf("exit %v, output:\n%s", err, out)
	}
}
