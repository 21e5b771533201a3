// Completion hooks (SPEC: Completion hooks): real CLI, real workers; each hook leaves its facts in a file.
import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { groupMembers, Home, isAlive, waitFor, waitForState } from './helpers.ts'

const FACTS = ['EVENT', 'JOB_ID', 'QUEUE', 'COMMAND', 'EXIT_CODE', 'SIGNAL', 'ATTEMPT', 'LAST_ERROR', 'LOG', 'DURATION_MS', 'HOME'] as const

/** A hook that appends one line to `file`: its name, then every QUEUECTL_* fact and two variables of its environment. */
const recorder = (file: string, name: string) =>
  `line=${name}; for v in ${FACTS.map((f) => `"$QUEUECTL_${f}"`).join(' ')} "$FROM_ENQUEUE" "$FROM_WORKER"; do line="$line|$v"; done; echo "$line" >> ${file}`

type Run = { hook: string; env: Record<string, string> }

function runsIn(file: string): Run[] {
  if (!existsSync(file)) return []
  return readFileSync(file, 'utf8').split('\n').slice(0, -1).map((line) => { // whole lines only
    const [hook, ...values] = line.split('|')
    const names = [...FACTS, 'FROM_ENQUEUE', 'FROM_WORKER']
    return { hook, env: Object.fromEntries(names.map((name, i) => [name, values[i]])) }
  })
}

const lines = (file: string) => (existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean) : [])

describe('completion hooks', { concurrency: true }, () => {
  test('each end runs the right hooks, the job\'s own before the global ones, with the facts in their environment', async () => {
    const home = new Home()
    try {
      const file = join(home.dir, 'runs')
      await home.ok(['config', 'set', 'on_finish', recorder(file, 'global-finish')])
      await home.ok(['config', 'set', 'on_failure', recorder(file, 'global-failure')])
      const own = ['success', 'failure', 'finish'].flatMap((end) => [`--on-${end}`, recorder(file, `own-${end}`)])
      const enqueue = (args: string[]) => home.ok(['enqueue', ...own, ...args], { env: { FROM_ENQUEUE: 'enqueuer' } })
      await enqueue(['--id', 'ok', '--queue', 'q1', 'echo fine'])
      await enqueue(['--id', 'dead', '--max-retries', '0', 'exit 3'])
      await enqueue(['--id', 'skipped', '--after', 'dead', 'true'])
      await enqueue(['--id', 'cancelled', 'sleep 30'])
      const added = JSON.parse(await home.ok(['show', 'ok', '--json']))
      assert.deepEqual([added.on_success, added.on_failure, added.on_finish], [own[1], own[3], own[5]])
      await home.ok(['worker', 'start', '--concurrency', '2'], { env: { FROM_WORKER: 'worker' } })
      await waitForState(home, 'cancelled', 'processing')
      await home.ok(['kill', 'cancelled'])
      await waitFor('15 hook runs', () => runsIn(file).length === 15)

      const runs = runsIn(file)
      const of = (id: string) => runs.filter((r) => r.env.JOB_ID === id)
      assert.deepEqual(of('ok').map((r) => r.hook), ['own-success', 'own-finish', 'global-finish'])
      for (const id of ['dead', 'skipped', 'cancelled']) {
        assert.deepEqual(of(id).map((r) => r.hook), ['own-failure', 'own-finish', 'global-failure', 'global-finish'], id)
      }
      // the job's own hooks run with its environment, the global ones with the worker's
      for (const run of runs) {
        const ownHook = run.hook.startsWith('own-')
        assert.deepEqual([run.env.FROM_ENQUEUE, run.env.FROM_WORKER], ownHook ? ['enqueuer', ''] : ['', 'worker'], `${run.hook} of ${run.env.JOB_ID}`)
        assert.equal(run.env.HOME, home.dir)
        assert.equal(run.env.LOG, join(home.dir, 'logs', `${run.env.JOB_ID}.log`))
      }
      const facts = (id: string) => {
        const { FROM_ENQUEUE, FROM_WORKER, HOME, LOG, DURATION_MS, ...rest } = of(id)[0].env
        return { ...rest, ran: /^\d+$/.test(DURATION_MS) }
      }
      assert.deepEqual(facts('ok'), { EVENT: 'completed', JOB_ID: 'ok', QUEUE: 'q1', COMMAND: 'echo fine', EXIT_CODE: '0', SIGNAL: '', ATTEMPT: '1', LAST_ERROR: '', ran: true })
      assert.deepEqual(facts('dead'), { EVENT: 'dead', JOB_ID: 'dead', QUEUE: 'default', COMMAND: 'exit 3', EXIT_CODE: '3', SIGNAL: '', ATTEMPT: '1', LAST_ERROR: 'exit code 3', ran: true })
      assert.deepEqual(facts('skipped'), { EVENT: 'skipped', JOB_ID: 'skipped', QUEUE: 'default', COMMAND: 'true', EXIT_CODE: '', SIGNAL: '', ATTEMPT: '0', LAST_ERROR: 'dependency dead dead', ran: false })
      assert.deepEqual(facts('cancelled'), { EVENT: 'cancelled', JOB_ID: 'cancelled', QUEUE: 'default', COMMAND: 'sleep 30', EXIT_CODE: '', SIGNAL: 'SIGTERM', ATTEMPT: '1', LAST_ERROR: 'cancelled: killed by SIGTERM', ran: true })
      const log = readFileSync(join(home.dir, 'logs', 'hooks.log'), 'utf8')
      assert.match(log, /^=== hook on_success of job ok \(completed\) · started \S+ · worker w\d+-\w+ ===$/m)
      assert.match(log, /^=== hook on_failure \(global\) of job skipped \(skipped\) · exit code 0 · \d+\.\d{3}s ===$/m)
    } finally {
      await home.cleanup()
    }
  })

  test('a command full of quotes, $(…) and backticks reaches the hook intact and runs nothing; a cleared global hook runs no more', async () => {
    const home = new Home()
    try {
      const marker = (n: number) => join(home.dir, `marker${n}`)
      // A comment: the job itself runs `true` and nothing after it.
      const command = `true # it's "quoted" $(touch ${marker(1)}) \`touch ${marker(2)}\` '$(touch ${marker(3)})' \\"; touch ${marker(4)}`
      const out = join(home.dir, 'out')
      await home.ok(['config', 'set', 'on_finish', `touch ${marker(5)}`])
      await home.ok(['config', 'set', 'on_finish', ''])
      assert.equal((await home.ok(['config', 'get', 'on_finish'])).trim(), '')
      const id = 'odd.id:with-all_the:allowed.chars-'
      await home.ok(['enqueue', JSON.stringify({ id, command, on_success: `printf '%s\\n%s' "$QUEUECTL_COMMAND" "$QUEUECTL_JOB_ID" > ${out}` })])
      await home.ok(['worker', 'run', '--drain']) // a draining worker runs the hooks before it exits
      assert.equal(readFileSync(out, 'utf8'), `${command}\n${id}`)
      for (const n of [1, 2, 3, 4, 5]) assert.equal(existsSync(marker(n)), false, `marker${n} exists`)
      assert.equal((await home.job(id)).state, 'completed')
    } finally {
      await home.cleanup()
    }
  })

  test('a hook that hangs and ignores SIGTERM is killed after hook_timeout with its group, and the job is untouched', async () => {
    const home = new Home()
    try {
      const pidFile = join(home.dir, 'hook.pid')
      await home.ok(['config', 'set', 'hook_timeout', '1s'])
      await home.ok(['enqueue', '--id', 'job', '--on-success', `trap '' TERM; sleep 300 & echo $$ $! > ${pidFile}; while :; do sleep 0.05; done`, 'true'])
      await home.ok(['worker', 'start'])
      const [hookPid, childPid] = (await waitFor('the hook to start its child', () => existsSync(pidFile) && readFileSync(pidFile, 'utf8').trim())).split(' ').map(Number)
      const before = await home.job('job')
      assert.equal(before.state, 'completed')
      const hooksLog = join(home.dir, 'logs', 'hooks.log')
      await waitFor('the hook to be stopped', () => lines(hooksLog).some((l) => /of job job \(completed\) · timed out after 1s · /.test(l)))
      assert.deepEqual(groupMembers(hookPid), [], 'no process of the hook is left')
      assert.equal(isAlive(childPid), false, 'its background child was stopped too')
      assert.deepEqual(await home.job('job'), before, 'the hook changed nothing of the job')
      await waitFor('the worker to say so', () => /hook on_success of job job: timed out after 1s/.test(readFileSync(join(home.dir, 'logs', 'worker.log'), 'utf8')))
    } finally {
      await home.cleanup()
    }
  })

  test('a hook holds no slot: a one-slot worker runs the next job while the hook waits', async () => {
    const home = new Home()
    try {
      const gate = join(home.dir, 'gate')
      const started = join(home.dir, 'started')
      await home.ok(['enqueue', '--id', 'first', '--on-finish', `touch ${started}; while [ ! -e ${gate} ]; do sleep 0.05; done`, 'true'])
      await home.ok(['worker', 'start', '--concurrency', '1'])
      await waitFor('the hook to start', () => existsSync(started))
      await home.ok(['enqueue', '--id', 'second', 'true'])
      await waitForState(home, 'second', 'completed')
      assert.equal(existsSync(gate), false, 'the hook was still waiting at its gate')
      writeFileSync(gate, '')
      await waitFor('the hook to end', () => /of job first \(completed\) · exit code 0/.test(readFileSync(join(home.dir, 'logs', 'hooks.log'), 'utf8')))
    } finally {
      await home.cleanup()
    }
  })

  test('a worker killed with SIGKILL while its hook runs: another worker stops that hook and runs it again', async () => {
    const home = new Home()
    try {
      const runs = join(home.dir, 'runs')
      const gate = join(home.dir, 'gate')
      // $PPID is the worker that runs the hook
      const hook = `echo "start $$ $PPID" >> ${runs}; while [ ! -e ${gate} ]; do sleep 0.05; done; echo "end $$" >> ${runs}`
      await home.ok(['enqueue', '--id', 'job', '--on-success', hook, 'true'])
      const pids = (await home.ok(['worker', 'start', '--count', '2'])).trim().split('\n').map(Number)
      const firstRun = await waitFor('the hook to start', () => lines(runs)[0])
      const [, hookPid, workerPid] = firstRun.split(' ').map(Number)
      assert.ok(pids.includes(workerPid), `the hook runs under worker ${workerPid}`)
      process.kill(workerPid, 'SIGKILL')
      const secondRun = await waitFor('the hook to start again', () => lines(runs)[1])
      const [, secondPid, secondWorker] = secondRun.split(' ').map(Number)
      assert.equal(secondWorker, pids.find((pid) => pid !== workerPid), 'the other worker runs it')
      // SIGKILL was sent before the second run began; the kernel ends the process when it next runs
      await waitFor('the first run to be stopped', () => !isAlive(hookPid), 5_000)
      writeFileSync(gate, '')
      await waitFor('the second run to end', () => lines(runs).length === 3)
      assert.deepEqual(lines(runs), [firstRun, secondRun, `end ${secondPid}`])
      assert.match(readFileSync(join(home.dir, 'logs', 'worker.log'), 'utf8'), /running the hooks of job job again: the worker that ran them is gone/)
      assert.equal((await home.job('job')).state, 'completed')
    } finally {
      await home.cleanup()
    }
  })
})
