'use strict'
// A CoAP-over-WebSockets origin (RFC 8323 §4) on the npm ws package, for
// gatewayd's Go tests (internal/testpeer, StartNodeWSOrigin): a WebSocket
// implementation that is not gatewayd's. Its CoAP framing is written
// here, from the RFC, so that the Go side judges gatewayd by what an
// independent reader made of its bytes.
//
// Argument (JSON):
//   payload      the 2.05's payload is this, then the request's Uri-Path
//                ("/"-joined, with a leading "/")
//   ping         after the CSM exchange, send a Ping (§5.4) and report its Pong
//   timeoutMs    exit after this long (default 60000)
//
// Output, one JSON object a line on stdout:
//   {"event": "listening", "port": n}
//   {"event": "connection", "path": ..., "protocols": the client's
//    Sec-WebSocket-Protocol header, "selected": the subprotocol agreed}
//   {"event": "message", "seq": n (per connection, from 0), "binary": bool,
//    "hex": the whole message, "code": "7.01", "token": hex,
//    "options": [[number, hex]...], "payload": hex}
//   {"event": "pong", "token": hex}: the answer to our Ping
//   {"event": "close", "closeCode": n, "reason": ...}
//   {"event": "error", "error": ...}
// It exits when stdin closes.

const { WebSocketServer } = require('ws')

const spec = JSON.parse(process.argv[2] || '{}')
const prefix = spec.payload || 'ws origin'

function out (o) { process.stdout.write(JSON.stringify(o) + '\n') }

// Signalling codes (RFC 8323 §5.1) and the codes this origin answers.
const CSM = 0xe1
const PING = 0xe2
const PONG = 0xe3
const GET = 0x01
const CONTENT = 0x45
const METHOD_NOT_ALLOWED = 0x85
const URI_PATH = 11
const CONTENT_FORMAT = 12
const MAX_MESSAGE_SIZE = 2 // in a CSM, §5.3.1

function codeStr (c) { return (c >> 5) + '.' + String(c & 31).padStart(2, '0') }

// parse reads one WebSocket message as RFC 8323 §4.2 frames it: Len is 0
// (the message carries the length), then TKL, Code, token, options
// (RFC 7252 §3.1 encoding) and an optional payload after 0xFF.
function parse (b) {
  if (b.length < 2) throw new Error('message of ' + b.length + ' bytes')
  const len = b[0] >> 4
  const tkl = b[0] & 0x0f
  if (len !== 0) throw new Error('Len ' + len + ' is not 0 (RFC 8323 §4.2)')
  if (tkl > 8 || b.length < 2 + tkl) throw new Error('bad token length ' + tkl)
  const m = { code: b[1], token: b.subarray(2, 2 + tkl), options: [], payload: Buffer.alloc(0) }
  let i = 2 + tkl
  let num = 0
  const ext = (n) => {
    if (n === 13) { n = b[i] + 13; i += 1 } else if (n === 14) { n = b.readUInt16BE(i) + 269; i += 2 } else if (n === 15) {
      throw new Error('option nibble 15')
    }
    if (i > b.length) throw new Error('option header past the end')
    return n
  }
  while (i < b.length) {
    if (b[i] === 0xff) {
      if (i + 1 === b.length) throw new Error('payload marker with no payload')
      m.payload = b.subarray(i + 1)
      break
    }
    const first = b[i]
    i += 1
    num += ext(first >> 4)
    const l = ext(first & 0x0f)
    if (i + l > b.length) throw new Error('option past the end')
    m.options.push([num, b.subarray(i, i + l)])
    i += l
  }
  return m
}

// frame builds a message in RFC 8323 §4.2 framing; opts are sorted by
// number.
function frame (code, token, opts, payload) {
  const parts = [Buffer.from([token.length, code]), token]
  let last = 0
  const nib = (n) => n < 13 ? [n, []] : n < 269 ? [13, [n - 13]] : [14, [(n - 269) >> 8, (n - 269) & 0xff]]
  for (const [num, val] of opts) {
    const [dn, dx] = nib(num - last)
    const [ln, lx] = nib(val.length)
    parts.push(Buffer.from([dn << 4 | ln, ...dx, ...lx]), val)
    last = num
  }
  if (payload && payload.length > 0) parts.push(Buffer.from([0xff]), payload)
  return Buffer.concat(parts)
}

const wss = new WebSocketServer({
  host: '127.0.0.1',
  port: 0,
  path: '/.well-known/coap',
  // §4.1: the subprotocol is "coap"; a client that does not ask for it
  // gets none, and the Go side sees that in "selected".
  handleProtocols: (protocols) => protocols.has('coap') ? 'coap' : false
})

wss.on('listening', () => out({ event: 'listening', port: wss.address().port }))
wss.on('error', (err) => { out({ event: 'error', error: String(err.message || err) }); process.exit(1) })

let pings = 0
wss.on('connection', (ws, req) => {
  out({ event: 'connection', path: req.url, protocols: req.headers['sec-websocket-protocol'] || '', selected: ws.protocol })
  let seq = 0
  let pingToken = null
  ws.on('message', (data, isBinary) => {
    const b = Buffer.from(data)
    const ev = { event: 'message', seq: seq++, binary: isBinary, hex: b.toString('hex') }
    let m
    try {
      m = parse(b)
    } catch (err) {
      ev.error = String(err.message)
      out(ev)
      return
    }
    ev.code = codeStr(m.code)
    ev.token = m.token.toString('hex')
    ev.options = m.options.map(([n, v]) => [n, v.toString('hex')])
    ev.payload = m.payload.toString('hex')
    out(ev)
    switch (m.code) {
      case CSM:
        ws.send(frame(CSM, Buffer.alloc(0), [[MAX_MESSAGE_SIZE, Buffer.from([0x04, 0x80])]]))
        if (spec.ping) {
          pingToken = Buffer.from('ping' + pings++)
          ws.send(frame(PING, pingToken, []))
        }
        break
      case PING:
        ws.send(frame(PONG, m.token, []))
        break
      case PONG:
        if (pingToken && m.token.equals(pingToken)) out({ event: 'pong', token: m.token.toString('hex') })
        break
      case GET: {
        const path = m.options.filter(([n]) => n === URI_PATH).map(([, v]) => v.toString('utf8'))
        const body = Buffer.from(prefix + ' /' + path.join('/'), 'utf8')
        ws.send(frame(CONTENT, m.token, [[CONTENT_FORMAT, Buffer.alloc(0)]], body))
        break
      }
      default:
        if (m.code >> 5 === 0 && m.code !== 0) ws.send(frame(METHOD_NOT_ALLOWED, m.token, []))
    }
  })
  ws.on('close', (code, reason) => out({ event: 'close', closeCode: code, reason: reason.toString() }))
  ws.on('error', (err) => out({ event: 'error', error: String(err.message || err) }))
})

setTimeout(() => { out({ event: 'error', error: 'timeout' }); process.exit(1) }, spec.timeoutMs || 60000).unref()
process.stdin.on('data', () => {})
process.stdin.on('end', () => { wss.close(); process.exit(0) })
process.stdin.resume()
