// Choosing the storage: --db / QUEUECTL_DB, what a bad URL or an unreachable server does, and on PostgreSQL what
// only a shared database can show (output from another host's home, a newer schema refused).
import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { BACKEND, Home, waitFor, waitForState } from './helpers.ts'

const onPostgres = BACKEND === 'postgres' ? false : 'needs the PostgreSQL pass'

function oneLine(stderr: string): string {
  const lines = stderr.split('\n').filter((line) => line.trim())
  assert.equal(lines.length, 1, `one line on stderr: ${JSON.stringify(stderr)}`)
  return lines[0]
}

describe('storage backends', { concurrency: true }, () => {
  test('a --db that is not a postgres URL, or names a bad schema, is refused with exit 2 and one line', async () => {
    const home = new Home()
    try {
      for (const [db, says] of [
        ['mysql://localhost/jobs', /--db takes a postgres:\/\/ URL, not "mysql"/],
        ['not a url', /is not a URL: use postgres:\/\/user@host:5432\/database/],
        ['postgres://localhost/jobs?schema=Bad-Name', /invalid schema "Bad-Name" in --db: use 1–40 lowercase letters/],
      ] as const) {
        for (const args of [['--db', db, 'status'], [`--db=${db}`, 'enqueue', 'true'], ['status']]) {
          const r = await home.run(args, { env: { QUEUECTL_DB: args[0] === 'status' ? db : '' } })
          assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`)
          assert.match(oneLine(r.stderr), says)
        }
      }
      const r = await home.run(['--db'])
      assert.equal(r.code, 2)
      assert.match(oneLine(r.stderr), /--db needs a postgres:\/\/ URL/)
    } finally {
      await home.cleanup()
    }
  })

  test('a server that does not answer: exit 1 and one line that says where', async () => {
    const home = new Home()
    try {
      const r = await home.run(['--db', 'postgres://nobody@127.0.0.1:1/jobs?schema=q1', 'enqueue', 'true'])
      assert.equal(r.code, 1, r.stderr)
      assert.match(oneLine(r.stderr), /cannot reach PostgreSQL at 127\.0\.0\.1:1\/jobs \(schema q1\): .*ECONNREFUSED/)
    } finally {
      await home.cleanup()
    }
  })

  test('a database that does not exist: exit 1 and one line naming it', { skip: onPostgres }, async () => {
    const home = new Home()
    try {
      const url = new URL(home.env.QUEUECTL_DB)
      url.pathname = '/no_such_database'
      const r = await home.run(['status'], { env: { QUEUECTL_DB: url.href } })
      assert.equal(r.code, 1, r.stderr)
      assert.match(oneLine(r.stderr), /cannot open the queue at .*\/no_such_database \(schema \w+\): database "no_such_database" does not exist/)
    } finally {
      await home.cleanup()
    }
  })

  test('output is in the database: a home that never ran the job shows its log, and purge removes it', { skip: onPostgres }, async () => {
    const host = new Home()
    const other = new Home()
    const env = { QUEUECTL_DB: host.env.QUEUECTL_DB } // the same queue, seen from another host's home
    try {
      const id = (await host.ok(['enqueue', '--', 'printf', 'line one\\nline two\\n'])).trim()
      await host.ok(['worker', 'run', '--drain'])
      await waitForState(host, id, 'completed')
      const log = await other.ok(['logs', id], { env })
      assert.match(log, /^=== attempt 1 · started .* ===\nline one\nline two\n=== attempt 1 · exit code 0 · .* ===\n$/)
      const sections = await other.json(['logs', id], { env })
      assert.equal(sections.length, 1)
      assert.equal(sections[0].output, 'line one\nline two\n')
      await other.ok(['purge', '--older-than', '0s'], { env })
      const r = await other.run(['logs', id], { env })
      assert.equal(r.code, 1)
      assert.match(r.stderr, new RegExp(`no job with id "${id}"`))
    } finally {
      await host.cleanup()
      await other.cleanup()
    }
  })

  test('a burst of 40 MB as a job ends reaches the database whole: the log read from another home is the file, byte for byte', { skip: onPostgres, timeout: 120_000 }, async () => {
    const host = new Home()
    const other = new Home()
    try {
      const id = (await host.ok(['enqueue', '--', "head -c 40000000 /dev/zero | tr '\\0' x; echo; echo LAST-LINE"])).trim()
      await host.ok(['worker', 'run', '--drain'], { timeoutMs: 100_000 })
      await waitForState(host, id, 'completed')
      const file = readFileSync(join(host.dir, 'logs', `${id}.log`))
      const r = await other.run(['logs', id], { env: { QUEUECTL_DB: host.env.QUEUECTL_DB }, timeoutMs: 60_000 })
      assert.equal(r.code, 0, r.stderr)
      assert.ok(file.length > 40_000_000)
      assert.ok(r.stdout === file.toString('utf8'), `the database's copy (${r.stdout.length} bytes) is the log file (${file.length} bytes)`)
    } finally {
      await host.cleanup()
      await other.cleanup()
    }
  })

  test('a schema newer than this queuectl is refused with a line naming both versions, and left unchanged', { skip: onPostgres }, async () => {
    const home = new Home()
    const { default: pg } = await import('pg')
    const url = new URL(home.env.QUEUECTL_DB)
    const schema = url.searchParams.get('schema')!
    url.searchParams.delete('schema')
    const client = new pg.Client({ connectionString: url.href })
    await client.connect()
    try {
      await home.ok(['enqueue', '--id', 'kept', 'true'])
      await client.query(`UPDATE ${schema}.meta SET value = '99' WHERE key = 'schema_version'`)
      const r = await home.run(['enqueue', 'true'])
      assert.equal(r.code, 1)
      assert.match(oneLine(r.stderr), /has schema 99, newer than this queuectl \S+ knows \(\d+\): upgrade queuectl; nothing was changed/)
      const { rows } = await client.query(`SELECT id FROM ${schema}.jobs`)
      assert.deepEqual(rows.map((row) => row.id), ['kept'])
    } finally {
      await client.end()
      await home.cleanup()
    }
  })
})

describe('wake-ups through the database', { skip: onPostgres }, () => {
  test('an idle worker that no wake file reaches (another home) starts a new job at once: NOTIFY, not its poll', async () => {
    const enqueuer = new Home()
    const workerHome = new Home()
    const env = { QUEUECTL_DB: enqueuer.env.QUEUECTL_DB, QUEUECTL_IDLE_POLL: '60' } // its poll would take a minute
    const worker = workerHome.spawn(['worker', 'run'], { env })
    try {
      await waitFor('the worker to register', async () => (await enqueuer.json(['status'])).workers.length === 1)
      for (const word of ['first', 'second']) {
        const id = (await enqueuer.ok(['enqueue', '--', 'echo', word])).trim()
        const job = await waitForState(enqueuer, id, 'completed', 10_000)
        assert.ok(Date.parse(job.started_at) - Date.parse(job.created_at) < 5_000, `picked up in ${Date.parse(job.started_at) - Date.parse(job.created_at)} ms`)
      }
    } finally {
      worker.kill('SIGTERM')
      await enqueuer.cleanup()
      await workerHome.cleanup()
    }
  })
})
