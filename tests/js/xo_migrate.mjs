// Storage motion as Xen Orchestra does it with its connector (npm `xen-api`): host.migrate_receive,
// then VM.migrate_send with that token passed back untouched (Async, watched to its end), then
// VDI.pool_migrate of the VM's disk (Async). Prints one JSON line:
// {"event":"done","token":{...},"sent":<task result>,"residentAfterSend","moved":<VDI after it>,
// "vdi":<task result>} or {"event":"error",...}.
// Used by tests/system/test_storage_migration.py.
//
//   node xo_migrate.mjs <url> <user> <password> <vm> <vbd> <host> <network> <sr for migrate_send> <sr for VDI.pool_migrate>
import { runOnce } from './xo_once.mjs'

const [url, user, password, vm, vbd, host, network, sendSr, vdiSr] = process.argv.slice(2)

await runOnce({ url, user, password, seconds: 60 }, async (xapi, stage) => {
  stage('migrate_receive')
  const token = await xapi.call('host.migrate_receive', host, network, {})
  stage('migrate_send')
  const vdi = await xapi.call('VBD.get_VDI', vbd)
  const sent = await xapi.callAsync('VM.migrate_send', vm, token, true, { [vdi]: sendSr }, {}, { force: 'false' })
  stage('pool_migrate')
  const residentAfterSend = await xapi.call('VM.get_resident_on', vm)
  const moved = await xapi.call('VBD.get_VDI', vbd)
  const result = await xapi.callAsync('VDI.pool_migrate', moved, vdiSr, {})
  return { token, sent, residentAfterSend, moved, vdi: result }
})
