package examples_test

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// readmeGiven are the values README snippets use without making them, as
// the prose around them says: each snippet is compiled in a function that
// has them, in a scope of its own so that it may declare them again.
const readmeGiven = "ctx context.Context, t *testing.T, m *hasql.Manager, tx pgx.Tx, amount, id int64, n, v any, body string, cookie *http.Cookie, mux *http.ServeMux"

// readmePackages are the packages README snippets may name.
var readmePackages = map[string]string{
	"context":     "context",
	"errors":      "errors",
	"fmt":         "fmt",
	"log":         "log",
	"http":        "net/http",
	"json":        "encoding/json",
	"sql":         "database/sql",
	"slog":        "log/slog",
	"time":        "time",
	"testing":     "testing",
	"pgx":         "github.com/jackc/pgx/v5",
	"hasql":       "github.com/pgxha/pgxha/hasql",
	"balancer":    "github.com/pgxha/pgxha/balancer",
	"discovery":   "github.com/pgxha/pgxha/discovery",
	"failover":    "github.com/pgxha/pgxha/failover",
	"testcluster": "github.com/pgxha/pgxha/testcluster",
}

// TestReadmeCompiles builds every Go snippet of README.md (the quick start,
// the tour and the others) and of the pages in docs/ against the module as
// it is, so the docs cannot drift from the API. A snippet that starts with "func" is a declaration;
// any other is a function body. Variables a snippet declares without using
// them are allowed: a snippet shows calls, not a program.
func TestReadmeCompiles(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	require.NoError(t, err)
	fence := regexp.MustCompile("(?ms)^```go\n(.*?)^```")
	blocks := fence.FindAllSubmatch(readme, -1)
	require.GreaterOrEqual(t, len(blocks), 2, "the quick start and the tour at least")
	from := slices.Repeat([]string{"README.md"}, len(blocks)) // where each block is
	pages, err := filepath.Glob("../docs/*.md")
	require.NoError(t, err)
	for _, page := range pages {
		text, err := os.ReadFile(page)
		require.NoError(t, err)
		found := fence.FindAllSubmatch(text, -1)
		blocks = append(blocks, found...)
		from = append(from, slices.Repeat([]string{"docs/" + filepath.Base(page)}, len(found))...)
	}

	dir := t.TempDir()
	overlay := map[string]string{}
	pkgDir, err := filepath.Abs("internal/readmesnippets")
	require.NoError(t, err)
	for i, b := range blocks {
		src := snippetFile(i, string(b[1]))
		tmp := filepath.Join(dir, fmt.Sprintf("snippet%d.go", i))
		require.NoError(t, os.WriteFile(tmp, []byte(src), 0o644))
		overlay[filepath.Join(pkgDir, fmt.Sprintf("snippet%d.go", i))] = tmp
	}
	ov, err := json.Marshal(map[string]any{"Replace": overlay})
	require.NoError(t, err)
	ovPath := filepath.Join(dir, "overlay.json")
	require.NoError(t, os.WriteFile(ovPath, ov, 0o644))

	out, _ := exec.Command("go", "build", "-v=false", "-gcflags=-e", "-overlay", ovPath, "-o", os.DevNull, "./internal/readmesnippets").CombinedOutput()
	var errs []string
	for _, line := range strings.Split(string(out), "\n") {
		if line == "" || strings.HasPrefix(line, "#") || strings.Contains(line, "declared and not used") {
			continue
		}
		errs = append(errs, line)
	}
	if len(errs) > 0 {
		for i, b := range blocks {
			t.Logf("snippet%d.go, from %s:\n%s", i, from[i], snippetFile(i, string(b[1])))
		}
		t.Fatalf("README snippets do not compile:\n%s", strings.Join(errs, "\n"))
	}
}

// snippetFile makes a Go file of README snippet i.
func snippetFile(i int, code string) string {
	var body []string
	for _, line := range strings.Split(code, "\n") {
		if strings.HasPrefix(line, "import ") {
			continue // the file imports what the snippet names
		}
		body = append(body, line)
	}
	code = strings.Join(body, "\n")
	decl := strings.HasPrefix(strings.TrimSpace(code), "func ")
	if !decl {
		code = fmt.Sprintf("func snippet%d(%s) error {\n\t{\n%s\n\t}\n\treturn nil\n}\n", i, readmeGiven, code)
	}
	var imports []string
	for _, name := range slices.Sorted(maps.Keys(readmePackages)) {
		if regexp.MustCompile(`\b` + name + `\.`).MatchString(code) {
			imports = append(imports, fmt.Sprintf("\t%s %q", name, readmePackages[name]))
		}
	}
	return "package readmesnippets\n\nimport (\n" + strings.Join(imports, "\n") + "\n)\n\n" + code
}
