package hasql_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
)

// Patroni discovery with the REST APIs left to their default (port 8008 of
// each host) and a Unix socket directory listed before a network host, as
// discovery allows: the APIs are the network hosts'.
func TestPatroniDefaultURLsWithASocketFirst(t *testing.T) {
	for _, dsn := range []string{
		"host=/var/run/postgresql,db1.internal port=5432 user=app dbname=app hasql_discovery=patroni",
		"postgres://app@/app?host=/var/run/postgresql,db1.internal&hasql_discovery=patroni",
	} {
		cfg, err := hasql.ParseConfig(dsn)
		require.NoError(t, err, dsn)
		assert.Contains(t, cfg.Discoverer.(interface{ String() string }).String(), "http://db1.internal:8008", dsn)
	}
}

// Patroni discovery with the REST APIs left to their default and a
// link-local IPv6 host with a zone: the API's URL is that host's port 8008.
func TestPatroniDefaultURLOfAnIPv6HostWithZone(t *testing.T) {
	cfg, err := hasql.ParseConfig("postgres://app@[fe80::1%25eth0]:5432/app?hasql_discovery=patroni")
	require.NoError(t, err)
	assert.Contains(t, cfg.Discoverer.(interface{ String() string }).String(), "http://[fe80::1%25eth0]:8008")
}

// A connection string whose Patroni REST API URL has a password with a
// space written as it is: the error shows no part of the password.
func TestDiscoveryURLPasswordWithSpaceNotInParseError(t *testing.T) {
	for _, dsn := range []string{
		"postgres://app@db1:5432/app?hasql_discovery=patroni&hasql_discovery_urls=http://u:Zq9x Wv7Lm@h:8008/",
		"postgres://app@db1:5432/app?hasql_discovery=patroni&hasql_discovery_urls=http://u:Zq9x Wv7Lm@h:8008",
		"postgres://app@db1:5432/app?hasql_discovery_urls=https://u:Zq9x Wv7Lm@h:8008&hasql_discovery=patroni",
	} {
		_, err := hasql.ParseConfig(dsn)
		require.Error(t, err, dsn)
		for _, part := range []string{"Zq9x", "Wv7Lm"} {
			assert.NotContains(t, err.Error(), part, dsn)
		}
	}
}
