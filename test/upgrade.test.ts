// Upgrades (SPEC "Upgrades"): a home made by queuectl 0.1.0 (test/fixtures/home-0.1.0, made by the 0.1.0 bin kept
// beside it) opens with this version, migrated once under the lock, keeping every job, attempt and config value;
// the 0.1.0 bin then refuses it, and this version refuses a home of a newer schema. Nothing is changed by a refusal.
import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { cpSync, readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { Home, ROOT, runProgram, sqliteOnly, waitForState } from './helpers.ts'

const FIXTURE = join(ROOT, 'test', 'fixtures', 'home-0.1.0')
const OLD_BIN = join(ROOT, 'test', 'fixtures', 'queuectl-0.1.0.js')

function homeFromFixture(): Home {
  const home = new Home('queuectl-upgrade-')
  cpSync(FIXTURE, home.dir, { recursive: true })
  return home
}

function oldBin(home: Home, args: string[]) {
  return runProgram(process.execPath, [OLD_BIN, ...args], { env: home.env })
}

describe('upgrades', { concurrency: true, skip: sqliteOnly }, () => {
  test('a 0.1.0 home opens, keeps every job, attempt and config value, and runs its pending jobs', async () => {
    const home = homeFromFixture()
    try {
      const before = JSON.parse((await oldBin(home, ['list', '--json'])).stdout)
      assert.equal(before.length, 5, 'the fixture holds five jobs (read by the 0.1.0 bin before the upgrade)')
      const jobs = await home.json(['list'])
      const pick = (list: any[]) => list.map((j) => [j.id, j.state, j.attempts, j.max_retries, j.priority, j.command, j.run_at, j.created_at])
      assert.deepEqual(pick(jobs), pick(before), 'every job is kept as it was')
      const dead = await home.job('fail1')
      assert.equal(dead.state, 'dead')
      assert.deepEqual(dead.history.map((a: any) => [a.attempt, a.exit_code, a.error]), [[1, 3, 'exit code 3'], [2, 3, 'exit code 3']])
      const config = await home.json(['config', 'list'])
      assert.equal(config.max_retries, 4)
      assert.equal(config.backoff_base, 0)
      assert.equal(config.retention, 604800)
      assert.equal(config.job_timeout, 120)
      assert.ok(readFileSync(join(home.dir, 'logs', 'done1.log'), 'utf8').includes('hello-0.1.0'), 'logs are kept')
      await home.ok(['worker', 'start'])
      const pend = await waitForState(home, 'pend1', 'completed')
      assert.equal(pend.exit_code, 0)
      assert.equal((await home.job('later1')).state, 'pending', 'a job scheduled for 2099 still waits')
      assert.equal((await home.job('prio1')).timeout, 30)
    } finally {
      await home.cleanup()
    }
  })

  test('the 0.1.0 bin refuses a migrated home with a clear line and changes nothing', async () => {
    const home = homeFromFixture()
    try {
      await home.ok(['status'])
      const db = readFileSync(join(home.dir, 'queue.db'))
      const journal = readFileSync(join(home.dir, 'queue.db.journal'))
      for (const args of [['list'], ['enqueue', 'echo from-the-old-bin']]) {
        const r = await oldBin(home, args)
        assert.equal(r.code, 1, `0.1.0 ${args[0]}: ${r.stderr}`)
        assert.match(r.stderr, /newer queuectl \(schema \d+\)/)
        assert.equal(r.stderr.trim().split('\n').length, 1, 'one line')
      }
      assert.ok(readFileSync(join(home.dir, 'queue.db')).equals(db), 'queue.db is unchanged')
      assert.ok(readFileSync(join(home.dir, 'queue.db.journal')).equals(journal), 'the journal is unchanged')
    } finally {
      await home.cleanup()
    }
  })

  test('a migrated home has the same tables, columns and indexes as a new one', async () => {
    const migrated = homeFromFixture()
    const fresh = new Home()
    try {
      await migrated.ok(['status'])
      await fresh.ok(['status'])
      const SQL = await (createRequire(join(ROOT, 'package.json'))('sql.js') as () => Promise<any>)()
      const shape = (home: Home) => {
        const db = new SQL.Database(readFileSync(join(home.dir, 'queue.db')))
        try {
          const objects = db.exec("SELECT type, name, tbl_name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name")[0].values
          const columns = objects.filter(([type]: string[]) => type === 'table').map(([, name]: string[]) =>
            [name, db.exec(`PRAGMA table_info(${name})`)[0].values.map((c: unknown[]) => `${c[1]} ${c[2]} ${c[3]} ${c[4]}`)])
          const indexes = objects.filter(([type]: string[]) => type === 'index').map(([, name]: string[]) =>
            [name, db.exec(`PRAGMA index_xinfo(${name})`)[0].values.map((c: unknown[]) => `${c[2]} ${c[3]}`), db.exec(`SELECT sql FROM sqlite_master WHERE name = '${name}'`)[0].values[0][0]?.replace(/\s+/g, ' ')])
          return { objects, columns, indexes }
        } finally {
          db.close()
        }
      }
      assert.deepEqual(shape(migrated), shape(fresh))
    } finally {
      await migrated.cleanup()
      await fresh.cleanup()
    }
  })

  test('concurrent first calls migrate once; both see every job', async () => {
    const home = homeFromFixture()
    try {
      const results = await Promise.all([home.json(['list']), home.json(['list']), home.run(['enqueue', '--id', 'new1', 'true'])])
      const fixtureIds = ['done1', 'fail1', 'later1', 'pend1', 'prio1']
      for (const list of results.slice(0, 2) as any[][]) assert.deepEqual(fixtureIds.filter((id) => list.some((j) => j.id === id)), fixtureIds)
      assert.equal(results[2].code, 0, results[2].stderr)
      assert.equal((await home.json(['list'])).length, 6)
      assert.equal((await home.job('fail1')).history.length, 2, 'no migration step ran twice')
    } finally {
      await home.cleanup()
    }
  })

  test('a home of a newer schema is refused naming both versions, and left untouched', async () => {
    const home = new Home()
    try {
      await home.ok(['enqueue', '--id', 'a', 'true'])
      await home.ok(['worker', 'run', '--drain']) // a compaction-free journal; the snapshot is rewritten below
      const SQL = await (createRequire(join(ROOT, 'package.json'))('sql.js') as () => Promise<any>)()
      const path = join(home.dir, 'queue.db')
      const db = new SQL.Database(readFileSync(path))
      db.run("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
      const { writeFileSync } = await import('node:fs')
      writeFileSync(path, db.export())
      db.close()
      const bytes = readFileSync(path)
      const r = await home.run(['list'])
      assert.equal(r.code, 1, r.stderr)
      assert.match(r.stderr, /schema 99.*newer queuectl.*this is queuectl \d+\.\d+\.\d+ \(schema \d+\)/)
      assert.ok(readFileSync(path).equals(bytes), 'queue.db is unchanged')
    } finally {
      await home.cleanup()
    }
  })
})
