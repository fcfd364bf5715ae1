// node benches/ws_idle.js PORT N (NODE_PATH: MQTT.js): N idle clients over ws://127.0.0.1:PORT/mqtt;
// prints "ready" once all are connected, then waits (benches/ws-idle.sh).
'use strict'
const mqtt = require('mqtt')
const [port, n] = process.argv.slice(2).map(Number)
let up = 0
for (let i = 0; i < n; i++) {
  const c = mqtt.connect({ host: '127.0.0.1', port, protocol: 'ws', path: '/mqtt', clientId: `ws-idle-${i}`, reconnectPeriod: 0, keepalive: 600 })
  c.on('connect', () => { if (++up === n) console.log('ready') })
  c.on('error', (e) => { console.error(e.message); process.exit(1) })
}
