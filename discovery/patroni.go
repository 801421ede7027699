package discovery

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/pgxha/pgxha/internal/secrets"
)

// PatroniConfig configures a [Patroni] Discoverer.
type PatroniConfig struct {
	// URLs are Patroni REST API addresses of members of the cluster, such
	// as "http://10.0.0.1:8008" (a path, if any, is ignored). At least
	// one; more let a look go on when a member is down.
	URLs []string

	// Interval is the time between two looks (give or take 10%). Default
	// DefaultPatroniInterval; while looks fail they are retried sooner,
	// with exponential backoff from MinInterval up to Interval.
	Interval time.Duration

	// MinInterval is the shortest time between two looks, which bounds
	// how often Refresh makes one. Default DefaultMinInterval.
	MinInterval time.Duration

	// Timeout bounds one request to one member's API. Default
	// DefaultPatroniTimeout.
	Timeout time.Duration

	// LookTimeout bounds a whole look, every API it asks included.
	// Default DefaultPatroniLookTimeout, and at least Timeout.
	LookTimeout time.Duration

	// MaxNodes is the most members an answer may list; one with more is
	// an error that wraps ErrTooManyNodes (the last good set stays).
	// Default DefaultMaxNodes.
	MaxNodes int

	// Client makes the requests. Default: a client of the Discoverer's
	// own, whose idle connections are closed when Run returns (those of a
	// Client given here are left to its owner).
	Client *http.Client
}

// Patroni is a Discoverer whose nodes are the members of a Patroni cluster,
// from GET /cluster on its members' REST APIs, every interval and on
// Refresh. A look asks the configured URLs (the one that answered last
// first), then, as a fallback, a few of the APIs the members of the last
// set advertise, until one answers; LookTimeout bounds it all.
//
// Nodes come in member name order: Name is the member's name, Addr its
// PostgreSQL host and port as Patroni advertises them, Role, State and Lag
// what Patroni reports, and Tags its tags (nofailover, noloadbalance,
// nosync, replicatefrom and the operator's own; Patroni lists a boolean tag
// only when it is true). A member without a host is left out. It is safe
// for concurrent use; see [Discoverer] for Run.
type Patroni struct {
	// Read-only after NewPatroni.
	cfg       PatroniConfig
	bases     []*url.URL // cfg.URLs without path, query or fragment
	client    *http.Client
	ownClient bool
	poll      *poller

	// Owned by the look, which runs on Run's goroutine; mu is for String
	// and tests, which may read them from elsewhere.
	mu      sync.Mutex
	last    *url.URL   // the API that answered last
	members []*url.URL // the members' APIs, from the last set
}

// NewPatroni returns a Patroni Discoverer, or an error naming what is wrong
// in cfg.
func NewPatroni(cfg PatroniConfig) (*Patroni, error) {
	if len(cfg.URLs) == 0 {
		return nil, errors.New("discovery: patroni: no REST API URL")
	}
	p := &Patroni{}
	for _, raw := range cfg.URLs {
		u, err := apiBase(raw)
		if err != nil {
			return nil, fmt.Errorf("discovery: patroni: %w", err)
		}
		p.bases = append(p.bases, u)
	}
	cfg.URLs = slices.Clone(cfg.URLs)
	var err error
	if cfg.Interval, cfg.MinInterval, cfg.Timeout, err = timings("patroni", cfg.Interval, cfg.MinInterval, cfg.Timeout, DefaultPatroniInterval, DefaultPatroniTimeout); err != nil {
		return nil, err
	}
	p.client = cfg.Client
	if p.client == nil {
		p.client = &http.Client{
			Transport: http.DefaultTransport.(*http.Transport).Clone(),
			// The answer comes from an API the user listed (or a member
			// advertised), never from wherever a redirect points: another
			// host, or plain http after https.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
		p.ownClient = true
	}
	if cfg.MaxNodes, err = maxNodesOr("patroni", cfg.MaxNodes); err != nil {
		return nil, err
	}
	switch {
	case cfg.LookTimeout < 0:
		return nil, fmt.Errorf("discovery: patroni: LookTimeout %s: must not be negative", cfg.LookTimeout)
	case cfg.LookTimeout == 0:
		cfg.LookTimeout = max(DefaultPatroniLookTimeout, cfg.Timeout)
	case cfg.LookTimeout < cfg.Timeout:
		return nil, fmt.Errorf("discovery: patroni: LookTimeout %s: must be at least Timeout (%s)", cfg.LookTimeout, cfg.Timeout)
	}
	p.cfg = cfg
	// Each request is bounded by Timeout, the whole look by LookTimeout.
	p.poll = newPoller("patroni", cfg.Interval, cfg.MinInterval, cfg.LookTimeout, cfg.MaxNodes, p.look)
	return p, nil
}

// apiBase parses a REST API URL and keeps its scheme, user and host. The
// error shows the URL without its password.
func apiBase(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("URL %q: not a URL", redactURL(raw))
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("URL %q: want http:// or https://", redactURL(raw))
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("URL %q: no host", redactURL(raw))
	}
	if len(u.Hostname()) > maxHostLen {
		return nil, fmt.Errorf("URL %q: a host of %d bytes, longer than a DNS name may be (%d)", clip(redactURL(raw)), len(u.Hostname()), maxHostLen)
	}
	// An '@' past the host is most likely a password's '/' written
	// unencoded (http://user:pa/ss@host): the "host" would be the user and
	// part of the password.
	if strings.Contains(u.EscapedPath(), "@") || strings.Contains(u.RawQuery, "@") || strings.Contains(u.Fragment, "@") {
		return nil, fmt.Errorf("URL %q: an '@' past the host: percent-encode '/', '?', '#' and '@' in a password (%%2F, %%3F, %%23, %%40)", redactURL(raw))
	}
	if port := u.Port(); port != "" {
		if _, err := parsePort(port); err != nil {
			return nil, fmt.Errorf("URL %q: %w", redactURL(raw), err)
		}
	}
	return &url.URL{Scheme: u.Scheme, User: u.User, Host: u.Host}, nil
}

// redactURL hides what may be a password in a URL that is not shown
// parsed: everything between "://" and the last '@', since a password may
// hold '/', '?', '#' and '@' unencoded.
func redactURL(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		if at := strings.LastIndex(raw, "@"); at >= 0 {
			return "xxxxx@" + raw[at+1:]
		}
		return raw
	}
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		auth := rest
		if i := strings.IndexAny(auth, "/?#"); i >= 0 {
			auth = auth[:i]
		}
		if c := strings.IndexByte(auth, ':'); c >= 0 && !strings.HasPrefix(auth, "[") && !allDigits(strings.TrimRight(auth[c+1:], ",")) { // "h:8008," of an empty entry: a port
			// "user:secret" with no "@host" after it (a password cut
			// from the rest of its URL): what follows ':' is no port, and
			// may be a password.
			return scheme + "://" + auth[:c] + ":xxxxx"
		}
		return raw
	}
	return scheme + "://xxxxx@" + rest[at+1:]
}

// allDigits reports whether s is made of ASCII digits only ("" too).
func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// Config returns the configuration with its defaults filled in.
func (p *Patroni) Config() PatroniConfig {
	cfg := p.cfg
	cfg.URLs = slices.Clone(cfg.URLs)
	return cfg
}

// Run implements Discoverer.
func (p *Patroni) Run(ctx context.Context, update func(State)) error {
	if p.ownClient {
		defer p.client.CloseIdleConnections()
	}
	return p.poll.run(ctx, update)
}

// Refresh implements Refresher: a look as soon as MinInterval has passed
// since the last one.
func (p *Patroni) Refresh() { p.poll.Refresh() }

// String describes the Discoverer, for logs: "patroni http://10.0.0.1:8008,...".
func (p *Patroni) String() string {
	urls := make([]string, len(p.bases))
	for i, u := range p.bases {
		urls[i] = u.Redacted()
	}
	return "patroni " + strings.Join(urls, ",")
}

// look asks one API after another for the cluster, until one answers.
func (p *Patroni) look(ctx context.Context) ([]Node, error) {
	var errs []error
	for _, u := range p.candidates() {
		nodes, apis, err := p.cluster(ctx, u)
		if err == nil {
			p.mu.Lock()
			p.last, p.members = u, apis
			p.mu.Unlock()
			return p.clearNodes(nodes), nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, p.clearErr(fmt.Errorf("discovery: patroni: no member's REST API answered: %w", errors.Join(errs...)))
}

// clear replaces the passwords of the configured URLs in an error's text
// that quotes an API's (its status line, a member it refused): an API
// given user:password could say it back, and errors reach the Manager's
// status and logs. A password of minGlued bytes or more is replaced
// wherever it is, also glued to other letters (an API that got it may hide
// it in a longer word); a shorter one where it stands whole (see
// secrets.ReplaceWhole), so that the password "p" leaves "replica" be.
// What is cleared is cleared before it is cut: a cut through a password
// would leave its first bytes. The members' names and tags, which route,
// are cleared by clearField.
func (p *Patroni) clear(text string) string {
	for _, u := range p.bases {
		if pw, ok := u.User.Password(); ok && pw != "" {
			if len(pw) >= minGlued {
				text = secrets.ReplaceAll(text, pw, "xxxxx")
			} else {
				text = secrets.ReplaceWhole(text, pw, "xxxxx")
			}
		}
	}
	return text
}

// minGlued is the shortest password cleared also where other letters touch
// it (see Patroni.clear).
const minGlued = 6

// clearErr is err, or, when its text holds a configured URL's password, an
// error of the same text without it (and nothing of err's chain).
func (p *Patroni) clearErr(err error) error {
	if c := p.clear(err.Error()); c != err.Error() {
		return errors.New(c)
	}
	return err
}

// clearField replaces a member's name, role, state or tag that is, whole,
// the password of a configured URL (as written or in a quoted form): these
// route (a name is the application_name a walsender row goes by, a tag
// what WithTag asks for), and an honest name may hold a password that is a
// common word ("postgres-0" beside the password "postgres"). A member
// whose host is the password is left out (see isPassword).
func (p *Patroni) clearField(text string) string {
	if p.isPassword(text) {
		return "xxxxx"
	}
	return text
}

// isPassword reports whether text is, whole, the password of a configured
// URL, as written or in a form quoting gives it.
func (p *Patroni) isPassword(text string) bool {
	for _, u := range p.bases {
		if pw, ok := u.User.Password(); ok && pw != "" && (text == pw || slices.Contains(secrets.Escaped(pw), text)) {
			return true
		}
	}
	return false
}

// clearNodes clears the members' names, roles, states and tags (see
// clearField).
func (p *Patroni) clearNodes(nodes []Node) []Node {
	for i := range nodes {
		n := &nodes[i]
		n.Name, n.Role, n.State = p.clearField(n.Name), p.clearField(n.Role), p.clearField(n.State)
		for k, v := range n.Tags {
			if c := p.clearField(v); c != v {
				n.Tags[k] = c
			}
		}
	}
	return nodes
}

// maxMemberAPIs is the most members' APIs one look asks, after the
// configured ones.
const maxMemberAPIs = 3

// candidates returns the APIs to ask, in order, each once: the configured
// ones (the one that answered last first), then, as a fallback for this
// look only, at most maxMemberAPIs of the APIs the members of the last set
// advertise (the one that answered last first). A member's API never comes
// before a configured one, whoever answered last: an API a member
// advertises is whatever the member (or whoever answered for the cluster)
// says. When every configured URL is https, a member's http API is not
// asked.
func (p *Patroni) candidates() []*url.URL {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*url.URL
	seen := map[string]bool{}
	add := func(u *url.URL) bool {
		if u == nil || seen[u.String()] {
			return false
		}
		seen[u.String()] = true
		out = append(out, u)
		return true
	}
	configured, httpsOnly := false, true
	for _, u := range p.bases {
		if p.last != nil && u.String() == p.last.String() {
			configured = true
		}
		if u.Scheme != "https" {
			httpsOnly = false
		}
	}
	if configured {
		add(p.last)
	}
	for _, u := range p.bases {
		add(u)
	}
	members := p.members
	if p.last != nil && !configured {
		members = append([]*url.URL{p.last}, members...)
	}
	n := 0
	for _, u := range members {
		if n == maxMemberAPIs {
			break
		}
		if httpsOnly && u.Scheme != "https" {
			continue
		}
		if add(u) {
			n++
		}
	}
	return out
}

// clusterMember is the part of a member of GET /cluster that a look
// reads. Tags stay raw until counted (see parseTags).
type clusterMember struct {
	Name   string          `json:"name"`
	Role   string          `json:"role"`
	State  string          `json:"state"`
	APIURL string          `json:"api_url"`
	Host   string          `json:"host"`
	Port   json.Number     `json:"port"`
	Lag    json.RawMessage `json:"lag"`
	Tags   json.RawMessage `json:"tags"`
}

// maxTags bounds the tags of one member.
const maxTags = 64

// maxClusterBody bounds the response read from one API.
const maxClusterBody = 4 << 20

// cluster asks the API at base for the cluster. It returns the nodes and the
// members' APIs.
func (p *Patroni) cluster(ctx context.Context, base *url.URL) ([]Node, []*url.URL, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	where := printable(p.clear(base.Redacted()))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base.JoinPath("cluster").String(), nil)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", where, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := p.client.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // its URL may hold a password
		}
		// The transport's text may quote what the API sent (a Location
		// header) or a host it advertised: cleared, then cut and escaped.
		return nil, nil, fmt.Errorf("%s: %s", where, printable(p.clear(err.Error())))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxClusterBody+1))
	if err != nil {
		return nil, nil, fmt.Errorf("%s: reading /cluster: %w", where, err)
	}
	if resp.StatusCode >= 300 && resp.StatusCode < 400 && p.ownClient {
		return nil, nil, fmt.Errorf("%s: GET /cluster: %s: a redirect, not followed (list the API that answers)", where, printable(p.clear(resp.Status)))
	}
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("%s: GET /cluster: %s", where, printable(p.clear(resp.Status))) // the API's text: cleared, bounded, escaped
	}
	if len(body) > maxClusterBody {
		return nil, nil, fmt.Errorf("%s: GET /cluster: response over %d bytes", where, maxClusterBody)
	}
	nodes, apis, err := parseCluster(body, p.cfg.MaxNodes, p.clear, p.clearField, p.isPassword)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: GET /cluster: %w", where, err)
	}
	return nodes, apis, nil
}

// parseCluster reads a /cluster response. Members are decoded one at a
// time and counted as they come: an answer with more than maxNodes is
// refused without decoding the others (a few bytes each, they would
// otherwise cost tens of times the answer's size). clear clears the API's
// text an error quotes (see Patroni.clear), clearField a member's name,
// role, state and tags (see Patroni.clearField), before anything is cut.
//
// A member that cannot be a node is left out, as Patroni lists members
// that are starting or have no host yet: a port that is no TCP port, a
// host longer than a DNS name may be. A member whose host is a path
// refuses the whole answer (see below).
func parseCluster(body []byte, maxNodes int, clear, clearField func(string) string, isPassword func(string) bool) ([]Node, []*url.URL, error) {
	members, err := decodeMembers(body, maxNodes, clear)
	if err != nil {
		return nil, nil, err
	}
	var nodes []Node
	var apis []*url.URL
	seen := map[string]bool{}
	for _, m := range members {
		if m.APIURL != "" {
			if u, err := apiBase(m.APIURL); err == nil {
				apis = append(apis, u)
			}
		}
		if m.Host == "" || len(m.Host) > maxHostLen || isPassword(m.Host) {
			// A host that is the API's password is no honest host: left
			// out, so that the address never shows it.
			continue
		}
		// libpq and pgx read a host that starts with '/' as a Unix socket
		// directory: a member's host must name a machine on the network,
		// never a socket of the client's, where any local user can listen.
		if strings.ContainsAny(m.Host, "/\\") || strings.HasPrefix(m.Host, "@") {
			return nil, nil, fmt.Errorf("member %q: host %q is a path, not a host name or address", clip(clear(m.Name)), clip(clear(m.Host)))
		}
		port := "5432"
		if m.Port != "" {
			p, err := parsePort(m.Port.String())
			if err != nil {
				continue // not a node yet (port 0 while it starts, say)
			}
			port = strconv.Itoa(int(p))
		}
		addr := net.JoinHostPort(m.Host, port)
		if seen[addr] {
			continue
		}
		seen[addr] = true
		n := Node{Addr: addr, Name: cutName(clearField(m.Name)), Role: clearField(m.Role), State: clearField(m.State), Lag: parseLag(m.Lag)}
		if n.Tags, err = parseTags(m.Tags, clear, clearField); err != nil {
			return nil, nil, fmt.Errorf("member %q: %w", clip(clear(m.Name)), err)
		}
		nodes = append(nodes, n)
	}
	slices.SortStableFunc(nodes, func(a, b Node) int { return strings.Compare(a.Name, b.Name) })
	if len(nodes) == 0 {
		return nil, nil, ErrNoNodes
	}
	return nodes, apis, nil
}

// decodeMembers returns the members of a /cluster response, decoding
// each only while there are no more than maxNodes.
func decodeMembers(body []byte, maxNodes int, clear func(string) string) ([]clusterMember, error) {
	// The decoder's errors may quote the API's text (a literal that is
	// no number, say): cleared, then cut.
	bad := func(err error) error { return fmt.Errorf("not a Patroni cluster: %s", printable(clear(err.Error()))) }
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := expectDelim(dec, '{', clear); err != nil {
		return nil, bad(err)
	}
	var members []clusterMember
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return nil, bad(err)
		}
		if key != "members" {
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return nil, bad(err)
			}
			continue
		}
		members = members[:0]
		if t, err := dec.Token(); err != nil {
			return nil, bad(err)
		} else if t == nil {
			continue // "members": null
		} else if t != json.Delim('[') {
			return nil, fmt.Errorf("not a Patroni cluster: members: %s, not an array", shownToken(t, clear))
		}
		count := 0
		for ; dec.More(); count++ {
			if count >= maxNodes {
				var skip struct{}
				if err := dec.Decode(&skip); err != nil {
					return nil, bad(err)
				}
				continue
			}
			var m clusterMember
			if err := dec.Decode(&m); err != nil {
				return nil, bad(err)
			}
			members = append(members, m)
		}
		if count > maxNodes {
			return nil, fmt.Errorf("%d members, over the limit of %d (MaxNodes, %s): %w", count, maxNodes, SettingMaxNodes, ErrTooManyNodes)
		}
		if err := expectDelim(dec, ']', clear); err != nil {
			return nil, bad(err)
		}
	}
	if err := expectDelim(dec, '}', clear); err != nil {
		return nil, bad(err)
	}
	return members, nil
}

// expectDelim reads the next token, which must be d.
func expectDelim(dec *json.Decoder, d json.Delim, clear func(string) string) error {
	t, err := dec.Token()
	if err != nil {
		return err
	}
	if t != d {
		return fmt.Errorf("%s where %v was expected", shownToken(t, clear), d)
	}
	return nil
}

// shownToken is a JSON token of the API's answer as an error quotes it:
// cleared (see Patroni.clear), escaped, and cut (see clip).
func shownToken(t json.Token, clear func(string) string) string {
	if d, ok := t.(json.Delim); ok {
		return d.String()
	}
	return fmt.Sprintf("%q", clip(clear(fmt.Sprint(t))))
}

// maxHostLen is the longest host a member may have: a DNS name's longest.
const maxHostLen = 253

// maxNameLen is how much of a member's name is kept: far more than
// PostgreSQL keeps of an application_name (63 bytes), and a bound on
// what a node's name costs in logs and labels.
const maxNameLen = 256

// cutName returns name cut to maxNameLen bytes, at a character's start.
func cutName(name string) string {
	if len(name) <= maxNameLen {
		return name
	}
	cut := maxNameLen
	for cut > 0 && !utf8.RuneStart(name[cut]) {
		cut--
	}
	return name[:cut]
}

// parseTags reads a member's tags, at most maxTags of them (nil: none),
// each key and value cleared (see Patroni.clearField; clear for the text
// an error quotes), then cut as a name is (see cutName).
func parseTags(raw json.RawMessage, clear, clearField func(string) string) (map[string]string, error) {
	if len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null" {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := expectDelim(dec, '{', clear); err != nil {
		return nil, fmt.Errorf("tags: %s", printable(clear(err.Error())))
	}
	var tags map[string]string
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("tags: %s", printable(clear(err.Error())))
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("tags: %s", printable(clear(err.Error())))
		}
		if tags == nil {
			tags = make(map[string]string)
		}
		if len(tags) == maxTags {
			return nil, fmt.Errorf("more than %d tags", maxTags)
		}
		tags[cutName(clearField(k.(string)))] = cutName(clearField(tagValue(v)))
	}
	return tags, nil
}

// parseLag reads a member's lag: a number of bytes, or "unknown".
func parseLag(raw json.RawMessage) Lag {
	n, err := strconv.ParseInt(string(bytes.TrimSpace(raw)), 10, 64)
	if err != nil || n < 0 {
		return Lag{}
	}
	return Lag{Bytes: n, Known: true}
}

// tagValue turns a tag's JSON value into text: a string as it is, other
// values as JSON writes them (true, 42), null as "".
func tagValue(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	raw = bytes.TrimSpace(raw)
	if string(raw) == "null" {
		return ""
	}
	var buf bytes.Buffer
	if json.Compact(&buf, raw) == nil {
		return buf.String()
	}
	return string(raw)
}
