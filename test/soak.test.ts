// A short chaos soak inside `npm test` (the long one is `npm run soak -- --seconds N`): 8 workers, 4
// concurrent enqueuers, ~400 jobs, a worker SIGKILLed with its job's process group about once a second
// for 15 s. See test/soak.ts for what is checked.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { runSoak } from './soak.ts'

test('chaos soak: SIGKILLed workers lose no job, and re-run only attempts marked "worker lost"', { timeout: 120_000 }, async (t) => {
  const { figures, violations } = await runSoak({ seconds: 15, jobs: 400, workers: 8, enqueuers: 4, log: (l) => t.diagnostic(l) })
  t.diagnostic(`figures: ${JSON.stringify(figures)}`)
  assert.deepEqual(violations, [])
  assert.equal(figures.jobs, 400, 'every job was enqueued')
  assert.equal(figures.completed + figures.dead, 400)
  assert.ok(figures.kills >= 5, `at least 5 workers were killed (got ${figures.kills})`)
  assert.ok(figures.killsWithJob >= 1, 'at least one worker was killed while running a job')
  assert.ok(figures.recovered >= 1, 'at least one job was recovered from a lost worker')
})
