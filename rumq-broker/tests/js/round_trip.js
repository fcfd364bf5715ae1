// One client subscribes to js/rt/# at QoS 2; another publishes to it at QoS 0, 1 and
// 2, each after the previous one's ack. Prints {"granted":[..],"messages":[..]}: the
// subscription's granted QoS and the messages received.
'use strict'

const { connect, subscribe, publish, end, run } = require('./lib')

run(async (t) => {
  const sub = await connect(t, { clientId: `js-rt-sub-v${t.version}` })
  const granted = await subscribe(sub.client, 'js/rt/#', 2)
  const { client: publisher } = await connect(t, { clientId: `js-rt-pub-v${t.version}` })
  for (const qos of [0, 1, 2]) {
    await publish(publisher, `js/rt/${qos}`, `payload at qos ${qos}`, { qos })
  }
  const messages = await sub.inbox.take(3, 'the three messages')
  await end(publisher)
  await end(sub.client)
  return { granted, messages }
})
