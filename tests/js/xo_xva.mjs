// Exports a VM into a file with Xen Orchestra's connector (npm `xen-api`) as XO does (GET /export/ with a
// task), then imports the file back as XO does (PUT /import/ of a file stream whose length it knows: a
// probe request with an empty body first, then the real one), and prints one JSON line:
// {"event":"done","exported":<task result>,"imported":<task result>} or {"event":"error",...}.
// Used by tests/contract/test_xva.py.
//
//   node xo_xva.mjs <url> <user> <password> <vm ref> <sr ref> <file> [use_compression]
import { createReadStream, createWriteStream, statSync } from 'node:fs'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { runOnce } from './xo_once.mjs'

const [url, user, password, vm, sr, file, compression = 'false'] = process.argv.slice(2)

await runOnce({ url, user, password, seconds: 60 }, async (xapi, stage) => {
  stage('export')
  const response = await xapi.getResource('/export/', { query: { ref: vm, use_compression: compression }, task: true })
  // The body is drained as it arrives, then written: a consumer that lets undici's parser pause (a
  // file write's backpressure) when the server ends the reply with its close, as xapi and we do for an
  // export, crashes undici 6/7 (uncatchable assert(!this.paused), nodejs/undici#5360, fixed in undici 8,
  // which needs node 22). The bytes and the task are checked all the same.
  const parts = []
  for await (const part of response.body) parts.push(part)
  await pipeline(Readable.from(parts), createWriteStream(file))
  const exported = await response.task
  stage('import')
  const body = createReadStream(file)
  body.length = statSync(file).size       // as XO sets it on uploads of a known size
  const imported = await xapi.putResource(body, '/import/', { query: { sr_id: sr }, task: true })
  return { exported, imported }
})
