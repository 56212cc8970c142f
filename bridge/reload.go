package bridge

import (
	"reflect"
	"slices"
)

// Reload swaps in what a new configuration changes of the request path:
// [proxy] allow, clients, timeout, next_hop, hop_limit, name, rate, burst,
// verified, verified_for, max_verified, echo_lifetime, max_inflight,
// max_inflight_per_client, the routes, [groupcomm] and the [[group]] tables (whose
// radios must be running ones); and the DTLS listeners' keys, re-read from their files,
// for new handshakes, as long as they are of the kinds the listeners
// started with (DTLS.SetKeys). Sockets, radios, the cache, observers, the broker and
// plugins stay as they are; changes to their sections are reported in the
// returned list and need a restart. An invalid cfg changes nothing. The
// rate limiter starts afresh.
func (p *Proxy) Reload(cfg Config) (needsRestart []string, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	old := p.chain.Load().cfg
	if cfg.Proxy.Name == "" {
		cfg.Proxy.Name = old.Proxy.Name
	}
	// New DTLS keys (a renewed certificate, a changed PSK file) apply to
	// the next handshakes; a different kind of key needs new listeners.
	var keys DTLSKeys
	newKind := false
	if len(p.dtls) > 0 || p.tls != nil {
		if keys, err = cfg.Proxy.dtlsKeys(); err != nil {
			return nil, err
		}
	}
	if len(p.dtls) > 0 {
		newKind = !p.dtls[0].sameKind(keys) // every listener has the same keys
	}
	if p.tls != nil && keys.Certificate == nil {
		newKind = true // the TLS listeners cannot go without one
	}
	if !slices.Equal(cfg.Proxy.Listen, old.Proxy.Listen) || newKind {
		needsRestart = append(needsRestart, "proxy.listen/psk_file/cert_file/key_file/client_ca_file")
	}
	if cfg.Proxy.Keepalive != old.Proxy.Keepalive || cfg.Proxy.MaxMessageSize != old.Proxy.MaxMessageSize ||
		cfg.Proxy.MaxConnections != old.Proxy.MaxConnections || cfg.Proxy.MaxHandshakes != old.Proxy.MaxHandshakes ||
		!slices.Equal(cfg.Proxy.WSOrigins, old.Proxy.WSOrigins) {
		// The stream listeners' connections keep the settings they
		// started with.
		needsRestart = append(needsRestart, "proxy.keepalive/max_message_size/max_connections/max_handshakes/ws_origins")
	}
	for name, changed := range map[string]bool{
		"radio":   !reflect.DeepEqual(cfg.Radio, old.Radio),
		"cache":   cfg.Cache != old.Cache,
		"observe": cfg.Observe != old.Observe,
		"pubsub":  !reflect.DeepEqual(cfg.PubSub, old.PubSub),
		"rd":      !reflect.DeepEqual(cfg.RD, old.RD),
		"metrics": cfg.Metrics != old.Metrics,
		"plugin":  !reflect.DeepEqual(cfg.Plugin, old.Plugin),
	} {
		if changed {
			needsRestart = append(needsRestart, name)
		}
	}
	slices.Sort(needsRestart)
	// Keep what cannot change live, so the chain matches what runs.
	cfg.Proxy.Listen = old.Proxy.Listen
	cfg.Proxy.Keepalive, cfg.Proxy.MaxMessageSize, cfg.Proxy.MaxConnections, cfg.Proxy.MaxHandshakes, cfg.Proxy.WSOrigins =
		old.Proxy.Keepalive, old.Proxy.MaxMessageSize, old.Proxy.MaxConnections, old.Proxy.MaxHandshakes, old.Proxy.WSOrigins
	if newKind {
		cfg.Proxy.PSKFile, cfg.Proxy.CertFile, cfg.Proxy.KeyFile, cfg.Proxy.ClientCAFile =
			old.Proxy.PSKFile, old.Proxy.CertFile, old.Proxy.KeyFile, old.Proxy.ClientCAFile
	}
	cfg.Radio, cfg.Cache, cfg.Observe, cfg.PubSub, cfg.RD, cfg.Metrics, cfg.Plugin = old.Radio, old.Cache, old.Observe, old.PubSub, old.RD, old.Metrics, old.Plugin
	c, err := p.buildChain(cfg)
	if err != nil {
		return nil, err
	}
	if !newKind {
		for _, d := range p.dtls {
			d.SetKeys(keys) // of the same kind: cannot fail
		}
		if p.tls != nil {
			p.tls.set(keys)
		}
	}
	p.amp.configure(cfg.Proxy)
	p.setOriginIdle(cfg.Proxy.OriginIdle.Duration)
	p.chain.Store(c)
	for _, e := range p.servers {
		e.SetInflightLimits(cfg.Proxy.MaxInflight, cfg.Proxy.MaxInflightPerClient, cfg.Proxy.Timeout.Duration)
	}
	for _, w := range cfg.Warnings() {
		p.log.Warn("configuration warning", "component", "config", "warning", w)
	}
	return needsRestart, nil
}

// ReloadFile reads the configuration at path and applies it as Reload
// does. Either way the outcome counts in gatewayd_reloads_total.
func (p *Proxy) ReloadFile(path string) (needsRestart []string, err error) {
	cfg, err := Load(path)
	if err == nil {
		needsRestart, err = p.Reload(cfg)
	}
	outcome := reloadSuccess
	if err != nil {
		outcome = reloadFailure
	}
	p.metrics.reloads.WithLabelValues(outcome).Inc()
	return needsRestart, err
}
