// Bad input: every case exits 2, prints exactly one non-empty line on stderr (no stack trace),
// and leaves the stored jobs and config unchanged.
import { test, describe, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { BACKEND, Home, runCli, schemaOf, withPostgres, type RunResult } from './helpers.ts'

interface Case {
  name: string
  args: string[]
  input?: string
  /** extra checks on the case's home after the call */
  check?: (home: string) => Promise<void>
  /** what the error line must say: the fault, named */
  says?: RegExp
}

const job = (o: Record<string, unknown>) => JSON.stringify(o)
const good = (n: number) => job({ command: `echo good ${n}` })

const cases: Case[] = [
  // JSON
  { name: 'invalid JSON', args: ['enqueue', '{"command": "echo hi"'] },
  { name: 'invalid JSON (single quotes)', args: ['enqueue', "{'command': 'echo hi'}"] },
  { name: 'JSON that is not an object (--file number)', args: ['enqueue', '--file', '-'], input: '42\n' },
  { name: 'JSON that is not an object (--file string)', args: ['enqueue', '--file', '-'], input: '"echo hi"\n' },
  { name: 'JSON array of non-objects (--file)', args: ['enqueue', '--file', '-'], input: '[1, 2]\n' },
  { name: 'missing command', args: ['enqueue', job({ id: 'nocmd' })] },
  { name: 'no command at all', args: ['enqueue'] },
  { name: 'empty command (JSON)', args: ['enqueue', job({ command: '' })] },
  { name: 'empty command (positional)', args: ['enqueue', ''] },
  { name: 'command not a string', args: ['enqueue', job({ command: 42 })] },
  { name: 'priority "high"', args: ['enqueue', job({ command: 'echo', priority: 'high' })] },
  { name: 'priority 1.5', args: ['enqueue', job({ command: 'echo', priority: 1.5 })] },
  { name: '--priority high', args: ['enqueue', '--priority', 'high', '--', 'echo', 'hi'] },
  { name: 'max_retries -1', args: ['enqueue', job({ command: 'echo', max_retries: -1 })] },
  { name: 'max_retries 1.5', args: ['enqueue', job({ command: 'echo', max_retries: 1.5 })] },
  { name: 'max_retries "3"', args: ['enqueue', job({ command: 'echo', max_retries: '3' })] },
  { name: '--max-retries abc', args: ['enqueue', '--max-retries', 'abc', '--', 'echo', 'hi'] },
  { name: 'timeout "x"', args: ['enqueue', job({ command: 'echo', timeout: 'x' })] },
  { name: 'timeout -1', args: ['enqueue', job({ command: 'echo', timeout: -1 })] },
  { name: '--timeout x', args: ['enqueue', '--timeout', 'x', '--', 'echo', 'hi'] },
  { name: '--timeout 5x', args: ['enqueue', '--timeout', '5x', '--', 'echo', 'hi'] },
  { name: '--timeout 30d (over 23 days)', args: ['enqueue', '--timeout', '30d', '--', 'echo', 'hi'] },
  { name: 'timeout "5 minutes" (JSON)', args: ['enqueue', job({ command: 'echo', timeout: '5 minutes' })] },
  { name: 'timeout true (JSON)', args: ['enqueue', job({ command: 'echo', timeout: true })] },
  { name: 'unknown JSON key', args: ['enqueue', job({ command: 'echo', colour: 'red' })] },
  // ids
  {
    name: 'duplicate id',
    args: ['enqueue', job({ id: 'existing', command: 'echo replaced', priority: 9 })],
    check: async (home) => {
      const r = await runCli(['show', 'existing', '--json'], { env: envFor(home) })
      assert.equal(r.code, 0, r.stderr)
      const existing = JSON.parse(r.stdout)
      assert.equal(existing.command, 'echo original')
      assert.equal(existing.priority, 3)
      assert.equal(existing.state, 'pending')
    },
  },
  { name: 'duplicate id (--id)', args: ['enqueue', '--id', 'existing', '--', 'echo', 'replaced'] },
  { name: 'id with a space and !', args: ['enqueue', job({ id: 'bad id!', command: 'echo' })] },
  { name: 'id with a slash', args: ['enqueue', '--id', 'a/b', '--', 'echo', 'hi'] },
  { name: 'id starting with .', args: ['enqueue', job({ id: '.hidden', command: 'echo' })] },
  { name: 'id starting with -', args: ['enqueue', job({ id: '-x', command: 'echo' })] },
  { name: 'empty id', args: ['enqueue', job({ id: '', command: 'echo' })] },
  { name: 'non-ASCII id', args: ['enqueue', job({ id: 'jöb', command: 'echo' })] },
  { name: 'id of 129 chars', args: ['enqueue', job({ id: 'a'.repeat(129), command: 'echo' })] },
  // schedule
  { name: 'both run_at and delay (JSON)', args: ['enqueue', job({ command: 'echo', run_at: '2030-01-01T00:00:00Z', delay: '5m' })] },
  { name: 'both --run-at and --delay', args: ['enqueue', '--run-at', '2030-01-01T00:00:00Z', '--delay', '5m', '--', 'echo', 'hi'] },
  { name: 'bad --delay 5x', args: ['enqueue', '--delay', '5x', '--', 'echo', 'hi'] },
  { name: 'bad --delay abc', args: ['enqueue', '--delay', 'abc', '--', 'echo', 'hi'] },
  { name: 'bad delay in JSON', args: ['enqueue', job({ command: 'echo', delay: 'soon' })] },
  { name: 'bad --run-at', args: ['enqueue', '--run-at', 'notadate', '--', 'echo', 'hi'] },
  { name: 'bad --run-at (month 13)', args: ['enqueue', '--run-at', '2030-13-45T00:00:00Z', '--', 'echo', 'hi'] },
  { name: 'bad run_at in JSON', args: ['enqueue', job({ command: 'echo', run_at: 'tomorrow' })] },
  { name: 'bad --run-at (February 30)', args: ['enqueue', '--run-at', '2030-02-30', '--', 'echo', 'hi'] },
  { name: 'bad --run-at (24:00)', args: ['enqueue', '--run-at', '2030-01-01T24:00', '--', 'echo', 'hi'] },
  { name: 'bad --run-at (a date and junk)', args: ['enqueue', '--run-at', '2030-01-01 junk', '--', 'echo', 'hi'] },
  // cwd
  { name: '--cwd that does not exist', args: ['enqueue', '--cwd', '/nonexistent/queuectl-dir', '--', 'echo', 'hi'] },
  { name: 'cwd that does not exist (JSON)', args: ['enqueue', job({ command: 'echo', cwd: '/nonexistent/queuectl-dir' })] },
  // bulk
  {
    name: '--file with one invalid JSON line among good ones',
    args: ['enqueue', '--file', '-'],
    input: [good(1), good(2), '{"command": "echo broken"', good(4)].join('\n') + '\n',
  },
  {
    name: '--file with one line missing its command',
    args: ['enqueue', '--file', '-'],
    input: [good(1), job({ id: 'nocmd' }), good(3)].join('\n') + '\n',
  },
  {
    name: '--file with an id that already exists',
    args: ['enqueue', '--file', '-'],
    input: [job({ id: 'fresh1', command: 'echo' }), job({ id: 'existing', command: 'echo' })].join('\n') + '\n',
  },
  {
    name: '--file with the same id twice',
    args: ['enqueue', '--file', '-'],
    input: [job({ id: 'twice', command: 'echo 1' }), job({ id: 'twice', command: 'echo 2' })].join('\n') + '\n',
  },
  {
    name: '--file JSON array with one bad element',
    args: ['enqueue', '--file', '-'],
    input: JSON.stringify([{ command: 'echo 1' }, { command: 'echo 2', priority: 'high' }, { command: 'echo 3' }]),
  },
  // list / show / dlq
  { name: 'unknown --state for list', args: ['list', '--state', 'bogus'] },
  { name: 'list --limit abc', args: ['list', '--limit', 'abc'] },
  { name: 'unknown flag (list --bogus)', args: ['list', '--bogus'] },
  { name: 'unknown flag (status --frob)', args: ['status', '--frob'] },
  { name: 'unknown command', args: ['frobnicate'] },
  { name: 'show without an id', args: ['show'] },
  { name: 'dlq retry without ids or --all', args: ['dlq', 'retry'] },
  // config
  { name: 'unknown config key (set)', args: ['config', 'set', 'colour', 'red'] },
  { name: 'unknown config key (get)', args: ['config', 'get', 'colour'] },
  { name: 'config max_retries -1', args: ['config', 'set', 'max_retries', '-1'] },
  { name: 'config max_retries 1.5', args: ['config', 'set', 'max_retries', '1.5'] },
  { name: 'config max-retries 1001', args: ['config', 'set', 'max-retries', '1001'] },
  { name: 'config backoff_base abc', args: ['config', 'set', 'backoff_base', 'abc'] },
  { name: 'config backoff_max 604801', args: ['config', 'set', 'backoff_max', '604801'] },
  { name: 'config job_timeout -5', args: ['config', 'set', 'job_timeout', '-5'] },
  { name: 'config set without a value', args: ['config', 'set', 'max_retries'] },
  { name: 'config job_timeout 5x', args: ['config', 'set', 'job_timeout', '5x'] },
  { name: 'config job_timeout 30d (over 23 days)', args: ['config', 'set', 'job_timeout', '30d'] },
  { name: 'config retention -1d', args: ['config', 'set', 'retention', '-1d'] },
  { name: 'config backoff_max 8d (over 7 days)', args: ['config', 'set', 'backoff_max', '8d'] },
  // durations of other commands
  { name: 'worker stop --timeout abc', args: ['worker', 'stop', '--timeout', 'abc'] },
  { name: 'worker stop --timeout -5', args: ['worker', 'stop', '--timeout=-5'] },
  { name: 'purge --older-than 5x', args: ['purge', '--older-than', '5x'] },
  // queues, dependencies, kill, unique keys
  { name: 'unknown parent (--after)', args: ['enqueue', '--after', 'nosuchjob', '--', 'true'] },
  { name: 'unknown parent (after_any in JSON)', args: ['enqueue', job({ command: 'true', after_any: ['existing', 'ghost'] })] },
  { name: 'a cycle in --file', args: ['enqueue', '--file', '-'], input: [job({ id: 'a', command: 'true', after: ['b'] }), job({ id: 'b', command: 'true', after: 'a' })].join('\n') },
  { name: 'a job waiting for itself', args: ['enqueue', job({ id: 'self', command: 'true', after: ['self'] })] },
  { name: 'more than 1,000 parents', args: ['enqueue', job({ command: 'true', after: Array.from({ length: 1001 }, (_, i) => `p${i}`) })] },
  { name: 'bad queue name', args: ['enqueue', '--queue', '.hidden', '--', 'true'] },
  { name: 'bad queue name (JSON)', args: ['enqueue', job({ command: 'true', queue: 'a b' })] },
  { name: 'queue set --concurrency 0', args: ['queue', 'set', 'default', '--concurrency', '0'] },
  { name: 'queue set --concurrency 10001', args: ['queue', 'set', 'default', '--concurrency', '10001'] },
  { name: 'queue set without --concurrency', args: ['queue', 'set', 'default'] },
  { name: 'kill with no target', args: ['kill'] },
  { name: 'kill an unknown id', args: ['kill', 'existing', 'ghost'] },
  { name: 'kill with an unknown signal', args: ['kill', '--signal', 'SIGFOO', 'existing'] },
  { name: 'kill --grace abc', args: ['kill', '--grace', 'abc', 'existing'] },
  { name: '--unique-for without --unique-key', args: ['enqueue', '--unique-for', '1h', '--', 'true'] },
  { name: '--unique-key of 257 characters', args: ['enqueue', '--unique-key', 'k'.repeat(257), '--', 'true'] },
  { name: 'pause with no target', args: ['pause'] },
  { name: 'resume with a bad queue name', args: ['resume', '--queue', '-x'] },
  { name: 'wait for an unknown id', args: ['wait', 'ghost'] },
  { name: 'wait --timeout abc', args: ['wait', '--timeout', 'abc'] },
  { name: 'worker start --concurrency 0', args: ['worker', 'start', '--concurrency', '0'] },
  { name: 'worker run --queue with a bad name', args: ['worker', 'run', '--queue', 'ok,.bad'] },
  { name: 'retry without ids', args: ['retry'] },
  // schedules
  { name: 'schedule --cron with minute 61', args: ['schedule', 'add', 's', '--cron', '61 * * * *', '--', 'true'], says: /the minute field "61" is not valid: use 0-59/ },
  { name: 'schedule --cron with hour 24', args: ['schedule', 'add', 's', '--cron', '0 24 * * *', '--', 'true'], says: /the hour field "24"/ },
  { name: 'schedule --cron with a bad day-of-week', args: ['schedule', 'add', 's', '--cron', '0 2 * * FUNDAY', '--', 'true'], says: /the day-of-week field "FUNDAY"/ },
  { name: 'schedule --cron with 6 fields (seconds)', args: ['schedule', 'add', 's', '--cron', '0 30 2 * * *', '--', 'true'], says: /has 6 fields: use 5 .*no seconds field/ },
  { name: 'schedule --cron with an unknown nickname', args: ['schedule', 'add', 's', '--cron', '@reboot', '--', 'true'], says: /unknown cron nickname "@reboot": use @hourly, @daily/ },
  { name: 'schedule --cron that never fires (February 30)', args: ['schedule', 'add', 's', '--cron', '0 0 30 2 *', '--', 'true'], says: /never fires/ },
  { name: 'schedule --tz unknown', args: ['schedule', 'add', 's', '--cron', '0 2 * * *', '--tz', 'Mars/Olympus', '--', 'true'], says: /unknown time zone "Mars\/Olympus"/ },
  { name: 'schedule --every 1s', args: ['schedule', 'add', 's', '--every', '1s', '--', 'true'], says: /--every 1s is too often: use at least 10s/ },
  { name: 'schedule --every abc', args: ['schedule', 'add', 's', '--every', 'abc', '--', 'true'], says: /invalid --every "abc"/ },
  { name: 'schedule --tz with --every', args: ['schedule', 'add', 's', '--every', '1h', '--tz', 'UTC', '--', 'true'], says: /--tz applies to --cron only/ },
  { name: 'schedule with both --cron and --every', args: ['schedule', 'add', 's', '--cron', '@daily', '--every', '1h', '--', 'true'], says: /not both/ },
  { name: 'schedule with neither --cron nor --every', args: ['schedule', 'add', 's', '--', 'true'], says: /needs --cron EXPR .* or --every DUR/ },
  { name: 'schedule without a command', args: ['schedule', 'add', 's', '--every', '1h'], says: /needs a command/ },
  { name: 'schedule name with a space', args: ['schedule', 'add', 'a b', '--every', '1h', '--', 'true'], says: /invalid schedule name "a b"/ },
  { name: 'schedule name of 65 characters', args: ['schedule', 'add', 's'.repeat(65), '--every', '1h', '--', 'true'], says: /invalid schedule name/ },
  { name: 'schedule --priority high', args: ['schedule', 'add', 's', '--every', '1h', '--priority', 'high', '--', 'true'], says: /--priority must be a whole number/ },
  {
    name: 'schedule add of a taken name without --replace',
    args: ['schedule', 'add', 'existing', '--cron', '@daily', '--', 'echo', 'replaced'],
    says: /a schedule named "existing" already exists: .*--replace/,
    check: async (home) => {
      const r = await runCli(['schedule', 'ls', '--json'], { env: envFor(home) })
      assert.deepEqual(JSON.parse(r.stdout).map((s: any) => [s.name, s.every, s.job.command]), [['existing', '1h', 'echo scheduled']])
    },
  },
  // completion hooks
  { name: "--on-success ''", args: ['enqueue', '--on-success', '', '--', 'true'] },
  { name: 'on_finish with a NUL (JSON)', args: ['enqueue', job({ command: 'true', on_finish: 'echo a\0b' })] },
  { name: 'on_failure of blanks (JSON)', args: ['enqueue', job({ command: 'true', on_failure: '  ' })] },
  { name: 'on_success not a string (JSON)', args: ['enqueue', job({ command: 'true', on_success: ['echo', 'hi'] })] },
  { name: 'on_success over 1 MiB (--file)', args: ['enqueue', '--file', '-'], input: job({ command: 'true', on_success: `echo ${'x'.repeat(1024 * 1024)}` }) },
  { name: 'config hook_timeout abc', args: ['config', 'set', 'hook_timeout', 'abc'] },
  { name: 'config hook_timeout 0', args: ['config', 'set', 'hook_timeout', '0'] },
]

/** A case's copy of the template home; on PostgreSQL the cases share the template's schema, compared through the CLI. */
function envFor(home: string): Record<string, string> {
  return { ...(process.env as Record<string, string>), ...(BACKEND === 'postgres' ? { QUEUECTL_DB: template.env.QUEUECTL_DB } : {}), QUEUECTL_HOME: home }
}

/** The queue every case starts from: one job, one config value, one schedule. */
async function prepare(home: Home): Promise<void> {
  await home.ok(['enqueue', job({ id: 'existing', command: 'echo original', priority: 3 })])
  await home.ok(['config', 'set', 'max_retries', '5'])
  await home.ok(['schedule', 'add', 'existing', '--every', '1h', '--', 'echo', 'scheduled'])
}

async function snapshot(home: string): Promise<{ jobs: unknown; config: unknown; schedules: unknown }> {
  const [jobs, config, schedules] = await Promise.all([
    runCli(['list', '--json', '--limit', '1000'], { env: envFor(home) }),
    runCli(['config', 'list', '--json'], { env: envFor(home) }),
    runCli(['schedule', 'ls', '--json'], { env: envFor(home) }),
  ])
  assert.equal(jobs.code, 0, `list --json: ${jobs.stderr}`)
  assert.equal(config.code, 0, `config list --json: ${config.stderr}`)
  assert.equal(schedules.code, 0, `schedule ls --json: ${schedules.stderr}`)
  return { jobs: JSON.parse(jobs.stdout), config: JSON.parse(config.stdout), schedules: JSON.parse(schedules.stdout) }
}

/** The stored data's files; identical bytes mean identical data (anything else is compared through the CLI). */
function storedBytes(home: string): Record<string, Buffer | null> {
  const out: Record<string, Buffer | null> = {}
  for (const name of ['queue.db', 'queue.db.journal']) {
    const path = join(home, name)
    out[name] = existsSync(path) ? readFileSync(path) : null
  }
  return out
}

function sameBytes(a: Record<string, Buffer | null>, b: Record<string, Buffer | null>): boolean {
  return Object.keys(a).every((k) => (a[k] === null ? b[k] === null : b[k] !== null && a[k]!.equals(b[k]!)))
}

/**
 * A digest of every row of every table in the template's schema (PostgreSQL): as the files' bytes on SQLite, the
 * same digest means the same data, read with one query each instead of three CLI processes per case.
 */
function storedDigest(schema = schemaOf(template.dir)): Promise<string> {
  return withPostgres(process.env.QUEUECTL_TEST_POSTGRES!, async (client) => {
    const { rows: tables } = await client.query('SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY table_name', [schema])
    const digests = await Promise.all(tables.map(async ({ table_name: table }) => {
      const { rows } = await client.query(`SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) AS d FROM "${schema}"."${table}" t`)
      return `${table}:${rows[0].d}`
    }))
    return digests.join(' ')
  })
}

async function assertUnchanged(home: string): Promise<void> {
  if (BACKEND === 'sqlite' ? sameBytes(templateBytes, storedBytes(home)) : (await storedDigest()) === templateDigest) return
  assert.deepEqual(await snapshot(home), baseline, 'stored data changed')
}

let template: Home
let templateBytes: Record<string, Buffer | null>
let templateDigest: string | undefined
let baseline: { jobs: unknown; config: unknown; schedules: unknown }

function assertUsageError(r: RunResult): void {
  assert.equal(r.code, 2, `exit ${r.code} (signal ${r.signal}); stdout ${JSON.stringify(r.stdout)}; stderr ${JSON.stringify(r.stderr)}`)
  const errLines = r.stderr.split('\n').filter((l) => l.trim() !== '')
  assert.equal(errLines.length, 1, `expected one line on stderr, got ${JSON.stringify(r.stderr)}`)
  assert.doesNotMatch(r.stderr, /^ {4}at /m, 'stack trace on stderr')
}

describe('bad input', { concurrency: 4 }, () => {
  const scratch = mkdtempSync(join(tmpdir(), 'queuectl-input-'))

  before(async () => {
    // one prepared queue, copied for every case
    template = new Home()
    await prepare(template)
    baseline = await snapshot(template.dir)
    templateBytes = storedBytes(template.dir)
    if (BACKEND === 'postgres') {
      templateDigest = await storedDigest()
      assert.match(templateDigest, /\bjobs:[0-9a-f]{32}\b/, 'the digest reads the template\'s tables')
    }
    if (BACKEND === 'sqlite') assert.ok(templateBytes['queue.db'], 'the template has a queue.db')
    assert.equal((baseline.jobs as unknown[]).length, 1)
  })

  after(async () => {
    await template?.cleanup()
    rmSync(scratch, { recursive: true, force: true })
  })

  cases.forEach((c, i) => {
    test(c.name, async () => {
      const home = join(scratch, `case-${i}`)
      cpSync(template.dir, home, { recursive: true })
      try {
        const r = await runCli(c.args, { env: envFor(home), input: c.input, timeoutMs: 30_000 })
        assertUsageError(r)
        if (c.says) assert.match(r.stderr, c.says)
        await assertUnchanged(home)
        await c.check?.(home)
      } finally {
        rmSync(home, { recursive: true, force: true })
      }
    })
  })

  test('--file from a path with one bad line enqueues nothing', async () => {
    const home = join(scratch, 'file-path')
    cpSync(template.dir, home, { recursive: true })
    try {
      const file = join(scratch, 'jobs.jsonl')
      writeFileSync(file, [good(1), good(2), job({ command: 'echo', max_retries: -1 }), good(4)].join('\n') + '\n')
      const r = await runCli(['enqueue', '--file', file], { env: envFor(home) })
      assertUsageError(r)
      await assertUnchanged(home)
    } finally {
      rmSync(home, { recursive: true, force: true })
    }
  })

  test('the same input minus its bad line is accepted (the cases above fail for the right reason)', async () => {
    const home = new Home() // a queue of its own: this one changes
    try {
      await prepare(home)
      const digest = BACKEND === 'postgres' ? await storedDigest(schemaOf(home.dir)) : undefined
      const r = await home.run(['enqueue', '--file', '-'], { input: [good(1), good(2), good(4)].join('\n') + '\n' })
      assert.equal(r.code, 0, r.stderr)
      if (digest) assert.notEqual(await storedDigest(schemaOf(home.dir)), digest, 'the digest sees an enqueue')
      assert.equal(r.stdout.trim().split('\n').length, 3)
      await home.ok(['config', 'set', 'max_retries', '0'])
      const after = { jobs: await home.json(['list', '--limit', '1000']), config: await home.json(['config', 'list']) }
      assert.equal((after.jobs as unknown[]).length, 4)
      assert.notDeepEqual(after.config, baseline.config)
    } finally {
      await home.cleanup()
    }
  })
})
