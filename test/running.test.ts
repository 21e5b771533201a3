// Issue 3, "Running jobs well": kill-timeouts, output logs, attempt history, metrics, retention,
// and priority / scheduling end to end. Real CLI, real workers, a fresh home per test.
import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import type { ChildProcess } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Home, groupMembers, isAlive, waitFor } from './helpers.ts'

// ---------------------------------------------------------------------------------------------
// Local helpers

/** A fresh home plus a scratch folder for the jobs' own files (pid files, counters, gates). */
function makeHome(): { home: Home; work: string } {
  const home = new Home('queuectl-running-')
  const work = join(home.dir, 'work')
  mkdirSync(work)
  return { home, work }
}

/** `queuectl enqueue [flags] -- <command>` run from `cwd`; returns the id it printed. */
async function enqueue(home: Home, cwd: string, flags: string[], command: string): Promise<string> {
  const out = await home.ok(['enqueue', ...flags, '--', command], { cwd })
  const id = out.trim()
  assert.ok(id.length > 0 && !id.includes('\n'), `enqueue printed one id, got ${JSON.stringify(out)}`)
  return id
}

interface Spawned {
  proc: ChildProcess
  out: () => string
  err: () => string
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  stop: () => void
}

/** Spawns a long-running CLI process, collecting its output (so its pipes never fill up). */
function spawnCli(home: Home, args: string[], cwd?: string): Spawned {
  const proc = home.spawn(args, cwd ? { cwd } : {})
  let out = ''
  let err = ''
  proc.stdout!.setEncoding('utf8').on('data', (d) => (out += d))
  proc.stderr!.setEncoding('utf8').on('data', (d) => (err += d))
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    proc.on('close', (code, signal) => resolve({ code, signal }))
  })
  return {
    proc,
    out: () => out,
    err: () => err,
    exited,
    stop: () => {
      if (proc.exitCode === null && proc.signalCode === null && proc.pid && isAlive(proc.pid)) proc.kill('SIGKILL')
    },
  }
}

/** A foreground `worker run` (no --drain), waited for until `status` lists it. */
async function startWorker(home: Home): Promise<Spawned> {
  const w = spawnCli(home, ['worker', 'run'])
  await waitFor('the worker to register', async () => {
    if (w.proc.exitCode !== null) throw new Error(`worker exited ${w.proc.exitCode}: ${w.err()}`)
    const st = await home.json(['status'])
    return st.workers.some((x: any) => x.pid === w.proc.pid)
  }, 15_000, 200)
  return w
}

/** `worker run --drain` to completion. */
async function drain(home: Home, timeoutMs = 40_000): Promise<void> {
  const r = await home.run(['worker', 'run', '--drain'], { timeoutMs })
  assert.equal(r.code, 0, `worker run --drain exited ${r.code} (signal ${r.signal}); stderr: ${r.stderr}`)
}

/** Like helpers' waitForState, polling less often: each poll is a CLI process, and the tests run side by side. */
function waitState(home: Home, id: string, state: string, timeoutMs = 20_000): Promise<any> {
  return waitFor(`job ${id} to be ${state}`, async () => {
    const job = await home.job(id)
    return job.state === state ? job : undefined
  }, timeoutMs, 200)
}

/** End of a test: stop the home's workers (so their jobs end too), then the test's own processes, then remove the home. */
async function finish(home: Home, ...procs: (Spawned | undefined)[]): Promise<void> {
  try {
    await home.run(['worker', 'stop', '--force', '--timeout', '10'], { timeoutMs: 20_000 })
  } finally {
    for (const p of procs) p?.stop()
    await home.cleanup()
  }
}

/** Resolves with the process' exit, or fails after `ms`. */
async function exitWithin(p: Spawned, ms: number, what: string): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not exit within ${ms} ms; stdout: ${p.out().slice(-500)}; stderr: ${p.err()}`)), ms)
  })
  try {
    return await Promise.race([p.exited, timeout])
  } finally {
    clearTimeout(timer)
  }
}

const ms = (iso: string): number => {
  const t = Date.parse(iso)
  assert.ok(Number.isFinite(t), `not a timestamp: ${iso}`)
  return t
}

const readPids = (file: string): number[] =>
  existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean).map(Number) : []

const logFile = (home: Home, id: string) => join(home.dir, 'logs', `${id}.log`)

const HEADER = /^=== attempt \d+ /

// ---------------------------------------------------------------------------------------------

describe('running jobs well (issue 3)', { concurrency: true }, () => {
  // ----- Timeouts that kill ----------------------------------------------------------------------

  test('--timeout kills the whole process group, including a background grandchild; then retry, then DLQ', async () => {
    const { home, work } = makeHome()
    let worker: Spawned | undefined
    try {
      await home.ok(['config', 'set', 'backoff_base', '0'])
      const pidFile = join(work, 'child.pid')
      const id = await enqueue(home, work, ['--id', 'tk', '--timeout', '1', '--max-retries', '1'],
        `sleep 30 & echo $! >> ${pidFile}; wait`)
      assert.equal(id, 'tk')
      assert.equal((await home.job(id)).timeout, 1)
      worker = spawnCli(home, ['worker', 'run', '--drain'])

      // attempt 1 starts a grandchild (`sleep 30`, which would otherwise live on for 30 s)...
      const [pid1] = await waitFor('attempt 1 to start its background child', () => {
        const pids = readPids(pidFile)
        return pids.length >= 1 ? pids : undefined
      }, 15_000)
      // ...which is dead soon after the 1 s timeout (not polled for "alive" first: a loaded machine may miss that 1 s window)
      await waitFor(`grandchild ${pid1} of attempt 1 to be killed`, () => !isAlive(pid1), 8_000)

      assert.equal((await exitWithin(worker, 20_000, 'worker run --drain')).code, 0)
      const job = await home.job(id)
      assert.equal(job.state, 'dead')
      assert.equal(job.attempts, 2, 'the timed-out attempt was retried once (max_retries 1), then dead')
      assert.equal(job.last_error, 'timed out after 1s')
      assert.equal(job.exit_code, null, 'a job stopped by a signal has exit_code null')
      assert.equal(job.history.length, 2)
      for (const h of job.history) {
        assert.equal(h.error, 'timed out after 1s')
        assert.ok(h.duration_ms >= 950, `a timed-out attempt ran ~1 s, got ${h.duration_ms} ms`)
        assert.ok(h.duration_ms < 10_000, `a timed-out attempt was stopped promptly, got ${h.duration_ms} ms`)
      }
      const pids = readPids(pidFile)
      assert.equal(pids.length, 2, 'each attempt started one background child')
      await waitFor(`grandchild ${pids[1]} of attempt 2 to be killed`, () => !isAlive(pids[1]), 8_000)

      const dlq = await home.json(['dlq', 'list'])
      assert.deepEqual(dlq.map((j: any) => j.id), ['tk'])
    } finally {
      await finish(home, worker)
    }
  })

  test('a job that ignores SIGTERM is still killed (SIGKILL after the grace period)', async () => {
    const { home, work } = makeHome()
    let worker: Spawned | undefined
    try {
      const shPid = join(work, 'sh.pid')
      const childPid = join(work, 'child.pid')
      const id = await enqueue(home, work, ['--id', 'stubborn', '--timeout', '1', '--max-retries', '0'],
        `trap "" TERM; echo $$ > ${shPid}; sleep 30 & echo $! > ${childPid}; wait; echo survived > ${work}/survived`)
      worker = spawnCli(home, ['worker', 'run', '--drain'])
      const pids = await waitFor('the stubborn job to start', () => {
        const p = [...readPids(shPid), ...readPids(childPid)]
        return p.length === 2 ? p : undefined
      }, 15_000)
      assert.equal((await exitWithin(worker, 20_000, 'worker run --drain')).code, 0)
      const job = await home.job(id)
      assert.equal(job.state, 'dead')
      assert.equal(job.last_error, 'timed out after 1s')
      assert.equal(job.exit_code, null)
      assert.equal(job.history.length, 1)
      assert.equal(job.history[0].signal, 'SIGKILL', 'SIGTERM was ignored, so the job ended by SIGKILL')
      for (const pid of pids) await waitFor(`pid ${pid} of the stubborn job to be dead`, () => !isAlive(pid), 5_000)
      assert.equal(existsSync(join(work, 'survived')), false, 'the shell never got past wait')
    } finally {
      await finish(home, worker)
    }
  })

  test('config job_timeout applies to jobs without their own timeout; a job\'s own timeout wins', async () => {
    const { home, work } = makeHome()
    try {
      await home.ok(['config', 'set', 'job_timeout', '1'])
      const pidFile = join(work, 'child.pid')
      const g = await enqueue(home, work, ['--id', 'global', '--max-retries', '0'], `sleep 30 & echo $! > ${pidFile}; wait`)
      const own = await enqueue(home, work, ['--id', 'own', '--timeout', '6', '--max-retries', '0'], 'sleep 2')
      const before = await home.job(g)
      assert.ok(before.timeout === null || before.timeout === 0, `no own timeout stored, got ${before.timeout}`)
      await drain(home)
      const gj = await home.job(g)
      assert.equal(gj.state, 'dead')
      assert.equal(gj.last_error, 'timed out after 1s')
      const [pid] = readPids(pidFile)
      assert.ok(pid > 0, 'the global-timeout job had started its child')
      await waitFor(`child ${pid} to be dead`, () => !isAlive(pid), 5_000)
      const oj = await home.job(own)
      assert.equal(oj.state, 'completed', `the job's own --timeout 6 beats job_timeout 1 (last_error ${oj.last_error})`)
      assert.equal(oj.exit_code, 0)
    } finally {
      await finish(home)
    }
  })

  // ----- No process of an attempt outlives it -------------------------------------------------------

  test('a background child left by a job that exits 0 is stopped before the job is recorded completed', async () => {
    const { home, work } = makeHome()
    try {
      const pgFile = join(work, 'pg')
      const id = await enqueue(home, work, ['--id', 'leaves-child'], `sleep 47 & echo $$ > ${pgFile}; echo started; exit 0`)
      await drain(home)
      const job = await home.job(id)
      assert.equal(job.state, 'completed')
      assert.equal(job.exit_code, 0)
      const [pgid] = readPids(pgFile)
      assert.ok(pgid > 0, 'the job noted its process group')
      // no wait here: the leftovers must be gone before the attempt is recorded
      assert.deepEqual(groupMembers(pgid), [], `nothing of the job's process group ${pgid} is left once it is completed`)
      assert.match(await home.ok(['logs', id]), /started\n=== attempt 1 · exit code 0 · [\d.]+s ===\n$/)
    } finally {
      await finish(home)
    }
  })

  test('a command runs as under sh -c: no arguments, $0 is sh, $$ leads its group, and the gate\'s fd 3 is closed', async () => {
    const { home, work } = makeHome()
    try {
      const id = await enqueue(home, work, [], 'echo "args=$# zero=$0 group=$(cut -d" " -f5 /proc/$$/stat) self=$$"; [ -e /proc/self/fd/3 ] && echo fd3-open; exit 4')
      await drain(home)
      const job = await home.job(id)
      assert.equal(job.exit_code, 4, 'the command\'s own exit code')
      const line = (await home.ok(['logs', id])).split('\n')[1]
      const match = /^args=0 zero=sh group=(\d+) self=(\d+)$/.exec(line)
      assert.ok(match, `the command saw ${JSON.stringify(line)}`)
      assert.equal(match[1], match[2], 'the shell that runs the command leads its process group')
      assert.doesNotMatch(await home.ok(['logs', id]), /fd3-open/, 'the gate\'s pipe is closed before the command runs')
    } finally {
      await finish(home)
    }
  })

  test('a worker killed after its job\'s main process exited but not its background child: recovery kills the whole group', async () => {
    const { home, work } = makeHome()
    let worker: Spawned | undefined
    let child: number | undefined
    try {
      const pgFile = join(work, 'pg')
      const childFile = join(work, 'child')
      const gate = join(work, 'gate')
      const id = await enqueue(home, work, ['--id', 'headless', '--max-retries', '0'],
        `sleep 47 & echo $! > ${childFile}; echo $$ > ${pgFile}; until [ -e ${gate} ]; do sleep 0.05; done; exit 0`)
      worker = spawnCli(home, ['worker', 'run'])
      const [pgid] = await waitFor('the job to start', () => (readPids(pgFile).length ? readPids(pgFile) : undefined), 15_000)
      child = readPids(childFile)[0]
      // what recovery goes by: the command runs only once its slot's note names it, so no wait is needed here
      const notes = readdirSync(join(home.dir, 'wake')).filter((f) => f.endsWith('.pid')).map((f) => readFileSync(join(home.dir, 'wake', f), 'utf8'))
      assert.deepEqual(notes.map((note) => note.trim().split(' ').at(-1)), [id], 'the slot\'s note names the job')
      assert.equal(Number(notes[0].split(' ')[0]), pgid, 'and its process group')
      worker.proc.kill('SIGKILL')
      await worker.exited
      // no queuectl process runs now, so nobody can recover the job before its main process has exited
      writeFileSync(gate, '')
      await waitFor('the job\'s main process to exit', () => !isAlive(pgid), 10_000)
      assert.ok(isAlive(child), 'its background child lives on in the process group')
      await waitFor('the job to be recovered as lost', async () => {
        await home.ok(['status'])
        return (await home.job(id)).last_error === 'worker lost'
      }, 15_000, 200)
      await waitFor(`every process of the lost attempt's group ${pgid} to be killed`, () => groupMembers(pgid).length === 0, 5_000)
    } finally {
      if (child && isAlive(child)) process.kill(child, 'SIGKILL')
      await finish(home, worker)
    }
  })

  // ----- Output logs -------------------------------------------------------------------------------

  test('logs: stdout and stderr captured as produced, per-attempt headers, --follow streams and exits 0', async () => {
    const { home, work } = makeHome()
    let worker: Spawned | undefined
    let follow: Spawned | undefined
    try {
      const gate = join(work, 'gate')
      const id = await enqueue(home, work, ['--id', 'lg'],
        `echo out-line; echo err-line >&2; i=0; while [ ! -f ${gate} ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done; echo done-line; echo done-err >&2`)
      worker = await startWorker(home)

      // written as produced: visible while the job is still processing
      const live = await waitFor('the first lines in `logs` while the job runs', async () => {
        const out = await home.ok(['logs', id])
        return out.includes('out-line') && out.includes('err-line') ? out : undefined
      }, 15_000, 200)
      assert.equal((await home.job(id)).state, 'processing', 'the job is still waiting for its gate')
      assert.match(live, /^=== attempt 1 /m, 'a header line opens attempt 1')
      assert.ok(live.indexOf('=== attempt 1') < live.indexOf('out-line'), `header first: ${live}`)
      assert.ok(!live.includes('done-line'), `the gate is not open yet: ${live}`)
      assert.ok(existsSync(logFile(home, id)), 'the log lives in $QUEUECTL_HOME/logs/<id>.log')

      // --follow streams what is there and what comes, then exits 0 when the job completes
      follow = spawnCli(home, ['logs', id, '--follow'])
      await waitFor('--follow to print the output so far', () => follow!.out().includes('out-line'), 10_000)
      assert.equal(follow.proc.exitCode, null, '--follow is still running while the job runs')
      writeFileSync(gate, '')
      const r = await exitWithin(follow, 15_000, 'logs --follow')
      assert.equal(r.code, 0, `--follow exits 0 for a completed job; stderr: ${follow.err()}`)
      assert.ok(follow.out().includes('done-line'), `--follow printed the later output: ${follow.out()}`)

      const job = await waitState(home, id, 'completed')
      const all = await home.ok(['logs', id])
      for (const s of ['out-line', 'err-line', 'done-line', 'done-err']) assert.ok(all.includes(s), `logs has ${s}`)
      assert.match(all, /^=== attempt 1 · exit code 0 · /m, 'a footer closes attempt 1 with its exit code')
      assert.ok(job.output_tail.includes('done-line'), 'show --json output_tail has the end of the output')
    } finally {
      await finish(home, follow, worker)
    }
  })

  test('logs --follow exits non-zero when the job ends dead', async () => {
    const { home, work } = makeHome()
    let worker: Spawned | undefined
    let follow: Spawned | undefined
    try {
      const gate = join(work, 'gate')
      const id = await enqueue(home, work, ['--id', 'fdead', '--max-retries', '0'],
        `echo going; i=0; while [ ! -f ${gate} ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done; echo failing; exit 3`)
      worker = await startWorker(home)
      await waitFor('the job to be running', () => existsSync(logFile(home, id)) && readFileSync(logFile(home, id), 'utf8').includes('going'), 15_000)
      follow = spawnCli(home, ['logs', id, '--follow'])
      await waitFor('--follow to print the output so far', () => follow!.out().includes('going'), 10_000)
      writeFileSync(gate, '')
      const r = await exitWithin(follow, 15_000, 'logs --follow')
      assert.equal(r.signal, null)
      assert.notEqual(r.code, 0, '--follow of a job that ends dead exits non-zero')
      assert.ok(follow.out().includes('failing'))
      const job = await home.job(id)
      assert.equal(job.state, 'dead')
      assert.equal(job.exit_code, 3)
      assert.equal(job.last_error, 'exit code 3')
    } finally {
      await finish(home, follow, worker)
    }
  })

  test('logs --attempt N shows one attempt; --tail N the last lines', async () => {
    const { home, work } = makeHome()
    try {
      await home.ok(['config', 'set', 'backoff_base', '0'])
      const c = join(work, 'c')
      const id = await enqueue(home, work, ['--id', 'two', '--max-retries', '2'],
        `n=$(cat ${c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > ${c}; ` +
        `for i in 1 2 3 4 5; do echo "a$n-line$i"; done; echo "a$n-err" >&2; [ $n -ge 2 ]`)
      await drain(home)
      const job = await home.job(id)
      assert.equal(job.state, 'completed')
      assert.equal(job.attempts, 2)

      const all = await home.ok(['logs', id])
      for (const s of ['a1-line1', 'a1-err', 'a2-line5', '=== attempt 1', '=== attempt 2']) assert.ok(all.includes(s), `logs has ${s}`)
      assert.ok(all.indexOf('a1-line5') < all.indexOf('=== attempt 2'), 'attempts in order')

      const second = await home.ok(['logs', id, '--attempt', '2'])
      assert.ok(second.includes('=== attempt 2'))
      assert.ok(second.includes('a2-line1') && second.includes('a2-line5') && second.includes('a2-err'))
      assert.ok(!second.includes('a1-'), `--attempt 2 has nothing of attempt 1: ${second}`)
      assert.ok(!second.includes('=== attempt 1'))

      const first = await home.ok(['logs', id, '--attempt', '1'])
      assert.ok(first.includes('a1-line3') && !first.includes('a2-'), `--attempt 1: ${first}`)

      const tail = await home.ok(['logs', id, '--tail', '3'])
      const lines = tail.split('\n').filter((l) => l.length > 0 && !HEADER.test(l))
      assert.ok(lines.length > 0 && lines.length <= 3, `--tail 3 printed at most 3 output lines: ${JSON.stringify(tail)}`)
      assert.ok(!tail.includes('a1-') && !tail.includes('a2-line1'), `--tail 3 has only the end: ${JSON.stringify(tail)}`)
      assert.ok(tail.includes('a2-err') || tail.includes('a2-line5'), `--tail 3 has the last output: ${JSON.stringify(tail)}`)

      const sections = await home.json(['logs', id])
      assert.deepEqual(sections.map((x: any) => x.attempt), [1, 2])
      assert.deepEqual(sections.map((x: any) => x.ended), ['exit code 1', 'exit code 0'])
      assert.ok(sections[0].output.includes('a1-line5') && !sections[0].output.includes('a2-'), `--json attempt 1: ${sections[0].output}`)
      assert.ok(!sections[1].output.includes('=== attempt'), 'the output holds no header or footer')
      assert.deepEqual((await home.json(['logs', id, '--attempt', '2'])).map((x: any) => x.attempt), [2])

      const followed = await home.run(['logs', id, '--follow', '--attempt', '1'])
      assert.equal(followed.code, 0, 'following a completed job exits 0')
      assert.ok(followed.stdout.includes('a1-line5') && !followed.stdout.includes('a2-'), `--follow --attempt 1: ${followed.stdout}`)
    } finally {
      await finish(home)
    }
  })

  test('5 MB of output stays in the log file; show keeps only a short tail; the database stays small', async () => {
    const { home, work } = makeHome()
    try {
      const id = await enqueue(home, work, ['--id', 'big'],
        'yes 0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghij | head -c 5000000; echo; echo LAST-LINE')
      await drain(home)
      const job = await home.job(id)
      assert.equal(job.state, 'completed')
      assert.equal(typeof job.output_tail, 'string')
      assert.ok(job.output_tail.length <= 8192, `output_tail is a few KB, got ${job.output_tail.length} chars`)
      assert.ok(job.output_tail.includes('LAST-LINE'))
      assert.ok(statSync(logFile(home, id)).size >= 5_000_000, 'the whole output is in the log file')
      let dbBytes = 0
      for (const f of ['queue.db', 'queue.db.journal']) {
        const p = join(home.dir, f)
        if (existsSync(p)) dbBytes += statSync(p).size
      }
      assert.ok(dbBytes < 1_000_000, `the output did not go into the database (${dbBytes} bytes)`)
      const tail = await home.ok(['logs', id, '--tail', '2'])
      assert.ok(tail.includes('LAST-LINE'))
      assert.ok(tail.length < 4096, `--tail 2 of a 5 MB log is short, got ${tail.length} chars`)
    } finally {
      await finish(home)
    }
  })

  test('non-UTF-8 output is stored byte for byte', async () => {
    const { home, work } = makeHome()
    try {
      const id = await enqueue(home, work, ['--id', 'bin'], "printf '\\377\\376abc\\n'; printf '\\303(\\n' >&2")
      await drain(home)
      assert.equal((await home.job(id)).state, 'completed')
      const raw = readFileSync(logFile(home, id))
      assert.ok(raw.includes(Buffer.from([0xff, 0xfe, 0x61, 0x62, 0x63, 0x0a])), `raw bytes ff fe abc in the log: ${raw.toString('hex')}`)
      assert.ok(raw.includes(Buffer.from([0xc3, 0x28, 0x0a])), 'invalid UTF-8 from stderr kept as is')
      const r = await home.run(['logs', id])
      assert.equal(r.code, 0, `logs prints binary output without failing: ${r.stderr}`)
      assert.ok(r.stdout.includes('abc'))
    } finally {
      await finish(home)
    }
  })

  // ----- Attempt history -----------------------------------------------------------------------------

  test('attempt history: fails twice then succeeds -> 3 attempts with exit codes 1, 1, 0', async () => {
    const { home, work } = makeHome()
    try {
      await home.ok(['config', 'set', 'backoff_base', '0'])
      const c = join(work, 'c')
      const id = await enqueue(home, work, ['--id', 'hist', '--max-retries', '3'],
        `n=$(cat ${c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > ${c}; [ $n -ge 3 ]`)
      await drain(home)
      const job = await home.job(id)
      assert.equal(job.state, 'completed')
      assert.equal(job.attempts, 3)
      assert.equal(job.exit_code, 0)
      assert.ok(Array.isArray(job.history))
      assert.deepEqual(job.history.map((h: any) => h.attempt), [1, 2, 3])
      assert.deepEqual(job.history.map((h: any) => h.exit_code), [1, 1, 0])
      assert.deepEqual(job.history.map((h: any) => h.error), ['exit code 1', 'exit code 1', null])
      let prevEnd = 0
      for (const h of job.history) {
        const s = ms(h.started_at)
        const f = ms(h.finished_at)
        assert.ok(s <= f, 'started before finished')
        assert.ok(s >= prevEnd, 'attempts do not overlap')
        prevEnd = f
        assert.equal(typeof h.duration_ms, 'number')
        assert.ok(h.duration_ms >= 0 && h.duration_ms <= f - s + 5, `duration_ms ${h.duration_ms} fits ${h.started_at}..${h.finished_at}`)
        assert.equal(h.signal, null)
        assert.ok(h.worker, 'each attempt names its worker')
      }
      assert.equal(job.history[2].finished_at, job.finished_at)

      // human `show` lists the attempts: one line per attempt, starting with its number and naming its worker
      const human = await home.ok(['show', id])
      const lines = human.split('\n')
      for (const h of job.history) {
        assert.ok(lines.some((l) => new RegExp(`^\\s*#?${h.attempt}\\b`).test(l) && l.includes(h.worker)),
          `human show has a line for attempt ${h.attempt} (worker ${h.worker}):\n${human}`)
      }
      assert.ok(human.includes('exit code 1'), `human show names the failures:\n${human}`)
    } finally {
      await finish(home)
    }
  })

  test('QUEUECTL_ATTEMPT is the number of the attempt history and the log headers, also after a dlq retry', async () => {
    const { home, work } = makeHome()
    try {
      await home.ok(['config', 'set', 'backoff_base', '0'])
      const seen = join(work, 'seen')
      const id = await enqueue(home, work, ['--id', 'numbered', '--max-retries', '1'], `echo $QUEUECTL_ATTEMPT >> ${seen}; exit 1`)
      await drain(home)
      assert.equal((await home.job(id)).state, 'dead')
      await home.ok(['dlq', 'retry', id])
      await drain(home)
      const job = await home.job(id)
      assert.equal(job.state, 'dead')
      assert.equal(job.attempts, 2, 'attempts counts the runs since the dlq retry')
      assert.deepEqual(readPids(seen), [1, 2, 3, 4], 'the job was told the history\'s number of each run')
      assert.deepEqual(job.history.map((h: any) => h.attempt), [1, 2, 3, 4])
      assert.deepEqual((await home.json(['logs', id])).map((s: any) => s.attempt), [1, 2, 3, 4])
    } finally {
      await finish(home)
    }
  })

  test('a job whose directory was removed after enqueue fails as its own fault (counted), not as the machine\'s', async () => {
    const { home, work } = makeHome()
    try {
      const dir = join(work, 'gone')
      mkdirSync(dir)
      const id = await enqueue(home, dir, ['--id', 'nocwd', '--max-retries', '0'], 'true')
      rmSync(dir, { recursive: true })
      await drain(home)
      const job = await home.job(id)
      assert.equal(job.state, 'dead')
      assert.equal(job.attempts, 1)
      assert.equal(job.last_error, `cannot start: the directory ${dir} does not exist`)
      assert.deepEqual(job.history.map((h: any) => h.outcome), ['failed'])
    } finally {
      await finish(home)
    }
  })

  // ----- Metrics -----------------------------------------------------------------------------------------

  test('stats: counts, success rate, retries, durations, throughput, oldest pending wait', async () => {
    const { home, work } = makeHome()
    try {
      await home.ok(['config', 'set', 'backoff_base', '0'])
      for (const i of [1, 2, 3]) await enqueue(home, work, ['--id', `ok${i}`], 'sleep 0.3')
      await enqueue(home, work, ['--id', 'bad', '--max-retries', '1'], 'exit 1')
      await drain(home)

      const empty = await home.json(['stats'])
      assert.ok(empty.oldest_pending_wait_ms === null || empty.oldest_pending_wait_ms === 0,
        `no pending job: oldest_pending_wait_ms null/0, got ${empty.oldest_pending_wait_ms}`)

      await enqueue(home, work, ['--id', 'waiting'], 'true')
      const t0 = ms((await home.job('waiting')).created_at)
      await waitFor('the pending job to have waited a little', () => Date.now() - t0 >= 300)
      const s = await home.json(['stats'])
      const t1 = Date.now()
      assert.equal(s.counts.completed, 3)
      assert.equal(s.counts.dead, 1)
      assert.equal(s.counts.pending, 1)
      assert.equal(s.counts.processing, 0)
      assert.equal(s.counts.failed, 0)
      assert.ok(s.success_rate === 0.75 || s.success_rate === 75, `success_rate = 3 completed of 4 finished, got ${s.success_rate}`)
      assert.equal(s.retries, 1, 'the dead job was retried once')
      for (const k of ['mean', 'p50', 'p95']) assert.equal(typeof s.duration_ms[k], 'number', `duration_ms.${k} is a number`)
      assert.ok(s.duration_ms.p50 >= 250, `p50 covers the 0.3 s jobs, got ${s.duration_ms.p50}`)
      assert.ok(s.duration_ms.p95 >= s.duration_ms.p50)
      assert.ok(s.duration_ms.mean > 0 && s.duration_ms.mean <= s.duration_ms.p95 + 1)
      assert.ok(s.duration_ms.p95 < 5_000, `durations are ms, got p95 ${s.duration_ms.p95}`)
      assert.equal(s.finished.last_1m, 4, 'the 4 jobs finished in the last minute')
      assert.ok(s.finished.last_5m >= 4 && s.finished.last_15m >= s.finished.last_5m)
      assert.equal(typeof s.oldest_pending_wait_ms, 'number')
      assert.ok(s.oldest_pending_wait_ms >= 250 && s.oldest_pending_wait_ms <= t1 - t0 + 1000,
        `oldest pending wait ~${t1 - t0} ms, got ${s.oldest_pending_wait_ms}`)

      const human = await home.run(['stats'])
      assert.equal(human.code, 0, human.stderr)
      assert.match(human.stdout, /completed/i)
      assert.match(human.stdout, /p95/i)
    } finally {
      await finish(home)
    }
  })

  // ----- Retention -----------------------------------------------------------------------------------------

  test('purge --state completed removes completed jobs and their logs, not dead ones; --older-than spares fresh jobs', async () => {
    const { home, work } = makeHome()
    try {
      await enqueue(home, work, ['--id', 'c1'], 'echo one')
      await enqueue(home, work, ['--id', 'c2'], 'echo two')
      await enqueue(home, work, ['--id', 'd1', '--max-retries', '0'], 'echo bad; exit 1')
      await drain(home)
      await enqueue(home, work, ['--id', 'later', '--delay', '1h'], 'true') // pending: never purged
      for (const id of ['c1', 'c2', 'd1']) assert.ok(existsSync(logFile(home, id)), `log of ${id} exists`)

      await home.ok(['purge', '--older-than', '1h'])
      let ids = (await home.json(['list'])).map((j: any) => j.id).sort()
      assert.deepEqual(ids, ['c1', 'c2', 'd1', 'later'], '--older-than 1h deletes nothing that just finished')

      await home.ok(['purge', '--state', 'completed'])
      ids = (await home.json(['list'])).map((j: any) => j.id).sort()
      assert.deepEqual(ids, ['d1', 'later'])
      for (const id of ['c1', 'c2']) {
        const r = await home.run(['show', id])
        assert.equal(r.code, 1, `show ${id} after purge: unknown id`)
        assert.equal(existsSync(logFile(home, id)), false, `log of ${id} deleted`)
      }
      assert.ok(existsSync(logFile(home, 'd1')), 'the dead job keeps its log')
      assert.equal((await home.job('d1')).state, 'dead')
      assert.equal((await home.job('later')).state, 'pending')
    } finally {
      await finish(home)
    }
  })

  test('config retention makes a running worker delete finished jobs automatically', async () => {
    const { home, work } = makeHome()
    let worker: Spawned | undefined
    try {
      await home.ok(['config', 'set', 'retention', '1s'])
      worker = await startWorker(home)
      const keep = await enqueue(home, work, ['--id', 'keep', '--delay', '1h'], 'true')
      const done = await enqueue(home, work, ['--id', 'done'], 'echo bye')
      const dead = await enqueue(home, work, ['--id', 'gone-dead', '--max-retries', '0'], 'exit 1')
      await waitFor('the finished jobs to be deleted by retention', async () => {
        const ids = (await home.json(['list'])).map((j: any) => j.id)
        return !ids.includes(done) && !ids.includes(dead)
      }, 20_000, 500)
      assert.equal((await home.run(['show', done])).code, 1)
      assert.equal(existsSync(logFile(home, done)), false, 'its log went too')
      assert.equal(existsSync(logFile(home, dead)), false)
      assert.equal((await home.job(keep)).state, 'pending', 'a pending job is never deleted by retention')
      assert.ok(worker.proc.exitCode === null, 'the worker is still running')
    } finally {
      await finish(home, worker)
    }
  })

  // ----- Priority and scheduling ---------------------------------------------------------------------------

  test('one worker drains a backlog by priority, equal priorities in enqueue order', async () => {
    const { home, work } = makeHome()
    try {
      const order = join(work, 'order')
      const backlog: [string, number][] = [
        ['p0a', 0], ['p5a', 5], ['p0b', 0], ['p10', 10], ['p5b', 5], ['pm1', -1], ['p0c', 0], ['p5c', 5],
      ]
      for (const [id, priority] of backlog) {
        await home.ok(['enqueue', JSON.stringify({ id, command: `echo ${id} >> ${order}`, priority })], { cwd: work })
      }
      await drain(home)
      const ran = readFileSync(order, 'utf8').split('\n').filter(Boolean)
      assert.deepEqual(ran, ['p10', 'p5a', 'p5b', 'p5c', 'p0a', 'p0b', 'p0c', 'pm1'])
      const jobs = await home.json(['list'])
      const started = jobs.slice().sort((a: any, b: any) => ms(a.started_at) - ms(b.started_at)).map((j: any) => j.id)
      assert.deepEqual(started, ran, 'started_at agrees with the order the jobs ran in')
    } finally {
      await finish(home)
    }
  })

  test('jobs of one bulk enqueue with equal priority run in file order', async () => {
    const { home, work } = makeHome()
    try {
      const order = join(work, 'order')
      const ids = ['zeta', 'alpha', 'mid', 'beta', 'omega', 'aaa']
      const lines = ids.map((id) => JSON.stringify({ id, command: `echo ${id} >> ${order}` })).join('\n') + '\n'
      await home.ok(['enqueue', '--file', '-'], { cwd: work, input: lines })
      await drain(home)
      assert.deepEqual(readFileSync(order, 'utf8').split('\n').filter(Boolean), ids)
    } finally {
      await finish(home)
    }
  })
})

describe('scheduling with an idle worker', { concurrency: true }, () => {
  test('--delay 2s does not start early and starts promptly when due; 30s/5m/2h/1d set run_at', async () => {
    const { home, work } = makeHome()
    let worker: Spawned | undefined
    try {
      for (const [d, sec] of [['30s', 30], ['5m', 300], ['2h', 7200], ['1d', 86400]] as const) {
        const j = JSON.parse(await home.ok(['enqueue', '--json', '--id', `d${d}`, '--delay', d, '--', 'true'], { cwd: work }))
        assert.equal(ms(j.run_at) - ms(j.created_at), sec * 1000, `--delay ${d}: run_at = created_at + ${sec}s`)
      }
      worker = await startWorker(home)
      const j = JSON.parse(await home.ok(['enqueue', '--json', '--id', 'soon', '--delay', '2s', '--', 'true'], { cwd: work }))
      const created = ms(j.created_at)
      assert.equal(ms(j.run_at) - created, 2000)
      const done = await waitState(home, 'soon', 'completed', 15_000)
      const started = ms(done.started_at)
      assert.ok(started - created >= 2000, `started ${started - created} ms after enqueue, not before 2000`)
      // prompt: the worker wakes when the job is due (a loaded machine adds scheduling delay, hence the margin)
      assert.ok(started - (created + 2000) <= 3000, `started promptly: ${started - created - 2000} ms after due`)
      for (const d of ['30s', '5m', '2h', '1d']) assert.equal((await home.job(`d${d}`)).state, 'pending')
    } finally {
      await finish(home, worker)
    }
  })

  test('--run-at an ISO time ~2 s ahead does not start early and starts promptly', async () => {
    const { home, work } = makeHome()
    let worker: Spawned | undefined
    try {
      worker = await startWorker(home)
      const due = Date.now() + 2000
      const at = new Date(due).toISOString()
      const j = JSON.parse(await home.ok(['enqueue', '--json', '--id', 'at', '--run-at', at, '--', 'true'], { cwd: work }))
      // on a loaded machine the enqueue itself may return after `due`: lateness counts from when both had happened
      const dueAndStored = Math.max(due, Date.now())
      assert.equal(j.run_at, at)
      const done = await waitState(home, 'at', 'completed', 15_000)
      const started = ms(done.started_at)
      assert.ok(started >= due, `started ${due - started} ms before --run-at`)
      assert.ok(started - dueAndStored <= 3000, `started promptly: ${started - dueAndStored} ms after due`)
    } finally {
      await finish(home, worker)
    }
  })
})
