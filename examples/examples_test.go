package examples_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestExamplesRun builds every example and runs it with no arguments, as a
// user would: each starts its own embedded cluster, does its job and exits
// 0. Its output must show the job done.
func TestExamplesRun(t *testing.T) {
	t.Setenv("PGXHA_DSN", "") // the embedded cluster, not the caller's
	bin := t.TempDir()
	for _, tc := range []struct {
		name string
		want []string // regular expressions the output must match
	}{
		{"quickstart", []string{
			`INSERT id 1\s+served by \S+ \(n1, master\)`,
			`served by \S+ \(n[23], replica\)`,
			`Roles, as the manager sees them:`,
			`\sn1\s+master\s`, `\sn2\s+sync\s+sync\s`, `\sn3\s+async\s+async\s`,
		}},
		{"causal", []string{`plain replica read: .*<- stale`, `MinLSN reads never were`}},
		{"tokens", []string{
			`POST /comments "first!" on instance 1 -> 201 Created, cookie pgxha_token=v1\.1\.[0-9a-f]+\.[0-9a-f]+\n`,
			`GET /comments/1 on instance 2 with the cookie\s+-> 200 OK "first!" \(served by n1, master\)`,
			`GET /comments/1 on instance 2 without it\s+-> 404 Not Found`,
			`job payload \{"comment_id":2,"token":"v1\.1\.[0-9a-f]+\.[0-9a-f]+"\}`,
			`job: comment 2 read by the worker after token v1\.\S+ -> "second" \(served by n1, master\)`,
			`Replay resumed(?s:.*)GET /comments/1 on instance 2 with the cookie\s+-> 200 OK "first!" \(served by n[23], replica\)`,
			`GET /healthz -> 200 OK: status ok, writes true, reads true, 3 nodes`,
		}},
		{"listen", []string{
			`received "order 1" on orders`,
			`listening again, now on \S+; notifications sent in the \S+ gap may be lost`,
			`received "order 3" on orders`,
		}},
		{"readwrite", []string{
			`POST /notes "first note" -> 201 Created`,
			`GET /notes/1\?lsn=\S+ -> 200 OK \{"body":"first note"`,
			`hasql\.acquire master\s+\d+`, `\n\s+INSERT\s+\d+\n`,
			`hasql\.node\.role`, `db\.client\.connection\.count`,
		}},
		{"discovery", []string{
			`The new node has a pool and a check, and serves reads once checked:\s+\S+\s+master\s+\S+\s+sync\s+127\.0\.0\.13:\d+\s+async`,
			`read served by 127\.0\.0\.13:\d+`,
			`Record removed: 127\.0\.0\.12\n(?s:.*)Its node gets no new acquire(?s:.*)127\.0\.0\.13:\d+\s+async\n\n`,
			`INSERT 0 1 served by the new master 127\.0\.0\.13:\d+`,
		}},
		{"failover-demo", []string{
			`killing the master n1; promoting n2`,
			`master n2\s+n1=down n2=master`,
			`acknowledged writes, 0 lost`,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			exe := filepath.Join(bin, tc.name)
			build := exec.Command("go", "build", "-o", exe, "./"+tc.name)
			out, err := build.CombinedOutput()
			require.NoError(t, err, "go build ./%s:\n%s", tc.name, out)

			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, exe)
			cmd.Env = os.Environ()
			out, err = cmd.CombinedOutput()
			require.NoError(t, err, "%s exits 0; output:\n%s", tc.name, out)
			for _, w := range tc.want {
				assert.Regexp(t, regexp.MustCompile(w), string(out), "%s output", tc.name)
			}
		})
	}
}

// TestDemoNeedsOnlyPostgres: make demo (and the other targets a first-time
// user runs) install PostgreSQL only, not Patroni and etcd.
func TestDemoNeedsOnlyPostgres(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Fatalf("make is needed to read the Makefile: %v", err)
	}
	for _, target := range []string{"demo", "demo-failover", "cluster"} {
		out, err := exec.Command("make", "-n", "-C", "..", target).CombinedOutput()
		require.NoError(t, err, "make -n %s:\n%s", target, out)
		assert.Contains(t, string(out), "ensure-postgres.sh", "make %s installs PostgreSQL", target)
		assert.NotContains(t, string(out), "ensure-patroni.sh", "make %s does not install Patroni and etcd", target)
	}
}
