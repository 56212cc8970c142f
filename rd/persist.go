package rd

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// restore loads the state directory.
func (d *Directory) restore() {
	recs, bad := d.st.Load()
	for _, err := range bad {
		d.reportBad("", err)
	}
	now := d.clock.Now()
	for _, raw := range recs {
		r, err := d.fromRecord(raw.Data)
		if err != nil {
			d.reportBad(raw.Name, err)
			continue
		}
		if !r.expires.After(now) {
			if err := d.st.Remove(r.id); err != nil {
				d.log.Warn("rd: cannot remove expired registration", "id", r.id, "err", err)
			}
			d.expired.Add(1)
			continue
		}
		switch {
		case len(d.regs) >= d.cfg.MaxRegistrations:
			err = fmt.Errorf("rd: state file of registration %s: over max_registrations %d", r.id, d.cfg.MaxRegistrations)
		case d.regs[r.id] != nil:
			err = fmt.Errorf("rd: state file of registration %s: duplicate id", r.id)
		case d.byName[nameKey(r.ep)] != nil:
			err = fmt.Errorf("rd: state file of registration %s: endpoint name %q in use", r.id, r.ep)
		}
		if err != nil {
			d.reportBad(raw.Name, err)
			continue
		}
		if d.held[d.quotaOf(r.owner)] >= d.cfg.MaxRegistrationsPerClient {
			d.reportBad(raw.Name, fmt.Errorf("rd: state file of registration %s: over max_registrations_per_client %d", r.id, d.cfg.MaxRegistrationsPerClient))
			continue
		}
		d.derive(r)
		d.addLocked(r)
	}
}

// reportBad counts and logs a state file skipped at start; file is its
// name when err does not say it.
func (d *Directory) reportBad(file string, err error) {
	d.badFiles.Add(1)
	if file == "" {
		d.log.Warn("rd: skipping state file", "err", err)
		return
	}
	d.log.Warn("rd: skipping state file", "file", file, "err", err)
}

// fromRecord checks a stored record as a request would be checked, under
// the configuration of now (a lower max_links makes a file unusable).
func (d *Directory) fromRecord(raw []byte) (*registration, error) {
	rec, err := decodeRecord(raw)
	if err != nil {
		return nil, err
	}
	if !validID(rec.ID) {
		return nil, fmt.Errorf("rd: state file: bad registration id %q", rec.ID)
	}
	bad := func(err error) error { return fmt.Errorf("rd: state file of registration %s: %w", rec.ID, err) }
	if diag := checkName("ep", rec.EP); diag != "" {
		return nil, bad(errors.New(diag))
	}
	if rec.D != "" {
		if diag := checkName("d", rec.D); diag != "" {
			return nil, bad(errors.New(diag))
		}
	}
	from, err := netip.ParseAddrPort(rec.From)
	if err != nil {
		return nil, bad(err)
	}
	if rec.Base != "" {
		if diag := checkBase(rec.Base); diag != "" {
			return nil, bad(errors.New(diag))
		}
	}
	for _, a := range rec.Attrs {
		if diag := checkAttr(a); diag != "" {
			return nil, bad(errors.New(diag))
		}
	}
	links, diag := d.parseDoc(rec.Links)
	if diag != "" {
		return nil, bad(errors.New(diag))
	}
	r := &registration{
		id: rec.ID, ep: rec.EP, d: rec.D, base: rec.Base, from: from, secure: rec.Secure, owner: rec.Owner,
		lt: rec.LT, expires: rec.Expires, updated: rec.Updated, simple: rec.Simple, proxy: rec.Proxy,
		attrs: rec.Attrs, doc: rec.Links, links: links,
	}
	if n := r.size(); n > d.cfg.MaxBytes {
		return nil, bad(fmt.Errorf("%d bytes, over max_bytes %d", n, d.cfg.MaxBytes))
	}
	return r, nil
}

func (r *registration) record() *record {
	return &record{
		Version: recordVersion, ID: r.id, EP: r.ep, D: r.d, Base: r.base, From: r.from.String(), Secure: r.secure,
		Owner: r.owner, LT: r.lt, Expires: r.expires, Updated: r.updated, Simple: r.simple, Proxy: r.proxy,
		Attrs: r.attrs, Links: r.doc,
	}
}

// validID reports an id newID could have made.
func validID(id string) bool {
	if len(id) != 8 {
		return false
	}
	_, err := hex.DecodeString(id)
	return err == nil && strings.ToLower(id) == id
}
