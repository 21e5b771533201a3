// Control and composition (SPEC: Named queues and concurrency, Pausing, Dependencies, Cancelling removing
// retrying, Waiting, Unique jobs, Worker slots): real CLI, real workers, real processes, side effects in files.
import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync, writeFileSync, existsSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { CLI, Home, isAlive, runProgram, waitFor, waitForState } from './helpers.ts'

/** Start and end marks of every run, from a side-effect file: `start ID NANOS` / `end ID NANOS` lines. */
function runsIn(file: string): { id: string; start: number; end: number }[] {
  if (!existsSync(file)) return []
  const open = new Map<string, number>()
  const runs: { id: string; start: number; end: number }[] = []
  for (const line of readFileSync(file, 'utf8').split('\n').filter(Boolean)) {
    const [mark, id, at] = line.split(' ')
    if (mark === 'start') open.set(id, Number(at))
    else runs.push({ id, start: open.get(id)!, end: Number(at) })
  }
  return runs
}

/** The most runs that overlapped at any instant. */
function peakOverlap(runs: { start: number; end: number }[]): number {
  const events = runs.flatMap((r) => [[r.start, 1], [r.end, -1]] as const).sort((a, b) => a[0] - b[0] || a[1] - b[1])
  let now = 0
  let peak = 0
  for (const [, delta] of events) peak = Math.max(peak, (now += delta))
  return peak
}

/** A command that marks its start and end in `file` around `body`. */
const marked = (file: string, id: string, body: string) =>
  `echo "start ${id} $(date +%s%N)" >> ${file}; ${body}; echo "end ${id} $(date +%s%N)" >> ${file}`

async function jobsByState(home: Home): Promise<Record<string, string>> {
  return Object.fromEntries((await home.json(['list', '--limit', '10000'])).map((j: any) => [j.id, j.state]))
}

describe('named queues, limits and pause', { concurrency: true }, () => {
  test('a limit of 2 with 8 workers and 40 jobs never has a third job of that queue processing', async () => {
    const home = new Home()
    try {
      const marks = join(home.dir, 'marks')
      const gate = join(home.dir, 'gate')
      await home.ok(['queue', 'set', 'narrow', '--concurrency', '2'])
      const body = `while [ ! -e ${gate} ]; do sleep 0.01; done; sleep 0.05`
      const lines = Array.from({ length: 40 }, (_, i) => JSON.stringify({ id: `n${i}`, queue: 'narrow', command: marked(marks, `n${i}`, body) }))
      await home.ok(['enqueue', '--file', '-'], { input: lines.join('\n') })
      await home.ok(['worker', 'start', '--count', '8'])
      const processing = async () => {
        const [narrow] = (await home.json(['queue', 'ls'])).filter((q: any) => q.name === 'narrow')
        assert.ok(narrow.counts.processing <= 2, `a sample saw ${narrow.counts.processing} processing`)
        return narrow
      }
      await waitFor('two jobs of the queue running', async () => (await processing()).counts.processing === 2)
      // Six idle workers keep trying while the gate holds the two: a sample never sees a third.
      for (let i = 0; i < 5; i++) assert.equal((await processing()).counts.processing, 2)
      writeFileSync(gate, '')
      await waitFor('40 jobs completed', async () => (await processing()).counts.completed === 40, 60_000, 10)
      const runs = runsIn(marks)
      assert.equal(runs.length, 40)
      assert.equal(peakOverlap(runs), 2, 'two ran at once, never three')
    } finally {
      await home.cleanup()
    }
  })

  test('pause while jobs run: they finish, nothing new starts, across a restart of every worker; resume runs the rest', async () => {
    const home = new Home()
    try {
      const gate = join(home.dir, 'gate')
      for (let i = 0; i < 2; i++) await home.ok(['enqueue', '--queue', 'q', '--id', `held${i}`, `while [ ! -e ${gate} ]; do sleep 0.02; done`])
      for (let i = 0; i < 4; i++) await home.ok(['enqueue', '--queue', 'q', '--id', `later${i}`, 'true'])
      await home.ok(['enqueue', '--id', 'other', 'true']) // the default queue is not paused
      await home.ok(['worker', 'start', '--count', '2'])
      await waitForState(home, 'held0', 'processing')
      await waitForState(home, 'held1', 'processing')
      assert.match(await home.ok(['pause', '--queue', 'q']), /queue q paused/)
      assert.match(await home.ok(['pause', '--queue', 'q']), /already paused/)
      const enq = await home.run(['enqueue', '--queue', 'q', '--id', 'late', 'true'])
      assert.equal(enq.code, 0)
      assert.match(enq.stderr, /queue q is paused/)
      writeFileSync(gate, '')
      await waitForState(home, 'held0', 'completed')
      await waitForState(home, 'held1', 'completed')
      await waitForState(home, 'other', 'completed')
      await home.ok(['worker', 'stop'])
      await home.ok(['worker', 'start', '--count', '2'])
      const [q] = (await home.json(['queue', 'ls'])).filter((x: any) => x.name === 'q')
      assert.equal(q.paused, true, 'the pause is stored with the queue')
      // Nothing of q starts: a worker that claims finds only the paused queue; `wait` says why it waits.
      const waited = await home.run(['wait', 'later0', '--timeout', '5s'], { env: { QUEUECTL_STALL_SECONDS: '0.5' } })
      assert.equal(waited.code, 124, waited.stderr)
      assert.match(waited.stderr, /queue q is paused/)
      for (const id of ['later0', 'later1', 'later2', 'later3', 'late']) assert.equal((await home.job(id)).state, 'pending')
      assert.match(await home.ok(['resume', '--queue', 'q']), /queue q resumed/)
      const all = await home.run(['wait', 'later0', 'later1', 'later2', 'later3', 'late', '--timeout', '20s'])
      assert.equal(all.code, 0, all.stderr)
    } finally {
      await home.cleanup()
    }
  })

  test('pause --all covers queues created later; resume --all undoes it; pause with no target is exit 2', async () => {
    const home = new Home()
    try {
      await home.ok(['pause', '--all'])
      await home.ok(['enqueue', '--queue', 'brand-new', '--id', 'x', 'true'])
      await home.ok(['enqueue', '--id', 'y', 'true'])
      const queues = await home.json(['queue', 'ls'])
      assert.deepEqual(queues.map((q: any) => [q.name, q.paused]), [['brand-new', true], ['default', true]])
      const drained = await home.run(['worker', 'run', '--drain'], { timeoutMs: 20_000 })
      assert.equal(drained.code, 0, 'a draining worker has nothing it may run, so it exits')
      assert.equal((await home.job('x')).state, 'pending')
      await home.ok(['resume', '--all'])
      await home.ok(['worker', 'run', '--drain'])
      assert.deepEqual(await jobsByState(home), { x: 'completed', y: 'completed' })
      assert.equal((await home.run(['pause'])).code, 2)
    } finally {
      await home.cleanup()
    }
  })

  test('worker --queue serves only its queues', async () => {
    const home = new Home()
    try {
      await home.ok(['enqueue', '--queue', 'a', '--id', 'ja', 'true'])
      await home.ok(['enqueue', '--queue', 'b', '--id', 'jb', 'true'])
      await home.ok(['worker', 'run', '--drain', '--queue', 'a'])
      assert.deepEqual(await jobsByState(home), { ja: 'completed', jb: 'pending' })
    } finally {
      await home.cleanup()
    }
  })
})

describe('dependencies', { concurrency: true }, () => {
  test('a diamond a → (b, c) → d runs in order; a file may name parents defined later', async () => {
    const home = new Home()
    try {
      const marks = join(home.dir, 'marks')
      const lines = [
        { id: 'd', after: ['b', 'c'], command: marked(marks, 'd', 'true') },
        { id: 'b', after: 'a', command: marked(marks, 'b', 'sleep 0.2') },
        { id: 'c', after: ['a'], command: marked(marks, 'c', 'sleep 0.1') },
        { id: 'a', command: marked(marks, 'a', 'sleep 0.1') },
      ]
      await home.ok(['enqueue', '--file', '-'], { input: lines.map((l) => JSON.stringify(l)).join('\n') })
      assert.deepEqual(await jobsByState(home), { a: 'pending', b: 'blocked', c: 'blocked', d: 'blocked' })
      const list = await home.ok(['list'])
      assert.match(list, /d\s+blocked.*waits for b, c/, 'list shows what a blocked job waits for')
      await home.ok(['worker', 'start', '--count', '3'])
      assert.equal((await home.run(['wait', 'd', '--timeout', '30s'])).code, 0)
      const runs = Object.fromEntries(runsIn(marks).map((r) => [r.id, r]))
      assert.ok(runs.b.start >= runs.a.end && runs.c.start >= runs.a.end, 'b and c after a')
      assert.ok(runs.d.start >= runs.b.end && runs.d.start >= runs.c.end, 'd after b and c')
      const d = await home.job('d')
      assert.deepEqual(d.parents.map((p: any) => [p.id, p.state, p.required]), [['b', 'completed', true], ['c', 'completed', true]])
      assert.deepEqual((await home.job('a')).dependants.map((p: any) => p.id), ['b', 'c'])
    } finally {
      await home.cleanup()
    }
  })

  test('a chain whose root dies is skipped; retrying the root from the DLQ revives the chain, which then completes', async () => {
    const home = new Home()
    try {
      const flag = join(home.dir, 'fixed')
      await home.ok(['enqueue', '--id', 'root', '--max-retries', '0', `test -e ${flag}`])
      await home.ok(['enqueue', '--id', 'mid', '--after', 'root', 'true'])
      await home.ok(['enqueue', '--id', 'leaf', '--after', 'mid', 'true'])
      await home.ok(['enqueue', '--id', 'any', '--after-any', 'root', 'true'])
      await home.ok(['worker', 'run', '--drain'])
      assert.deepEqual(await jobsByState(home), { root: 'dead', mid: 'skipped', leaf: 'skipped', any: 'completed' })
      assert.equal((await home.job('leaf')).last_error, 'dependency mid skipped')
      assert.equal((await home.job('mid')).last_error, 'dependency root dead')
      const stuck = await home.run(['retry', 'leaf'])
      assert.equal(stuck.code, 1)
      assert.match(stuck.stderr, /mid/)
      const waited = await home.run(['wait', 'leaf'])
      assert.equal(waited.code, 1, 'a skipped job is a failure for wait')
      writeFileSync(flag, '')
      const retried = await home.run(['dlq', 'retry', 'root'])
      assert.equal(retried.code, 0, retried.stderr)
      assert.match(retried.stderr, /2 skipped dependants back to blocked/)
      assert.deepEqual(await jobsByState(home), { root: 'pending', mid: 'blocked', leaf: 'blocked', any: 'completed' })
      await home.ok(['worker', 'run', '--drain'])
      assert.deepEqual(await jobsByState(home), { root: 'completed', mid: 'completed', leaf: 'completed', any: 'completed' })
    } finally {
      await home.cleanup()
    }
  })

  test('a cycle is refused naming it; rm keeps a parent an active job waits for', async () => {
    const home = new Home()
    try {
      const cycle = await home.run(['enqueue', '--file', '-'], {
        input: [{ id: 'a', command: 'true', after: ['b'] }, { id: 'b', command: 'true', after: ['a'] }].map((l) => JSON.stringify(l)).join('\n'),
      })
      assert.equal(cycle.code, 2)
      assert.match(cycle.stderr, /a → b → a/)
      await home.ok(['enqueue', '--id', 'p', '--delay', '1h', 'true'])
      await home.ok(['enqueue', '--id', 'c', '--after', 'p', 'true'])
      const rm = await home.run(['rm', 'p'])
      assert.equal(rm.code, 1)
      assert.match(rm.stderr, /active job c/)
      await home.ok(['rm', 'c', 'p'])
      assert.deepEqual(await home.json(['list']), [])
    } finally {
      await home.cleanup()
    }
  })
})

describe('kill, rm, retry, wait', { concurrency: true }, () => {
  test('kill of a running job that traps SIGTERM: SIGKILL after the grace, its group gone, cancelled and never retried', async () => {
    const home = new Home()
    try {
      const pidFile = join(home.dir, 'child.pid')
      await home.ok(['enqueue', '--id', 'stubborn', `trap "" TERM; sleep 60 & echo $! > ${pidFile}; while :; do sleep 0.05; done`])
      await home.ok(['worker', 'start'])
      await waitFor('the job started its child', () => existsSync(pidFile) && readFileSync(pidFile, 'utf8').trim())
      const child = Number(readFileSync(pidFile, 'utf8'))
      const follower = home.run(['logs', 'stubborn', '--follow'], { timeoutMs: 30_000 })
      const killed = await home.run(['kill', 'stubborn', '--grace', '1s', '--wait'], { timeoutMs: 30_000 })
      assert.equal(killed.code, 0, killed.stderr)
      const job = await home.job('stubborn')
      assert.equal(job.state, 'cancelled')
      assert.match(job.last_error, /cancelled: killed by SIGKILL/)
      assert.equal(job.attempts, 1)
      await waitFor('the group is gone', () => !isAlive(child), 5_000)
      assert.equal((await follower).code, 1, 'logs --follow ends with the job, exit 1 for cancelled')
      assert.equal((await home.run(['wait', 'stubborn'])).code, 1)
    } finally {
      await home.cleanup()
    }
  })

  test('kill of pending, blocked and failed jobs cancels them at once and skips required dependants', async () => {
    const home = new Home()
    try {
      await home.ok(['enqueue', '--id', 'later', '--delay', '1h', 'true'])
      await home.ok(['enqueue', '--id', 'child', '--after', 'later', 'true'])
      await home.ok(['enqueue', '--id', 'grandchild', '--after', 'child', 'true'])
      const r = await home.run(['kill', 'child'])
      assert.equal(r.code, 0)
      assert.deepEqual(await jobsByState(home), { later: 'pending', child: 'cancelled', grandchild: 'skipped' })
      const again = await home.run(['kill', 'child', 'later'])
      assert.equal(again.code, 1, 'a target already terminal is exit 1')
      assert.match(again.stderr, /child \(cancelled\)/)
      assert.equal((await home.job('later')).state, 'cancelled')
      const retried = await home.run(['retry', 'later', 'child'])
      assert.equal(retried.code, 0, retried.stderr)
      assert.deepEqual(await jobsByState(home), { later: 'pending', child: 'blocked', grandchild: 'blocked' })
    } finally {
      await home.cleanup()
    }
  })

  test('kill racing jobs that exit 0: each ends completed (exit 0) or cancelled, and none is ever retried', async () => {
    const home = new Home()
    try {
      const lines = Array.from({ length: 30 }, (_, i) => JSON.stringify({ id: `r${i}`, command: i % 2 ? 'true' : 'sleep 0.0$((RANDOM % 9))' }))
      await home.ok(['enqueue', '--file', '-'], { input: lines.join('\n') })
      await home.ok(['worker', 'start', '--concurrency', '4'])
      const kills = []
      for (let i = 0; i < 30; i++) kills.push(home.run(['kill', `r${i}`]))
      for (const r of await Promise.all(kills)) assert.ok(r.code === 0 || r.code === 1, r.stderr)
      await home.run(['wait', '--all', '--timeout', '30s'])
      for (const job of await home.json(['list'])) {
        assert.ok(['completed', 'cancelled'].includes(job.state), `${job.id} is ${job.state}`)
        assert.ok(job.attempts <= 1, `${job.id} ran ${job.attempts} times`)
        if (job.state === 'completed') assert.equal(job.exit_code, 0)
      }
    } finally {
      await home.cleanup()
    }
  })

  test("wait's exit codes: 0 all completed, 1 one dead, 2 unknown id, 124 on --timeout (the job untouched)", async () => {
    const home = new Home()
    try {
      await home.ok(['enqueue', '--id', 'ok', 'true'])
      await home.ok(['enqueue', '--id', 'bad', '--max-retries', '0', 'false'])
      await home.ok(['enqueue', '--id', 'slow', 'sleep 30'])
      await home.ok(['worker', 'start', '--concurrency', '3'])
      const ok = await home.run(['wait', 'ok', '--json'])
      assert.equal(ok.code, 0, ok.stderr)
      assert.deepEqual(JSON.parse(ok.stdout), [{ id: 'ok', state: 'completed', exit_code: 0, attempts: 1 }])
      assert.match(ok.stderr, /job ok completed/)
      const bad = await home.run(['wait', 'ok', 'bad'])
      assert.equal(bad.code, 1)
      assert.match(bad.stderr, /job bad dead: exit code 1/)
      assert.equal((await home.run(['wait', 'ok', 'nope'])).code, 2)
      const timeout = await home.run(['wait', 'slow', '--timeout', '500ms', '--quiet'])
      assert.equal(timeout.code, 124)
      assert.equal(timeout.stderr, '', '--quiet prints nothing')
      assert.equal((await home.job('slow')).state, 'processing')
    } finally {
      await home.cleanup()
    }
  })

  test('wait says once why nothing moves when no worker is alive, and wakes on the change that ends the job', async () => {
    const home = new Home()
    try {
      await home.ok(['enqueue', '--id', 'j', 'true'])
      const waiter = home.spawn(['wait', 'j'], { env: { QUEUECTL_STALL_SECONDS: '0.3' } })
      let stderr = ''
      waiter.stderr!.on('data', (d) => (stderr += d))
      const exited = new Promise<number | null>((resolve) => waiter.on('close', resolve))
      await waitFor('wait to explain the stall', () => /no worker is alive/.test(stderr))
      await home.ok(['worker', 'start'])
      assert.equal(await exited, 0)
      assert.equal(stderr.match(/no worker is alive/g)!.length, 1, 'said once')
    } finally {
      await home.cleanup()
    }
  })

  test('purge keeps a parent that an active job waits for, and knows every finished state', async () => {
    const home = new Home()
    try {
      await home.ok(['enqueue', '--id', 'parent', 'true'])
      await home.ok(['enqueue', '--id', 'gone', 'true'])
      await home.ok(['worker', 'run', '--drain'])
      await home.ok(['enqueue', '--id', 'child', '--after-any', 'parent', '--delay', '1h', 'true'])
      await home.ok(['enqueue', '--id', 'dropped', '--delay', '1h', 'true'])
      await home.ok(['kill', 'dropped'])
      assert.deepEqual(await home.json(['purge', '--state', 'cancelled']), ['dropped'])
      assert.deepEqual(await home.json(['purge']), ['gone'], 'the parent of the pending child stays')
      assert.equal((await home.job('child')).parents[0].state, 'completed')
      assert.equal((await home.run(['purge', '--state', 'pending'])).code, 2)
    } finally {
      await home.cleanup()
    }
  })

  test('rm deletes a finished job and its log; a running one needs --force', async () => {
    const home = new Home()
    try {
      await home.ok(['enqueue', '--id', 'done', 'echo hi'])
      await home.ok(['worker', 'run', '--drain'])
      assert.ok(existsSync(join(home.dir, 'logs', 'done.log')))
      await home.ok(['rm', 'done'])
      assert.ok(!existsSync(join(home.dir, 'logs', 'done.log')))
      assert.equal((await home.run(['show', 'done'])).code, 1)
      await home.ok(['enqueue', '--id', 'busy', 'sleep 30'])
      await home.ok(['worker', 'start'])
      await waitForState(home, 'busy', 'processing')
      const refused = await home.run(['rm', 'busy'])
      assert.equal(refused.code, 1)
      assert.match(refused.stderr, /--force/)
      await home.ok(['rm', '--force', 'busy'], { timeoutMs: 30_000 })
      assert.equal((await home.run(['show', 'busy'])).code, 1)
    } finally {
      await home.cleanup()
    }
  })
})

describe('unique jobs', { concurrency: true }, () => {
  test('4 concurrent enqueuers × 50 with one unique key leave exactly one active job; a duplicate prints the holder', async () => {
    const home = new Home()
    try {
      const script = `
        const { openQueue } = await import(${JSON.stringify(CLI)});
        const queue = await openQueue(process.env.QUEUECTL_HOME);
        for (let i = 0; i < 50; i++) await queue.enqueue({ command: 'sleep 60', unique_key: 'nightly' });
        queue.close();`
      const runs = await Promise.all(Array.from({ length: 4 }, () => runProgram(process.execPath, ['--input-type=module', '-e', script], { env: home.env })))
      for (const r of runs) assert.equal(r.code, 0, r.stderr)
      const jobs = await home.json(['list'])
      assert.equal(jobs.length, 1)
      const dup = await home.run(['enqueue', '--unique-key', 'nightly', 'sleep 60'])
      assert.equal(dup.code, 0)
      assert.equal(dup.stdout.trim(), jobs[0].id)
      assert.match(dup.stderr, new RegExp(`duplicate of ${jobs[0].id} \\(pending\\): not enqueued`))
      const asJson = await home.json(['enqueue', '--unique-key', 'nightly', 'sleep 60'])
      assert.equal(asJson.duplicate, true)
      await home.ok(['enqueue', '--queue', 'other', '--unique-key', 'nightly', 'true']) // keys are per queue
      await home.ok(['kill', jobs[0].id])
      const fresh = (await home.ok(['enqueue', '--unique-key', 'nightly', '--id', 'fresh', 'true'])).trim()
      assert.equal(fresh, 'fresh', 'a cancelled job no longer holds the key')
      const retry = await home.run(['retry', jobs[0].id])
      assert.equal(retry.code, 1)
      assert.match(retry.stderr, /held by pending job "fresh"/)
    } finally {
      await home.cleanup()
    }
  })

  test('--unique-for also counts jobs that finished within it; in --file, earlier lines count', async () => {
    const home = new Home()
    try {
      await home.ok(['enqueue', '--id', 'first', '--unique-key', 'k', 'true'])
      await home.ok(['worker', 'run', '--drain'])
      assert.equal((await home.ok(['enqueue', '--unique-key', 'k', '--unique-for', '1h', 'true'])).trim(), 'first')
      assert.notEqual((await home.ok(['enqueue', '--unique-key', 'k', 'true'])).trim(), 'first', 'without --unique-for a finished job holds nothing')
      const file = [{ id: 'x1', command: 'true', unique_key: 'f' }, { id: 'x2', command: 'true', unique_key: 'f' }].map((l) => JSON.stringify(l)).join('\n')
      const r = await home.run(['enqueue', '--file', '-'], { input: file })
      assert.equal(r.code, 0, r.stderr)
      assert.deepEqual(r.stdout.trim().split('\n'), ['x1', 'x1'])
      assert.equal((await home.run(['show', 'x2'])).code, 1)
    } finally {
      await home.cleanup()
    }
  })
})

describe('worker slots', { concurrency: true }, () => {
  test('one worker with --concurrency 4 runs 4 jobs at once, each with its QUEUECTL_SLOT; status shows the busy slots', async () => {
    const home = new Home()
    try {
      const gate = join(home.dir, 'gate')
      const lines = Array.from({ length: 4 }, (_, i) => JSON.stringify({ id: `s${i}`, command: `echo "slot $QUEUECTL_SLOT queue $QUEUECTL_QUEUE"; while [ ! -e ${gate} ]; do sleep 0.02; done` }))
      await home.ok(['enqueue', '--file', '-'], { input: lines.join('\n') })
      await home.ok(['worker', 'start', '--concurrency', '4'])
      const status = await waitFor('4 busy slots', async () => {
        const s = await home.json(['status'])
        return s.workers.length === 1 && s.workers[0].jobs.length === 4 ? s : undefined
      })
      assert.equal(status.workers[0].slots, 4)
      assert.deepEqual(status.workers[0].jobs.map((j: any) => j.slot).sort(), [0, 1, 2, 3])
      writeFileSync(gate, '')
      assert.equal((await home.run(['wait', '--all'])).code, 0)
      const slots = []
      for (let i = 0; i < 4; i++) slots.push((await home.ok(['logs', `s${i}`])).match(/slot (\d) queue default/)![1])
      assert.deepEqual(slots.sort(), ['0', '1', '2', '3'])
    } finally {
      await home.cleanup()
    }
  })

  test('worker stop waits for every slot; --force puts all of them back to pending, not counted', async () => {
    const home = new Home()
    try {
      for (let i = 0; i < 3; i++) await home.ok(['enqueue', '--id', `f${i}`, 'sleep 30'])
      await home.ok(['worker', 'start', '--concurrency', '3'])
      await waitFor('3 busy slots', async () => (await home.json(['status'])).workers[0]?.jobs.length === 3)
      await home.ok(['worker', 'stop', '--force'], { timeoutMs: 30_000 })
      for (let i = 0; i < 3; i++) {
        const job = await home.job(`f${i}`)
        assert.equal(job.state, 'pending')
        assert.equal(job.attempts, 0)
      }
    } finally {
      await home.cleanup()
    }
  })
})
