// A persistent session (clean: false; in 5.0 also a session expiry of 300 s)
// subscribes to js/sess/# at QoS 1 and disconnects; two QoS 1 messages are published
// while it is away; it reconnects. Prints {"firstSessionPresent":..,
// "sessionPresent":..,"messages":[..]}: the CONNACKs' session present flags and what
// the resumed session received.
'use strict'

const { connect, subscribe, publish, end, run } = require('./lib')

run(async (t) => {
  const durable = {
    clientId: `js-session-v${t.version}`,
    clean: false,
    ...(t.version === 5 ? { properties: { sessionExpiryInterval: 300 } } : {}),
  }
  const first = await connect(t, durable)
  await subscribe(first.client, 'js/sess/#', 1)
  await end(first.client)
  const { client: publisher } = await connect(t, { clientId: `js-session-pub-v${t.version}` })
  await publish(publisher, 'js/sess/1', 'while away 1', { qos: 1 })
  await publish(publisher, 'js/sess/2', 'while away 2', { qos: 1 })
  await end(publisher)
  const again = await connect(t, durable)
  const messages = await again.inbox.take(2, 'the messages published while away')
  await end(again.client)
  return {
    firstSessionPresent: first.connack.sessionPresent,
    sessionPresent: again.connack.sessionPresent,
    messages,
  }
})
