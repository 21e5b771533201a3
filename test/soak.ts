// Chaos soak (issue 6): many workers, concurrent enqueuers, and a worker killed with SIGKILL (together
// with its running job's process group) about once a second. At the end it checks SPEC's promises:
//   - no acknowledged job is lost (every id an `enqueue` printed exists);
//   - every job is `completed` or, by its rules, `dead`; none is pending, failed or processing;
//   - each attempt ran at most once, and a job's side effect appears more than once only for attempts
//     that its history marks `worker lost`.
//
//   npm run soak -- --seconds 60 [--jobs 2000] [--workers 8] [--enqueuers 4] [--json]
//
// `runSoak()` is also called by test/soak.test.ts (a short run inside `npm test`).
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { Home, isAlive, type RunResult } from './helpers.ts'

export interface SoakOptions {
  /** How long workers are killed for (the chaos period), seconds. */
  seconds?: number
  /** Total jobs enqueued (spread over about 60 % of the chaos period). */
  jobs?: number
  workers?: number
  enqueuers?: number
  /** Progress lines go here (default: nowhere). */
  log?: (line: string) => void
  /** Deadline for the queue to drain after the chaos, ms. */
  drainTimeoutMs?: number
}

export interface SoakFigures {
  jobs: number
  enqueueCalls: number
  enqueueErrors: number
  kills: number
  killsWithJob: number
  workerStarts: number
  completed: number
  dead: number
  /** Jobs that have at least one attempt marked `worker lost` in their history. */
  recovered: number
  /** Attempts marked `worker lost`. */
  lostAttempts: number
  /** Extra side-effect lines of jobs whose command always succeeds (re-runs after a lost worker). */
  duplicates: number
  /** Side-effect lines in total (= attempts whose shell got as far as the first command). */
  sideEffectLines: number
  /** Seconds: whole run, chaos period, drain after the chaos. */
  seconds: number
  chaosSeconds: number
  drainSeconds: number
}

export interface SoakResult {
  figures: SoakFigures
  violations: string[]
}

type Kind = 'ok' | 'flaky' | 'fail'
const MAX_RETRIES = 5

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))
const shq = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`

/** Children of `pid` (all threads), from /proc. */
function childrenOf(pid: number): number[] {
  const out: number[] = []
  try {
    for (const task of readdirSync(`/proc/${pid}/task`)) {
      try {
        const text = readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').trim()
        if (text) for (const c of text.split(/\s+/)) out.push(Number(c))
      } catch {
        /* thread gone */
      }
    }
  } catch {
    /* process gone */
  }
  return out
}

/** Process group of `pid` (field 5 of /proc/<pid>/stat), or null. */
function pgidOf(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return Number(fields[2])
  } catch {
    return null
  }
}

function killQuietly(target: number, signal: NodeJS.Signals = 'SIGKILL'): boolean {
  try {
    process.kill(target, signal)
    return true
  } catch {
    return false
  }
}

function firstLine(r: RunResult): string {
  return (r.stderr.trim().split('\n')[0] || `exit ${r.code} signal ${r.signal}`).slice(0, 300)
}

async function mapLimit<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length)
  let next = 0
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const i = next++
        results[i] = await fn(items[i])
      }
    }),
  )
  return results
}

export async function runSoak(options: SoakOptions = {}): Promise<SoakResult> {
  const seconds = options.seconds ?? 60
  const totalJobs = options.jobs ?? 2000
  const workers = options.workers ?? 8
  const enqueuers = options.enqueuers ?? 4
  const log = options.log ?? (() => {})
  const drainTimeoutMs = options.drainTimeoutMs ?? 60_000 + totalJobs * 40

  const t0 = Date.now()
  const violations: string[] = []
  const home = new Home('queuectl-soak-')
  const sideDir = mkdtempSync(join(tmpdir(), 'queuectl-soak-side-'))
  const sideFile = join(sideDir, 'side-effects.txt')
  writeFileSync(sideFile, '')

  const kinds = new Map<string, Kind>()
  const acknowledged = new Set<string>()
  const figures: SoakFigures = {
    jobs: 0, enqueueCalls: 0, enqueueErrors: 0, kills: 0, killsWithJob: 0, workerStarts: 0,
    completed: 0, dead: 0, recovered: 0, lostAttempts: 0, duplicates: 0, sideEffectLines: 0,
    seconds: 0, chaosSeconds: 0, drainSeconds: 0,
  }
  const pending = new Set<Promise<unknown>>()
  const track = <T>(p: Promise<T>): Promise<T> => {
    pending.add(p)
    p.finally(() => pending.delete(p)).catch(() => {})
    return p
  }

  // Jobs of the whole soak together keep the workers busy for about 60 % of the chaos period.
  const meanSleep = Math.min(1, Math.max(0.02, (0.6 * seconds * workers) / totalJobs))
  const commandFor = (kind: Kind): string => {
    const append = `echo "$QUEUECTL_JOB_ID $QUEUECTL_ATTEMPT" >> ${shq(sideFile)}`
    const nap = `sleep ${(Math.random() * 2 * meanSleep).toFixed(3)}`
    if (kind === 'ok') return `${append}; ${nap}`
    if (kind === 'flaky') return `${append}; ${nap}; [ "$QUEUECTL_ATTEMPT" -ge 2 ] || exit 3`
    return `${append}; exit 1`
  }
  const pickKind = (): Kind => {
    const r = Math.random()
    return r < 0.01 ? 'fail' : r < 0.03 ? 'flaky' : 'ok'
  }

  try {
    await home.ok(['config', 'set', 'backoff_base', '0'])
    await home.ok(['config', 'set', 'max_retries', String(MAX_RETRIES)])
    const started = (await home.ok(['worker', 'start', '--count', String(workers)])).trim().split('\n').filter(Boolean)
    figures.workerStarts += started.length
    log(`started ${started.length} workers; ${totalJobs} jobs, ${enqueuers} enqueuers, ${seconds}s of chaos, mean job ${meanSleep.toFixed(3)}s`)

    const chaosStart = Date.now()
    const chaosEnd = chaosStart + seconds * 1000
    const enqueueEnd = chaosStart + seconds * 600

    // ---- enqueuers: bulk batches via `enqueue --file -`, every fourth call a single plain enqueue
    const enqueuer = async (k: number) => {
      const share = Math.floor(totalJobs / enqueuers) + (k < totalJobs % enqueuers ? 1 : 0)
      let n = 0
      let calls = 0
      let callMs = 400
      while (n < share) {
        const remaining = share - n
        const slots = Math.max(1, Math.floor((enqueueEnd - Date.now()) / callMs))
        let batch = Math.max(1, Math.ceil(remaining / slots))
        if (calls % 4 === 3) batch = 1
        batch = Math.min(batch, remaining)
        const specs = Array.from({ length: batch }, (_, i) => {
          const kind = pickKind()
          return { id: `e${k}n${n + i}`, kind, command: commandFor(kind) }
        })
        const began = Date.now()
        let r: RunResult
        if (batch === 1) {
          const s = specs[0]
          r = await home.run(['enqueue', '--id', s.id, '--max-retries', String(MAX_RETRIES), '--', s.command])
        } else {
          const input = specs.map((s) => JSON.stringify({ id: s.id, command: s.command, max_retries: MAX_RETRIES })).join('\n') + '\n'
          r = await home.run(['enqueue', '--file', '-'], { input })
        }
        calls++
        figures.enqueueCalls++
        callMs = 0.7 * callMs + 0.3 * (Date.now() - began)
        if (r.code === 0) {
          const printed = r.stdout.trim().split('\n').filter(Boolean)
          const expected = specs.map((s) => s.id)
          if (printed.join(',') !== expected.join(',')) {
            violations.push(`enqueue printed ${JSON.stringify(printed.slice(0, 5))}... for ids ${JSON.stringify(expected.slice(0, 5))}...`)
          }
          for (const s of specs) {
            kinds.set(s.id, s.kind)
            acknowledged.add(s.id)
          }
          n += batch
        } else {
          figures.enqueueErrors++
          violations.push(`enqueue of ${batch} job(s) (${specs[0].id}...) failed under load: exit ${r.code}: ${firstLine(r)}`)
          // Ids of a failed call are not acknowledged; do not reuse them (the call may have written them).
          for (const s of specs) kinds.set(s.id, s.kind)
          n += batch
        }
      }
    }
    const enqueueDone = Promise.all(Array.from({ length: enqueuers }, (_, k) => enqueuer(k)))

    // ---- the killer: about once a second, SIGKILL a random live worker and its job's process group.
    // Worker pids come from `status --json`, polled in the background (under load one call can take a second
    // or more, which would otherwise slow the kill rate); whether a worker runs a job is read from /proc at the
    // moment of the kill, since the status may be a little old.
    let latestWorkers: any[] = []
    const poller = async () => {
      while (Date.now() < chaosEnd) {
        const st = await home.run(['status', '--json'])
        if (st.code !== 0) violations.push(`status --json failed during the soak: exit ${st.code}: ${firstLine(st)}`)
        else {
          try {
            latestWorkers = JSON.parse(st.stdout).workers
          } catch {
            violations.push(`status --json printed invalid JSON: ${st.stdout.slice(0, 200)}`)
          }
        }
        await sleep(200)
      }
    }
    const isOurWorker = (pid: number): boolean => {
      try {
        const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')
        const environ = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0')
        return cmdline.includes('worker') && cmdline.includes('run') && (environ.includes(`QUEUECTL_HOME=${home.dir}`) || cmdline.includes(home.dir))
      } catch {
        return false
      }
    }
    const killer = async () => {
      let next = chaosStart + 500 + Math.random() * 1000
      for (;;) {
        await sleep(Math.max(0, next - Date.now()))
        if (Date.now() >= chaosEnd) break
        next += 500 + Math.random() * 1000
        const live = latestWorkers.filter((w) => Number.isInteger(w.pid) && isAlive(w.pid) && isOurWorker(w.pid))
        // Prefer a worker that is running a job: that is the interesting kill.
        const busy = live.filter((w) => childrenOf(w.pid).length > 0)
        const pool = busy.length > 0 && Math.random() < 0.85 ? busy : live
        if (pool.length === 0) continue
        const victim = pool[Math.floor(Math.random() * pool.length)]
        const pid: number = victim.pid
        // Read the job's process group before the worker dies (its children are reparented after).
        const groups = new Set<number>()
        for (const child of childrenOf(pid)) {
          const pgid = pgidOf(child)
          if (pgid && pgid > 1 && pgid !== pid && pgid !== process.pid) groups.add(pgid)
        }
        // The worker first: if the job died first, the worker would record an ordinary failure.
        if (!killQuietly(pid)) continue
        for (const g of groups) killQuietly(-g)
        latestWorkers = latestWorkers.filter((w) => w.pid !== pid)
        figures.kills++
        if (groups.size > 0) figures.killsWithJob++
        log(`t=${((Date.now() - chaosStart) / 1000).toFixed(1)}s killed worker ${pid}${groups.size ? ` and its job's process group ${[...groups].join(',')}` : ' (idle)'}`)
        track(
          home.run(['worker', 'start']).then((r) => {
            if (r.code === 0) figures.workerStarts++
            else violations.push(`worker start (replacement) failed: exit ${r.code}: ${firstLine(r)}`)
          }),
        )
      }
    }
    await Promise.all([enqueueDone, killer(), poller()])
    figures.chaosSeconds = (Date.now() - chaosStart) / 1000
    await Promise.all([...pending])
    figures.jobs = acknowledged.size
    log(`chaos over after ${figures.chaosSeconds.toFixed(1)}s: ${figures.jobs} jobs enqueued, ${figures.kills} kills; draining`)

    // ---- drain: wait until nothing is pending / failed / processing
    const drainStart = Date.now()
    let counts: Record<string, number> = {}
    let drained = false
    while (Date.now() - drainStart < drainTimeoutMs) {
      const st = await home.run(['status', '--json'])
      if (st.code === 0) {
        try {
          counts = JSON.parse(st.stdout).counts
          if ((counts.pending ?? 0) + (counts.failed ?? 0) + (counts.processing ?? 0) === 0) {
            drained = true
            break
          }
        } catch {
          /* checked below */
        }
      }
      await sleep(500)
    }
    figures.drainSeconds = (Date.now() - drainStart) / 1000
    if (!drained) violations.push(`queue did not drain within ${drainTimeoutMs / 1000}s after the chaos: counts ${JSON.stringify(counts)}`)
    log(`drained in ${figures.drainSeconds.toFixed(1)}s: ${JSON.stringify(counts)}`)

    // ---- verify
    const list = await home.run(['list', '--limit', '1000000', '--json'])
    if (list.code !== 0) throw new Error(`list --json failed: exit ${list.code}: ${firstLine(list)}`)
    let listed: any[]
    try {
      listed = JSON.parse(list.stdout)
    } catch (error) {
      violations.push(`list --limit 1000000 --json (exit 0) printed invalid JSON, ${Buffer.byteLength(list.stdout)} bytes: ${(error as Error).message}; cannot verify the jobs`)
      return { figures, violations }
    }
    const jobs = new Map<string, any>()
    for (const j of listed) jobs.set(j.id, j)

    const lines = new Map<string, number[]>()
    for (const line of readFileSync(sideFile, 'utf8').split('\n')) {
      if (!line) continue
      figures.sideEffectLines++
      const m = /^(\S+) (\d+)$/.exec(line)
      if (!m) {
        violations.push(`malformed side-effect line ${JSON.stringify(line)}`)
        continue
      }
      const arr = lines.get(m[1]) ?? []
      arr.push(Number(m[2]))
      lines.set(m[1], arr)
    }

    for (const id of acknowledged) if (!jobs.has(id)) violations.push(`job ${id} was enqueued (exit 0, id printed) but is missing`)
    for (const id of jobs.keys()) if (!kinds.has(id)) violations.push(`job ${id} exists but was never enqueued by the soak`)
    for (const id of lines.keys()) if (!jobs.has(id)) violations.push(`side effect of ${id}, which is not a stored job`)

    // Jobs whose history we need: anything but "ok job, completed on its only attempt, one side effect".
    const needHistory = [...jobs.values()].filter((j) => {
      const l = lines.get(j.id) ?? []
      return !(kinds.get(j.id) === 'ok' && j.state === 'completed' && j.attempts === 1 && l.length === 1 && l[0] === 1)
    })
    const histories = new Map<string, any[]>()
    await mapLimit(needHistory, 4, async (j) => {
      const r = await home.run(['show', j.id, '--json'])
      if (r.code !== 0) {
        violations.push(`show ${j.id} --json failed: exit ${r.code}: ${firstLine(r)}`)
        return
      }
      let full: any
      try {
        full = JSON.parse(r.stdout)
      } catch (error) {
        violations.push(`show ${j.id} --json printed invalid JSON: ${(error as Error).message}`)
        return
      }
      jobs.set(j.id, full)
      histories.set(j.id, Array.isArray(full.history) ? full.history : [])
    })

    const isLost = (h: any) => typeof h?.error === 'string' && /worker lost/i.test(h.error)
    for (const job of jobs.values()) {
      const id: string = job.id
      const kind = kinds.get(id)
      if (!kind) continue
      const fileAttempts = lines.get(id) ?? []
      const bad = (what: string) => violations.push(`job ${id} (${kind}, ${job.state}, attempts ${job.attempts}): ${what}`)
      if (job.state === 'completed') figures.completed++
      else if (job.state === 'dead') figures.dead++
      else bad(`ended ${job.state}, expected completed or dead`)
      if (job.max_retries !== MAX_RETRIES) bad(`max_retries ${job.max_retries}, enqueued with ${MAX_RETRIES}`)

      const seen = new Set<number>()
      for (const a of fileAttempts) {
        if (seen.has(a)) bad(`attempt ${a} ran more than once (side effect ${fileAttempts.filter((x) => x === a).length} times)`)
        seen.add(a)
        if (a < 1 || a > job.attempts) bad(`side effect of attempt ${a}, but the job has ${job.attempts} attempts`)
      }
      if (kind === 'ok' && fileAttempts.length > 1) figures.duplicates += fileAttempts.length - 1

      const history = histories.get(id)
      if (!history) continue // the simple case, fully checked by the filter above
      const byAttempt = new Map<number, any>()
      for (const h of history) {
        if (byAttempt.has(h.attempt)) bad(`history has attempt ${h.attempt} twice`)
        byAttempt.set(h.attempt, h)
      }
      if (history.length !== job.attempts) bad(`history has ${history.length} entries for ${job.attempts} attempts`)
      const lost = history.filter(isLost)
      figures.lostAttempts += lost.length
      if (lost.length > 0) figures.recovered++
      for (const h of history) {
        if (!isLost(h) && h.finished_at == null) bad(`attempt ${h.attempt} never finished: ${JSON.stringify(h)}`)
        // A finished attempt that was not lost ran its command, and the command's first act is the append.
        if (!isLost(h) && !seen.has(h.attempt)) bad(`attempt ${h.attempt} ended (${h.error ?? 'exit ' + h.exit_code}) but left no side effect`)
      }
      // Re-runs: every side effect but the one of the deciding attempt must belong to a failed attempt,
      // and for a job whose command succeeds, only to an attempt marked `worker lost`.
      const last = byAttempt.get(job.attempts)
      for (const a of fileAttempts) {
        const h = byAttempt.get(a)
        if (!h) {
          bad(`side effect of attempt ${a}, which is not in the history`)
          continue
        }
        if (h === last && job.state === 'completed') continue
        const expectedFailure = (kind === 'flaky' && a === 1 && h.exit_code === 3) || (kind === 'fail' && h.exit_code === 1)
        if (!isLost(h) && !expectedFailure) bad(`attempt ${a} ran again although its history says ${JSON.stringify(h)}`)
      }
      if (job.state === 'completed') {
        if (kind === 'fail') bad('completed, but its command always exits 1')
        if (!last || last.exit_code !== 0 || last.error) bad(`completed, but its last attempt is ${JSON.stringify(last)}`)
        if (kind === 'flaky' && job.attempts < 2) bad('completed on attempt 1, but that attempt exits 3')
        for (const h of history) if (h !== last && h.exit_code === 0 && !h.error) bad(`attempt ${h.attempt} succeeded but the job ran again`)
      }
      if (job.state === 'dead') {
        if (job.attempts !== 1 + MAX_RETRIES) bad(`dead after ${job.attempts} attempts, expected ${1 + MAX_RETRIES}`)
        for (const h of history) {
          const allowed = isLost(h) || (kind === 'fail' && h.exit_code === 1) || (kind === 'flaky' && h.attempt === 1 && h.exit_code === 3)
          if (!allowed) bad(`dead, but attempt ${h.attempt} is ${JSON.stringify(h)}`)
        }
      }
    }
  } finally {
    await home.cleanup()
    rmSync(sideDir, { recursive: true, force: true })
    figures.seconds = (Date.now() - t0) / 1000
  }
  return { figures, violations }
}

// ---- command line
function parseArgs(argv: string[]): SoakOptions & { json: boolean } {
  const out: SoakOptions & { json: boolean } = { json: false }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    const [flag, inline] = a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined]
    const value = () => {
      const v = inline ?? argv[++i]
      const n = Number(v)
      if (v === undefined || !Number.isFinite(n) || n <= 0) throw new Error(`${flag} needs a positive number`)
      return n
    }
    if (flag === '--seconds') out.seconds = value()
    else if (flag === '--jobs') out.jobs = Math.round(value())
    else if (flag === '--workers') out.workers = Math.round(value())
    else if (flag === '--enqueuers') out.enqueuers = Math.round(value())
    else if (flag === '--json') out.json = true
    else if (flag === '--help' || flag === '-h') {
      console.log('usage: npm run soak -- [--seconds 60] [--jobs 2000] [--workers 8] [--enqueuers 4] [--json]')
      process.exit(0)
    } else throw new Error(`unknown option ${a}`)
  }
  return out
}

async function main() {
  let opts: ReturnType<typeof parseArgs>
  try {
    opts = parseArgs(process.argv.slice(2))
  } catch (e) {
    console.error(`soak: ${(e as Error).message}`)
    process.exit(2)
  }
  if (!existsSync(new URL('../dist/queuectl.js', import.meta.url))) {
    console.error('soak: dist/queuectl.js is missing: run `npm run build` first')
    process.exit(2)
  }
  const { json, ...options } = opts
  const result = await runSoak({ ...options, log: json ? undefined : (l) => console.log(`  ${l}`) })
  if (json) {
    console.log(JSON.stringify(result, null, 2))
  } else {
    const f = result.figures
    console.log('')
    console.log(`jobs        ${f.jobs}  (${f.completed} completed, ${f.dead} dead; ${f.enqueueCalls} enqueue calls, ${f.enqueueErrors} failed)`)
    console.log(`kills       ${f.kills}  (${f.killsWithJob} while running a job; ${f.workerStarts} workers started in all)`)
    console.log(`recovered   ${f.recovered} jobs  (${f.lostAttempts} attempts marked "worker lost")`)
    console.log(`duplicates  ${f.duplicates}  (re-runs of always-succeeding jobs, all after a lost worker; ${f.sideEffectLines} side effects in all)`)
    console.log(`seconds     ${f.seconds.toFixed(1)}  (chaos ${f.chaosSeconds.toFixed(1)}, drain ${f.drainSeconds.toFixed(1)})`)
    console.log(`violations  ${result.violations.length}`)
    for (const v of result.violations.slice(0, 50)) console.log(`  - ${v}`)
    if (result.violations.length > 50) console.log(`  ... and ${result.violations.length - 50} more`)
  }
  process.exit(result.violations.length === 0 ? 0 : 1)
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((e) => {
    console.error(`soak: ${e instanceof Error ? e.stack : e}`)
    process.exit(1)
  })
}
