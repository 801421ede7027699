//go:build linux

package dnsmasq

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// DefaultDomain is the domain a Server answers for unless Options says
// otherwise. .test is reserved for testing (RFC 2606).
const DefaultDomain = "pgxha.test"

// Options configures a Server.
type Options struct {
	// Domain is the only domain the server answers for: names under it
	// that have no record get NXDOMAIN, names elsewhere are refused.
	// Default DefaultDomain.
	Domain string

	// Dir is where the server's directory (configuration, hosts file, log)
	// is made. Default: the system temporary directory.
	Dir string

	// Logf receives progress lines. Default: none. New sets it to t.Logf.
	Logf func(format string, args ...any)
}

// SRV is one SRV record.
type SRV struct {
	Target   string // a name, under the server's domain for it to resolve
	Port     uint16
	Priority uint16
	Weight   uint16
}

// Server is a running dnsmasq. Its methods are safe for concurrent use.
type Server struct {
	// Read-only after Start.
	opts     Options
	bin      string
	dir      string
	conf     string
	hosts    string
	logPath  string
	port     int
	resolver *net.Resolver

	mu      sync.Mutex // guards the fields below; held across restarts
	records map[string][]netip.Addr
	srv     map[string][]SRV
	cmd     *exec.Cmd
	exited  chan struct{} // closed once cmd has been waited for
	paused  bool
	stopped bool
}

// New starts a Server and stops it when the test ends. It fails the test
// if the server cannot start.
func New(t testing.TB, opts Options) *Server {
	t.Helper()
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("dnsmasq: %v", err)
		}
	})
	return s
}

// Start starts dnsmasq on a free port of 127.0.0.1 and returns once it
// answers.
func Start(ctx context.Context, opts Options) (*Server, error) {
	if opts.Domain == "" {
		opts.Domain = DefaultDomain
	}
	opts.Domain = strings.Trim(strings.ToLower(opts.Domain), ".")
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	bin, err := exec.LookPath("dnsmasq")
	if err != nil {
		if _, statErr := os.Stat("/usr/sbin/dnsmasq"); statErr != nil {
			return nil, errors.New("dnsmasq: not found in PATH or /usr/sbin; run `make deps` (scripts/ensure-dnsmasq.sh installs Debian's dnsmasq-base)")
		}
		bin = "/usr/sbin/dnsmasq"
	}
	dir, err := os.MkdirTemp(opts.Dir, "pgxha-dnsmasq-")
	if err != nil {
		return nil, fmt.Errorf("dnsmasq: %w", err)
	}
	s := &Server{
		opts:    opts,
		bin:     bin,
		dir:     dir,
		conf:    filepath.Join(dir, "dnsmasq.conf"),
		hosts:   filepath.Join(dir, "hosts"),
		logPath: filepath.Join(dir, "dnsmasq.log"),
		records: map[string][]netip.Addr{},
		srv:     map[string][]SRV{},
	}
	s.resolver = &net.Resolver{PreferGo: true, Dial: s.dial}

	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.writeHostsLocked(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	// A free port can be taken between its probe and dnsmasq's bind: try
	// a few.
	var lastErr error
	for range 5 {
		if s.port, err = freePort(); err != nil {
			lastErr = err
			continue
		}
		if lastErr = s.startLocked(ctx); lastErr == nil {
			opts.Logf("dnsmasq: answering for %s on %s", opts.Domain, s.Addr())
			return s, nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	_ = os.RemoveAll(dir)
	return nil, lastErr
}

// freePort returns a port of 127.0.0.1 free for both UDP and TCP just now.
func freePort() (int, error) {
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("dnsmasq: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		l.Close()
		if err == nil {
			u.Close()
			return port, nil
		}
	}
	return 0, errors.New("dnsmasq: no port free for both UDP and TCP")
}

// Addr is the server's "127.0.0.1:port".
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Dir is the server's directory: its configuration, hosts file and log.
func (s *Server) Dir() string { return s.dir }

// Domain is the domain the server answers for.
func (s *Server) Domain() string { return s.opts.Domain }

// Resolver returns a resolver that asks this server alone (Go's own
// resolver, PreferGo, dialling Addr whatever /etc/resolv.conf says).
func (s *Server) Resolver() *net.Resolver { return s.resolver }

func (s *Server) dial(ctx context.Context, network, _ string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, network, s.Addr())
}

// Name returns label.domain, a name the server answers for.
func (s *Server) Name(label string) string { return label + "." + s.opts.Domain }

// SetHost gives name exactly the addresses addrs (A and AAAA records; none
// removes the name), makes the server reload its hosts file (SIGHUP), and
// returns once it answers with them.
func (s *Server) SetHost(ctx context.Context, name string, addrs ...string) error {
	name = canonical(name)
	if err := s.inDomain(name); err != nil {
		return err
	}
	parsed := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		ip, err := netip.ParseAddr(a)
		if err != nil {
			return fmt.Errorf("dnsmasq: SetHost %s: address %q: %w", name, a, err)
		}
		parsed = append(parsed, ip.Unmap())
	}
	slices.SortFunc(parsed, netip.Addr.Compare)
	parsed = slices.Compact(parsed)

	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usableLocked(); err != nil {
		return err
	}
	if len(parsed) == 0 {
		delete(s.records, name)
	} else {
		s.records[name] = parsed
	}
	if err := s.writeHostsLocked(); err != nil {
		return err
	}
	if err := s.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		return fmt.Errorf("dnsmasq: reload: %w", err)
	}
	return s.waitLocked(ctx, func(ctx context.Context) error {
		got, err := s.resolver.LookupNetIP(ctx, "ip", name+".")
		if len(parsed) == 0 {
			var dnsErr *net.DNSError
			if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
				return nil
			}
			return fmt.Errorf("%s still resolves (%v, %v)", name, got, err)
		}
		if err != nil {
			return err
		}
		for i := range got {
			got[i] = got[i].Unmap()
		}
		slices.SortFunc(got, netip.Addr.Compare)
		if !slices.Equal(got, parsed) {
			return fmt.Errorf("%s resolves to %v, want %v", name, got, parsed)
		}
		return nil
	})
}

// SetSRV gives name exactly the SRV records (none removes them) and returns
// once the server answers with them. dnsmasq reads SRV records only when it
// starts, so SetSRV restarts it on the same port: lookups fail for a moment.
func (s *Server) SetSRV(ctx context.Context, name string, records ...SRV) error {
	name = canonical(name)
	if err := s.inDomain(name); err != nil {
		return err
	}
	for _, r := range records {
		if err := s.inDomain(canonical(r.Target)); err != nil {
			return err
		}
		if r.Port == 0 {
			return fmt.Errorf("dnsmasq: SetSRV %s: target %s: no port", name, r.Target)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usableLocked(); err != nil {
		return err
	}
	if len(records) == 0 {
		delete(s.srv, name)
	} else {
		s.srv[name] = slices.Clone(records)
	}
	if err := s.killLocked(); err != nil {
		return err
	}
	if err := s.startLocked(ctx); err != nil {
		return err
	}
	want := len(records)
	return s.waitLocked(ctx, func(ctx context.Context) error {
		_, got, err := s.resolver.LookupSRV(ctx, "", "", name+".")
		if want == 0 {
			var dnsErr *net.DNSError
			if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
				return nil
			}
			return fmt.Errorf("%s still has SRV records (%d, %v)", name, len(got), err)
		}
		if err != nil {
			return err
		}
		if len(got) != want {
			return fmt.Errorf("%s has %d SRV records, want %d", name, len(got), want)
		}
		return nil
	})
}

// Pause freezes the server (SIGSTOP): queries go unanswered, so lookups
// time out, until Resume.
func (s *Server) Pause() error { return s.signal(syscall.SIGSTOP, true) }

// Resume continues a paused server.
func (s *Server) Resume() error { return s.signal(syscall.SIGCONT, false) }

func (s *Server) signal(sig syscall.Signal, paused bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usableLocked(); err != nil {
		return err
	}
	if err := s.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("dnsmasq: %v: %w", sig, err)
	}
	s.paused = paused
	return nil
}

// Stop kills the server and removes its directory. It is safe to call more
// than once.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil
	}
	s.stopped = true
	err := s.killLocked()
	return errors.Join(err, os.RemoveAll(s.dir))
}

// Log returns the server's log.
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.logPath)
	return string(b)
}

func canonical(name string) string { return strings.Trim(strings.ToLower(name), ".") }

func (s *Server) inDomain(name string) error {
	if name != s.opts.Domain && !strings.HasSuffix(name, "."+s.opts.Domain) {
		return fmt.Errorf("dnsmasq: %q is not under %s, the only domain the server answers for", name, s.opts.Domain)
	}
	return nil
}

// usableLocked fails once Stop ran or dnsmasq exited. Caller must hold mu.
func (s *Server) usableLocked() error {
	if s.stopped {
		return errors.New("dnsmasq: stopped")
	}
	select {
	case <-s.exited:
		return fmt.Errorf("dnsmasq: exited; log:\n%s", s.Log())
	default:
	}
	return nil
}

// writeHostsLocked writes the hosts file. Caller must hold mu.
func (s *Server) writeHostsLocked() error {
	var b strings.Builder
	for _, name := range slices.Sorted(maps.Keys(s.records)) {
		for _, a := range s.records[name] {
			fmt.Fprintf(&b, "%s %s\n", a, name)
		}
	}
	tmp := s.hosts + ".new"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("dnsmasq: %w", err)
	}
	if err := os.Rename(tmp, s.hosts); err != nil {
		return fmt.Errorf("dnsmasq: %w", err)
	}
	return nil
}

// configLocked returns dnsmasq's configuration. Caller must hold mu.
func (s *Server) configLocked() string {
	lines := []string{
		"port=" + strconv.Itoa(s.port),
		"listen-address=127.0.0.1",
		"bind-interfaces",
		// Nothing from the machine: no upstream servers, no /etc/hosts, no
		// polling of /etc/resolv.conf.
		"no-resolv",
		"no-hosts",
		"no-poll",
		"addn-hosts=" + s.hosts,
		// Names under the domain without a record get NXDOMAIN.
		"local=/" + s.opts.Domain + "/",
		"local-ttl=0",
		"cache-size=0",
		"log-facility=" + s.logPath,
		"pid-file=",
	}
	for _, name := range slices.Sorted(maps.Keys(s.srv)) {
		recs := slices.Clone(s.srv[name])
		slices.SortFunc(recs, func(a, b SRV) int {
			return cmp.Or(cmp.Compare(a.Priority, b.Priority), cmp.Compare(a.Target, b.Target), cmp.Compare(a.Port, b.Port))
		})
		for _, r := range recs {
			lines = append(lines, fmt.Sprintf("srv-host=%s,%s,%d,%d,%d", name, canonical(r.Target), r.Port, r.Priority, r.Weight))
		}
	}
	return strings.Join(lines, "\n") + "\n"
}

// startLocked writes the configuration, starts dnsmasq and waits until it
// answers. Caller must hold mu.
func (s *Server) startLocked(ctx context.Context) error {
	if err := os.WriteFile(s.conf, []byte(s.configLocked()), 0o644); err != nil {
		return fmt.Errorf("dnsmasq: %w", err)
	}
	u, err := user.Current()
	if err != nil {
		return fmt.Errorf("dnsmasq: %w", err)
	}
	g, err := user.LookupGroupId(u.Gid)
	if err != nil {
		return fmt.Errorf("dnsmasq: %w", err)
	}
	// In the foreground, as this process's user (it has nothing to drop
	// privileges for and must read the files here after a SIGHUP).
	cmd := exec.Command(s.bin, "--keep-in-foreground", "--conf-file="+s.conf, "--user="+u.Username, "--group="+g.Name)
	cmd.Dir = s.dir
	out, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("dnsmasq: %w", err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	// It dies with this process.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("dnsmasq: start: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		// Owned by the Server: ends when dnsmasq exits, which killLocked
		// (from Stop and SetSRV) waits for.
		_ = cmd.Wait()
		out.Close()
		close(exited)
	}()
	s.cmd, s.exited, s.paused = cmd, exited, false
	// Any answer, NXDOMAIN included, means it serves.
	probe := s.Name("probe-"+strconv.Itoa(os.Getpid())) + "."
	if err := s.waitLocked(ctx, func(ctx context.Context) error {
		_, err := s.resolver.LookupNetIP(ctx, "ip", probe)
		var dnsErr *net.DNSError
		if err == nil || errors.As(err, &dnsErr) && dnsErr.IsNotFound {
			return nil
		}
		return err
	}); err != nil {
		_ = s.killLocked()
		return err
	}
	return nil
}

// waitLocked polls ok until it succeeds, dnsmasq exits or ctx ends.
// Caller must hold mu.
func (s *Server) waitLocked(ctx context.Context, ok func(context.Context) error) error {
	ticker := time.NewTicker(10 * time.Millisecond)
	defer ticker.Stop()
	for {
		attemptCtx, cancel := context.WithTimeout(ctx, time.Second)
		err := ok(attemptCtx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-s.exited:
			return fmt.Errorf("dnsmasq: exited; log:\n%s", s.Log())
		case <-ctx.Done():
			return fmt.Errorf("dnsmasq: %w (last: %v)", ctx.Err(), err)
		case <-ticker.C:
		}
	}
}

// killLocked kills dnsmasq and waits for it. Caller must hold mu.
func (s *Server) killLocked() error {
	if s.cmd == nil {
		return nil
	}
	select {
	case <-s.exited:
		return nil
	default:
	}
	_ = s.cmd.Process.Kill() // SIGKILL works on a stopped process too
	select {
	case <-s.exited:
		return nil
	case <-time.After(10 * time.Second):
		return errors.New("dnsmasq: did not exit within 10s of SIGKILL")
	}
}
