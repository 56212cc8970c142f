// Package rd is gatewayd's resource directory (RFC 9176): nodes and IP
// hosts register the links of their resources, and clients look up
// endpoints and resources by their attributes.
//
// It serves the registration interface (POST /rd, with update and removal
// of the registration resources /rd/<id>), simple registration (POST
// /.well-known/rd, after which the directory GETs the registrant's
// /.well-known/core through the proxy's own upstream for that address),
// and endpoint and resource lookup (/rd-lookup/ep, /rd-lookup/res) with
// attribute filters and paging. It is a stage of the proxy's chain after
// the Observe hub: an observed lookup is an observation the directory is
// the origin of (coap.Request.Observer), notified whenever its answer
// changes, so that a client can watch nodes come and go.
//
// Registrations are bounded (count, links, bytes), expire at the end of
// their lifetime, survive restarts (one file per registration, written
// before the answer goes out), and are owned: a name held by one client is
// refused to another (4.03), never taken over. Who may register is an
// access list of package acl. A registration also names a reverse route:
// the proxy's route stage asks Route and HostRoute, so that
// coap://<gateway>/<ep>/... reaches the endpoint's base, with every rule
// of the proxy's protection guard unchanged.
package rd
