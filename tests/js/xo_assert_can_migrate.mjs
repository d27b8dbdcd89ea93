// VM.assert_can_migrate as Xen Orchestra's migrateVm calls it with its connector (npm `xen-api`):
// six parameters (vm, migrate_receive's token, live, vdi_map, vif_map, options), no vgpu_map, which
// xapi defaults to {}. Once without the disk in the map, once with it. Prints one JSON line:
// {"event":"done","without":{code,params},"with":<result>} or {"event":"error",...}.
// Used by tests/system/test_storage_migration.py.
//
//   node xo_assert_can_migrate.mjs <url> <user> <password> <vm> <vdi> <host> <network> <sr>
import { runOnce } from './xo_once.mjs'

const [url, user, password, vm, vdi, host, network, sr] = process.argv.slice(2)

await runOnce({ url, user, password, seconds: 30 }, async (xapi, stage) => {
  stage('migrate_receive')
  const token = await xapi.call('host.migrate_receive', host, network, {})
  stage('without')
  let without = null
  try {
    await xapi.call('VM.assert_can_migrate', vm, token, true, {}, {}, { force: 'false' })
  } catch (error) {
    without = { code: error?.code, params: error?.params }
  }
  stage('with')
  const result = await xapi.call('VM.assert_can_migrate', vm, token, true, { [vdi]: sr }, {}, { force: 'false' })
  return { without, with: result ?? null }
})
