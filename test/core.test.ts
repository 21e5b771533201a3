// Core behaviour of queuectl (issue 2): the five assignment scenarios, plus concurrency, crash recovery,
// stopping, lock recovery, damaged databases, `worker start`, --help and running under tsx.
import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { CLI, Home, ROOT, holdsQueue, isAlive, runProgram, sqliteOnly, waitFor, waitForState } from './helpers.ts'

// ---------- local helpers ----------

function lines(text: string): string[] {
  return text.split('\n').map((l) => l.trim()).filter(Boolean)
}

/** Reads one config value from `config list --json` (an object of key -> value, or an array of {key, value}). */
async function configValue(home: Home, key: string): Promise<unknown> {
  const list = await home.json(['config', 'list'])
  if (Array.isArray(list)) return list.find((e: any) => e.key === key)?.value
  return list[key]
}

async function status(home: Home): Promise<any> {
  return home.json(['status'])
}

/**
 * Kills a job's process group if its leader, a shell whose command names `home`, still runs (cleanup of jobs
 * orphaned by a killed worker). Checking the leader matters: pids wrap during the suite, and by now the number may
 * be another test's job group.
 */
function killGroup(pgid: number, home: Home): void {
  try {
    if (!readFileSync(`/proc/${pgid}/cmdline`, 'utf8').includes(home.dir)) return
    process.kill(-pgid, 'SIGKILL')
  } catch {}
}

function readPid(file: string): number | undefined {
  if (!existsSync(file)) return undefined
  const pid = Number(readFileSync(file, 'utf8').trim())
  return Number.isInteger(pid) && pid > 0 ? pid : undefined
}

/** A process's state letter in /proc (R, S, T for stopped, Z…), or undefined once it is gone. */
function procState(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat[stat.lastIndexOf(')') + 2]
  } catch {
    return undefined
  }
}

function shq(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`
}

// ---------- the five assignment scenarios ----------

describe('assignment scenarios', { concurrency: true }, () => {
  test('1. a job completes: state completed, exit code 0, output visible', async () => {
    const home = new Home()
    try {
      const id = (await home.ok(['enqueue', 'echo hello-from-job'])).trim()
      assert.match(id, /^[0-9a-z]{13}$/, 'enqueue prints the generated id alone')
      assert.equal((await home.job(id)).state, 'pending')
      await home.ok(['worker', 'run', '--drain'])
      const job = await home.job(id)
      assert.equal(job.state, 'completed')
      assert.equal(job.exit_code, 0)
      assert.equal(job.attempts, 1)
      assert.equal(job.last_error, null)
      assert.match(job.output_tail, /hello-from-job/)
      assert.equal(job.history.length, 1)
      assert.equal(job.history[0].exit_code, 0)
      assert.ok(job.finished_at && job.started_at && job.finished_at >= job.started_at)
      const logs = await home.ok(['logs', id])
      assert.match(logs, /hello-from-job/)
      assert.match(logs, /=== attempt 1 /)
    } finally {
      await home.cleanup()
    }
  })

  test('2. a failing job retries with backoff and lands in the DLQ after 1 + max_retries runs', async () => {
    const home = new Home()
    try {
      await home.ok(['config', 'set', 'backoff_base', '1'])
      const runs = join(home.dir, 'runs.txt')
      const spec = { id: 'fails', command: `echo "run $QUEUECTL_ATTEMPT" >> ${shq(runs)}; exit 1`, max_retries: 2 }
      assert.equal((await home.ok(['enqueue', JSON.stringify(spec)])).trim(), 'fails')
      await home.ok(['worker', 'run', '--drain'], { timeoutMs: 30_000 })

      assert.deepEqual(lines(readFileSync(runs, 'utf8')), ['run 1', 'run 2', 'run 3'], 'exactly 1 + max_retries runs')
      const job = await home.job('fails')
      assert.equal(job.state, 'dead')
      assert.equal(job.attempts, 3)
      assert.equal(job.exit_code, 1)
      assert.equal(job.last_error, 'exit code 1')
      assert.equal(job.history.length, 3)
      for (const h of job.history) assert.equal(h.exit_code, 1)
      // backoff_base 1: every retry waits 1^k = 1 s after the previous attempt
      for (let i = 1; i < job.history.length; i++) {
        const gap = Date.parse(job.history[i].started_at) - Date.parse(job.history[i - 1].started_at)
        assert.ok(gap >= 950, `attempt ${i + 1} started ${gap} ms after attempt ${i}, expected >= 1 s`)
      }
      const dlq = await home.json(['dlq', 'list'])
      assert.deepEqual(dlq.map((j: any) => j.id), ['fails'])
      assert.equal(dlq[0].state, 'dead')
    } finally {
      await home.cleanup()
    }
  })

  test('3. four workers and 200 jobs: every job runs exactly once, no overlap', async () => {
    const home = new Home()
    // a small journal forces compactions while four workers write concurrently
    const env = { QUEUECTL_JOURNAL_LIMIT: '4096' }
    try {
      const out = join(home.dir, 'out.txt')
      const pids = lines(await home.ok(['worker', 'start', '--count', '4'], { env })).map(Number)
      assert.equal(pids.length, 4)
      const ids = Array.from({ length: 200 }, (_, i) => `job-${String(i).padStart(3, '0')}`)
      const input = ids.map((id) => JSON.stringify({ id, command: `echo "$QUEUECTL_JOB_ID $PPID" >> ${shq(out)}` })).join('\n') + '\n'
      assert.deepEqual(lines(await home.ok(['enqueue', '--file', '-'], { input, env })), ids)

      await waitFor('200 jobs completed', async () => (await status(home)).counts.completed === 200, 45_000, 500)
      const st = await status(home)
      assert.deepEqual(
        [st.counts.pending, st.counts.processing, st.counts.failed, st.counts.dead],
        [0, 0, 0, 0],
      )
      const rows = lines(readFileSync(out, 'utf8')).map((l) => l.split(' '))
      const ran = rows.map((r) => r[0]).sort()
      assert.deepEqual(ran, ids, 'every job appended its id exactly once')
      const ranBy = new Set(rows.map((r) => Number(r[1])))
      for (const pid of ranBy) assert.ok(pids.includes(pid), `job run by unknown process ${pid}`)
      assert.ok(ranBy.size >= 2, `only ${ranBy.size} worker(s) ran jobs`)

      const all = await home.json(['list', '--limit', '1000'])
      assert.equal(all.length, 200)
      for (const job of all) {
        assert.equal(job.state, 'completed', job.id)
        assert.equal(job.attempts, 1, job.id)
      }
    } finally {
      await home.cleanup()
    }
  })

  test('4. an unknown command fails gracefully (exit 127), is retried, and ends dead', async () => {
    const home = new Home()
    try {
      await home.ok(['config', 'set', 'backoff_base', '0'])
      const id = (await home.ok(['enqueue', JSON.stringify({ command: 'nonexistent_cmd_xyz', max_retries: 1 })])).trim()
      await home.ok(['worker', 'run', '--drain'])
      const job = await home.job(id)
      assert.equal(job.state, 'dead')
      assert.equal(job.exit_code, 127)
      assert.equal(job.last_error, 'exit code 127')
      assert.equal(job.attempts, 2, 'retried once (max_retries 1)')
      assert.equal(job.history.length, 2)
      assert.match(await home.ok(['logs', id]), /nonexistent_cmd_xyz/, 'the shell error is in the log')
      const dlq = await home.json(['dlq', 'list'])
      assert.deepEqual(dlq.map((j: any) => j.id), [id])
    } finally {
      await home.cleanup()
    }
  })

  test('5. jobs and config survive a restart', async () => {
    const home = new Home()
    try {
      await home.ok(['worker', 'start'])
      const done = (await home.ok(['enqueue', 'echo before-restart'])).trim()
      await waitForState(home, done, 'completed')
      await home.ok(['config', 'set', 'max_retries', '7'])
      await home.ok(['config', 'set', 'backoff-max', '120'])
      assert.match(await home.ok(['worker', 'stop']), /Stopped 1 worker/)
      assert.deepEqual((await status(home)).workers, [])
      const later = (await home.ok(['enqueue', '--id', 'later', '--', 'echo', 'after-restart'])).trim()
      assert.equal(later, 'later')

      // fresh processes read everything back
      assert.equal(await configValue(home, 'max_retries'), 7)
      assert.equal(await configValue(home, 'backoff_max'), 120)
      assert.equal(await configValue(home, 'backoff_base'), 2, 'untouched keys keep their default')
      const a = await home.job(done)
      assert.equal(a.state, 'completed')
      assert.match(a.output_tail, /before-restart/)
      const b = await home.job('later')
      assert.equal(b.state, 'pending')
      assert.equal(b.max_retries, 7, 'the job got the persisted default')
      assert.equal(b.command, 'echo after-restart')
      const listed = await home.json(['list'])
      assert.deepEqual(listed.map((j: any) => j.id).sort(), [done, 'later'].sort())

      // a worker started later runs the pending job
      await home.ok(['worker', 'start'])
      const ran = await waitForState(home, 'later', 'completed')
      assert.match(ran.output_tail, /after-restart/)
    } finally {
      await home.cleanup()
    }
  })
})

// ---------- concurrency and crashes ----------

describe('concurrency and crash recovery', { concurrency: true }, () => {
  test('concurrent enqueuers lose nothing (8 processes x 25 enqueues)', async () => {
    const home = new Home()
    try {
      // each of 8 parallel lanes: 3 single enqueues, then one bulk enqueue of 22 (8 CLI processes at a time)
      const lanes = Array.from({ length: 8 }, async (_, lane) => {
        const ids: string[] = []
        for (let i = 0; i < 3; i++) {
          ids.push((await home.ok(['enqueue', `echo lane ${lane} job ${i}`])).trim())
        }
        const input = Array.from({ length: 22 }, (_, i) => JSON.stringify({ command: `echo lane ${lane} bulk ${i}` })).join('\n')
        ids.push(...lines(await home.ok(['enqueue', '--file', '-'], { input })))
        return ids
      })
      const ids = (await Promise.all(lanes)).flat()
      assert.equal(ids.length, 200)
      assert.equal(new Set(ids).size, 200, 'all ids distinct')
      for (const id of ids) assert.match(id, /^[0-9a-z]{13}$/)
      const listed = await home.json(['list', '--limit', '1000'])
      assert.equal(listed.length, 200)
      assert.deepEqual(listed.map((j: any) => j.id).sort(), [...ids].sort())
      assert.equal((await status(home)).counts.pending, 200)
    } finally {
      await home.cleanup()
    }
  })

  test('kill -9 of a worker mid-job: the job is recovered as "worker lost" and completes on another worker', async () => {
    const home = new Home()
    const pgFile = join(home.dir, 'job.pgid')
    try {
      await home.ok(['config', 'set', 'backoff_base', '0'])
      // attempt 1 hangs; later attempts finish at once
      const command = `if [ "$QUEUECTL_ATTEMPT" = 1 ]; then echo $$ > ${shq(pgFile)}; sleep 30; fi; echo finished`
      await home.ok(['enqueue', JSON.stringify({ id: 'victim', command, max_retries: 2 })])
      const worker = home.spawn(['worker', 'run'])
      const wpid = await waitFor('the worker to pick up the job', async () => {
        const st = await status(home)
        return st.workers.find((w: any) => w.job_id === 'victim')?.pid as number | undefined
      })
      assert.equal(wpid, worker.pid)
      await waitFor('the job to start', () => readPid(pgFile))
      assert.equal((await home.job('victim')).state, 'processing')

      process.kill(wpid, 'SIGKILL')
      await waitFor('the worker to die', () => !isAlive(wpid), 5000)

      // any queuectl process notices the dead worker and puts the job back
      const back = await waitFor('the job to leave processing', async () => {
        const job = await home.job('victim')
        return job.state !== 'processing' ? job : undefined
      }, 10_000, 200)
      assert.ok(['failed', 'pending'].includes(back.state), `state ${back.state}`)
      assert.equal(back.last_error, 'worker lost')
      assert.equal(back.worker, null)
      assert.ok(!(await status(home)).workers.some((w: any) => w.pid === wpid), 'dead worker not listed')
      // the lost attempt ran in a process group of its own and outlived its worker: recovery must stop it,
      // or it would run beside the retry
      const orphan = readPid(pgFile)!
      await waitFor('the lost attempt\'s shell to be killed by the recovery', () => !isAlive(orphan), 5000)

      const [pid2] = lines(await home.ok(['worker', 'start'])).map(Number)
      assert.notEqual(pid2, wpid)
      const job = await waitForState(home, 'victim', 'completed')
      assert.equal(job.attempts, 2)
      assert.equal(job.history.length, 2)
      assert.equal(job.history[0].error, 'worker lost')
      assert.equal(job.history[1].exit_code, 0)
      assert.match(job.output_tail, /finished/)
    } finally {
      const pg = readPid(pgFile)
      if (pg) killGroup(pg, home)
      await home.cleanup()
    }
  })

  test('graceful worker stop lets the running job finish', async () => {
    const home = new Home()
    try {
      const [pid] = lines(await home.ok(['worker', 'start'])).map(Number)
      const started = join(home.dir, 'started')
      const go = join(home.dir, 'go')
      // the job runs until the test says go, after the worker has acknowledged the stop: no timing window
      await home.ok(['enqueue', '--id', 'slow', '--', `touch ${shq(started)}; until [ -e ${shq(go)} ]; do sleep 0.05; done; echo slept-well`])
      await waitFor('the job to start', () => existsSync(started), 20_000, 20)
      const stopIssued = Date.now()
      const stopping = home.run(['worker', 'stop'], { timeoutMs: 30_000 })
      const workerLog = join(home.dir, 'logs', 'worker.log')
      await waitFor('the worker to acknowledge the stop', () => readFileSync(workerLog, 'utf8').includes('stopping after the current job'), 20_000, 20)
      writeFileSync(go, '')
      const r = await stopping
      assert.equal(r.code, 0, r.stderr)
      assert.match(r.stdout, /Stopped 1 worker/)
      assert.ok(!isAlive(pid), 'the worker has exited when stop returns')
      const job = await home.job('slow')
      assert.equal(job.state, 'completed', 'stop waited for the job to finish')
      assert.ok(Date.parse(job.finished_at) > stopIssued, 'the job was still running when stop was issued')
      assert.equal(job.exit_code, 0)
      assert.match(job.output_tail, /slept-well/)
      assert.deepEqual((await status(home)).workers, [])
      assert.match(await home.ok(['worker', 'stop']), /No workers running/)
    } finally {
      await home.cleanup()
    }
  })

  test('worker stop --force puts the running job back to pending without counting the attempt', async () => {
    const home = new Home()
    const pgFile = join(home.dir, 'job.pgid')
    try {
      const [pid] = lines(await home.ok(['worker', 'start'])).map(Number)
      await home.ok(['enqueue', JSON.stringify({ id: 'long', command: `echo $$ > ${shq(pgFile)}; sleep 30` })])
      await waitForState(home, 'long', 'processing')
      const pgid = await waitFor('the job to start', () => readPid(pgFile))
      const started = Date.now()
      const stop = await home.ok(['worker', 'stop', '--force'], { timeoutMs: 30_000 })
      assert.ok(Date.now() - started < 15_000, 'force stop does not wait for the job')
      assert.match(stop, /Stopped 1 worker/)
      assert.ok(!isAlive(pid))
      await waitFor('the job process group to be gone', () => !isAlive(pgid), 5000)
      const job = await home.job('long')
      assert.equal(job.state, 'pending')
      assert.equal(job.attempts, 0, 'the interrupted attempt is not counted')
      assert.equal(job.worker, null)
    } finally {
      const pg = readPid(pgFile)
      if (pg) killGroup(pg, home)
      await home.cleanup()
    }
  })

  test('purge removes a log before any other write: a job enqueued again under a purged id keeps its new log', async (t) => {
    // Before, purge removed the logs after releasing the lock: in between, the id could be enqueued again and run,
    // and purge then deleted that job's new log. strace holds purge inside its unlink() of the log for 3 s, so
    // that "in between" is long enough for the new job to run, whichever side of the lock the unlink is on.
    if (spawnSync('strace', ['-qq', '-o', '/dev/null', 'true']).status !== 0) return t.skip('needs strace (and ptrace) to hold purge inside a system call')
    const home = new Home()
    const log = join(home.dir, 'logs', 'reused.log')
    let worker: ChildProcess | undefined
    try {
      await home.ok(['enqueue', '--id', 'reused', '--', 'echo first'])
      await home.ok(['worker', 'run', '--drain'])
      assert.match(readFileSync(log, 'utf8'), /first/)
      const purge = runProgram('strace', ['-f', '-qq', '-o', '/dev/null', '-P', log, '-e', 'trace=unlink,unlinkat', '-e', 'inject=unlink,unlinkat:delay_enter=3000000',
        process.execPath, CLI, 'purge'], { env: home.env })
      worker = home.spawn(['worker', 'run'])
      await waitFor('the purged id to be free for a new job', async () => {
        const r = await home.run(['enqueue', '--id', 'reused', '--', 'echo second'])
        assert.ok(r.code === 0 || r.code === 2, `enqueue: exit ${r.code}: ${r.stderr}`)
        return r.code === 0
      }, 30_000, 10)
      await waitForState(home, 'reused', 'completed')
      const purged = await purge
      assert.equal(purged.code, 0, purged.stderr)
      assert.match(purged.stdout, /Purged 1 job/)
      assert.ok(existsSync(log), 'the new job\'s log survived the purge of the old one')
      assert.match(readFileSync(log, 'utf8'), /second/)
    } finally {
      await home.cleanup()
      worker?.kill('SIGKILL')
    }
  })
})

// ---------- storage: locks and damaged files ----------

describe('waking idle workers', { concurrency: true }, () => {
  test('pokes alone wake idle workers (their poll set to an hour): a bulk enqueue reaches all 8, one after the other; then a lone job', async () => {
    const home = new Home()
    const gate = join(home.dir, 'gate')
    try {
      await home.ok(['worker', 'start', '--count', '8'], { env: { QUEUECTL_IDLE_POLL: '3600' } })
      const ids = (await status(home)).workers.map((w: any) => w.id).sort()
      // beside its wake file, a worker keeps its spare logs and its slots' notes there: `<worker id>.…`
      assert.deepEqual(readdirSync(join(home.dir, 'wake')).filter((f) => !f.includes('.')).sort(), ids, 'each worker waits on a wake file of its own')
      // The enqueue pokes one worker; each one that claims a job pokes the next while jobs are left.
      const jobs = Array.from({ length: 10 }, (_, i) => JSON.stringify({ id: `g${i}`, command: `while [ ! -e ${shq(gate)} ]; do sleep 0.05; done` }))
      await home.ok(['enqueue', '--file', '-'], { input: jobs.join('\n') })
      const busy = await waitFor('all 8 workers to run a job', async () => {
        const st = await status(home)
        return st.workers.every((w: any) => w.job_id) ? st : undefined
      })
      assert.equal(busy.counts.processing, 8)
      assert.equal(busy.counts.pending, 2)
      writeFileSync(gate, '')
      await waitFor('the 10 jobs to complete', async () => (await status(home)).counts.completed === 10)
      const id = (await home.ok(['enqueue', 'echo alone'])).trim()
      await waitForState(home, id, 'completed')
      await home.ok(['worker', 'stop'])
      assert.deepEqual(readdirSync(join(home.dir, 'wake')), [], 'a worker that stops removes its wake file')
    } finally {
      await home.cleanup()
    }
  })

  test('a poke lost on a SIGSTOPped worker, or meant for a SIGKILLed one: another idle worker\'s poll picks the job up', async () => {
    const home = new Home()
    let stopped: number | undefined
    try {
      const [killed] = lines(await home.ok(['worker', 'start', '--concurrency', '4'])).map(Number)
      ;[stopped] = lines(await home.ok(['worker', 'start', '--concurrency', '3'])).map(Number)
      const [taker] = lines(await home.ok(['worker', 'start'])).map(Number)
      const idOf = new Map<number, string>((await status(home)).workers.map((w: any) => [w.pid, w.id]))
      // Stopped outside a transaction (holding the lock, it would stall every other process), it is alive and has
      // the most free slots once the other is dead: every poke goes to it, and is lost.
      await waitFor('the worker to be stopped outside a transaction', async () => {
        process.kill(stopped!, 'SIGSTOP')
        if (procState(stopped!) === 'T' && !(await holdsQueue(home, stopped!))) return true
        process.kill(stopped!, 'SIGCONT')
        return false
      })
      process.kill(killed, 'SIGKILL')
      const id = (await home.ok(['enqueue', 'echo taken'])).trim()
      const job = await waitForState(home, id, 'completed')
      assert.equal(job.history[0].worker, idOf.get(taker))
      await waitFor('the killed worker\'s wake file to go with its registration', () => !existsSync(join(home.dir, 'wake', idOf.get(killed)!)))
    } finally {
      if (stopped) process.kill(stopped, 'SIGCONT')
      await home.cleanup()
    }
  })
})

describe('storage', { concurrency: true, skip: sqliteOnly }, () => {
  test('a stale lock is recovered at once', async () => {
    const home = new Home()
    try {
      await home.ok(['enqueue', '--id', 'a', '--', 'true'])
      const lock = join(home.dir, 'queue.db.lock')
      // a real pid of a process that has exited (our own child, reaped)
      const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' })
      const deadPid = Number(dead.stdout)
      assert.ok(deadPid > 0 && !isAlive(deadPid))
      // our own live pid but a different start time = a reused pid
      const stale = [`99999999 0 x\n`, `${deadPid} 12345 deadbeef\n`, `${process.pid} 1 reusedpid\n`]
      for (const content of stale) {
        writeFileSync(lock, content)
        const t0 = Date.now()
        // a lock judged live would make the call wait the full 60 s lock timeout
        const r = await home.run(['list', '--json'], { env: { QUEUECTL_LOCK_TIMEOUT: '60' }, timeoutMs: 30_000 })
        const took = Date.now() - t0
        assert.equal(r.code, 0, `lock ${JSON.stringify(content)}: exit ${r.code} after ${took} ms: ${r.stderr}`)
        assert.deepEqual(JSON.parse(r.stdout).map((j: any) => j.id), ['a'])
        assert.ok(took < 10_000, `lock ${JSON.stringify(content)} took ${took} ms to recover`)
        // and a write goes through too
        writeFileSync(lock, content)
        await home.ok(['config', 'set', 'max_retries', '4'], { env: { QUEUECTL_LOCK_TIMEOUT: '60' }, timeoutMs: 30_000 })
      }
      assert.equal(await configValue(home, 'max_retries'), 4)
    } finally {
      await home.cleanup()
    }
  })

  test('a lock held by a live process makes a call wait, then fail naming the holder', async () => {
    const home = new Home()
    try {
      await home.ok(['enqueue', '--id', 'a', '--', 'true'])
      const stat = readFileSync('/proc/self/stat', 'utf8')
      const startTime = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] // field 22
      writeFileSync(join(home.dir, 'queue.db.lock'), `${process.pid} ${startTime} livetoken\n`)
      const r = await home.run(['enqueue', '--id', 'b', '--', 'true'], { env: { QUEUECTL_LOCK_TIMEOUT: '1' } })
      assert.equal(r.code, 1)
      assert.match(r.stderr, new RegExp(String(process.pid)))
      assert.equal(lines(r.stderr).length, 1)
      // once released, everything works and the failed call left nothing behind
      rmSync(join(home.dir, 'queue.db.lock'))
      assert.deepEqual((await home.json(['list'])).map((j: any) => j.id), ['a'])
    } finally {
      await home.cleanup()
    }
  })

  const damaged: Array<[string, (home: Home) => Promise<Buffer>]> = [
    ['random bytes over an existing queue', async (home) => {
      await home.ok(['enqueue', 'echo x'])
      return randomBytes(8192)
    }],
    ['a truncated queue database', async (home) => {
      await home.ok(['enqueue', 'echo x'])
      await home.ok(['config', 'set', 'max_retries', '5'])
      // compact so queue.db holds the data, then cut it in half
      const db = readFileSync(join(home.dir, 'queue.db'))
      return db.subarray(0, Math.floor(db.length / 2))
    }],
    ['a foreign file with the SQLite header and junk', async () => {
      return Buffer.concat([Buffer.from('SQLite format 3\0', 'binary'), randomBytes(4080)])
    }],
    ['a foreign SQLite database', async (home) => {
      const tmp = join(home.dir, 'foreign.sqlite')
      const r = spawnSync('sqlite3', [tmp, 'create table t(x); insert into t values (1), (2);'])
      if (r.status !== 0) {
        // no sqlite3 CLI: make one with sql.js
        const initSqlJs = (await import('sql.js')).default
        const SQL = await initSqlJs()
        const db = new SQL.Database()
        db.run('create table t(x); insert into t values (1), (2);')
        writeFileSync(tmp, Buffer.from(db.export()))
      }
      return readFileSync(tmp)
    }],
  ]
  for (const [name, make] of damaged) {
    test(`refuses ${name} and leaves it byte-for-byte unchanged`, async () => {
      const home = new Home()
      try {
        const bytes = await make(home)
        const dbPath = join(home.dir, 'queue.db')
        writeFileSync(dbPath, bytes)
        for (const args of [['list', '--json'], ['enqueue', 'echo y'], ['worker', 'run', '--drain']]) {
          const r = await home.run(args, { timeoutMs: 20_000 })
          assert.equal(r.code, 1, `${args.join(' ')}: exit ${r.code}, stderr ${r.stderr}`)
          const errLines = lines(r.stderr)
          assert.equal(errLines.length, 1, `${args.join(' ')}: one line on stderr, got ${JSON.stringify(r.stderr)}`)
          assert.match(errLines[0], /queue\.db/)
          assert.doesNotMatch(r.stderr, /^\s+at /m)
          assert.ok(readFileSync(dbPath).equals(bytes), `${args.join(' ')} changed queue.db`)
        }
      } finally {
        await home.cleanup()
      }
    })
  }
})

// ---------- CLI surface ----------

describe('cli', { concurrency: true }, () => {
  test('max-retries and max_retries are one name: in flags, JSON keys and config keys', async () => {
    const home = new Home()
    try {
      const a = (await home.ok(['enqueue', '--max_retries', '5', '--', 'true'])).trim()
      const b = (await home.ok(['enqueue', JSON.stringify({ command: 'true', 'max-retries': 7 })])).trim()
      assert.equal((await home.job(a)).max_retries, 5)
      assert.equal((await home.job(b)).max_retries, 7)
      await home.ok(['config', 'set', 'max_retries', '4'])
      assert.equal((await home.ok(['config', 'get', 'max-retries'])).trim(), '4')
    } finally {
      await home.cleanup()
    }
  })

  test('worker start returns at once, prints pids, workers are alive and listed in status', async () => {
    const home = new Home()
    try {
      // runCli resolves only when every holder of its stdout/stderr pipes is gone: it returns while the workers live
      // (asserted below) only if the detached workers keep none of them. Not timed: a loaded machine starts Node slowly.
      const out = await home.ok(['worker', 'start', '--count', '2'], { timeoutMs: 40_000 })
      const pids = lines(out).map(Number)
      assert.equal(pids.length, 2)
      for (const pid of pids) {
        assert.ok(Number.isInteger(pid) && pid > 0, `bad pid line in ${JSON.stringify(out)}`)
        assert.ok(isAlive(pid), `worker ${pid} is not alive`)
      }
      const st = await status(home)
      assert.deepEqual(st.workers.map((w: any) => w.pid).sort(), [...pids].sort())
      for (const w of st.workers) {
        assert.equal(w.job_id, null)
        assert.ok(w.id && w.started_at && w.heartbeat_at)
      }
      // and they work
      const id = (await home.ok(['enqueue', 'echo started-ok'])).trim()
      await waitForState(home, id, 'completed')
      assert.match(await home.ok(['worker', 'stop']), /Stopped 2 workers/)
      for (const pid of pids) assert.ok(!isAlive(pid))
    } finally {
      await home.cleanup()
    }
  })

  test('--help on every command exits 0 and shows an example', async () => {
    const home = new Home()
    try {
      const commands = [
        [], ['enqueue'], ['worker'], ['worker', 'start'], ['worker', 'stop'], ['worker', 'run'], ['status'], ['list'],
        ['show'], ['logs'], ['dlq'], ['dlq', 'list'], ['dlq', 'retry'], ['config'], ['config', 'list'], ['config', 'get'],
        ['config', 'set'], ['config', 'reset'], ['stats'], ['purge'],
      ]
      const results = await Promise.all(commands.map((c) => home.run([...c, '--help'])))
      const failing = commands.map((c, i) => ({ name: ['queuectl', ...c, '--help'].join(' '), r: results[i] }))
      const badExit = failing.filter(({ r }) => r.code !== 0).map(({ name, r }) => `${name} (exit ${r.code}: ${r.stderr.trim()})`)
      assert.deepEqual(badExit, [], 'every --help exits 0')
      // an "Examples" heading (any case) with at least one `queuectl ...` line after it
      const hasExample = (text: string) => /^\s*examples?\b.*\n(?:\s*\n)*\s*(?:\$ )?queuectl\b/im.test(text)
      const noExample = failing.filter(({ r }) => !hasExample(r.stdout + r.stderr)).map(({ name }) => name)
      assert.deepEqual(noExample, [], 'every --help shows an example')
      assert.ok(!existsSync(join(home.dir, 'queue.db')), '--help does not create a queue')
    } finally {
      await home.cleanup()
    }
  })

  test('tsx queuectl.ts works on the same queue as the built CLI', async () => {
    const home = new Home()
    try {
      const tsx = join(ROOT, 'node_modules', '.bin', 'tsx')
      const src = join(ROOT, 'queuectl.ts')
      const env = home.env
      const enq = await runProgram(tsx, [src, 'enqueue', 'echo via-tsx'], { env, cwd: ROOT })
      assert.equal(enq.code, 0, enq.stderr)
      const id = enq.stdout.trim()
      assert.match(id, /^[0-9a-z]{13}$/)
      assert.equal((await home.job(id)).state, 'pending', 'the built CLI sees the job tsx enqueued')
      const run = await runProgram(tsx, [src, 'worker', 'run', '--drain'], { env, cwd: ROOT })
      assert.equal(run.code, 0, run.stderr)
      const job = await home.job(id)
      assert.equal(job.state, 'completed')
      assert.match(job.output_tail, /via-tsx/)
    } finally {
      await home.cleanup()
    }
  })
})

