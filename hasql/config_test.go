package hasql_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
)

const secret = "s3cr3t-pa55word"

func addrs(cfg *hasql.Config) []string {
	var out []string
	for _, n := range cfg.Nodes {
		out = append(out, n.Addr)
	}
	return out
}

func TestParseConfigHosts(t *testing.T) {
	for _, tc := range []struct {
		name, dsn string
		want      []string
	}{
		{"url per-host ports", "postgres://u:" + secret + "@h1:5433,h2:5434,h3:5435/db", []string{"h1:5433", "h2:5434", "h3:5435"}},
		{"url default port", "postgres://u@h1,h2/db", []string{"h1:5432", "h2:5432"}},
		{"url mixed ports keep their hosts", "postgres://u@h1:6000,h2,h3:6001/db", []string{"h1:6000", "h2:5432", "h3:6001"}},
		{"url ipv6", "postgres://u@[::1]:5433/db", []string{"[::1]:5433"}},
		{"kv ipv6", "host=::1,::2 user=u", []string{"[::1]:5432", "[::2]:5432"}},
		{"kv one port for all", "host=h1,h2,h3 port=6000 user=u", []string{"h1:6000", "h2:6000", "h3:6000"}},
		{"kv port per host", "host=h1,h2 port=6000,6001 user=u password=" + secret, []string{"h1:6000", "h2:6001"}},
		{"kv no port", "host=h1,h2 user=u", []string{"h1:5432", "h2:5432"}},
		{"unix socket", "host=/tmp port=5433 user=u", []string{"/tmp:5433"}},
		{"sslmode prefer makes one node per host", "postgres://u@h1,h2/db?sslmode=prefer", []string{"h1:5432", "h2:5432"}},
		{"url socket directory", "postgres://u@%2Ftmp%2Fpg/db", []string{"/tmp/pg:5432"}},
		{"url socket directory and port", "postgresql://u:" + secret + "@%2Fvar%2Frun%2Fpostgresql:5433/db", []string{"/var/run/postgresql:5433"}},
		{"url ipv6 hosts", "postgres://u:p@[::1]:5001,[::1]:5002/db", []string{"[::1]:5001", "[::1]:5002"}},
		{"url ipv6 and names, mixed ports", "postgres://u@[::1],h2:5002,[2001:db8::7]:5003/db?sslmode=disable", []string{"[::1]:5432", "h2:5002", "[2001:db8::7]:5003"}},
		{"url socket and tcp hosts", "postgres://u@%2Ftmp:5001,h2:5002/db", []string{"/tmp:5001", "h2:5002"}},
		{"url host parameter wins", "postgres://u@h9/db?host=h1,h2&port=5001,5002", []string{"h1:5001", "h2:5002"}},
		{"url port parameter for the list", "postgres://u@h1,h2/db?port=5001", []string{"h1:5001", "h2:5001"}},
		{"url no host", "postgres:///db?host=%2Ftmp", []string{"/tmp:5432"}},
		{"url at sign in the query", "postgres://h1,h2/db?application_name=a@b", []string{"h1:5432", "h2:5432"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := hasql.ParseConfig(tc.dsn)
			require.NoError(t, err)
			assert.Equal(t, tc.want, addrs(cfg))
		})
	}
}

func TestParseConfigSettings(t *testing.T) {
	cfg, err := hasql.ParseConfig("postgres://u:" + secret + "@h1,h2/db?hasql_check_interval=250ms&hasql_check_timeout=2s" +
		"&hasql_fast_check_interval=10ms&hasql_fast_check_window=3s&hasql_balancer=least_busy&hasql_max_lag_bytes=16MB" +
		"&hasql_max_lag=5s&hasql_master_read_weight=0.5&hasql_wait_on_socket=false&target_session_attrs=read-write" +
		"&load_balance_hosts=random&application_name=svc&pool_max_conns=7&hasql_promotion_poll=25ms")
	require.NoError(t, err)
	assert.Equal(t, 250*time.Millisecond, cfg.CheckInterval)
	assert.Equal(t, 2*time.Second, cfg.CheckTimeout)
	assert.Equal(t, 10*time.Millisecond, cfg.FastCheckInterval)
	assert.Equal(t, 3*time.Second, cfg.FastCheckWindow)
	assert.Equal(t, "least_busy", cfg.Balancer.Name(), "hasql_balancer wins over load_balance_hosts")
	assert.Equal(t, int64(16<<20), cfg.MaxLagBytes)
	assert.Equal(t, 5*time.Second, cfg.MaxLag)
	assert.Equal(t, 0.5, cfg.MasterReadWeight)
	assert.False(t, cfg.WaitOnSocket)
	assert.Equal(t, 25*time.Millisecond, cfg.PromotionPoll)
	assert.Equal(t, "read-write", cfg.TargetSessionAttrs)
	assert.Equal(t, int32(7), cfg.PoolConfig.MaxConns)
	params := cfg.PoolConfig.ConnConfig.RuntimeParams
	assert.Equal(t, map[string]string{"application_name": "svc"}, params, "library keys are never sent to the server")
	assert.Nil(t, cfg.PoolConfig.ConnConfig.ValidateConnect, "routing is the manager's, not pgconn's")
}

func TestParseConfigDefaults(t *testing.T) {
	cfg, err := hasql.ParseConfig("host=h1,h2 user=u")
	require.NoError(t, err)
	assert.Equal(t, hasql.DefaultCheckInterval, cfg.CheckInterval)
	assert.Equal(t, hasql.DefaultCheckTimeout, cfg.CheckTimeout)
	assert.Equal(t, hasql.DefaultFastCheckInterval, cfg.FastCheckInterval)
	assert.Equal(t, hasql.DefaultPromotionPoll, cfg.PromotionPoll)
	assert.Equal(t, "round_robin", cfg.Balancer.Name())
	assert.True(t, cfg.WaitOnSocket)
	assert.Equal(t, hasql.DefaultCheckKeepAlive, cfg.CheckKeepAlive)
	assert.Equal(t, "any", cfg.TargetSessionAttrs)
	assert.Zero(t, cfg.MaxLagBytes)
	assert.Zero(t, cfg.MasterReadWeight)

	lb, err := hasql.ParseConfig("host=h1,h2 user=u load_balance_hosts=disable")
	require.NoError(t, err)
	assert.Equal(t, "first", lb.Balancer.Name())
}

func TestParseConfigProfile(t *testing.T) {
	fleet, err := hasql.ParseConfig("host=h1,h2 user=u hasql_profile=fleet")
	require.NoError(t, err)
	assert.Equal(t, hasql.FleetCheckInterval, fleet.CheckInterval)
	assert.Equal(t, hasql.DefaultCheckKeepAlive, fleet.CheckKeepAlive, "the fleet profile keeps the kernel's watch")

	// A setting the profile sets, given too, wins whatever the order.
	for _, dsn := range []string{
		"host=h1 user=u hasql_check_interval=2s hasql_profile=fleet hasql_check_keepalive=3s",
		"host=h1 user=u hasql_profile=fleet hasql_check_keepalive=3s hasql_check_interval=2s",
	} {
		cfg, err := hasql.ParseConfig(dsn)
		require.NoError(t, err)
		assert.Equal(t, 2*time.Second, cfg.CheckInterval, dsn)
		assert.Equal(t, 3*time.Second, cfg.CheckKeepAlive, dsn)
	}
	def, err := hasql.ParseConfig("host=h1 user=u hasql_profile=default hasql_check_keepalive=0")
	require.NoError(t, err)
	assert.Equal(t, hasql.DefaultCheckInterval, def.CheckInterval)
	assert.Zero(t, def.CheckKeepAlive)
}

func TestParseConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name, dsn string
		want      []string // all must appear in the error
	}{
		{"bad port", "postgres://u:" + secret + "@h1:5432,h2:99999/db", []string{"port"}},
		{"non-numeric port kv", "host=h1 port=abc user=u password=" + secret, []string{"port"}},
		{"port list mismatch", "host=h1,h2,h3 port=5432,5433 user=u password=" + secret, []string{"5432,5433", "2 entries", "3 hosts"}},
		{"unknown hasql key", "postgres://u:" + secret + "@h1/db?hasql_chek_interval=1s", []string{"hasql_chek_interval", "hasql_check_interval"}},
		{"bad duration", "postgres://u:" + secret + "@h1/db?hasql_check_interval=fast", []string{"hasql_check_interval", `"fast"`}},
		{"promotion poll too short", "postgres://u:" + secret + "@h1/db?hasql_promotion_poll=100us", []string{"hasql_promotion_poll", `"100us"`, "at least 1ms"}},
		{"duration without unit", "host=h1 user=u password=" + secret + " hasql_check_timeout=500", []string{"hasql_check_timeout", `"500"`}},
		{"zero interval", "host=h1 user=u hasql_check_interval=0s", []string{"hasql_check_interval", "at least"}},
		{"empty host url", "postgres://u:" + secret + "@h1,,h3/db", []string{"empty host", "position 2"}},
		{"empty host kv", "host=h1,,h3 user=u password=" + secret, []string{"empty host", "position 2"}},
		{"empty port kv", "host=h1,h2 port=5432, user=u", []string{"empty port"}},
		{"bad balancer", "host=h1 user=u hasql_balancer=fastest", []string{"hasql_balancer", "fastest", "round_robin"}},
		{"bad max lag bytes", "host=h1 user=u hasql_max_lag_bytes=lots", []string{"hasql_max_lag_bytes", "lots"}},
		{"negative weight", "host=h1 user=u hasql_master_read_weight=-1", []string{"hasql_master_read_weight", "-1"}},
		{"bad bool", "host=h1 user=u hasql_wait_on_socket=maybe", []string{"hasql_wait_on_socket", "maybe"}},
		{"bad profile", "host=h1 user=u hasql_profile=fast", []string{"hasql_profile", `"fast"`, "default or fleet"}},
		{"keepalive below a second", "host=h1 user=u hasql_check_keepalive=500ms", []string{"hasql_check_keepalive", `"500ms"`, "from 1s"}},
		{"bad keepalive", "host=h1 user=u hasql_check_keepalive=soon", []string{"hasql_check_keepalive", `"soon"`}},
		{"keepalive too long", "host=h1 user=u hasql_check_keepalive=10h", []string{"hasql_check_keepalive", `"10h"`, "9h6m7s"}},
		{"bad target_session_attrs", "postgres://u:" + secret + "@h1/db?target_session_attrs=writer", []string{"target_session_attrs", "writer"}},
		{"bad load_balance_hosts", "host=h1 user=u load_balance_hosts=yes", []string{"load_balance_hosts", "yes"}},
		{"duplicate host", "host=h1,h1 user=u", []string{"h1:5432", "twice"}},
		{"duplicate host sslmode disable", "host=h1,h1 user=u sslmode=disable", []string{"h1:5432", "twice"}},
		{"duplicate host sslmode allow", "host=h1,h2,h1 user=u sslmode=allow", []string{"h1:5432", "twice"}},
		{"broken url", "postgres://u:" + secret + "@h1:5432/db%zz", []string{"URL"}},
		{"unclosed ipv6", "postgres://u:" + secret + "@[::1:5432,h2/db", []string{"IPv6", "position 1"}},
		{"empty ipv6", "postgres://u:" + secret + "@h1,[]:5432/db", []string{"empty IPv6", "position 2"}},
		{"junk after ipv6", "postgres://u:" + secret + "@[::1]x/db", []string{"[::1]x", "[address]:port"}},
		{"bad host escape", "postgres://u:" + secret + "@%zz/db", []string{"host", "percent-encoding"}},
		{"bad port in list", "postgres://u:" + secret + "@h1:5432,h2:http/db", []string{`"http"`, "position 2"}},
		{"broken kv", "host=h1 user=u password='" + secret, []string{"cannot parse"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := hasql.ParseConfig(tc.dsn)
			require.Error(t, err)
			assert.Nil(t, cfg)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
			assert.NotContains(t, err.Error(), secret, "never the password")
		})
	}
}

func TestOptionsErrors(t *testing.T) {
	ctx := t.Context()
	for _, tc := range []struct {
		opt  hasql.Option
		want string
	}{
		{hasql.WithReplicaName("nowhere:1", "n9"), "no host nowhere:1"},
		{hasql.WithNodeWeight("h1:5432", 0), "want a number > 0"},
		{hasql.WithNodeWeight("nowhere:1", 1), "no host nowhere:1"},
		{hasql.WithMasterReadWeight(-2), "want a number >= 0"},
		{hasql.WithBalancer(nil), "nil balancer"},
		{hasql.WithChecker(nil), "nil checker"},
	} {
		m, err := hasql.New(ctx, "postgres://u:"+secret+"@h1,h2/db", tc.opt)
		require.Error(t, err)
		assert.Nil(t, m)
		assert.Contains(t, err.Error(), tc.want)
	}
}

func TestNewWithConfigRefusesHandMadeConfig(t *testing.T) {
	_, err := hasql.NewWithConfig(t.Context(), &hasql.Config{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "ParseConfig")
}

func TestConfigCopyIsIndependent(t *testing.T) {
	cfg, err := hasql.ParseConfig("host=h1,h2 user=u application_name=a")
	require.NoError(t, err)
	cp := cfg.Copy()
	cp.Nodes[0].Weight = 5
	cp.PoolConfig.ConnConfig.RuntimeParams["application_name"] = "b"
	assert.Equal(t, 1.0, cfg.Nodes[0].Weight)
	assert.Equal(t, "a", cfg.PoolConfig.ConnConfig.RuntimeParams["application_name"])
}

func TestRedactWholeValues(t *testing.T) {
	dsn := "postgres://u:p@h1,h2/db"
	assert.Equal(t, "hasql: invalid port; password xxxxx at u:xxxxx@h1", hasql.Redact(dsn, "hasql: invalid port; password p at u:p@h1"))
	kv := "host=h1 user=u password=secret"
	assert.Equal(t, "secrets are kept; xxxxx is not", hasql.Redact(kv, "secrets are kept; secret is not"))
	_, err := hasql.ParseConfig("postgres://u:p@h1:99999/db")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "port", "the word port survives the password p: %v", err)
}

// TestRedactEscapedPassword: a keyword/value password whose spaces are
// escaped with a backslash (libpq's unquoted spelling) is redacted whole:
// in password=..., as pgx reads it, and as pgx v5.8 reads it (only \\ and
// \' unescaped).
func TestRedactEscapedPassword(t *testing.T) {
	for _, tc := range []struct{ dsn, written, libpq, old, part string }{
		{`host=db1 user=app password=hunter\ twopart dbname=app`, `hunter\ twopart`, "hunter twopart", `hunter\ twopart`, "twopart"},
		{`host=db1 user=app password=first\ second\ third dbname=app`, `first\ second\ third`, "first second third", `first\ second\ third`, "second"},
		{`host=db1 user=app sslpassword=x password=a\'b\ cc dbname=app`, `a\'b\ cc`, "a'b cc", `a'b\ cc`, "cc"},
	} {
		cfg, err := hasql.ParseConfig(tc.dsn)
		require.NoError(t, err)
		assert.Contains(t, []string{tc.libpq, tc.old}, cfg.PoolConfig.ConnConfig.Password, "pgx's reading (v5.8's, or libpq's since)")
		assert.Equal(t, "user=app password=xxxxx dbname=app", hasql.Redact(tc.dsn, "user=app password="+tc.written+" dbname=app"))
		for _, pw := range []string{tc.libpq, tc.old} {
			out := hasql.Redact(tc.dsn, `bad password "`+pw+`"`)
			assert.Equal(t, `bad password "xxxxx"`, out, "%s, %s", tc.dsn, pw)
		}
	}
}

func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		"%2Ftmp%2Fpg/db",
		"%2Ftmp:5433,h2/db?sslmode=disable",
		"[::1]:5001,[::1]:5002/db",
		"[::1],[fe80::1%25eth0]:7/db",
		"[::1/db",
		"h1,[]/db",
		"h1:5432,h2:5433/db?hasql_check_interval=1s",
		"host=h1,h2 port=5432,5433 user=u",
		"h1,,h2/db",
		"host=h1 port=1,2,3",
		"[::1]:5/db?hasql_balancer=p2c",
		"h1:5432/db%zz",
		"host=h1 password = 'x",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		// The password sits where a password goes; whatever else s makes
		// of the string, it must not show up in an error.
		for _, dsn := range []string{
			"postgres://u:" + secret + "@" + s,
			"password=" + secret + " " + s,
			s + " password='" + secret + "'",
			s,
		} {
			cfg, err := hasql.ParseConfig(dsn)
			if err != nil {
				if !strings.Contains(s, secret) && strings.Contains(err.Error(), secret) {
					t.Fatalf("error shows the password: %v", err)
				}
				continue
			}
			if len(cfg.Nodes) == 0 {
				t.Fatalf("no node from %q", dsn)
			}
			for k := range cfg.PoolConfig.ConnConfig.RuntimeParams {
				if strings.HasPrefix(k, "hasql_") || k == "load_balance_hosts" {
					t.Fatalf("%s would be sent to the server", k)
				}
			}
		}
	})
}

func TestWatchPromotionSetting(t *testing.T) {
	cfg, err := hasql.ParseConfig("host=h1 user=u")
	require.NoError(t, err)
	assert.True(t, cfg.WatchPromotion, "on by default")
	cfg, err = hasql.ParseConfig("host=h1 user=u hasql_watch_promotion=false")
	require.NoError(t, err)
	assert.False(t, cfg.WatchPromotion)
}
