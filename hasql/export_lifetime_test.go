//go:build !pgxold

package hasql

// The newest pgx takes a MaxConnLifetime of 0 for none: the nodes keep
// the lifetime (a test binary's build information lists no dependency to
// tell by).
func init() { pgxKeepsNoLifetime = func() bool { return true } }
