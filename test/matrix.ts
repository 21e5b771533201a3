// `npm test`: the whole node:test suite once per storage backend, SQLite then PostgreSQL (a matrix, not a copy: the
// same files, told the backend by QUEUECTL_TEST_BACKEND; test/helpers.ts points every Home at it).
//   npm test                                   both passes
//   npm test -- test/core.test.ts              only these files (options such as --test-name-pattern=… pass through)
//   QUEUECTL_TEST_BACKENDS=sqlite npm test     one backend (sqlite, postgres, or both comma-separated)
//   QUEUECTL_TEST_POSTGRES=postgres://… npm test   the PostgreSQL pass on that server (each test makes and drops
//                                              a schema of its own), instead of a throwaway cluster
// Without PostgreSQL the second pass is skipped with one line, except under CI=true, where that fails the run.
import { spawn, type ChildProcess } from 'node:child_process'
import { readdirSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import pg from 'pg'
import { startPostgres, type Postgres } from './postgres.ts'

const ROOT = resolve(fileURLToPath(new URL('..', import.meta.url)))

const BACKENDS = ['sqlite', 'postgres'] as const
type Backend = (typeof BACKENDS)[number]

function fail(message: string): never {
  console.error(message)
  process.exit(2)
}

const requested = process.env.QUEUECTL_TEST_BACKENDS
const backends = (requested || BACKENDS.join(',')).split(',').map((b) => b.trim()).filter(Boolean)
for (const b of backends) if (!BACKENDS.includes(b as Backend)) fail(`QUEUECTL_TEST_BACKENDS: unknown backend "${b}" (use sqlite, postgres or sqlite,postgres)`)

const args = process.argv.slice(2)
const options = args.filter((a) => a.startsWith('-'))
const given = args.filter((a) => !a.startsWith('-'))
const files = given.length ? given : readdirSync(join(ROOT, 'test')).filter((f) => f.endsWith('.test.ts')).sort().map((f) => join('test', f))

let current: ChildProcess | undefined
let interrupted: NodeJS.Signals | undefined
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    interrupted = signal
    // a Ctrl-C reached the pass already (same process group); a kill of this runner alone must reach it too
    current?.kill(signal)
    setTimeout(() => current?.kill('SIGKILL'), 15_000).unref()
  })
}

// A test file whose tests have all ended, but that left a handle open (a server a failed test did not close), would
// otherwise keep its pass waiting forever, and CI with it (Node ≥ 20.14 has the flag).
const [major, minor] = process.versions.node.split('.').map(Number)
const FORCE_EXIT = major > 20 || minor >= 14 ? ['--test-force-exit'] : []

function runPass(label: string, env: Record<string, string | undefined>): Promise<number> {
  console.log(`\n=== ${label}: node --test ${files.length === 1 ? files[0] : `${files.length} files`} ===`)
  return new Promise((resolve) => {
    current = spawn(process.execPath, ['--import', 'tsx', '--test', '--test-concurrency=3', ...FORCE_EXIT, ...options, ...files], {
      cwd: ROOT, stdio: 'inherit', env: { ...process.env, ...env },
    })
    current.on('close', (code, signal) => {
      current = undefined
      resolve(code ?? (signal ? 1 : 0))
    })
  })
}

/** The server of the PostgreSQL pass: the one given, checked to answer, else a throwaway cluster. */
async function postgresServer(): Promise<{ url: string; what: string; stop?: () => Promise<void> }> {
  const url = process.env.QUEUECTL_TEST_POSTGRES
  if (url) {
    const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 10_000 })
    client.on('error', () => {})
    try {
      await client.connect()
      const { rows } = await client.query('SHOW server_version')
      return { url, what: `PostgreSQL ${rows[0].server_version} (the server of QUEUECTL_TEST_POSTGRES)` }
    } catch (error) {
      throw Object.assign(new Error(`QUEUECTL_TEST_POSTGRES=${url} does not answer: ${(error as Error).message}`), { given: true })
    } finally {
      await client.end().catch(() => {})
    }
  }
  const t0 = Date.now()
  const server: Postgres = await startPostgres()
  const version = /^PostgreSQL \S+/.exec(server.version)?.[0] ?? server.version
  return { url: server.url, what: `${version} (a throwaway cluster on port ${server.port}, started in ${((Date.now() - t0) / 1000).toFixed(1)} s)`, stop: server.stop }
}

const results: string[] = []
let exitCode = 0
const settle = (label: string, code: number, startedAt = Date.now()) => {
  const took = Math.round((Date.now() - startedAt) / 1000)
  results.push(`${label} ${code === 0 ? 'passed' : `FAILED (exit ${code})`}${took ? ` in ${Math.floor(took / 60)}m${String(took % 60).padStart(2, '0')}s` : ''}`)
  if (code !== 0 && exitCode === 0) exitCode = code
}

if (backends.includes('sqlite')) {
  const startedAt = Date.now()
  settle('SQLite', await runPass('SQLite', { QUEUECTL_TEST_BACKEND: 'sqlite', QUEUECTL_TEST_POSTGRES: undefined }), startedAt)
}

if (backends.includes('postgres') && !interrupted) {
  let server: Awaited<ReturnType<typeof postgresServer>> | undefined
  try {
    server = await postgresServer()
  } catch (error) {
    const reason = (error as Error).message
    // asked for by name, given a server, or in CI: a PostgreSQL pass that cannot run is a failure, not a skip
    if (process.env.CI === 'true' || requested?.includes('postgres') || (error as { given?: boolean }).given) {
      console.error(`PostgreSQL run failed to start: ${reason}`)
      settle('PostgreSQL', 1)
    } else {
      console.log(`PostgreSQL run skipped: ${reason}; install postgresql or set QUEUECTL_TEST_POSTGRES=postgres://… to enable it`)
    }
  }
  if (server) {
    try {
      const startedAt = Date.now()
      if (!interrupted) settle('PostgreSQL', await runPass(server.what, { QUEUECTL_TEST_BACKEND: 'postgres', QUEUECTL_TEST_POSTGRES: server.url }), startedAt)
    } finally {
      await server.stop?.()
    }
  }
}

if (results.length > 0) console.log(`\n${results.join(' · ')}`)
if (interrupted) process.exit(interrupted === 'SIGINT' ? 130 : 143)
process.exit(exitCode)
