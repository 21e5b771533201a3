// Crash-safety of the snapshot + journal persistence (issue 5, and the "crash during writes" part of issue 6).
//
// Storage format (CONTRACT.md): `queue.db` is a SQLite snapshot whose generation is the big-endian u32 at byte 60
// (`PRAGMA user_version`); `queue.db.journal` is a 16-byte header ("QCTLJRN1", u32 BE version, u32 BE generation)
// followed by records `u32 BE length | u32 BE crc32(payload) | payload`. These tests corrupt those files by hand
// and kill real CLI processes with SIGKILL at random instants, then check through the CLI that nothing
// acknowledged is lost and that the queue always opens.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { appendFileSync, existsSync, readFileSync, truncateSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { crc32 } from 'node:zlib'
import { CLI, Home, runProgram, sqliteOnly, waitFor, type RunResult } from './helpers.ts'

const ALL = ['--limit', '100000']

// ---------- journal / snapshot inspection ----------

interface Journal {
  magic: string
  version: number
  generation: number
  records: { offset: number; payload: Buffer }[]
  /** offset just past the last valid record */
  validEnd: number
  size: number
}

function parseJournal(buf: Buffer): Journal {
  assert.ok(buf.length >= 16, `journal shorter than its 16-byte header (${buf.length} bytes)`)
  const j: Journal = {
    magic: buf.subarray(0, 8).toString('latin1'),
    version: buf.readUInt32BE(8),
    generation: buf.readUInt32BE(12),
    records: [],
    validEnd: 16,
    size: buf.length,
  }
  let off = 16
  while (off + 8 <= buf.length) {
    const len = buf.readUInt32BE(off)
    const crc = buf.readUInt32BE(off + 4)
    if (off + 8 + len > buf.length) break
    const payload = buf.subarray(off + 8, off + 8 + len)
    if (crc32(payload) >>> 0 !== crc) break
    j.records.push({ offset: off, payload })
    off += 8 + len
  }
  j.validEnd = off
  return j
}

const journalPath = (home: Home) => join(home.dir, 'queue.db.journal')
const dbPath = (home: Home) => join(home.dir, 'queue.db')
const readJournal = (home: Home) => parseJournal(readFileSync(journalPath(home)))
/** The snapshot's generation (`PRAGMA user_version`), -1 while there is no snapshot file yet. */
const snapshotGeneration = (home: Home) => (existsSync(dbPath(home)) ? readFileSync(dbPath(home)).readUInt32BE(60) : -1)

/** The journal is well formed: right header, every byte belongs to a record with a good CRC. */
function assertJournalClean(home: Home, generation?: number): Journal {
  const j = readJournal(home)
  assert.equal(j.magic, 'QCTLJRN1')
  assert.equal(j.version, 1)
  assert.equal(j.validEnd, j.size, `journal has ${j.size - j.validEnd} bytes of torn/garbage tail after ${j.records.length} valid records`)
  if (generation !== undefined) assert.equal(j.generation, generation, 'journal generation should equal the snapshot generation')
  return j
}

// ---------- processes ----------

interface Timed extends RunResult {
  ms: number
}

/** Spawns the CLI; `kill()` SIGKILLs it; `done` resolves when it has exited and its pipes are closed. */
function startCli(home: Home, args: string[], opts: { input?: string; env?: Record<string, string> } = {}) {
  const t0 = Date.now()
  const child = spawn(process.execPath, [CLI, ...args], {
    cwd: home.dir,
    env: { ...home.env, ...opts.env },
    stdio: ['pipe', 'pipe', 'pipe'],
  })
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (d) => (stdout += d))
  child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d))
  child.stdin.on('error', () => {}) // EPIPE when killed before reading stdin
  child.stdin.end(opts.input ?? '')
  const safety = setTimeout(() => child.kill('SIGKILL'), 120_000)
  const done = new Promise<Timed>((resolve, reject) => {
    child.on('error', reject)
    child.on('close', (code, signal) => {
      clearTimeout(safety)
      resolve({ code, signal, stdout, stderr, ms: Date.now() - t0 })
    })
  })
  return { child, done, kill: () => child.kill('SIGKILL') }
}

/** Runs the CLI and SIGKILLs it after `delayMs` (if it is still running then). */
async function runKilledAfter(home: Home, args: string[], delayMs: number, opts: { input?: string; env?: Record<string, string> } = {}): Promise<Timed> {
  const p = startCli(home, args, opts)
  const timer = setTimeout(p.kill, delayMs)
  const r = await p.done
  clearTimeout(timer)
  return r
}

const rand = (lo: number, hi: number) => lo + Math.random() * (hi - lo)
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

/** Kill delays: half uniform in 0–150 ms (start-up, opening, replay), half spread around the end of a call
 *  (where the write and its fsync happen). `est` tracks how long an unkilled call takes right now: it follows
 *  the calls that finished, and grows while late kills keep landing (so it adapts to load in both directions). */
class KillClock {
  private est: number
  private lastDelay = 0
  constructor(initialMs: number, private readonly earlyShare = 0.5, private readonly lo = 0.6, private readonly hi = 1.3) {
    this.est = initialMs
  }
  note(r: Timed): void {
    if (r.code === 0) this.est = 0.8 * this.est + 0.2 * r.ms
    else if (r.signal === 'SIGKILL' && this.lastDelay > this.lo * this.est) this.est *= 1.06
  }
  next(): number {
    this.lastDelay = Math.random() < this.earlyShare ? rand(0, 150) : rand(this.lo * this.est, this.hi * this.est)
    return this.lastDelay
  }
}

async function listIds(home: Home, env?: Record<string, string>): Promise<string[]> {
  const jobs = await home.json<any[]>(['list', ...ALL], { env })
  assert.ok(Array.isArray(jobs), 'list --json prints an array')
  return jobs.map((j) => j.id)
}

function assertNoDuplicates(ids: string[]): void {
  const seen = new Set<string>()
  const dups = ids.filter((id) => (seen.has(id) ? true : (seen.add(id), false)))
  assert.deepEqual(dups, [], 'no job may be listed twice')
}

async function lanes(n: number, body: (lane: number) => Promise<void>): Promise<void> {
  await Promise.all(Array.from({ length: n }, (_, i) => body(i)))
}

async function calibrate(home: Home, env?: Record<string, string>): Promise<number> {
  const ms: number[] = []
  for (let i = 0; i < 3; i++) {
    const r = await startCli(home, ['enqueue', '--id', `calib-${i}`, '--', 'true'], { env }).done
    assert.equal(r.code, 0, `calibration enqueue failed: ${r.stderr}`)
    ms.push(r.ms)
  }
  return median(ms)
}

// ---------- tests ----------

test('a torn or corrupt last journal record is ignored, truncated by the next writer, and the journal stays readable', { timeout: 60_000, skip: sqliteOnly }, async () => {
  const home = new Home()
  try {
    const present: string[] = []
    for (const id of ['t1', 't2', 't3']) {
      assert.equal((await home.ok(['enqueue', '--id', id, '--', `echo ${id}`])).trim(), id)
      present.push(id)
    }
    const before = assertJournalClean(home)
    assert.ok(before.records.length >= 1, 'with the default journal limit, three enqueues leave records in the journal')

    // Each step damages the tail, then: a reader still sees every intact job, a write succeeds,
    // the writer has cut the damaged tail (the journal parses to its end), and a fresh reader sees the write.
    const steps: { name: string; damage: () => string[] }[] = [
      {
        name: 'partial record appended (length says 500, 37 bytes present)',
        damage: () => {
          const head = Buffer.alloc(8)
          head.writeUInt32BE(500, 0)
          head.writeUInt32BE(0x12345678, 4)
          appendFileSync(journalPath(home), Buffer.concat([head, Buffer.from('{"torn":"record'.padEnd(37, 'x'))]))
          return []
        },
      },
      {
        name: 'three bytes of a record header appended',
        damage: () => {
          appendFileSync(journalPath(home), Buffer.from([0, 0, 1]))
          return []
        },
      },
      {
        name: 'a record header claiming 4 GiB appended',
        damage: () => {
          const head = Buffer.alloc(12, 0x41)
          head.writeUInt32BE(0xffffffff, 0)
          appendFileSync(journalPath(home), head)
          return []
        },
      },
      {
        name: 'bytes of the last record payload flipped (bad CRC)',
        damage: () => {
          const buf = readFileSync(journalPath(home))
          const j = parseJournal(buf)
          const last = j.records.at(-1)!
          const start = last.offset + 8 + Math.floor(last.payload.length / 2)
          for (let i = start; i < Math.min(start + 4, buf.length); i++) buf[i] ^= 0xff
          writeFileSync(journalPath(home), buf)
          return idsOnlyIn(j, j.records.length - 1)
        },
      },
      {
        name: 'last record cut short by 5 bytes',
        damage: () => {
          const j = readJournal(home)
          truncateSync(journalPath(home), j.size - 5)
          return idsOnlyIn(j, j.records.length - 1)
        },
      },
    ]

    /** Ids of `present` that appear in record `index` and in no earlier record: its loss removes them. */
    function idsOnlyIn(j: Journal, index: number): string[] {
      const text = (i: number) => j.records[i].payload.toString('utf8')
      return present.filter((id) => text(index).includes(`"${id}"`) && !j.records.slice(0, index).some((_, i) => text(i).includes(`"${id}"`)))
    }

    let n = 4
    for (const step of steps) {
      const damagesLast = step.name.includes('flipped') || step.name.includes('cut short')
      let id = ''
      if (damagesLast) {
        // make sure the record we damage is a fresh enqueue of ours
        id = `t${n++}`
        await home.ok(['enqueue', '--id', id, '--', `echo ${id}`])
        present.push(id)
      }
      const lost = step.damage()
      if (damagesLast) assert.ok(lost.includes(id), `${step.name}: the damaged last record should be the enqueue of ${id} (found ids ${JSON.stringify(lost)})`)
      for (const gone of lost) present.splice(present.indexOf(gone), 1)

      const seen = await listIds(home)
      assert.deepEqual([...seen].sort(), [...present].sort(), `${step.name}: a reader sees exactly the intact jobs`)

      const next = `t${n++}`
      const r = await home.run(['enqueue', '--id', next, '--', `echo ${next}`])
      assert.equal(r.code, 0, `${step.name}: the next write succeeds (stderr: ${r.stderr})`)
      present.push(next)
      assertJournalClean(home, snapshotGeneration(home))

      const after = await home.json<any[]>(['list', ...ALL])
      assert.deepEqual(after.map((j) => j.id).sort(), [...present].sort(), `${step.name}: a fresh process sees every job, the new one included`)
      for (const j of after) assert.equal(j.command, `echo ${j.id}`)
    }
  } finally {
    await home.cleanup()
  }
})

test('"new snapshot written, journal not reset": a journal of an older generation is ignored and reset', { timeout: 60_000, skip: sqliteOnly }, async () => {
  const home = new Home()
  const env = { QUEUECTL_JOURNAL_LIMIT: '4096' }
  try {
    const acked: string[] = []
    const pad = 'p'.repeat(300)
    let oldest: Buffer | undefined // the first journal with records we saw (oldest generation)
    let simulations = 0
    for (let i = 0; i < 90 && simulations < 2; i++) {
      const jBefore = existsSync(journalPath(home)) ? readFileSync(journalPath(home)) : undefined
      const id = `s-${String(i).padStart(4, '0')}`
      const r = await home.run(['enqueue', '--id', id, '--', `echo ${id} ${pad}`], { env })
      assert.equal(r.code, 0, r.stderr)
      acked.push(id)
      if (!jBefore) continue
      const genBefore = parseJournal(jBefore).generation
      if (!oldest && parseJournal(jBefore).records.length > 0) oldest = jBefore
      const snapGen = snapshotGeneration(home)
      if (snapGen <= genBefore) continue

      // This enqueue compacted. The crash state is: the new snapshot (generation snapGen) is on disk, the journal
      // is still an old one. Jobs whose rows live only in the *current* journal would be lost by our overwrite
      // (that is our surgery, not a crash), so they are not required; everything else is.
      const current = readFileSync(journalPath(home)).toString('latin1')
      const onlyInCurrent = new Set(acked.filter((a) => current.includes(a)))
      const stale = simulations === 0 ? jBefore : oldest!
      const staleGen = parseJournal(stale).generation
      assert.ok(staleGen < snapGen, `stale journal generation ${staleGen} < snapshot generation ${snapGen}`)
      writeFileSync(journalPath(home), stale)

      const ids = await listIds(home, env)
      assertNoDuplicates(ids)
      for (const a of acked) if (!onlyInCurrent.has(a)) assert.ok(ids.includes(a), `acknowledged job ${a} is present after the stale journal (generation ${staleGen}) was put back`)
      for (const x of ids) assert.ok(acked.includes(x) || x.startsWith('calib'), `unexpected job ${x}`)
      // drop the ones our surgery removed, so later checks are exact
      for (const a of onlyInCurrent) if (!ids.includes(a)) acked.splice(acked.indexOf(a), 1)

      const next = `s-after-${simulations}`
      const w = await home.run(['enqueue', '--id', next, '--', `echo ${next}`], { env })
      assert.equal(w.code, 0, `a write after the stale journal succeeds (stderr: ${w.stderr})`)
      acked.push(next)
      const j = assertJournalClean(home)
      assert.equal(j.generation, snapshotGeneration(home), 'the stale journal was reset to the snapshot generation')
      const again = await listIds(home, env)
      assertNoDuplicates(again)
      assert.deepEqual([...again].sort(), [...acked].sort(), 'a fresh process sees exactly the acknowledged jobs, none replayed twice')
      simulations++
    }
    assert.equal(simulations, 2, 'with QUEUECTL_JOURNAL_LIMIT=4096, 90 enqueues of 300-byte commands compacted at least twice')
  } finally {
    await home.cleanup()
  }
})

test('crash during compaction: SIGKILL at random moments (>= 50 kills) with a 4 KiB journal limit loses nothing acknowledged', { timeout: 60_000, skip: sqliteOnly }, async (t) => {
  const home = new Home()
  const env = { QUEUECTL_JOURNAL_LIMIT: '4096' }
  try {
    const clock = new KillClock(2 * (await calibrate(home, env)), 0.25, 0.5, 1.5)
    const acked = new Set<string>(['calib-0', 'calib-1', 'calib-2'])
    const attempted = new Set<string>(acked)
    const commandOf = new Map<string, string>()
    let kills = 0
    let runs = 0
    let ackedCalls = 0
    const firstGen = snapshotGeneration(home)

    // A long-lived worker replays across compactions too; it is SIGKILLed and restarted now and then.
    await home.ok(['config', 'set', 'backoff_base', '0'], { env })
    let worker = startCli(home, ['worker', 'run'], { env })
    let workerKills = 0
    let stop = false
    const workerChaos = (async () => {
      while (!stop) {
        await new Promise((r) => setTimeout(r, rand(300, 900)))
        if (stop) break
        worker.kill()
        await worker.done
        workerKills++
        worker = startCli(home, ['worker', 'run'], { env })
      }
    })()

    let next = 0
    await lanes(4, async () => {
      while ((kills < 55 || ackedCalls < 25) && runs < 250) {
        const n = next++
        runs++
        let r: Timed
        const ids: string[] = []
        if (n % 3 === 0) {
          // bulk: one transaction of ~3 KB, close to the limit on its own
          const lines = []
          for (let k = 0; k < 6; k++) {
            const id = `c-${n}-${k}`
            ids.push(id)
            commandOf.set(id, `echo ${id} ${'b'.repeat(400)}`)
            lines.push(JSON.stringify({ id, command: commandOf.get(id) }))
          }
          ids.forEach((id) => attempted.add(id))
          r = await runKilledAfter(home, ['enqueue', '--file', '-'], clock.next(), { env, input: lines.join('\n') + '\n' })
        } else {
          const id = `c-${n}`
          ids.push(id)
          attempted.add(id)
          commandOf.set(id, `echo ${id} ${'s'.repeat(200)}`)
          r = await runKilledAfter(home, ['enqueue', '--id', id, '--', commandOf.get(id)!], clock.next(), { env })
        }
        clock.note(r)
        if (r.signal === 'SIGKILL') kills++
        else assert.equal(r.code, 0, `an enqueue that was not killed must succeed (stderr: ${r.stderr})`)
        if (r.code === 0) ackedCalls++, ids.forEach((id) => acked.add(id))
      }
    })
    stop = true
    await workerChaos
    worker.kill()
    await worker.done
    const compactions = snapshotGeneration(home) - firstGen

    t.diagnostic(`${runs} enqueue calls, ${kills} SIGKILLed, ${ackedCalls} acknowledged (${acked.size - 3} jobs), ${workerKills} worker kills, ${compactions} compactions seen`)
    assert.ok(kills >= 50, `at least 50 kills landed (got ${kills} in ${runs} runs)`)
    assert.ok(ackedCalls >= 25, `enough enqueue calls were acknowledged to mean something (got ${ackedCalls})`)
    assert.ok(compactions >= 3, `the 4 KiB limit forced compactions during the run (saw ${compactions})`)

    const jobs = await home.json<any[]>(['list', ...ALL], { env })
    const ids = jobs.map((j) => j.id)
    assertNoDuplicates(ids)
    const missing = [...acked].filter((id) => !ids.includes(id))
    assert.deepEqual(missing, [], `acknowledged jobs lost (${kills} kills, ${workerKills} worker kills, ${compactions} compactions)`)
    for (const j of jobs) {
      assert.ok(attempted.has(j.id), `job ${j.id} was never enqueued`)
      if (commandOf.has(j.id)) assert.equal(j.command, commandOf.get(j.id), `job ${j.id} stored faithfully`)
    }
    // the queue is writable and the journal consistent afterwards
    await home.ok(['enqueue', '--id', 'c-final', '--', 'true'], { env })
    assertJournalClean(home, snapshotGeneration(home))
    assert.ok((await listIds(home, env)).includes('c-final'))
  } finally {
    await home.cleanup()
  }
})

test('concurrent replay: enqueuers, readers and a worker with a 2 KiB journal limit; readers never fail, the count is exact', { timeout: 60_000 }, async (t) => {
  const home = new Home()
  const env = { QUEUECTL_JOURNAL_LIMIT: '2048' }
  try {
    await home.ok(['config', 'set', 'backoff_base', '0'], { env })
    const worker = startCli(home, ['worker', 'run'], { env })
    const expected = new Set<string>()
    let writersDone = false
    const readerFailures: string[] = []
    let reads = 0
    const reader = async (r: number) => {
      let lastCount = 0
      while (!writersDone) {
        const args = r % 2 === 0 ? ['list', ...ALL, '--json'] : ['status', '--json']
        const res = await startCli(home, args, { env }).done
        reads++
        if (res.code !== 0) {
          readerFailures.push(`${args.join(' ')} exited ${res.code}: ${res.stderr.trim()}`)
          continue
        }
        try {
          const doc = JSON.parse(res.stdout)
          if (r % 2 === 0) {
            const ids = doc.map((j: any) => j.id)
            if (new Set(ids).size !== ids.length) readerFailures.push('list --json returned a duplicate id')
            if (ids.length < lastCount) readerFailures.push(`list went backwards: ${lastCount} -> ${ids.length}`)
            lastCount = ids.length
          } else {
            const total = Object.values(doc.counts as Record<string, number>).reduce((a, b) => a + b, 0)
            if (total < lastCount) readerFailures.push(`status total went backwards: ${lastCount} -> ${total}`)
            lastCount = total
          }
        } catch (error) {
          readerFailures.push(`${args.join(' ')} printed invalid JSON: ${String(error)}`)
        }
      }
    }
    const writers = lanes(3, async (w) => {
      for (let i = 0; i < 8; i++) {
        if (i % 4 === 3) {
          const lines = [0, 1, 2].map((k) => JSON.stringify({ id: `w${w}-${i}-${k}`, command: `echo ${'r'.repeat(150)}` }))
          const out = await home.ok(['enqueue', '--file', '-'], { env, input: lines.join('\n') })
          assert.equal(out.trim().split('\n').length, 3)
          for (let k = 0; k < 3; k++) expected.add(`w${w}-${i}-${k}`)
        } else {
          await home.ok(['enqueue', '--id', `w${w}-${i}`, '--', `echo ${'r'.repeat(150)}`], { env })
          expected.add(`w${w}-${i}`)
        }
      }
    }).finally(() => (writersDone = true))
    await Promise.all([writers, reader(0), reader(1), reader(2)])

    t.diagnostic(`${expected.size} jobs enqueued while ${reads} reads ran`)
    assert.deepEqual(readerFailures, [])
    assert.ok(reads >= 6, `readers ran concurrently with the writers (${reads} reads)`)
    const ids = await listIds(home, env)
    assertNoDuplicates(ids)
    assert.equal(ids.length, expected.size)
    assert.deepEqual([...ids].sort(), [...expected].sort())

    // the long-lived worker, which replayed across many compactions, ran every job exactly once
    const jobs = await waitFor('every job completed by the worker', async () => {
      const all = await home.json<any[]>(['list', ...ALL], { env })
      return all.every((j) => j.state === 'completed') ? all : undefined
    }, 30_000, 200)
    for (const j of jobs) assert.equal(j.attempts, 1, `job ${j.id} ran once`)
    worker.child.kill('SIGTERM')
    const w = await worker.done
    assert.equal(w.code, 0, `worker exits 0 on SIGTERM (stderr: ${w.stderr})`)
  } finally {
    await home.cleanup()
  }
})

test('durability: 200+ enqueues SIGKILLed at random instants; every one that exited 0 is there', { timeout: 60_000, skip: sqliteOnly }, async (t) => {
  const home = new Home()
  try {
    const clock = new KillClock(3 * (await calibrate(home)))
    const acked = new Set<string>(['calib-0', 'calib-1', 'calib-2'])
    const attempted = new Set<string>(acked)
    let kills = 0
    let next = 0
    const TOTAL = 200
    await lanes(6, async () => {
      while (next < TOTAL) {
        const id = `d-${String(next++).padStart(4, '0')}`
        attempted.add(id)
        const r = await runKilledAfter(home, ['enqueue', '--id', id, '--', `echo ${id}`], clock.next())
        clock.note(r)
        if (r.signal === 'SIGKILL') kills++
        else assert.equal(r.code, 0, `an enqueue that was not killed must succeed (${id}, stderr: ${r.stderr})`)
        if (r.code === 0) {
          assert.equal(r.stdout.trim(), id, 'enqueue prints the id')
          acked.add(id)
        }
      }
    })
    t.diagnostic(`${TOTAL} enqueue calls, ${kills} SIGKILLed, ${acked.size - 3} acknowledged`)
    assert.ok(kills >= 100, `most calls were killed (${kills} of ${TOTAL})`)
    assert.ok(acked.size - 3 >= 15, `enough calls were acknowledged (${acked.size - 3} of ${TOTAL})`)

    const jobs = await home.json<any[]>(['list', ...ALL])
    const ids = jobs.map((j) => j.id)
    assertNoDuplicates(ids)
    const missing = [...acked].filter((id) => !ids.includes(id))
    assert.deepEqual(missing, [], `acknowledged enqueues lost (${kills} kills, ${acked.size - 3} acknowledged)`)
    for (const j of jobs) {
      assert.ok(attempted.has(j.id), `job ${j.id} was never enqueued`)
      if (j.id.startsWith('d-')) assert.equal(j.command, `echo ${j.id}`)
    }
    await home.ok(['enqueue', '--id', 'd-final', '--', 'true'])
    assertJournalClean(home, snapshotGeneration(home))
    assert.ok((await listIds(home)).includes('d-final'))
  } finally {
    await home.cleanup()
  }
})

test('a record a reader applied and that was then cut back (its fsync failed) and replaced is not kept by that reader', { timeout: 60_000, skip: sqliteOnly }, async () => {
  // A writer whose fdatasync fails truncates its record away; a reader that had already applied it must notice,
  // even when the next writer's (longer) record now covers the same bytes, and reload rather than stay misaligned.
  const { openQueue } = await import('../queuectl.ts')
  const home = new Home()
  try {
    await home.ok(['enqueue', '--id', 'base', '--', 'true'])
    const journal = join(home.dir, 'queue.db.journal')
    const before = readFileSync(journal).length
    await home.ok(['enqueue', '--id', 'ghost', '--', 'true'])
    const reader = await openQueue(home.dir) // a long-lived reader (a dashboard, a logs --follow) sees "ghost"
    try {
      assert.deepEqual((await reader.listJobs()).map((j) => j.id).sort(), ['base', 'ghost'])
      truncateSync(journal, before) // what the failed writer does: its record is gone, nobody was told it committed
      await home.ok(['enqueue', '--id', 'real', '--', `echo ${'x'.repeat(200)}`]) // lands where "ghost" was, longer
      assert.deepEqual((await reader.listJobs()).map((j) => j.id).sort(), ['base', 'real'], 'the reader dropped the cut record and applied the new one')
    } finally {
      reader.close()
    }
  } finally {
    await home.cleanup()
  }
})

test('a read cannot write: through the API every write in a read is refused, and no process parts from the others', { timeout: 60_000, skip: sqliteOnly }, async () => {
  // Before, Queue.query() let `WITH … DELETE` through a keyword check: it ran in memory only, unjournaled, and the
  // next compaction by that process wrote its view to queue.db for everyone.
  const home = new Home()
  try {
    await home.ok(['enqueue', '--id', 'kept', '--', 'true'])
    const generation = snapshotGeneration(home)
    const script = `
      import { openQueue } from ${JSON.stringify(pathToFileURL(CLI).href)}
      const queue = await openQueue(process.env.QUEUECTL_HOME)
      const out = { hasQuery: 'query' in queue, refused: [], passed: [] }
      const attempt = async (name, fn) => {
        try { await queue.storage.read(fn); out.passed.push(name) } catch (error) { out.refused.push([name, error.message]) }
      }
      for (const sql of ['WITH x AS (SELECT 1) DELETE FROM jobs', 'DELETE FROM jobs RETURNING id', "UPDATE jobs SET command = 'rm -rf ~'",
        "INSERT INTO config (key, value) VALUES ('max_retries', 9)", 'PRAGMA user_version = 99', 'CREATE TABLE t (x)', 'VACUUM',
        'BEGIN', 'COMMIT', 'SAVEPOINT s', 'SELECT 1; DELETE FROM jobs']) {
        await attempt(sql, (s) => s.all(sql))
      }
      await attempt('run()', (s) => s.run('DELETE FROM jobs'))
      await attempt('query_only off', async (s) => { await s.all('PRAGMA query_only = 0'); await s.all('DELETE FROM jobs') })
      out.seen = (await queue.listJobs()).map((j) => j.id)
      await queue.setConfig('max_retries', '5') // with QUEUECTL_JOURNAL_LIMIT=1 this write compacts: this memory becomes queue.db
      queue.close()
      console.log(JSON.stringify(out))`
    const r = await runProgram(process.execPath, ['--input-type=module', '-e', script], { env: { ...home.env, QUEUECTL_JOURNAL_LIMIT: '1' } })
    assert.equal(r.code, 0, r.stderr)
    const out = JSON.parse(r.stdout)
    // Only the first statement of a string is compiled and run: the DELETE smuggled in after a SELECT never runs.
    assert.deepEqual(out.passed, ['SELECT 1; DELETE FROM jobs'], 'every write was refused')
    for (const [name, message] of out.refused) assert.match(message, name === 'run()' ? /outside a write transaction/ : /a read cannot write/, name)
    assert.deepEqual(out.seen, ['kept'], 'the process that tried saw no change')
    assert.ok(snapshotGeneration(home) > generation, 'that process compacted')
    assert.deepEqual(await listIds(home), ['kept'], 'and every other process agrees')
    assert.match(await home.ok(['config', 'get', 'max_retries']), /\b5\b/)
    assert.deepEqual((await home.json(['show', 'kept'])).command, 'true')
    assert.equal(out.hasQuery, false, 'Queue has no raw-SQL query()')
  } finally {
    await home.cleanup()
  }
})
