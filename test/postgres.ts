// A throwaway PostgreSQL server for the tests: initdb into a fresh temp folder, a private port on 127.0.0.1 and a
// private socket folder, settings that trade durability for speed, and everything stopped and removed again: by
// stop(), on exit, on SIGINT/SIGTERM, and (for a run killed with SIGKILL) by the next run, which finds the folder
// by its prefix and its owner's pid gone. Binaries: Debian's /usr/lib/postgresql/<newest>/bin, else pg_config's.
// PostgreSQL refuses to run as root: as root, initdb and postgres run as the OS user `postgres` (Debian's package
// makes it) in a folder chowned to it.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { chownSync, existsSync, mkdtempSync, openSync, closeSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync, appendFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'

const PREFIX = 'queuectl-pg-'
const SUPERUSER = 'queuectl'
const OWNER_FILE = 'owner' // "<pid> <start time>" of the process that made the folder: while it lives the folder is in use

export interface Postgres {
  /** `postgres://queuectl@127.0.0.1:<port>/postgres`, superuser, no password (trust). */
  url: string
  port: number
  /** `SELECT version()` */
  version: string
  /** Fast shutdown, then the folder is removed. Safe to call twice. */
  stop(): Promise<void>
  /** Fast shutdown (every client is disconnected), then the server starts again on the same data and port. */
  restart(): Promise<void>
}

export interface StartOptions {
  /** Other addresses to listen on besides 127.0.0.1 (e.g. veth IPs for a test across network namespaces);
   *  connections to them are trusted from any host. */
  listen?: string | string[]
  /** How long initdb plus start-up may take. */
  timeoutMs?: number
}

interface Running {
  dir: string
  proc?: ChildProcess
}

const running = new Set<Running>()

/** The folder of initdb and postgres: the newest /usr/lib/postgresql/N/bin, else `pg_config --bindir`. */
export function findBinaries(): string {
  const debian = '/usr/lib/postgresql'
  const versions = existsSync(debian) ? readdirSync(debian).filter((v) => /^\d+(\.\d+)?$/.test(v)).sort((a, b) => Number(b) - Number(a)) : []
  const candidates = versions.map((v) => join(debian, v, 'bin'))
  const pgConfig = spawnSync('pg_config', ['--bindir'], { encoding: 'utf8' })
  if (pgConfig.status === 0) candidates.push(pgConfig.stdout.trim())
  const bin = candidates.find((dir) => existsSync(join(dir, 'initdb')) && existsSync(join(dir, 'postgres')))
  if (!bin) throw new Error('no PostgreSQL server binaries (initdb, postgres) under /usr/lib/postgresql/*/bin or pg_config --bindir')
  return bin
}

/** uid/gid to run the server as: ourselves, or the OS user `postgres` when we are root. */
function serverUser(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined
  const id = (flag: string) => spawnSync('id', [flag, 'postgres'], { encoding: 'utf8' })
  const [uid, gid] = [id('-u'), id('-g')]
  if (uid.status !== 0 || gid.status !== 0) throw new Error('running as root and there is no OS user "postgres" to run the server as (PostgreSQL refuses root)')
  return { uid: Number(uid.stdout), gid: Number(gid.stdout) }
}

/** The start time of `pid` in clock ticks since boot (field 22 of /proc/<pid>/stat), so a reused pid is told apart. */
function startTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return fields[0] === 'Z' || fields[0] === 'X' ? undefined : fields[19]
  } catch {
    return undefined
  }
}

const alive = (pid: number) => startTime(pid) !== undefined

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms)
}

/** Signals the postmaster `pid` and waits (blocking) until it is gone; SIGKILL after `graceMs`. */
function killSync(pid: number, signal: NodeJS.Signals, graceMs: number): void {
  try {
    process.kill(pid, signal)
  } catch {
    return
  }
  const deadline = Date.now() + graceMs
  while (alive(pid) && Date.now() < deadline) sleepSync(20)
  if (alive(pid)) {
    try {
      process.kill(pid, 'SIGKILL')
    } catch {
      // gone meanwhile
    }
  }
}

/** The postmaster of a data folder, from its postmaster.pid, if that process still runs postgres on that folder. */
function postmasterOf(dataDir: string): number | undefined {
  try {
    const [pid, dir] = readFileSync(join(dataDir, 'postmaster.pid'), 'utf8').split('\n')
    const cmdline = readFileSync(`/proc/${Number(pid)}/cmdline`, 'utf8')
    return dir === dataDir && cmdline.includes('postgres') && alive(Number(pid)) ? Number(pid) : undefined
  } catch {
    return undefined
  }
}

/** Stops and removes the clusters of earlier runs that died without cleaning up (their owner is gone). */
export function removeStaleClusters(): void {
  for (const name of readdirSync(tmpdir())) {
    if (!name.startsWith(PREFIX)) continue
    const dir = join(tmpdir(), name)
    try {
      const owner = readFileSync(join(dir, OWNER_FILE), 'utf8').split(' ')
      if (startTime(Number(owner[0])) === owner[1]) continue
    } catch {
      // no owner file: a folder made an instant ago by a run that is writing it, or one that died in that instant
      try {
        if (Date.now() - statSync(dir).mtimeMs < 60_000) continue
      } catch {
        continue
      }
    }
    try {
      const pid = postmasterOf(join(dir, 'data'))
      if (pid) killSync(pid, 'SIGQUIT', 5_000)
      rmSync(dir, { recursive: true, force: true })
    } catch {
      // another user's leftover (a run as root seen by a user): not ours to remove
    }
  }
}

/** A TCP port that was free on 127.0.0.1 a moment ago (start() retries when another process took it meanwhile). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.on('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number }
      server.close(() => resolve(port))
    })
  })
}

function stopSync(cluster: Running): void {
  running.delete(cluster)
  const { proc } = cluster
  if (proc?.pid && proc.exitCode === null && proc.signalCode === null) killSync(proc.pid, 'SIGQUIT', 5_000)
  rmSync(cluster.dir, { recursive: true, force: true })
}

let hooked = false
function stopAllOnExit(): void {
  if (hooked) return
  hooked = true
  process.on('exit', () => {
    for (const cluster of [...running]) stopSync(cluster)
  })
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    const onSignal = () => {
      for (const cluster of [...running]) stopSync(cluster)
      // alone, this handler would swallow the signal: die of it as the process would have without us
      if (process.listenerCount(signal) === 1) {
        process.off(signal, onSignal)
        process.kill(process.pid, signal)
      }
    }
    process.on(signal, onSignal)
  }
}

function run(file: string, args: string[], user: { uid: number; gid: number } | undefined, log: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const out = openSync(log, 'a')
    const child = spawn(file, args, { stdio: ['ignore', out, out], env: serverEnv(), ...user })
    closeSync(out)
    child.on('error', reject)
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`${file} exited ${code}: ${tail(log)}`))))
  })
}

function serverEnv(): Record<string, string> {
  return { PATH: process.env.PATH ?? '/usr/bin:/bin', LANG: 'C', LC_ALL: 'C', TZ: 'UTC' }
}

function tail(log: string): string {
  try {
    return readFileSync(log, 'utf8').trim().split('\n').slice(-5).join(' | ')
  } catch {
    return '(no log)'
  }
}

/** Starts a fresh cluster. Rejects (with the server's last log lines) when it cannot. */
export async function startPostgres(options: StartOptions = {}): Promise<Postgres> {
  const bin = findBinaries()
  const user = serverUser()
  removeStaleClusters()
  stopAllOnExit()
  const dir = mkdtempSync(join(tmpdir(), PREFIX))
  writeFileSync(join(dir, OWNER_FILE), `${process.pid} ${startTime(process.pid)}`)
  const cluster: Running = { dir }
  const deadline = Date.now() + (options.timeoutMs ?? 60_000)
  const data = join(dir, 'data')
  const log = join(dir, 'postgres.log')
  try {
    writeFileSync(log, '')
    if (user) chownSync(dir, user.uid, user.gid)
    await run(join(bin, 'initdb'), ['-D', data, '-U', SUPERUSER, '--auth=trust', '--no-sync', '-E', 'UTF8', '--locale=C'], user, log)
    if (options.listen) appendFileSync(join(data, 'pg_hba.conf'), 'host all all 0.0.0.0/0 trust\nhost all all ::/0 trust\n')
    const listen = ['127.0.0.1', ...[options.listen ?? []].flat()].join(',')
    for (let attempt = 1; ; attempt++) {
      const port = await freePort()
      const outcome = await launch(bin, data, port, listen, dir, log, cluster, user, deadline)
      if (typeof outcome !== 'string') {
        if (/could not bind|already in use/i.test(tail(log)) && attempt < 3) continue
        throw new Error(`${outcome.exited}: ${tail(log)}`)
      }
      let stopped: Promise<void> | undefined
      return {
        url: urlOf(port),
        port,
        version: outcome,
        stop: () => (stopped ??= stop(cluster, cluster.proc!)),
        restart: async () => {
          if (stopped) throw new Error('restart() after stop()')
          await shutDown(cluster.proc!)
          const again = await launch(bin, data, port, listen, dir, log, cluster, user, Date.now() + (options.timeoutMs ?? 60_000))
          if (typeof again !== 'string') throw new Error(`restart: ${again.exited}: ${tail(log)}`)
        },
      }
    }
  } catch (error) {
    stopSync(cluster)
    throw error
  }
}

const urlOf = (port: number) => `postgres://${SUPERUSER}@127.0.0.1:${port}/postgres`

/** Starts postgres on `data` and waits until it answers: its `SELECT version()`, or why it exited. */
async function launch(bin: string, data: string, port: number, listen: string, dir: string, log: string, cluster: Running,
  user: { uid: number; gid: number } | undefined, deadline: number): Promise<string | { exited: string }> {
  const settings = {
    listen_addresses: listen,
    unix_socket_directories: dir,
    // a test server: its data dies with the run, so nothing is worth a sync
    fsync: 'off', synchronous_commit: 'off', full_page_writes: 'off',
    // many workers of many tests at once, each with a few connections
    max_connections: '500',
    shared_buffers: '32MB', huge_pages: 'off', max_wal_size: '1GB',
    logging_collector: 'off', log_min_messages: 'warning',
  }
  const args = ['-D', data, '-p', String(port), ...Object.entries(settings).flatMap(([k, v]) => ['-c', `${k}=${v}`])]
  const out = openSync(log, 'a')
  // its own process group: a Ctrl-C meant for the tests must not stop the server under them
  const proc = spawn(join(bin, 'postgres'), args, { stdio: ['ignore', out, out], env: serverEnv(), detached: true, ...user })
  closeSync(out)
  cluster.proc = proc
  running.add(cluster)
  let gone = false
  const exited = new Promise<{ exited: string }>((resolve) => {
    const end = (why: string) => {
      gone = true
      resolve({ exited: why })
    }
    proc.on('exit', (code, signal) => end(`postgres exited ${code ?? signal}`))
    proc.on('error', (error) => end(`postgres could not be started: ${error.message}`))
  })
  const outcome = await Promise.race([exited, ready(urlOf(port), deadline, () => gone)])
  if (typeof outcome === 'string') proc.unref()
  else running.delete(cluster)
  return outcome
}

/** Resolves with `SELECT version()` once the server answers; rejects after the deadline; gives up once it `exited`. */
async function ready(url: string, deadline: number, exited: () => boolean): Promise<string> {
  while (!exited()) {
    const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2_000 })
    client.on('error', () => {})
    try {
      await client.connect()
      const { rows } = await client.query('SELECT version()')
      return rows[0].version as string
    } catch (error) {
      if (Date.now() > deadline) throw new Error(`PostgreSQL did not accept connections in time: ${String(error)}`)
    } finally {
      await client.end().catch(() => {})
    }
    await new Promise((r) => setTimeout(r, 50))
  }
  throw new Error('postgres exited before it accepted connections')
}

/** Fast shutdown (clients are disconnected), SIGQUIT then SIGKILL if it hangs, then the folder goes. */
async function stop(cluster: Running, proc: ChildProcess): Promise<void> {
  await shutDown(proc)
  stopSync(cluster)
}

/** Fast shutdown: SIGINT, SIGQUIT if it hangs, SIGKILL if that hangs too; resolves once it exited. */
async function shutDown(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return
  const exited = new Promise((resolve) => proc.once('exit', resolve))
  proc.kill('SIGINT')
  const escalate = setTimeout(() => proc.kill('SIGQUIT'), 15_000)
  const kill = setTimeout(() => proc.kill('SIGKILL'), 20_000)
  await exited
  clearTimeout(escalate)
  clearTimeout(kill)
}
