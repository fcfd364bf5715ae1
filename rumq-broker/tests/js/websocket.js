// MQTT over WebSockets: `node websocket.js PORT VERSION ws|wss [CA_FILE]`. One client
// subscribes to ws/# at QoS 1, another publishes to it at QoS 1, both over the
// WebSocket listener at /mqtt (wss: trusting CA_FILE). Prints
// {"granted":[..],"messages":[..]}.
'use strict'

const fs = require('fs')
const { connect, subscribe, publish, end, run } = require('./lib')

run(async (t) => {
  const [protocol, caFile] = t.more
  const transport = { protocol, path: '/mqtt' }
  if (caFile) {
    transport.ca = fs.readFileSync(caFile)
    transport.rejectUnauthorized = true
  }
  const sub = await connect(t, { clientId: `js-ws-sub-v${t.version}`, ...transport })
  const granted = await subscribe(sub.client, 'ws/#', 1)
  const { client: publisher } = await connect(t, { clientId: `js-ws-pub-v${t.version}`, ...transport })
  await publish(publisher, 'ws/a', `over ${protocol}`, { qos: 1 })
  const messages = await sub.inbox.take(1, 'the message')
  await end(publisher)
  await end(sub.client)
  return { granted, messages }
})
