// A watcher subscribes to js/will/#; a client connects with a will (QoS 1, not
// retained) and its socket is destroyed without a DISCONNECT. Prints
// {"messages":[..]}: what the watcher received.
'use strict'

const { connect, subscribe, end, run } = require('./lib')

run(async (t) => {
  const watcher = await connect(t, { clientId: `js-will-watcher-v${t.version}` })
  await subscribe(watcher.client, 'js/will/#', 1)
  const { client: doomed } = await connect(t, {
    clientId: `js-will-doomed-v${t.version}`,
    will: { topic: 'js/will/doomed', payload: Buffer.from('gone'), qos: 1, retain: false },
  })
  doomed.stream.destroy()
  const messages = await watcher.inbox.take(1, 'the will')
  await end(watcher.client)
  return { messages }
})
