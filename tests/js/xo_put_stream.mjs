// Uploads a file as Xen Orchestra uploads a stream whose length it doesn't know (Xapi#putResource with
// no `length` on the stream: a probe request with `content-length: 1125899906842624` and no body, then the
// real one with that length, cut once the stream is sent), and prints one JSON line:
// {"event":"done","result":<task result>} or {"event":"error",...}.
// Used by tests/contract/test_xva.py and test_raw_vdi.py.
//
//   node xo_put_stream.mjs <url> <user> <password> <path> <query as JSON> <file>
import { createReadStream } from 'node:fs'
import { createClient } from 'xen-api'

const [url, user, password, pathname, query, file] = process.argv.slice(2)

// stdout carries only our line: the package's own messages (its "missing length" warning) go to stderr
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
  stage = 'put'
  const body = createReadStream(file)       // no body.length: the length is unknown to the client
  const result = await xapi.putResource(body, pathname, { query: JSON.parse(query), task: true })
  await out({ event: 'done', result })
  process.exit(0)
} catch (error) {
  await out({ event: 'error', stage, code: error?.code, params: error?.params, message: String(error?.message ?? error) })
  process.exit(1)
}
