// Exports a VM into a file with Xen Orchestra's connector (npm `xen-api`) as XO does (GET /export/ with a
// task), then imports the file back as XO does (PUT /import/ of a file stream whose length it knows: a
// probe request with an empty body first, then the real one), and prints one JSON line:
// {"event":"done","exported":<task result>,"imported":<task result>} or {"event":"error",...}.
// Used by tests/contract/test_xva.py.
//
//   node xo_xva.mjs <url> <user> <password> <vm ref> <sr ref> <file> [use_compression]
import { createReadStream, createWriteStream, statSync } from 'node:fs'
import { pipeline } from 'node:stream/promises'
import { createClient } from 'xen-api'

const [url, user, password, vm, sr, file, compression = 'false'] = process.argv.slice(2)

// stdout carries only our line: the package's own messages go to stderr
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
  stage = 'export'
  const response = await xapi.getResource('/export/', { query: { ref: vm, use_compression: compression }, task: true })
  await pipeline(response.body, createWriteStream(file))
  const exported = await response.task
  stage = 'import'
  const body = createReadStream(file)
  body.length = statSync(file).size       // as XO sets it on uploads of a known size
  const imported = await xapi.putResource(body, '/import/', { query: { sr_id: sr }, task: true })
  await out({ event: 'done', exported, imported })
  process.exit(0)
} catch (error) {
  await out({ event: 'error', stage, code: error?.code, params: error?.params, message: String(error?.message ?? error) })
  process.exit(1)
}
