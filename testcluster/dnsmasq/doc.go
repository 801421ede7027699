// Package dnsmasq runs a real DNS server for tests: Debian's dnsmasq on a
// loopback port, with a configuration and hosts file of its own in a
// temporary directory, answering for one test domain only. Tests change its
// records while it runs and resolve through [Server.Resolver]; nothing
// touches the system resolver. scripts/ensure-dnsmasq.sh (run by `make
// deps`) installs dnsmasq. It runs on Linux.
package dnsmasq
