// Package service runs gatewayd as a systemd service: readiness, status,
// reload and stop notifications and a liveness-gated watchdog
// (sd_notify(3)), socket-activated stream and datagram sockets (sd_listen_fds(3)), and a
// log handler that writes to the journal's native protocol when stderr is
// the journal. Outside systemd every part is a harmless no-op, so the
// daemon runs the same from a shell, a test or a unit.
package service
