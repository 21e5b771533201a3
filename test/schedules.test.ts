// Schedules (SPEC: Schedules): real CLI, real workers. The clock of the schedule math is QUEUECTL_NOW, one fixed
// instant per process: a worker run with it fires what is due then, so no test waits for a fire time.
import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Home, waitFor, waitForState } from './helpers.ts'

const at = (now: string, env: Record<string, string> = {}) => ({ env: { QUEUECTL_NOW: now, ...env } })
const drainAt = (home: Home, now: string) => home.ok(['worker', 'run', '--drain'], at(now))

async function schedule(home: Home, name: string): Promise<any> {
  return (await home.json(['schedule', 'ls'])).find((s: any) => s.name === name)
}

/** The ids of the jobs `name` enqueued, oldest first. */
async function jobsOf(home: Home, name: string): Promise<string[]> {
  return (await home.json(['list', '--limit', '1000'])).filter((j: any) => j.schedule === name).map((j: any) => j.id).reverse()
}

describe('daylight saving changes follow classic cron', { concurrency: true }, () => {
  const cases = [
    { zone: 'Europe/Berlin', change: 'spring forward', cron: '30 2 * * *', addAt: '2026-03-28T12:00:00Z',
      fires: '2026-03-29T01:00:00.000Z', shown: '2026-03-29 03:00 +02:00', probe: '2026-03-29T01:30:05Z', next: '2026-03-30T00:30:00.000Z' },
    { zone: 'Europe/Berlin', change: 'fall back', cron: '30 2 * * *', addAt: '2026-10-24T12:00:00Z',
      fires: '2026-10-25T00:30:00.000Z', shown: '2026-10-25 02:30 +02:00', probe: '2026-10-25T01:30:05Z', next: '2026-10-26T01:30:00.000Z' },
    { zone: 'America/New_York', change: 'spring forward', cron: '30 2 * * *', addAt: '2026-03-07T12:00:00Z',
      fires: '2026-03-08T07:00:00.000Z', shown: '2026-03-08 03:00 -04:00', probe: '2026-03-08T07:30:05Z', next: '2026-03-09T06:30:00.000Z' },
    { zone: 'America/New_York', change: 'fall back', cron: '30 1 * * *', addAt: '2026-10-31T12:00:00Z',
      fires: '2026-11-01T05:30:00.000Z', shown: '2026-11-01 01:30 -04:00', probe: '2026-11-01T06:30:05Z', next: '2026-11-02T06:30:00.000Z' },
  ]
  for (const c of cases) {
    const what = c.change === 'spring forward' ? 'the time skipped runs once right after the gap' : 'the time repeated runs once, at its first occurrence'
    test(`${c.zone}, ${c.change}: --cron '${c.cron}': ${what}`, async () => {
      const home = new Home()
      try {
        await home.ok(['schedule', 'add', 'daily', '--cron', c.cron, '--tz', c.zone, '--', 'echo "$QUEUECTL_JOB_ID"'], at(c.addAt))
        assert.equal((await schedule(home, 'daily')).next_at, c.fires)
        const row = (await home.ok(['schedule', 'ls'])).split('\n')[1].split(/ {2,}/)
        assert.deepEqual(row.slice(0, 4), ['daily', c.cron, c.zone, `${c.shown} (${row[3].split('(')[1]}`], 'ls shows the time on the clocks of the zone')
        await drainAt(home, new Date(Date.parse(c.fires) + 5_000).toISOString())
        await drainAt(home, c.probe) // an hour later: the other side of the change
        assert.deepEqual(await jobsOf(home, 'daily'), [`daily:${c.fires}`])
        assert.equal((await home.job(`daily:${c.fires}`)).state, 'completed')
        const after = await schedule(home, 'daily')
        assert.deepEqual([after.next_at, after.last_at, after.missed, after.skipped], [c.next, c.fires, 0, 0])
      } finally {
        await home.cleanup()
      }
    })
  }
})

describe('firing', { concurrency: true }, () => {
  test('four workers racing for each of three fire times enqueue one job per fire time, and it runs once', async () => {
    const home = new Home()
    try {
      const ran = join(home.dir, 'ran')
      await home.ok(['schedule', 'add', 'race', '--cron', '*/10 * * * *', '--tz', 'UTC', '--', `echo "$QUEUECTL_JOB_ID" >> ${ran}`], at('2026-06-01T10:05:00Z'))
      const times = ['2026-06-01T10:10:00.000Z', '2026-06-01T10:20:00.000Z', '2026-06-01T10:30:00.000Z']
      for (const time of times) {
        const now = new Date(Date.parse(time) + 1_000).toISOString()
        await Promise.all([1, 2, 3, 4].map(() => drainAt(home, now)))
      }
      const ids = times.map((time) => `race:${time}`)
      assert.deepEqual(await jobsOf(home, 'race'), ids)
      assert.deepEqual(readFileSync(ran, 'utf8').trim().split('\n'), ids)
      const race = await schedule(home, 'race')
      assert.deepEqual([race.missed, race.skipped, race.last_job, race.next_at], [0, 0, ids[2], '2026-06-01T10:40:00.000Z'])
    } finally {
      await home.cleanup()
    }
  })

  test('no worker for three fire times: one catch-up job for the latest, the two before it missed', async () => {
    const home = new Home()
    try {
      await home.ok(['schedule', 'add', 'hourly', '--cron', '@hourly', '--tz', 'UTC', '--', 'true'], at('2026-06-01T09:30:00Z'))
      await home.ok(['schedule', 'add', 'often', '--every', '10m', '--', 'true'], at('2026-06-01T09:30:00Z'))
      const ls = await home.run(['schedule', 'ls'])
      assert.match(ls.stderr, /no worker is running, so no schedule fires/)
      const worker = await home.run(['worker', 'run', '--drain'], at('2026-06-01T12:30:00Z'))
      assert.equal(worker.code, 0, worker.stderr)
      assert.match(worker.stderr, /schedule hourly: missed 2 earlier fire times/)
      assert.deepEqual(await jobsOf(home, 'hourly'), ['hourly:2026-06-01T12:00:00.000Z'])
      assert.deepEqual(await jobsOf(home, 'often'), ['often:2026-06-01T12:30:00.000Z'])
      const [hourly, often] = [await schedule(home, 'hourly'), await schedule(home, 'often')]
      assert.deepEqual([hourly.missed, hourly.next_at, hourly.last_at], [2, '2026-06-01T13:00:00.000Z', '2026-06-01T12:00:00.000Z'])
      assert.deepEqual([often.missed, often.next_at], [17, '2026-06-01T12:40:00.000Z'], 'every 10m from 09:30: 09:40 … 12:20 missed')
      assert.equal((await home.job('hourly:2026-06-01T12:00:00.000Z')).state, 'completed')
    } finally {
      await home.cleanup()
    }
  })

  test('a fire while the previous job is still running is skipped and counted; the next one after it ends fires', async () => {
    const home = new Home()
    try {
      const gate = join(home.dir, 'gate')
      await home.ok(['schedule', 'add', 'slow', '--cron', '0 * * * *', '--tz', 'UTC', '--', `while [ ! -e ${gate} ]; do sleep 0.02; done`], at('2026-06-01T09:30:00Z'))
      await home.ok(['worker', 'start'], at('2026-06-01T10:00:01Z'))
      await waitForState(home, 'slow:2026-06-01T10:00:00.000Z', 'processing')
      const second = await home.run(['worker', 'run', '--drain'], at('2026-06-01T11:00:01Z'))
      assert.match(second.stderr, /schedule slow: skipped 2026-06-01T11:00:00.000Z: its previous job slow:2026-06-01T10:00:00.000Z is still processing/)
      let slow = await schedule(home, 'slow')
      assert.deepEqual([slow.skipped, slow.missed, slow.last_job, slow.next_at], [1, 0, 'slow:2026-06-01T10:00:00.000Z', '2026-06-01T12:00:00.000Z'])
      writeFileSync(gate, '')
      await waitForState(home, 'slow:2026-06-01T10:00:00.000Z', 'completed')
      await drainAt(home, '2026-06-01T12:00:01Z')
      assert.deepEqual(await jobsOf(home, 'slow'), ['slow:2026-06-01T10:00:00.000Z', 'slow:2026-06-01T12:00:00.000Z'])
      slow = await schedule(home, 'slow')
      assert.deepEqual([slow.skipped, slow.last_job], [1, 'slow:2026-06-01T12:00:00.000Z'])
    } finally {
      await home.cleanup()
    }
  })

  test('run, pause, resume, rm; the zone, cwd and environment are those of `add`; GET /api/schedules needs the token', async () => {
    const home = new Home()
    try {
      const dir = join(home.dir, 'work')
      mkdirSync(dir)
      const out = join(home.dir, 'out')
      const added = { cwd: dir, env: { QUEUECTL_NOW: '2026-06-01T09:30:00Z', TZ: 'America/New_York', FOO: 'captured' } }
      await home.ok(['schedule', 'add', 'env', '--every', '1h', '--queue', 'reports', '--priority', '5', '--', 'printf', '%s %s\n', '$FOO', `${out}`], added)
      await home.ok(['schedule', 'add', 'env', '--every', '1h', '--replace', '--queue', 'reports', '--priority', '5', `printf '%s %s\\n' "$FOO" "$PWD" >> ${out}`], added)
      await home.ok(['schedule', 'add', 'morning', '--cron', '0 9 * * *', '--', 'true'], added)
      const later = { env: { TZ: 'Asia/Tokyo', QUEUECTL_NOW: '2026-06-01T10:00:00Z' } } // another zone, cwd and environment
      const morning = await home.json(['schedule', 'ls'], later)
      assert.deepEqual(morning.map((s: any) => [s.name, s.tz, s.next_at]),
        [['env', 'America/New_York', '2026-06-01T10:30:00.000Z'], ['morning', 'America/New_York', '2026-06-01T13:00:00.000Z']])
      assert.deepEqual(morning[0].job, { command: `printf '%s %s\\n' "$FOO" "$PWD" >> ${out}`, cwd: dir, queue: 'reports', priority: 5, max_retries: null, timeout: null, unique_key: null })

      const id = (await home.ok(['schedule', 'run', 'env'], later)).trim()
      assert.equal(id, 'env:2026-06-01T10:00:00.000Z')
      assert.deepEqual([(await home.job(id)).schedule, (await home.job(id)).queue, (await home.job(id)).priority], ['env', 'reports', 5])
      await home.ok(['worker', 'run', '--drain'], later)
      assert.equal(readFileSync(out, 'utf8'), `captured ${dir}\n`)
      assert.equal((await schedule(home, 'env')).last_job, id)

      assert.match(await home.ok(['schedule', 'pause', 'env']), /schedule env paused/)
      assert.match(await home.ok(['schedule', 'pause', 'env']), /already paused/)
      await drainAt(home, '2026-06-01T14:00:00Z') // past three of its times: nothing fires, nothing is missed
      assert.deepEqual(await jobsOf(home, 'env'), [id])
      assert.equal((await schedule(home, 'env')).paused, true)
      assert.match(await home.ok(['schedule', 'resume', 'env'], at('2026-06-01T14:00:00Z')), /schedule env resumed: next 2026-06-01 10:30 -04:00/)
      const env = await schedule(home, 'env')
      assert.deepEqual([env.paused, env.next_at, env.last_at, env.last_job, env.missed, env.skipped], [false, '2026-06-01T14:30:00.000Z', '2026-06-01T10:00:00.000Z', id, 0, 0])

      const token = 'schedules-test-token-0123456789'
      const dash = home.spawn(['dashboard', '--port', '0', '--token', token])
      try {
        let printed = ''
        dash.stdout!.setEncoding('utf8').on('data', (d) => (printed += d))
        const port = await waitFor('the dashboard URL', () => /:(\d+)\/\?token=/.exec(printed)?.[1])
        const url = `http://127.0.0.1:${port}/api/schedules`
        assert.equal((await fetch(url)).status, 401)
        const served = await (await fetch(url, { headers: { authorization: `Bearer ${token}` } })).json()
        assert.deepEqual(served, await home.json(['schedule', 'ls']))
      } finally {
        dash.kill('SIGTERM')
      }

      assert.match(await home.ok(['schedule', 'rm', 'env']), /schedule env removed/)
      const again = await home.run(['schedule', 'rm', 'env'])
      assert.equal(again.code, 1)
      assert.match(again.stderr, /no schedule named "env"/)
      assert.deepEqual((await home.json(['schedule', 'ls'])).map((s: any) => s.name), ['morning'])
      assert.equal((await home.job(id)).state, 'completed', 'its jobs stay')
    } finally {
      await home.cleanup()
    }
  })
})
