// What the xo_*.mjs scripts that do one job with Xen Orchestra's connector (npm `xen-api`) share:
// stdout carries only their one JSON line (the package's own messages go to stderr), the job is cut
// after `seconds`, and a failure is reported with the stage it was in.
//
//   await runOnce({ url, user, password, seconds }, async (xapi, stage) => { stage('put'); ...; return { result } })
//
// Prints {"event":"done",...what the job returned} and exits 0, {"event":"error","stage",...} and
// exits 1, or {"event":"error","stage":"timeout"} and exits 3.
import { createClient } from 'xen-api'

const out = obj => new Promise(resolve => process.stdout.write(JSON.stringify(obj) + '\n', resolve))

export async function runOnce ({ url, user, password, seconds }, job) {
  console.log = console.info = console.debug = console.warn = console.error
  setTimeout(async () => {
    await out({ event: 'error', stage: 'timeout' })
    process.exit(3)
  }, seconds * 1e3).unref()
  const xapi = createClient({ url, auth: { user, password }, allowUnauthorized: true })
  let stage = 'connect'
  try {
    await xapi.connect()
    const result = await job(xapi, next => { stage = next })
    await out({ event: 'done', ...result })
    process.exit(0)
  } catch (error) {
    await out({ event: 'error', stage, code: error?.code, params: error?.params, message: String(error?.message ?? error) })
    process.exit(1)
  }
}
