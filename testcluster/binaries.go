package testcluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// serverPrograms are the PostgreSQL programs the local backend runs.
var serverPrograms = []string{"initdb", "postgres", "pg_rewind"}

// FindBinDir returns the directory holding the PostgreSQL server programs
// (initdb, postgres, pg_rewind). It looks, in order, at the PGXHA_PG_BINDIR
// environment variable, `pg_config --bindir`, the directories of PATH, and
// /usr/lib/postgresql/*/bin and /usr/local/pgsql/bin, newest major version first.
// The error lists every place it looked.
func FindBinDir() (string, error) {
	var looked []string
	try := func(dir string) bool {
		if dir == "" {
			return false
		}
		looked = append(looked, dir)
		return hasServerPrograms(dir)
	}
	if dir := os.Getenv("PGXHA_PG_BINDIR"); dir != "" {
		if try(dir) {
			return dir, nil
		}
		return "", fmt.Errorf("testcluster: PGXHA_PG_BINDIR=%s does not hold %s", dir, strings.Join(serverPrograms, ", "))
	}
	if pgConfig, err := exec.LookPath("pg_config"); err == nil {
		if out, err := exec.Command(pgConfig, "--bindir").Output(); err == nil {
			if try(strings.TrimSpace(string(out))) {
				return strings.TrimSpace(string(out)), nil
			}
		}
	}
	for _, dir := range filepath.SplitList(os.Getenv("PATH")) {
		if try(dir) {
			return dir, nil
		}
	}
	candidates, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(candidates, func(i, j int) bool {
		return majorOf(candidates[i]) > majorOf(candidates[j])
	})
	candidates = append(candidates, "/usr/local/pgsql/bin")
	for _, dir := range candidates {
		if try(dir) {
			return dir, nil
		}
	}
	return "", errors.New("testcluster: no PostgreSQL server binaries (" + strings.Join(serverPrograms, ", ") +
		") found; looked in " + strings.Join(dedup(looked), ", ") +
		". Install them (Debian: apt-get install postgresql) or set PGXHA_PG_BINDIR")
}

func hasServerPrograms(dir string) bool {
	for _, p := range serverPrograms {
		fi, err := os.Stat(filepath.Join(dir, p))
		if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return false
		}
	}
	return true
}

// majorOf extracts the version number from /usr/lib/postgresql/<n>/bin.
func majorOf(dir string) float64 {
	v, err := strconv.ParseFloat(filepath.Base(filepath.Dir(dir)), 64)
	if err != nil {
		return -1
	}
	return v
}

func dedup(s []string) []string {
	seen := make(map[string]bool, len(s))
	out := s[:0:0]
	for _, v := range s {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}
