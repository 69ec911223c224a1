// Package remotetest runs the servers remote reads are tested against:
// nginx on loopback (a subprocess with its own configuration, on a random
// port) and Proxy, a fault-injecting HTTP proxy put in front of it that
// drops connections mid-transfer, shifts byte ranges, corrupts bodies,
// redirects through a chain of 302s, ignores Range or answers 503 — for
// the first N requests it sees or for all of them.
package remotetest
