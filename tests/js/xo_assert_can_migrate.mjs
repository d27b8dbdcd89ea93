// VM.assert_can_migrate as Xen Orchestra's migrateVm calls it with its connector (npm `xen-api`):
// six parameters (vm, migrate_receive's token, live, vdi_map, vif_map, options), no vgpu_map, which
// xapi defaults to {}. Once without the disk in the map, once with it. Prints one JSON line:
// {"event":"done","without":{code,params},"with":<result>} or {"event":"error",...}.
// Used by tests/system/test_storage_migration.py.
//
//   node xo_assert_can_migrate.mjs <url> <user> <password> <vm> <vdi> <host> <network> <sr>
import { createClient } from 'xen-api'

const [url, user, password, vm, vdi, host, network, sr] = process.argv.slice(2)

console.log = console.info = console.debug = console.warn = console.error
const out = obj => new Promise(resolve => process.stdout.write(JSON.stringify(obj) + '\n', resolve))

setTimeout(async () => {
  await out({ event: 'error', stage: 'timeout' })
  process.exit(3)
}, 30e3).unref()

const xapi = createClient({ url, auth: { user, password }, allowUnauthorized: true })
let stage = 'connect'
try {
  await xapi.connect()
  stage = 'migrate_receive'
  const token = await xapi.call('host.migrate_receive', host, network, {})
  stage = 'without'
  let without = null
  try {
    await xapi.call('VM.assert_can_migrate', vm, token, true, {}, {}, { force: 'false' })
  } catch (error) {
    without = { code: error?.code, params: error?.params }
  }
  stage = 'with'
  const result = await xapi.call('VM.assert_can_migrate', vm, token, true, { [vdi]: sr }, {}, { force: 'false' })
  await out({ event: 'done', without, with: result ?? null })
  process.exit(0)
} catch (error) {
  await out({ event: 'error', stage, code: error?.code, params: error?.params, message: String(error?.message ?? error) })
  process.exit(1)
}
