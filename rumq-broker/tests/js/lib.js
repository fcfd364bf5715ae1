// What the MQTT.js scenarios share: their arguments, connecting, bounded waits, and
// the result. A scenario prints one line of JSON that rumq-broker/tests/mqttjs.rs
// asserts on, or exits 1 with the step it failed at and why.
'use strict'

const mqtt = require('mqtt')

/** The longest any one step (a CONNACK, an ack, a message) may take. */
const STEP_MS = 5000

/** The step the scenario is at, named when it fails. */
let step = 'start'

function fail(why) {
  process.stderr.write(`failed at ${step}: ${why}\n`)
  process.exit(1)
}

/** `node SCENARIO.js PORT PROTOCOL_VERSION [MORE...]`: 4 is MQTT 3.1.1, 5 is 5.0. */
function target() {
  const [port, version, ...more] = process.argv.slice(2)
  if (!port || !['4', '5'].includes(version)) {
    fail(`usage: node ${process.argv[1]} PORT 4|5 [MORE...]`)
  }
  return { port: Number(port), version: Number(version), more }
}

/** `promise`'s value, or a failure naming `what` after STEP_MS. */
async function within(what, promise) {
  step = what
  let timer
  const late = new Promise((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`no ${what} within ${STEP_MS} ms`)), STEP_MS)
  })
  try {
    return await Promise.race([promise, late])
  } finally {
    clearTimeout(timer)
  }
}

/** The messages a client receives, in order, as plain values. */
class Inbox {
  constructor(client) {
    this.messages = []
    this.wanted = null
    client.on('message', (topic, payload, packet) => {
      this.messages.push({ topic, payload: payload.toString(), qos: packet.qos, retain: packet.retain })
      this.wake()
    })
  }

  wake() {
    if (this.wanted && this.messages.length >= this.wanted.n) {
      this.wanted.resolve()
      this.wanted = null
    }
  }

  /** The first `n` messages, once they have arrived. */
  async take(n, what) {
    await within(what, new Promise((resolve) => {
      this.wanted = { n, resolve }
      this.wake()
    }))
    return this.messages.slice(0, n)
  }
}

/**
 * Connect with `opts` (MQTT.js options) and return the client, its CONNACK and its
 * inbox, which listens from before the CONNACK (a resumed session's messages follow
 * it at once). The client never reconnects by itself; an error after the CONNACK
 * fails the scenario.
 */
async function connect(t, opts) {
  const client = mqtt.connect({
    host: '127.0.0.1',
    port: t.port,
    protocolVersion: t.version,
    reconnectPeriod: 0,
    connectTimeout: STEP_MS,
    ...opts,
  })
  const inbox = new Inbox(client)
  let refused, closed
  const connack = await within(`CONNACK for ${opts.clientId}`, new Promise((resolve, reject) => {
    refused = reject
    closed = () => reject(new Error('closed before its CONNACK'))
    client.once('connect', resolve)
    client.on('error', refused)
    client.on('close', closed)
  }))
  // Only this function's listeners: MQTT.js has its own on 'close'.
  client.off('error', refused)
  client.off('close', closed)
  client.on('error', (e) => fail(`${opts.clientId}: ${e.message}`))
  return { client, connack, inbox }
}

/** Subscribe and return the granted QoS of each filter. */
async function subscribe(client, filter, qos) {
  const granted = await within(`SUBACK for ${filter}`, client.subscribeAsync(filter, { qos }))
  return granted.map((g) => g.qos)
}

/** Publish and wait for the broker's acknowledgement (none at QoS 0: the write). */
async function publish(client, topic, payload, opts) {
  await within(`ack of the publish to ${topic}`, client.publishAsync(topic, payload, opts))
}

/** End with a DISCONNECT (a normal disconnection: no will, a session kept if asked). */
async function end(client) {
  await within('the end of the connection', client.endAsync())
}

/** Print the result and exit 0. */
function done(result) {
  process.stdout.write(`${JSON.stringify(result)}\n`)
  process.exit(0)
}

/** Run `scenario(target)`, failing on any error it throws. */
function run(scenario) {
  scenario(target()).then(done, (e) => fail(e && e.stack ? e.stack : String(e)))
}

module.exports = { connect, subscribe, publish, end, run, fail }
