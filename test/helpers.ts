// Shared test helpers: drive the real CLI in a fresh QUEUECTL_HOME, and wait for conditions with a deadline.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { basename, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

export const ROOT = resolve(fileURLToPath(new URL('..', import.meta.url)))
export const CLI = join(ROOT, 'dist', 'queuectl.js')

/** The storage backend of this run, set by test/matrix.ts (`npm test` runs the suite once on each). */
export const BACKEND: 'sqlite' | 'postgres' = process.env.QUEUECTL_TEST_BACKEND === 'postgres' ? 'postgres' : 'sqlite'
/** The PostgreSQL server of a postgres run; each Home is a schema of its own on it. */
const POSTGRES = BACKEND === 'postgres' ? process.env.QUEUECTL_TEST_POSTGRES : undefined
if (BACKEND === 'postgres' && !POSTGRES) throw new Error('QUEUECTL_TEST_BACKEND=postgres needs QUEUECTL_TEST_POSTGRES=postgres://… (npm test sets both)')

/** `{ skip: sqliteOnly }` for a test whose subject is the SQLite storage files (queue.db, its journal, the lockfile). */
export const sqliteOnly = BACKEND === 'postgres' ? 'the SQLite storage files' : false

/** The PostgreSQL schema of a home: its folder's name in [a-z0-9_] (lowercased, so a hash of the path keeps two
 *  homes apart), at most 40 characters. */
export function schemaOf(dir: string): string {
  const hash = createHash('sha1').update(dir).digest('hex').slice(0, 8)
  return `${basename(dir).toLowerCase().replace(/[^a-z0-9_]/g, '_').replace(/^[^a-z_]/, 'q').slice(0, 31)}_${hash}`
}

export interface RunResult {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
}

export interface RunOptions {
  input?: string
  env?: Record<string, string>
  cwd?: string
  timeoutMs?: number
}

/** A fresh queue home per test; `cleanup()` stops its workers and removes it. */
export class Home {
  readonly dir: string
  constructor(prefix = 'queuectl-test-') {
    this.dir = mkdtempSync(join(tmpdir(), prefix))
  }

  /** The runner's environment without settings that would change the CLI's behaviour under test. */
  get env(): Record<string, string> {
    const env: Record<string, string> = {}
    for (const [key, value] of Object.entries(process.env)) {
      if (value !== undefined && !key.startsWith('QUEUECTL_') && key !== 'NODE_OPTIONS') env[key] = value
    }
    return { ...env, QUEUECTL_HOME: this.dir, ...(POSTGRES && { QUEUECTL_DB: `${POSTGRES}${POSTGRES.includes('?') ? '&' : '?'}schema=${schemaOf(this.dir)}` }) }
  }

  /** Runs `queuectl ...args` to completion (async, so several can run at once). */
  run(args: string[], opts: RunOptions = {}): Promise<RunResult> {
    return runCli(args, { ...opts, env: { ...this.env, ...opts.env } })
  }

  /** Like run, but fails the test unless the exit code is 0; returns stdout. */
  async ok(args: string[], opts: RunOptions = {}): Promise<string> {
    const r = await this.run(args, opts)
    if (r.code !== 0) {
      throw new Error(`queuectl ${args.join(' ')} exited ${r.code} (signal ${r.signal})\nstdout: ${r.stdout}\nstderr: ${r.stderr}`)
    }
    return r.stdout
  }

  async json<T = any>(args: string[], opts: RunOptions = {}): Promise<T> {
    return JSON.parse(await this.ok([...args, '--json'], opts)) as T
  }

  async job(id: string): Promise<any> {
    return this.json(['show', id])
  }

  /** Spawns a long-running CLI process (e.g. `worker run`) without waiting for it. */
  spawn(args: string[], opts: RunOptions = {}): ChildProcess {
    return spawn(process.execPath, [CLI, ...args], {
      cwd: opts.cwd ?? this.dir,
      env: { ...this.env, ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
  }

  /** Stops every worker of this home (forcefully) and removes the folder (and on PostgreSQL its schema), without
   *  blocking concurrent tests. */
  async cleanup(): Promise<void> {
    try {
      await this.run(['worker', 'stop', '--force', '--timeout', '10'], { timeoutMs: 30_000 })
    } finally {
      rmSync(this.dir, { recursive: true, force: true })
      if (POSTGRES) await dropSchema(POSTGRES, schemaOf(this.dir))
    }
  }

  /** cleanup() for exit handlers, where nothing asynchronous runs any more (a schema is left to the server's end). */
  cleanupSync(): void {
    spawnSync(process.execPath, [CLI, 'worker', 'stop', '--force', '--timeout', '10'], { env: this.env, stdio: 'ignore' })
    rmSync(this.dir, { recursive: true, force: true })
  }
}

/** Drops a home's schema; a process of the test that still holds a lock in it fails the cleanup after 10 s. */
async function dropSchema(url: string, schema: string): Promise<void> {
  try {
    await withPostgres(url, async (client) => {
      await client.query("SET lock_timeout = '10s'")
      await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`)
    })
  } catch (error) {
    throw new Error(`could not drop schema ${schema} of a test home: ${(error as Error).message}`)
  }
}

/** Runs `use` with a client of its own on the server at `url` (the test's own look, beside queuectl's), then ends it. */
export async function withPostgres<T>(url: string, use: (client: import('pg').Client) => Promise<T>): Promise<T> {
  const { default: pg } = await import('pg')
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 10_000 })
  client.on('error', () => {})
  try {
    await client.connect()
    return await use(client)
  } finally {
    await client.end().catch(() => {})
  }
}

export function runCli(args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return runProgram(process.execPath, [CLI, ...args], opts)
}

/** Runs any program to completion, capturing its output (stdin: `opts.input`, or empty). */
export function runProgram(file: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(file, args, {
      cwd: opts.cwd ?? tmpdir(),
      env: opts.env ?? (process.env as Record<string, string>),
      stdio: ['pipe', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (d) => (stdout += d))
    child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d))
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000)
    child.on('error', reject)
    child.stdin.on('error', () => {}) // the program may exit before reading all of a large input
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      resolvePromise({ code, signal, stdout, stderr })
    })
    child.stdin.end(opts.input ?? '')
  })
}

/** Polls `check` until it returns a truthy value; fails with `what` after `timeoutMs`. */
export async function waitFor<T>(what: string, check: () => T | Promise<T>, timeoutMs = 20_000, intervalMs = 50): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs
  let last: unknown
  for (;;) {
    try {
      const value = await check()
      if (value) return value as NonNullable<T>
      last = value
    } catch (error) {
      last = error
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${String(last)})`)
    await new Promise((r) => setTimeout(r, intervalMs))
  }
}

/** Waits until job `id` is in `state` (one of them), returns the job. */
export function waitForState(home: Home, id: string, state: string | string[], timeoutMs = 20_000): Promise<any> {
  const states = Array.isArray(state) ? state : [state]
  return waitFor(`job ${id} to be ${states.join('/')}`, async () => {
    const job = await home.job(id)
    return states.includes(job.state) ? job : undefined
  }, timeoutMs)
}

/**
 * Whether process `pid` may hold the queue's write lock, so that freezing it would stall every other process: on
 * SQLite, the lockfile names it; on PostgreSQL, one of its sessions has a transaction open or a statement running
 * (asked twice, so that a statement already on its way when it froze is seen by the second look).
 */
export async function holdsQueue(home: Home, pid: number): Promise<boolean> {
  if (!POSTGRES) {
    try {
      return readFileSync(join(home.dir, 'queue.db.lock'), 'utf8').startsWith(`${pid} `)
    } catch {
      return false // no lock held
    }
  }
  return withPostgres(POSTGRES, async (client) => {
    for (let look = 0; look < 2; look++) {
      const { rows } = await client.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name LIKE $1 AND state <> 'idle'", [`queuectl % ${pid}`])
      if (rows[0].n > 0) return true
    }
    return false
  })
}

/** True while `pid` is a live process (a zombie counts as dead). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
  } catch {
    return false
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3)
    return state !== 'Z' && state !== 'X'
  } catch {
    return false
  }
}

/** The live processes (zombies do not count) whose process group is `pgid`, from /proc. */
export function groupMembers(pgid: number): number[] {
  const members: number[] = []
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8')
      const [state, , pgrp] = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      if (Number(pgrp) === pgid && state !== 'Z' && state !== 'X') members.push(Number(entry))
    } catch {
      // exited meanwhile
    }
  }
  return members
}
