// Connect, report the CONNACK, disconnect. `node connect.js PORT 4|5 [KEEPALIVE_SECS]`
// (MQTT.js asks for 60 s when not given). Prints
// {"code":..,"sessionPresent":..,"serverKeepAlive":..,"keepalive":..}: the CONNACK's
// return or reason code, its Server Keep Alive (null when absent, always in 3.1.1),
// and the keep alive the client then uses.
'use strict'

const { connect, end, run } = require('./lib')

run(async (t) => {
  const keepalive = t.more[0] === undefined ? 60 : Number(t.more[0])
  const { client, connack } = await connect(t, { clientId: `js-connect-v${t.version}`, keepalive })
  const result = {
    code: t.version === 5 ? connack.reasonCode : connack.returnCode,
    sessionPresent: connack.sessionPresent,
    serverKeepAlive: connack.properties?.serverKeepAlive ?? null,
    keepalive: client.keepalive,
  }
  await end(client)
  return result
})
