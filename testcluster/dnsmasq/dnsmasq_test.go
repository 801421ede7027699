//go:build linux

package dnsmasq_test

import (
	"context"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/pgxha/pgxha/testcluster/dnsmasq"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := dnsmasq.Start(ctx, dnsmasq.Options{Domain: "Example.TEST.", Logf: t.Logf})
	require.NoError(t, err, "run `make deps` if dnsmasq is missing")
	assert.Equal(t, "example.test", s.Domain())
	r := s.Resolver()

	require.NoError(t, s.SetHost(ctx, "db.example.test", "10.0.0.2", "10.0.0.1", "fd00::1"))
	got, err := r.LookupHost(ctx, "db.example.test.")
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{"10.0.0.1", "10.0.0.2", "fd00::1"}, got)

	_, err = r.LookupHost(ctx, "other.example.test.")
	var dnsErr *net.DNSError
	require.ErrorAs(t, err, &dnsErr)
	assert.True(t, dnsErr.IsNotFound, "a name of the domain without records: NXDOMAIN")

	_, err = r.LookupHost(ctx, "www.example.com.")
	require.Error(t, err, "names outside the domain are not answered from the machine's resolver")

	require.NoError(t, s.SetSRV(ctx, "_postgresql._tcp.db.example.test", dnsmasq.SRV{Target: "db.example.test", Port: 6432, Weight: 5}))
	_, srvs, err := r.LookupSRV(ctx, "postgresql", "tcp", "db.example.test.")
	require.NoError(t, err)
	require.Len(t, srvs, 1)
	assert.Equal(t, net.SRV{Target: "db.example.test.", Port: 6432, Weight: 5}, *srvs[0])
	got, err = r.LookupHost(ctx, "db.example.test.")
	require.NoError(t, err)
	assert.Len(t, got, 3, "hosts survive the restart SetSRV makes")

	require.NoError(t, s.SetHost(ctx, "db.example.test"))
	_, err = r.LookupHost(ctx, "db.example.test.")
	require.ErrorAs(t, err, &dnsErr)
	assert.True(t, dnsErr.IsNotFound)

	assert.ErrorContains(t, s.SetHost(ctx, "db.example.com", "10.0.0.1"), `"db.example.com" is not under example.test`)
	assert.ErrorContains(t, s.SetHost(ctx, "x.example.test", "not-an-ip"), `address "not-an-ip"`)
	assert.ErrorContains(t, s.SetSRV(ctx, "_x._tcp.example.test", dnsmasq.SRV{Target: "a.example.test"}), "no port")

	require.NoError(t, s.Pause())
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = r.LookupHost(short, "x.example.test.")
	cancelShort()
	require.Error(t, err, "a paused server does not answer")
	require.NoError(t, s.Resume())

	assert.Contains(t, s.Log(), "dnsmasq", "dnsmasq logs its start")
	dir := s.Dir()
	require.DirExists(t, dir)
	require.NoError(t, s.Stop())
	require.NoError(t, s.Stop(), "Stop is idempotent")
	short, cancelShort = context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = r.LookupHost(short, "x.example.test.")
	cancelShort()
	require.Error(t, err, "nothing answers once stopped")
	assert.ErrorContains(t, s.SetHost(ctx, "x.example.test", "10.0.0.1"), "dnsmasq: stopped")
	_, err = os.Stat(dir)
	assert.True(t, errors.Is(err, os.ErrNotExist), "its directory is removed: %v", err)
}
