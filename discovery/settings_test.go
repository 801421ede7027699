package discovery_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/discovery"
)

func TestFromSettings(t *testing.T) {
	one := []string{"db.prod.svc.cluster.local:5433"}
	t.Run("default is static", func(t *testing.T) {
		for _, settings := range []map[string]string{nil, {"hasql_discovery": "static"}, {"hasql_discovery": ""}, {"sslmode": "disable"}} {
			d, err := discovery.FromSettings(settings, []string{"h1:5432", "h2:5433"})
			require.NoError(t, err)
			s, ok := d.(*discovery.Static)
			require.True(t, ok, "%T", d)
			assert.Equal(t, []discovery.Node{{Addr: "h1:5432"}, {Addr: "h2:5433"}}, s.Nodes())
		}
	})
	t.Run("dns from the host", func(t *testing.T) {
		d, err := discovery.FromSettings(map[string]string{"hasql_discovery": "DNS"}, one)
		require.NoError(t, err)
		cfg := d.(*discovery.DNS).Config()
		assert.Equal(t, "db.prod.svc.cluster.local", cfg.Name)
		assert.Equal(t, uint16(5433), cfg.Port)
		assert.Equal(t, discovery.DefaultDNSInterval, cfg.Interval)
		assert.Equal(t, discovery.DefaultDNSTimeout, cfg.Timeout)
		assert.Equal(t, discovery.DefaultMinInterval, cfg.MinInterval)
		assert.NotNil(t, cfg.Resolver)
		assert.Equal(t, "dns db.prod.svc.cluster.local port 5433", d.(*discovery.DNS).String())
	})
	t.Run("dns with every setting", func(t *testing.T) {
		d, err := discovery.FromSettings(map[string]string{
			"hasql_discovery": "dns", "hasql_discovery_name": "pg.example.com.", "hasql_discovery_port": "6432",
			"hasql_discovery_interval": "30s", "hasql_discovery_timeout": "750ms",
		}, []string{"a:1", "b:2"})
		require.NoError(t, err)
		cfg := d.(*discovery.DNS).Config()
		assert.Equal(t, "pg.example.com.", cfg.Name)
		assert.Equal(t, uint16(6432), cfg.Port)
		assert.Equal(t, 30*time.Second, cfg.Interval)
		assert.Equal(t, 750*time.Millisecond, cfg.Timeout)
	})
	t.Run("srv", func(t *testing.T) {
		d, err := discovery.FromSettings(map[string]string{"hasql_discovery": "srv"}, one)
		require.NoError(t, err)
		assert.Equal(t, "srv _postgresql._tcp.db.prod.svc.cluster.local", d.(*discovery.SRV).String())
		d, err = discovery.FromSettings(map[string]string{"hasql_discovery": "srv", "hasql_discovery_name": "_pg._tcp.example.com"}, nil)
		require.NoError(t, err)
		assert.Equal(t, "srv _pg._tcp.example.com", d.(*discovery.SRV).String(), "a name that starts with _ is used as it is")
	})
	t.Run("patroni from the hosts", func(t *testing.T) {
		d, err := discovery.FromSettings(map[string]string{"hasql_discovery": "patroni", "hasql_discovery_interval": "2s"},
			[]string{"10.0.0.1:5432", "[fd00::2]:5432"})
		require.NoError(t, err)
		cfg := d.(*discovery.Patroni).Config()
		assert.Equal(t, []string{"http://10.0.0.1:8008", "http://[fd00::2]:8008"}, cfg.URLs)
		assert.Equal(t, 2*time.Second, cfg.Interval)
		assert.Equal(t, discovery.DefaultPatroniTimeout, cfg.Timeout)
	})
	t.Run("patroni URLs", func(t *testing.T) {
		d, err := discovery.FromSettings(map[string]string{"hasql_discovery": "patroni",
			"hasql_discovery_urls": "https://u:secret@p1:8008/patroni, http://p2:8008"}, one)
		require.NoError(t, err)
		p := d.(*discovery.Patroni)
		assert.Equal(t, []string{"https://u:secret@p1:8008/patroni", "http://p2:8008"}, p.Config().URLs)
		assert.Equal(t, "patroni https://u:xxxxx@p1:8008,http://p2:8008", p.String())
	})
	t.Run("patroni URL with a comma in its password", func(t *testing.T) {
		// The list is split only at commas that begin a URL: the password
		// stays whole, and never half of it in an error.
		d, err := discovery.FromSettings(map[string]string{"hasql_discovery": "patroni",
			"hasql_discovery_urls": "http://u:Sec,ret1@p1:8008,HTTPS://p2:8008, http://v:a,,b@p3:8008"}, one)
		require.NoError(t, err)
		p := d.(*discovery.Patroni)
		assert.Equal(t, []string{"http://u:Sec,ret1@p1:8008", "HTTPS://p2:8008", "http://v:a,,b@p3:8008"}, p.Config().URLs)
		assert.NotContains(t, p.String(), "Sec")
		_, err = discovery.FromSettings(map[string]string{"hasql_discovery": "patroni",
			"hasql_discovery_urls": "http://u:Sec,ret1@p1:8008,ftp://p2"}, one)
		require.Error(t, err)
		assert.NotContains(t, err.Error(), "Sec")
		assert.NotContains(t, err.Error(), "ret1")
	})
}

func TestFromSettingsErrors(t *testing.T) {
	one := []string{"db.example.com:5432"}
	tests := []struct {
		name     string
		settings map[string]string
		hosts    []string
		want     string
	}{
		{"unknown mode", map[string]string{"hasql_discovery": "consul"}, one,
			`discovery: hasql_discovery "consul": want dns, srv, patroni or static`},
		{"name with static", map[string]string{"hasql_discovery_name": "x.example.com"}, one,
			`discovery: hasql_discovery_name "x.example.com": applies to hasql_discovery=dns or srv only, not static`},
		{"port with srv", map[string]string{"hasql_discovery": "srv", "hasql_discovery_port": "5432"}, one,
			`hasql_discovery_port "5432": applies to hasql_discovery=dns only, not srv`},
		{"urls with dns", map[string]string{"hasql_discovery": "dns", "hasql_discovery_urls": "http://u:pw@p:8008"}, one,
			`hasql_discovery_urls "http://u:xxxxx@p:8008": applies to hasql_discovery=patroni only, not dns`},
		{"interval with static", map[string]string{"hasql_discovery": "static", "hasql_discovery_interval": "1s"}, one,
			`hasql_discovery_interval "1s": applies to hasql_discovery=dns or srv or patroni only, not static`},
		{"bad interval", map[string]string{"hasql_discovery": "dns", "hasql_discovery_interval": "often"}, one,
			`discovery: hasql_discovery_interval "often": want a duration such as 500ms or 10s`},
		{"short interval", map[string]string{"hasql_discovery": "dns", "hasql_discovery_interval": "1ms"}, one,
			`discovery: hasql_discovery_interval "1ms": must be at least 10ms`},
		{"negative timeout", map[string]string{"hasql_discovery": "srv", "hasql_discovery_timeout": "-1s"}, one,
			`discovery: hasql_discovery_timeout "-1s": must be at least 1ms`},
		{"bad port", map[string]string{"hasql_discovery": "dns", "hasql_discovery_port": "54321x"}, one,
			`discovery: hasql_discovery_port "54321x": want a number from 1 to 65535`},
		{"port 0", map[string]string{"hasql_discovery": "dns", "hasql_discovery_port": "0"}, one,
			`discovery: hasql_discovery_port "0": want a number from 1 to 65535`},
		{"bad name", map[string]string{"hasql_discovery": "dns", "hasql_discovery_name": "db example"}, one,
			`discovery: hasql_discovery_name "db example": want a DNS name such as db.example.com`},
		{"empty name", map[string]string{"hasql_discovery": "srv", "hasql_discovery_name": ""}, one,
			`discovery: hasql_discovery_name "": want a DNS name`},
		{"long label", map[string]string{"hasql_discovery": "dns", "hasql_discovery_name": strings.Repeat("a", 64) + ".com"}, one,
			`want a DNS name`},
		{"several hosts, no name", map[string]string{"hasql_discovery": "dns"}, []string{"a:1", "b:2"},
			`discovery: hasql_discovery=dns: give hasql_discovery_name, or a single host in the connection string (it has 2)`},
		{"no host, no name", map[string]string{"hasql_discovery": "srv"}, nil,
			`give hasql_discovery_name, or a single host in the connection string (it has 0)`},
		{"host not a name", map[string]string{"hasql_discovery": "dns"}, []string{"[::1]:5432"},
			`discovery: hasql_discovery=dns: the connection string's host "::1": want a DNS name`},
		{"dns name without port", map[string]string{"hasql_discovery": "dns", "hasql_discovery_name": "x.example.com"}, []string{"a:1", "b:2"},
			`discovery: hasql_discovery=dns: give hasql_discovery_port or a port in the connection string`},
		{"bad url", map[string]string{"hasql_discovery": "patroni", "hasql_discovery_urls": "ftp://p:21"}, one,
			`discovery: hasql_discovery_urls: URL "ftp://p:21": want http:// or https://`},
		{"url without host", map[string]string{"hasql_discovery": "patroni", "hasql_discovery_urls": "http://"}, one,
			`URL "http://": no host`},
		{"url bad port", map[string]string{"hasql_discovery": "patroni", "hasql_discovery_urls": "http://p:99999"}, one,
			`port "99999": want a number from 1 to 65535`},
		{"empty url", map[string]string{"hasql_discovery": "patroni", "hasql_discovery_urls": "http://a:8008,,http://b:8008"}, one,
			`discovery: hasql_discovery_urls "http://a:8008,,http://b:8008": an empty URL in the list`},
		{"url password hidden", map[string]string{"hasql_discovery": "patroni", "hasql_discovery_urls": "gopher://admin:hunter2@p:8008"}, one,
			`URL "gopher://xxxxx@p:8008": want http:// or https://`},
		{"unparsable url password hidden", map[string]string{"hasql_discovery": "patroni", "hasql_discovery_urls": "http://admin:hunter2@p:80%zz"}, one,
			`URL "http://xxxxx@p:80%zz": not a URL`},
		{"patroni, no hosts", map[string]string{"hasql_discovery": "patroni"}, nil,
			`discovery: hasql_discovery=patroni: give hasql_discovery_urls or network hosts in the connection string`},
		{"static, no hosts", nil, nil, "discovery: static: no node found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := discovery.FromSettings(tt.settings, tt.hosts)
			assert.Nil(t, d)
			require.Error(t, err)
			assert.ErrorContains(t, err, tt.want)
			assert.NotContains(t, err.Error(), "hunter2", "no password in an error")
			assert.NotContains(t, err.Error(), "pw@", "no password in an error")
		})
	}
}

func TestSettingKeys(t *testing.T) {
	keys := discovery.SettingKeys()
	assert.Equal(t, []string{"hasql_discovery", "hasql_discovery_name", "hasql_discovery_port",
		"hasql_discovery_interval", "hasql_discovery_timeout", "hasql_discovery_urls", "hasql_discovery_max_nodes"}, keys)
	for _, k := range keys {
		assert.True(t, strings.HasPrefix(k, "hasql_"), "%s is stripped with the other hasql_ settings", k)
	}
}

// FuzzFromSettings checks that no value of any setting panics, and that an
// error never shows a password given in a URL.
func FuzzFromSettings(f *testing.F) {
	f.Add("dns", "db.example.com", "5432", "10s", "1s", "", "h:5432")
	f.Add("patroni", "", "", "", "", "http://u:pw@a:8008,https://b", "a:5432,b:5432")
	f.Add("srv", "_x._tcp.y", "", "1m", "", "", "")
	f.Add("patroni", "", "", "", "", "http://u:secretpw@a:80%zz", "")
	f.Add("dns", "", "", "", "", "http://u:secretpw@a:8008", "a:1")
	f.Add("static", "", "", "", "", "", "[::1]:5432")
	f.Fuzz(func(t *testing.T, mode, name, port, interval, timeout, urls, hosts string) {
		settings := map[string]string{}
		for k, v := range map[string]string{"hasql_discovery": mode, "hasql_discovery_name": name, "hasql_discovery_port": port,
			"hasql_discovery_interval": interval, "hasql_discovery_timeout": timeout, "hasql_discovery_urls": urls} {
			if v != "" {
				settings[k] = v
			}
		}
		var hostList []string
		if hosts != "" {
			hostList = strings.Split(hosts, ",")
		}
		d, err := discovery.FromSettings(settings, hostList)
		if (d == nil) == (err == nil) {
			t.Fatalf("FromSettings = %v, %v: want a Discoverer or an error", d, err)
		}
		if err == nil {
			return
		}
		for _, u := range strings.Split(urls, ",") {
			_, rest, ok := strings.Cut(u, "://")
			at := strings.LastIndex(rest, "@")
			if !ok || at < 0 || strings.Contains(rest[:at], "/") {
				continue
			}
			if userinfo := rest[:at]; strings.Contains(userinfo, ":") && strings.Contains(err.Error(), userinfo+"@") {
				t.Fatalf("the error shows the password of %q: %v", u, err)
			}
		}
	})
}
