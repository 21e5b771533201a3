// Fencing (review issue, item 4): a worker that was judged lost and comes back must not run its old attempt beside
// the one that replaced it. Host B is a worker in a UTS namespace of its own (`unshare --uts`): same files, same
// home, another hostname, so the local worker can judge it only by its heartbeat, as it would a real remote host.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { CLI, Home, groupMembers, holdsQueue, isAlive, waitFor } from './helpers.ts'

const unshareWorks = () => spawnSync('unshare', ['--uts', '--fork', 'true'], { stdio: 'ignore' }).status === 0

/** State letter of /proc/<pid>/stat (`T` once a SIGSTOP has taken hold). */
function processState(pid: number): string {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3)
}

interface Worker {
  proc: ChildProcess
  err: () => string
}

function startWorker(home: Home, hostname?: string): Worker {
  const proc = hostname
    ? spawn('unshare', ['--uts', '--fork', 'sh', '-c', `hostname ${hostname} && exec "${process.execPath}" "${CLI}" worker run`], {
      cwd: home.dir, env: home.env, stdio: ['ignore', 'pipe', 'pipe'],
    })
    : home.spawn(['worker', 'run'])
  let err = ''
  proc.stdout!.resume()
  proc.stderr!.setEncoding('utf8').on('data', (d) => (err += d))
  return { proc, err: () => err }
}

const marks = (file: string) => (existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean) : [])

test('fencing: a worker on another host stopped past its lease finds its attempt taken over, kills it and records nothing', { timeout: 90_000 }, async (t) => {
  if (!unshareWorks()) {
    t.skip('unshare --uts is not permitted here')
    return
  }
  const home = new Home('queuectl-fencing-')
  const marksFile = join(home.dir, 'marks')
  const gate = join(home.dir, 'gate')
  let b: Worker | undefined
  let bPid: number | undefined
  let local: Worker | undefined
  let stalePgid: number | undefined
  try {
    await home.ok(['config', 'set', 'lease', '3s'])
    // each attempt notes its start and its process group, then holds until the gate opens, and notes its end
    await home.ok(['enqueue', '--id', 'J', '--', `echo "start $QUEUECTL_ATTEMPT $$" >> ${marksFile}; until [ -e ${gate} ]; do sleep 0.05; done; echo "end $QUEUECTL_ATTEMPT $$" >> ${marksFile}`])
    b = startWorker(home, 'hostB')
    const [first] = await waitFor('host B to start attempt 1', () => marks(marksFile).length ? marks(marksFile) : undefined, 20_000)
    const [, attempt, pgid] = first.split(' ')
    assert.equal(attempt, '1')
    stalePgid = Number(pgid)
    const bInfo = (await home.json(['status'])).workers.find((w: any) => w.host === 'hostB')
    assert.ok(bInfo, 'host B is registered with its own hostname')
    assert.equal(bInfo.job_id, 'J')
    bPid = bInfo.pid as number
    // With PostgreSQL, output reaches the database every 250 ms: a host frozen before that leaves no trace of the
    // attempt in `logs` (what it wrote stays in its own file, logs/J.log), so B freezes once its header is there.
    await waitFor("attempt 1's header to be in the log", async () =>
      (await home.json(['logs', 'J'])).some((s: any) => s.attempt === 1), 10_000, 50)

    // Host B stops answering: the worker and its job freeze, as on a paused machine. Never while B holds the
    // queue's lock (that would stop everyone, which is another story): then let it go on and try again.
    await waitFor('host B to be stopped without holding the lock', async () => {
      process.kill(bPid!, 'SIGSTOP')
      process.kill(-stalePgid!, 'SIGSTOP')
      await waitFor('the SIGSTOP to take hold', () => processState(bPid!) === 'T', 5_000, 5)
      if (!(await holdsQueue(home, bPid!))) return true
      process.kill(-stalePgid!, 'SIGCONT')
      process.kill(bPid!, 'SIGCONT')
      return false
    }, 10_000, 20)

    // a worker here judges B by its heartbeat, which stands still: after the lease it recovers J and runs attempt 2
    local = startWorker(home)
    const second = await waitFor('the local worker to start attempt 2', () => marks(marksFile)[1], 20_000)
    assert.match(second, /^start 2 \d+$/)
    const recovered = await home.job('J')
    assert.equal(recovered.state, 'processing')
    assert.equal(recovered.history[0].error, 'worker lost')
    assert.equal(recovered.history[0].outcome, 'lost')
    assert.equal(recovered.history[0].worker, bInfo.id)
    assert.notEqual(recovered.worker, bInfo.id)

    // Host B comes back. Its heartbeat finds attempt 1 taken over: it kills that attempt's process group.
    process.kill(-stalePgid, 'SIGCONT')
    process.kill(bPid, 'SIGCONT')
    await waitFor(`host B's stale attempt (process group ${stalePgid}) to be killed`, () => groupMembers(stalePgid!).length === 0, 15_000, 50)
    await waitFor('host B to say why it killed it', () => b!.err().includes('attempt 1 of job J was taken over (recovered as lost): killed it'), 10_000)
    const back = await waitFor('host B to be registered again, idle', async () =>
      (await home.json(['status'])).workers.find((w: any) => w.host === 'hostB' && w.job_id === null), 10_000, 200)
    assert.equal(back.pid, bPid)

    writeFileSync(gate, '')
    const job = await waitFor('J to complete', async () => {
      const j = await home.job('J')
      return j.state === 'completed' ? j : undefined
    }, 20_000, 200)
    // attempt 1 never went on beside attempt 2: it never reached its end, and B recorded nothing over attempt 2
    assert.deepEqual(marks(marksFile), [first, second, `end 2 ${second.split(' ')[2]}`])
    assert.equal(job.attempts, 2)
    assert.equal(job.exit_code, 0)
    assert.deepEqual(job.history.map((h: any) => [h.attempt, h.outcome, h.error, h.worker]), [
      [1, 'lost', 'worker lost', bInfo.id],
      [2, 'completed', null, recovered.worker],
    ])
    const sections = await home.json(['logs', 'J'])
    assert.deepEqual(sections.map((s: any) => [s.attempt, s.ended]), [[1, null], [2, 'exit code 0']], 'no footer of the killed attempt in the log')
    assert.ok(!b.err().includes('    at '), `host B printed a stack trace: ${b.err()}`)
  } finally {
    if (bPid && isAlive(bPid)) {
      process.kill(bPid, 'SIGCONT')
      process.kill(bPid, 'SIGKILL')
    }
    if (stalePgid && groupMembers(stalePgid).length) process.kill(-stalePgid, 'SIGKILL')
    b?.proc.kill('SIGKILL')
    local?.proc.kill('SIGTERM')
    await home.cleanup()
  }
})
