// A client publishes a retained QoS 1 message to js/ret/a and disconnects; a later
// client subscribes to js/ret/# at QoS 1, then a live (not retained) message is
// published. Prints {"messages":[..]}: the retained one (retain true), then the live
// one (retain false).
'use strict'

const { connect, subscribe, publish, end, run } = require('./lib')

run(async (t) => {
  const { client: publisher } = await connect(t, { clientId: `js-ret-pub-v${t.version}` })
  await publish(publisher, 'js/ret/a', 'kept', { qos: 1, retain: true })
  await end(publisher)
  const sub = await connect(t, { clientId: `js-ret-sub-v${t.version}` })
  await subscribe(sub.client, 'js/ret/#', 1)
  await sub.inbox.take(1, 'the retained message')
  const { client: live } = await connect(t, { clientId: `js-ret-live-v${t.version}` })
  await publish(live, 'js/ret/b', 'fresh', { qos: 1 })
  const messages = await sub.inbox.take(2, 'the live message')
  await end(live)
  await end(sub.client)
  return { messages }
})
