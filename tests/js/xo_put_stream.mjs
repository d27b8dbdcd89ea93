// Uploads a file as Xen Orchestra uploads a stream whose length it doesn't know (Xapi#putResource with
// no `length` on the stream: a probe request with `content-length: 1125899906842624` and no body, then the
// real one with that length, cut once the stream is sent), and prints one JSON line:
// {"event":"done","result":<task result>} or {"event":"error",...}.
// Used by tests/contract/test_xva.py and test_raw_vdi.py.
//
//   node xo_put_stream.mjs <url> <user> <password> <path> <query as JSON> <file>
import { createReadStream } from 'node:fs'
import { runOnce } from './xo_once.mjs'

const [url, user, password, pathname, query, file] = process.argv.slice(2)

await runOnce({ url, user, password, seconds: 60 }, async (xapi, stage) => {
  stage('put')
  const body = createReadStream(file)       // no body.length: the length is unknown to the client
  const result = await xapi.putResource(body, pathname, { query: JSON.parse(query), task: true })
  return { result }
})
