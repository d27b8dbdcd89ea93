// Drives a XenAPI server with Xen Orchestra's connector (npm `xen-api`), as XO does, and reports
// on stdout, one JSON object a line, what the connector sees. Used by tests/contract/test_xen_orchestra.py.
//
//   node xo_connect.mjs <url> <user> <password> <transport> [watch|nowatch] [max-seconds]
//
// transport: auto | json-rpc | xml-rpc.
// watch (default): the connector's own event watcher runs (event.inject, get_all_records of every
//   type, event.from loop); after `connected`, `loaded` comes once `xapi.objectsFetched` resolves, then
//   one `add`/`update`/`remove` line per object the collection reports.
// nowatch: `watchEvents: false`; `loaded` comes from `xapi.getAllRecords(type)` of every type.
//
// Lines out: {"event":"connected"|"loaded"|"update"|...,"t":<ms since epoch>,...};
//   on a failure {"event":"error","stage":...,"code":...,"params":[...],"message":...}.
// Commands in (one a line on stdin): `counts`, `barrier`, `get <ref>`, `quit`.
// It exits on `quit`, when stdin closes, or after max-seconds (default 30, exit status 3).
import { createInterface } from 'node:readline'
import { createClient } from 'xen-api'

const [url, user, password, transport = 'auto', mode = 'watch', maxSeconds = '30'] = process.argv.slice(2)
const watch = mode !== 'nowatch'

// stdout carries only these lines: the package's own logging (DEBUG=xen-api) goes to stderr
console.log = console.info = console.debug = console.error
const out = obj => process.stdout.write(JSON.stringify({ ...obj, t: Date.now() }) + '\n')
const errorLine = (stage, error) => ({
  event: 'error',
  stage,
  code: error?.code,
  params: error?.params,
  message: String(error?.message ?? error),
  name: error?.name,
})

let exiting = false
async function exit(status, xapi) {
  if (exiting) return
  exiting = true
  if (xapi !== undefined) {
    // disconnect() sends session.logout without waiting: closing the HTTP agent lets it (and
    // whatever is in flight) finish; the daemon's logout ends a pending event.from
    const delay = new Promise(resolve => setTimeout(resolve, 1000))
    try {
      await Promise.race([xapi.disconnect().then(() => xapi._undiciDispatcher.close()), delay])
    } catch {}
  }
  // let stdout drain before leaving
  process.stdout.write('', () => process.exit(status))
}

const xapi = createClient({
  url,
  auth: { user, password },
  allowUnauthorized: true,
  transport,
  watchEvents: watch,
})

setTimeout(() => {
  out({ event: 'timeout', seconds: Number(maxSeconds) })
  exit(3, xapi)
}, Number(maxSeconds) * 1e3)

// Which endpoints the connector posts to: shows which transport it settled on.
const paths = {}
{
  const dispatcher = xapi._undiciDispatcher
  const dispatch = dispatcher.dispatch
  dispatcher.dispatch = function (opts, handler) {
    const path = String(opts.path).split('?')[0]
    paths[path] = (paths[path] ?? 0) + 1
    return dispatch.call(this, opts, handler)
  }
}

// What the connector's collection holds, per type (keyed by `$id`, the uuid, as XO reads it).
function counts() {
  const byType = xapi.objects.indexes.type
  const result = {}
  for (const type of xapi._types ?? []) {
    result[type] = Object.keys(byType[type] ?? {}).length
  }
  return result
}

const describe = object => ({
  type: object.$type,
  ref: object.$ref,
  uuid: object.uuid,
  name_label: object.name_label,
})

// Object changes are reported once the initial load is done.
let loaded = false
for (const action of ['add', 'update', 'remove']) {
  xapi.objects.on(action, items => {
    if (!loaded) return
    for (const id of Object.keys(items)) {
      const object = items[id]
      out({ event: action, id, ...(object === undefined ? {} : describe(object)) })
    }
  })
}

const commands = {
  counts: () => out({ event: 'counts', counts: counts(), paths }),
  async barrier() {
    const start = Date.now()
    try {
      await xapi.barrier()
      out({ event: 'barrier', ms: Date.now() - start, other_config: xapi.pool.other_config })
    } catch (error) {
      out(errorLine('barrier', error))
    }
  },
  get(ref) {
    const object = xapi.getObjectByRef(ref, undefined)
    out({ event: 'object', ref, object: object === undefined ? null : { ...describe(object), record: { ...object } } })
  },
}

// Commands wait for the initial load; `quit` and the end of stdin don't.
async function main() {
  try {
    await xapi.connect()
  } catch (error) {
    out(errorLine('connect', error))
    return exit(1)
  }
  out({ event: 'connected', status: xapi.status, pool: xapi.pool.$ref, types: xapi._types, paths })

  let result
  if (watch) {
    await xapi.objectsFetched
    result = counts()
  } else {
    result = {}
    for (const type of xapi._types) {
      try {
        result[type] = (await xapi.getAllRecords(type)).length
      } catch (error) {
        result[type] = errorLine('getAllRecords', error)
      }
    }
  }
  loaded = true
  out({ event: 'loaded', counts: result, paths })
}
const ready = main()

const lines = createInterface({ input: process.stdin })
lines.on('line', line => {
  const [name, ...args] = line.trim().split(/\s+/)
  if (name === 'quit') return exit(0, xapi)
  const command = commands[name]
  if (command === undefined) {
    if (name !== '') out({ event: 'error', stage: 'command', message: 'unknown command: ' + name })
    return
  }
  ready.then(() => command(...args)).catch(error => out(errorLine(name, error)))
})
lines.on('close', () => exit(0, xapi))
