'use strict'
// A node-coap client for gatewayd's Go tests (internal/testpeer,
// NodeCoap). It takes one JSON argument and prints one JSON object per
// line on stdout: what node-coap made of each response, so that the Go
// side judges gatewayd by what this independent implementation saw.
//
// Argument:
//   host, port     where the request goes (gatewayd)
//   method         GET, PUT, POST, ...
//   proxyUri       sets Proxy-Uri (the forward-proxy form of RFC 7252 §5.7.2)
//   pathname       Uri-Path, "/"-separated (reverse routes, the broker)
//   options        {name: value}: a string, or {"hex": "..."} for raw bytes
//   payload        request body, base64
//   observe        number of observers: each one its own coap.Agent, so its
//                  own UDP socket and endpoint (RFC 7641 §3.6); they observe
//                  until stdin is closed, then deregister and exit
//   timeoutMs      give up after this long (default 20000)
//
// Output lines:
//   {"obs": i, "code": "2.05", "observe": n, "options": [[name, hex]...],
//    "headers": {name: value as node-coap reads it}, "payload": base64}
//   for a plain request "obs" is -1 and there is one line;
//   {"error": "..."} on failure (and exit status 1);
//   {"closed": true} once every observer has deregistered.

const coap = require('coap')
// node-coap decodes option values in place (Max-Age to a number, ...);
// toBinary turns them back into the bytes for the Go side.
const { toBinary } = require('coap/dist/lib/option_converter')

const spec = JSON.parse(process.argv[2])
const timeoutMs = spec.timeoutMs || 20000

function fail (err) {
  process.stdout.write(JSON.stringify({ error: String(err && err.message ? err.message : err) }) + '\n')
  process.exit(1)
}

const timer = setTimeout(() => fail('timeout after ' + timeoutMs + ' ms'), timeoutMs)

function print (obs, res, payload, then) {
  const options = (res.options || []).map(o => {
    const v = Buffer.isBuffer(o.value) ? o.value : toBinary(String(o.name), o.value)
    return [String(o.name), Buffer.from(v || []).toString('hex')]
  })
  process.stdout.write(JSON.stringify({
    obs,
    code: res.code,
    observe: typeof res.headers.Observe === 'number' ? res.headers.Observe : null,
    options,
    headers: res.headers,
    payload: Buffer.from(payload || []).toString('base64')
  }) + '\n', then)
}

function params (agent, observe) {
  const p = {
    hostname: spec.host,
    port: spec.port,
    method: spec.method || 'GET',
    agent,
    retrySend: 4
  }
  if (spec.proxyUri) p.proxyUri = spec.proxyUri
  if (spec.pathname) p.pathname = spec.pathname
  if (observe) p.observe = true
  return p
}

function withOptions (req) {
  for (const [name, v] of Object.entries(spec.options || {})) {
    req.setOption(name, typeof v === 'string' ? Buffer.from(v) : Buffer.from(v.hex, 'hex'))
  }
  return req
}

function request (agent, observe) {
  const req = withOptions(coap.request(params(agent, observe)))
  req.on('error', fail)
  req.on('timeout', fail)
  if (spec.payload) req.write(Buffer.from(spec.payload, 'base64'))
  return req
}

if (!spec.observe) {
  const agent = new coap.Agent({ type: 'udp4' })
  const req = request(agent, false)
  req.on('response', res => {
    clearTimeout(timer)
    // The agent closes its socket itself once its one request is done.
    print(-1, res, res.payload, () => process.exit(0))
  })
  req.end()
} else {
  const streams = []
  for (let i = 0; i < spec.observe; i++) {
    const agent = new coap.Agent({ type: 'udp4' })
    const req = request(agent, true)
    req.on('response', res => {
      streams.push({ res, agent, token: req._packet.token })
      // The first response's payload is the stream's first data event.
      res.on('data', payload => print(i, res, payload))
    })
    req.end()
  }
  // The test closes stdin when it has seen enough. Each observer then
  // deregisters: a GET with Observe 1 and the registration's token, from
  // the same socket (RFC 7641 §3.6), and leaves once it is answered.
  process.stdin.resume()
  process.stdin.on('end', () => {
    let left = streams.length
    if (left === 0) fail('stdin closed before any observation was established')
    for (const { res, agent, token } of streams) {
      const p = params(agent, false)
      p.observe = 1
      p.token = token
      const dereg = withOptions(coap.request(p))
      dereg.on('error', fail)
      dereg.on('timeout', fail)
      dereg.on('response', () => {
        res.close()
        agent.close(() => {
          if (--left === 0) {
            process.stdout.write(JSON.stringify({ closed: true }) + '\n')
            clearTimeout(timer)
            process.exit(0)
          }
        })
      })
      dereg.end()
    }
  })
}
