// Storage motion as Xen Orchestra does it with its connector (npm `xen-api`): host.migrate_receive,
// then VM.migrate_send with that token passed back untouched (Async, watched to its end), then
// VDI.pool_migrate of the VM's disk (Async). Prints one JSON line:
// {"event":"done","token":{...},"sent":<task result>,"residentAfterSend","moved":<VDI after it>,
// "vdi":<task result>} or {"event":"error",...}.
// Used by tests/system/test_storage_migration.py.
//
//   node xo_migrate.mjs <url> <user> <password> <vm> <vbd> <host> <network> <sr for migrate_send> <sr for VDI.pool_migrate>
import { createClient } from 'xen-api'

const [url, user, password, vm, vbd, host, network, sendSr, vdiSr] = process.argv.slice(2)

console.log = console.info = console.debug = console.warn = console.error
const out = obj => new Promise(resolve => process.stdout.write(JSON.stringify(obj) + '\n', resolve))

setTimeout(async () => {
  await out({ event: 'error', stage: 'timeout' })
  process.exit(3)
}, 60e3).unref()

const xapi = createClient({ url, auth: { user, password }, allowUnauthorized: true })
let stage = 'connect'
try {
  await xapi.connect()
  stage = 'migrate_receive'
  const token = await xapi.call('host.migrate_receive', host, network, {})
  stage = 'migrate_send'
  const vdi = await xapi.call('VBD.get_VDI', vbd)
  const sent = await xapi.callAsync('VM.migrate_send', vm, token, true, { [vdi]: sendSr }, {}, { force: 'false' })
  stage = 'pool_migrate'
  const residentAfterSend = await xapi.call('VM.get_resident_on', vm)
  const moved = await xapi.call('VBD.get_VDI', vbd)
  const result = await xapi.callAsync('VDI.pool_migrate', moved, vdiSr, {})
  await out({ event: 'done', token, sent, residentAfterSend, moved, vdi: result })
  process.exit(0)
} catch (error) {
  await out({ event: 'error', stage, code: error?.code, params: error?.params, message: String(error?.message ?? error) })
  process.exit(1)
}
