#!/usr/bin/env node
/**
 * queuectl — a durable background job queue for shell commands, in one file.
 *
 *   queuectl enqueue "make test"      # add a job
 *   queuectl worker start --count 4   # detached workers run it, retry it with backoff, or move it to the DLQ
 *
 * States (JOB_STATES; every move is `moveJob`, one UPDATE, in the transaction that causes it):
 *
 *   enqueue ──> blocked ──(every parent satisfied)──> pending ──claim──> processing ──exit 0──> completed
 *      └────────────────────────────────────────────────^  ^                 │
 *                                                          │                 ├─ fails, retries left ──> failed ──(run_at)──> processing
 *              retry / dlq retry (attempts = 0) ───────────┤                 └─ fails, none left ────> dead
 *   kill: an active job ──> cancelled (a running one by its owner, after the signal); a required parent that ends
 *   dead, cancelled or skipped: blocked ──> skipped (transitively). Active: pending, blocked, processing, failed.
 *
 * Counters: `attempts` = starts in the job's current life (reset by retry; the retry rule compares it with
 * max_retries); `runs` = every start ever, the attempt number of the history, the log headers and QUEUECTL_ATTEMPT.
 * An attempt ends as completed, failed, lost (its worker died), cancelled, or released (not counted: a force stop,
 * a job claimed while stopping, a failure of the machine); only released ones give the attempt back.
 *
 * Storage: SQLite (sql.js, in WASM) persisted as a snapshot plus an append-only journal, so that one
 * transaction costs the same with 1k or 100k jobs stored. A write is: lock → catch up (reload the snapshot if
 * its generation moved, replay the journal records others appended) → BEGIN, statements → append the record +
 * fdatasync → COMMIT in memory (a failed append rolls back and cuts the journal back: memory never leads disk) →
 * after-commit work still under the lock (purge's log removal) → unlock. Readers catch up without the lock.
 * Only deterministic statements are journaled: the rows a statement changes and the values it writes follow from
 * the rows and its bound values alone (a pick of several is totally ordered; ids and timestamps are computed here),
 * so replay gives the same rows under any SQLite version; a statement that changed no row is not journaled.
 * Past half the snapshot's size in journal (64–256 KiB) the writer compacts: a new snapshot of generation + 1, then an
 * empty journal.
 * A schema migration runs the same way but is written as a snapshot at once, so an older queuectl refuses it.
 *
 * The claim: the ready set. `jobs_ready (queue, priority DESC, seq) WHERE ready = 1` holds exactly the jobs a
 * claim may take; pending and failed jobs not yet due wait in `jobs_waiting (run_at)` and are promoted once, when
 * due, inside a claim's transaction (on SQLite after a look for one: the UPDATE is dearer than the read even when
 * nothing is due; on PostgreSQL sent blind, a read being a round trip). A claim then reads, in one statement, the head
 * of each servable queue's ready index (not paused, `running` under `concurrency`) and takes the best: blocked jobs,
 * paused queues and full queues are in no index it walks, so what waits never costs a claim anything. A queue's
 * `running` is kept by moveJob in the same transaction, under the one lock: a limit is exact. Dependencies (`deps`)
 * resolve in the parent's transaction.
 *
 * Leases and fencing: workers register in `workers` and beat every few seconds. One on this host is alive while
 * its pid (with its start time) is; one elsewhere while its heartbeat moves within the `lease`. Whoever notices a
 * dead worker puts its jobs back as `worker lost` and kills what is left of their process groups. Every change a
 * worker makes to a job is conditional on still owning that attempt (worker and run number, `ownedRow`); a worker
 * that finds its attempt taken over kills it and records nothing. The lockfile holds `pid starttime token host`:
 * a dead holder's lock is broken at once, another host's once it is older than the lease.
 *
 * Wake-ups: an idle worker waits on its own file `wake/<worker id>` (fs.watch), not on the journal, which every
 * write changes. Whatever gives workers work pokes one worker of this host that can take it (Queue.wakeWorker: a
 * free slot, the job's queue, no note); a worker that claims or ends jobs pokes the next, so a bulk enqueue wakes
 * them one after the other. A lost poke (its worker died or hangs) costs at most the idle poll, IDLE_POLL_MS.
 *
 * The home: `queue.db` (snapshot, generation = user_version), `queue.db.journal` (records since), `queue.db.lock`
 * and `queue.db.lock.<pid>.<starttime>.<host>` (each process's file that becomes the lock), `logs/<id>.log` (every
 * attempt's output between header and footer lines), `logs/worker.log` (detached workers' messages),
 * `wake/<worker id>` (what pokes it) and `wake/<worker id>.<slot>.pid` (the process group that slot runs, for whoever
 * recovers its job; the command waits until it is written), `wake/<worker id>.spare.<n>` (empty logs made ahead),
 * `logs/<id>.hook.pid` (the same as a slot's note, for a running hook), `dashboard.token`; with PostgreSQL,
 * `logs/copies/<pid>-<id>.log` (a process's copy of output kept there). A job makes one file, its log, and the
 * worker makes it ahead, off the job's path (SpareLogs): creating and deleting a file per job grows slow on ext4,
 * where a new inode skips the recently deleted ones. Files rewritten for each job keep one length (the lock's own
 * file, the slot's note), because a file truncated and written again is flushed at its close.
 *
 * The queue's logic is SQL with bound values behind `Storage` (read, write transaction): the same statements run
 * on both backends. PostgreSQL (`--db postgres://…`, PgStorage): the queue is a schema; a write is a transaction
 * that first takes the schema's advisory lock (pg_advisory_xact_lock), so writes are serialised as the lockfile
 * serialises them and every rule above holds across hosts unchanged; reads are READ ONLY snapshots. Time is the
 * server's (clockNow). Output goes into the table `output` (by byte position in the job's log) as it is written
 * and with the attempt's end, so `logs` works from any host; the home keeps this host's files. Idle workers of
 * other hosts are woken by NOTIFY queuectl_<schema>, with the poll as the guarantee.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import {
  closeSync, constants as fsConstants, existsSync, fdatasyncSync, fstatSync, fsyncSync, ftruncateSync, futimesSync, linkSync,
  mkdirSync, open as openLater, openSync, readdirSync, readFileSync, readSync, realpathSync, renameSync, statSync, unlinkSync, utimesSync, watch, writeFileSync, writeSync,
  type FSWatcher,
} from 'node:fs'
import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import nodeModule, { createRequire } from 'node:module'
import { constants as osConstants, hostname } from 'node:os'
import { basename, dirname, join, resolve } from 'node:path'
import { StringDecoder } from 'node:string_decoder'
import type { Writable } from 'node:stream'
import { fileURLToPath } from 'node:url'
import { setFlagsFromString } from 'node:v8'
import * as zlib from 'node:zlib'
import { renderUsage, runCommand, type ArgDef, type ArgsDef, type CommandDef } from 'citty'
import type { ConsolaInstance } from 'consola'
import type { Database, SqlJsStatic, Statement } from 'sql.js'

// Types and defaults: what a job is, the states it moves through, and the configuration.

export const JOB_STATES = ['pending', 'blocked', 'processing', 'completed', 'failed', 'dead', 'cancelled', 'skipped'] as const
export type JobState = (typeof JOB_STATES)[number]
/** Active jobs will still run (or are running); terminal ones never change again unless retried. */
export const ACTIVE_STATES = ['pending', 'blocked', 'processing', 'failed'] as const satisfies readonly JobState[]
export const TERMINAL_STATES = ['completed', 'dead', 'cancelled', 'skipped'] as const satisfies readonly JobState[]
export const isTerminal = (state: JobState) => (TERMINAL_STATES as readonly JobState[]).includes(state)

/** A job as every read shows it (`--json`, the API): snake_case, ISO-8601 UTC timestamps, null where unknown. */
export interface Job {
  id: string
  command: string
  cwd: string
  state: JobState
  attempts: number
  max_retries: number
  priority: number
  run_at: string
  timeout: number | null
  created_at: string
  updated_at: string
  started_at: string | null
  finished_at: string | null
  exit_code: number | null
  last_error: string | null
  worker: string | null
  queue: string
  after: string[]
  after_any: string[]
  unique_key: string | null
  /** the schedule that enqueued it */
  schedule: string | null
  on_success: string | null
  on_failure: string | null
  on_finish: string | null
}

/**
 * What an ended attempt counted as: `failed` covers a nonzero exit, a signal, a timeout and a job that cannot start
 * for its own reason (a missing cwd); `released` is not counted against the job (`worker stop --force`, a stop
 * before it started, a failure of the machine rather than the job).
 */
export type AttemptResult = 'completed' | 'failed' | 'lost' | 'cancelled' | 'released'

/** One run of a job. `attempt` counts every run the job has had, also across a `dlq retry`. */
export interface Attempt {
  attempt: number
  worker: string | null
  started_at: string
  finished_at: string | null
  exit_code: number | null
  signal: string | null
  error: string | null
  duration_ms: number | null
  outcome: AttemptResult | null
}

export interface JobDetail extends Job {
  output_tail: string | null
  history: Attempt[]
  /** The jobs it waits for, and the jobs that wait for it, with their states. */
  parents: { id: string; state: JobState; required: boolean }[]
  dependants: { id: string; state: JobState; required: boolean }[]
  env?: Record<string, string>
}

/** What a caller gives to enqueue; everything but `command` has a default. */
export interface JobSpec {
  command: string
  id?: string
  cwd?: string
  env?: Record<string, string | undefined>
  max_retries?: number
  priority?: number
  run_at?: string | Date
  delay?: string | number
  /** seconds, or a duration such as `5m` */
  timeout?: string | number
  queue?: string
  after?: string[] | string
  after_any?: string[] | string
  unique_key?: string
  unique_for?: string | number
  /** completion hooks: shell commands run after the job ends (see Completion hooks) */
  on_success?: string
  on_failure?: string
  on_finish?: string
}

/** A named queue: its limit (null = unlimited), whether it is paused, and its jobs by state. */
export interface QueueInfo {
  name: string
  concurrency: number | null
  paused: boolean
  counts: Record<JobState, number>
}

/** A recurring job as `schedule ls --json` shows it; times ISO-8601 UTC, null where unknown. */
export interface ScheduleInfo {
  name: string
  /** the 5-field expression or nickname; null for an `every` schedule */
  cron: string | null
  /** the interval between fires as a duration (`10m`); null for a cron schedule */
  every: string | null
  tz: string
  paused: boolean
  next_at: string | null
  /** when it last enqueued a job (a fire or `schedule run`), and that job */
  last_at: string | null
  last_job: string | null
  /** due times that passed while no worker was alive: after downtime only the latest one fires */
  missed: number
  /** fires that enqueued nothing: the previous job was still active, or its unique key was held */
  skipped: number
  created_at: string
  /** the job each fire enqueues (its environment is stored too, not shown) */
  job: { command: string; cwd: string; queue: string; priority: number; max_retries: number | null; timeout: number | null; unique_key: string | null }
}

/** What `schedule add` takes: a name, `cron` or `every`, and the job as enqueue takes it, less its id, times and parents. */
export interface ScheduleSpec {
  name: string
  cron?: string
  every?: string | number
  /** the zone `cron` is read in; default: the system's */
  tz?: string
  job: JobSpec
  /** replace a schedule of that name instead of refusing */
  replace?: boolean
}

export interface WorkerInfo {
  id: string
  pid: number
  host: string
  /** The job of its first busy slot, and since when (see `jobs` for every slot). */
  job_id: string | null
  since: string | null
  started_at: string
  heartbeat_at: string
  /** Why the worker holds back (e.g. backing off after a full disk), or null. */
  note: string | null
  slots: number
  queues: string[] | null
  jobs: { id: string; slot: number; since: string }[]
}

export interface QueueStatus {
  workers: WorkerInfo[]
  counts: Record<JobState, number>
}

export interface QueueStats {
  counts: Record<JobState, number>
  success_rate: number | null
  /** failed or lost attempts that the job followed with another run */
  retries: number
  /** attempts that failed or whose worker was lost */
  failures: number
  /** finished attempts by how they ended; `released` ones count nowhere else */
  attempts: Record<AttemptResult, number>
  duration_ms: { mean: number | null; p50: number | null; p95: number | null }
  finished: { last_1m: number; last_5m: number; last_15m: number }
  oldest_pending_wait_ms: number | null
}

/** Bad usage or bad input: exit code 2, nothing stored changes. */
export class UsageError extends Error {}
/** The operation failed (unknown job, lock timeout, damaged database): exit code 1. */
export class QueueError extends Error {}
/** The database server cannot be reached (PostgreSQL): a worker waits for it instead of giving up. */
export class DatabaseUnreachable extends QueueError {}

/** A setting: a number (durations in seconds) or a text such as a hook's command. */
interface ConfigKey<T extends number | string = number | string> {
  default: T
  /** what the key does, for `config list` */
  does: string
  /** the values it takes, for `config list` and the error that refuses another */
  range: string
  parse: (text: string) => T | undefined
}

const wholeNumber = (min: number, max: number) => (text: string) => {
  const n = Number(text)
  return /^\s*-?\d+\s*$/.test(text) && n >= min && n <= max ? n : undefined
}
const decimal = (min: number, max: number) => (text: string) => {
  const n = Number(text)
  return text.trim() !== '' && Number.isFinite(n) && n >= min && n <= max ? n : undefined
}

/** A config value that is a duration: the same forms as every duration flag, as seconds. */
const durationSeconds = (max: number, min = 0) => (text: string) => {
  try {
    const seconds = parseDuration(text) / 1000
    return seconds >= min && seconds <= max ? seconds : undefined
  } catch {
    return undefined
  }
}
const MAX_TIMEOUT_S = 2_000_000 // setTimeout overflows past 2^31 ms (24.8 days)

/** A global completion hook: a shell command, or empty for none. */
const hookCommand = (text: string) => (text === '' || commandProblem(text) === undefined ? text : undefined)
const HOOK_RANGE = "a shell command, given the job's facts in QUEUECTL_* variables ('' = none)"

export const CONFIG_KEYS = {
  max_retries: { default: 3, does: 'retries after the first attempt, for jobs without --max-retries', range: 'a whole number from 0 to 1000', parse: wholeNumber(0, 1000) },
  backoff_base: { default: 2, does: 'a failed job waits backoff_base^k seconds before retry k', range: 'a number from 0 to 1000 (0 = retry at once)', parse: decimal(0, 1000) },
  backoff_max: { default: 3600, does: 'the longest wait before a retry', range: 'a duration up to 7d such as 90s, 1h, or seconds', parse: durationSeconds(604_800) },
  job_timeout: { default: 0, does: 'an attempt running longer is killed, for jobs without --timeout', range: 'a duration up to 23d such as 30s, 5m, 2h, or seconds (0 = no limit)', parse: durationSeconds(MAX_TIMEOUT_S) },
  worker_concurrency: { default: 1, does: 'jobs one worker process runs at once, for workers started without --concurrency', range: 'a whole number from 1 to 256', parse: wholeNumber(1, 256) },
  retention: { default: 0, does: 'completed and dead jobs are deleted, with their logs, this long after they end', range: 'a duration up to 3650d such as 7d, 12h, or seconds (0 = keep them)', parse: durationSeconds(3_650 * 86_400) },
  lease: { default: 30, does: 'a worker on another host whose heartbeat stands still this long has its jobs recovered', range: 'a duration from 1s to 1d such as 30s or 2m', parse: durationSeconds(86_400, 1) },
  on_finish: { default: '', does: 'runs once any job has ended, after its own hooks', range: HOOK_RANGE, parse: hookCommand },
  on_failure: { default: '', does: 'runs once a job has ended dead, cancelled or skipped, after its own hooks', range: HOOK_RANGE, parse: hookCommand },
  hook_timeout: { default: 30, does: 'a completion hook running longer is killed', range: 'a duration from 1s to 1d such as 30s or 5m', parse: durationSeconds(86_400, 1) },
} satisfies Record<string, ConfigKey>
export type ConfigName = keyof typeof CONFIG_KEYS
/** Each setting's value: a number (durations in seconds) or, for the global hooks, a command ('' = none). */
export type Config = { [K in ConfigName]: NonNullable<ReturnType<(typeof CONFIG_KEYS)[K]['parse']>> }

const VERSION = '0.3.0'
const SCHEMA_VERSION = 4 // 1: queuectl 0.1.0; 2: config values as text, attempts' outcome, workers' note; 3: queues, dependencies, unique keys, the ready set; 4: schedules and completion hooks
const APPLICATION_ID = 0x51554555 // "QUEU": marks queue.db as ours, so a foreign SQLite file is never touched
const JOURNAL_MAGIC = 'QCTLJRN1'
const JOURNAL_FORMAT = 1
const JOURNAL_HEADER_BYTES = 16
const JOURNAL_LIMIT = { min: 64 * 1024, max: 256 * 1024 }
const HEARTBEAT_MS = 5_000 // or a third of the lease, if that is shorter
// A process that has not watched a remote worker's heartbeat stand still for a lease (a CLI call) judges it by the
// heartbeat's age on its own clock instead, and allows the two hosts' clocks to differ by this much.
const CLOCK_SKEW_ALLOWANCE_MS = 60_000
const REMOTE_LEASE_MS = 30_000 // a lock of another host is judged by its age alone (the lock cannot read the config)
const KILL_GRACE_MS = 2_000
const KILL_GRACE_DEFAULT_MS = 10_000 // `kill --grace`: a cancelled job gets longer than a timed-out one to clean up
const MACHINE_FAULT_BACKOFF_MS = { first: 1_000, max: 60_000 }

/** A number from the environment, or the default when it is unset or not a number ≥ 0. */
function envNumber(name: string, fallback: number): number {
  const value = Number(process.env[name])
  return process.env[name]?.trim() && Number.isFinite(value) && value >= 0 ? value : fallback
}
const OUTPUT_TAIL_BYTES = 2_048
const ID_PATTERN = /^[A-Za-z0-9_:][A-Za-z0-9_.:-]{0,127}$/
/** A job's own completion hooks: on_success after `completed`, on_failure after dead, cancelled or skipped, on_finish after any end. */
const HOOK_FIELDS = ['on_success', 'on_failure', 'on_finish'] as const
type HookName = (typeof HOOK_FIELDS)[number]
const JOB_FIELDS = ['id', 'command', 'max_retries', 'priority', 'run_at', 'delay', 'timeout', 'cwd', 'queue', 'after', 'after_any', 'unique_key', 'unique_for', ...HOOK_FIELDS] as const
const JOB_FIELD_SET: ReadonlySet<string> = new Set(JOB_FIELDS)
const QUEUE_PATTERN = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$/
const MAX_PARENTS = 1_000
const CRON_NICKNAMES = ['@hourly', '@daily', '@weekly', '@monthly', '@yearly']
const CRON_FIELDS = [['minute', '0-59'], ['hour', '0-23'], ['day-of-month', '1-31'], ['month', '1-12 or JAN-DEC'], ['day-of-week', '0-7 or SUN-SAT']] as const
const MIN_EVERY_MS = 10_000
const SCHEDULE_CHECK_MS = 1_000 // a worker looks for due schedules this often at least (one may be added meanwhile)
const CATCH_UP_COUNTED = 1_000 // missed fire times counted one by one after a downtime; the rest by their spacing

// Pure helpers: durations, backoff, ids, time.

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 }

const DURATION_FORMS = 'a duration such as 500ms, 30s, 5m, 2h, 1d, or a number of seconds'

/** `30s`, `5m`, `2h`, `1d`, `1.5s`, `250ms` or a bare number of seconds, in milliseconds: every length of time. */
export function parseDuration(text: string | number, what = 'duration'): number {
  if (typeof text === 'number') {
    if (Number.isFinite(text) && text >= 0) return text * 1000
    throw new UsageError(`invalid ${what} ${text}: use ${DURATION_FORMS} (≥ 0)`)
  }
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$/.exec(text)
  if (!match) throw new UsageError(`invalid ${what} ${describeValue(text)}: use ${DURATION_FORMS}`)
  return Number(match[1]) * DURATION_UNITS[match[2] ?? 's']
}

/** A duration in its largest exact unit (`604800000` → `7d`, `90000` → `90s`, `1500` → `1500ms`); `0` stays `0`. */
export function formatDuration(ms: number): string {
  if (ms === 0) return '0'
  for (const unit of ['d', 'h', 'm', 's'] as const) if (ms % DURATION_UNITS[unit] === 0) return `${ms / DURATION_UNITS[unit]}${unit}`
  return `${ms}ms`
}

const SIGNALS = new Set(Object.keys(osConstants.signals))

/** `TERM`, `sigterm` or `SIGTERM` as `SIGTERM`: a signal this system knows (`kill --signal`, the dashboard's kill). */
function parseSignal(text: string): NodeJS.Signals {
  const name = (/^SIG/i.test(text) ? text : `SIG${text}`).toUpperCase()
  if (!SIGNALS.has(name)) throw new UsageError(`unknown signal "${text}": use e.g. TERM, INT, HUP, KILL or USR1`)
  return name as NodeJS.Signals
}

/**
 * A command line that `/bin/sh -c` runs with exactly these arguments (`enqueue -- printf '%s\n' "a b" c`): each one
 * the shell would change is single-quoted; a first word holding `=` too, or sh would take it for an assignment.
 */
export function quoteCommand(args: string[]): string {
  return args.map((arg, i) => (/^[\w@%+=:,./-]+$/.test(arg) && !(i === 0 && arg.includes('=')) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`)).join(' ')
}

/** Seconds to wait after the k-th failed attempt: base^k, capped by max. */
export function retryDelay(failedAttempts: number, base: number, max: number): number {
  return Math.min(base ** failedAttempts, max)
}

/**
 * The queue's clock: this host's, moved by its difference to the database server's (measured when a PostgreSQL
 * queue opens), so that hosts whose clocks disagree still agree on when a job is due. 0 for the SQLite file.
 */
let clockOffsetMs = 0
export const clockNow = () => Date.now() + clockOffsetMs

let lastIdTime = 0
let idTime = '' // lastIdTime in base 36
let idCounter = 0
let randomPool = Buffer.alloc(0) // drawn 4 KiB at a time: a bulk enqueue makes 100k ids, and one randomBytes() costs ~5 µs
let randomUsed = 0
/** A short, URL-safe id that sorts by creation: 8 base36 chars of milliseconds, a 3-char counter, 2 random. */
export function generateJobId(): string {
  const now = Date.now()
  if (now > lastIdTime || ++idCounter >= 36 ** 3) {
    lastIdTime = Math.max(now, lastIdTime + 1)
    idTime = lastIdTime.toString(36).padStart(8, '0')
    idCounter = 0
  }
  if (randomUsed + 2 > randomPool.length) [randomPool, randomUsed] = [randomBytes(4096), 0]
  const random = randomPool.readUInt16BE((randomUsed += 2) - 2) % 36 ** 2
  return idTime + idCounter.toString(36).padStart(3, '0') + random.toString(36).padStart(2, '0')
}

export function isValidJobId(id: unknown): id is string {
  return typeof id === 'string' && ID_PATTERN.test(id)
}

/** A value as an error message may quote it: short, and safe for any input (deep nesting, huge strings). */
function describeValue(value: unknown): string {
  if (Array.isArray(value)) return 'an array'
  if (typeof value === 'object' && value !== null) return 'an object'
  if (typeof value === 'string') return JSON.stringify(value.length > 60 ? `${value.slice(0, 60)}…` : value)
  return String(value)
}

let lastIso: [number, string] = [NaN, '']
/** An ISO-8601 UTC timestamp; the last one is kept, since the jobs of one enqueue share their times. */
const iso = (ms: number | null | undefined): string | null => {
  if (ms == null) return null
  if (ms !== lastIso[0]) lastIso = [ms, new Date(ms).toISOString()]
  return lastIso[1]
}

const ISO_TIME = /^(\d{4})-(\d\d)-(\d\d)(?:[T ](\d\d):(\d\d)(?::(\d\d)(?:[.,](\d+))?)?(Z|([+-])(\d\d)(?::?(\d\d))?)?)?$/i

/**
 * ISO-8601 with one rule for zones: a time with `Z` or an offset keeps it; without one, a date-time and a date alone
 * alike are local time (`Date.parse` would read `2030-01-01` as UTC midnight but `2030-01-01T10:00` as local).
 */
function parseTime(text: string | Date, what: string): number {
  if (text instanceof Date) {
    if (Number.isFinite(text.getTime())) return text.getTime()
  } else {
    const m = ISO_TIME.exec(text.trim())
    const [year, month, day, hour, minute, second] = (m?.slice(1, 7) ?? []).map((part) => Number(part ?? 0))
    const ms = Number((m?.[7] ?? '').padEnd(3, '0').slice(0, 3))
    if (m && month >= 1 && month <= 12 && day >= 1 && day <= new Date(Date.UTC(year, month, 0)).getUTCDate() && hour <= 23 && minute <= 59 && second <= 59) {
      if (!m[8]) return new Date(year, month - 1, day, hour, minute, second, ms).getTime()
      const offsetMinutes = m[9] ? (m[9] === '-' ? -1 : 1) * (Number(m[10]) * 60 + Number(m[11] ?? 0)) : 0
      return Date.UTC(year, month - 1, day, hour, minute, second, ms) - offsetMinutes * 60_000
    }
  }
  throw new UsageError(`invalid ${what} ${describeValue(String(text))}: use an ISO-8601 time such as 2026-11-23T10:15 (local time) or 2026-11-23T10:15:00Z`)
}

function percentile(sorted: number[], p: number): number | null {
  if (sorted.length === 0) return null
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))
const sleepSync = (ms: number) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms)

// Processes: is a pid alive, and is it still the process we recorded (pid reuse)?

/** The fields of /proc/<pid>/stat after the command name (state first), or undefined if there is none. */
function procStat(pid: number): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  } catch {
    return undefined
  }
}

/** Field 22 of /proc/<pid>/stat (start time in clock ticks), or '' where /proc is absent. */
export function processStartTime(pid: number): string {
  return procStat(pid)?.[19] ?? ''
}

let startTimeOfThisProcess: string | undefined
/** This process's start time, read once. */
function ownStartTime(): string {
  return (startTimeOfThisProcess ??= processStartTime(process.pid))
}

/** A zombie passes `kill(pid, 0)`, so /proc decides where it exists; a different start time means a reused pid. */
export function isProcessAlive(pid: number, startTime?: string): boolean {
  try {
    process.kill(pid, 0)
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EPERM') return false
  }
  const fields = procStat(pid)
  if (!fields) return !existsSync('/proc/self/stat')
  if (fields[0] === 'Z' || fields[0] === 'X') return false
  return !startTime || fields[19] === startTime
}

// Storage, part 1: the lockfile that serialises every write across processes.

const LOCK_FIRST_BACKOFF_MS = 0.05
const LOCK_MAX_BACKOFF_MS = 32

/** The lock files (see FileLock) this process has made, removed when it exits. */
const OWN_LOCK_FILES = new Set<string>()
process.on('exit', () => {
  for (const path of OWN_LOCK_FILES) rmQuiet(path)
})

/**
 * `queue.db.lock` holds `pid starttime token host`, with a new token for every acquisition. It is created by link()
 * from a complete file, so nobody ever reads a half-written lock. That file is the process's own,
 * `queue.db.lock.<pid>.<starttime>.<host>`, rewritten for each acquisition and kept until the process ends: the
 * lock costs no new inode (on ext4, creating files while many were just deleted grows slow), and the process that
 * next opens the lock sweeps the files of processes of this host that are gone. It is held for one transaction,
 * about a millisecond; the longest is a compaction, which writes the whole database once (~0.1 s at 100k jobs,
 * growing with the file): never near REMOTE_LEASE_MS.
 *
 * A lock is stale, and removed, when its holder on this host is dead (or a zombie, or a reused pid), or when it is
 * from another host (whose pids mean nothing here) and its file is older than REMOTE_LEASE_MS: no live holder keeps
 * it that long, so that one died or was cut off. Like workers' heartbeats, this relies on the hosts' clocks agreeing
 * within seconds. A holder that was itself held up that long (SIGSTOP, a suspended VM) checks that the lock is still
 * its own before it appends to the journal or compacts, and rolls back if not. Any other holder is waited for, never
 * robbed, and after `timeoutMs` the caller gets an error naming it.
 */
export class FileLock {
  private readonly owner = `${process.pid} ${processStartTime(process.pid)}`
  private readonly host = hostname()
  private content: string | undefined // while held: what this acquisition wrote into the lock
  private own: { path: string; fd: number } | undefined // the file that link() makes the lock

  constructor(readonly path: string, private readonly timeoutMs = envNumber('QUEUECTL_LOCK_TIMEOUT', 30) * 1000) {}

  acquire(): void {
    const content = `${this.owner} ${randomBytes(6).toString('hex')} ${this.host}\n`
    let own = this.own
    try {
      own ??= this.createOwnFile()
      writeSync(own.fd, content, 0) // every content of this process has the same length
    } catch (error) {
      throw new QueueError(`cannot create the lock file in ${dirname(this.path)}: ${(error as Error).message} (is the disk full or the folder read-only?)`)
    }
    try {
      this.waitToLink(own.path, own.fd)
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT' || !existsSync(dirname(this.path))) throw error
      this.close() // someone removed it, taking it for a leftover: make it again
      return this.acquire()
    }
    this.content = content
  }

  /** Removes this process's own file; the lock can be taken again after, with a new one. */
  close(): void {
    if (!this.own) return
    closeSync(this.own.fd)
    rmQuiet(this.own.path)
    OWN_LOCK_FILES.delete(this.own.path)
    this.own = undefined
  }

  private createOwnFile(): { path: string; fd: number } {
    const prefix = `${basename(this.path)}.`
    const folder = dirname(this.path)
    const host = this.host.replaceAll('.', '_')
    for (const name of readdirSync(folder)) {
      const [pid, startTime, itsHost] = name.startsWith(prefix) ? name.slice(prefix.length).split('.', 3) : []
      if (itsHost === host && /^\d+$/.test(pid) && !isProcessAlive(Number(pid), startTime)) rmQuiet(join(folder, name))
    }
    const path = `${this.path}.${this.owner.replace(' ', '.')}.${host}`
    const fd = openSync(path, 'w', 0o600)
    OWN_LOCK_FILES.add(path)
    return (this.own = { path, fd })
  }

  release(): void {
    const mine = this.content
    this.content = undefined
    if (mine !== undefined && this.readLock() === mine) rmQuiet(this.path) // never remove a lock that is no longer ours
  }

  /** False if the lock was taken over, which only a holder held up for longer than REMOTE_LEASE_MS can find. */
  stillHeld(): boolean {
    return this.content !== undefined && this.readLock() === this.content
  }

  private waitToLink(tmp: string, fd: number): void {
    const started = Date.now()
    let touched = started
    let seen: string | undefined
    let backoffMs = LOCK_FIRST_BACKOFF_MS
    let warned = false
    for (;;) {
      if (Date.now() - touched > 1000) {
        // The lock's age must be its holder's, not that of our wait: a long wait must not make our lock look stale.
        futimesSync(fd, new Date(), new Date())
        touched = Date.now()
      }
      try {
        linkSync(tmp, this.path)
        return
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error
      }
      const holder = this.readLock()
      if (holder !== undefined && this.isStale(holder)) {
        this.breakStale(holder)
        continue
      }
      const waited = Date.now() - started
      if (waited > this.timeoutMs) {
        throw new QueueError(`the queue is locked by ${describeHolder(holder)} for over ${Math.round(waited / 1000)} s and it is not known to be dead, so the lock was left alone (stop that process, or raise QUEUECTL_LOCK_TIMEOUT)`)
      }
      if (!warned && waited > 3000) {
        warned = true
        process.stderr.write(`queuectl: waiting for the queue lock held by ${describeHolder(holder)}…\n`)
      }
      // A lock is held for about a millisecond, so retry soon; only while one holder keeps it (a compaction, a hung
      // process) does the wait grow, so that a waiter does not spin. Every acquisition writes a new token.
      backoffMs = holder === seen ? Math.min(backoffMs * 2, LOCK_MAX_BACKOFF_MS) : LOCK_FIRST_BACKOFF_MS
      seen = holder
      sleepSync(backoffMs * (0.5 + Math.random()))
    }
  }

  private readLock(): string | undefined {
    try {
      return readFileSync(this.path, 'utf8')
    } catch {
      return undefined
    }
  }

  private isStale(content: string): boolean {
    const [pid, startTime, , host] = content.trim().split(' ')
    if (host && host !== this.host) return ageMs(this.path) > REMOTE_LEASE_MS
    if (/^\d+$/.test(pid ?? '')) return !isProcessAlive(Number(pid), startTime)
    return ageMs(this.path) > 2000 // unreadable content is not ours to judge until it is clearly abandoned
  }

  /** Two waiters may both judge the lock stale; `.break` makes one of them remove it, and only if unchanged. */
  private breakStale(content: string): void {
    const breaker = `${this.path}.break`
    try {
      closeSync(openSync(breaker, 'wx', 0o600))
    } catch {
      if (ageMs(breaker) > 2000) rmQuiet(breaker)
      sleepSync(1)
      return
    }
    try {
      if (this.readLock() === content) unlinkSync(this.path)
    } finally {
      rmQuiet(breaker)
    }
  }
}

function describeHolder(content: string | undefined): string {
  const [pid, , , host] = content?.trim().split(' ') ?? []
  return pid && /^\d+$/.test(pid) ? `pid ${pid}${host && host !== hostname() ? ` on ${host}` : ''}` : 'another process'
}

function ageMs(path: string): number {
  try {
    return Date.now() - statSync(path).mtimeMs
  } catch {
    return 0
  }
}

function rmQuiet(path: string): void {
  try {
    unlinkSync(path)
  } catch {
    // nothing to remove
  }
}

// Storage, part 2: the seam, and its sql.js implementation (snapshot + journal).

export type SqlValue = string | number | Uint8Array | null
export type Row = Record<string, SqlValue>

/** What queue operations may do with the database. Async so that a networked backend fits the same seam. */
export interface SqlSession {
  all<T = Row>(sql: string, params?: SqlValue[]): Promise<T[]>
  get<T = Row>(sql: string, params?: SqlValue[]): Promise<T | undefined>
  run(sql: string, params?: SqlValue[]): Promise<void>
}

export interface Storage {
  /** A consistent view of the latest committed state, read-only: a statement that would write fails. */
  read<T>(fn: (sql: SqlSession) => Promise<T>): Promise<T>
  /**
   * One atomic, durable transaction: when it resolves, a crash of any process loses nothing it did. `afterCommit`
   * runs once it is durable and before any other write can begin: for files that go with the rows it deleted, so
   * that a row written again under the same key cannot lose its new file.
   */
  write<T>(fn: (sql: SqlSession) => Promise<T>, afterCommit?: (result: T) => void): Promise<T>
  /** Appended to the query that picks a job to claim (a server database locks the picked rows: `FOR UPDATE OF j SKIP LOCKED`). */
  readonly claimLock: string
  /** Attempts' output is in the table `output` (a database that hosts share), not only in this host's log files. */
  readonly outputInDatabase?: boolean
  /** A read costs less than a write (no lock): an idle worker looks whether a claim would find a job before it claims. */
  readonly cheapReads?: boolean
  /** Where the queue is, for messages. */
  readonly where: string
  /** Tells idle workers on other hosts that there may be work (theirs are not poked through a file). */
  hint?(): void
  /** Calls `onHint` whenever some process hints. */
  listen?(onHint: () => void, onTrouble: (message: string) => void): void
  close(): void
}

/**
 * The ready set (see the head comment): jobs_ready holds exactly the jobs a claim may take, per queue, in claim
 * order; jobs_waiting holds the pending and failed jobs that are not yet due, by due time, to be promoted.
 */
const READY_SET = `
CREATE INDEX jobs_ready ON jobs (queue, priority DESC, seq) WHERE ready = 1;
CREATE INDEX jobs_waiting ON jobs (run_at) WHERE ready = 0 AND state IN ('pending', 'failed');
CREATE INDEX jobs_worker ON jobs (worker) WHERE worker IS NOT NULL;
CREATE INDEX jobs_unique ON jobs (queue, unique_key) WHERE unique_key IS NOT NULL;`
/** A queue's row holds its limit, its pause and its count of processing jobs, kept by moveJob. */
const QUEUES_AND_DEPENDENCIES = `
CREATE TABLE queues (name TEXT PRIMARY KEY, concurrency INTEGER, paused INTEGER NOT NULL DEFAULT 0, running INTEGER NOT NULL DEFAULT 0);
INSERT INTO queues (name) VALUES ('default');
CREATE TABLE deps (parent TEXT NOT NULL, child TEXT NOT NULL, required INTEGER NOT NULL, PRIMARY KEY (parent, child));
CREATE INDEX deps_child ON deps (child);`

/**
 * A schedule fires jobs with ids `NAME:<fire time>`; `spec` is the job it makes (JSON, as validated at `add`).
 * `hook_due` marks a job whose completion hooks are still to run: set in the transaction that ends it.
 */
const SCHEDULES_AND_HOOKS = `
CREATE TABLE schedules (
  name TEXT PRIMARY KEY,
  cron TEXT,
  every_ms INTEGER,
  tz TEXT NOT NULL,
  spec TEXT NOT NULL,
  paused INTEGER NOT NULL DEFAULT 0,
  next_at INTEGER,
  last_at INTEGER,
  last_job TEXT,
  missed INTEGER NOT NULL DEFAULT 0,
  skipped INTEGER NOT NULL DEFAULT 0,
  created_at INTEGER NOT NULL
);
CREATE INDEX jobs_hooks ON jobs (finished_at) WHERE hook_due = 1;
CREATE INDEX jobs_schedule ON jobs (schedule, seq) WHERE schedule IS NOT NULL;`

const SCHEMA = `
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE config (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE envs (hash TEXT PRIMARY KEY, env TEXT NOT NULL);
CREATE TABLE jobs (
  seq INTEGER PRIMARY KEY,
  id TEXT NOT NULL UNIQUE,
  command TEXT NOT NULL,
  cwd TEXT NOT NULL,
  env_hash TEXT,
  state TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  runs INTEGER NOT NULL DEFAULT 0,
  max_retries INTEGER NOT NULL,
  priority INTEGER NOT NULL DEFAULT 0,
  run_at INTEGER NOT NULL,
  timeout REAL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  started_at INTEGER,
  finished_at INTEGER,
  exit_code INTEGER,
  last_error TEXT,
  worker TEXT,
  output_tail TEXT,
  queue TEXT NOT NULL DEFAULT 'default',
  ready INTEGER NOT NULL DEFAULT 0,
  unique_key TEXT,
  after TEXT,
  after_any TEXT,
  cancel TEXT,
  slot INTEGER,
  schedule TEXT,
  on_success TEXT,
  on_failure TEXT,
  on_finish TEXT,
  hook_due INTEGER NOT NULL DEFAULT 0
);
${READY_SET}
CREATE INDEX jobs_state ON jobs (state, seq);
CREATE TABLE attempts (
  job_id TEXT NOT NULL,
  attempt INTEGER NOT NULL,
  worker TEXT,
  started_at INTEGER NOT NULL,
  finished_at INTEGER,
  exit_code INTEGER,
  signal TEXT,
  error TEXT,
  duration_ms INTEGER,
  outcome TEXT,
  PRIMARY KEY (job_id, attempt)
);
CREATE TABLE workers (
  id TEXT PRIMARY KEY,
  pid INTEGER NOT NULL,
  host TEXT NOT NULL,
  proc_start TEXT NOT NULL,
  started_at INTEGER NOT NULL,
  heartbeat_at INTEGER NOT NULL,
  note TEXT,
  slots INTEGER NOT NULL DEFAULT 1,
  queues TEXT
);
${QUEUES_AND_DEPENDENCIES}
${SCHEDULES_AND_HOOKS}`

/**
 * How a home of schema `version - 1` becomes `version`. A migration runs in memory under the lock, in one
 * transaction, and is then written as a new snapshot (never journaled): an older queuectl reads the snapshot's
 * schema_version before anything else, so it refuses the migrated home instead of replaying into it.
 */
const MIGRATIONS: Record<number, (db: Database) => void> = {
  2: (db) => {
    const config = db.exec('SELECT key, value FROM config')[0]?.values ?? []
    db.exec(`DROP TABLE config; CREATE TABLE config (key TEXT PRIMARY KEY, value TEXT NOT NULL);
      ALTER TABLE attempts ADD COLUMN outcome TEXT; ALTER TABLE workers ADD COLUMN note TEXT;
      UPDATE attempts SET outcome = CASE
        WHEN finished_at IS NULL THEN NULL
        WHEN error LIKE '%(not counted)' THEN 'released'
        WHEN error = 'worker lost' THEN 'lost'
        WHEN exit_code = 0 AND error IS NULL THEN 'completed'
        ELSE 'failed' END;`)
    // 0.1.0 stored numbers; durations were seconds, shown now as they would have been set (604800 → 7d).
    for (const [key, value] of config) {
      const text = key === 'retention' || key === 'job_timeout' ? formatDuration(Number(value) * 1000) : String(value)
      db.run('INSERT INTO config (key, value) VALUES (?, ?)', [key, text])
    }
  },
  3: (db) => {
    db.exec(`DROP INDEX jobs_ready;
      ${['queue TEXT NOT NULL DEFAULT \'default\'', 'ready INTEGER NOT NULL DEFAULT 0', 'unique_key TEXT', 'after TEXT', 'after_any TEXT', 'cancel TEXT', 'slot INTEGER']
        .map((column) => `ALTER TABLE jobs ADD COLUMN ${column};`).join('\n')}
      ALTER TABLE workers DROP COLUMN job_id; ALTER TABLE workers DROP COLUMN since;
      ALTER TABLE workers ADD COLUMN slots INTEGER NOT NULL DEFAULT 1; ALTER TABLE workers ADD COLUMN queues TEXT;
      ${READY_SET}
      ${QUEUES_AND_DEPENDENCIES}`)
    db.run("UPDATE jobs SET ready = 1 WHERE state IN ('pending', 'failed') AND run_at <= ?", [Date.now()])
    db.run("UPDATE queues SET running = (SELECT count(*) FROM jobs WHERE state = 'processing')")
  },
  4: (db) => {
    db.exec(`${['schedule TEXT', 'on_success TEXT', 'on_failure TEXT', 'on_finish TEXT', 'hook_due INTEGER NOT NULL DEFAULT 0']
      .map((column) => `ALTER TABLE jobs ADD COLUMN ${column};`).join('\n')}
      ${SCHEDULES_AND_HOOKS}`)
  },
}

let sqlJs: Promise<SqlJsStatic> | undefined
function loadSqlJs(): Promise<SqlJsStatic> {
  // A built-in module first loaded after a V8 flag changes misses Node's code cache (made under other flags) and is
  // compiled afresh, ~6 ms more: the standard streams, which every command uses, are created first.
  void [process.stdout.isTTY, process.stderr.isTTY]
  // Without tier-up, a short CLI call exits ~100 ms sooner (MEASURED §7) and workers lose nothing measurable. A function
  // is validated when it is first compiled: a CLI call uses a fraction of SQLite, and need not check all of it first.
  setFlagsFromString('--liftoff-only')
  setFlagsFromString('--wasm-lazy-validation')
  // require(), not import(): sql.js is CommonJS, and import() would first scan its 100 KB for named exports.
  sqlJs ??= Promise.resolve().then(() => (createRequire(scriptPath())('sql.js') as (config?: object) => Promise<SqlJsStatic>)())
  return sqlJs
}

const crc32: (data: Uint8Array) => number =
  (zlib as unknown as { crc32?: (data: Uint8Array) => number }).crc32 ??
  (() => {
    const table = Array.from({ length: 256 }, (_, n) => {
      for (let k = 0; k < 8; k++) n = n & 1 ? 0xedb88320 ^ (n >>> 1) : n >>> 1
      return n >>> 0
    })
    return (data: Uint8Array) => {
      let crc = 0xffffffff
      for (const byte of data) crc = table[(crc ^ byte) & 0xff] ^ (crc >>> 8)
      return (crc ^ 0xffffffff) >>> 0
    }
  })()

/** A transaction's statements: runs of `[sql, ...paramRows]`, so a bulk insert names its SQL once. */
type Statements = [string, ...SqlValue[][]][]
/**
 * A journal record: the same, but a statement's SQL is written out only the first time a journal (one
 * generation) uses it; after that it is its number, in order of first use. Records stay ~4× smaller, so a
 * large queue compacts ~4× less often.
 */
type JournalRecord = [string | number, ...SqlValue[][]][]

/** mkdir -p with mode 0700, one level at a time: Node's recursive mkdir spins forever under /proc. */
function makeDirectory(dir: string): void {
  if (existsSync(dir)) return
  const parent = dirname(dir)
  if (parent !== dir) makeDirectory(parent)
  try {
    mkdirSync(dir, { mode: 0o700 })
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error
  }
}

function fsyncDirectory(dir: string): void {
  const fd = openSync(dir, 'r')
  try {
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
}

function writeFileDurably(path: string, data: Uint8Array): void {
  const tmp = `${path}.tmp`
  try {
    const fd = openSync(tmp, 'w', 0o600)
    try {
      let offset = 0
      while (offset < data.length) offset += writeSync(fd, data, offset, data.length - offset)
      fsyncSync(fd)
    } finally {
      closeSync(fd)
    }
    renameSync(tmp, path)
  } catch (error) {
    rmQuiet(tmp) // a database-sized leftover would keep a full disk full
    throw error
  }
  fsyncDirectory(dirname(path))
}

function journalHeader(generation: number): Buffer {
  const header = Buffer.alloc(JOURNAL_HEADER_BYTES)
  header.write(JOURNAL_MAGIC, 0, 'latin1')
  header.writeUInt32BE(JOURNAL_FORMAT, 8)
  header.writeUInt32BE(generation, 12)
  return header
}

const exclusiveByHome = new Map<string, Promise<unknown>>()
const WRITING_OPCODES = new Set(['AutoCommit', 'Savepoint', 'Vacuum', 'JournalMode', 'Checkpoint', 'VUpdate'])

/**
 * sql.js persisted as `queue.db` (snapshot) + `queue.db.journal` (one framed record per transaction).
 * Every process keeps the database in memory and catches up by replaying what others appended.
 */
export class SqlJsStorage implements Storage {
  readonly claimLock = ''
  readonly cheapReads = true
  readonly where: string
  private db: Database | undefined
  private generation = 0
  private schemaVersion = 0
  private applied = 0 // bytes of the journal already in memory
  private readonly statements = new Map<string, Statement>()
  private readonly columnNames = new WeakMap<Statement, string[]>() // sql.js's getAsObject asks for them again per row
  private readonly readOnlySql = new Set<string>()
  private readonly mayChangeNoRow = new Map<string, boolean>() // by statement text: see mayChangeNothing
  private readonly lock: FileLock
  private readonly dbPath: string
  private readonly journalPath: string
  private readonly journalLimitSet = envNumber('QUEUECTL_JOURNAL_LIMIT', -1) // -1: not set
  private snapshotBytes = 0
  private pending: Statements = [] // the statements of the open write transaction
  private sqlTexts: string[] = [] // the journal's statements by number, as far as it has been applied
  private readonly sqlNumbers = new Map<string, number>()
  private lastFrame: { offset: number; head: Buffer } | undefined // the last record applied: is it still there?

  private constructor(private readonly SQL: SqlJsStatic, readonly home: string) {
    this.dbPath = join(home, 'queue.db')
    this.where = this.dbPath
    this.journalPath = `${this.dbPath}.journal`
    this.lock = new FileLock(`${this.dbPath}.lock`)
  }

  static async open(home: string): Promise<SqlJsStorage> {
    try {
      makeDirectory(home)
    } catch (error) {
      throw new QueueError(`cannot create the queue home ${home}: ${(error as Error).message}`)
    }
    const storage = new SqlJsStorage(await loadSqlJs(), home)
    if (!existsSync(storage.dbPath)) storage.withLock(() => storage.createIfMissing())
    await storage.read(async () => undefined)
    if (storage.schemaVersion < SCHEMA_VERSION) await storage.migrate()
    return storage
  }

  /**
   * A write here would change memory without the journal, and this process would silently part from the others
   * (until its next compaction wrote its view to disk for everyone). So a read runs only statements that SQLite
   * compiles to a program that writes nothing (see `readOnly`), inside a transaction that is rolled back.
   */
  read<T>(fn: (sql: SqlSession) => Promise<T>): Promise<T> {
    return this.serialised(async () => {
      this.catchUp(false)
      this.prepare('BEGIN').run()
      try {
        return await fn(this.session(false))
      } finally {
        try {
          this.prepare('ROLLBACK').run()
        } catch {
          this.loadSnapshot() // SQLite ended the transaction itself (out of memory): start again from disk
        }
      }
    })
  }

  write<T>(fn: (sql: SqlSession) => Promise<T>, afterCommit?: (result: T) => void): Promise<T> {
    return this.serialised(async () => {
      this.lock.acquire()
      try {
        const fd = this.catchUp(true)
        try {
          return await this.transaction(fd, fn, afterCommit)
        } finally {
          closeSync(fd)
        }
      } finally {
        this.lock.release()
      }
    })
  }

  close(): void {
    this.freeStatements()
    this.db?.close()
    this.db = undefined
    this.lock.close()
  }

  /**
   * Reads and writes of one process run one at a time: a transaction may await, and must not interleave. The
   * chain is per home, not per object, so two queues opened on one home cannot wait on each other's lock.
   */
  private serialised<T>(fn: () => Promise<T>): Promise<T> {
    const result = (exclusiveByHome.get(this.home) ?? Promise.resolve()).then(fn)
    exclusiveByHome.set(this.home, result.catch(() => undefined))
    return result
  }

  /** Brings an older home up to SCHEMA_VERSION: one transaction under the lock, then a snapshot of the result. */
  private migrate(): Promise<void> {
    return this.serialised(async () => {
      this.lock.acquire()
      try {
        closeSync(this.catchUp(true))
        if (this.schemaVersion >= SCHEMA_VERSION) return // another process migrated it meanwhile
        const db = this.database()
        this.freeStatements()
        db.exec('BEGIN')
        try {
          for (let version = this.schemaVersion + 1; version <= SCHEMA_VERSION; version++) MIGRATIONS[version](db)
          db.run("UPDATE meta SET value = ? WHERE key = 'schema_version'", [String(SCHEMA_VERSION)])
          db.exec('COMMIT')
        } catch (error) {
          db.exec('ROLLBACK')
          throw new QueueError(`cannot upgrade ${this.dbPath} from schema ${this.schemaVersion} to ${SCHEMA_VERSION}: ${(error as Error).message}; it was left untouched`)
        }
        try {
          this.writeSnapshot(this.generation + 1)
        } catch (error) {
          this.loadSnapshot() // memory must not run ahead of the file in a schema the file does not have
          throw new QueueError(`cannot upgrade ${this.dbPath}: ${(error as Error).message}; it was left untouched`)
        }
        this.schemaVersion = SCHEMA_VERSION
      } finally {
        this.lock.release()
      }
    })
  }

  private withLock<T>(fn: () => T): T {
    this.lock.acquire()
    try {
      return fn()
    } finally {
      this.lock.release()
    }
  }

  private createIfMissing(): void {
    if (existsSync(this.dbPath)) return
    const db = new this.SQL.Database()
    db.exec(SCHEMA)
    db.run('INSERT INTO meta (key, value) VALUES (?, ?)', ['schema_version', String(SCHEMA_VERSION)])
    db.exec(`PRAGMA application_id = ${APPLICATION_ID}; PRAGMA user_version = 1;`)
    const data = db.export()
    db.close()
    writeFileDurably(this.journalPath, journalHeader(1))
    writeFileDurably(this.dbPath, data)
  }

  private session(writable: boolean): SqlSession {
    const all = async <T>(sql: string, params: SqlValue[] = []): Promise<T[]> => {
      if (!writable && !this.readOnly(sql)) throw new QueueError(`a read cannot write: ${sql.trim().split(/\s+/).slice(0, 4).join(' ')}…`)
      const statement = this.prepare(sql)
      try {
        statement.bind(params)
        const rows: T[] = []
        let names = this.columnNames.get(statement)
        if (!names) this.columnNames.set(statement, (names = statement.getColumnNames()))
        while (statement.step()) {
          const values = statement.get()
          const row: Record<string, SqlValue> = {}
          for (let i = 0; i < names.length; i++) row[names[i]] = values[i]
          rows.push(row as T)
        }
        return rows
      } finally {
        statement.reset()
      }
    }
    return {
      all,
      get: async (sql, params) => (await all(sql, params))[0] as never,
      run: async (sql, params = []) => {
        if (!writable) throw new Error('write outside a write transaction')
        this.prepare(sql).run(params)
        // what changed nothing here changes nothing where it is replayed (the same rows): a claim's promotion, mostly
        if (this.mayChangeNothing(sql) && this.database().getRowsModified() === 0) return
        const last = this.pending[this.pending.length - 1]
        if (last && last[0] === sql) last.push(params)
        else this.pending.push([sql, params])
      },
    }
  }

  /** An UPDATE, DELETE or INSERT OR IGNORE can change no row; an INSERT (or upsert) changes one or fails. */
  private mayChangeNothing(sql: string): boolean {
    let may = this.mayChangeNoRow.get(sql)
    if (may === undefined) this.mayChangeNoRow.set(sql, (may = /^\s*(UPDATE|DELETE|INSERT OR IGNORE)\b/.test(sql)))
    return may
  }

  /**
   * What sqlite3_stmt_readonly() says (sql.js does not expose it). A SELECT writes nothing (and only the first
   * statement of a text is compiled); anything else is asked of the program SQLite compiles it to: no write
   * transaction, no VACUUM or journal mode change; nor BEGIN, COMMIT or SAVEPOINT. Asked once per statement text.
   * (PRAGMA query_only would refuse writes too, but setting it expires every prepared statement: toggled around
   * reads, it made a worker's claim-and-finish cycle ~30 % dearer.)
   */
  private readOnly(sql: string): boolean {
    if (this.readOnlySql.has(sql) || /^\s*SELECT\b/i.test(sql)) return true
    const program = this.database().prepare(`EXPLAIN ${sql}`)
    try {
      while (program.step()) {
        const [, opcode, , p2] = program.get() as [number, string, number, number]
        if ((opcode === 'Transaction' && p2 !== 0) || WRITING_OPCODES.has(opcode)) return false
      }
    } finally {
      program.free()
    }
    this.readOnlySql.add(sql)
    return true
  }

  private prepare(sql: string): Statement {
    let statement = this.statements.get(sql)
    if (!statement) {
      statement = this.database().prepare(sql)
      this.statements.set(sql, statement)
    }
    return statement
  }

  private database(): Database {
    if (!this.db) throw new QueueError(`${this.dbPath} could not be loaded`)
    return this.db
  }

  private async transaction<T>(fd: number, fn: (sql: SqlSession) => Promise<T>, afterCommit?: (result: T) => void): Promise<T> {
    const db = this.database()
    db.exec('BEGIN')
    this.pending = []
    let result: T
    let appended = 0
    try {
      result = await fn(this.session(true))
      if (this.pending.length > 0) {
        if (!this.lock.stillHeld()) throw new QueueError('the queue lock was taken over while this process was held up (paused?); nothing was written')
        appended = this.append(fd, this.pending)
      }
    } catch (error) {
      db.exec('ROLLBACK')
      throw error
    } finally {
      this.pending = []
    }
    db.exec('COMMIT')
    this.applied += appended
    afterCommit?.(result)
    if (this.applied > this.journalLimit() && this.lock.stillHeld()) this.compact()
    return result
  }

  /**
   * Past this many bytes of journal the writer compacts. Every process that starts replays the whole journal (~0.25 ms
   * a KiB), and a small snapshot is cheap to write again: by default half the snapshot, from 64 to 256 KiB.
   */
  private journalLimit(): number {
    return this.journalLimitSet >= 0 ? this.journalLimitSet : Math.min(JOURNAL_LIMIT.max, Math.max(JOURNAL_LIMIT.min, this.snapshotBytes / 2))
  }

  /** Appends one record and makes it durable; on failure the journal is cut back so memory never leads disk. */
  private append(fd: number, statements: Statements): number {
    const fresh: string[] = []
    const record: JournalRecord = statements.map(([sql, ...rows]) => {
      const known = this.sqlNumbers.get(sql) ?? (fresh.includes(sql) ? this.sqlTexts.length + fresh.indexOf(sql) : undefined)
      if (known !== undefined) return [known, ...rows]
      fresh.push(sql)
      return [sql, ...rows]
    })
    const text = JSON.stringify(record)
    const frame = Buffer.allocUnsafe(8 + Buffer.byteLength(text)) // the JSON is encoded in place: a bulk record is ~10 MB
    frame.write(text, 8)
    frame.writeUInt32BE(frame.length - 8, 0)
    frame.writeUInt32BE(crc32(frame.subarray(8)), 4)
    try {
      let written = 0
      while (written < frame.length) written += writeSync(fd, frame, written, frame.length - written, this.applied + written)
      fdatasyncSync(fd)
    } catch (error) {
      try {
        ftruncateSync(fd, this.applied)
      } catch {
        // the next writer truncates the torn tail
      }
      throw new QueueError(`cannot write ${this.journalPath}: ${(error as Error).message}`)
    }
    for (const sql of fresh) this.learnSql(sql)
    this.lastFrame = { offset: this.applied, head: Buffer.from(frame.subarray(0, 8)) }
    return frame.length
  }

  private learnSql(sql: string): string {
    this.sqlNumbers.set(sql, this.sqlTexts.length)
    this.sqlTexts.push(sql)
    return sql
  }

  /** Memory now matches the snapshot alone: the journal is to be read from its first record. */
  private resetJournalView(): void {
    this.applied = JOURNAL_HEADER_BYTES
    this.sqlTexts = []
    this.sqlNumbers.clear()
    this.lastFrame = undefined
  }

  /** Memory as a new snapshot of generation `next`, then an empty journal of it. A crash between the two is repaired on open. */
  private writeSnapshot(next: number): void {
    const db = this.database()
    db.exec(`PRAGMA user_version = ${next}`)
    try {
      const data = db.export()
      writeFileDurably(this.dbPath, data)
      this.snapshotBytes = data.length
      writeFileDurably(this.journalPath, journalHeader(next))
    } catch (error) {
      db.exec(`PRAGMA user_version = ${this.generation}`)
      if (this.snapshotGeneration() === next) {
        // The snapshot made it and holds all of memory; the old journal is stale and will be reset.
        this.generation = next
        this.resetJournalView()
      }
      throw error
    }
    this.generation = next
    this.resetJournalView()
  }

  private compact(): void {
    try {
      this.writeSnapshot(this.generation + 1)
    } catch (error) {
      process.stderr.write(`queuectl: compaction postponed: ${(error as Error).message}\n`)
    }
  }

  /** The snapshot's generation (user_version), checked to be a whole queuectl database; 0 if there is none. */
  private snapshotGeneration(): number {
    let fd: number
    try {
      fd = openSync(this.dbPath, 'r')
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return 0
      throw new QueueError(`cannot read ${this.dbPath}: ${(error as Error).message}`)
    }
    try {
      const header = Buffer.alloc(100)
      const size = fstatSync(fd).size
      readSync(fd, header, 0, 100, 0)
      if (size < 100 || header.toString('latin1', 0, 16) !== 'SQLite format 3\0') {
        throw new QueueError(`${this.dbPath} is not a queuectl database (damaged or foreign file); it was left untouched — move it away to start a new queue`)
      }
      if (header.readUInt32BE(68) !== APPLICATION_ID) {
        throw new QueueError(`${this.dbPath} is an SQLite database of another program; it was left untouched — use another QUEUECTL_HOME`)
      }
      const pageSize = header.readUInt16BE(16) === 1 ? 65536 : header.readUInt16BE(16)
      if (size !== pageSize * header.readUInt32BE(28)) {
        throw new QueueError(`${this.dbPath} is damaged (truncated: ${size} bytes, expected ${pageSize * header.readUInt32BE(28)}); it was left untouched`)
      }
      return header.readUInt32BE(60)
    } finally {
      closeSync(fd)
    }
  }

  private freeStatements(): void {
    for (const statement of this.statements.values()) statement.free()
    this.statements.clear()
  }

  private loadSnapshot(): void {
    this.freeStatements()
    this.db?.close()
    this.db = undefined
    let db: Database
    try {
      const file = readFileSync(this.dbPath)
      this.snapshotBytes = file.length
      db = new this.SQL.Database(file)
      // The only connection to sql.js's in-memory file: holding its lock, SQLite no longer takes and drops it, nor
      // re-reads the file's header, in every transaction (~70 µs of a claim-and-finish that now costs ~20). Its
      // rollback journal stays a file there, freed after each transaction: in memory it would grow the WASM heap
      // for good by the pages of the largest transaction.
      db.exec('PRAGMA locking_mode = EXCLUSIVE')
      const version = Number(db.exec("SELECT value FROM meta WHERE key = 'schema_version'")[0]?.values[0]?.[0])
      if (version > SCHEMA_VERSION) {
        db.close()
        throw new QueueError(`${this.dbPath} has schema ${version}, made by a newer queuectl; this is queuectl ${VERSION} (schema ${SCHEMA_VERSION}): upgrade queuectl; the home was left untouched`)
      }
      this.schemaVersion = version
      this.generation = file.readUInt32BE(60) // PRAGMA user_version, as the file's header holds it
    } catch (error) {
      if (error instanceof QueueError) throw error
      throw new QueueError(`${this.dbPath} is damaged (${(error as Error).message}); it was left untouched`)
    }
    this.db = db
    this.resetJournalView()
  }

  /**
   * Brings memory up to date with disk: reload the snapshot if its generation moved, then replay the journal
   * records appended since. With the lock held it also repairs: a stale journal is reset, a torn tail cut off;
   * it then returns the journal's fd, open for appending.
   */
  private catchUp(locked: true): number
  private catchUp(locked: false): void
  private catchUp(locked: boolean): number | void {
    for (let tries = 0; ; tries++) {
      const generation = this.snapshotGeneration()
      if (generation === 0) throw new QueueError(`${this.dbPath} is missing; it was removed while queuectl was using it`)
      if (!this.db || generation !== this.generation) this.loadSnapshot()
      let fd: number
      try {
        fd = openSync(this.journalPath, locked ? 'r+' : 'r')
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw new QueueError(`cannot open ${this.journalPath}: ${(error as Error).message}`)
        if (!locked) return
        writeFileDurably(this.journalPath, journalHeader(this.generation))
        continue
      }
      const header = Buffer.alloc(JOURNAL_HEADER_BYTES)
      const size = fstatSync(fd).size
      readSync(fd, header, 0, JOURNAL_HEADER_BYTES, 0)
      const journalGeneration = header.readUInt32BE(12)
      if (size >= JOURNAL_HEADER_BYTES && header.toString('latin1', 0, 8) !== JOURNAL_MAGIC) {
        closeSync(fd)
        throw new QueueError(`${this.journalPath} is not a queuectl journal (damaged or foreign file); it was left untouched`)
      }
      if (size < JOURNAL_HEADER_BYTES || journalGeneration < this.generation) {
        // Left over from a crash between writing a snapshot and resetting the journal: the snapshot holds it all.
        closeSync(fd)
        if (!locked) return
        writeFileDurably(this.journalPath, journalHeader(this.generation))
        continue
      }
      if (journalGeneration > this.generation) {
        closeSync(fd)
        if (tries < 5) continue // a compaction finished between our two reads
        throw new QueueError(`${this.journalPath} is newer than ${this.dbPath} (was queue.db replaced by an older copy?); both were left untouched`)
      }
      if (header.readUInt32BE(8) > JOURNAL_FORMAT) {
        closeSync(fd)
        throw new QueueError(`${this.journalPath} was written by a newer queuectl (journal format ${header.readUInt32BE(8)}); upgrade queuectl`)
      }
      if (size < this.applied || !this.lastFrameIntact(fd, size)) {
        // A record we applied was cut back (its fsync failed) and perhaps replaced: start over from the snapshot.
        closeSync(fd)
        this.loadSnapshot()
        continue
      }
      const fromStart = this.applied === JOURNAL_HEADER_BYTES
      let torn: boolean
      try {
        torn = this.replay(fd, size)
      } catch (error) {
        closeSync(fd)
        throw error
      }
      if (torn && locked) {
        if (!fromStart) {
          // We may be misaligned (we read a record whose fsync then failed, and another was written in its
          // place): only a replay from the start may judge what is torn, or we would cut acknowledged records.
          closeSync(fd)
          this.loadSnapshot()
          continue
        }
        ftruncateSync(fd, this.applied) // a torn tail: its writer died before fsync, so nobody was told it committed
        fdatasyncSync(fd)
      }
      if (locked) return fd
      closeSync(fd)
      return
    }
  }

  private lastFrameIntact(fd: number, size: number): boolean {
    if (!this.lastFrame) return true
    const head = Buffer.alloc(8)
    return size >= this.lastFrame.offset + 8 && readSync(fd, head, 0, 8, this.lastFrame.offset) === 8 && head.equals(this.lastFrame.head)
  }

  /** Applies the complete records after `applied`; returns true if it stopped at a torn or damaged one. */
  private replay(fd: number, size: number): boolean {
    if (size <= this.applied) return false
    const buffer = Buffer.alloc(size - this.applied)
    const data = buffer.subarray(0, readSync(fd, buffer, 0, buffer.length, this.applied))
    const db = this.database()
    const knownSql = this.sqlTexts.length
    const lastFrame = this.lastFrame
    let offset = 0
    db.exec('BEGIN')
    try {
      while (offset + 8 <= data.length) {
        const length = data.readUInt32BE(offset)
        const end = offset + 8 + length
        // A zero length is a zero-filled tail (e.g. after power loss), never a record: the empty crc32 is 0.
        if (length === 0 || end > data.length || crc32(data.subarray(offset + 8, end)) !== data.readUInt32BE(offset + 4)) break
        const record = JSON.parse(data.toString('utf8', offset + 8, end)) as JournalRecord
        for (const [ref, ...rows] of record) {
          const sql = typeof ref === 'number' ? this.sqlTexts[ref] : this.learnSql(ref)
          if (sql === undefined) throw new Error(`statement #${ref} is not defined`)
          for (const params of rows) this.prepare(sql).run(params)
        }
        this.lastFrame = { offset: this.applied + offset, head: Buffer.from(data.subarray(offset, offset + 8)) }
        offset = end
      }
      db.exec('COMMIT')
    } catch (error) {
      db.exec('ROLLBACK')
      for (const sql of this.sqlTexts.splice(knownSql)) this.sqlNumbers.delete(sql)
      this.lastFrame = lastFrame
      throw new QueueError(`${this.journalPath} could not be replayed at byte ${this.applied + offset} (${(error as Error).message}); it was left untouched`)
    }
    this.applied += offset
    return offset < data.length
  }
}

// Storage, part 3: PostgreSQL (node-postgres), for workers on many hosts: the same statements in the server's transactions.

type PgModule = typeof import('pg')
type PgClient = import('pg').PoolClient
let pgModule: PgModule | undefined
/** pg is required only for a postgres URL: the SQLite default loads nothing of it. */
function loadPg(): PgModule {
  pgModule ??= createRequire(scriptPath())('pg') as PgModule
  return pgModule
}

/** What the CLI takes as `--db` / QUEUECTL_DB: a postgres URL, its schema (`?schema=`, default `queuectl`) apart. */
export function parseDatabaseUrl(text: string): { connectionString: string; schema: string; where: string } {
  let url: URL
  try {
    url = new URL(text)
  } catch {
    throw new UsageError(`--db ${describeValue(text)} is not a URL: use postgres://user@host:5432/database (or leave it out for the SQLite file in the home)`)
  }
  if (url.protocol !== 'postgres:' && url.protocol !== 'postgresql:') {
    throw new UsageError(`--db takes a postgres:// URL, not ${describeValue(url.protocol.replace(/:$/, ''))}: leave it out for the SQLite file in the home`)
  }
  const schema = url.searchParams.get('schema') ?? 'queuectl'
  if (!/^[a-z_][a-z0-9_]{0,39}$/.test(schema)) throw new UsageError(`invalid schema ${describeValue(schema)} in --db: use 1–40 lowercase letters, digits and _, not starting with a digit`)
  url.searchParams.delete('schema')
  const socket = url.searchParams.get('host')
  return { connectionString: url.href, schema, where: `${socket ?? url.hostname}${url.port ? `:${url.port}` : ''}${url.pathname} (schema ${schema})` }
}

/**
 * The queue's statements are written for SQLite; PostgreSQL spells four things differently: `$n` placeholders, no
 * index hints (its planner picks the partial index the predicate names), a case-insensitive LIKE, and `INSERT OR
 * IGNORE` (ON CONFLICT DO NOTHING). Every other statement is portable SQL as it stands. Translated once per text.
 */
function toPostgres(sql: string): string {
  let n = 0
  let text = sql.replace(/\s+INDEXED BY \w+/g, '').replace(/\bLIKE\b/g, 'ILIKE')
  if (/^\s*INSERT OR IGNORE INTO\b/.test(text)) text = `${text.replace('INSERT OR IGNORE INTO', 'INSERT INTO')} ON CONFLICT DO NOTHING`
  return text.replace(/\?/g, () => `$${++n}`)
}

/** The schema as PostgreSQL types it: times in ms need 64 bits; output lives in the database, in chunks by byte position. */
const PG_SCHEMA = `${SCHEMA.replace(/\bINTEGER\b/g, 'BIGINT').replace(/\bREAL\b/g, 'DOUBLE PRECISION')};
CREATE TABLE output (job_id TEXT NOT NULL, pos BIGINT NOT NULL, data BYTEA NOT NULL, PRIMARY KEY (job_id, pos));`
/** How a PostgreSQL schema of `version - 1` becomes `version`: none yet, as 4 was the first one made there. */
const PG_MIGRATIONS: Record<number, string> = {}
/** The first of the two keys of the advisory lock that serialises writes (the second is the schema's hash): "queu". */
const PG_LOCK_CLASS = 0x71756575
/** Errors that mean the server or the way to it went away, not that a statement was wrong. */
const PG_CONNECTION_ERRORS = /^(08|57P0|53300)|^(ECONNREFUSED|ECONNRESET|ENOTFOUND|EAI_AGAIN|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH|EPIPE)$/

/**
 * The queue in a PostgreSQL schema. A write is one transaction under a transaction-level advisory lock per schema:
 * writes are serialised as the SQLite lockfile serialises them, so every rule of the queue holds by the same
 * statements, on every host, with nothing to elect (a write costs ~1 ms, and workers write a few times per job).
 * The claim still picks `FOR UPDATE SKIP LOCKED`. Reads are REPEATABLE READ READ ONLY snapshots and take no lock.
 * Time is the server's: this process's clock is moved by the difference, measured at open (clockNow).
 */
export class PgStorage implements Storage {
  readonly claimLock = ' FOR UPDATE OF j SKIP LOCKED'
  readonly outputInDatabase = true
  private readonly translated = new Map<string, { name: string; text: string }>()
  private lockKey = 0
  private listener: import('pg').Client | undefined

  private constructor(private readonly pool: import('pg').Pool, readonly schema: string, readonly where: string, private readonly connectionString: string) {}

  static async open(url: string): Promise<PgStorage> {
    const { connectionString, schema, where } = parseDatabaseUrl(url)
    const pg = loadPg()
    const pool = new pg.Pool({
      connectionString,
      max: 4,
      connectionTimeoutMillis: envNumber('QUEUECTL_PG_CONNECT_TIMEOUT', 10_000),
      idleTimeoutMillis: 30_000,
      allowExitOnIdle: true,
      keepAlive: true,
      application_name: `queuectl ${HOST} ${process.pid}`,
      statement_timeout: 60_000,
      // a client cut off from the server finds out; a host that froze inside a write frees the lock in 10 s
      query_timeout: 60_000,
      idle_in_transaction_session_timeout: 10_000,
      options: `-c search_path=${schema}`,
      pipeline: true,
      types: { getTypeParser: pgTypeParser },
    } as import('pg').PoolConfig)
    // A connection the server ends (a restart, pg_terminate_backend) says so as an 'error' event, idle in the pool or
    // checked out between statements: the next statement on it fails, and another connection is opened.
    pool.on('error', () => undefined)
    pool.on('connect', (client) => void client.on('error', () => undefined))
    const storage = new PgStorage(pool, schema, where, connectionString)
    await storage.prepareSchema()
    return storage
  }

  read<T>(fn: (sql: SqlSession) => Promise<T>): Promise<T> {
    return this.withClient(async (client) => {
      const session = this.session(client, false)
      session.send('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY')
      try {
        return await fn(session)
      } finally {
        session.send('ROLLBACK') // the connection's next user queues behind it
      }
    })
  }

  write<T>(fn: (sql: SqlSession) => Promise<T>, afterCommit?: (result: T) => void): Promise<T> {
    return this.withClient(async (client) => {
      // afterCommit must run before another write begins: then the lock is the session's, released after it
      const key = `${PG_LOCK_CLASS}, ${this.lockKey}`
      const session = this.session(client, true)
      session.send(afterCommit ? `SELECT pg_advisory_lock(${key}); BEGIN` : `BEGIN; SELECT pg_advisory_xact_lock(${key})`)
      let result: T
      try {
        result = await fn(session)
        await session.commit()
      } catch (error) {
        await client.query('ROLLBACK').catch(() => undefined)
        if (afterCommit) await client.query(`SELECT pg_advisory_unlock(${key})`).catch(() => undefined)
        throw error
      }
      if (afterCommit) {
        try {
          afterCommit(result)
        } finally {
          await client.query(`SELECT pg_advisory_unlock(${key})`)
        }
      }
      return result
    })
  }

  /** A hint to idle workers on every host that there may be work: they look at once instead of at their next poll. */
  hint(): void {
    this.pool.query('SELECT pg_notify($1, $2)', [this.channel, HOST]).catch(() => undefined)
  }

  /**
   * Calls `onHint` on every hint (from any host), on a connection of its own that is opened again, with backoff,
   * whenever it breaks. A hint is only that: a worker polls anyway, and looks once more after reconnecting.
   */
  listen(onHint: () => void, onTrouble: (message: string) => void): void {
    let delay = 500
    const connect = () => {
      const client = new (loadPg().Client)({ connectionString: this.connectionString, keepAlive: true, connectionTimeoutMillis: 10_000, application_name: `queuectl listen ${HOST} ${process.pid}` })
      this.listener = client
      let retried = false
      const retry = (error?: Error) => {
        if (retried || this.listener !== client) return
        retried = true
        if (error) onTrouble(`lost the PostgreSQL notification connection (${error.message}); reconnecting in ${Math.round(delay / 1000)} s`)
        client.end().catch(() => undefined)
        setTimeout(connect, delay).unref()
        delay = Math.min(delay * 2, 30_000)
      }
      client.on('error', retry)
      client.on('end', () => retry(new Error('connection ended')))
      client.on('notification', () => onHint())
      client.connect()
        .then(() => client.query(`LISTEN ${this.channel}`))
        .then(() => {
          delay = 500
          onHint()
        }, retry)
    }
    connect()
  }

  close(): void {
    const listener = this.listener
    this.listener = undefined
    listener?.end().catch(() => undefined)
    this.pool.end().catch(() => undefined)
  }

  private get channel(): string {
    return `queuectl_${this.schema}`
  }

  private async withClient<T>(fn: (client: PgClient) => Promise<T>): Promise<T> {
    let client: PgClient
    try {
      client = await this.pool.connect()
    } catch (error) {
      const failure = this.failure(error) // a wrong password, no such database or role: said with where it was
      throw failure === error ? new QueueError(`cannot open the queue at ${this.where}: ${(error as Error).message}`) : failure
    }
    let broken = false
    try {
      return await fn(client)
    } catch (error) {
      const failure = this.failure(error)
      broken = failure instanceof DatabaseUnreachable // the connection is what failed: do not pool it again
      throw failure
    } finally {
      client.release(broken)
    }
  }

  /** A lost server is one line that says where; an error of the queue's own passes as it is. */
  private failure(error: unknown): unknown {
    const code = String((error as { code?: string }).code ?? '')
    if (error instanceof QueueError || error instanceof UsageError) return error
    // no SQLSTATE: node-postgres's own errors (a connect timeout, "Connection terminated unexpectedly")
    if (PG_CONNECTION_ERRORS.test(code) || (!/^[0-9A-Z]{5}$/.test(code) && /timeout|terminated|Connection/i.test((error as Error).message ?? ''))) {
      return new DatabaseUnreachable(`cannot reach PostgreSQL at ${this.where}: ${(error as Error).message || code}`)
    }
    return error
  }

  /**
   * The connection pipelines (node-postgres `pipeline`): a statement whose rows are not needed (BEGIN, a write) is
   * sent without waiting for its answer, so a transaction waits once per read, not once per statement. A write that
   * failed fails the read that follows it, or the COMMIT (which PostgreSQL would otherwise answer with a silent
   * ROLLBACK), with its own error.
   */
  private session(client: PgClient, writable: boolean): SqlSession & { send(text: string): void; commit(): Promise<void> } {
    const sent: Promise<unknown>[] = []
    const firstFailure = async (error: unknown) => {
      for (const answer of sent) {
        try {
          await answer
        } catch (failure) {
          return failure
        }
      }
      return error
    }
    const prepared = (sql: string, text = () => toPostgres(sql)) => {
      let statement = this.translated.get(sql)
      if (!statement) this.translated.set(sql, (statement = { name: `q${this.translated.size}`, text: text() }))
      return statement
    }
    const query = (sql: string, params: SqlValue[]) => {
      flushInserts()
      const { name, text } = prepared(sql)
      return client.query({ name, text, values: params })
    }
    const track = (answer: Promise<unknown>) => {
      answer.catch(() => undefined) // awaited later, by the next read or the commit
      sent.push(answer)
    }
    // Rows of one INSERT in a row (a bulk enqueue) go as multi-row INSERTs, up to 60,000 values each.
    let inserts: { sql: string; rows: SqlValue[][] } | undefined
    const flushInserts = () => {
      if (!inserts) return
      const { sql, rows } = inserts
      inserts = undefined
      const width = rows[0].length
      const most = Math.max(1, Math.floor(60_000 / width))
      for (let at = 0; at < rows.length; at += most) {
        const batch = rows.slice(at, at + most)
        // INSERT INTO t (…) VALUES ($1, …, $k) [ON CONFLICT DO NOTHING], with a group of k placeholders per row
        const { name, text } = prepared(`${batch.length} rows of ${sql}`, () => toPostgres(sql).replace(/VALUES \(.*?\)/,
          `VALUES ${batch.map((_, row) => `(${Array.from({ length: width }, (_, i) => `$${row * width + i + 1}`).join(', ')})`).join(', ')}`))
        track(client.query({ name, text, values: batch.flat() }))
      }
    }
    const all = async <T>(sql: string, params: SqlValue[] = []): Promise<T[]> => {
      try {
        return (await query(sql, params)).rows as T[]
      } catch (error) {
        throw await firstFailure(error)
      }
    }
    return {
      all,
      get: async (sql, params) => (await all(sql, params))[0] as never,
      run: async (sql, params = []) => {
        if (!writable) throw new Error('write outside a write transaction')
        if (inserts?.sql === sql) return void inserts.rows.push(params)
        if (/^\s*INSERT (OR IGNORE )?INTO \w+ \([^)]*\) VALUES \([?, ]*\)$/.test(sql)) {
          flushInserts()
          inserts = { sql, rows: [params] }
          return
        }
        track(query(sql, params))
      },
      send: (text) => {
        flushInserts()
        track(client.query(text))
      },
      commit: async () => {
        flushInserts()
        const commit = client.query('COMMIT')
        commit.catch(() => undefined)
        await Promise.all([...sent, commit])
      },
    }
  }

  /**
   * Makes the schema on first use, migrates an older one, refuses a newer one: under the write lock, in one
   * transaction, so that processes starting together do it once. A current schema costs one read.
   */
  private async prepareSchema(): Promise<void> {
    const version = await this.withClient(async (client) => {
      const started = Date.now()
      const { rows } = await client.query<{ now: number; key: number; meta: string | null }>(
        "SELECT extract(epoch FROM clock_timestamp()) * 1000 AS now, hashtext($1) AS key, to_regclass($2) AS meta", [this.schema, `${this.schema}.meta`])
      clockOffsetMs = Math.round(Number(rows[0].now) - (started + Date.now()) / 2)
      this.lockKey = Number(rows[0].key)
      if (!rows[0].meta) return 0
      return Number((await client.query<{ value: string }>("SELECT value FROM meta WHERE key = 'schema_version'")).rows[0]?.value ?? 0)
    })
    if (version === SCHEMA_VERSION) return
    this.refuseNewer(version)
    await this.withClient(async (client) => {
      await client.query(`BEGIN; SELECT pg_advisory_xact_lock(${PG_LOCK_CLASS}, ${this.lockKey})`)
      try {
        await client.query(`CREATE SCHEMA IF NOT EXISTS ${this.schema}; SET LOCAL search_path TO ${this.schema}`)
        const meta = (await client.query<{ meta: string | null }>('SELECT to_regclass($1) AS meta', [`${this.schema}.meta`])).rows[0].meta
        const now = meta ? Number((await client.query<{ value: string }>("SELECT value FROM meta WHERE key = 'schema_version'")).rows[0]?.value ?? 0) : 0
        this.refuseNewer(now)
        if (now === 0) {
          await client.query(PG_SCHEMA)
          await client.query("INSERT INTO meta (key, value) VALUES ('schema_version', $1)", [String(SCHEMA_VERSION)])
        } else {
          for (let next = now + 1; next <= SCHEMA_VERSION; next++) await client.query(PG_MIGRATIONS[next])
          await client.query("UPDATE meta SET value = $1 WHERE key = 'schema_version'", [String(SCHEMA_VERSION)])
        }
        await client.query('COMMIT')
      } catch (error) {
        await client.query('ROLLBACK').catch(() => undefined)
        throw error
      }
    })
  }

  private refuseNewer(version: number): void {
    if (version > SCHEMA_VERSION) {
      throw new QueueError(`the queue at ${this.where} has schema ${version}, newer than this queuectl ${VERSION} knows (${SCHEMA_VERSION}): upgrade queuectl; nothing was changed`)
    }
  }
}

/** int8 and numeric (count(*), sum(), the BIGINT columns) as numbers: every value the queue stores fits in 2^53. */
function pgTypeParser(oid: number, format?: string): (value: string) => unknown {
  if (oid === 20 || oid === 1700) return (value) => Number(value)
  return loadPg().types.getTypeParser(oid, format as 'text')
}

// Queue operations: the job lifecycle as SQL with bound values, every value computed here.

interface JobRow {
  seq: number
  id: string
  command: string
  cwd: string
  env_hash: string | null
  state: JobState
  attempts: number
  runs: number
  max_retries: number
  priority: number
  run_at: number
  timeout: number | null
  created_at: number
  updated_at: number
  started_at: number | null
  finished_at: number | null
  exit_code: number | null
  last_error: string | null
  worker: string | null
  output_tail: string | null
  queue: string
  ready: number
  unique_key: string | null
  after: string | null
  after_any: string | null
  cancel: string | null
  slot: number | null
  schedule: string | null
  on_success: string | null
  on_failure: string | null
  on_finish: string | null
  hook_due: number
  /** how many jobs wait for it: only in a row read by ownedRow */
  dependants?: number
}

interface WorkerRow {
  id: string
  pid: number
  host: string
  proc_start: string
  started_at: number
  heartbeat_at: number
  note: string | null
  slots: number
  queues: string | null
}

/** A job a worker has claimed: everything it needs to run one attempt. */
export interface ClaimedJob {
  job: Job
  attempt: number
  env: Record<string, string>
  timeout: number
  slot: number
  /** Where this attempt's output starts in the job's output in the database (outputInDatabase only). */
  output_at?: number
}

/** Bytes of a job's log at byte `pos` of it, as the table `output` keeps them. */
export interface OutputChunk {
  pos: number
  data: Uint8Array
}

/** What a worker runs: how many jobs at once, and which queues (all when undefined). */
export interface WorkerSlots {
  slots?: number
  queues?: string[]
}

/** How an attempt ended, as stored in `attempts.outcome`: `released` ones are not counted (worker stop --force, not started). */
const ATTEMPT_RESULTS: readonly AttemptResult[] = ['completed', 'failed', 'lost', 'cancelled', 'released']

/** How one attempt ended, as the runner saw it. */
export interface AttemptOutcome {
  exit_code: number | null
  signal: string | null
  error: string | null
  output_tail: string | null
  finished_at: number
  /** Killed by `worker stop --force`: put back, not counted. */
  forced?: boolean
  /** Never started: the worker was stopping when it claimed it. Put back, not counted. */
  notStarted?: boolean
  /** The machine failed, not the job (the log cannot be written, spawn got EAGAIN): put back, not counted. */
  machineFault?: string
  /** The attempt was recovered as lost and runs again elsewhere: its end is not this worker's to record. */
  takenOver?: boolean
  /** The end of its output, not yet in the database (outputInDatabase): stored with the outcome. */
  output?: OutputChunk[]
}

const HOST = hostname()
/** A job's row, with how many jobs wait for it (see settleDependants). */
const OWNED_ROW = 'SELECT jobs.*, (SELECT count(*) FROM deps WHERE parent = jobs.id) AS dependants FROM jobs WHERE id = ?'
/** Attempts that count: anything but released ones (a force stop, a job not started); unfinished ones have no outcome yet. */
const COUNTED_ATTEMPT = "outcome IN ('completed', 'failed', 'lost', 'cancelled')"
const COLUMNS = 'seq, id, command, cwd, env_hash, state, attempts, runs, max_retries, priority, run_at, timeout, created_at, updated_at, queue, ready, unique_key, after, after_any, finished_at, last_error, schedule, on_success, on_failure, on_finish, hook_due'
const INSERT_JOB = `INSERT INTO jobs (${COLUMNS}) VALUES (${COLUMNS.split(',').map(() => '?').join(', ')})`
/** Every state change is this one statement (see moveJob). */
const MOVE_JOB = 'UPDATE jobs SET state = ?, ready = ?, attempts = ?, runs = ?, run_at = ?, started_at = ?, finished_at = ?, updated_at = ?, exit_code = ?, last_error = ?, worker = ?, output_tail = ?, cancel = ?, slot = ?, hook_due = ? WHERE id = ?'
const PROMOTE_BATCH = 1_000
/** The pending and failed jobs that are due but not yet in the ready set, soonest first. */
const DUE_WAITING = "SELECT id FROM jobs INDEXED BY jobs_waiting WHERE ready = 0 AND state IN ('pending', 'failed') AND run_at <= ? ORDER BY run_at, seq LIMIT ?"
/** Moves those (up to a batch) into the ready set: one statement, no read. */
const PROMOTE_DUE = `UPDATE jobs SET ready = 1 WHERE id IN (${DUE_WAITING})`
/** A queue may start a job now: not paused, under its limit. */
const SERVABLE = 'q.paused = 0 AND (q.concurrency IS NULL OR q.running < q.concurrency)'
/** The next time a schedule fires, after `now` (one that is due but cannot fire here must not keep a worker awake). */
const NEXT_FIRE = 'SELECT min(next_at) AS t FROM schedules WHERE paused = 0 AND next_at > ?'
/** The head of each servable queue's ready index, in one read (the claim takes the best of those its worker serves). */
const READY_HEADS = `SELECT j.* FROM queues q JOIN jobs j ON j.id = (SELECT id FROM jobs INDEXED BY jobs_ready WHERE ready = 1 AND queue = q.name ORDER BY priority DESC, seq LIMIT 1) WHERE ${SERVABLE}`
/** The ended job whose completion hooks have waited longest (see takeHooks). */
const HOOKS_DUE = 'SELECT * FROM jobs INDEXED BY jobs_hooks WHERE hook_due = 1 ORDER BY finished_at LIMIT 1'
/** Who runs which job's hooks: the meta rows `hook <job id>`, a range of its primary key. */
const hookTaking = (id: string) => `hook ${id}`
const HOOK_TAKINGS = "SELECT key, value FROM meta WHERE key >= 'hook ' AND key < 'hook!'"

/** The hooks of one ended job as a worker took them: the facts they are given, and how long each may run. */
export interface HookRun {
  job: Job
  hooks: Hook[]
  /** the job's environment: its own hooks run with it */
  env: Record<string, string>
  /** its last attempt's number (0: it never ran), signal and duration */
  attempt: number
  signal: string | null
  duration_ms: number | null
  /** hook_timeout, seconds */
  timeout: number
  taken_at: number
  /** when the worker it was taken from (gone) had taken it: its hook's process note says so */
  took_over?: number
}
/** How far a job's output in the database goes, and its chunks past a byte, a few MiB at a time (outputInDatabase). */
const OUTPUT_END = 'SELECT coalesce(max(pos + length(data)), 0) AS end FROM output WHERE job_id = ?'
const OUTPUT_AFTER = 'SELECT pos, data FROM output WHERE job_id = ? AND pos + length(data) > ? ORDER BY pos LIMIT 4'
/** The servable queues with a ready job. */
const STARTABLE_QUEUES = `SELECT q.name FROM queues q WHERE ${SERVABLE} AND EXISTS (SELECT 1 FROM jobs INDEXED BY jobs_ready WHERE ready = 1 AND queue = q.name)`
/**
 * The workers without a note (a note says why a worker holds back), of every host, with their free slots. Those with
 * none are dropped, and the rest sorted, in JS: either in SQL costs more than the query (its first run, a CLI's, most).
 */
const IDLE_WORKERS = 'SELECT id, pid, host, proc_start, queues, slots - (SELECT count(*) FROM jobs INDEXED BY jobs_worker WHERE worker = w.id) AS free FROM workers w WHERE id <> ? AND note IS NULL'
type IdleWorker = Pick<WorkerRow, 'id' | 'pid' | 'host' | 'proc_start' | 'queues'> & { free: number }

function toJob(row: JobRow): Job {
  return {
    id: row.id,
    command: row.command,
    cwd: row.cwd,
    state: row.state,
    attempts: row.attempts,
    max_retries: row.max_retries,
    priority: row.priority,
    run_at: iso(row.run_at)!,
    timeout: row.timeout || null,
    created_at: iso(row.created_at)!,
    updated_at: iso(row.updated_at)!,
    started_at: iso(row.started_at),
    finished_at: iso(row.finished_at),
    exit_code: row.exit_code,
    last_error: row.last_error,
    worker: row.worker,
    queue: row.queue,
    after: row.after ? JSON.parse(row.after) : [],
    after_any: row.after_any ? JSON.parse(row.after_any) : [],
    unique_key: row.unique_key,
    schedule: row.schedule,
    on_success: row.on_success,
    on_failure: row.on_failure,
    on_finish: row.on_finish,
  }
}

function emptyCounts(): Record<JobState, number> {
  return Object.fromEntries(JOB_STATES.map((state) => [state, 0])) as Record<JobState, number>
}

/** A completion hook to run: which one, whose (the job's own or the config's), and its command. */
export interface Hook {
  name: HookName
  scope: 'job' | 'global'
  command: string
}

/**
 * The hooks of a job that ended in its state, in the order they run: its own (on_success or on_failure, then
 * on_finish), then the global ones (on_failure, then on_finish). Empty: nothing is due when it ends.
 */
function hooksFor(row: Pick<JobRow, 'state' | HookName>, config: Pick<Config, 'on_failure' | 'on_finish'>): Hook[] {
  const failed = row.state !== 'completed'
  const hooks: [HookName, Hook['scope'], string | null][] = [
    failed ? ['on_failure', 'job', row.on_failure] : ['on_success', 'job', row.on_success],
    ['on_finish', 'job', row.on_finish],
    ['on_failure', 'global', failed ? config.on_failure : null],
    ['on_finish', 'global', config.on_finish],
  ]
  return hooks.filter(([, , command]) => command).map(([name, scope, command]) => ({ name, scope, command: command! }))
}

/** Whether a job in `state` with `runAt` is in the ready set at `now`: the one definition of "ready". */
const isReady = (state: JobState, runAt: number, now: number) => (state === 'pending' || state === 'failed') && runAt <= now

export function isValidQueueName(name: unknown): name is string {
  return typeof name === 'string' && QUEUE_PATTERN.test(name)
}

/** `name` if it is a valid queue (or schedule) name, else the usage error that says so. */
function checkQueueName(name: unknown, what = 'queue name'): string {
  if (!isValidQueueName(name)) throw new UsageError(`invalid ${what} ${describeValue(name)}: use 1–64 letters, digits, _ . - (not starting with . or -)`)
  return name
}

export function defaultHome(): string {
  return resolve(process.env.QUEUECTL_HOME || join(process.env.HOME || '.', '.queuectl'))
}

/** Accepts `max-retries` and `max_retries` alike; anything else is refused with the valid keys. */
export function normalizeConfigKey(key: string): ConfigName {
  const normalized = key.trim().toLowerCase().replace(/-/g, '_')
  if (!isConfigName(normalized)) throw new UsageError(`unknown config key "${key}": valid keys are ${Object.keys(CONFIG_KEYS).join(', ')}`)
  return normalized
}

const isConfigName = (key: string): key is ConfigName => Object.prototype.hasOwnProperty.call(CONFIG_KEYS, key)

interface NormalizedSpec {
  id: string | undefined
  command: string
  cwd: string
  env: Record<string, string>
  max_retries: number | undefined
  priority: number
  run_at: number
  timeout: number | null
  queue: string
  after: string[]
  after_any: string[]
  unique_key: string | null
  unique_for_ms: number
  on_success: string | null
  on_failure: string | null
  on_finish: string | null
}

/** `a,b` or `["a","b"]`: parent ids, each checked, none twice. */
function parentIds(value: unknown, field: string): string[] {
  if (value == null) return []
  const list = typeof value === 'string' ? value.split(',').map((id) => id.trim()).filter(Boolean) : value
  if (!Array.isArray(list)) throw new UsageError(`"${field}" must be job ids: "a,b" or ["a","b"]`)
  for (const id of list) if (!isValidJobId(id)) throw new UsageError(`"${field}" names an invalid job id ${describeValue(id)}`)
  if (list.length > MAX_PARENTS) throw new UsageError(`"${field}" names ${list.length} parents: at most ${MAX_PARENTS}`)
  return [...new Set(list as string[])]
}

function integerIn(value: unknown, field: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new UsageError(`"${field}" must be a whole number from ${min} to ${max}, not ${describeValue(value)}`)
  }
  return value
}

function stringEntries(source: unknown): Record<string, string> {
  if (typeof source !== 'object' || source === null || Array.isArray(source)) throw new UsageError('"env" must be an object of strings')
  const env: Record<string, string> = {}
  for (const [key, value] of Object.entries(source)) if (typeof value === 'string') env[key] = value
  return env
}

/** What makes a text no command a shell can run (a NUL, a lone surrogate, a byte-order mark, over 1 MiB), or undefined. */
function commandProblem(command: string): string | undefined {
  if (command.includes('\0')) return 'contains a NUL character, which no shell can run'
  if (/[\uD800-\uDFFF]/u.test(command)) return 'contains a lone UTF-16 surrogate, which is not text a shell can run'
  if (command.startsWith('\uFEFF')) return 'starts with a byte-order mark (U+FEFF): remove it'
  if (Buffer.byteLength(command) > 1024 * 1024) return 'is longer than 1 MiB'
  return undefined
}

/** A job's own completion hook (`on_success`…): a command as checked as the job's, or null for none. */
function hookField(value: unknown, field: HookName): string | null {
  if (value == null) return null
  if (typeof value !== 'string' || value.trim() === '') throw new UsageError(`"${field}" must be a non-empty shell command (--${field.replace('_', '-')} CMD)`)
  const problem = commandProblem(value)
  if (problem) throw new UsageError(`the "${field}" hook ${problem}`)
  return value
}

/** Checks one job as given by a user or a program; throws UsageError naming the field at fault. */
export function validateJobSpec(input: unknown, now = clockNow(), defaultEnv?: Record<string, string>): NormalizedSpec {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new UsageError(`a job must be a JSON object such as {"command":"echo hi"}, not ${describeValue(input)}`)
  }
  const spec: Record<string, unknown> = Object.keys(input).some((key) => key.includes('-')) // max-retries = max_retries
    ? Object.fromEntries(Object.entries(input).map(([key, value]) => [key.replace(/-/g, '_'), value]))
    : (input as Record<string, unknown>)
  for (const key of Object.keys(spec)) {
    if (!JOB_FIELD_SET.has(key) && key !== 'env') {
      throw new UsageError(`unknown field "${key}" in the job: valid fields are ${JOB_FIELDS.join(', ')}`)
    }
  }
  const { command } = spec
  if (typeof command !== 'string' || command.trim() === '') throw new UsageError('the job needs a "command": a non-empty string')
  const problem = commandProblem(command)
  if (problem) throw new UsageError(`the command ${problem}`)
  const hooks = Object.fromEntries(HOOK_FIELDS.map((field) => [field, hookField(spec[field], field)])) as Record<HookName, string | null>
  if (spec.id !== undefined && !isValidJobId(spec.id)) {
    throw new UsageError(`invalid job id ${describeValue(spec.id)}: use 1–128 letters, digits, _ . : - (not starting with . or -)`)
  }
  if (spec.run_at != null && spec.delay != null) throw new UsageError('give either "run_at" or "delay", not both')
  let runAt = now
  if (spec.run_at != null) {
    if (typeof spec.run_at !== 'string' && !(spec.run_at instanceof Date)) throw new UsageError('"run_at" must be an ISO-8601 time string')
    runAt = parseTime(spec.run_at, 'run_at')
  }
  if (spec.delay != null) {
    if (typeof spec.delay !== 'string' && typeof spec.delay !== 'number') throw new UsageError(`"delay" must be ${DURATION_FORMS}`)
    const delay = parseDuration(spec.delay, 'delay')
    if (delay > 3_650 * 86_400_000) throw new UsageError('"delay" must be at most 10 years')
    runAt = now + Math.round(delay)
  }
  let timeout: number | null = null
  if (spec.timeout != null) {
    if (typeof spec.timeout !== 'string' && typeof spec.timeout !== 'number') throw new UsageError(`"timeout" must be ${DURATION_FORMS}`)
    const seconds = parseDuration(spec.timeout, 'timeout') / 1000
    if (seconds > MAX_TIMEOUT_S) throw new UsageError(`"timeout" must be at most ${MAX_TIMEOUT_S} seconds (23 days), not ${describeValue(spec.timeout)}`)
    timeout = seconds || null
  }
  let cwd = process.cwd()
  if (spec.cwd != null) {
    if (typeof spec.cwd !== 'string' || spec.cwd === '') throw new UsageError('"cwd" must be a directory path')
    cwd = resolve(spec.cwd)
    let isDirectory = false
    try {
      isDirectory = statSync(cwd).isDirectory()
    } catch {
      // reported below
    }
    if (!isDirectory) throw new UsageError(`"cwd" ${cwd} is not an existing directory`)
  }
  if (spec.queue != null) checkQueueName(spec.queue)
  const after = parentIds(spec.after, 'after')
  const afterAny = parentIds(spec.after_any, 'after_any').filter((id) => !after.includes(id)) // both: the stricter rule
  if (after.length + afterAny.length > MAX_PARENTS) throw new UsageError(`a job may wait for at most ${MAX_PARENTS} parents`)
  if (spec.id !== undefined && [...after, ...afterAny].includes(spec.id as string)) throw new UsageError(`job "${spec.id}" cannot wait for itself`)
  if (spec.unique_key != null && (typeof spec.unique_key !== 'string' || spec.unique_key.length < 1 || spec.unique_key.length > 256)) {
    throw new UsageError('"unique_key" must be a string of 1 to 256 characters')
  }
  if (spec.unique_for != null && spec.unique_key == null) throw new UsageError('"unique_for" needs a "unique_key" (--unique-for needs --unique-key)')
  if (spec.unique_for != null && typeof spec.unique_for !== 'string' && typeof spec.unique_for !== 'number') throw new UsageError('"unique_for" must be a duration such as "1h"')
  return {
    id: spec.id as string | undefined,
    command,
    cwd,
    queue: (spec.queue as string | undefined) ?? 'default',
    after,
    after_any: afterAny,
    unique_key: (spec.unique_key as string | undefined) ?? null,
    ...hooks,
    unique_for_ms: spec.unique_for == null ? 0 : parseDuration(spec.unique_for as string | number),
    env: spec.env == null ? defaultEnv ?? stringEntries(process.env) : stringEntries(spec.env),
    max_retries: spec.max_retries == null ? undefined : integerIn(spec.max_retries, 'max_retries', 0, 1000),
    priority: spec.priority == null ? 0 : integerIn(spec.priority, 'priority', -1_000_000_000, 1_000_000_000),
    run_at: runAt,
    timeout,
  }
}

/** Now, for schedules: `QUEUECTL_NOW` (an ISO time, set only by tests of the schedule math), else the clock. */
function scheduleNow(): number {
  const given = process.env.QUEUECTL_NOW
  return given ? parseTime(given, 'QUEUECTL_NOW') : clockNow()
}

type CronClass = typeof import('croner').Cron
let croner: Promise<CronClass> | undefined
/** croner is loaded only where schedules are computed: every other command starts without it. */
function loadCroner(): Promise<CronClass> {
  croner ??= import('croner').then((module) => module.Cron)
  return croner
}

/**
 * Classic cron: a time without `*` or a step in its minute and hour fields that a spring change skips runs once right
 * after the gap, one repeated in autumn runs once; `*` and steps follow real time. Seconds are not a field.
 */
const cronOptions = (tz: string) => ({ timezone: tz, mode: '5-part', fixedTimeRule: 'no-wildcard' }) as const

/** An IANA zone this system knows, as it spells it (`europe/berlin` → `Europe/Berlin`). */
function timeZone(text: string, what: string): string {
  try {
    if (text && text !== 'Etc/Unknown') return new Intl.DateTimeFormat('en-US', { timeZone: text }).resolvedOptions().timeZone
  } catch {
    // refused below
  }
  throw new UsageError(`unknown time zone ${describeValue(text)} (${what}): use an IANA name such as Europe/Berlin, America/New_York or UTC`)
}

/** A 5-field expression or a nickname as croner reads it; a bad one is refused naming the field at fault. */
function checkCron(Cron: CronClass, text: string, tz: string, now: number): string {
  const expr = text.trim().replace(/\s+/g, ' ')
  const fields = expr.split(' ')
  if (expr.startsWith('@')) {
    if (!CRON_NICKNAMES.includes(expr.toLowerCase())) throw new UsageError(`unknown cron nickname ${describeValue(expr)}: use ${CRON_NICKNAMES.join(', ')} or 5 fields`)
  } else if (fields.length !== 5) {
    throw new UsageError(`cron expression ${describeValue(expr)} has ${fields.length} field${fields.length === 1 ? '' : 's'}: use 5 (minute hour day-of-month month day-of-week; no seconds field)`)
  } else {
    fields.forEach((field, i) => {
      try {
        new Cron(fields.map((other, j) => (j === i ? other : '*')).join(' '), cronOptions(tz))
      } catch {
        const [name, range] = CRON_FIELDS[i]
        throw new UsageError(`cron expression ${describeValue(expr)}: the ${name} field ${describeValue(field)} is not valid: use ${range}, *, a list a,b, a range a-b or a step */n`)
      }
    })
  }
  let cron: InstanceType<CronClass>
  try {
    cron = new Cron(expr, cronOptions(tz))
  } catch (error) {
    throw new UsageError(`cron expression ${describeValue(expr)}: ${(error as Error).message}`)
  }
  if (!cron.nextRun(new Date(now))) throw new UsageError(`cron expression ${describeValue(expr)} never fires (a day the month does not have?)`)
  return expr
}

interface ScheduleRow {
  name: string
  cron: string | null
  every_ms: number | null
  tz: string
  spec: string
  paused: number
  next_at: number | null
  last_at: number | null
  last_job: string | null
  missed: number
  skipped: number
  created_at: number
}

/** The job a schedule fires, as validated at `add` (with its cwd and environment): a NormalizedSpec without id, times and parents. */
type JobTemplate = Omit<NormalizedSpec, 'id' | 'run_at' | 'after' | 'after_any'>

/** A schedule's fire times: `after(t)`, the first later than t (undefined: none); `latest(t)`, the last at or before t. */
interface FireTimes {
  after(t: number): number | undefined
  latest(t: number): number | undefined
}

function fireTimes(Cron: CronClass, row: Pick<ScheduleRow, 'cron' | 'every_ms' | 'tz' | 'created_at'>): FireTimes {
  const every = row.every_ms
  if (every) {
    const anchor = row.created_at // the fire times of `every` are created_at + k·every
    return { after: (t) => anchor + (Math.floor((t - anchor) / every) + 1) * every, latest: (t) => anchor + Math.floor((t - anchor) / every) * every }
  }
  const cron = new Cron(row.cron!, cronOptions(row.tz))
  return { after: (t) => cron.nextRun(new Date(t))?.getTime(), latest: (t) => cron.previousRuns(1, new Date(t + 1))[0]?.getTime() }
}

/** A schedule due at `now` (its next_at passed): it fires for the latest due time, and the due times before it were missed. */
function catchUp(times: FireTimes, nextAt: number, now: number): { fireAt: number; missed: number; next: number | undefined } {
  let fireAt = nextAt
  let missed = 0
  for (let t = times.after(fireAt); t !== undefined && t <= now; t = times.after(fireAt)) {
    if (missed === CATCH_UP_COUNTED) {
      // croner takes ~0.1 ms a step: a minutely cron down for a month would take minutes to count one by one
      const latest = times.latest(now)!
      missed += Math.round((latest - fireAt) / ((fireAt - nextAt) / missed))
      fireAt = latest
      break
    }
    fireAt = t
    missed++
  }
  return { fireAt, missed, next: times.after(now) }
}

function toSchedule(row: ScheduleRow): ScheduleInfo {
  const job = JSON.parse(row.spec) as JobTemplate
  return {
    name: row.name, cron: row.cron, every: row.every_ms ? formatDuration(row.every_ms) : null, tz: row.tz, paused: row.paused === 1,
    next_at: iso(row.next_at), last_at: iso(row.last_at), last_job: row.last_job, missed: row.missed, skipped: row.skipped, created_at: iso(row.created_at)!,
    job: { command: job.command, cwd: job.cwd, queue: job.queue, priority: job.priority, max_retries: job.max_retries ?? null, timeout: job.timeout, unique_key: job.unique_key },
  }
}

/** What `wait` follows of a job. */
export type JobProgress = Pick<Job, 'id' | 'state' | 'exit_code' | 'attempts' | 'queue' | 'last_error'>

export interface KillResult {
  cancelled: string[]
  signalled: string[]
  finished: { id: string; state: JobState }[]
}

export interface JobFilter {
  state?: JobState
  queue?: string
  search?: string
}

/** What `enqueue` returns: the new job, or (`duplicate`) the job that already holds its unique key. */
export type EnqueuedJob = Job & { duplicate?: true }

const sqlList = (values: readonly string[]) => values.map((v) => `'${v}'`).join(', ')
const ACTIVE_SQL = sqlList(ACTIVE_STATES)

/** A parent that keeps its dependant blocked: a required one not completed, or any one still active. */
const isUnsatisfied = (parent: { state: JobState; required: boolean }) =>
  parent.required ? parent.state !== 'completed' : !isTerminal(parent.state)

/** A required parent that ended without completing dooms its dependant: that parent, or undefined. */
const failedRequirement = (parents: { id: string; state: JobState; required: boolean }[]) =>
  parents.find((p) => p.required && isTerminal(p.state) && p.state !== 'completed')

/** The state a job starts in, judged from its parents. */
function initialState(parents: { id: string; state: JobState; required: boolean }[], now: number): Partial<JobRow> {
  const failed = failedRequirement(parents)
  if (failed) return { state: 'skipped', last_error: `dependency ${failed.id} ${failed.state}`, finished_at: now }
  return parents.some(isUnsatisfied) ? { state: 'blocked' } : {}
}

/**
 * Walks the batch's jobs depth-first, parents before children, without recursion (a file may hold a chain of
 * 100k jobs). Calls `placed` for each job once all its batch parents are placed; returns a cycle if it meets one.
 */
function walkParentsFirst(jobs: Map<string, { after: string[]; after_any: string[] }>, placed: (id: string) => void): string[] | undefined {
  const mark = new Map<string, 'open' | 'done'>()
  for (const start of jobs.keys()) {
    if (mark.has(start)) continue
    const stack: { id: string; parents: string[]; next: number }[] = []
    const open = (id: string) => {
      mark.set(id, 'open')
      const job = jobs.get(id)!
      stack.push({ id, parents: [...job.after, ...job.after_any], next: 0 })
    }
    open(start)
    while (stack.length) {
      const top = stack[stack.length - 1]
      if (top.next === top.parents.length) {
        mark.set(top.id, 'done')
        placed(top.id)
        stack.pop()
        continue
      }
      const parent = top.parents[top.next++]
      if (!jobs.has(parent) || mark.get(parent) === 'done') continue
      if (mark.get(parent) === 'open') {
        const path = stack.map((frame) => frame.id)
        return [...path.slice(path.indexOf(parent)), parent]
      }
      open(parent)
    }
  }
  return undefined
}

/**
 * Opens (creating on first use) the queue: the programmatic entry point. It is the SQLite file in `home`, or with
 * `db` (a postgres:// URL) a PostgreSQL schema; `home` then keeps only this host's files (logs, wake files).
 */
export async function openQueue(home = defaultHome(), db = process.env.QUEUECTL_DB || undefined): Promise<Queue> {
  const dir = resolve(home)
  return new Queue(db ? await PgStorage.open(db) : await SqlJsStorage.open(dir), dir)
}

export class Queue {
  /** Remote workers' heartbeats as this process last saw them, and since when (its monotonic clock): see judgeWorkers. */
  private readonly heartbeatsSeen = new Map<string, { heartbeatAt: number; since: number }>()
  /** Schedules whose fire times could not be computed here, said once in the worker's log. */
  private readonly unreadableSchedules = new Set<string>()

  private readonly configs = new WeakMap<SqlSession, Promise<Config>>()
  private readonly envs = new Map<string, string>()
  /** This process's copies of logs kept in the database (see readableLog). */
  private readonly logCopies = new Set<string>()

  constructor(readonly storage: Storage, readonly home: string) {}

  logPath(id: string): string {
    return join(this.home, 'logs', `${id}.log`)
  }

  /**
   * Where a worker's slot notes the process group of the attempt it runs (see killOrphanedAttempt): one file per
   * slot, rewritten for each job, not one per job, which would create and delete a file for each.
   */
  slotNotePath(workerId: string, slot: number): string {
    return join(this.home, 'wake', `${workerId}.${slot}.pid`)
  }

  /** Removes a worker's wake file and its slots' notes, once it has stopped or is known to be gone. */
  removeWorkerFiles(workerId: string): void {
    const folder = join(this.home, 'wake')
    let names: string[] = []
    try {
      names = readdirSync(folder)
    } catch {
      return // no folder, no files
    }
    for (const name of names) if (name === workerId || name.startsWith(`${workerId}.`)) rmQuiet(join(folder, name))
  }

  /** Where a running completion hook of the job notes its process group (see takeHooks). */
  hookNotePath(id: string): string {
    return join(this.home, 'logs', `${id}.hook.pid`)
  }

  /** The output of every completion hook, each run between a header and a footer line. */
  hookLogPath(): string {
    return join(this.home, 'logs', 'hooks.log')
  }

  close(): void {
    for (const path of this.logCopies) rmQuiet(path)
    this.logCopies.clear()
    this.storage.close()
  }

  async enqueue(spec: JobSpec): Promise<EnqueuedJob> {
    return (await this.enqueueMany([spec]))[0]
  }

  /**
   * All or nothing: every job is validated, and every id and parent checked, before one is written. A job whose
   * unique key is held is not added: its place in the result is the holder, marked `duplicate`.
   */
  async enqueueMany(specs: unknown[]): Promise<EnqueuedJob[]> {
    const now = clockNow()
    const defaultEnv = stringEntries(process.env) // one object for every job without its own: stored once
    const jobs = specs.map((spec, i) => {
      try {
        return validateJobSpec(spec, now, defaultEnv)
      } catch (error) {
        if (error instanceof UsageError && specs.length > 1) error.message = `job ${i + 1}: ${error.message}`
        throw error
      }
    })
    const added = await this.storage.write(this.jobInserter(jobs, now))
    if (added.some((job) => !job.duplicate && job.state === 'pending' && Date.parse(job.run_at) <= clockNow())) await this.wakeWorker()
    return added
  }

  /**
   * Checks a batch of validated jobs among themselves (ids given twice, cycles), then returns the part of the write
   * transaction that inserts them: enqueue's, and a schedule's fire, which moves the schedule in the same one.
   */
  private jobInserter(jobs: NormalizedSpec[], now: number, schedule: string | null = null): (sql: SqlSession) => Promise<EnqueuedJob[]> {
    const named = new Map<string, NormalizedSpec>()
    for (const job of jobs) {
      if (job.id === undefined) continue
      if (named.has(job.id)) throw new UsageError(`job id "${job.id}" is given twice`)
      named.set(job.id, job)
    }
    // Parents first, so that each job's state can be judged from its parents' (a file may name later lines).
    const order: number[] = []
    const index = new Map(jobs.flatMap((job, i) => (job.id === undefined ? [] : [[job.id, i] as const])))
    const cycle = walkParentsFirst(named, (id) => order.push(index.get(id)!))
    if (cycle) throw new UsageError(`the jobs' dependencies form a cycle: ${cycle.join(' → ')} (each waits for the next)`)
    jobs.forEach((job, i) => job.id === undefined && order.push(i))
    const envText = new Map<Record<string, string>, [string, string]>()
    for (const job of jobs) {
      if (envText.has(job.env)) continue
      const text = JSON.stringify(Object.fromEntries(Object.entries(job.env).sort(([a], [b]) => (a < b ? -1 : 1))))
      envText.set(job.env, [createHash('sha1').update(text).digest('hex'), text])
    }
    const envs = [...new Map(envText.values())]
    const parents = [...new Set(jobs.flatMap((job) => [...job.after, ...job.after_any]))].filter((id) => !named.has(id))
    const queueNames = [...new Set(jobs.map((job) => job.queue))]
    return async (sql) => {
      // Every read that does not depend on another goes at once: one wait on a server database, not one per read.
      const has = (table: string, key: string, values: string[]) => Promise.all(values.map((value) => sql.get(`SELECT 1 FROM ${table} WHERE ${key} = ?`, [value]).then(Boolean)))
      const [taken, knownParents, config, storedEnvs, last, fresh, knownQueues] = await Promise.all([
        has('jobs', 'id', [...named.keys()]),
        has('jobs', 'id', parents),
        this.readConfig(sql),
        has('envs', 'hash', envs.map(([hash]) => hash)),
        sql.get<{ seq: number }>('SELECT seq FROM jobs ORDER BY seq DESC LIMIT 1'), // not max(): its first run costs a CLI call twice as much
        this.freshIds(sql, jobs.filter((job) => job.id === undefined).length, named),
        has('queues', 'name', queueNames),
      ])
      const takenId = [...named.keys()].find((_, i) => taken[i])
      if (takenId !== undefined) throw new UsageError(`a job with id "${takenId}" already exists: choose another id (the existing job was left as it is)`)
      const unknown = new Set(parents.filter((_, i) => !knownParents[i]))
      for (const job of jobs) {
        const parent = [...job.after, ...job.after_any].find((id) => unknown.has(id))
        if (parent !== undefined) throw new UsageError(`unknown parent job "${parent}"${job.id ? ` of job "${job.id}"` : ''}: enqueue the parent first, or in the same --file`)
      }
      for (const [i, [hash, text]] of envs.entries()) if (!storedEnvs[i]) await sql.run('INSERT INTO envs (hash, env) VALUES (?, ?)', [hash, text])
      const seq = Number(last?.seq ?? 0)
      const results: EnqueuedJob[] = new Array(jobs.length)
      const rows = new Map<string, JobRow>() // this batch's jobs by id, as inserted so far
      const holders = new Map<string, JobRow>() // this batch's unique keys
      const queues = new Set(queueNames.filter((_, i) => knownQueues[i])) // made sure to exist
      const generated = fresh.reverse()
      for (const i of order) {
        const job = jobs[i]
        if (job.unique_key !== null) {
          const holder = holders.get(`${job.queue}\0${job.unique_key}`) ?? (await this.uniqueHolder(sql, job.queue, job.unique_key, job.unique_for_ms ? now - job.unique_for_ms : null))
          if (holder) {
            results[i] = { ...toJob(holder), duplicate: true }
            if (job.id !== undefined) rows.set(job.id, holder) // its dependants wait for the job that holds the key
            continue
          }
        }
        if (!queues.has(job.queue)) await this.ensureQueue(sql, job.queue)
        queues.add(job.queue)
        const id = job.id ?? generated.pop()!
        const row: JobRow = {
          seq: seq + 1 + i,
          id,
          command: job.command,
          cwd: job.cwd,
          env_hash: envText.get(job.env)![0],
          state: 'pending',
          attempts: 0,
          runs: 0,
          max_retries: job.max_retries ?? config.max_retries,
          priority: job.priority,
          run_at: job.run_at,
          timeout: job.timeout,
          created_at: now,
          updated_at: now,
          started_at: null, finished_at: null, exit_code: null, last_error: null, worker: null, output_tail: null,
          queue: job.queue,
          ready: 0,
          unique_key: job.unique_key,
          after: job.after.length ? JSON.stringify(job.after.map((p) => rows.get(p)?.id ?? p)) : null,
          after_any: job.after_any.length ? JSON.stringify(job.after_any.map((p) => rows.get(p)?.id ?? p)) : null,
          cancel: null,
          slot: null,
          schedule,
          on_success: job.on_success,
          on_failure: job.on_failure,
          on_finish: job.on_finish,
          hook_due: 0,
        }
        const judged: { id: string; state: JobState; required: boolean }[] = []
        if (job.after.length || job.after_any.length) {
          for (const [given, required] of [...job.after.map((p) => [p, 1] as const), ...job.after_any.map((p) => [p, 0] as const)]) {
            const parent = rows.get(given) ?? (await sql.get<JobRow>('SELECT * FROM jobs WHERE id = ?', [given]))!
            judged.push({ id: parent.id, state: parent.state, required: Boolean(required) })
          }
          Object.assign(row, initialState(judged, now))
        }
        row.ready = isReady(row.state, row.run_at, now) ? 1 : 0
        row.hook_due = isTerminal(row.state) && hooksFor(row, config).length ? 1 : 0 // born skipped: its end is now
        await sql.run(INSERT_JOB, [
          row.seq, row.id, row.command, row.cwd, row.env_hash, row.state, 0, 0, row.max_retries, row.priority, row.run_at, row.timeout, now, now,
          row.queue, row.ready, row.unique_key, row.after, row.after_any, row.finished_at, row.last_error, row.schedule, row.on_success, row.on_failure, row.on_finish, row.hook_due,
        ])
        for (const parent of judged) await sql.run('INSERT OR IGNORE INTO deps (parent, child, required) VALUES (?, ?, ?)', [parent.id, row.id, parent.required ? 1 : 0])
        if (job.id !== undefined) rows.set(id, row) // a generated id is no parent in this batch
        if (row.unique_key !== null) holders.set(`${row.queue}\0${row.unique_key}`, row)
        results[i] = toJob(row)
      }
      return results
    }
  }

  /**
   * `count` generated ids that no stored job has, nor one of `named` (the clock may have gone back since an earlier
   * id). Generated ids only grow, so when no stored id lies between the first and the last none is taken: one lookup
   * for a bulk enqueue instead of one per job.
   */
  private async freshIds(sql: SqlSession, count: number, named: Map<string, unknown>): Promise<string[]> {
    const ids = Array.from({ length: count }, generateJobId)
    if (count === 0 || (!(await sql.get('SELECT 1 FROM jobs WHERE id BETWEEN ? AND ?', [ids[0], ids[count - 1]])) && !ids.some((id) => named.has(id)))) return ids
    for (const [i, id] of ids.entries()) {
      let candidate = id // a new one is greater than every id before it, so it can only be taken by a stored job
      while (named.has(candidate) || (await sql.get('SELECT 1 FROM jobs WHERE id = ?', [candidate]))) candidate = generateJobId()
      ids[i] = candidate
    }
    return ids
  }

  /** The job that holds `key` in `queue`: an active one, or one finished at or after `finishedSince`. */
  private async uniqueHolder(sql: SqlSession, queue: string, key: string, finishedSince: number | null): Promise<JobRow | undefined> {
    return sql.get<JobRow>(
      `SELECT * FROM jobs INDEXED BY jobs_unique WHERE queue = ? AND unique_key = ? AND (state IN (${ACTIVE_SQL}) OR finished_at >= ?) ORDER BY seq DESC LIMIT 1`,
      [queue, key, finishedSince])
  }

  /** A queue exists from its first job; one created while everything is paused starts paused (`pause --all`). */
  private async ensureQueue(sql: SqlSession, name: string): Promise<void> {
    if (await sql.get('SELECT 1 FROM queues WHERE name = ?', [name])) return
    const pausedAll = await sql.get("SELECT 1 FROM meta WHERE key = 'paused_all' AND value = '1'")
    await sql.run('INSERT INTO queues (name, concurrency, paused, running) VALUES (?, NULL, ?, 0)', [name, pausedAll ? 1 : 0])
  }

  async getJob(id: string, options: { env?: boolean } = {}): Promise<JobDetail | undefined> {
    return this.storage.read(async (sql) => {
      const row = await sql.get<JobRow>('SELECT * FROM jobs WHERE id = ?', [id])
      if (!row) return undefined
      const history = await sql.all<Attempt & { started_at: number; finished_at: number | null }>(
        'SELECT attempt, worker, started_at, finished_at, exit_code, signal, error, duration_ms, outcome FROM attempts WHERE job_id = ? ORDER BY attempt', [id])
      const relatives = async (sqlText: string) =>
        (await sql.all<{ id: string; state: JobState; required: number }>(sqlText, [id])).map((r) => ({ id: r.id, state: r.state, required: Boolean(r.required) }))
      const detail: JobDetail = {
        ...toJob(row),
        output_tail: row.output_tail,
        history: history.map((a) => ({ ...a, started_at: iso(a.started_at)!, finished_at: iso(a.finished_at) })),
        parents: await relatives('SELECT j.id, j.state, d.required FROM deps d JOIN jobs j ON j.id = d.parent WHERE d.child = ? ORDER BY j.seq'),
        dependants: await relatives('SELECT j.id, j.state, d.required FROM deps d JOIN jobs j ON j.id = d.child WHERE d.parent = ? ORDER BY j.seq'),
      }
      if (options.env) {
        detail.env = await this.envOf(sql, row.env_hash)
      }
      return detail
    })
  }

  async listJobs(options: JobFilter & { limit?: number; offset?: number } = {}): Promise<Job[]> {
    const [where, params] = this.filter(options)
    const rows = await this.storage.read((sql) => sql.all<JobRow>(`SELECT * FROM jobs ${where} ORDER BY seq DESC LIMIT ? OFFSET ?`, [...params, options.limit ?? 100, options.offset ?? 0]))
    return rows.map(toJob)
  }

  async countJobs(options: JobFilter = {}): Promise<number> {
    const [where, params] = this.filter(options)
    return Number((await this.storage.read((sql) => sql.get<{ n: number }>(`SELECT count(*) AS n FROM jobs ${where}`, params)))!.n)
  }

  private filter(options: JobFilter): [string, SqlValue[]] {
    const terms: string[] = []
    const params: SqlValue[] = []
    if (options.queue) {
      terms.push('queue = ?')
      params.push(options.queue)
    }
    if (options.state) {
      if (!JOB_STATES.includes(options.state)) throw new UsageError(`unknown state "${options.state}": use one of ${JOB_STATES.join(', ')}`)
      terms.push('state = ?')
      params.push(options.state)
    }
    if (options.search) {
      const pattern = `%${options.search.replace(/[\\%_]/g, (c) => `\\${c}`)}%`
      terms.push("(id LIKE ? ESCAPE '\\' OR command LIKE ? ESCAPE '\\')")
      params.push(pattern, pattern)
    }
    return [terms.length ? `WHERE ${terms.join(' AND ')}` : '', params]
  }

  /** Active workers and the count of jobs in each state; a worker found dead is cleaned up first. */
  async status(): Promise<QueueStatus> {
    await this.recoverLostJobs()
    return this.storage.read(async (sql) => {
      const workers = await sql.all<WorkerRow>('SELECT * FROM workers ORDER BY started_at, id')
      const busy = await sql.all<{ id: string; worker: string; slot: number | null; started_at: number }>(
        "SELECT id, worker, slot, started_at FROM jobs WHERE state = 'processing' ORDER BY slot, started_at")
      return {
        workers: workers.map((w) => {
          const jobs = busy.filter((j) => j.worker === w.id).map((j) => ({ id: j.id, slot: j.slot ?? 0, since: iso(j.started_at)! }))
          return {
            id: w.id, pid: w.pid, host: w.host, job_id: jobs[0]?.id ?? null, since: jobs[0]?.since ?? null,
            started_at: iso(w.started_at)!, heartbeat_at: iso(w.heartbeat_at)!, slots: w.slots, note: w.note, queues: w.queues ? w.queues.split(',') : null, jobs,
          }
        }),
        counts: await this.counts(sql),
      }
    })
  }

  /** Whether a live worker is registered: one read of the workers table, no lock (enqueue's hint on a terminal). */
  async hasLiveWorker(): Promise<boolean> {
    return this.storage.read(async (sql) => (await this.judgeWorkers(sql)).alive.size > 0)
  }

  private async counts(sql: SqlSession): Promise<Record<JobState, number>> {
    const counts = emptyCounts()
    for (const row of await sql.all<{ state: JobState; n: number }>('SELECT state, count(*) AS n FROM jobs GROUP BY state')) counts[row.state] = row.n
    return counts
  }

  async stats(): Promise<QueueStats> {
    await this.recoverLostJobs()
    const now = clockNow()
    return this.storage.read(async (sql) => {
      const counts = await this.counts(sql)
      const durations = (await sql.all<{ d: number }>(`SELECT duration_ms AS d FROM attempts WHERE duration_ms IS NOT NULL AND ${COUNTED_ATTEMPT} ORDER BY duration_ms`)).map((r) => r.d)
      const finishedSince = async (ms: number) =>
        Number((await sql.get<{ n: number }>(`SELECT count(*) AS n FROM jobs WHERE state IN (${sqlList(TERMINAL_STATES)}) AND finished_at >= ?`, [now - ms]))!.n)
      const attempts = Object.fromEntries(ATTEMPT_RESULTS.map((end) => [end, 0])) as Record<AttemptResult, number>
      for (const row of await sql.all<{ outcome: AttemptResult; n: number }>('SELECT outcome, count(*) AS n FROM attempts WHERE outcome IS NOT NULL GROUP BY outcome')) {
        if (ATTEMPT_RESULTS.includes(row.outcome)) attempts[row.outcome] = row.n
      }
      // A retry is a failed or lost attempt that the job followed with another run (running now, or ended any way but released).
      const retries = await sql.get<{ n: number }>(`SELECT count(*) AS n FROM attempts a WHERE outcome IN ('failed', 'lost')
        AND EXISTS (SELECT 1 FROM attempts b WHERE b.job_id = a.job_id AND b.attempt > a.attempt AND (b.outcome IS NULL OR b.outcome <> 'released'))`)
      const oldest = await sql.get<{ t: number | null }>("SELECT min(run_at) AS t FROM jobs WHERE state IN ('pending', 'failed') AND run_at <= ?", [now])
      const ended = counts.completed + counts.dead
      return {
        counts,
        success_rate: ended ? counts.completed / ended : null,
        retries: Number(retries?.n ?? 0),
        failures: attempts.failed + attempts.lost,
        attempts,
        duration_ms: {
          mean: durations.length ? Math.round(durations.reduce((a, b) => a + b, 0) / durations.length) : null,
          p50: percentile(durations, 50),
          p95: percentile(durations, 95),
        },
        finished: { last_1m: await finishedSince(60_000), last_5m: await finishedSince(300_000), last_15m: await finishedSince(900_000) },
        oldest_pending_wait_ms: oldest?.t == null ? null : now - oldest.t,
      }
    })
  }

  /**
   * `retry` (dead, cancelled or skipped jobs; `deadOnly` for `dlq retry`): back to pending (or blocked, while a
   * parent is active) with attempts reset. The jobs each one skipped come back to blocked, transitively. All or nothing.
   */
  async retryJobs(ids: string[] | 'all', options: { deadOnly?: boolean } = {}): Promise<{ retried: string[]; revived: number }> {
    const allowed: JobState[] = options.deadOnly || ids === 'all' ? ['dead'] : ['dead', 'cancelled', 'skipped']
    const result = await this.storage.write(async (sql) => {
      const now = clockNow()
      const targets = ids === 'all'
        ? (await sql.all<{ id: string }>("SELECT id FROM jobs WHERE state = 'dead' ORDER BY seq")).map((r) => r.id)
        : [...new Set(ids)]
      const retried: string[] = []
      let revived = 0
      for (const id of targets) {
        const row = await sql.get<JobRow>('SELECT * FROM jobs WHERE id = ?', [id])
        if (!row) throw new QueueError(`no job with id "${id}"; nothing was retried`)
        if (retried.length && !isTerminal(row.state) && row.state !== 'processing' && row.attempts === 0) {
          retried.push(id) // brought back already, as a dependant of a job retried before it in this call
          continue
        }
        if (!allowed.includes(row.state)) {
          throw new QueueError(`job "${id}" is ${row.state}: only ${allowed.join(', ')} jobs can be retried; nothing was retried`)
        }
        const parents = await this.parentsOf(sql, id)
        const failed = failedRequirement(parents)
        if (failed) throw new QueueError(`job "${id}" waits for ${failed.id}, which is ${failed.state}: retry ${failed.id} (its dependants come back with it); nothing was retried`)
        if (row.unique_key !== null) {
          const holder = await this.uniqueHolder(sql, row.queue, row.unique_key, null)
          if (holder) throw new QueueError(`job "${id}"'s unique key is held by ${holder.state} job "${holder.id}"; nothing was retried`)
        }
        await this.moveJob(sql, row, { state: parents.some(isUnsatisfied) ? 'blocked' : 'pending', attempts: 0, run_at: now, finished_at: null }, now)
        revived += await this.reviveDependants(sql, id, now)
        retried.push(id)
      }
      return { retried, revived }
    })
    if (result.retried.length) await this.wakeWorker()
    return result
  }

  /** The jobs that `parentId` skipped, and theirs, back to blocked: unless another required parent also failed. */
  private async reviveDependants(sql: SqlSession, parentId: string, now: number): Promise<number> {
    let revived = 0
    for (const parents = [parentId]; parents.length; ) {
      const children = await sql.all<JobRow>(
        "SELECT j.* FROM deps d JOIN jobs j ON j.id = d.child WHERE d.parent = ? AND d.required = 1 AND j.state = 'skipped' ORDER BY j.seq", [parents.shift()!])
      for (const child of children) {
        if (failedRequirement(await this.parentsOf(sql, child.id))) continue
        await this.moveJob(sql, child, { state: 'blocked', finished_at: null, last_error: null }, now)
        revived++
        parents.push(child.id)
      }
    }
    return revived
  }

  private async parentsOf(sql: SqlSession, id: string): Promise<{ id: string; state: JobState; required: boolean }[]> {
    const rows = await sql.all<{ id: string; state: JobState; required: number }>('SELECT j.id, j.state, d.required FROM deps d JOIN jobs j ON j.id = d.parent WHERE d.child = ?', [id])
    return rows.map((r) => ({ id: r.id, state: r.state, required: r.required === 1 }))
  }

  /**
   * `kill`: active jobs become cancelled at once; a processing one is marked, and the worker that owns it (on any
   * host) signals its process group and records the end. Already terminal targets are returned, not changed.
   */
  async kill(target: { ids?: string[]; queue?: string }, options: { signal?: NodeJS.Signals; graceMs?: number } = {}): Promise<KillResult> {
    const request = `${options.signal ?? 'SIGTERM'} ${Math.round(options.graceMs ?? KILL_GRACE_DEFAULT_MS)}`
    const owners = new Set<string>()
    const result = await this.storage.write(async (sql) => {
      const now = clockNow()
      let ids = target.ids
      if (ids) {
        for (const id of ids) if (!(await sql.get('SELECT 1 FROM jobs WHERE id = ?', [id]))) throw new UsageError(`no job with id "${id}": nothing was killed`)
      } else {
        const scope = target.queue === undefined ? '' : ' AND queue = ?'
        ids = (await sql.all<{ id: string }>(`SELECT id FROM jobs WHERE state IN (${ACTIVE_SQL})${scope} ORDER BY seq`, target.queue === undefined ? [] : [target.queue])).map((r) => r.id)
      }
      const result: KillResult = { cancelled: [], signalled: [], finished: [] }
      for (const id of new Set(ids)) {
        const row = (await sql.get<JobRow>('SELECT * FROM jobs WHERE id = ?', [id]))! // read again: a cancel cascades
        if (isTerminal(row.state)) result.finished.push({ id, state: row.state })
        else if (row.state === 'processing') {
          await sql.run('UPDATE jobs SET cancel = ?, updated_at = ? WHERE id = ?', [request, now, id])
          result.signalled.push(id)
          if (row.worker) owners.add(row.worker)
        } else {
          await this.moveJob(sql, row, { state: 'cancelled', finished_at: now, last_error: 'cancelled' }, now)
          result.cancelled.push(id)
        }
      }
      return result
    })
    for (const worker of owners) this.poke(worker) // the owner signals at once; its heartbeat would find the request too
    if (owners.size) this.storage.hint?.() // an owner on another host
    return result
  }

  /** The kills requested for this worker's running jobs: what its slots must signal. */
  async cancelRequests(workerId: string): Promise<{ id: string; attempt: number; signal: NodeJS.Signals; graceMs: number }[]> {
    const rows = await this.storage.read((sql) => sql.all<{ id: string; runs: number; cancel: string }>(
      'SELECT id, runs, cancel FROM jobs INDEXED BY jobs_worker WHERE worker = ? AND cancel IS NOT NULL', [workerId]))
    return rows.map((r) => {
      const [signal, grace] = r.cancel.split(' ')
      return { id: r.id, attempt: r.runs, signal: signal as NodeJS.Signals, graceMs: Number(grace) }
    })
  }

  /**
   * `rm`: deletes jobs that are not running, with their history; a parent that an active job waits for is kept
   * (the error names the dependants). Returns the ids removed; their logs go once the deletion is durable.
   */
  async removeJobs(ids: string[]): Promise<string[]> {
    const targets = [...new Set(ids)]
    return this.storage.write(async (sql) => {
      for (const id of targets) {
        const row = await sql.get<JobRow>('SELECT * FROM jobs WHERE id = ?', [id])
        if (!row) throw new QueueError(`no job with id "${id}"; nothing was removed`)
        if (row.state === 'processing') throw new QueueError(`job "${id}" is running: kill it first, or use rm --force; nothing was removed`)
        const waiting = (await sql.all<{ id: string }>(`SELECT j.id FROM deps d JOIN jobs j ON j.id = d.child WHERE d.parent = ? AND j.state IN (${ACTIVE_SQL}) ORDER BY j.seq`, [id]))
          .map((r) => r.id).filter((child) => !targets.includes(child))
        if (waiting.length) throw new QueueError(`job "${id}" is a parent of active job${waiting.length === 1 ? '' : 's'} ${waiting.join(', ')}: remove or kill ${waiting.length === 1 ? 'it' : 'them'} first; nothing was removed`)
      }
      for (const id of targets) await this.deleteJob(sql, id)
      return targets
    }, (ids) => this.removeLogs(ids))
  }

  private async deleteJob(sql: SqlSession, id: string): Promise<void> {
    await sql.run('DELETE FROM jobs WHERE id = ?', [id])
    if (this.storage.outputInDatabase) await sql.run('DELETE FROM output WHERE job_id = ?', [id])
    await sql.run('DELETE FROM attempts WHERE job_id = ?', [id])
    await sql.run('DELETE FROM deps WHERE child = ?', [id])
    await sql.run('DELETE FROM deps WHERE parent = ?', [id])
  }

  /** Every queue: its limit, pause and counts by state. */
  async listQueues(): Promise<QueueInfo[]> {
    return this.storage.read(async (sql) => {
      const queues = await sql.all<{ name: string; concurrency: number | null; paused: number }>('SELECT name, concurrency, paused FROM queues ORDER BY name')
      const counts = await sql.all<{ queue: string; state: JobState; n: number }>('SELECT queue, state, count(*) AS n FROM jobs GROUP BY queue, state')
      return queues.map((q) => {
        const byState = emptyCounts()
        for (const c of counts) if (c.queue === q.name) byState[c.state] = c.n
        return { name: q.name, concurrency: q.concurrency, paused: q.paused === 1, counts: byState }
      })
    })
  }

  /** The names of the paused queues (without counting their jobs, as listQueues does). */
  async pausedQueues(): Promise<string[]> {
    return (await this.storage.read((sql) => sql.all<{ name: string }>('SELECT name FROM queues WHERE paused = 1 ORDER BY name'))).map((r) => r.name)
  }

  /** `queue set Q --concurrency N|unlimited` (null). Lowering it stops nothing: claims wait until under it. */
  async setQueueConcurrency(name: string, concurrency: number | null): Promise<void> {
    checkQueueName(name)
    await this.storage.write(async (sql) => {
      await this.ensureQueue(sql, name)
      await sql.run('UPDATE queues SET concurrency = ? WHERE name = ?', [concurrency, name])
    })
    await this.wakeWorker()
  }

  /** Pauses or resumes one queue, or all (`all` also covers queues made later). Returns the queues that changed. */
  async setPaused(target: { queue?: string; all?: boolean }, paused: boolean): Promise<string[]> {
    if (target.queue !== undefined) checkQueueName(target.queue)
    const changed = await this.storage.write(async (sql) => {
      if (target.all) await sql.run("INSERT INTO meta (key, value) VALUES ('paused_all', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value", [paused ? '1' : '0'])
      else await this.ensureQueue(sql, target.queue!)
      const scope = target.all ? '' : ' AND name = ?'
      const changed = (await sql.all<{ name: string }>(`SELECT name FROM queues WHERE paused = ?${scope} ORDER BY name`, [paused ? 0 : 1, ...(target.all ? [] : [target.queue!])])).map((r) => r.name)
      for (const name of changed) await sql.run('UPDATE queues SET paused = ? WHERE name = ?', [paused ? 1 : 0, name])
      return changed
    })
    if (!paused && changed.length) await this.wakeWorker()
    return changed
  }

  /** Id, state, exit code and attempts of each job (undefined: no such job), for `wait`. */
  async jobStates(ids: string[]): Promise<Map<string, JobProgress | undefined>> {
    return this.storage.read(async (sql) => {
      const states = new Map<string, JobProgress | undefined>()
      for (const id of ids) states.set(id, await sql.get('SELECT id, state, exit_code, attempts, queue, last_error FROM jobs WHERE id = ?', [id]))
      return states
    })
  }

  /** The active jobs now, of one queue or all: what `wait --queue Q` / `wait --all` waits for. */
  async activeJobIds(queue?: string): Promise<string[]> {
    return this.storage.read(async (sql) => (await sql.all<{ id: string }>(
      `SELECT id FROM jobs WHERE state IN (${ACTIVE_SQL})${queue === undefined ? '' : ' AND queue = ?'} ORDER BY seq`, queue === undefined ? [] : [queue])).map((r) => r.id))
  }

  /** Deletes finished jobs (completed and dead by default) older than `olderThanMs`, with their logs. */
  async purge(options: { states?: JobState[]; olderThanMs?: number } = {}): Promise<string[]> {
    const states = options.states ?? [...TERMINAL_STATES]
    for (const state of states) {
      if (!isTerminal(state)) throw new UsageError(`purge deletes finished jobs only: --state ${TERMINAL_STATES.join(', ')}, not "${state}"`)
    }
    const cutoff = clockNow() - (options.olderThanMs ?? 0)
    // A parent that an active job still waits for is kept: its dependant must be able to see how it ended.
    const candidates = `SELECT id FROM jobs j WHERE state IN (${states.map(() => '?').join(', ')}) AND finished_at <= ?
      AND NOT EXISTS (SELECT 1 FROM deps d JOIN jobs c ON c.id = d.child WHERE d.parent = j.id AND c.state IN (${ACTIVE_SQL}))`
    if (!(await this.storage.read((sql) => sql.get(`${candidates} LIMIT 1`, [...states, cutoff])))) return []
    return this.storage.write(async (sql) => {
      const rows = await sql.all<{ id: string }>(candidates, [...states, cutoff])
      for (const { id } of rows) await this.deleteJob(sql, id)
      await sql.run('DELETE FROM envs WHERE hash NOT IN (SELECT env_hash FROM jobs WHERE env_hash IS NOT NULL)')
      return rows.map((r) => r.id)
    }, (ids) => this.removeLogs(ids))
  }

  /** Run while the lock is still held: once it is released, a new job may take a removed id and start a log. */
  private removeLogs(ids: string[]): void {
    for (const id of ids) {
      rmQuiet(this.logPath(id))
      rmQuiet(join(this.home, 'logs', `${id}.pid`)) // a process note as 0.3 and earlier kept it
    }
  }

  /** The `retention` config applied: what workers run every few seconds. */
  async applyRetention(): Promise<number> {
    const { retention } = await this.getConfig()
    return retention > 0 ? (await this.purge({ olderThanMs: retention * 1000 })).length : 0
  }

  async getConfig(): Promise<Config> {
    return this.storage.read((sql) => this.readConfig(sql))
  }

  /** Each setting as it was set (`7d`; `config list` shows that), or its default. */
  async getConfigText(): Promise<Record<ConfigName, string>> {
    const settings = await this.storage.read((sql) => this.readSettings(sql))
    return Object.fromEntries(Object.entries(settings).map(([key, { text }]) => [key, text])) as Record<ConfigName, string>
  }

  /** The configuration as this transaction sees it, read once in it (a claim and the ends beside it all need it). */
  private readConfig(sql: SqlSession): Promise<Config> {
    let config = this.configs.get(sql)
    if (!config) {
      config = this.readSettings(sql).then((settings) => Object.fromEntries(Object.entries(settings).map(([key, { value }]) => [key, value])) as Config)
      config.catch(() => undefined) // read ahead of need (claimIn, finishAttempts): a failure is the awaiting statement's
      this.configs.set(sql, config)
    }
    return config
  }

  /** A job's environment: stored once per content under its hash, so what was read once never changes. */
  private async envOf(sql: SqlSession, hash: string | null): Promise<Record<string, string>> {
    if (hash === null) return {}
    let env = this.envs.get(hash)
    if (!env) {
      const row = await sql.get<{ env: string }>('SELECT env FROM envs WHERE hash = ?', [hash])
      if (!row) return {}
      if (this.envs.size >= 1_000) this.envs.clear()
      this.envs.set(hash, (env = row.env))
    }
    return JSON.parse(env)
  }

  private async readSettings(sql: SqlSession): Promise<Record<ConfigName, { text: string; value: Config[ConfigName] }>> {
    const settings = Object.fromEntries(Object.entries(CONFIG_KEYS).map(([key, def]) => [key, { text: String(def.default), value: def.default }])) as Record<ConfigName, { text: string; value: Config[ConfigName] }>
    for (const row of await sql.all<{ key: string; value: string }>('SELECT key, value FROM config')) {
      const parsed = isConfigName(row.key) ? CONFIG_KEYS[row.key].parse(row.value) : undefined
      if (parsed !== undefined) settings[row.key as ConfigName] = { text: row.value, value: parsed }
    }
    return settings
  }

  /**
   * Parses and range-checks `value` for `key`, then stores it as given (so `config list` shows `7d`, not 604800);
   * a number is stored trimmed, a command exactly.
   */
  async setConfig(key: string, value: string): Promise<Config[ConfigName]> {
    const name = normalizeConfigKey(key)
    const text = typeof CONFIG_KEYS[name].default === 'number' ? String(value).trim() : String(value)
    const parsed = CONFIG_KEYS[name].parse(text)
    if (parsed === undefined) throw new UsageError(`invalid value "${value}" for ${name}: use ${CONFIG_KEYS[name].range}`)
    await this.storage.write((sql) => sql.run('INSERT INTO config (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value', [name, text]))
    return parsed
  }

  async resetConfig(): Promise<void> {
    await this.storage.write((sql) => sql.run('DELETE FROM config'))
  }

  // The worker's side: registration, claiming, finishing, and recovering what dead workers left behind. Every change
  // a worker makes to a job it claimed is conditional on still owning that attempt (ownedRow): a worker judged lost
  // by mistake, whose job was recovered and claimed again, records nothing over the new owner's state.

  /** Registers a worker of this process; `beforeRegistering` prepares what must exist once others can see it. */
  async registerWorker(options: WorkerSlots = {}, beforeRegistering?: (id: string) => void): Promise<string> {
    const id = `w${process.pid}-${randomBytes(2).toString('hex')}`
    this.workerSlots.set(id, options)
    beforeRegistering?.(id)
    await this.storage.write((sql) => this.touchWorker(sql, id, clockNow()))
    return id
  }

  private readonly workerSlots = new Map<string, WorkerSlots>()

  /** The worker's row with a heartbeat of `now`: registered if it is not (new, or judged lost and removed). */
  private async touchWorker(sql: SqlSession, id: string, now: number): Promise<void> {
    const { slots = 1, queues } = this.workerSlots.get(id) ?? {}
    await sql.run('INSERT INTO workers (id, pid, host, proc_start, started_at, heartbeat_at, slots, queues) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at',
      [id, process.pid, HOST, ownStartTime(), now, now, slots, queues ? queues.join(',') : null])
  }

  /**
   * A worker's heartbeat. A worker judged lost by mistake (a heartbeat late past the lease) registers again rather
   * than run unseen; but first every attempt it runs is checked to be still its own: those taken over are returned
   * and nothing is written (the caller kills them, then beats again without them).
   */
  async heartbeat(workerId: string, running: ClaimedJob[] = []): Promise<ClaimedJob[]> {
    return this.storage.write(async (sql) => {
      const owned = await Promise.all(running.map((claim) => this.ownedRow(sql, claim, workerId)))
      const lost = running.filter((_, i) => !owned[i])
      if (lost.length === 0) await this.touchWorker(sql, workerId, clockNow())
      return lost
    })
  }

  async unregisterWorker(workerId: string): Promise<void> {
    await this.storage.write((sql) => sql.run('DELETE FROM workers WHERE id = ?', [workerId]))
    this.workerSlots.delete(workerId)
  }

  /** Says why the worker holds back (`null`: it no longer does); `status` shows it. */
  async setWorkerNote(workerId: string, note: string | null): Promise<void> {
    await this.storage.write((sql) => sql.run('UPDATE workers SET note = ? WHERE id = ?', [note, workerId]))
  }

  /** The file that worker `workerId` watches, to be woken when there is work for it (see wakeWorker). */
  wakePath(workerId: string): string {
    return join(this.home, 'wake', workerId)
  }

  /**
   * Wakes one worker of this host, other than `except`, that can start a job now: it has a free slot, no note (it
   * is not backing off), and serves a queue with a ready job; of those, one with the most free slots (any one of
   * them). Called after whatever may give workers work (enqueue, retry, resume, a raised limit, a recovery), and by
   * a worker that claimed or ended jobs, which may have left work for another: so each job wakes one worker, one
   * after the other, instead of every change waking all of them. A poke that finds its worker dead, or hung, is
   * lost; the other idle workers' poll (IDLE_POLL_MS) still finds the job. Never throws: the change is made, and
   * the answer is only whether some worker was poked.
   */
  async wakeWorker(except?: string): Promise<boolean> {
    let candidates: IdleWorker[]
    const startable = new Set<string>()
    let idleElsewhere = false
    try {
      candidates = await this.storage.read(async (sql) => {
        // where a read costs a round trip, which queues can start a job is asked together with who is idle
        const [all, ready] = await Promise.all([
          sql.all<IdleWorker>(IDLE_WORKERS, [except ?? '']).then((workers) => workers.filter((w) => w.free > 0)),
          this.storage.cheapReads ? undefined : sql.all<{ name: string }>(STARTABLE_QUEUES),
        ])
        const idle = all.filter((w) => w.host === HOST && isProcessAlive(w.pid, w.proc_start || undefined))
        idleElsewhere = this.storage.hint !== undefined && all.some((w) => w.host !== HOST) // a hint through the database reaches those
        if (idle.length === 0 && !idleElsewhere) return []
        for (const { name } of ready ?? (await sql.all<{ name: string }>(STARTABLE_QUEUES))) startable.add(name)
        return idle.filter((w) => (w.queues === null ? startable.size > 0 : w.queues.split(',').some((name) => startable.has(name))))
      })
    } catch {
      return false // the change that called for it is made; the poll finds it
    }
    candidates.sort((a, b) => b.free - a.free)
    const most = candidates.filter((w) => w.free === candidates[0].free)
    const first = Math.floor(Math.random() * most.length) // spread the pokes over equally idle workers
    if ([...most.slice(first), ...most.slice(0, first), ...candidates.slice(most.length)].some((w) => this.poke(w.id))) return true
    // none that a file reaches could take it: idle workers of other hosts (or homes) hear of it through the database
    if (startable.size > 0 && (idleElsewhere || candidates.length > 0)) this.storage.hint?.()
    return false
  }

  /** Touches worker `workerId`'s wake file; false if it has none (it stopped, or it died and was cleaned up). */
  poke(workerId: string): boolean {
    try {
      const now = new Date()
      utimesSync(this.wakePath(workerId), now, now)
      return true
    } catch {
      return false
    }
  }

  /**
   * Takes the next job of the ready set (see the head comment) for `workerId`'s slot `slot`, in one transaction
   * under the lock: no two workers ever get the same attempt. Idle, it costs one read and no lock where reads are
   * cheaper than writes (SQLite: a server database's read costs the round trips of the claim's own first ones), and
   * `look: false` skips that read, for a worker that was told there is a job for it.
   */
  async claimNextJob(workerId: string, slot = 0, options: { look?: boolean } = {}): Promise<ClaimedJob | undefined> {
    const queues = this.workerSlots.get(workerId)?.queues
    if (options.look !== false && this.storage.cheapReads && !(await this.storage.read(async (sql) => (await sql.get(DUE_WAITING, [clockNow(), 1])) ?? (await this.pickReady(sql, queues, false))))) return undefined
    return this.storage.write((sql) => this.claimIn(sql, workerId, slot))
  }

  /** The best head of the servable queues' ready indexes that the worker serves; `lock`ed (on a server database) when it is to be claimed. */
  private async pickReady(sql: SqlSession, queues: string[] | undefined, lock = true): Promise<JobRow | undefined> {
    let best: JobRow | undefined
    for (const row of await sql.all<JobRow>(lock ? READY_HEADS + this.storage.claimLock : READY_HEADS)) {
      if (queues && !queues.includes(row.queue)) continue
      if (!best || row.priority > best.priority || (row.priority === best.priority && row.seq < best.seq)) best = row
    }
    return best
  }

  // On a server database a transaction waits once per read, so a claim reads once (the config comes with the pick)
  // and writes the rest without reading it first: the promotion, the worker's row, its queue's count.
  private async claimIn(sql: SqlSession, workerId: string, slot: number): Promise<ClaimedJob | undefined> {
    const now = clockNow()
    // Promote what has become due: each waiting job enters the ready set once, so a claim never walks past it.
    // Where a read is cheap it looks first: the UPDATE costs ~3× the read even when nothing is due, which is most claims.
    if (!this.storage.cheapReads || (await sql.get(DUE_WAITING, [now, 1]))) await sql.run(PROMOTE_DUE, [now, PROMOTE_BATCH])
    const config = this.readConfig(sql)
    const row = await this.pickReady(sql, this.workerSlots.get(workerId)?.queues)
    if (!row) return undefined
    // registered again if it was not (judged lost, then back): a job claimed by an unknown worker would be recovered at once
    await this.touchWorker(sql, workerId, now)
    const attempt = row.runs + 1
    const claimed = await this.moveJob(sql, row, { state: 'processing', attempts: row.attempts + 1, runs: attempt, worker: workerId, started_at: now, finished_at: null, slot }, now)
    await sql.run('INSERT INTO attempts (job_id, attempt, worker, started_at) VALUES (?, ?, ?, ?)', [row.id, attempt, workerId, now])
    const env = await this.envOf(sql, row.env_hash)
    // a job's first run has no output before it (rm, purge and retention take a job's output with it)
    const output = this.storage.outputInDatabase ? (row.runs === 0 ? { end: 0 } : await sql.get<{ end: number }>(OUTPUT_END, [row.id])) : undefined
    return { job: toJob(claimed), attempt, env, timeout: row.timeout || (await config).job_timeout, slot, output_at: output?.end }
  }

  /**
   * The job's row while `workerId` still owns attempt `claim.attempt` of it; undefined once it was taken over. It
   * counts the jobs that wait for it, so that an end with none reads no dependants.
   */
  private async ownedRow(sql: SqlSession, claim: ClaimedJob, workerId: string): Promise<JobRow | undefined> {
    const row = await sql.get<JobRow>(OWNED_ROW, [claim.job.id])
    return row && row.state === 'processing' && row.worker === workerId && row.runs === claim.attempt ? row : undefined
  }

  /**
   * Records how attempts ended: completed, failed with its retry time, dead once out of retries, or cancelled if a
   * kill was asked for; nothing for an attempt no longer this worker's (its job is then undefined). `claimFor` names
   * the slots to claim a next job for in the same transaction: one fsync for all the slots that finished together.
   * The rows and the config are read at once (one wait on a server database).
   */
  async finishAttempts(workerId: string, ends: { claim: ClaimedJob; outcome: AttemptOutcome }[], claimFor: number[] = []): Promise<{ jobs: (Job | undefined)[]; next: ClaimedJob[] }> {
    return this.storage.write(async (sql) => {
      void this.readConfig(sql)
      const rows = await Promise.all(ends.map(({ claim }) => this.ownedRow(sql, claim, workerId)))
      const jobs: (Job | undefined)[] = []
      const ended = new Set<string>() // an end given twice is recorded once, as a read after the first would say
      for (const [i, { claim, outcome }] of ends.entries()) {
        const row = ended.has(claim.job.id) ? undefined : rows[i]
        ended.add(claim.job.id)
        if (row) await this.insertOutput(sql, row.id, outcome.output)
        jobs.push(row ? toJob(await this.endAttempt(sql, row, outcome)) : undefined)
      }
      const next: ClaimedJob[] = []
      for (const slot of claimFor) {
        const claim = await this.claimIn(sql, workerId, slot)
        if (!claim) break
        next.push(claim)
      }
      return { jobs, next }
    })
  }

  /** Output of running attempts into the database, each only while `workerId` still owns the attempt. */
  async storeOutput(workerId: string, parts: { claim: ClaimedJob; chunks: OutputChunk[] }[]): Promise<void> {
    await this.storage.write(async (sql) => {
      for (const { claim, chunks } of parts) if (await this.ownedRow(sql, claim, workerId)) await this.insertOutput(sql, claim.job.id, chunks)
    })
  }

  private async insertOutput(sql: SqlSession, id: string, chunks: OutputChunk[] = []): Promise<void> {
    for (const { pos, data } of chunks) await sql.run('INSERT OR IGNORE INTO output (job_id, pos, data) VALUES (?, ?, ?)', [id, pos, data]) // stored already by a commit whose answer was lost
  }

  /**
   * A file with job `id`'s log as it is now: its file here, or where a server database holds the output of every
   * host, this process's copy of it, brought up to date (a few reads; a copy longer than the output, which was
   * removed and made again, starts over). The copies go with close().
   */
  async readableLog(id: string): Promise<string> {
    if (!this.storage.outputInDatabase) return this.logPath(id)
    const path = join(this.home, 'logs', 'copies', `${process.pid}-${id}.log`)
    if (!this.logCopies.has(path)) {
      makeDirectory(dirname(path))
      writeFileSync(path, '', { mode: 0o600 })
      this.logCopies.add(path)
    }
    const fd = openSync(path, 'r+')
    try {
      let size = fstatSync(fd).size
      const { end } = (await this.storage.read((sql) => sql.get<{ end: number }>(OUTPUT_END, [id])))!
      if (end < size) ftruncateSync(fd, (size = 0))
      while (size < end) {
        const rows = await this.storage.read((sql) => sql.all<{ pos: number; data: Uint8Array }>(OUTPUT_AFTER, [id, size]))
        if (rows.length === 0) break
        for (const { pos, data } of rows) size += writeSync(fd, data, size - pos, data.length - (size - pos), size)
      }
    } finally {
      closeSync(fd)
    }
    return path
  }

  /** One attempt's end (see finishAttempts); with `claimNext`, the same transaction claims the slot's next job. */
  async finishAttempt(claim: ClaimedJob, workerId: string, outcome: AttemptOutcome, options: { claimNext?: boolean } = {}): Promise<{ job?: Job; next?: ClaimedJob }> {
    const { jobs, next } = await this.finishAttempts(workerId, [{ claim, outcome }], options.claimNext ? [claim.slot] : [])
    return { job: jobs[0], next: next[0] }
  }

  /**
   * Puts the job back to pending without counting the attempt: `worker stop --force`, a stop just after the claim,
   * or a failure of the machine rather than the job. False (nothing written) if the attempt is no longer this worker's.
   */
  async releaseJob(claim: ClaimedJob, workerId: string, outcome: AttemptOutcome, reason = 'stopped by worker stop --force'): Promise<boolean> {
    return this.storage.write(async (sql) => {
      const row = await this.ownedRow(sql, claim, workerId)
      if (!row) return false
      await this.insertOutput(sql, row.id, outcome.output)
      await this.closeAttempt(sql, row, { ...outcome, error: `${reason} (not counted)` }, 'released')
      const now = outcome.finished_at
      await this.moveJob(sql, row, { state: 'pending', attempts: row.attempts - 1, run_at: now }, now)
      return true
    })
  }

  /**
   * Puts back the jobs of workers that are gone (killed, crashed, host lost): each is a failed attempt with
   * `last_error` "worker lost", eligible at once, and what is left of it on this host is killed first. Cheap when
   * nothing is lost: one read, no lock.
   */
  async recoverLostJobs(): Promise<number> {
    const [orphans, anyGone] = await this.storage.read(async (sql) => {
      const { alive, gone } = await this.judgeWorkers(sql)
      const processing = await sql.all<{ id: string; worker: string | null; slot: number | null; runs: number }>("SELECT id, worker, slot, runs FROM jobs WHERE state = 'processing'")
      return [processing.filter((j) => !j.worker || !alive.has(j.worker)), gone.length > 0] as const
    })
    if (orphans.length === 0 && !anyGone) return 0
    for (const job of orphans) if (job.worker) killOrphanedAttempt(this.slotNotePath(job.worker, job.slot ?? 0), job.id, job.runs)
    const removed: string[] = []
    const recovered = await this.storage.write(async (sql) => {
      const { alive, gone } = await this.judgeWorkers(sql) // again under the lock: a heartbeat may have come meanwhile
      for (const w of gone) {
        await sql.run('DELETE FROM workers WHERE id = ?', [w.id])
        removed.push(w.id)
      }
      let recovered = 0
      for (const { id } of orphans) {
        const row = await sql.get<JobRow>('SELECT * FROM jobs WHERE id = ?', [id])
        if (!row || row.state !== 'processing' || (row.worker && alive.has(row.worker))) continue
        await this.endAttempt(sql, row, { exit_code: null, signal: null, error: 'worker lost', output_tail: row.output_tail, finished_at: clockNow() }, true)
        recovered++
      }
      return recovered
    })
    for (const id of removed) this.removeWorkerFiles(id)
    if (recovered) await this.wakeWorker()
    return recovered
  }

  /**
   * Which registered workers are alive. On this host, by pid and start time. On another, by its heartbeat: gone once
   * it has stood still for a lease as this process's own clock measures it, so skew between the hosts' clocks does
   * not matter; a process that has not watched that long (a CLI call) goes by the heartbeat's age, allowing for skew.
   */
  private async judgeWorkers(sql: SqlSession): Promise<{ alive: Set<string>; gone: WorkerRow[] }> {
    const leaseMs = (await this.readConfig(sql)).lease * 1000
    const workers = await sql.all<WorkerRow>('SELECT * FROM workers')
    const now = clockNow()
    const watching = process.uptime() * 1000 // monotonic, as performance.now() is, without loading perf_hooks (see loadSqlJs)
    const isGone = (w: WorkerRow) => {
      if (w.host === HOST) return !isProcessAlive(w.pid, w.proc_start || undefined)
      let seen = this.heartbeatsSeen.get(w.id)
      if (!seen || seen.heartbeatAt !== w.heartbeat_at) this.heartbeatsSeen.set(w.id, (seen = { heartbeatAt: w.heartbeat_at, since: watching }))
      return watching - seen.since >= leaseMs || now - w.heartbeat_at >= leaseMs + CLOCK_SKEW_ALLOWANCE_MS
    }
    const gone = workers.filter(isGone)
    for (const id of this.heartbeatsSeen.keys()) if (!workers.some((w) => w.id === id)) this.heartbeatsSeen.delete(id)
    return { alive: new Set(workers.filter((w) => !gone.includes(w)).map((w) => w.id)), gone }
  }

  /** Closes the attempt's history row with what it counted as. */
  /** Ends the open attempt of a processing job; it started when the job did (claimIn sets both), so that is not read. */
  private async closeAttempt(sql: SqlSession, row: JobRow, outcome: AttemptOutcome, result: AttemptResult): Promise<void> {
    await sql.run('UPDATE attempts SET finished_at = ?, exit_code = ?, signal = ?, error = ?, duration_ms = ?, outcome = ? WHERE job_id = ? AND attempt = ? AND finished_at IS NULL',
      [outcome.finished_at, outcome.exit_code, outcome.signal, outcome.error, outcome.finished_at - (row.started_at ?? outcome.finished_at), result, row.id, row.runs])
  }

  /** An attempt that counts: completed on exit 0; else cancelled if a kill was asked for, else failed until its retry, or dead. */
  private async endAttempt(sql: SqlSession, row: JobRow, outcome: AttemptOutcome, lost = false): Promise<JobRow> {
    const now = outcome.finished_at
    const config = await this.readConfig(sql)
    let state: JobState = 'completed'
    let runAt = row.run_at
    if (outcome.exit_code !== 0 || outcome.error) {
      state = row.cancel ? 'cancelled' : row.attempts > row.max_retries ? 'dead' : 'failed'
      // a job whose worker was lost is not known to be at fault: it is retried at once
      if (state === 'failed') runAt = now + (lost ? 0 : Math.round(retryDelay(row.attempts, config.backoff_base, config.backoff_max) * 1000))
    }
    await this.closeAttempt(sql, row, outcome, lost ? 'lost' : state === 'completed' ? 'completed' : state === 'cancelled' ? 'cancelled' : 'failed')
    const error = outcome.error ?? `exit code ${outcome.exit_code}`
    const lastError = state === 'completed' ? null : state === 'cancelled' ? `cancelled: ${error}` : error
    return this.moveJob(sql, row, { state, run_at: runAt, finished_at: now, exit_code: outcome.exit_code, last_error: lastError, output_tail: outcome.output_tail }, now, config)
  }

  /**
   * The one place a job changes state. In the caller's transaction it keeps the ready set (`ready`), its queue's
   * count of processing jobs and its dependants in step: a job that ends releases or skips the jobs waiting for it,
   * and has its completion hooks marked due (`config`: the caller's, read in this transaction, saves reading it again).
   */
  private async moveJob(sql: SqlSession, row: JobRow, change: Partial<JobRow> & { state: JobState }, now: number, config?: Config): Promise<JobRow> {
    const next: JobRow = { ...row, ...change, updated_at: now }
    next.ready = isReady(next.state, next.run_at, now) ? 1 : 0
    if (next.state !== 'processing') Object.assign(next, { worker: null, cancel: null, slot: null })
    // Hooks are due from the end's commit; a retry drops those not run yet, with the end whose facts they were to get.
    if (!isTerminal(next.state)) next.hook_due = 0
    else if (!isTerminal(row.state)) next.hook_due = hooksFor(next, config ?? (await this.readConfig(sql))).length ? 1 : 0
    await sql.run(MOVE_JOB, [next.state, next.ready, next.attempts, next.runs, next.run_at, next.started_at, next.finished_at, now,
      next.exit_code, next.last_error, next.worker, next.output_tail, next.cancel, next.slot, next.hook_due, next.id])
    const running = Number(next.state === 'processing') - Number(row.state === 'processing')
    if (running) await sql.run('UPDATE queues SET running = CASE WHEN running + ? > 0 THEN running + ? ELSE 0 END WHERE name = ?', [running, running, row.queue])
    if (isTerminal(next.state) && !isTerminal(row.state)) await this.settleDependants(sql, next, now)
    return next
  }

  /** A parent ended: each blocked dependant becomes pending once nothing holds it, or skipped if it required this one. */
  private async settleDependants(sql: SqlSession, parent: JobRow, now: number): Promise<void> {
    if (parent.dependants === 0) return
    const children = await sql.all<{ id: string; required: number }>('SELECT child AS id, required FROM deps WHERE parent = ? ORDER BY child', [parent.id])
    for (const { id, required } of children) {
      const child = await sql.get<JobRow>("SELECT * FROM jobs WHERE id = ? AND state = 'blocked'", [id]) // read now: a cascade may have moved it
      if (!child) continue
      if (required && parent.state !== 'completed') {
        await this.moveJob(sql, child, { state: 'skipped', finished_at: now, last_error: `dependency ${parent.id} ${parent.state}` }, now)
      } else if (!(await this.parentsOf(sql, id)).some(isUnsatisfied)) {
        await this.moveJob(sql, child, { state: 'pending' }, now)
      }
    }
  }

  /**
   * `schedule add`: the timing and the job are checked as enqueue checks a job, and the job's cwd and environment
   * are captured now. The zone is stored (a later TZ does not move the schedule). A taken name needs `replace`.
   */
  async addSchedule(spec: ScheduleSpec): Promise<ScheduleInfo> {
    const { name } = spec
    checkQueueName(name, 'schedule name')
    if (spec.cron == null && spec.every == null) throw new UsageError("a schedule needs --cron EXPR (such as '0 2 * * *') or --every DUR (such as 10m)")
    if (spec.cron != null && spec.every != null) throw new UsageError('give either --cron or --every, not both')
    const job = spec.job as unknown as Record<string, unknown> | undefined
    for (const field of ['id', 'run_at', 'delay', 'after', 'after_any']) {
      if (job?.[field] != null) throw new UsageError(`a schedule's job takes no "${field}": each fire gets the id NAME:<fire time> and runs at once`)
    }
    const now = scheduleNow()
    const { id, run_at, after, after_any, ...template } = validateJobSpec(job, now)
    const Cron = await loadCroner()
    if (spec.every != null && spec.tz != null) throw new UsageError('--tz applies to --cron only: an --every schedule fires at the same interval in every zone')
    const tz = timeZone(spec.tz ?? Intl.DateTimeFormat().resolvedOptions().timeZone, spec.tz == null ? "the system's zone: set TZ, or give --tz" : '--tz')
    let row: ScheduleRow
    const base = { name, tz, spec: JSON.stringify(template), paused: 0, next_at: null, last_at: null, last_job: null, missed: 0, skipped: 0, created_at: Math.floor(now / 1000) * 1000 }
    if (spec.every != null) {
      const every = Math.round(parseDuration(spec.every, '--every'))
      if (every < MIN_EVERY_MS) throw new UsageError(`--every ${spec.every} is too often: use at least ${formatDuration(MIN_EVERY_MS)}`)
      if (every > 3_650 * 86_400_000) throw new UsageError(`--every ${spec.every} is too long: use at most 3650d`)
      row = { ...base, cron: null, every_ms: every }
    } else {
      row = { ...base, cron: checkCron(Cron, String(spec.cron), tz, now), every_ms: null }
    }
    row.next_at = fireTimes(Cron, row).after(now) ?? null
    await this.storage.write(async (sql) => {
      if (await sql.get('SELECT 1 FROM schedules WHERE name = ?', [name])) {
        if (!spec.replace) throw new UsageError(`a schedule named "${name}" already exists: choose another name, or --replace it`)
        await sql.run('DELETE FROM schedules WHERE name = ?', [name])
      }
      await sql.run('INSERT INTO schedules (name, cron, every_ms, tz, spec, paused, next_at, last_at, last_job, missed, skipped, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
        [row.name, row.cron, row.every_ms, row.tz, row.spec, row.paused, row.next_at, row.last_at, row.last_job, row.missed, row.skipped, row.created_at])
    })
    return toSchedule(row)
  }

  async listSchedules(): Promise<ScheduleInfo[]> {
    return (await this.storage.read((sql) => sql.all<ScheduleRow>('SELECT * FROM schedules ORDER BY name'))).map(toSchedule)
  }

  /** `schedule rm`: the schedule goes; the jobs it enqueued stay. */
  async removeSchedule(name: string): Promise<void> {
    await this.storage.write(async (sql) => {
      await this.scheduleRow(sql, name)
      await sql.run('DELETE FROM schedules WHERE name = ?', [name])
    })
  }

  /**
   * `schedule pause|resume`; false if it already was. While paused nothing fires and nothing counts as missed: a
   * resumed schedule fires next at its first time from now on.
   */
  async setSchedulePaused(name: string, paused: boolean): Promise<boolean> {
    const Cron = paused ? undefined : await loadCroner()
    return this.storage.write(async (sql) => {
      const row = await this.scheduleRow(sql, name)
      if (row.paused === Number(paused)) return false
      const next = Cron ? fireTimes(Cron, row).after(scheduleNow()) ?? null : row.next_at
      await sql.run('UPDATE schedules SET paused = ?, next_at = ? WHERE name = ?', [Number(paused), next, name])
      return true
    })
  }

  /** `schedule run`: one job now, `NAME:<now>`, whatever the schedule's time, pause and previous job. */
  async runSchedule(name: string): Promise<EnqueuedJob> {
    const now = scheduleNow()
    return this.storage.write(async (sql) => {
      const row = await this.scheduleRow(sql, name)
      const id = `${name}:${iso(now)}`
      if (await sql.get('SELECT 1 FROM jobs WHERE id = ?', [id])) throw new QueueError(`schedule ${name} already enqueued ${id}`)
      const [job] = await this.fire(sql, row, id)
      if (!job.duplicate) await sql.run('UPDATE schedules SET last_at = ?, last_job = ? WHERE name = ?', [now, id, name])
      return job
    })
  }

  private async scheduleRow(sql: SqlSession, name: string): Promise<ScheduleRow> {
    const row = await sql.get<ScheduleRow>('SELECT * FROM schedules WHERE name = ?', [name])
    if (!row) throw new QueueError(`no schedule named "${name}": see queuectl schedule ls`)
    return row
  }

  /** The schedule's job with this id, through enqueue's path (its queue, its unique key), in the caller's transaction. */
  private fire(sql: SqlSession, row: ScheduleRow, id: string): Promise<EnqueuedJob[]> {
    const now = clockNow()
    return this.jobInserter([{ ...(JSON.parse(row.spec) as JobTemplate), id, run_at: now, after: [], after_any: [] }], now, row.name)(sql)
  }

  /**
   * A worker's maintenance step: each due schedule enqueues one job, `NAME:<fire time>`, for its latest due time, in
   * one transaction with its move to the next time; due times before that one count as missed, and a fire while the
   * schedule's previous job is still active is skipped and counted. Workers (and hosts) that race for a fire time
   * find it moved on, or its job there, under the lock: it fires once. Returns when to look again (on clockNow()'s
   * clock): at the next fire time, or within SCHEDULE_CHECK_MS, as a schedule may be added meanwhile.
   */
  async fireDueSchedules(log?: (message: string) => void): Promise<number> {
    const now = scheduleNow()
    const due = await this.storage.read((sql) => sql.all<ScheduleRow>('SELECT * FROM schedules WHERE paused = 0 AND next_at <= ? ORDER BY next_at', [now]))
    if (due.length) {
      const Cron = await loadCroner()
      const plans = due.flatMap((row) => { // before the lock: catching up a long downtime of a frequent cron takes a while
        try {
          return [{ row, ...catchUp(fireTimes(Cron, row), row.next_at!, now) }]
        } catch (error) {
          // a row this croner cannot read (stored by another version?) must not stop the worker: it stays as it is
          if (!this.unreadableSchedules.has(row.name)) log?.(`schedule ${row.name} does not fire: ${(error as Error).message}`)
          this.unreadableSchedules.add(row.name)
          return []
        }
      })
      const said = await this.storage.write(async (sql) => {
        const notes: string[] = []
        for (const { row: seen, fireAt, missed, next } of plans) {
          const row = await sql.get<ScheduleRow>('SELECT * FROM schedules WHERE name = ?', [seen.name])
          if (!row || JSON.stringify(row) !== JSON.stringify(seen)) continue // fired meanwhile by another worker, or changed
          const id = `${row.name}:${iso(fireAt)}`
          let { last_at: lastAt, last_job: lastJob, skipped } = row
          const previous = await sql.get<{ id: string; state: JobState }>('SELECT id, state FROM jobs INDEXED BY jobs_schedule WHERE schedule = ? ORDER BY seq DESC LIMIT 1', [seen.name])
          if (await sql.get('SELECT 1 FROM jobs WHERE id = ?', [id])) {
            [lastAt, lastJob] = [fireAt, id] // a fire time runs once: whoever enqueued it, it is done
          } else if (previous && !isTerminal(previous.state)) {
            skipped++
            notes.push(`schedule ${seen.name}: skipped ${iso(fireAt)}: its previous job ${previous.id} is still ${previous.state}`)
          } else {
            const [job] = await this.fire(sql, row, id)
            if (job.duplicate) skipped++
            else [lastAt, lastJob] = [fireAt, id]
            notes.push(job.duplicate ? `schedule ${seen.name}: skipped ${iso(fireAt)}: job ${job.id} holds its unique key` : `schedule ${seen.name}: enqueued ${id}`)
          }
          if (missed) notes.push(`schedule ${seen.name}: missed ${missed} earlier fire time${missed === 1 ? '' : 's'}: only the latest fires after a downtime`)
          await sql.run('UPDATE schedules SET next_at = ?, last_at = ?, last_job = ?, missed = ?, skipped = ? WHERE name = ?',
            [next ?? null, lastAt, lastJob, row.missed + missed, skipped, seen.name])
        }
        return notes
      })
      for (const note of said) log?.(note)
    }
    const soonest = await this.storage.read((sql) => sql.get<{ t: number | null }>(NEXT_FIRE, [now]))
    return clockNow() + Math.min(SCHEDULE_CHECK_MS, (soonest?.t ?? Infinity) - now)
  }

  /** When the next not-yet-due job becomes due, or the next schedule fires (ms since epoch), if any. */
  async nextRunAt(): Promise<number | undefined> {
    const now = scheduleNow()
    const [job, fire] = await this.storage.read(async (sql) => [
      (await sql.get<{ t: number | null }>("SELECT min(run_at) AS t FROM jobs INDEXED BY jobs_waiting WHERE ready = 0 AND state IN ('pending', 'failed')"))?.t,
      (await sql.get<{ t: number | null }>(NEXT_FIRE, [now]))?.t,
    ])
    const times = [job, fire == null ? null : fire - now + clockNow()].filter((t): t is number => t != null)
    return times.length ? Math.min(...times) : undefined
  }

  /** Whether any job could still start here, now or later; `worker run --drain` stops when none can. */
  async hasWaitingJobs(workerId?: string): Promise<boolean> {
    const queues = workerId ? this.workerSlots.get(workerId)?.queues : undefined
    const rows = await this.storage.read((sql) => sql.all<{ queue: string }>(
      "SELECT DISTINCT j.queue FROM jobs j JOIN queues q ON q.name = j.queue WHERE j.state IN ('pending', 'failed', 'blocked') AND q.paused = 0"))
    return rows.some((r) => !queues || queues.includes(r.queue))
  }

  // Completion hooks. `hook_due` is 0 (nothing to run), 1 (due: in the index jobs_hooks, by end time) or 2 (taken:
  // the meta row `hook <job id>` holds `<worker id> <ms when taken>`). moveJob makes it 1 in the transaction that
  // ends the job; a worker takes it (2), runs the hooks, then clears both. A taking whose worker is gone, or that
  // has outlived hook_timeout and the grace by a lease (its worker lost track of it), is taken again: the hooks run
  // at least once across crashes. A retry, which moves the job out of its end, sets 0: its facts are gone.

  /**
   * Takes the hooks of one ended job for `workerId`: one whose taker is gone first, else the longest due. Idle, it
   * costs a read and no lock.
   */
  async takeHooks(workerId: string): Promise<HookRun | undefined> {
    const found = await this.storage.read(async (sql) => (await sql.get(HOOKS_DUE)) !== undefined || (await this.staleTakings(sql)).length > 0)
    if (!found) return undefined
    return this.storage.write(async (sql) => {
      for (const taking of await this.staleTakings(sql)) {
        const row = await sql.get<JobRow>('SELECT * FROM jobs WHERE id = ?', [taking.id])
        const run = row?.hook_due === 2 ? await this.takeHooksOf(sql, row, workerId, taking.at) : undefined
        if (run) return run
        if (row?.hook_due !== 2) await sql.run('DELETE FROM meta WHERE key = ?', [hookTaking(taking.id)]) // retried or removed meanwhile
      }
      for (let row; (row = await sql.get<JobRow>(HOOKS_DUE)); ) {
        const run = await this.takeHooksOf(sql, row, workerId)
        if (run) return run
      }
      return undefined
    })
  }

  /** Takes `row`'s hooks, or, when none applies any more (a global hook unset since it ended), marks them run. */
  private async takeHooksOf(sql: SqlSession, row: JobRow, workerId: string, tookOver?: number): Promise<HookRun | undefined> {
    const config = await this.readConfig(sql)
    const hooks = hooksFor(row, config)
    const now = clockNow()
    await sql.run('UPDATE jobs SET hook_due = ? WHERE id = ?', [hooks.length ? 2 : 0, row.id])
    if (!hooks.length) {
      await sql.run('DELETE FROM meta WHERE key = ?', [hookTaking(row.id)])
      return undefined
    }
    await sql.run('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value', [hookTaking(row.id), `${workerId} ${now}`])
    const env = await this.envOf(sql, row.env_hash)
    const attempt = await sql.get<{ signal: string | null; duration_ms: number | null }>('SELECT signal, duration_ms FROM attempts WHERE job_id = ? AND attempt = ?', [row.id, row.runs])
    return {
      job: toJob(row), hooks, env, attempt: row.runs, signal: attempt?.signal ?? null,
      duration_ms: attempt?.duration_ms ?? null, timeout: config.hook_timeout, taken_at: now, took_over: tookOver,
    }
  }

  /** The takings of hooks whose worker is gone, or that outlived their time limit by a lease. */
  private async staleTakings(sql: SqlSession): Promise<{ id: string; at: number }[]> {
    const rows = await sql.all<{ key: string; value: string }>(HOOK_TAKINGS)
    if (!rows.length) return []
    const config = await this.readConfig(sql)
    const { alive } = await this.judgeWorkers(sql)
    const oldest = clockNow() - (config.hook_timeout + config.lease) * 1000 - KILL_GRACE_MS
    return rows.map((r) => {
      const [worker, at] = r.value.split(' ')
      return { id: r.key.slice(hookTaking('').length), worker, at: Number(at) }
    }).filter((t) => !alive.has(t.worker) || t.at < oldest)
  }

  /** `run`'s hooks have run: nothing is due any more, unless the job was retried and ended again meanwhile. */
  async hooksRan(workerId: string, run: HookRun): Promise<void> {
    await this.storage.write(async (sql) => {
      const key = hookTaking(run.job.id)
      if ((await sql.get<{ value: string }>('SELECT value FROM meta WHERE key = ?', [key]))?.value !== `${workerId} ${run.taken_at}`) return // taken over
      await sql.run('DELETE FROM meta WHERE key = ?', [key])
      if ((await sql.get<{ hook_due: number }>('SELECT hook_due FROM jobs WHERE id = ?', [run.job.id]))?.hook_due === 2) {
        await sql.run('UPDATE jobs SET hook_due = 0 WHERE id = ?', [run.job.id])
      }
    })
  }
}

// Running a command: /bin/sh -c in its own process group, output straight to the job's log file.

export interface RunningJob {
  pid: number | undefined
  done: Promise<AttemptOutcome>
  /** Stops the job's whole process group at once (`worker stop --force`). */
  kill(): void
  /** `queuectl kill`: `signal` to the group, SIGKILL after the grace period. */
  cancel(signal: NodeJS.Signals, graceMs: number): void
  /** The attempt was taken over (this worker had been judged lost): stops its group, TERM then KILL, and its end is recorded nowhere. */
  killTakenOver(): void
}

function signalGroup(pid: number, signal: NodeJS.Signals | 0): boolean {
  try {
    process.kill(-pid, signal)
    return true
  } catch {
    return false
  }
}

/**
 * Whether any process of group `pgid` still runs. A zombie passes `kill(-pgid, 0)` and an orphan's reaper may never
 * reap it (a container's init), so /proc decides where it exists.
 */
function groupAlive(pgid: number): boolean {
  if (!signalGroup(pgid, 0)) return false
  let entries: string[]
  try {
    entries = readdirSync('/proc')
  } catch {
    return true
  }
  return entries.some((entry) => {
    const fields = /^\d+$/.test(entry) ? procStat(Number(entry)) : undefined
    return fields !== undefined && fields[2] === String(pgid) && fields[0] !== 'Z' && fields[0] !== 'X'
  })
}

/** SIGTERM to the group, SIGKILL to whatever is left after the grace period: no process of the job survives. */
async function terminateGroup(pid: number, graceMs = KILL_GRACE_MS, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  signalGroup(pid, signal)
  const deadline = clockNow() + graceMs
  while (clockNow() < deadline && groupAlive(pid)) await sleep(25)
  signalGroup(pid, 'SIGKILL')
  for (let i = 0; i < 40 && groupAlive(pid); i++) await sleep(25)
}

function formatSeconds(ms: number): string {
  return `${(ms / 1000).toFixed(3)}s`
}

/** Where a running attempt's process group is noted, so that whoever recovers the job can stop it. */
interface JobProcessNote {
  pid: number
  startTime: string
  attempt: number
  host: string
  jobId: string
}

/**
 * Every note is padded to this length (a longer one cannot be: ids have at most 128 bytes and host names 255), so a
 * slot rewrites its note in place, in one write, and never truncates it: on ext4 a file truncated to nothing and
 * written again is flushed at its close, ~0.25 ms a job here against ~0.01 ms.
 */
const NOTE_BYTES = 512

function writeProcessNote(path: string, note: JobProcessNote): void {
  try {
    const fd = openSync(path, fsConstants.O_WRONLY | fsConstants.O_CREAT, 0o600)
    try {
      writeSync(fd, `${`${note.pid} ${note.startTime} ${note.attempt} ${note.host} ${note.jobId}`.padEnd(NOTE_BYTES - 1)}\n`, 0)
    } finally {
      closeSync(fd)
    }
  } catch {
    // without the note a lost worker's job cannot be stopped by others; it still runs and is recorded
  }
}

function readProcessNote(path: string): JobProcessNote | undefined {
  try {
    const [pid, startTime, attempt, host, jobId] = readFileSync(path, 'utf8').trim().split(' ')
    return { pid: Number(pid), startTime: startTime ?? '', attempt: Number(attempt), host: host ?? '', jobId: jobId ?? '' }
  } catch {
    return undefined
  }
}

/** After a takeover the note belongs to the attempt that runs now: remove it only while it is this attempt's. */
function removeProcessNote(path: string, attempt: number): void {
  if (readProcessNote(path)?.attempt === attempt) rmQuiet(path)
}

/**
 * Stops what is left of an attempt whose worker died: its job runs in a process group of its own and outlives the
 * worker, and must not run beside its retry. Only on this host. The group is killed whether its leader still lives
 * or not (a group's id cannot be reused while any member lives); a leader alive with another start time is a reused
 * pid, which means the group is long gone.
 */
export function killOrphanedAttempt(notePath: string, jobId: string, attempt: number): void {
  const note = readProcessNote(notePath)
  if (!note || note.jobId !== jobId || note.attempt !== attempt || note.host !== HOST || !(note.pid > 0)) return
  if (isProcessAlive(note.pid) && !isProcessAlive(note.pid, note.startTime || undefined)) return
  signalGroup(note.pid, 'SIGKILL')
}

/**
 * The shell a command runs in waits for a line on fd 3 before it runs the command, and exits 125 unrun on end of
 * file; `set --` gives the command the empty argument list that `sh -c` would.
 */
const AFTER_NOTE = 'read -r _ <&3 || exit 125; exec 3<&-; eval "set --; $1"'

/**
 * Starts `command` under /bin/sh in a process group of its own and lets it run only once its process note is
 * written: a worker killed between the spawn and the note must not leave a command running that no note names,
 * which no recovery could stop. Its end of fd 3 closes with this process, so then the shell never runs it.
 */
function spawnNoted(command: string, options: { cwd: string; env: NodeJS.ProcessEnv; output: number | 'ignore' }, notePath: string, jobId: string, attempt: number): ChildProcess {
  const child = spawn('/bin/sh', ['-c', AFTER_NOTE, 'sh', command], {
    cwd: options.cwd, env: options.env, detached: true, stdio: ['ignore', options.output, options.output, 'pipe'],
  })
  const gate = child.stdio[3] as Writable | null
  if (child.pid) writeProcessNote(notePath, { pid: child.pid, startTime: processStartTime(child.pid), attempt, host: HOST, jobId })
  gate?.on('error', () => {}) // a shell that could not start has closed its end
  gate?.end('\n')
  return child
}

/** Errors of spawn that say the machine is short of processes, descriptors or memory, not that the job is wrong. */
const MACHINE_SPAWN_ERRORS = new Set(['EAGAIN', 'EMFILE', 'ENFILE', 'ENOMEM'])

/** A job's log, opened for appending: made if it is its first attempt, else its earlier attempts' file. */
function openLogFile(path: string): number {
  return openSync(path, 'a+', 0o600)
}

/**
 * Empty log files that a worker makes ahead, on libuv's threads while its jobs run, and links into place as a job
 * starts: on ext4, where many files were deleted lately, creating one costs ~0.6 ms and a link ~0.03 ms. They are
 * `wake/<worker id>.spare.<n>`, removed with the worker's other files (see Queue.removeWorkerFiles), also when it
 * died. A log that exists already (a retry appends to it) is opened as before, and the spare kept for the next job.
 */
class SpareLogs {
  private readonly ready: { path: string; fd: number }[] = []
  private made = 0
  private making: Promise<void> | undefined
  private closed = false

  constructor(private readonly prefix: string, private readonly keep: number) {
    this.make()
  }

  open(path: string): number {
    const spare = this.ready.shift()
    if (spare) {
      try {
        linkSync(spare.path, path) // never over a log: EEXIST for a job that has one
      } catch {
        this.ready.unshift(spare) // a log there already, or logs/ on another file system
        return openLogFile(path)
      }
      rmQuiet(spare.path)
    }
    this.make()
    return spare ? spare.fd : openLogFile(path)
  }

  /** Closes the spares, once the one being made is there: their files go with the worker's (removeWorkerFiles). */
  async close(): Promise<void> {
    this.closed = true
    await this.making
    for (const { fd } of this.ready.splice(0)) closeSync(fd)
  }

  private make(): void {
    if (this.making || this.closed || this.ready.length >= this.keep) return
    const path = `${this.prefix}.spare.${this.made++}`
    this.making = new Promise((resolveMade) => openLater(path, 'ax+', 0o600, (error, fd) => {
      this.making = undefined
      resolveMade()
      if (error) return // none made (no space, say): jobs open their logs as before
      this.ready.push({ path, fd })
      this.make()
    }))
  }
}

/**
 * Runs one attempt. Not tinyexec: the job must get exactly the environment it was enqueued with (tinyexec merges
 * the worker's own), its own process group, and file descriptors as stdout/stderr, so output lands on disk as it
 * is produced whatever its size. Never throws: anything that goes wrong is the attempt's outcome.
 */
export function startCommand(claim: ClaimedJob, paths: { log: string; note: string }, workerId: string, openLog = openLogFile): RunningJob {
  const { job, attempt } = claim
  const started = clockNow()
  let fd: number | undefined
  let outputStart: number
  try {
    makeDirectory(dirname(paths.log))
    fd = openLog(paths.log)
    writeSync(fd, `=== attempt ${attempt} · started ${iso(started)} · worker ${workerId} ===\n`)
    outputStart = fstatSync(fd).size
  } catch (error) {
    if (fd !== undefined) closeSync(fd)
    // the log is queuectl's own file, so this is never the job's fault: a full disk, no descriptors left, a read-only folder
    const machineFault = `cannot write the log ${paths.log}: ${(error as Error).message}`
    const done = Promise.resolve({ exit_code: null, signal: null, error: machineFault, output_tail: null, finished_at: clockNow(), machineFault })
    return { pid: undefined, done, kill: () => {}, cancel: () => {}, killTakenOver: () => {} }
  }
  const log = fd
  let child: ChildProcess | undefined
  let startError: string | undefined
  let machineFault: string | undefined
  const cannotStart = (error: Error) => {
    startError = `cannot start: ${error.message}`
    if (MACHINE_SPAWN_ERRORS.has((error as NodeJS.ErrnoException).code ?? '')) machineFault = startError
  }
  try {
    if (!statSync(job.cwd, { throwIfNoEntry: false })?.isDirectory()) throw new Error(`the directory ${job.cwd} does not exist`)
    const env = { ...claim.env, QUEUECTL_JOB_ID: job.id, QUEUECTL_ATTEMPT: String(attempt), QUEUECTL_QUEUE: job.queue, QUEUECTL_SLOT: String(claim.slot) }
    child = spawnNoted(job.command, { cwd: job.cwd, env, output: log }, paths.note, job.id, attempt)
  } catch (error) {
    child = undefined
    cannotStart(error as Error)
  }
  let timedOut = false
  let forced = false
  let takenOver = false
  let termination: Promise<void> | undefined
  let ended = false
  const done = new Promise<AttemptOutcome>((resolvePromise) => {
    const finish = (exitCode: number | null, signal: string | null, error: string | null) => {
      if (ended) return // a failed spawn may report both 'error' and 'exit'
      ended = true
      const finished = clockNow()
      let tail: Buffer = Buffer.alloc(0)
      try {
        const outputEnd = fstatSync(log).size
        const tailStart = Math.max(outputStart, outputEnd - OUTPUT_TAIL_BYTES)
        tail = Buffer.alloc(outputEnd - tailStart)
        readSync(log, tail, 0, tail.length, tailStart)
        const newline = outputEnd > outputStart && tail[tail.length - 1] !== 10 ? '\n' : ''
        // once taken over, the log goes on with the attempt that runs now: a footer here would end it
        if (!takenOver) writeSync(log, `${newline}=== attempt ${attempt} · ${error ?? 'exit code 0'} · ${formatSeconds(finished - started)} ===\n`)
      } catch {
        // the outcome matters more than the log's footer (a full disk must not lose it)
      } finally {
        closeSync(log) // the slot's note stays until its next job: rewriting one file is cheaper than a new one
      }
      resolvePromise({ exit_code: exitCode, signal, error, output_tail: tail.length ? tail.toString('utf8') : null, finished_at: finished, forced, machineFault, takenOver })
    }
    if (!child) return finish(null, null, startError!)
    const pid = child.pid
    const limit = claim.timeout > 0 ? setTimeout(() => {
      timedOut = true
      if (pid) termination = terminateGroup(pid)
    }, claim.timeout * 1000) : undefined
    child.on('error', (error) => {
      clearTimeout(limit)
      cannotStart(error)
      finish(null, null, startError!)
    })
    child.on('exit', (code, signal) => {
      clearTimeout(limit)
      const settle = async () => {
        // the main process is gone; what is left of its group (a background child) must not outlive the attempt
        if (pid && !termination && groupAlive(pid)) termination = terminateGroup(pid)
        await termination
        let error: string | null = null
        if (forced) error = 'stopped by worker stop --force'
        else if (timedOut) error = `timed out after ${claim.timeout}s`
        else if (signal) error = `killed by ${signal}`
        else if (code !== 0) error = `exit code ${code}`
        finish(signal ? null : code, signal, error)
      }
      void settle()
    })
  })
  return {
    pid: child?.pid,
    done,
    kill: () => {
      forced = true
      if (child?.pid) signalGroup(child.pid, 'SIGKILL')
    },
    cancel: (signal, graceMs) => {
      if (child?.pid && !termination) termination = terminateGroup(child.pid, graceMs, signal)
    },
    killTakenOver: () => {
      takenOver = true
      if (child?.pid) termination ??= terminateGroup(child.pid)
    },
  }
}

export interface RunningHook {
  /** how it ended: `exit code 0`, `timed out after 30s`, … */
  done: Promise<string>
  /** Stops its group at once (`worker stop --force`): it runs again on another worker. */
  kill(): void
}

/**
 * Runs one completion hook as `/bin/sh -c` in its own process group, stdin /dev/null, output appended to
 * logs/hooks.log between a header and a footer; killed (TERM, then KILL after the grace) after hook_timeout, and what
 * is left of its group once it exits is stopped too. Nothing is put into the command: the job's facts are in its
 * environment, over the job's own (its own hooks; they run in its directory) or the worker's (global ones, in the home).
 */
export function startHook(queue: Queue, run: HookRun, hook: Hook, workerId: string): RunningHook {
  const { job } = run
  const started = clockNow()
  const label = `hook ${hook.name}${hook.scope === 'global' ? ' (global)' : ''} of job ${job.id} (${job.state})`
  const notePath = queue.hookNotePath(job.id)
  let log: number | undefined
  try {
    makeDirectory(dirname(queue.hookLogPath()))
    log = openSync(queue.hookLogPath(), 'a+', 0o600)
  } catch {
    // the hook still runs: a failure is when it matters most; its output is lost
  }
  const write = (text: string) => {
    try {
      if (log !== undefined) writeSync(log, text)
    } catch {
      // a full disk loses the log's line, not the hook
    }
  }
  write(`=== ${label} · started ${iso(started)} · worker ${workerId} ===\n`)
  const facts: Record<string, string> = {
    QUEUECTL_EVENT: job.state, QUEUECTL_JOB_ID: job.id, QUEUECTL_QUEUE: job.queue, QUEUECTL_COMMAND: job.command,
    QUEUECTL_EXIT_CODE: job.exit_code === null ? '' : String(job.exit_code), QUEUECTL_SIGNAL: run.signal ?? '',
    QUEUECTL_ATTEMPT: String(run.attempt), QUEUECTL_LAST_ERROR: job.last_error ?? '', QUEUECTL_LOG: queue.logPath(job.id),
    QUEUECTL_DURATION_MS: run.duration_ms === null ? '' : String(run.duration_ms), QUEUECTL_HOME: queue.home,
  }
  const own = hook.scope === 'job'
  let child: ChildProcess | undefined
  let startError = ''
  try {
    const cwd = own && statSync(job.cwd, { throwIfNoEntry: false })?.isDirectory() ? job.cwd : queue.home
    child = spawnNoted(hook.command, { cwd, env: { ...(own ? run.env : process.env), ...facts }, output: log ?? 'ignore' }, notePath, job.id, run.taken_at)
  } catch (error) {
    child = undefined
    startError = `cannot start: ${(error as Error).message}`
  }
  const done = new Promise<string>((resolvePromise) => {
    let ended = false
    const finish = (result: string) => {
      if (ended) return // a failed spawn may report both 'error' and 'exit'
      ended = true
      try {
        const size = log === undefined ? 0 : fstatSync(log).size
        const last = Buffer.alloc(1)
        if (size > 0 && readSync(log!, last, 0, 1, size - 1) === 1 && last[0] !== 10) write('\n')
      } catch {
        // only the footer's line break is at stake
      }
      write(`=== ${label} · ${result} · ${formatSeconds(clockNow() - started)} ===\n`)
      if (log !== undefined) closeSync(log)
      removeProcessNote(notePath, run.taken_at)
      resolvePromise(result)
    }
    if (!child) return finish(startError)
    const pid = child.pid
    let timedOut = false
    let termination: Promise<void> | undefined
    const limit = setTimeout(() => {
      timedOut = true
      if (pid) termination = terminateGroup(pid)
    }, run.timeout * 1000)
    child.on('error', (error) => {
      clearTimeout(limit)
      finish(`cannot start: ${error.message}`)
    })
    child.on('exit', (code, signal) => {
      clearTimeout(limit)
      void (async () => {
        if (pid && !termination && groupAlive(pid)) termination = terminateGroup(pid)
        await termination
        finish(timedOut ? `timed out after ${formatDuration(run.timeout * 1000)}` : signal ? `killed by ${signal}` : `exit code ${code}`)
      })()
    })
  })
  return { done, kill: () => void (child?.pid && signalGroup(child.pid, 'SIGKILL')) }
}

/**
 * A worker's completion hooks, beside its slots (a hook holds none): `run()` takes and runs the due ones one at a
 * time until none is left, unless it is at it already. `settle()` takes no more and waits for the one running;
 * `kill()` stops that one at once, and leaves it taken, to be run again once this worker is gone.
 */
function hookRunner(queue: Queue, workerId: string, log: (message: string) => void) {
  let busy: Promise<void> | undefined
  let current: RunningHook | undefined
  let stopping: false | 'graceful' | 'force' = false
  const forced = () => stopping === 'force' // read after an await: a signal may have come meanwhile
  const runDue = async () => {
    for (let run; !stopping && (run = await queue.takeHooks(workerId)); ) {
      if (run.took_over !== undefined) {
        log(`running the hooks of job ${run.job.id} again: the worker that ran them is gone`)
        killOrphanedAttempt(queue.hookNotePath(run.job.id), run.job.id, run.took_over)
      }
      for (const hook of run.hooks) {
        if (forced()) return
        current = startHook(queue, run, hook, workerId)
        const result = await current.done
        current = undefined
        if (!forced() && result !== 'exit code 0') log(`hook ${hook.name} of job ${run.job.id}: ${result}`)
      }
      if (forced()) return
      for (let tries = 1; ; tries++) {
        try {
          await queue.hooksRan(workerId, run)
          break
        } catch (error) {
          if (stopping || tries >= 10) throw error // once this worker is gone, another one runs them again
          await sleep(Math.min(100 * tries, 2_000))
        }
      }
    }
  }
  const run = () => (busy ??= runDue().catch((error) => log(`completion hooks: ${(error as Error).message}`)).finally(() => (busy = undefined)))
  return {
    run,
    settle: () => {
      stopping ||= 'graceful'
      return busy
    },
    kill: () => {
      stopping = 'force'
      current?.kill()
    },
  }
}

// Worker: claim, run, record, repeat; woken by a poke when there is work for it, with a slow poll as a fallback.

/** An idle worker looks for work this often without being poked: for a poke that was lost, and other hosts' jobs. */
const IDLE_POLL_MS = Math.min(envNumber('QUEUECTL_IDLE_POLL', 1), 86_400) * 1000
const MAINTENANCE = { recoverMs: 1_000, retentionMs: 5_000 }

export interface WorkerOptions {
  /** Exit once no job is waiting (pending or failed), instead of waiting for more. */
  drain?: boolean
  /** Jobs run at once (default: config worker_concurrency). */
  concurrency?: number
  /** Serve only these queues (default: all). */
  queues?: string[]
  log?: (message: string) => void
}

/**
 * Runs jobs until stopped, up to `concurrency` at once. SIGTERM/SIGINT/SIGHUP: finish the running jobs, then exit.
 * A second one, or SIGUSR2: kill their process groups and put the jobs back without counting the attempts.
 * Slots that finish together are recorded, and their next jobs claimed, in one transaction. When the machine rather
 * than the job fails (the log cannot be written, spawn gets EAGAIN), the job goes back uncounted and the worker backs
 * off, doubling up to a minute, saying why in its log and in `status`.
 */
export async function runWorker(queue: Queue, options: WorkerOptions = {}): Promise<void> {
  const log = options.log ?? ((message: string) => process.stderr.write(`${iso(clockNow())} ${message}\n`))
  const slots = options.concurrency ?? (await queue.getConfig()).worker_concurrency
  // its wake file exists before it is registered, so whoever sees the worker can poke it (the watch comes below)
  let wakeFile: string | undefined
  const workerId = await queue.registerWorker({ slots, queues: options.queues }, (id) => {
    try {
      makeDirectory(join(queue.home, 'wake'))
      writeFileSync((wakeFile = queue.wakePath(id)), '', { mode: 0o600 })
    } catch {
      // no wake file (no space, say): watchWakeFile tries again, and the worker polls meanwhile
    }
  }).catch((error) => {
    if (wakeFile) rmQuiet(wakeFile)
    throw error
  })
  log(`worker ${workerId} (pid ${process.pid}) started on ${queue.storage.where}${slots > 1 ? ` with ${slots} slots` : ''}${options.queues ? ` for ${options.queues.join(', ')}` : ''}`)
  const spareLogs = new SpareLogs(queue.wakePath(workerId), slots)
  let stopping: false | 'graceful' | 'force' = false
  /** `output`: how far its log file is in the database (outputInDatabase), and the store under way */
  const running = new Map<number, { claim: ClaimedJob; run: RunningJob; cancelled?: true; output?: LogShipping }>()
  const ended: { claim: ClaimedJob; outcome: AttemptOutcome }[] = []
  let changed = true
  let poked = false // by a poke meant for this worker: a job is there for it, so it claims without looking first
  let backoffUntil = 0 // no claims before this while the machine fails
  let faultBackoffMs = 0
  const mayClaim = () => !stopping && clockNow() >= backoffUntil
  let wake = () => {}
  const hooks = hookRunner(queue, workerId, log)
  const stop = (force: boolean) => {
    const next = force || stopping ? 'force' : 'graceful'
    if (next !== stopping) {
      if (running.size === 0) log('stopping')
      else if (next === 'graceful') log('stopping after the current job (signal again to stop now)')
      else log('stopping now: the current job is killed and put back')
    }
    stopping = next
    if (stopping === 'force') {
      for (const { run } of running.values()) run.kill()
      hooks.kill()
    }
    wake()
  }
  const onStop = () => stop(false)
  const onForce = () => stop(true)
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(signal, onStop)
  process.on('SIGUSR2', onForce)
  // A kill asked for through the queue (`queuectl kill`, on any host) is carried out here, by the owner.
  const carryOutKills = async () => {
    if (running.size === 0) return
    for (const request of await queue.cancelRequests(workerId)) {
      const slot = [...running.values()].find((r) => r.claim.job.id === request.id && r.claim.attempt === request.attempt)
      if (!slot || slot.cancelled) continue
      slot.cancelled = true
      log(`killing job ${request.id} (attempt ${request.attempt}) with ${request.signal}, as asked`)
      slot.run.cancel(request.signal, request.graceMs)
    }
  }
  // Woken by a poke (Queue.wakeWorker, kill) on this worker's own wake file: a change elsewhere wakes nobody else.
  let watcher: FSWatcher | undefined
  const watchWakeFile = () => {
    const path = queue.wakePath(workerId)
    if (watcher && existsSync(path)) return
    watcher?.close()
    watcher = undefined
    try {
      makeDirectory(dirname(path))
      if (!existsSync(path)) writeFileSync(path, '', { mode: 0o600 })
      watcher = watch(path, () => {
        changed = true
        poked = true
        void carryOutKills().catch(() => undefined)
        if (mayClaim()) wake()
      })
    } catch {
      rmQuiet(path) // no inotify here (or none left): the idle poll still finds new jobs, and the heartbeat carries out kills
    }
  }
  watchWakeFile()
  // Also while long jobs run: a lost worker's job must not wait for these to finish to be put back, and this is
  // where a worker that was judged lost learns that its attempts were taken over.
  let beating = true
  let beat: NodeJS.Timeout | undefined
  let beatsInFlight: Promise<unknown> = Promise.resolve() // awaited at the stop: a late beat would register the worker again
  const track = (beat: Promise<unknown>) => void (beatsInFlight = Promise.all([beatsInFlight, beat]))
  const scheduleHeartbeat = (leaseSeconds: number) => {
    if (beating) (beat = setTimeout(() => track(heartbeat()), Math.min(HEARTBEAT_MS, (leaseSeconds * 1000) / 3))).unref()
  }
  const heartbeat = async () => {
    let lease = CONFIG_KEYS.lease.default
    try {
      lease = (await queue.getConfig()).lease
      const slotsNow = [...running.values()]
      const lost = await queue.heartbeat(workerId, slotsNow.map((slot) => slot.claim))
      for (const slot of slotsNow) if (lost.includes(slot.claim) && running.get(slot.claim.slot) === slot) slot.run.killTakenOver()
      watchWakeFile() // judged lost and cleaned up, then registered again
      await carryOutKills()
      await queue.recoverLostJobs()
    } catch (error) {
      log(`heartbeat failed: ${(error as Error).message}`)
    }
    scheduleHeartbeat(lease)
  }
  scheduleHeartbeat((await queue.getConfig()).lease)
  // Where output lives in the database, running jobs' output goes there every OUTPUT_STORE_MS, so that `logs` on
  // any host follows it; the rest goes with the attempt's end.
  let storing = false
  const storeOutput = async () => {
    if (storing) return
    const parts = [...running.values()].flatMap(({ claim, output }) => {
      if (!output || output.ended) return []
      const chunks = logChunks(claim, output, OUTPUT_STORE_MAX)
      return chunks.length ? [{ claim, output, chunks }] : []
    })
    if (parts.length === 0) return
    const stored = queue.storeOutput(workerId, parts)
    for (const part of parts) part.output.storing = stored.then(() => void (part.output.shipped += byteCount(part.chunks)), () => undefined)
    storing = true
    await stored.catch((error) => log(`cannot store the output of running jobs (${(error as Error).message}); trying again`))
    storing = false
  }
  const outputTimer = queue.storage.outputInDatabase ? setInterval(() => void storeOutput(), OUTPUT_STORE_MS) : undefined
  outputTimer?.unref()
  queue.storage.listen?.(() => {
    changed = true
    void carryOutKills().catch(() => undefined)
    if (mayClaim()) wake()
  }, log)
  const start = (claim: ClaimedJob) => {
    if (stopping) return void ended.push({ claim, outcome: { exit_code: null, signal: null, error: null, output_tail: null, finished_at: clockNow(), forced: true, notStarted: true } })
    const path = queue.logPath(claim.job.id)
    const output: LogShipping | undefined = queue.storage.outputInDatabase ? { path, from: fileSize(path), shipped: fileSize(path), storing: Promise.resolve() } : undefined
    const run = startCommand(claim, { log: path, note: queue.slotNotePath(workerId, claim.slot) }, workerId, (log) => spareLogs.open(log))
    const slot = { claim, run, output }
    running.set(claim.slot, slot)
    if (faultBackoffMs && run.pid !== undefined) {
      faultBackoffMs = 0
      log('jobs start again: no longer backing off')
      void queue.setWorkerNote(workerId, null).catch((error) => log(`cannot clear this worker's note: ${error.message}`))
    }
    void run.done.then(async (outcome) => {
      if (output) {
        output.ended = true // from here its output is stored only by this end (two stores from one position would skip bytes)
        await output.storing
        // a burst at the end goes in pieces, so that no transaction (nor this process) holds more than a few MiB of it
        while (!outcome.takenOver && fileSize(output.path) - output.shipped > OUTPUT_STORE_MAX) {
          const chunks = logChunks(claim, output, OUTPUT_STORE_MAX)
          if (!(await queue.storeOutput(workerId, [{ claim, chunks }]).then(() => true, () => false))) break
          output.shipped += byteCount(chunks)
        }
        outcome.output = logChunks(claim, output)
      }
      running.delete(claim.slot)
      if (outcome.takenOver) {
        log(`${takenOver(claim)}: killed it`)
        track(queue.heartbeat(workerId).catch(() => undefined)) // registers again
      } else ended.push({ claim, outcome })
      wake()
    })
  }
  const freeSlots = () => Array.from({ length: slots }, (_, slot) => slot).filter((slot) => !running.has(slot))
  let lastRecovery = 0
  let lastRetention = 0
  let schedulesDue = 0
  let failures = 0
  try {
    for (;;) {
      try {
        let moved = false // jobs ended or were claimed this turn: work may be left for another worker
        if (ended.length) {
          moved = true
          const batch = ended.splice(0)
          const fault = batch.find((end) => end.outcome.machineFault && !end.outcome.forced)?.outcome.machineFault
          if (fault && !stopping) {
            faultBackoffMs = Math.min(faultBackoffMs * 2 || MACHINE_FAULT_BACKOFF_MS.first, MACHINE_FAULT_BACKOFF_MS.max)
            backoffUntil = clockNow() + faultBackoffMs
          }
          for (const claim of await recordEnds(queue, workerId, batch, mayClaim() ? freeSlots() : [], log)) start(claim)
          if (fault && !stopping) {
            const backoff = `backing off ${formatDuration(faultBackoffMs)}`
            for (const end of batch) if (end.outcome.machineFault) log(`job ${end.claim.job.id} is back to pending, not counted: ${end.outcome.machineFault}; ${backoff}`)
            await queue.setWorkerNote(workerId, `${backoff}: ${fault}`)
          }
        }
        if (stopping && running.size === 0 && ended.length === 0) break
        if (mayClaim() && ended.length === 0) {
          changed = false
          for (const slot of freeSlots()) {
            const claim = await queue.claimNextJob(workerId, slot, { look: !poked })
            poked = false
            if (!claim) break
            start(claim)
            moved = true
          }
        }
        if (moved) await queue.wakeWorker(workerId)
        // After the claims, so that a poke's job starts first; what a recovery puts back pokes a worker in turn.
        const now = clockNow()
        if (!stopping && now - lastRecovery >= MAINTENANCE.recoverMs) {
          lastRecovery = now
          const recovered = await queue.recoverLostJobs()
          if (recovered) log(`recovered ${recovered} job(s) of lost workers`)
          void hooks.run()
        }
        if (!stopping && now - lastRetention >= MAINTENANCE.retentionMs) {
          lastRetention = now
          await queue.applyRetention()
        }
        if (!stopping && now >= schedulesDue) {
          schedulesDue = await queue.fireDueSchedules(log)
          changed = true // a fire may have enqueued a job for this worker
        }
        failures = 0
        if (ended.length) continue
        if (options.drain && running.size === 0 && !(await queue.hasWaitingJobs(workerId))) {
          await hooks.run() // the hooks of the jobs it ran, and any others due
          break
        }
        if (changed && mayClaim() && freeSlots().length) continue
        // every slot busy: no job's due time matters here, only an end, a schedule's fire, a poke or the poll
        const next = freeSlots().length ? await queue.nextRunAt() : schedulesDue
        const idleMs = Math.max(5, !stopping && !mayClaim() ? backoffUntil - clockNow() : Math.min(next ? next - clockNow() : IDLE_POLL_MS, IDLE_POLL_MS))
        await new Promise<void>((resolveWait) => {
          const timer = setTimeout(() => wake(), idleMs)
          wake = () => {
            clearTimeout(timer)
            wake = () => {}
            resolveWait()
          }
          if (ended.length || (stopping && running.size === 0) || (mayClaim() && changed && freeSlots().length)) wake()
        })
        await new Promise((resolveTurn) => setImmediate(resolveTurn)) // a turn of the event loop: children's exits are reaped there
      } catch (error) {
        // a server that went away is waited for, however long; anything else 30 times in a row is this worker's end
        const unreachable = error instanceof DatabaseUnreachable
        if (++failures > 30 && !unreachable) throw error
        log(`error: ${(error as Error).message}; retrying`)
        await sleep(Math.min(100 * failures, unreachable ? 5_000 : 2_000))
      }
    }
  } finally {
    beating = false
    clearTimeout(beat)
    await beatsInFlight
    clearInterval(outputTimer)
    watcher?.close()
    await spareLogs.close()
    queue.removeWorkerFiles(workerId)
    for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.off(signal, onStop)
    process.off('SIGUSR2', onForce)
    await hooks.settle()
    await queue.unregisterWorker(workerId).catch(() => undefined)
    await queue.wakeWorker(workerId) // the jobs a forced stop put back go to another worker at once
    log(`worker ${workerId} stopped`)
  }
}

/** A running attempt's log file, and how much of what it appended since `from` is in the database. */
interface LogShipping {
  path: string
  from: number
  shipped: number
  storing: Promise<void>
  /** the attempt ended: what is left is stored with its end */
  ended?: boolean
}
const OUTPUT_STORE_MS = 250
const OUTPUT_STORE_MAX = 4 << 20
const OUTPUT_CHUNK = 1 << 20

/** What the attempt's log file gained since it was last stored (at most `limit` bytes), placed in the job's output. */
function logChunks(claim: ClaimedJob, output: LogShipping, limit = Number.MAX_SAFE_INTEGER): OutputChunk[] {
  let fd: number
  try {
    fd = openSync(output.path, 'r')
  } catch {
    return [] // never written: the machine failed
  }
  try {
    const end = Math.min(fstatSync(fd).size, output.shipped + limit)
    const chunks: OutputChunk[] = []
    for (let at = output.shipped; at < end; at += OUTPUT_CHUNK) {
      const data = Buffer.alloc(Math.min(OUTPUT_CHUNK, end - at))
      readSync(fd, data, 0, data.length, at)
      chunks.push({ pos: (claim.output_at ?? 0) + at - output.from, data })
    }
    return chunks
  } finally {
    closeSync(fd)
  }
}

const byteCount = (chunks: OutputChunk[]) => chunks.reduce((n, chunk) => n + chunk.data.length, 0)
const fileSize = (path: string) => statSync(path, { throwIfNoEntry: false })?.size ?? 0

const takenOver = (claim: ClaimedJob) => `attempt ${claim.attempt} of job ${claim.job.id} was taken over (recovered as lost)`

/**
 * The outcomes must reach the database: while this worker lives nobody else will put its jobs back. Attempts that
 * count are recorded together with the claims of `claimFor`'s slots; those that count not against the job
 * (force-stopped, never started, or the machine failed) put it back to pending. Returns the jobs claimed.
 */
async function recordEnds(queue: Queue, workerId: string, ends: { claim: ClaimedJob; outcome: AttemptOutcome }[], claimFor: number[], log: (m: string) => void): Promise<ClaimedJob[]> {
  const released = (outcome: AttemptOutcome) =>
    outcome.notStarted ? 'not started: the worker was stopping' : outcome.forced ? 'stopped by worker stop --force' : outcome.machineFault
  const finished = ends.filter((end) => released(end.outcome) === undefined)
  let claimed: ClaimedJob[] = []
  for (let tries = 1; finished.length || claimFor.length; tries++) {
    try {
      const { jobs, next } = await queue.finishAttempts(workerId, finished, claimFor)
      jobs.forEach((job, i) => job || log(`${takenOver(finished[i].claim)}: its end was not recorded`))
      claimed = next
      break
    } catch (error) {
      log(`cannot record the end of job ${finished.map((end) => end.claim.job.id).join(', ')} (${(error as Error).message}); retrying`)
      await sleep(Math.min(100 * tries, 5_000))
    }
  }
  for (const { claim, outcome } of ends) {
    const reason = released(outcome)
    if (reason === undefined) continue
    for (let tries = 1; ; tries++) {
      try {
        if (!(await queue.releaseJob(claim, workerId, outcome, reason))) log(`${takenOver(claim)}: its end was not recorded`)
        break
      } catch (error) {
        if (outcome.forced && tries >= 3) break // once this worker is gone its job is recovered as lost
        log(`cannot put job ${claim.job.id} back (${(error as Error).message}); retrying`)
        await sleep(Math.min(100 * tries, 5_000))
      }
    }
  }
  return claimed
}

/** This script's own path, to re-invoke it as a detached worker (works under tsx and as the built bin). */
function scriptPath(): string {
  return typeof __filename === 'string' ? __filename : fileURLToPath(import.meta.url)
}

/** Node flags to pass on (e.g. tsx's loader), without the ones that would make a worker debug, watch or test. */
function inheritedNodeArgs(): string[] {
  const dropped = /^--(inspect|watch|test|eval|print|input-type)|^-[ep]$/
  return process.execArgv.filter((arg) => !dropped.test(arg))
}

/** The workers registered from this host: the ones whose pids mean something here. */
function localWorkers(queue: Queue): Promise<WorkerRow[]> {
  return queue.storage.read((sql) => sql.all<WorkerRow>('SELECT * FROM workers WHERE host = ?', [HOST]))
}

/**
 * Starts `count` detached `worker run` processes and waits until each has registered. Returns their pids. The wait
 * grows with the count: the workers start at once, sharing the machine's cores.
 */
export async function startWorkers(queue: Queue, count: number, options: { concurrency?: number; queues?: string[]; timeoutMs?: number } = {}): Promise<number[]> {
  const { timeoutMs = 15_000 + 2_000 * count } = options
  const flags = [...(options.concurrency ? ['--concurrency', String(options.concurrency)] : []), ...(options.queues ? ['--queue', options.queues.join(',')] : [])]
  makeDirectory(join(queue.home, 'logs'))
  const out = openSync(join(queue.home, 'logs', 'worker.log'), 'a', 0o600)
  const { x } = await import('tinyexec') // loaded only here: every other command starts faster without it
  const pids: number[] = []
  try {
    for (let i = 0; i < count; i++) {
      // persist = detached: a new session, so closing the terminal that ran `worker start` does not stop it
      const worker = x(process.execPath, [...inheritedNodeArgs(), scriptPath(), 'worker', 'run', '--home', queue.home, ...flags], {
        persist: true,
        nodePath: false,
        nodeOptions: { stdio: ['ignore', out, out], cwd: process.cwd() },
      })
      worker.process?.unref()
      if (worker.pid) pids.push(worker.pid)
    }
  } finally {
    closeSync(out)
  }
  const deadline = clockNow() + timeoutMs
  for (;;) {
    const registered = new Set((await localWorkers(queue)).map((w) => w.pid))
    const missing = pids.filter((pid) => !registered.has(pid))
    if (missing.length === 0) return pids
    const exited = missing.filter((pid) => !isProcessAlive(pid))
    if (exited.length > 0) throw new QueueError(`worker(s) ${exited.join(', ')} exited at start; see ${join(queue.home, 'logs', 'worker.log')}`)
    if (clockNow() > deadline) throw new QueueError(`worker(s) ${missing.join(', ')} did not start within ${timeoutMs / 1000} s; see ${join(queue.home, 'logs', 'worker.log')}`)
    await sleep(25)
  }
}

/** Signals every live worker of this queue on this host, then waits for them to exit. Returns how many stopped. */
export async function stopWorkers(queue: Queue, options: { force?: boolean; timeoutMs?: number; onWait?: (left: number) => void } = {}): Promise<{ stopped: number; left: number }> {
  await queue.recoverLostJobs()
  const workers = (await localWorkers(queue)).filter((w) => isProcessAlive(w.pid, w.proc_start || undefined))
  for (const w of workers) {
    try {
      process.kill(w.pid, options.force ? 'SIGUSR2' : 'SIGTERM')
    } catch {
      // exited meanwhile
    }
  }
  const deadline = options.timeoutMs === undefined ? Infinity : clockNow() + options.timeoutMs
  let lastNotice = clockNow()
  for (;;) {
    const left = workers.filter((w) => isProcessAlive(w.pid, w.proc_start || undefined))
    if (left.length === 0 || clockNow() > deadline) {
      await queue.recoverLostJobs()
      return { stopped: workers.length - left.length, left: left.length }
    }
    if (clockNow() - lastNotice > 3_000) {
      lastNotice = clockNow()
      options.onWait?.(left.length)
    }
    await sleep(25)
  }
}

// Dashboard: `queuectl dashboard` — one node:http server: an inline page, a JSON API under /api, and /metrics.
//
// Security model. Every request, on loopback too, must carry the token: other users of the host can reach a
// loopback port (directly, or through someone's nginx proxy_pass or ssh -L forward), and the API hands out
// commands, environments and output, and starts jobs. Scripts send `Authorization: Bearer`; the page is opened
// once as `/?token=` and gets the token as an HttpOnly, SameSite=Strict cookie, then drops it from the address
// bar. A cookie is sent by the browser on its own, so a cookie-authenticated POST must also prove it comes from
// the page: `X-Queuectl: 1` (a custom header forces a CORS preflight, which we never grant), an Origin, if any,
// that matches Host, and no Sec-Fetch-Site other than same-origin (cookies ignore ports: a page on another port
// of the same host is "same-site"). On a loopback bind every request must also name a loopback Host, so a page
// whose DNS name is rebound to 127.0.0.1 is refused even before its lack of a cookie is.
// The page builds its DOM with textContent only, and a CSP with a per-response nonce blocks any other script.

const DASHBOARD_LOG_CHUNK = 1024 * 1024 // bytes per /log response; the page asks again while there is more
const DASHBOARD_BODY_LIMIT = 64 * 1024
const DASHBOARD_BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600] // seconds
const ENQUEUE_KEYS = ['command', 'id', 'priority', 'max_retries', 'timeout', 'delay'] as const
const KILL_KEYS = ['signal', 'grace'] as const
// Safe as it is in a URL and a cookie; 16 characters or more, so that it cannot be guessed by trying.
const DASHBOARD_TOKEN = /^[A-Za-z0-9._~-]{16,512}$/
const DASHBOARD_TOKEN_RULE = '16 to 512 characters from A-Z a-z 0-9 . _ ~ -'

class HttpError extends Error {
  constructor(readonly status: number, message: string, readonly headers: Record<string, string> = {}) {
    super(message)
  }
}

const isLoopbackName = (host: string) =>
  /^(localhost|.+\.localhost|127(\.\d{1,3}){3}|::1|\[::1\]|::ffff:127(\.\d{1,3}){3})$/i.test(host)

// Compare hashes so neither the length nor the content of the token leaks through timing.
const sameSecret = (a: string, b: string) =>
  timingSafeEqual(createHash('sha256').update(a).digest(), createHash('sha256').update(b).digest())

/** The dashboard token chosen by the user: --token, else $QUEUECTL_DASHBOARD_TOKEN (which keeps it out of `ps`). */
function givenDashboardToken(flag: string | undefined): string | undefined {
  const [source, token] = flag !== undefined ? ['--token', flag] : ['QUEUECTL_DASHBOARD_TOKEN', process.env.QUEUECTL_DASHBOARD_TOKEN || undefined]
  if (token !== undefined && !DASHBOARD_TOKEN.test(token)) throw new UsageError(`${source} must be ${DASHBOARD_TOKEN_RULE} (leave it out to use the generated one)`)
  return token
}

/** The dashboard token generated on first use into `<home>/dashboard.token` (mode 0600), and reused from then on. */
function storedDashboardToken(home: string): string {
  const path = join(home, 'dashboard.token')
  if (!existsSync(path)) {
    // Written whole under a temporary name, then linked: a dashboard starting at the same moment either makes
    // the file or finds the other's, never an empty one.
    const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}`
    try {
      const fd = openSync(tmp, 'wx', 0o600)
      try {
        writeSync(fd, `${randomBytes(24).toString('base64url')}\n`)
        fsyncSync(fd)
      } finally {
        closeSync(fd)
      }
      linkSync(tmp, path)
      fsyncDirectory(home)
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error
    } finally {
      rmQuiet(tmp)
    }
  }
  const stored = readFileSync(path, 'utf8').trim()
  if (!DASHBOARD_TOKEN.test(stored)) throw new QueueError(`${path} does not hold a dashboard token (${DASHBOARD_TOKEN_RULE}): delete it, and the next start makes a new one`)
  return stored
}

export async function serveDashboard(
  queue: Queue,
  opts: { port: number; host: string; token: string; allowEnqueue: boolean },
): Promise<Server> {
  if (!DASHBOARD_TOKEN.test(opts.token)) throw new UsageError(`dashboard: the token must be ${DASHBOARD_TOKEN_RULE}`)
  const { createServer } = await import('node:http')
  const server = createServer((req, res) => {
    handleDashboardRequest(queue, opts, req, res).catch((error: unknown) => {
      const status = error instanceof HttpError ? error.status
        : error instanceof UsageError ? 400
        : error instanceof QueueError ? 409 : 500
      const message = error instanceof Error ? error.message.split('\n')[0] : String(error)
      if (status === 500) process.stderr.write(`queuectl dashboard: ${req.method} ${req.url}: ${message}\n`)
      if (res.headersSent) return void res.destroy()
      sendJson(res, status, { error: message }, error instanceof HttpError ? error.headers : {})
    })
  })
  return new Promise<Server>((resolvePromise, reject) => {
    server.once('error', reject)
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject)
      resolvePromise(server)
    })
  })
}

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  send(res, status, JSON.stringify(body), { 'Content-Type': 'application/json; charset=utf-8', ...headers })
}

function send(res: ServerResponse, status: number, body: string | Buffer, headers: Record<string, string>): void {
  res.writeHead(status, {
    'Cache-Control': 'no-store',
    'X-Content-Type-Options': 'nosniff',
    'Referrer-Policy': 'no-referrer', // the page URL may hold ?token=
    'X-Frame-Options': 'DENY',
    'Content-Length': String(Buffer.byteLength(body)),
    ...headers,
  })
  res.end(body)
}

// Cookies are per host, not per port: the port in the name keeps two dashboards on one host apart.
const tokenCookie = (req: IncomingMessage) => `queuectl-${req.socket.localPort}`

function cookie(req: IncomingMessage, name: string): string | undefined {
  for (const pair of (req.headers.cookie ?? '').split(';')) {
    const eq = pair.indexOf('=')
    if (eq !== -1 && pair.slice(0, eq).trim() === name) return pair.slice(eq + 1).trim()
  }
  return undefined
}

/** Refuses a request the security model above does not allow; says how it proved it knows the token. */
function authorize(opts: { host: string; token: string }, req: IncomingMessage, url: URL): 'bearer' | 'url' | 'cookie' {
  const bearer = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '')?.[1]
  const inUrl = req.method === 'GET' && url.pathname === '/' ? url.searchParams.get('token') ?? undefined : undefined
  const inCookie = cookie(req, tokenCookie(req))
  // A freshly opened URL beats an older cookie (the token may have changed since).
  const [how, given] = bearer !== undefined ? ['bearer', bearer] as const
    : inUrl !== undefined ? ['url', inUrl] as const
    : ['cookie', inCookie] as const
  if (given === undefined || !sameSecret(given, opts.token)) {
    throw new HttpError(401, 'a token is required: open the URL printed by `queuectl dashboard` (…/?token=…), ' +
      'or send Authorization: Bearer <token>', {
      'WWW-Authenticate': 'Bearer realm="queuectl"',
    })
  }
  const host = req.headers.host ?? ''
  if (isLoopbackName(opts.host)) {
    const name = host.startsWith('[') ? host.slice(0, host.indexOf(']') + 1) : host.replace(/:\d+$/, '')
    if (!isLoopbackName(name)) throw new HttpError(403, `unexpected Host header ${JSON.stringify(host)}`)
  }
  if (how === 'cookie' && req.method !== 'GET') {
    if (req.headers['x-queuectl'] !== '1') throw new HttpError(403, 'a POST needs the header X-Queuectl: 1')
    const origin = req.headers.origin
    if (origin !== undefined && origin !== `http://${host}` && origin !== `https://${host}`) {
      throw new HttpError(403, `cross-origin POST from ${origin}`)
    }
    const site = req.headers['sec-fetch-site']
    if (site !== undefined && site !== 'same-origin') throw new HttpError(403, `${site} POST`)
  }
  return how
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    req.on('data', (chunk: Buffer) => {
      size += chunk.length
      if (size > DASHBOARD_BODY_LIMIT) {
        // Answer at once and close; the rest of the body is read and dropped, not buffered.
        reject(new HttpError(413, `request body over ${DASHBOARD_BODY_LIMIT} bytes`, { Connection: 'close' }))
      } else chunks.push(chunk)
    })
    req.on('end', () => resolvePromise(Buffer.concat(chunks).toString('utf8')))
    req.on('error', reject)
  })
}

/** The request's body as a JSON object with only `allowed` keys; an empty body is `{}` when `optional`. */
async function readJsonObject(req: IncomingMessage, allowed: readonly string[], optional = false): Promise<Record<string, unknown>> {
  const text = await readBody(req)
  if (optional && text.trim() === '') return {}
  let body: unknown
  try {
    body = JSON.parse(text)
  } catch {
    body = undefined
  }
  if (!body || typeof body !== 'object' || Array.isArray(body)) throw new HttpError(400, 'the body must be a JSON object')
  const unknown = Object.keys(body).filter((k) => !allowed.includes(k))
  if (unknown.length) throw new HttpError(400, `unknown key ${unknown[0]}: allowed are ${allowed.join(', ')}`)
  return body as Record<string, unknown>
}

/** `{signal, grace}` of a kill, read as `kill --signal --grace` reads them. */
function killOptions(body: Record<string, unknown>): { signal?: NodeJS.Signals; graceMs?: number } {
  const { signal, grace } = body
  if (signal !== undefined && typeof signal !== 'string') throw new HttpError(400, 'signal must be a signal name such as TERM, INT or KILL')
  if (grace !== undefined && typeof grace !== 'string' && typeof grace !== 'number') {
    throw new HttpError(400, 'grace must be a duration such as 30s, 5m or a number of seconds')
  }
  return {
    signal: signal === undefined ? undefined : parseSignal(signal),
    graceMs: grace === undefined ? undefined : parseDuration(grace),
  }
}

function intParam(url: URL, name: string, fallback: number, min: number, max: number): number {
  const text = url.searchParams.get(name)
  if (text === null || text === '') return fallback
  const n = Number(text)
  if (!Number.isInteger(n) || n < min || n > max) throw new HttpError(400, `${name} must be a whole number from ${min} to ${max}`)
  return n
}

function stateParam(url: URL): JobState | undefined {
  const state = url.searchParams.get('state') || undefined
  if (state !== undefined && !(JOB_STATES as readonly string[]).includes(state)) {
    throw new HttpError(400, `unknown state ${JSON.stringify(state)}: one of ${JOB_STATES.join(', ')}`)
  }
  return state as JobState | undefined
}

// Bytes of the job's log from `offset` (or its last `tail` bytes, so a huge log opens at its end); the page
// decodes them with a streaming TextDecoder, so a UTF-8 character split between two responses still shows right.
function readLog(path: string, offset: number, tail?: number): { data: Buffer; size: number; start: number } {
  let fd: number
  try {
    fd = openSync(path, 'r')
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { data: Buffer.alloc(0), size: 0, start: 0 }
    throw error
  }
  try {
    const size = fstatSync(fd).size
    const start = tail === undefined ? offset : Math.max(0, size - tail)
    const data = Buffer.alloc(Math.max(0, Math.min(DASHBOARD_LOG_CHUNK, size - start)))
    const read = data.length ? readSync(fd, data, 0, data.length, start) : 0
    return { data: data.subarray(0, read), size, start }
  } finally {
    closeSync(fd)
  }
}

async function metricsText(queue: Queue): Promise<string> {
  const { workers, counts } = await queue.status()
  const stats = await queue.stats()
  const cols = DASHBOARD_BUCKETS.map((le, i) => `sum(CASE WHEN duration_ms <= ${le * 1000} THEN 1 ELSE 0 END) AS b${i}`).join(', ')
  const row = await queue.storage.read((sql) => sql.get<Record<string, number | null>>(
    `SELECT count(*) AS n, coalesce(sum(duration_ms), 0) AS sum_ms, ${cols} FROM attempts WHERE duration_ms IS NOT NULL AND ${COUNTED_ATTEMPT}`,
  ))
  const n = row?.n ?? 0
  const lines = [
    '# HELP queuectl_jobs Jobs in the queue, by state.',
    '# TYPE queuectl_jobs gauge',
    ...JOB_STATES.map((s) => `queuectl_jobs{state="${s}"} ${counts[s] ?? 0}`),
    '# HELP queuectl_workers Live workers.',
    '# TYPE queuectl_workers gauge',
    `queuectl_workers ${workers.length}`,
    '# HELP queuectl_attempts_total Finished attempts of the jobs still stored (purge removes them), by outcome; released ones were not counted.',
    '# TYPE queuectl_attempts_total counter',
    ...ATTEMPT_RESULTS.map((end) => `queuectl_attempts_total{outcome="${end}"} ${stats.attempts[end]}`),
    '# HELP queuectl_retries_total Failed or lost attempts that their job followed with another run.',
    '# TYPE queuectl_retries_total counter',
    `queuectl_retries_total ${stats.retries}`,
    '# HELP queuectl_attempt_duration_seconds Duration of finished attempts that counted (not released ones).',
    '# TYPE queuectl_attempt_duration_seconds histogram',
    ...DASHBOARD_BUCKETS.map((le, i) => `queuectl_attempt_duration_seconds_bucket{le="${le}"} ${row?.[`b${i}`] ?? 0}`),
    `queuectl_attempt_duration_seconds_bucket{le="+Inf"} ${n}`,
    `queuectl_attempt_duration_seconds_sum ${(row?.sum_ms ?? 0) / 1000}`,
    `queuectl_attempt_duration_seconds_count ${n}`,
    '# HELP queuectl_oldest_pending_wait_seconds How long the oldest due pending job has waited.',
    '# TYPE queuectl_oldest_pending_wait_seconds gauge',
    `queuectl_oldest_pending_wait_seconds ${(stats.oldest_pending_wait_ms ?? 0) / 1000}`,
  ]
  return lines.join('\n') + '\n'
}

async function handleDashboardRequest(
  queue: Queue,
  opts: { host: string; token: string; allowEnqueue: boolean },
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://localhost')
  const how = authorize(opts, req, url)
  // Split before decoding, so an encoded "/" stays inside its segment (and then fails isValidJobId).
  const parts = url.pathname.split('/').slice(1).map((part) => {
    try {
      return decodeURIComponent(part)
    } catch {
      throw new HttpError(400, 'malformed URL')
    }
  })
  const route = (method: string, ...allowed: string[]) => {
    if (req.method !== method) throw new HttpError(405, `use ${method}`, { Allow: [method, ...allowed].join(', ') })
  }
  const jobId = (id: string) => {
    if (!isValidJobId(id)) throw new HttpError(400, `invalid job id ${JSON.stringify(id)}`)
    return id
  }
  const [a, b, c, d] = parts
  if (parts.length === 1 && a === '') {
    route('GET')
    const nonce = randomBytes(16).toString('base64')
    // The page itself answers `/?token=` (and drops it from the address bar), not a redirect to `/`: after a
    // link from another site, a redirect would still be cross-site, and the browser would not send the
    // SameSite=Strict cookie it had just been given.
    const login: Record<string, string> = how === 'url' ? { 'Set-Cookie': `${tokenCookie(req)}=${opts.token}; HttpOnly; SameSite=Strict; Path=/` } : {}
    send(res, 200, DASHBOARD_PAGE.replaceAll('{{nonce}}', nonce).replace('{{enqueue}}', opts.allowEnqueue ? '1' : '0'), {
      ...login,
      'Content-Type': 'text/html; charset=utf-8',
      'Content-Security-Policy': `default-src 'none'; script-src 'nonce-${nonce}'; style-src 'nonce-${nonce}'; ` +
        `connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`,
    })
  } else if (parts.length === 1 && a === 'metrics') {
    route('GET')
    send(res, 200, await metricsText(queue), { 'Content-Type': 'text/plain; version=0.0.4; charset=utf-8' })
  } else if (a !== 'api') {
    throw new HttpError(404, 'not found')
  } else if (parts.length === 2 && b === 'overview') {
    route('GET')
    sendJson(res, 200, { ...(await queue.status()), stats: await queue.stats(), queues: await queue.listQueues(), schedules: await queue.listSchedules(), allow_enqueue: opts.allowEnqueue })
  } else if (parts.length === 2 && b === 'status') {
    route('GET')
    sendJson(res, 200, await queue.status())
  } else if (parts.length === 2 && b === 'stats') {
    route('GET')
    sendJson(res, 200, await queue.stats())
  } else if (parts.length === 2 && b === 'jobs' && req.method === 'POST') {
    if (!opts.allowEnqueue) throw new HttpError(403, 'enqueue is disabled: start the dashboard with --allow-enqueue')
    sendJson(res, 201, await queue.enqueue(await readJsonObject(req, ENQUEUE_KEYS) as unknown as JobSpec))
  } else if (parts.length === 2 && b === 'jobs') {
    route('GET', 'POST')
    const inQueue = url.searchParams.get('queue') || undefined
    const filter = { state: stateParam(url), queue: inQueue && checkQueueName(inQueue), search: url.searchParams.get('search')?.slice(0, 200) || undefined }
    const limit = intParam(url, 'limit', 50, 1, 500)
    const offset = intParam(url, 'offset', 0, 0, Number.MAX_SAFE_INTEGER)
    sendJson(res, 200, { jobs: await queue.listJobs({ ...filter, limit, offset }), total: await queue.countJobs(filter), limit, offset })
  } else if (parts.length === 3 && b === 'jobs') {
    route('GET')
    const job = await queue.getJob(jobId(c))
    if (!job) throw new HttpError(404, `no job ${c}`)
    sendJson(res, 200, job)
  } else if (parts.length === 4 && b === 'jobs' && d === 'log') {
    route('GET')
    const id = jobId(c)
    if (!(await queue.getJob(id))) throw new HttpError(404, `no job ${id}`)
    const offset = intParam(url, 'offset', 0, 0, Number.MAX_SAFE_INTEGER)
    const tail = url.searchParams.has('tail') ? intParam(url, 'tail', 0, 0, Number.MAX_SAFE_INTEGER) : undefined
    const { data, size, start } = readLog(await queue.readableLog(id), offset, tail)
    send(res, 200, data, {
      'Content-Type': 'text/plain; charset=utf-8',
      'X-Log-Size': String(size),
      'X-Log-Offset': String(start),
      'X-Next-Offset': String(start + data.length),
    })
  } else if (parts.length === 4 && b === 'jobs' && d === 'retry') {
    route('POST')
    const id = jobId(c)
    if (!(await queue.getJob(id))) throw new HttpError(404, `no job ${id}`)
    sendJson(res, 200, await queue.retryJobs([id]))
  } else if (parts.length === 4 && b === 'jobs' && d === 'kill') {
    route('POST')
    const id = jobId(c)
    const options = killOptions(await readJsonObject(req, KILL_KEYS, true))
    if (!(await queue.getJob(id))) throw new HttpError(404, `no job ${id}`)
    const result = await queue.kill({ ids: [id] }, options)
    if (result.finished.length) throw new HttpError(409, `job ${id} is already ${result.finished[0].state}: nothing to kill`)
    sendJson(res, 200, result)
  } else if (parts.length === 3 && b === 'dlq' && c === 'retry-all') {
    route('POST')
    sendJson(res, 200, await queue.retryJobs('all'))
  } else if (parts.length === 2 && b === 'queues') {
    route('GET')
    sendJson(res, 200, await queue.listQueues())
  } else if (parts.length === 2 && b === 'schedules') {
    route('GET')
    sendJson(res, 200, await queue.listSchedules())
  } else if (parts.length === 3 && b === 'queues' && (c === 'pause-all' || c === 'resume-all')) {
    route('POST')
    const paused = c === 'pause-all'
    sendJson(res, 200, { paused, changed: await queue.setPaused({ all: true }, paused) })
  } else if (parts.length === 4 && b === 'queues' && (d === 'pause' || d === 'resume')) {
    route('POST')
    const paused = d === 'pause'
    sendJson(res, 200, { paused, changed: await queue.setPaused({ queue: checkQueueName(c) }, paused) })
  } else {
    throw new HttpError(404, 'not found')
  }
}

// The page: one template, no build and nothing fetched from outside. String.raw keeps the script's backslashes;
// the script uses no template literals: only the state lists on <body> are interpolated here, from the one definition.
const RETRYABLE_STATES = TERMINAL_STATES.filter((state) => state !== 'completed')
const DASHBOARD_PAGE = String.raw`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>queuectl</title><link rel="icon" href="data:,">
<style nonce="{{nonce}}">
:root{--bg:#f6f7f9;--fg:#1c1e21;--muted:#687080;--card:#fff;--line:#e3e6ea;--accent:#2f6fdf;color-scheme:light dark}
@media (prefers-color-scheme:dark){:root{--bg:#131417;--fg:#e4e6ea;--muted:#9aa1ad;--card:#1c1d21;--line:#2e3036;--accent:#6ea2ff}}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:var(--bg);color:var(--fg)}
header{display:flex;align-items:center;gap:16px;padding:10px 24px;background:var(--card);border-bottom:1px solid var(--line)}
.brand{font-weight:700;font-size:16px;color:inherit}
#live{margin-left:auto;font-size:12px;color:var(--muted)}#live.bad{color:#d23b3b}
main{max-width:1200px;margin:0 auto;padding:16px 24px 48px}
h1{font-size:18px;margin:8px 0 12px;display:flex;gap:10px;align-items:center;word-break:break-all}
h2{font-size:14px;margin:24px 0 8px}
.section{display:flex;gap:8px;align-items:center;margin:24px 0 8px}.section h2{margin:0;flex:1}
.scroll{overflow-x:auto}
a{color:var(--accent);text-decoration:none}a:hover{text-decoration:underline}
.cards{display:grid;grid-template-columns:repeat(8,minmax(0,1fr));gap:10px}
.card{font:inherit;color:inherit;text-align:left;cursor:pointer;background:var(--card);border:1px solid var(--line);border-left:4px solid var(--c);border-radius:8px;padding:10px 12px;min-width:0}
.card b{display:block;font-size:24px;font-weight:650;font-variant-numeric:tabular-nums}
.card span{display:block;color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em;overflow:hidden;text-overflow:ellipsis}
.card.on{box-shadow:0 0 0 2px var(--accent)}
.stats{display:grid;grid-template-columns:repeat(auto-fill,minmax(140px,1fr));gap:8px 16px;margin:12px 0 0;padding:10px 14px;background:var(--card);border:1px solid var(--line);border-radius:8px}
.stats dt{color:var(--muted);font-size:12px}.stats dd{margin:0;font-weight:600;font-variant-numeric:tabular-nums}
table{width:100%;border-collapse:separate;border-spacing:0;background:var(--card);border:1px solid var(--line);border-radius:8px;overflow:hidden}
th,td{padding:6px 10px;text-align:left;border-bottom:1px solid var(--line);vertical-align:top}
th{font-size:12px;font-weight:600;color:var(--muted);background:var(--bg)}
tr:last-child td,tr:last-child th{border-bottom:0}
td .btn{padding:0 8px;font-size:12px}
h1 .mono{font-size:inherit}h1 .btn{font-size:13px;font-weight:500}
td{font-variant-numeric:tabular-nums}
.mono,td.cmd{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
td.cmd{max-width:380px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
td.err{max-width:220px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;color:var(--muted)}
.kv th{width:150px;background:none;vertical-align:top}.kv td{word-break:break-all;white-space:pre-wrap}
.badge{display:inline-block;padding:1px 8px;border-radius:99px;font-size:12px;font-weight:600;color:#fff;background:var(--c)}
.s-pending{--c:#7b8494}.s-blocked{--c:#8a63d2}.s-processing{--c:#2f6fdf}.s-completed{--c:#1f9d55}.s-failed{--c:#d9822b}
.s-dead{--c:#d23b3b}.s-cancelled{--c:#4b5563}.s-skipped{--c:#a8739b}.s-paused{--c:#b7791f}
td.zero{color:var(--muted);opacity:.6}
.bar{display:flex;gap:8px;align-items:center;flex-wrap:wrap;margin-bottom:8px}.bar .grow{flex:1}
input,select,.btn{font:inherit;color:inherit;background:var(--card);border:1px solid var(--line);border-radius:6px;padding:4px 9px}
.btn{cursor:pointer}.btn:hover{border-color:var(--accent)}.btn:disabled{opacity:.5;cursor:default}
.btn.primary{background:var(--accent);border-color:var(--accent);color:#fff}
input[type=search]{width:260px}
.pager{display:flex;gap:8px;align-items:center;justify-content:flex-end;margin-top:8px;color:var(--muted)}
.muted{color:var(--muted)}.empty{padding:14px;color:var(--muted);text-align:center}
pre.log{background:#0e1116;color:#e6e9ee;padding:12px;border-radius:8px;max-height:60vh;overflow:auto;font-size:12.5px;white-space:pre-wrap;word-break:break-all;margin:0}
#toast{position:fixed;right:16px;bottom:16px;padding:8px 14px;border-radius:8px;background:#23262b;color:#fff;opacity:0;transition:opacity .2s;pointer-events:none}
#toast.show{opacity:.95}
@media (max-width:1100px){.cards{grid-template-columns:repeat(4,minmax(0,1fr))}}
@media (max-width:760px){.cards{grid-template-columns:repeat(2,minmax(0,1fr))}td.cmd{max-width:160px}.hide-s{display:none}}
</style></head>
<body data-enqueue="{{enqueue}}" data-states="${JOB_STATES.join(' ')}" data-active="${ACTIVE_STATES.join(' ')}" data-retryable="${RETRYABLE_STATES.join(' ')}">
<header><a class="brand" href="#/">queuectl</a><span class="muted">dashboard</span><span id="live">connecting…</span></header>
<main id="app"></main><div id="toast" role="status"></div>
<script nonce="{{nonce}}">
'use strict';
// Everything shown is built with createElement + text nodes: job data never goes through innerHTML.
const STATES = document.body.dataset.states.split(' ');
const isActive = (state) => document.body.dataset.active.split(' ').includes(state);
const isRetryable = (state) => document.body.dataset.retryable.split(' ').includes(state);
// The server has put the token of /?token= into an HttpOnly cookie: out of the address bar and the history with it.
if (location.search) history.replaceState(null, '', location.pathname + location.hash);
const app = document.getElementById('app');
let timer = 0, generation = 0;

function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const k in props || {}) {
    const v = props[k];
    if (v == null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v);
  }
  for (const c of children.flat(Infinity)) if (c != null && c !== false) el.append(c instanceof Node ? c : String(c));
  return el;
}
const badge = (state) => h('span', { class: 'badge s-' + state }, state);
const jobLink = (id) => h('a', { href: '#/jobs/' + encodeURIComponent(id), class: 'mono' }, id);
function ago(iso) {
  if (!iso) return '—';
  const s = Math.round((Date.now() - Date.parse(iso)) / 1000), a = Math.abs(s);
  const t = a < 60 ? a + 's' : a < 3600 ? Math.floor(a / 60) + 'm' : a < 86400 ? Math.floor(a / 3600) + 'h' : Math.floor(a / 86400) + 'd';
  return s >= 0 ? t + ' ago' : 'in ' + t;
}
// Relative times are refreshed in place after every poll (see poll), so a row is re-rendered only when its data changes.
const when = (iso) => iso ? h('span', { title: iso, 'data-ts': iso }, ago(iso)) : '—';
function dur(ms) {
  if (ms == null) return '—';
  if (ms < 1000) return Math.round(ms) + ' ms';
  if (ms < 60000) return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + ' s';
  return Math.floor(ms / 60000) + 'm ' + Math.round((ms % 60000) / 1000) + 's';
}
function toast(text) {
  const t = document.getElementById('toast');
  t.textContent = text; t.className = 'show';
  clearTimeout(toast.t); toast.t = setTimeout(() => { t.className = ''; }, 2500);
}
function live(ok, text) {
  const el = document.getElementById('live');
  el.textContent = ok ? '● live · ' + new Date().toLocaleTimeString() : '● ' + text;
  el.className = ok ? '' : 'bad';
}

async function api(path, opts) {
  opts = opts || {};
  const headers = { 'X-Queuectl': '1' };
  if (opts.body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(path, { method: opts.method || 'GET', headers, body: opts.body === undefined ? undefined : JSON.stringify(opts.body) });
  if (opts.raw && res.ok) return res;
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(data.error || res.status + ' ' + res.statusText);
  return data;
}
// An action: POST, say what happened (or why not), then poll again at once.
async function act(path, failed, said) {
  try { toast(said(await api(path, { method: 'POST' }))); } catch (e) { toast(failed + ': ' + e.message); }
  refresh();
}
const jobPath = (id) => '/api/jobs/' + encodeURIComponent(id);
const plural = (n, what) => n + ' ' + what + (n === 1 ? '' : 's');
const retried = (r) => (r.retried.length === 1 ? 'Retried ' + r.retried[0] : 'Retried ' + plural(r.retried.length, 'job')) +
  (r.revived ? '; ' + plural(r.revived, 'skipped dependant') + ' back to blocked' : '');
const retryJob = (id) => act(jobPath(id) + '/retry', 'Retry failed', retried);
const retryAllDead = () => act('/api/dlq/retry-all', 'Retry failed', retried);
const killJob = (id) => act(jobPath(id) + '/kill', 'Kill failed',
  (r) => r.cancelled.length ? 'Cancelled ' + id : 'Asked the worker to stop ' + id);
// name null: every queue, also those made later.
const pauseQueue = (name, paused) => act(name == null ? '/api/queues/' + (paused ? 'pause-all' : 'resume-all')
  : '/api/queues/' + encodeURIComponent(name) + (paused ? '/pause' : '/resume'), (paused ? 'Pause' : 'Resume') + ' failed',
  (r) => r.changed.length ? (paused ? 'Paused ' : 'Resumed ') + r.changed.join(', ') : (name == null ? 'Every queue was' : name + ' was') + ' already ' + (paused ? 'paused' : 'running'));
const retryButton = (id) => h('button', { class: 'btn', 'data-retry': id, onclick: () => retryJob(id) }, 'Retry');
const killButton = (id, state) => h('button', { class: 'btn', onclick: () => {
  if (confirm(state === 'processing' ? 'Kill job ' + id + '? Its processes get SIGTERM, then SIGKILL.' : 'Cancel job ' + id + '?')) killJob(id);
} }, 'Kill');

// A poll loop per view; a newer view (or filter) bumps generation so a late answer is dropped.
let refresh = () => {};
function poll(fn, ms) {
  const gen = ++generation;
  let busy = false, again = false;
  const run = async () => {
    clearTimeout(timer);
    if (gen !== generation) return;
    if (busy) { again = true; return; } // one request chain at a time; a click during a poll re-polls after it
    busy = true;
    try {
      await fn(() => gen === generation);
      live(true);
      for (const el of document.querySelectorAll('[data-ts]')) el.textContent = ago(el.dataset.ts);
    } catch (e) { if (gen === generation) live(false, e.message); }
    busy = false;
    if (gen !== generation) return;
    if (again) { again = false; run(); } else timer = setTimeout(run, ms);
  };
  refresh = run;
  run();
}
// Re-render a part only when its data changed, so rows do not flicker or lose a pending click.
function patch(el, data, render) {
  const key = JSON.stringify(data);
  if (el.dataset.key === key) return;
  el.dataset.key = key;
  el.replaceChildren(...[render(data)].flat(Infinity).filter((c) => c != null && c !== false));
}

function overview() {
  const view = { state: '', queue: '', search: '', offset: 0, limit: 25 };
  const cards = h('div', { class: 'cards' }), stats = h('dl', { class: 'stats' });
  const queues = h('div', { class: 'scroll' }), schedules = h('div', { class: 'scroll' }), workers = h('div'), rows = h('div', { class: 'scroll' }), pager = h('div', { class: 'pager' });
  const show = (changes) => { Object.assign(view, changes, { offset: 0 }); filter.value = view.state; queueFilter.value = view.queue; refresh(); };
  const filter = h('select', { 'aria-label': 'State', onchange: () => show({ state: filter.value }) },
    h('option', { value: '' }, 'All states'), STATES.map((s) => h('option', { value: s }, s)));
  const queueFilter = h('select', { 'aria-label': 'Queue', onchange: () => show({ queue: queueFilter.value }) });
  let typing = 0;
  const search = h('input', { type: 'search', placeholder: 'Search id or command', 'aria-label': 'Search',
    oninput: () => { clearTimeout(typing); typing = setTimeout(() => show({ search: search.value }), 250); } });
  const retryAll = h('button', { class: 'btn', onclick: () => { if (confirm('Move every dead job back to pending?')) retryAllDead(); } });
  const bar = h('div', { class: 'bar' }, filter, queueFilter, search, h('span', { class: 'grow' }), retryAll);
  const queuesHead = h('div', { class: 'section' }, h('h2', null, 'Queues'),
    h('button', { class: 'btn', onclick: () => pauseQueue(null, true) }, 'Pause all'),
    h('button', { class: 'btn', onclick: () => pauseQueue(null, false) }, 'Resume all'));
  let form = null;
  if (document.body.dataset.enqueue === '1') {
    const cmd = h('input', { placeholder: 'Command to enqueue', 'aria-label': 'Command', class: 'mono' });
    form = h('form', { class: 'bar', onsubmit: async (ev) => {
      ev.preventDefault();
      if (!cmd.value.trim()) return;
      try { const job = await api('/api/jobs', { method: 'POST', body: { command: cmd.value } }); cmd.value = ''; toast('Enqueued ' + job.id); }
      catch (e) { toast('Enqueue failed: ' + e.message); }
      refresh();
    } }, cmd, h('button', { class: 'btn primary', type: 'submit' }, 'Enqueue'));
    cmd.style.flex = '1';
  }
  app.replaceChildren(cards, stats, queuesHead, queues, h('h2', null, 'Schedules'), schedules, h('h2', null, 'Workers'), workers, h('h2', null, 'Jobs'), ...(form ? [form] : []), bar, rows, pager);
  poll(async (current) => {
    const q = new URLSearchParams({ limit: view.limit, offset: view.offset });
    if (view.state) q.set('state', view.state);
    if (view.queue) q.set('queue', view.queue);
    if (view.search) q.set('search', view.search);
    const [o, list] = await Promise.all([api('/api/overview'), api('/api/jobs?' + q)]);
    if (!current()) return;
    patch(cards, [o.counts, view.state], () => STATES.map((s) => h('button', {
      class: 'card s-' + s + (view.state === s ? ' on' : ''), title: 'Show ' + s + ' jobs',
      onclick: () => show({ state: view.state === s ? '' : s }),
    }, h('b', null, o.counts[s]), h('span', null, s))));
    const st = o.stats, pct = st.success_rate == null ? '—' : (st.success_rate * 100).toFixed(1) + ' %';
    patch(stats, st, () => [
      ['Success rate', pct], ['Retries', st.retries], ['Mean duration', dur(st.duration_ms.mean)],
      ['p50 / p95', dur(st.duration_ms.p50) + ' / ' + dur(st.duration_ms.p95)],
      ['Finished 1m / 5m / 15m', st.finished.last_1m + ' / ' + st.finished.last_5m + ' / ' + st.finished.last_15m],
      ['Oldest pending wait', dur(st.oldest_pending_wait_ms)],
    ].map(([k, v]) => h('div', null, h('dt', null, k), h('dd', null, v))));
    patch(queues, o.queues, () => h('table', null,
      h('tr', null, ['Queue', 'Limit', 'Status', ...STATES, ''].map((x) => h('th', null, x))),
      o.queues.map((qu) => h('tr', { 'data-queue': qu.name },
        h('td', null, h('a', { href: '#/', class: 'mono', title: 'Show the jobs of ' + qu.name,
          onclick: (ev) => { ev.preventDefault(); show({ queue: qu.name }); } }, qu.name)),
        h('td', null, qu.concurrency == null ? 'unlimited' : qu.concurrency),
        h('td', null, qu.paused ? h('span', { class: 'badge s-paused' }, 'paused') : h('span', { class: 'muted' }, 'running')),
        STATES.map((s) => h('td', { class: qu.counts[s] ? null : 'zero', 'data-state': s }, qu.counts[s])),
        h('td', null, h('button', { class: 'btn', onclick: () => pauseQueue(qu.name, !qu.paused) }, qu.paused ? 'Resume' : 'Pause'))))));
    patch(schedules, o.schedules, () => o.schedules.length === 0
      ? h('div', { class: 'empty' }, "No schedules. Add one with: queuectl schedule add NAME --cron '0 2 * * *' -- CMD")
      : h('table', null,
        h('tr', null, ['Schedule', 'Expression', 'Zone', 'Next fire', 'Last fire', 'Missed', 'Skipped', 'Status', 'Command'].map((x) => h('th', null, x))),
        o.schedules.map((sc) => h('tr', { 'data-schedule': sc.name },
          h('td', { class: 'mono' }, sc.name), h('td', { class: 'mono' }, sc.cron || 'every ' + sc.every), h('td', null, sc.tz),
          h('td', null, sc.paused ? '—' : when(sc.next_at)), h('td', null, sc.last_job ? [when(sc.last_at), ' · ', jobLink(sc.last_job)] : '—'),
          h('td', { class: sc.missed ? null : 'zero' }, sc.missed), h('td', { class: sc.skipped ? null : 'zero' }, sc.skipped),
          h('td', null, sc.paused ? h('span', { class: 'badge s-paused' }, 'paused') : h('span', { class: 'muted' }, 'active')),
          h('td', { class: 'cmd', title: sc.job.command }, sc.job.command)))));
    const names = o.queues.map((qu) => qu.name);
    if (view.queue && !names.includes(view.queue)) names.push(view.queue);
    patch(queueFilter, names, () => [h('option', { value: '' }, 'All queues'), names.map((n) => h('option', { value: n }, n))]);
    queueFilter.value = view.queue;
    patch(workers, o.workers, () => o.workers.length === 0
      ? h('div', { class: 'empty' }, 'No workers running. Start some with: queuectl worker start')
      : h('table', null, h('tr', null, ['Worker', 'PID', 'Host', 'Current job', 'Since', 'Heartbeat'].map((x) => h('th', null, x))),
        o.workers.map((w) => h('tr', null, h('td', { class: 'mono' }, w.id), h('td', null, w.pid), h('td', null, w.host),
          h('td', null, w.job_id ? jobLink(w.job_id) : h('span', { class: 'muted' }, 'idle')),
          h('td', null, when(w.since || w.started_at)), h('td', null, when(w.heartbeat_at))))));
    retryAll.textContent = 'Retry all dead (' + o.counts.dead + ')';
    retryAll.disabled = o.counts.dead === 0;
    patch(rows, list.jobs, () => list.jobs.length === 0
      ? h('div', { class: 'empty' }, 'No jobs' + (view.state || view.queue || view.search ? ' match.' : ' yet.'))
      : h('table', null,
        h('tr', null, ['ID', 'State', 'Queue', 'Command', 'Attempts', 'Priority', 'Updated', 'Last error', ''].map((x, i) => h('th', { class: i > 4 && i < 8 ? 'hide-s' : null }, x))),
        list.jobs.map((j) => h('tr', { 'data-id': j.id },
          h('td', null, jobLink(j.id)), h('td', null, badge(j.state)), h('td', { class: 'mono' }, j.queue),
          h('td', { class: 'cmd', title: j.command }, j.command),
          h('td', null, j.attempts + ' / ' + (j.max_retries + 1)), h('td', { class: 'hide-s' }, j.priority),
          h('td', { class: 'hide-s' }, when(j.updated_at)), h('td', { class: 'err hide-s', title: j.last_error || '' }, j.last_error || ''),
          h('td', null, isRetryable(j.state) ? retryButton(j.id) : null)))));
    const first = list.total ? list.offset + 1 : 0, last = list.offset + list.jobs.length;
    patch(pager, [first, last, list.total], () => [
      h('button', { class: 'btn', disabled: view.offset === 0, onclick: () => { view.offset = Math.max(0, view.offset - view.limit); refresh(); } }, '‹ Prev'),
      h('span', null, first + '–' + last + ' of ' + list.total),
      h('button', { class: 'btn', disabled: last >= list.total, onclick: () => { view.offset += view.limit; refresh(); } }, 'Next ›'),
    ]);
  }, 1500);
}

function jobPage(id) {
  const head = h('h1'), fields = h('div'), deps = h('div'), attempts = h('div'), log = h('pre', { class: 'log', id: 'log' });
  const follow = h('span', { class: 'muted' });
  app.replaceChildren(h('a', { href: '#/' }, '‹ Overview'), head, fields, deps, h('h2', null, 'Attempts'), attempts,
    h('h2', null, 'Log ', follow), log);
  const path = '/api/jobs/' + encodeURIComponent(id);
  let offset = -1, decoder;
  async function readLog() {
    for (let i = 0; i < 16; i++) {
      // The first read takes the last MiB only: a huge log opens at its end, then is followed from there.
      const res = await api(path + '/log?' + (offset < 0 ? 'tail=1048576' : 'offset=' + offset), { raw: true });
      const size = Number(res.headers.get('X-Log-Size')), start = Number(res.headers.get('X-Log-Offset'));
      if (size < offset) { offset = -1; continue; } // the log was purged or rewritten: start again
      if (offset < 0) {
        decoder = new TextDecoder();
        log.replaceChildren(start > 0 ? h('span', { class: 'muted' }, '[… first ' + start + ' bytes not shown]\n') : '');
      }
      offset = start;
      const bytes = await res.arrayBuffer();
      if (bytes.byteLength === 0) return;
      const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
      log.append(decoder.decode(bytes, { stream: true }));
      offset = Number(res.headers.get('X-Next-Offset'));
      if (atBottom) log.scrollTop = log.scrollHeight;
      if (offset >= size) return;
    }
  }
  poll(async (current) => {
    const job = await api(path);
    if (!current()) return;
    document.title = job.id + ' · queuectl';
    patch(head, [job.id, job.state], () => [h('span', { class: 'mono' }, job.id), badge(job.state),
      isActive(job.state) ? killButton(job.id, job.state) : null, isRetryable(job.state) ? retryButton(job.id) : null]);
    const shown = Object.entries(job).filter(([k]) => !['history', 'output_tail', 'parents', 'dependants'].includes(k));
    patch(fields, shown, () => h('table', { class: 'kv' }, shown.map(([k, v]) => h('tr', null, h('th', null, k),
      h('td', { class: k === 'command' || k === 'cwd' ? 'mono' : null },
        v == null ? h('span', { class: 'muted' }, 'null') : typeof v === 'object' ? JSON.stringify(v, null, 2)
          : /_at$/.test(k) ? [v, ' · ', when(v)] : String(v))))));
    const related = (rel, what, must) => (r) => h('tr', { ['data-' + rel]: r.id }, h('td', null, what), h('td', null, jobLink(r.id)),
      h('td', null, badge(r.state)), h('td', { class: 'muted' }, r.required ? 'after: ' + must[0] : 'after_any: ' + must[1]));
    patch(deps, [job.parents, job.dependants], () => job.parents.length + job.dependants.length === 0 ? null : [
      h('h2', null, 'Dependencies'),
      h('table', null, h('tr', null, ['', 'Job', 'State', 'Condition'].map((x) => h('th', null, x))),
        job.parents.map(related('parent', 'waits for', ['it must complete', 'it must end'])),
        job.dependants.map(related('dependant', 'needed by', ['runs once this completes', 'runs once this ends'])))]);
    patch(attempts, job.history, (hist) => hist.length === 0 ? h('div', { class: 'empty' }, 'Not started yet.')
      : h('table', null, h('tr', null, ['#', 'Worker', 'Started', 'Finished', 'Duration', 'Exit code', 'Signal', 'Error'].map((x) => h('th', null, x))),
        hist.map((a) => h('tr', null, h('td', null, a.attempt), h('td', { class: 'mono' }, a.worker || '—'), h('td', null, when(a.started_at)),
          h('td', null, a.finished_at ? when(a.finished_at) : 'running'), h('td', null, dur(a.duration_ms)),
          h('td', null, a.exit_code == null ? '—' : a.exit_code), h('td', null, a.signal || '—'), h('td', null, a.error || '')))));
    follow.textContent = job.state === 'processing' ? '· following…' : '';
    await readLog();
  }, 1000);
}

function route() {
  const m = /^#\/jobs\/(.+)$/.exec(location.hash);
  if (m) jobPage(decodeURIComponent(m[1])); else { document.title = 'queuectl'; overview(); }
}
window.addEventListener('hashchange', route);
route();
</script></body></html>
`

// CLI: citty commands over the API above. Data goes to stdout, messages and errors to stderr.

let cliHome: string | undefined
const stdoutIsTTY = Boolean(process.stdout.isTTY)
const ANSI = { bold: 1, gray: 90, red: 31, green: 32, yellow: 33, magenta: 35, cyan: 36 }
const paint = (color: keyof typeof ANSI, text: string) => (stdoutIsTTY ? `\x1b[${color === 'bold' ? '1' : ANSI[color]}m${text}\x1b[${color === 'bold' ? 22 : 39}m` : text)
// eslint-disable-next-line no-control-regex
const stripAnsi = (text: string) => text.replace(/\x1b\[[0-9;]*m/g, '')
const STATE_COLORS: Record<JobState, keyof typeof ANSI> = {
  pending: 'cyan', blocked: 'gray', processing: 'yellow', completed: 'green', failed: 'magenta', dead: 'red', cancelled: 'gray', skipped: 'gray',
}

/**
 * Text as the terminal gets it: control characters (C0, DEL, C1) shown as `\n`, `\t`, `\x1b`…, so a job's command,
 * id, error or output can neither drive the terminal nor break a line; `keep` lists those let through (output keeps
 * its line breaks and tabs). Table cells, `show`'s fields and error lines are always escaped (a row stays one line,
 * into a pipe too); output only on a terminal (see outputWriter).
 */
function escapeControls(text: string, keep = ''): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\x00-\x1f\x7f-\x9f]/g, (c) =>
    keep.includes(c) ? c : c === '\n' ? '\\n' : c === '\t' ? '\\t' : c === '\r' ? '\\r' : `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`)
}

/**
 * Messages on stderr: consola's fancy reporter on a terminal, its light one-line build otherwise. Loaded at the first
 * message (most calls print none), and as CommonJS: require() is synchronous and costs a fraction of an import().
 */
let consola: ConsolaInstance | undefined
const say = (level: 'info' | 'success' | 'warn' | 'error') => (message: string) => {
  if (!consola) {
    const fancy = Boolean(process.stderr.isTTY)
    const { createConsola } = createRequire(scriptPath())(fancy ? 'consola' : 'consola/basic') as typeof import('consola')
    consola = createConsola({ stdout: process.stderr, stderr: process.stderr, fancy, formatOptions: { date: false } })
  }
  consola[level](message)
}
const log = { info: say('info'), success: say('success'), warn: say('warn'), error: say('error') }
const examples = new WeakMap<object, string[]>()

function print(text = ''): void {
  process.stdout.write(`${text}\n`)
}

function printJson(value: unknown): void {
  print(JSON.stringify(value, null, 2))
}

/** A table cell: text, or text in a colour. */
type Cell = string | readonly [keyof typeof ANSI, string]

/** Aligned columns of escaped cells; on a terminal the last column is cut to its width rather than wrapped. */
function printTable(headers: string[], rows: Cell[][]): void {
  const texts = rows.map((row) => row.map((cell) => escapeControls(typeof cell === 'string' ? cell : cell[1])))
  const widths = headers.map((header, i) => texts.reduce((width, row) => Math.max(width, row[i].length), header.length))
  const before = widths.slice(0, -1).reduce((sum, width) => sum + width + 2, 0)
  const room = (stdoutIsTTY && process.stdout.columns) || Infinity // a pseudo-terminal may report 0 columns
  const fit = (text: string, i: number) =>
    i < widths.length - 1 ? text.padEnd(widths[i]) : before + text.length > room ? `${text.slice(0, Math.max(0, room - before - 1))}…` : text
  print(paint('bold', headers.map(fit).join('  ')))
  for (const [r, row] of rows.entries()) {
    print(row.map((cell, i) => (typeof cell === 'string' ? fit(texts[r][i], i) : paint(cell[0], fit(texts[r][i], i)))).join('  '))
  }
}

function ago(timestamp: string | null): string {
  if (!timestamp) return '-'
  const ms = clockNow() - Date.parse(timestamp)
  const abs = Math.abs(ms)
  const text = abs < 1000 ? `${abs}ms` : abs < 60_000 ? `${Math.round(abs / 1000)}s` : abs < 3_600_000 ? `${Math.round(abs / 60_000)}m` : abs < 86_400_000 ? `${Math.round(abs / 3_600_000)}h` : `${Math.round(abs / 86_400_000)}d`
  return ms >= 0 ? `${text} ago` : `in ${text}`
}

const paintState = (state: JobState) => paint(STATE_COLORS[state], state)
const stateCell = (state: JobState): Cell => [STATE_COLORS[state], state]

/** Resolves once stdout has taken `data`: a pipe's reader sets the pace, and the buffer may be used again. */
function writeStdout(data: string | Uint8Array): Promise<void> {
  return new Promise((resolve) => process.stdout.write(data, () => resolve()))
}

/** Control characters would drive the terminal: on a TTY show them escaped; into a pipe, the bytes as they are. */
function outputWriter() {
  const decoder = new StringDecoder('utf8') // a character split between two chunks is decoded whole
  const escape = (text: string) => escapeControls(text, '\n\t')
  const write = (bytes: Buffer) => writeStdout(stdoutIsTTY ? escape(decoder.write(bytes)) : bytes)
  return {
    write,
    /** Bytes [start, end) of an open file, a chunk at a time. */
    async copy(fd: number, start: number, end: number) {
      const buffer = Buffer.allocUnsafe(LOG_CHUNK)
      for (let pos = start; pos < end; pos += LOG_CHUNK) await write(readAt(fd, pos, end, buffer))
    },
    end: () => writeStdout(stdoutIsTTY ? escape(decoder.end()) : ''),
  }
}

function wholeFlag(value: unknown, flag: string, min: number, max: number): number | undefined {
  if (value === undefined || value === false) return undefined
  const n = wholeNumber(min, max)(String(value))
  if (n === undefined) throw new UsageError(`${flag} must be a whole number from ${min} to ${max}, not "${String(value)}"`)
  return n
}

function stringFlag(value: unknown, flag: string): string | undefined {
  if (value === undefined || value === false) return undefined
  if (value === true || value === '') throw new UsageError(`${flag} needs a value`)
  return String(value)
}

/** A flag that is a length of time, in milliseconds. */
function durationFlag(value: unknown, flag: string): number | undefined {
  const text = stringFlag(value, flag)
  return text === undefined ? undefined : parseDuration(text, flag)
}

async function withQueue<T>(fn: (queue: Queue) => Promise<T>, home = cliHome ?? defaultHome(), db?: string): Promise<T> {
  const queue = await openQueue(home, db)
  try {
    return await fn(queue)
  } finally {
    queue.close()
  }
}

const jsonArg = { json: { type: 'boolean', description: 'Print JSON (one document on stdout)' } } as const
/** Declared for --help and completions; the ids are read from `args._` (citty has no list positional). */
const idsArg = { ids: { type: 'positional', required: false, description: 'Job ids: ID [ID…]' } } as const

function define<const T extends ArgsDef>(def: CommandDef<T> & { examples?: string[] }): CommandDef<T> {
  if (def.examples) examples.set(def, def.examples)
  return def
}

/** stdin read as a stream: readFileSync(0) fails with EAGAIN on a pipe whose writer is slower than us. */
async function readStdin(): Promise<string> {
  const chunks: Buffer[] = []
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks).toString('utf8')
}

/** JSON lines or one JSON array; every line is checked before anything is written. */
function parseJobFile(text: string, source: string): unknown[] {
  const trimmed = text.trim()
  if (trimmed.startsWith('[')) {
    try {
      return JSON.parse(trimmed) as unknown[]
    } catch (error) {
      throw new UsageError(`${source} is not valid JSON: ${(error as Error).message}`)
    }
  }
  const jobs: unknown[] = []
  for (const [i, line] of text.split('\n').entries()) {
    if (line.trim() === '') continue
    try {
      jobs.push(JSON.parse(line))
    } catch (error) {
      throw new UsageError(`${source} line ${i + 1} is not valid JSON: ${(error as Error).message}`)
    }
  }
  if (jobs.length === 0) throw new UsageError(`${source} holds no jobs`)
  return jobs
}

/** The flags of a job that `enqueue` and `schedule add` share; each is the job's JSON field of that name. */
const jobArgs = {
  priority: { type: 'string', description: 'Higher runs first (default 0)' },
  'max-retries': { type: 'string', description: 'Retries after the first attempt (default: config max_retries)' },
  timeout: { type: 'string', description: 'How long an attempt may run: 30s, 5m, 2h, or seconds (default: config job_timeout)' },
  cwd: { type: 'string', description: 'Directory to run in (default: the current one)' },
  queue: { type: 'string', description: 'The named queue (default: default)' },
  'unique-key': { type: 'string', description: 'Add nothing while an active job of the queue holds this key' },
  'unique-for': { type: 'string', description: 'With --unique-key: also while a job with the key finished less than this ago (1h)' },
  'on-success': { type: 'string', description: 'A shell command run once the job completed (its facts in QUEUECTL_* variables)' },
  'on-failure': { type: 'string', description: 'A shell command run once the job ended dead, cancelled or skipped' },
  'on-finish': { type: 'string', description: 'A shell command run once the job ended, however it ended' },
} as const

/** jobArgs as the job's fields, only those given. */
function jobFlags(args: { [K in keyof typeof jobArgs]?: unknown }): Record<string, unknown> {
  const fields: Record<string, unknown> = {
    priority: wholeFlag(args.priority, '--priority', -1_000_000_000, 1_000_000_000),
    max_retries: wholeFlag(args['max-retries'], '--max-retries', 0, 1000),
    timeout: stringFlag(args.timeout, '--timeout'),
    cwd: stringFlag(args.cwd, '--cwd'),
    queue: stringFlag(args.queue, '--queue'),
    unique_key: stringFlag(args['unique-key'], '--unique-key'),
    unique_for: stringFlag(args['unique-for'], '--unique-for'),
    on_success: stringFlag(args['on-success'], '--on-success'),
    on_failure: stringFlag(args['on-failure'], '--on-failure'),
    on_finish: stringFlag(args['on-finish'], '--on-finish'),
  }
  for (const key of Object.keys(fields)) if (fields[key] === undefined) delete fields[key]
  return fields
}

const enqueueCommand = define({
  meta: { name: 'enqueue', description: 'Add a job: a shell command, a JSON object, or a file of them' },
  args: {
    command: { type: 'positional', required: false, description: 'The command (run with /bin/sh -c), or a JSON job object' },
    id: { type: 'string', description: 'Job id (default: generated)' },
    ...jobArgs,
    'run-at': { type: 'string', description: 'Earliest start, ISO-8601: 2026-11-23T18:00 is local time, 2026-11-23T18:00:00Z UTC' },
    delay: { type: 'string', description: 'Start after a delay: 30s, 5m, 2h, 1d' },
    file: { type: 'string', description: 'Enqueue many: a file of JSON lines or a JSON array; - for stdin' },
    after: { type: 'string', description: 'Run only after these jobs completed: ID[,ID…]' },
    'after-any': { type: 'string', description: 'Run only after these jobs ended, whatever the outcome: ID[,ID…]' },
    ...jsonArg,
  },
  examples: [
    'queuectl enqueue "make test"',
    'queuectl enqueue --priority 10 --max-retries 5 -- ./deploy.sh --prod',
    'queuectl enqueue \'{"id":"job1","command":"sleep 2"}\'',
    'queuectl enqueue --delay 5m "curl -fsS https://example.com/ping"',
    'queuectl enqueue --file jobs.jsonl',
    'queuectl enqueue --on-failure \'notify-send "$QUEUECTL_JOB_ID: $QUEUECTL_LAST_ERROR"\' -- make release',
  ],
  async run({ args, rawArgs }) {
    const dashes = rawArgs.indexOf('--')
    const positionals = args._.map(String)
    const defaults: Record<string, unknown> = {
      ...jobFlags(args),
      run_at: stringFlag(args['run-at'], '--run-at'),
      delay: stringFlag(args.delay, '--delay'),
      after: stringFlag(args.after, '--after'),
      after_any: stringFlag(args['after-any'], '--after-any'),
    }
    for (const key of Object.keys(defaults)) if (defaults[key] === undefined) delete defaults[key]
    let specs: unknown[]
    const file = stringFlag(args.file, '--file')
    if (file !== undefined) {
      if (positionals.length) throw new UsageError('give jobs either with --file or as an argument, not both')
      if (args.id !== undefined) throw new UsageError('--id names one job; with --file, put "id" in each job')
      let text: string
      try {
        text = file === '-' ? await readStdin() : readFileSync(file, 'utf8')
      } catch (error) {
        throw new UsageError(`cannot read ${file}: ${(error as Error).message}`)
      }
      specs = parseJobFile(text, file === '-' ? 'stdin' : file).map((job) =>
        typeof job === 'object' && job !== null && !Array.isArray(job) ? { ...defaults, ...job } : job)
    } else if (positionals.length === 0) {
      throw new UsageError('nothing to enqueue: give a command, e.g. queuectl enqueue "echo hi", or --file')
    } else if (dashes === -1 && positionals.length === 1 && positionals[0].trimStart().startsWith('{')) {
      let job: unknown
      try {
        job = JSON.parse(positionals[0])
      } catch (error) {
        throw new UsageError(`invalid JSON job: ${(error as Error).message} (to run a shell command starting with "{", put it after --)`)
      }
      if (typeof job !== 'object' || job === null || Array.isArray(job)) throw new UsageError('a JSON job must be an object such as {"command":"echo hi"}')
      specs = [{ ...defaults, ...(args.id !== undefined ? { id: stringFlag(args.id, '--id') } : {}), ...job }]
    } else {
      // One argument is a command line for sh as it is; several are the words of one, each quoted as needed.
      specs = [{ ...defaults, id: stringFlag(args.id, '--id'), command: positionals.length === 1 ? positionals[0] : quoteCommand(positionals) }]
    }
    const [jobs, paused, unattended] = await withQueue(async (queue) => {
      const added = await queue.enqueueMany(specs)
      const queues = new Set(added.filter((job) => !job.duplicate).map((job) => job.queue))
      return [added, (await queue.pausedQueues()).filter((name) => queues.has(name)),
        Boolean(process.stderr.isTTY) && !(await queue.hasLiveWorker())] as const
    })
    if (args.json) printJson(file !== undefined ? jobs : jobs[0])
    else print(jobs.map((job) => job.id).join('\n'))
    for (const job of jobs) if (job.duplicate) log.info(`duplicate of ${job.id} (${job.state}): not enqueued`)
    const added = jobs.filter((job) => !job.duplicate).length
    if (file !== undefined) log.success(`enqueued ${added} job${added === 1 ? '' : 's'}${added < jobs.length ? ` (${jobs.length - added} duplicate${jobs.length - added === 1 ? '' : 's'})` : ''}`)
    for (const name of paused) log.warn(`queue ${name} is paused: its jobs wait until queuectl resume --queue ${name}`)
    if (unattended) log.info('no worker is running: start one with queuectl worker start')
  },
})

const workerArgs = {
  concurrency: { type: 'string', description: 'Jobs one worker runs at once (default: config worker_concurrency)' },
  queue: { type: 'string', description: 'Serve only these queues: Q[,Q…] (default: all)' },
} as const

function workerFlags(args: { concurrency?: unknown; queue?: unknown }): { concurrency?: number; queues?: string[] } {
  return { concurrency: wholeFlag(args.concurrency, '--concurrency', 1, 256), queues: queueListFlag(args.queue, '--queue') }
}

function queueListFlag(value: unknown, flag: string): string[] | undefined {
  const text = stringFlag(value, flag)
  if (text === undefined) return undefined
  const names = text.split(',').map((name) => name.trim()).filter(Boolean)
  for (const name of names) checkQueueName(name)
  if (names.length === 0) throw new UsageError(`${flag} needs a queue name`)
  return names
}

const workerCommand = define({
  meta: { name: 'worker', description: 'Start, stop or run workers' },
  subCommands: {
    start: define({
      meta: { name: 'start', description: 'Start detached background workers; prints their pids and returns' },
      args: { count: { type: 'string', description: 'How many workers', default: '1' }, ...workerArgs, ...jsonArg },
      examples: ['queuectl worker start', 'queuectl worker start --concurrency 4   # one process, 4 jobs at once', 'queuectl worker start --count 2 --queue build,deploy'],
      async run({ args }) {
        const count = wholeFlag(args.count, '--count', 1, 256)!
        const pids = await withQueue((queue) => startWorkers(queue, count, workerFlags(args)))
        if (args.json) printJson(pids)
        else print(pids.join('\n'))
        log.success(`started ${count} worker${count === 1 ? '' : 's'}`)
      },
    }),
    stop: define({
      meta: { name: 'stop', description: 'Stop all workers gracefully (each finishes its current job) and wait for them' },
      args: {
        force: { type: 'boolean', description: 'Kill running jobs at once and put them back to pending (attempt not counted)' },
        timeout: { type: 'string', description: 'Give up waiting after this long (exit 1): 30s, 5m, or seconds' },
        ...jsonArg,
      },
      examples: ['queuectl worker stop', 'queuectl worker stop --force', 'queuectl worker stop --timeout 1m'],
      async run({ args }) {
        const timeoutMs = durationFlag(args.timeout, '--timeout')
        const result = await withQueue((queue) => stopWorkers(queue, {
          force: Boolean(args.force),
          timeoutMs,
          onWait: (left) => log.info(`waiting for ${left} worker${left === 1 ? '' : 's'} to finish the current job…`),
        }))
        if (args.json) printJson(result)
        else if (result.stopped + result.left === 0) print('No workers running.')
        else print(`Stopped ${result.stopped} worker${result.stopped === 1 ? '' : 's'}.${result.left ? ` ${result.left} still running.` : ''}`)
        if (result.left) process.exitCode = 1
      },
    }),
    run: define({
      meta: { name: 'run', description: 'Run one worker in the foreground (for systemd, containers, CI); SIGTERM/SIGINT stop it gracefully' },
      args: { drain: { type: 'boolean', description: 'Exit once no job is waiting to run' }, ...workerArgs },
      examples: ['queuectl worker run', 'queuectl worker run --drain   # run everything queued, then exit', 'queuectl worker run --concurrency 8 --queue build'],
      async run({ args }) {
        await withQueue((queue) => runWorker(queue, { drain: Boolean(args.drain), ...workerFlags(args) }))
      },
    }),
  },
  examples: ['queuectl worker start --count 4', 'queuectl worker stop'],
})

const statusCommand = define({
  meta: { name: 'status', description: 'Active workers and the number of jobs in each state' },
  args: { ...jsonArg },
  examples: ['queuectl status', 'queuectl status --json'],
  async run({ args }) {
    const status = await withQueue((queue) => queue.status())
    if (args.json) return printJson(status)
    print(`${status.workers.length} worker${status.workers.length === 1 ? '' : 's'} active`)
    if (status.workers.length) {
      const notes = status.workers.some((w) => w.note)
      const slotted = status.workers.some((w) => w.slots > 1)
      printTable(['  PID', 'WORKER', 'HOST', ...(slotted ? ['SLOTS'] : []), 'JOB', 'SINCE', ...(notes ? ['NOTE'] : [])], status.workers.map((w) => [
        `  ${w.pid}`, w.id, w.host, ...(slotted ? [`${w.jobs.length}/${w.slots}`] : []), w.jobs.length ? w.jobs.map((j) => j.id).join(', ') : ['gray', 'idle'] as Cell,
        w.job_id ? ago(w.since) : ago(w.started_at), ...(notes ? [w.note ? ['yellow', w.note] as Cell : ''] : []),
      ]))
    }
    print(`jobs: ${JOB_STATES.map((state) => `${status.counts[state]} ${paintState(state)}`).join(' · ')}`)
  },
})

/** When a waiting job runs (`runs in 5m`, `retry in 8s`, `retry due`); for the others, when they last changed. */
function jobWhen(job: Job): string {
  const later = Date.parse(job.run_at) > clockNow()
  if (job.state === 'failed') return later ? `retry ${ago(job.run_at)}` : 'retry due'
  if (job.state === 'blocked') return `waits for ${[...job.after, ...job.after_any].join(', ')}`
  return job.state === 'pending' && later ? `runs ${ago(job.run_at)}` : ago(job.updated_at)
}

function printJobs(jobs: Job[]): void {
  if (jobs.length === 0) return print(paint('gray', 'no jobs'))
  printTable(['ID', 'STATE', 'ATTEMPTS', 'PRIORITY', 'UPDATED', 'COMMAND'], jobs.map((job) => [
    job.id, stateCell(job.state), `${job.attempts}/${job.max_retries + 1}`, String(job.priority), jobWhen(job), job.command,
  ]))
}

const listCommand = define({
  meta: { name: 'list', description: 'List jobs, newest first' },
  args: {
    state: { type: 'string', description: `Only jobs in this state: ${JOB_STATES.join(', ')}` },
    queue: { type: 'string', description: 'Only jobs of this queue' },
    limit: { type: 'string', description: 'At most this many jobs', default: '100' },
    ...jsonArg,
  },
  examples: ['queuectl list', 'queuectl list --state failed', 'queuectl list --queue deploy --state blocked', 'queuectl list --state completed --limit 10 --json'],
  async run({ args }) {
    const state = stringFlag(args.state, '--state') as JobState | undefined
    if (state && !JOB_STATES.includes(state)) throw new UsageError(`unknown state "${state}": use one of ${JOB_STATES.join(', ')}`)
    const queueName = queueListFlag(args.queue, '--queue')?.[0]
    const limit = wholeFlag(args.limit, '--limit', 1, 10_000_000)!
    const [jobs, total] = await withQueue(async (queue) => {
      await queue.recoverLostJobs()
      return [await queue.listJobs({ state, queue: queueName, limit }), await queue.countJobs({ state, queue: queueName })] as const
    })
    if (args.json) return printJson(jobs)
    printJobs(jobs)
    if (total > jobs.length) log.info(`showing ${jobs.length} of ${total}; use --limit to see more`)
  },
})

const showCommand = define({
  meta: { name: 'show', description: 'One job: every field, its attempts, and the tail of its output' },
  args: {
    id: { type: 'positional', description: 'Job id' },
    env: { type: 'boolean', description: 'Include the environment the job runs with' },
    ...jsonArg,
  },
  examples: ['queuectl show job1', 'queuectl show job1 --json', 'queuectl show job1 --json --env'],
  async run({ args }) {
    const job = await withQueue(async (queue) => {
      await queue.recoverLostJobs()
      return queue.getJob(String(args.id), { env: Boolean(args.env) })
    })
    if (!job) throw new QueueError(`no job with id "${args.id}"`)
    if (args.json) return printJson(job)
    const { history, output_tail: tail, env, parents, dependants, after, after_any: afterAny, ...fields } = job
    for (const [key, value] of Object.entries(fields)) {
      const text = key === 'state' ? paintState(value as JobState) : value === null ? paint('gray', '-')
        : escapeControls(key === 'timeout' ? formatDuration((value as number) * 1000) : String(value))
      print(`${paint('bold', key.padEnd(12))} ${text}`)
    }
    if (env) print(`${paint('bold', 'env'.padEnd(12))} ${Object.keys(env).length} variables`)
    const relatives = (list: typeof parents) => list.map((r) => `${escapeControls(r.id)} (${paintState(r.state)}${r.required ? '' : ', any outcome'})`).join(', ') || paint('gray', '-')
    if (after.length + afterAny.length) print(`${paint('bold', 'waits for'.padEnd(12))} ${relatives(parents)}`)
    if (dependants.length) print(`${paint('bold', 'dependants'.padEnd(12))} ${relatives(dependants)}`)
    print()
    if (history.length === 0) print(paint('gray', 'no attempts yet'))
    else printTable(['ATTEMPT', 'WORKER', 'STARTED', 'DURATION', 'EXIT', 'ERROR'], history.map((a) => [
      String(a.attempt), a.worker ?? '-', a.started_at, a.duration_ms == null ? 'running' : formatSeconds(a.duration_ms),
      a.exit_code == null ? '-' : String(a.exit_code), a.error ?? '',
    ]))
    if (tail) {
      print(`\n${paint('bold', 'output (tail)')}`)
      const out = outputWriter()
      await out.write(Buffer.from(tail.endsWith('\n') ? tail : `${tail}\n`))
      await out.end()
    }
  },
})

const LOG_CHUNK = 1024 * 1024 // bytes read at a time: a log of any size is read and printed in constant memory
const LOG_LINE_LIMIT = 4096 // a longer line is output, never an attempt's header or footer
const HEADER_MARK = Buffer.from('\n=== attempt ')
// As latin1 each byte is one character, so string offsets are byte offsets (the "·" is 2 bytes).
const DOT = Buffer.from('·').toString('latin1')
const HEADER_LINE = new RegExp(`^=== attempt (\\d+) ${DOT} started (\\S+) .*$`)
const FOOTER_LINE = new RegExp(`\n?=== attempt \\d+ ${DOT} (.*) ${DOT} [\\d.]+s ===\n$`)
/** The states a job ends in, and what `logs --follow` exits with when it sees one. */
const FOLLOW_EXIT_CODES: Partial<Record<JobState, number>> = { completed: 0, dead: 1, cancelled: 1, skipped: 1 }

interface LogHeader {
  attempt: number
  started_at: string
  start: number
  body: number
}

/** Runs `fn` on the job's log open for reading; undefined if the job has no log yet. */
async function withLog<T>(path: string, fn: (fd: number, size: number) => Promise<T>): Promise<T | undefined> {
  let fd: number
  try {
    fd = openSync(path, 'r')
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw error
  }
  try {
    return await fn(fd, fstatSync(fd).size)
  } finally {
    closeSync(fd)
  }
}

/** Bytes from `start` up to `end` of the file, as many as `buffer` holds (fewer past the file's end). */
function readAt(fd: number, start: number, end: number, buffer = Buffer.allocUnsafe(Math.max(0, end - start))): Buffer {
  const length = Math.min(buffer.length, end - start)
  return buffer.subarray(0, length > 0 ? readSync(fd, buffer, 0, length, start) : 0)
}

/** The attempt header that is the line at `start`: 'partial' while that line is still being written. */
function headerAt(fd: number, start: number, size: number): LogHeader | 'partial' | undefined {
  const line = readAt(fd, start, Math.min(size, start + LOG_LINE_LIMIT))
  const eol = line.indexOf(10)
  if (eol === -1) return line.length < LOG_LINE_LIMIT ? 'partial' : undefined
  const match = HEADER_LINE.exec(line.toString('latin1', 0, eol))
  return match ? { attempt: Number(match[1]), started_at: match[2], start, body: start + eol + 1 } : undefined
}

/**
 * The first attempt header (of `attempt`, if given) that begins a line in [from, size), scanning in chunks. Without
 * one, `resume` is where a look at the log once it has grown goes on from.
 */
function findHeader(fd: number, from: number, size: number, attempt?: number): { header?: LogHeader; resume: number } {
  const at = (start: number) => {
    const header = headerAt(fd, start, size)
    if (header === 'partial') return { resume: start }
    if (header && (attempt === undefined || header.attempt === attempt)) return { header, resume: header.body }
  }
  const first = from === 0 ? at(0) : undefined
  if (first) return first
  const buffer = Buffer.allocUnsafe(LOG_CHUNK)
  let pos = Math.max(0, from - 1)
  for (;;) {
    const chunk = readAt(fd, pos, size, buffer)
    if (chunk.length < HEADER_MARK.length) break
    for (let i = chunk.indexOf(HEADER_MARK); i !== -1; i = chunk.indexOf(HEADER_MARK, i + 1)) {
      const found = at(pos + i + 1)
      if (found) return found
    }
    pos += chunk.length - HEADER_MARK.length + 1 // a mark across the chunk's end is found in the next one
  }
  return { resume: Math.max(from, pos + 1) }
}

/** The footer that closes an attempt's part [body, end) of the log, once the attempt has ended. */
function footerOf(fd: number, body: number, end: number): { start: number; newline: boolean; ended: string } | undefined {
  const from = Math.max(body, end - LOG_LINE_LIMIT)
  const match = FOOTER_LINE.exec(readAt(fd, from, end).toString('latin1'))
  return match ? { start: from + match.index, newline: match[0][0] === '\n', ended: Buffer.from(match[1], 'latin1').toString('utf8') } : undefined
}

/** Where the last `lines` lines of [start, end) begin, reading backwards from the end in chunks. */
function tailStart(fd: number, start: number, end: number, lines: number): number {
  if (lines === 0) return end
  const buffer = Buffer.allocUnsafe(LOG_CHUNK)
  let seen = 0
  for (let chunkEnd = end; chunkEnd > start;) {
    const chunkStart = Math.max(start, chunkEnd - LOG_CHUNK)
    const chunk = readAt(fd, chunkStart, chunkEnd, buffer)
    // the newline that ends the last line does not begin one
    let i = chunk.length - (chunkEnd === end && chunk[chunk.length - 1] === 10 ? 2 : 1)
    for (; i >= 0 && (i = chunk.lastIndexOf(10, i)) !== -1; i--) if (++seen === lines) return chunkStart + i + 1
    chunkEnd = chunkStart
  }
  return start
}

/**
 * The part of a log `logs` shows: all of it, or one attempt's (its header up to the next header). Each call looks
 * only at what the log gained since the last, so following a growing log never reads it again.
 */
function logSelection(attempt: number | undefined): (fd: number, size: number) => { start: number; end: number } | undefined {
  let start = attempt === undefined ? 0 : undefined
  let end: number | undefined
  let scanned = 0
  return (fd, size) => {
    if (start === undefined) {
      const found = findHeader(fd, scanned, size, attempt)
      scanned = found.resume
      if (!found.header) return undefined
      start = found.header.start
    }
    if (attempt !== undefined && end === undefined) {
      const next = findHeader(fd, scanned, size)
      scanned = next.resume
      end = next.header?.start
    }
    return { start, end: Math.min(end ?? size, size) }
  }
}

/** `logs --json`: one object per attempt, its output streamed from the log (it may be longer than a string can be). */
async function printLogSections(fd: number, size: number, attempt: number | undefined): Promise<number> {
  const buffer = Buffer.allocUnsafe(LOG_CHUNK)
  let count = 0
  for (let found = findHeader(fd, 0, size); found.header;) {
    const header = found.header
    found = findHeader(fd, header.body, size)
    if (attempt !== undefined && header.attempt !== attempt) continue
    const end = found.header?.start ?? size
    const footer = footerOf(fd, header.body, end)
    const section = { attempt: header.attempt, started_at: header.started_at, output: '', ended: footer?.ended ?? null }
    const [before, after] = JSON.stringify([section], null, 2).slice(2, -2).split('"output": ""')
    await writeStdout(`${count++ ? ',' : '['}\n${before}"output": "`)
    const decoder = new StringDecoder('utf8')
    const outputEnd = footer?.start ?? end
    for (let pos = header.body; pos < outputEnd; pos += LOG_CHUNK) {
      await writeStdout(JSON.stringify(decoder.write(readAt(fd, pos, outputEnd, buffer))).slice(1, -1))
    }
    await writeStdout(`${JSON.stringify(decoder.end() + (footer?.newline ? '\n' : '')).slice(1, -1)}"${after}`)
  }
  await writeStdout(count ? '\n]\n' : '[]\n')
  return count
}

const logsCommand = define({
  meta: { name: 'logs', description: "A job's captured stdout and stderr, every attempt" },
  args: {
    id: { type: 'positional', description: 'Job id' },
    follow: { type: 'boolean', alias: 'f', description: 'Keep printing while the job runs; exit 0 if it completes, 1 if it ends dead' },
    attempt: { type: 'string', description: 'Only this attempt' },
    tail: { type: 'string', description: 'Only the last N lines' },
    ...jsonArg,
  },
  examples: ['queuectl logs job1', 'queuectl logs job1 --follow', 'queuectl logs job1 --attempt 2 --tail 20', 'queuectl logs job1 --json   # one object per attempt'],
  async run({ args }) {
    const id = String(args.id)
    if (!isValidJobId(id)) throw new UsageError(`invalid job id ${describeValue(id)}`)
    const attempt = wholeFlag(args.attempt, '--attempt', 1, 1_000_000)
    const tail = wholeFlag(args.tail, '--tail', 0, 100_000_000)
    if (args.json && args.follow) throw new UsageError('--json prints the log as it is now; it does not go with --follow')
    await withQueue(async (queue) => {
      let job = await queue.getJob(id)
      if (!job) throw new QueueError(`no job with id "${id}"`)
      if (args.json) {
        if ((await withLog(await queue.readableLog(id), (fd, size) => printLogSections(fd, size, attempt))) === undefined) printJson([]) // no log yet
        return
      }
      // Following: each look prints what the selection gained since the last (an attempt may not have begun yet).
      const selection = logSelection(attempt)
      const out = outputWriter()
      let printed: number | undefined
      let lines = tail // only the first look is cut to its last lines: what comes later is all new
      for (;;) {
        const exitCode = FOLLOW_EXIT_CODES[job!.state]
        const size = await withLog(await queue.readableLog(id), async (fd, size) => {
          const selected = selection(fd, size)
          if (selected) {
            printed ??= lines === undefined ? selected.start : tailStart(fd, selected.start, selected.end, lines)
            await out.copy(fd, printed, selected.end)
            printed = Math.max(printed, selected.end)
          }
          return size
        })
        lines = undefined
        if (!args.follow) {
          if (!size) log.info(`job ${id} has no output yet`)
          if (attempt !== undefined && printed === undefined) throw new QueueError(`this job has no attempt ${attempt} in its log`)
          return out.end()
        }
        if (exitCode !== undefined) {
          await out.end()
          process.exitCode = exitCode
          return
        }
        await sleep(100)
        await queue.recoverLostJobs()
        job = (await queue.getJob(id)) ?? job
      }
    })
  },
})

const dlqCommand = define({
  meta: { name: 'dlq', description: 'The dead letter queue: jobs that failed every attempt' },
  subCommands: {
    list: define({
      meta: { name: 'list', description: 'The dead jobs, newest first' },
      args: { limit: { type: 'string', description: 'At most this many', default: '100' }, ...jsonArg },
      examples: ['queuectl dlq list', 'queuectl dlq list --json'],
      async run({ args }) {
        const limit = wholeFlag(args.limit, '--limit', 1, 10_000_000)!
        const jobs = await withQueue((queue) => queue.listJobs({ state: 'dead', limit }))
        if (args.json) return printJson(jobs)
        if (jobs.length === 0) return print(paint('gray', 'the dead letter queue is empty'))
        printTable(['ID', 'ATTEMPTS', 'LAST ERROR', 'DIED', 'COMMAND'], jobs.map((job) => [
          job.id, String(job.attempts), job.last_error ?? '-', ago(job.finished_at), job.command,
        ]))
      },
    }),
    retry: define({
      meta: { name: 'retry', description: 'Move dead jobs back to pending with attempts reset to 0' },
      args: { ...idsArg, all: { type: 'boolean', description: 'Every dead job' }, ...jsonArg },
      examples: ['queuectl dlq retry job1 job2', 'queuectl dlq retry --all'],
      async run({ args }) {
        const ids = args._.map(String)
        if (args.all && ids.length) throw new UsageError('give job ids or --all, not both')
        if (!args.all && ids.length === 0) throw new UsageError('name the dead jobs to retry, or use --all')
        for (const id of ids) if (!isValidJobId(id)) throw new UsageError(`invalid job id ${describeValue(id)}`)
        const { retried, revived } = await withQueue((queue) => queue.retryJobs(args.all ? 'all' : ids, { deadOnly: true }))
        if (args.json) return printJson(retried)
        if (retried.length) print(retried.join('\n'))
        log.success(`${retried.length} job${retried.length === 1 ? '' : 's'} moved back to pending`)
        if (revived) log.info(`${revived} skipped dependant${revived === 1 ? '' : 's'} back to blocked`)
      },
    }),
  },
  examples: ['queuectl dlq list', 'queuectl dlq retry job1', 'queuectl dlq retry --all'],
})

function signalFlag(value: unknown): NodeJS.Signals | undefined {
  const text = stringFlag(value, '--signal')
  return text === undefined ? undefined : parseSignal(text)
}


function jobIdArgs(args: { _: unknown[] }): string[] {
  const ids = args._.map(String)
  for (const id of ids) if (!isValidJobId(id)) throw new UsageError(`invalid job id ${describeValue(id)}`)
  return ids
}

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`

/**
 * Waits until every job of `ids` is terminal, woken by changes to the home (a poll backs it up). Says on stderr
 * what ended and, once nothing has moved for STALL_MS, why nothing can. Resolves to wait's exit code.
 */
async function waitForJobs(queue: Queue, ids: string[], options: { timeoutMs?: number; quiet?: boolean; json?: boolean }): Promise<number> {
  const say = (text: string) => options.quiet || log.info(text)
  const deadline = options.timeoutMs === undefined ? Infinity : clockNow() + options.timeoutMs
  const ended = new Map<string, { id: string; state: JobState | 'removed'; exit_code: number | null; attempts: number }>()
  let lastMove = clockNow()
  let explained = false
  let changed: () => void = () => {}
  let watcher: FSWatcher | undefined
  try {
    watcher = watch(queue.home, () => changed())
  } catch {
    // the poll below still sees every change
  }
  try {
    say(ids.length === 1 ? `waiting for job ${ids[0]}` : `waiting for ${plural(ids.length, 'job')}`)
    for (;;) {
      await queue.recoverLostJobs()
      const states = await queue.jobStates(ids.filter((id) => !ended.has(id)))
      for (const [id, job] of states) {
        if (job && !isTerminal(job.state)) continue
        ended.set(id, job ? { id, state: job.state, exit_code: job.exit_code, attempts: job.attempts } : { id, state: 'removed', exit_code: null, attempts: 0 })
        lastMove = clockNow()
        say(job ? `job ${id} ${job.state}${job.state === 'completed' || !job.last_error ? '' : `: ${job.last_error}`}` : `job ${id} was removed`)
      }
      const left = ids.filter((id) => !ended.has(id))
      if (left.length === 0) break
      if (clockNow() >= deadline) {
        say(`timed out with ${plural(left.length, 'job')} not finished: ${left.slice(0, 10).join(', ')}${left.length > 10 ? ', …' : ''}`)
        if (options.json) printJson(ids.map((id) => ended.get(id) ?? pick(states.get(id)!)))
        return 124
      }
      if (!explained && clockNow() - lastMove > STALL_MS) {
        explained = true
        for (const reason of await stallReasons(queue, left)) say(`nothing is moving: ${reason}`)
      }
      await new Promise<void>((resolveWait) => {
        const timer = setTimeout(resolveWait, Math.min(500, Math.max(1, deadline - clockNow())))
        changed = () => {
          clearTimeout(timer)
          resolveWait()
        }
      })
    }
  } finally {
    watcher?.close()
  }
  const results = ids.map((id) => ended.get(id)!)
  if (options.json) printJson(results)
  return results.every((r) => r.state === 'completed') ? 0 : 1
}

const pick = (job: { id: string; state: JobState; exit_code: number | null; attempts: number }) => ({ id: job.id, state: job.state, exit_code: job.exit_code, attempts: job.attempts })
const STALL_MS = envNumber('QUEUECTL_STALL_SECONDS', 10) * 1000

/** Why the jobs still waited for cannot progress: no worker, a paused queue, a blocked job and what holds it. */
async function stallReasons(queue: Queue, ids: string[]): Promise<string[]> {
  const reasons: string[] = []
  const { workers } = await queue.status()
  if (workers.length === 0) reasons.push('no worker is alive (start one: queuectl worker start)')
  const states = await queue.jobStates(ids)
  const queues = new Map((await queue.listQueues()).map((q) => [q.name, q]))
  for (const name of new Set([...states.values()].flatMap((job) => (job ? [job.queue] : [])))) {
    if (queues.get(name)?.paused) reasons.push(`queue ${name} is paused (queuectl resume --queue ${name})`)
  }
  for (const job of states.values()) {
    if (job?.state !== 'blocked' || reasons.length >= 5) continue
    const parents = (await queue.getJob(job.id))?.parents.filter((p) => p.required ? p.state !== 'completed' : !isTerminal(p.state)) ?? []
    reasons.push(`job ${job.id} is blocked: it waits for ${parents.map((p) => `${p.id} (${p.state})`).join(', ')}`)
  }
  return reasons
}

const waitCommand = define({
  meta: { name: 'wait', description: 'Wait until jobs are finished: exit 0 if all completed, 1 if any did not, 124 on --timeout' },
  args: {
    ...idsArg,
    queue: { type: 'string', description: 'Wait for the jobs of this queue that are active now' },
    all: { type: 'boolean', description: 'Wait for every job active now (the default without ids)' },
    timeout: { type: 'string', description: 'Give up after this long (exit 124): 30s, 5m, 2h' },
    quiet: { type: 'boolean', alias: 'q', description: 'Print nothing on stderr' },
    ...jsonArg,
  },
  examples: ['queuectl wait job1 job2', 'id=$(queuectl enqueue "make build") && queuectl wait "$id" && ./deploy.sh', 'queuectl wait --queue build --timeout 10m', 'queuectl wait --all --quiet; echo $?'],
  async run({ args }) {
    const ids = jobIdArgs(args)
    const queueName = stringFlag(args.queue, '--queue')
    if ([ids.length > 0, queueName !== undefined, Boolean(args.all)].filter(Boolean).length > 1) throw new UsageError('wait for job ids, --queue Q or --all: one of them')
    if (queueName !== undefined) checkQueueName(queueName)
    const timeoutMs = durationFlag(args.timeout, '--timeout')
    process.exitCode = await withQueue(async (queue) => {
      if (ids.length) {
        for (const [id, job] of await queue.jobStates(ids)) if (!job) throw new UsageError(`no job with id "${id}"`)
      }
      const targets = ids.length ? [...new Set(ids)] : await queue.activeJobIds(queueName)
      return waitForJobs(queue, targets, { timeoutMs, quiet: Boolean(args.quiet), json: Boolean(args.json) })
    })
  },
})

const killCommand = define({
  meta: { name: 'kill', description: 'Cancel jobs: waiting ones at once; running ones get --signal, then SIGKILL after --grace' },
  args: {
    ...idsArg,
    queue: { type: 'string', description: 'Every active job of this queue' },
    all: { type: 'boolean', description: 'Every active job' },
    signal: { type: 'string', description: 'Signal for a running job\'s process group (default TERM)' },
    grace: { type: 'string', description: 'Time between the signal and SIGKILL (default 10s)' },
    wait: { type: 'boolean', description: 'Return once the jobs are finished, not when the request is stored' },
    ...jsonArg,
  },
  examples: ['queuectl kill job1', 'queuectl kill --queue build --signal INT --grace 30s', 'queuectl kill --all --wait'],
  async run({ args }) {
    const ids = jobIdArgs(args)
    const queueName = stringFlag(args.queue, '--queue')
    const targets = [ids.length > 0, queueName !== undefined, Boolean(args.all)].filter(Boolean).length
    if (targets === 0) throw new UsageError('kill what? give job ids, --queue Q or --all')
    if (targets > 1) throw new UsageError('give job ids, --queue Q or --all: one of them')
    if (queueName !== undefined) checkQueueName(queueName)
    const signal = signalFlag(args.signal)
    const graceMs = durationFlag(args.grace, '--grace')
    await withQueue(async (queue) => {
      const result = await queue.kill(ids.length ? { ids } : { queue: queueName }, { signal, graceMs })
      if (args.json) printJson(result)
      else for (const id of [...result.cancelled, ...result.signalled]) print(id)
      if (result.cancelled.length) log.success(`cancelled ${plural(result.cancelled.length, 'job')}`)
      if (result.signalled.length) log.info(`asked the workers of ${plural(result.signalled.length, 'running job')} to stop ${result.signalled.length === 1 ? 'it' : 'them'} (${signal ?? 'SIGTERM'})`)
      if (result.finished.length) {
        log.warn(`already finished: ${result.finished.map((f) => `${f.id} (${f.state})`).join(', ')}`)
        process.exitCode = 1
      }
      if (args.wait && result.signalled.length) {
        const code = await waitForJobs(queue, result.signalled, { quiet: true })
        if (code === 124) process.exitCode = 1
      }
    })
  },
})

const rmCommand = define({
  meta: { name: 'rm', description: 'Delete jobs that are not running, with their history and logs' },
  args: { ...idsArg, force: { type: 'boolean', description: 'Kill a running job first (SIGKILL), then delete it' }, ...jsonArg },
  examples: ['queuectl rm job1 job2', 'queuectl rm --force job1'],
  async run({ args }) {
    const ids = jobIdArgs(args)
    if (ids.length === 0) throw new UsageError('name the jobs to remove: queuectl rm ID…')
    const removed = await withQueue(async (queue) => {
      if (args.force) {
        const running = [...(await queue.jobStates(ids)).values()].flatMap((job) => (job?.state === 'processing' ? [job.id] : []))
        if (running.length) await queue.kill({ ids: running }, { signal: 'SIGKILL', graceMs: 0 })
        if (running.length) await waitForJobs(queue, running, { quiet: true })
      }
      return queue.removeJobs(ids)
    })
    if (args.json) return printJson(removed)
    print(removed.join('\n'))
    log.success(`removed ${plural(removed.length, 'job')}`)
  },
})

const retryCommand = define({
  meta: { name: 'retry', description: 'Move dead, cancelled or skipped jobs back to pending, attempts reset to 0' },
  args: { ...idsArg, ...jsonArg },
  examples: ['queuectl retry job1', 'queuectl retry $(queuectl list --state cancelled --json | jq -r ".[].id")'],
  async run({ args }) {
    const ids = jobIdArgs(args)
    if (ids.length === 0) throw new UsageError('name the jobs to retry: queuectl retry ID…')
    const { retried, revived } = await withQueue((queue) => queue.retryJobs(ids))
    if (args.json) return printJson(retried)
    print(retried.join('\n'))
    log.success(`${plural(retried.length, 'job')} moved back to pending`)
    if (revived) log.info(`${plural(revived, 'skipped dependant')} back to blocked`)
  },
})

const queueCommand = define({
  meta: { name: 'queue', description: 'Named queues: their limits, pause state and counts' },
  subCommands: {
    ls: define({
      meta: { name: 'ls', description: 'Every queue with its limit, pause state and jobs by state' },
      args: { ...jsonArg },
      examples: ['queuectl queue ls', 'queuectl queue ls --json'],
      async run({ args }) {
        const queues = await withQueue((queue) => queue.listQueues())
        if (args.json) return printJson(queues)
        printTable(['QUEUE', 'LIMIT', 'PAUSED', ...JOB_STATES.map((s) => s.toUpperCase())], queues.map((q) => [
          q.name, q.concurrency === null ? 'unlimited' : String(q.concurrency), q.paused ? paint('yellow', 'paused') : 'no', ...JOB_STATES.map((s) => String(q.counts[s])),
        ]))
      },
    }),
    set: define({
      meta: { name: 'set', description: 'Cap how many jobs of a queue run at once, across all workers and hosts' },
      args: { name: { type: 'positional', description: 'Queue name' }, concurrency: { type: 'string', description: 'A number from 1 to 10000, or unlimited' } },
      examples: ['queuectl queue set deploy --concurrency 1', 'queuectl queue set build --concurrency unlimited'],
      async run({ args }) {
        const name = String(args.name)
        const text = stringFlag(args.concurrency, '--concurrency')
        if (text === undefined) throw new UsageError('queue set needs --concurrency N (1–10000) or --concurrency unlimited')
        if (text.trim() === '0') throw new UsageError('--concurrency 0 would stop the queue: use queuectl pause --queue ' + name)
        const limit = text.trim() === 'unlimited' ? null : wholeFlag(text, '--concurrency', 1, 10_000)!
        await withQueue((queue) => queue.setQueueConcurrency(name, limit))
        print(`${name}: concurrency ${limit ?? 'unlimited'}`)
      },
    }),
  },
  examples: ['queuectl queue ls', 'queuectl queue set deploy --concurrency 1'],
})

function pauseCommand(paused: boolean) {
  const verb = paused ? 'pause' : 'resume'
  return define({
    meta: { name: verb, description: paused ? 'Stop starting jobs from a queue (or all); running jobs go on; stored until resume' : 'Start jobs from a paused queue (or all) again' },
    args: { queue: { type: 'string', description: `The queue to ${verb}` }, all: { type: 'boolean', description: `Every queue${paused ? ', also those created later' : ''}` } },
    examples: [`queuectl ${verb} --queue deploy`, `queuectl ${verb} --all`],
    async run({ args }) {
      const queueName = stringFlag(args.queue, '--queue')
      if (queueName === undefined && !args.all) throw new UsageError(`${verb} what? give --queue Q or --all`)
      if (queueName !== undefined && args.all) throw new UsageError(`give --queue Q or --all, not both`)
      const changed = await withQueue((queue) => queue.setPaused(args.all ? { all: true } : { queue: queueName }, paused))
      const state = paused ? 'paused' : 'running'
      if (args.all) print(changed.length ? `${verb}d ${changed.join(', ')}` : `every queue was already ${state}`)
      else print(changed.length ? `queue ${queueName} ${paused ? 'paused' : 'resumed'}` : `queue ${queueName} was already ${state}`)
    },
  })
}

const NOTHING_FIRES = 'no worker is running, so no schedule fires: start one with queuectl worker start'

/** `2026-03-29 03:00 +02:00`: a time as the clocks of `tz` show it, with their offset (a time repeated in autumn is two). */
function zonedTime(ms: number, tz: string): string {
  const parts = Object.fromEntries(new Intl.DateTimeFormat('en-US', { timeZone: tz, hourCycle: 'h23', year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit' })
    .formatToParts(new Date(ms)).map((part) => [part.type, part.value]))
  const wall = Date.UTC(Number(parts.year), Number(parts.month) - 1, Number(parts.day), Number(parts.hour), Number(parts.minute), Number(parts.second))
  const offset = Math.round((wall - Math.floor(ms / 1000) * 1000) / 60_000)
  const hhmm = [Math.floor(Math.abs(offset) / 60), Math.abs(offset) % 60].map((n) => String(n).padStart(2, '0')).join(':')
  return `${parts.year}-${parts.month}-${parts.day} ${parts.hour}:${parts.minute}${parts.second === '00' ? '' : `:${parts.second}`} ${offset < 0 ? '-' : '+'}${hhmm}`
}

const scheduleTiming = (s: ScheduleInfo) => s.cron ?? `every ${s.every}`
const scheduleWhen = (at: string | null, tz: string) => (at ? `${zonedTime(Date.parse(at), tz)} (${ago(at)})` : '-')

function scheduleNameArg(args: { _: unknown[] }): string {
  const [name, ...rest] = args._.map(String)
  if (name === undefined) throw new UsageError('which schedule? give its name (see queuectl schedule ls)')
  if (rest.length) throw new UsageError(`one schedule name, not ${args._.length}: ${args._.map((a) => describeValue(String(a))).join(' ')}`)
  return name
}

const scheduleCommand = define({
  meta: { name: 'schedule', description: 'Recurring jobs: a cron expression or an interval, fired by the workers' },
  subCommands: {
    add: define({
      meta: { name: 'add', description: 'Add a schedule: NAME --cron EXPR | --every DUR [job flags] -- CMD; each fire enqueues the job NAME:<fire time>' },
      args: {
        name: { type: 'positional', required: false, description: 'Its name: 1–64 of A-Z a-z 0-9 _ . - (not starting with . or -)' },
        command: { type: 'positional', required: false, description: 'The command (run with /bin/sh -c)' },
        cron: { type: 'string', description: '5 fields (minute hour day-of-month month day-of-week), or @hourly, @daily, @weekly, @monthly, @yearly' },
        every: { type: 'string', description: 'Or an interval: 10s at least, 5m, 2h, 1d' },
        tz: { type: 'string', description: "The zone --cron is read in (default: the system's, stored now)" },
        replace: { type: 'boolean', description: 'Replace the schedule of that name' },
        ...jobArgs,
        ...jsonArg,
      },
      examples: [
        "queuectl schedule add nightly --cron '0 2 * * *' -- ./backup.sh --full",
        "queuectl schedule add report --cron '30 8 * * MON-FRI' --tz Europe/Berlin --queue mail 'make report'",
        'queuectl schedule add ping --every 5m --timeout 30s -- curl -fsS https://example.com/health',
      ],
      async run({ args }) {
        const [name, ...words] = args._.map(String)
        if (name === undefined) throw new UsageError("schedule add needs a name and a command: queuectl schedule add NAME --cron '0 2 * * *' -- CMD")
        if (words.length === 0) throw new UsageError(`schedule ${name} needs a command: put it after --`)
        const job = { ...jobFlags(args), command: words.length === 1 ? words[0] : quoteCommand(words) }
        const [schedule, alive] = await withQueue(async (queue) => [await queue.addSchedule({
          name, cron: stringFlag(args.cron, '--cron'), every: stringFlag(args.every, '--every'), tz: stringFlag(args.tz, '--tz'), replace: Boolean(args.replace), job,
        }), await queue.hasLiveWorker()] as const)
        if (args.json) printJson(schedule)
        else print(`schedule ${name}: ${scheduleTiming(schedule)} (${schedule.tz}), next ${scheduleWhen(schedule.next_at, schedule.tz)}`)
        if (!alive) log.info(NOTHING_FIRES)
      },
    }),
    ls: define({
      meta: { name: 'ls', description: 'Every schedule: its timing and zone, next and last fire, missed and skipped fires, pause' },
      args: { ...jsonArg },
      examples: ['queuectl schedule ls', 'queuectl schedule ls --json'],
      async run({ args }) {
        const [schedules, alive] = await withQueue(async (queue) => [await queue.listSchedules(), await queue.hasLiveWorker()] as const)
        if (args.json) printJson(schedules)
        else if (schedules.length === 0) print(paint('gray', 'no schedules'))
        else {
          printTable(['NAME', 'SCHEDULE', 'ZONE', 'NEXT', 'LAST', 'MISSED', 'SKIPPED', 'PAUSED', 'COMMAND'], schedules.map((s) => [
            s.name, scheduleTiming(s), s.tz, s.paused ? ['yellow', 'paused'] : scheduleWhen(s.next_at, s.tz), scheduleWhen(s.last_at, s.tz),
            String(s.missed), String(s.skipped), s.paused ? ['yellow', 'yes'] : 'no', s.job.command,
          ]))
        }
        if (!alive && schedules.some((s) => !s.paused)) log.warn(NOTHING_FIRES)
      },
    }),
    rm: define({
      meta: { name: 'rm', description: 'Remove a schedule (the jobs it enqueued stay)' },
      args: { name: { type: 'positional', required: false, description: 'The schedule' } },
      examples: ['queuectl schedule rm nightly'],
      async run({ args }) {
        const name = scheduleNameArg(args)
        await withQueue((queue) => queue.removeSchedule(name))
        print(`schedule ${name} removed`)
      },
    }),
    pause: define({
      meta: { name: 'pause', description: 'Stop a schedule firing (stored until resume); its jobs go on' },
      args: { name: { type: 'positional', required: false, description: 'The schedule' } },
      examples: ['queuectl schedule pause nightly'],
      async run({ args }) {
        const name = scheduleNameArg(args)
        print(await withQueue((queue) => queue.setSchedulePaused(name, true)) ? `schedule ${name} paused` : `schedule ${name} was already paused`)
      },
    }),
    resume: define({
      meta: { name: 'resume', description: 'Fire a paused schedule again, from its next time on (the times it was paused are not missed)' },
      args: { name: { type: 'positional', required: false, description: 'The schedule' } },
      examples: ['queuectl schedule resume nightly'],
      async run({ args }) {
        const name = scheduleNameArg(args)
        const [changed, schedule] = await withQueue(async (queue) => [await queue.setSchedulePaused(name, false), (await queue.listSchedules()).find((s) => s.name === name)!] as const)
        print(changed ? `schedule ${name} resumed: next ${scheduleWhen(schedule.next_at, schedule.tz)}` : `schedule ${name} was not paused`)
      },
    }),
    run: define({
      meta: { name: 'run', description: "Enqueue the schedule's job now (id NAME:<now>), whatever its time and pause; prints its id" },
      args: { name: { type: 'positional', required: false, description: 'The schedule' }, ...jsonArg },
      examples: ['queuectl schedule run nightly'],
      async run({ args }) {
        const name = scheduleNameArg(args)
        const job = await withQueue((queue) => queue.runSchedule(name))
        if (args.json) printJson(job)
        else print(job.id)
        if (job.duplicate) log.info(`duplicate of ${job.id} (${job.state}): not enqueued`)
      },
    }),
  },
  examples: ["queuectl schedule add nightly --cron '0 2 * * *' -- ./backup.sh", 'queuectl schedule ls', 'queuectl schedule run nightly'],
})

const configCommand = define({
  meta: { name: 'config', description: 'Settings stored with the queue' },
  subCommands: {
    list: define({
      meta: { name: 'list', description: 'Every setting and its value' },
      args: { ...jsonArg },
      examples: ['queuectl config list'],
      async run({ args }) {
        const config = await withQueue(async (queue) => (args.json ? queue.getConfig() : queue.getConfigText()))
        if (args.json) return printJson(config)
        const shown = (value: string | number) => (value === '' ? '-' : String(value))
        printTable(['KEY', 'VALUE', 'DEFAULT', 'MEANING'], Object.entries(CONFIG_KEYS).map(([key, def]) => [key, shown(config[key as ConfigName]), shown(def.default), `${def.does}; ${def.range}`]))
      },
    }),
    get: define({
      meta: { name: 'get', description: 'One setting' },
      args: { key: { type: 'positional', description: 'Setting name' }, ...jsonArg },
      examples: ['queuectl config get max-retries'],
      async run({ args }) {
        const key = normalizeConfigKey(String(args.key))
        const value = await withQueue(async (queue) => (args.json ? queue.getConfig() : queue.getConfigText()))
        if (args.json) printJson({ [key]: value[key] })
        else print(String(value[key]))
      },
    }),
    set: define({
      meta: { name: 'set', description: 'Change a setting' },
      args: { key: { type: 'positional', description: 'Setting name' }, value: { type: 'positional', description: 'New value' } },
      examples: ['queuectl config set max-retries 5', 'queuectl config set backoff_base 3', 'queuectl config set retention 7d'],
      async run({ args }) {
        const key = normalizeConfigKey(String(args.key))
        const text = await withQueue(async (queue) => {
          await queue.setConfig(key, String(args.value))
          return (await queue.getConfigText())[key]
        })
        print(text === '' ? `${key} cleared` : `${key} = ${text}`)
      },
    }),
    reset: define({
      meta: { name: 'reset', description: 'Every setting back to its default' },
      examples: ['queuectl config reset'],
      async run() {
        await withQueue((queue) => queue.resetConfig())
        log.success('configuration reset to defaults')
      },
    }),
  },
  examples: ['queuectl config list', 'queuectl config set max-retries 5', 'queuectl config get backoff_base', 'queuectl config reset'],
})

const statsCommand = define({
  meta: { name: 'stats', description: 'Execution metrics: states, success rate, durations, throughput' },
  args: { ...jsonArg },
  examples: ['queuectl stats', 'queuectl stats --json'],
  async run({ args }) {
    const stats = await withQueue((queue) => queue.stats())
    if (args.json) return printJson(stats)
    const ms = (value: number | null) => (value == null ? '-' : formatSeconds(value))
    const { finished, attempts } = stats
    printTable(['METRIC', 'VALUE'], [
      ['jobs', JOB_STATES.map((state) => `${stats.counts[state]} ${state}`).join(', ')],
      ['success rate', stats.success_rate == null ? '-' : `${(stats.success_rate * 100).toFixed(1)}% of finished jobs`],
      ['attempts', `${attempts.completed} completed · ${attempts.failed} failed · ${attempts.lost} worker lost · ${attempts.cancelled ? `${attempts.cancelled} cancelled · ` : ''}${attempts.released} not counted (released)`],
      ['retries', String(stats.retries)],
      ['duration', `mean ${ms(stats.duration_ms.mean)} · p50 ${ms(stats.duration_ms.p50)} · p95 ${ms(stats.duration_ms.p95)}`],
      ['finished', `${finished.last_1m} in 1m · ${finished.last_5m} in 5m · ${finished.last_15m} in 15m (${(finished.last_5m / 5).toFixed(1)}/min)`],
      ['oldest waiting', stats.oldest_pending_wait_ms == null ? '-' : formatSeconds(stats.oldest_pending_wait_ms)],
    ])
  },
})

const purgeCommand = define({
  meta: { name: 'purge', description: 'Delete finished jobs (completed, dead, cancelled, skipped) and their logs; parents an active job waits for stay' },
  args: {
    state: { type: 'string', description: `Only jobs in this finished state: ${TERMINAL_STATES.join(', ')}` },
    'older-than': { type: 'string', description: 'Only jobs finished longer ago than this: 7d, 12h, 30m' },
    ...jsonArg,
  },
  examples: ['queuectl purge --older-than 7d', 'queuectl purge --state completed', 'queuectl config set retention 7d   # purge automatically'],
  async run({ args }) {
    const state = stringFlag(args.state, '--state') as JobState | undefined
    const olderThanMs = durationFlag(args['older-than'], '--older-than') ?? 0
    const ids = await withQueue((queue) => queue.purge({ states: state ? [state] : undefined, olderThanMs }))
    if (args.json) return printJson(ids)
    print(`Purged ${ids.length} job${ids.length === 1 ? '' : 's'}.`)
  },
})

const dashboardCommand = define({
  meta: { name: 'dashboard', description: 'Serve a web page for monitoring the queue (JSON API under /api, /metrics)' },
  args: {
    port: { type: 'string', description: 'Port (default 7777; 0 = any free port)' },
    host: { type: 'string', description: 'Address to bind (default 127.0.0.1)' },
    token: { type: 'string', description: 'The token every request needs (default: $QUEUECTL_DASHBOARD_TOKEN, else <home>/dashboard.token)' },
    'allow-enqueue': { type: 'boolean', description: 'Let the page and the API add jobs' },
  },
  examples: ['queuectl dashboard   # prints the URL to open, with the token', 'queuectl dashboard --port 8080 --allow-enqueue', 'queuectl dashboard --host 0.0.0.0'],
  async run({ args }) {
    const port = wholeFlag(args.port, '--port', 0, 65535) ?? 7777
    const host = stringFlag(args.host, '--host') ?? '127.0.0.1'
    const given = givenDashboardToken(stringFlag(args.token, '--token'))
    const queue = await openQueue(cliHome ?? defaultHome())
    const token = given ?? storedDashboardToken(queue.home)
    const server = await serveDashboard(queue, { port, host, token, allowEnqueue: Boolean(args['allow-enqueue']) })
    const { port: bound } = server.address() as import('node:net').AddressInfo
    const shown = host.includes(':') ? `[${host}]` : host === '0.0.0.0' ? hostname() : host
    print(`Dashboard: http://${shown}:${bound}/?token=${token}`)
    log.info('Ctrl-C to stop')
    await new Promise<void>((resolveStop) => {
      for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.once(signal, () => resolveStop())
    })
    server.closeAllConnections()
    await new Promise((r) => server.close(r))
    queue.close()
  },
})

// Shell completions: @bomb.sh/tab (loaded only here) gives the scripts and matches a line against the command tree,
// which is registered from `cli` itself, so every command and flag completes without a list of them here.

const COMPLETION_SHELLS = ['bash', 'zsh', 'fish'] as const
/** Values read from the home at TAB, newest jobs first; a prefix is matched in SQL so an old id still completes. */
const STORED_VALUES = {
  jobs: "SELECT id, state || ': ' || command AS about FROM jobs WHERE substr(id, 1, ?) = ? ORDER BY seq DESC LIMIT 50",
  dead: "SELECT id, 'dead: ' || command AS about FROM jobs WHERE state = 'dead' AND substr(id, 1, ?) = ? ORDER BY seq DESC LIMIT 50",
  queues: "SELECT name AS id, '' AS about FROM queues WHERE substr(name, 1, ?) = ? ORDER BY name",
  schedules: "SELECT name AS id, '' AS about FROM schedules WHERE substr(name, 1, ?) = ? ORDER BY name",
}
type StoredValues = keyof typeof STORED_VALUES

/** What an argument takes, by its name (and its command's group), so that a new command using these names gets them. */
function completionValues(path: string[], name: string, arg: ArgDef): readonly string[] | StoredValues | undefined {
  if (arg.type === 'enum') return arg.options
  if (arg.type === 'positional' && (name === 'id' || name === 'ids')) return path[0] === 'dlq' ? 'dead' : 'jobs'
  if (name === 'queue' || (name === 'name' && path[0] === 'queue')) return 'queues'
  if (name === 'schedule' || (name === 'name' && path[0] === 'schedule')) return 'schedules'
  if (name === 'state') return JOB_STATES
  if (name === 'key' && path[0] === 'config') return Object.keys(CONFIG_KEYS)
  if (name === 'shell') return COMPLETION_SHELLS
  return undefined
}

/** tab's handlers are synchronous: one whose values are not read yet throws this, and the line is matched again. */
class ValuesNeeded {
  constructor(readonly kind: StoredValues) {}
}

/**
 * `queuectl complete -- WORDS…`, which the scripts run at TAB: prints the candidates for the last word. The home is
 * read as any reader does, without the lock, and only when the candidates are stored values.
 */
async function printCompletions(words: string[]): Promise<void> {
  const dashes = words.indexOf('--')
  if (dashes !== -1 && dashes < words.length - 1) return // the job's own command line follows
  // tab takes a flag's value to be the next word: `--home=DIR` is given as two words
  const given = words.slice(0, -1).flatMap((word) => (/^--[\w-]+=/.test(word) ? [word.slice(0, word.indexOf('=')), word.slice(word.indexOf('=') + 1)] : [word]))
  const current = words[words.length - 1] ?? ''
  const at = given.indexOf('--home')
  const home = at === -1 || at === given.length - 1 ? defaultHome() : resolve(given[at + 1].replace(/^~(?=\/|$)/, process.env.HOME ?? '~'))
  const dbAt = given.indexOf('--db')
  const db = dbAt === -1 || dbAt === given.length - 1 ? process.env.QUEUECTL_DB : given[dbAt + 1]
  const prefix = current.replace(/^--?[\w-]+=/, '')
  const stored = new Map<StoredValues, { id: string; about: string }[]>()
  const offer = (values: readonly string[] | StoredValues) => (complete: (value: string, description: string) => void) => {
    if (typeof values !== 'string') return values.forEach((value) => complete(value, ''))
    const rows = stored.get(values)
    if (!rows) throw new ValuesNeeded(values)
    for (const row of rows) if (!given.includes(row.id)) complete(row.id, escapeControls(row.about).slice(0, 60))
  }
  const { default: root } = await import('@bomb.sh/tab')
  const register = (node: typeof root | ReturnType<typeof root.command>, def: CommandDef<ArgsDef>, path: string[]) => {
    for (const [name, arg] of Object.entries((def.args ?? {}) as ArgsDef)) {
      const values = completionValues(path, name, arg)
      const alias = ([] as string[]).concat((arg as { alias?: string | string[] }).alias ?? [])[0]
      if (arg.type === 'positional') node.argument(name, values && offer(values), name === 'ids')
      else if (arg.type === 'boolean') node.option(name, arg.description ?? '', alias)
      else node.option(name, arg.description ?? '', values ? offer(values) : () => {}, alias) // a handler marks a flag that takes a value
    }
    for (const [name, sub] of Object.entries((def.subCommands ?? {}) as Record<string, CommandDef<ArgsDef>>)) {
      const meta = sub.meta as { description?: string; hidden?: boolean }
      if (!meta.hidden) register(root.command([...path, name].join(' '), meta.description ?? ''), sub, [...path, name])
    }
  }
  register(root, cli as CommandDef<ArgsDef>, [])
  for (;;) {
    try {
      return root.parse([...given, current])
    } catch (error) {
      if (!(error instanceof ValuesNeeded)) throw error
      stored.set(error.kind, db || existsSync(join(home, 'queue.db'))
        ? await withQueue((queue) => queue.storage.read((sql) => sql.all<{ id: string; about: string }>(STORED_VALUES[error.kind], [prefix.length, prefix])), home, db)
        : [])
    }
  }
}

const completionsCommand = define({
  meta: { name: 'completions', description: 'Print a completion script for bash, zsh or fish (--help says where to put it)' },
  args: { shell: { type: 'positional', description: COMPLETION_SHELLS.join(', ') } },
  examples: [
    'queuectl completions bash > ~/.local/share/bash-completion/completions/queuectl   # needs the bash-completion package',
    'queuectl completions zsh > ~/.zfunc/_queuectl   # with fpath=(~/.zfunc $fpath) before compinit in ~/.zshrc',
    'queuectl completions fish > ~/.config/fish/completions/queuectl.fish',
    'source <(queuectl completions bash)   # this shell only',
  ],
  async run({ args }) {
    const shell = String(args.shell)
    if (!(COMPLETION_SHELLS as readonly string[]).includes(shell)) throw new UsageError(`no completions for "${shell}": use one of ${COMPLETION_SHELLS.join(', ')}`)
    const { script } = await import('@bomb.sh/tab')
    script(shell, 'queuectl', 'queuectl')
  },
})

const cli = define({
  meta: { name: 'queuectl', version: VERSION, description: 'A durable background job queue for shell commands' },
  args: {
    home: { type: 'string', description: 'Queue folder (default: $QUEUECTL_HOME or ~/.queuectl)' },
    db: { type: 'string', description: 'PostgreSQL for the whole queue: postgres://user@host/db[?schema=NAME] (default: $QUEUECTL_DB, else the SQLite file in the home)' },
  },
  subCommands: {
    enqueue: enqueueCommand,
    worker: workerCommand,
    status: statusCommand,
    list: listCommand,
    show: showCommand,
    logs: logsCommand,
    dlq: dlqCommand,
    config: configCommand,
    stats: statsCommand,
    purge: purgeCommand,
    dashboard: dashboardCommand,
    wait: waitCommand,
    kill: killCommand,
    rm: rmCommand,
    retry: retryCommand,
    queue: queueCommand,
    pause: pauseCommand(true),
    resume: pauseCommand(false),
    schedule: scheduleCommand,
    completions: completionsCommand,
    complete: define({
      meta: { name: 'complete', hidden: true, description: 'What the completion scripts run at TAB' },
      run: ({ args }) => printCompletions(args._.map(String)),
    }),
  },
  examples: [
    'queuectl enqueue "make test"',
    'queuectl worker start --count 2',
    'queuectl status',
    'queuectl list --state dead',
    'QUEUECTL_DB=postgres://queuectl@db.internal/jobs queuectl worker start   # one queue for workers on many hosts',
  ],
})

/** Walks argv to the command it names; returns that command, its parent, and its own arguments. */
async function resolveCommand(argv: string[]): Promise<{ command: CommandDef<ArgsDef>; parent?: CommandDef<ArgsDef>; rest: string[]; path: string[] }> {
  let command = cli as CommandDef<ArgsDef>
  let parent: CommandDef<ArgsDef> | undefined
  let rest = argv
  const path: string[] = []
  for (;;) {
    const subCommands = command.subCommands as Record<string, CommandDef<ArgsDef>> | undefined
    const index = rest.findIndex((arg) => !arg.startsWith('-'))
    if (!subCommands || index === -1 || rest.slice(0, index).includes('--')) return { command, parent, rest, path }
    const name = rest[index]
    if (!(name in subCommands)) {
      throw new UsageError(`unknown command "${[...path, name].join(' ')}": run queuectl ${path.join(' ')}${path.length ? ' ' : ''}--help for the list`)
    }
    path.push(name)
    parent = command
    command = subCommands[name]
    rest = [...rest.slice(0, index), ...rest.slice(index + 1)]
  }
}

/**
 * citty lets unknown flags through; a typo must not be silently ignored, so check them against the command.
 * Returns argv ready for citty: `--max_retries` spelled as `--max-retries`, and a negative number given as a
 * positional (`config set backoff_max -1`) moved behind `--`, where it cannot be taken for a flag.
 */
function checkFlags(argv: string[], argsDef: ArgsDef, path: string[]): string[] {
  const known = new Map<string, ArgDef>()
  for (const [name, def] of Object.entries(argsDef)) {
    if (def.type === 'positional') continue // `--id` is no flag of `show`
    for (const alias of [name, name.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase()), ...([] as string[]).concat((def as { alias?: string | string[] }).alias ?? [])]) known.set(alias, def)
  }
  const options: string[] = []
  const positionals: string[] = []
  const normalized = [...argv]
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    if (arg === '--') return normalized
    if (!arg.startsWith('-') || /^-\d/.test(arg)) {
      positionals.push(arg)
      continue
    }
    const given = arg.replace(/^--?/, '').split('=')[0]
    const name = given.replace(/_/g, '-')
    if (name !== given) normalized[i] = arg.replace(given, name)
    options.push(normalized[i])
    const def = known.get(name) ?? (name.startsWith('no-') && known.get(name.slice(3))?.type === 'boolean' ? known.get(name.slice(3)) : undefined)
    if (!def) {
      const hint = path[0] === 'enqueue' ? ' (to pass flags to the job\'s command, put the command after --)' : ''
      throw new UsageError(`unknown flag ${arg} for queuectl ${path.join(' ')}: see queuectl ${path.join(' ')} --help${hint}`)
    }
    if (def.type === 'string' && !arg.includes('=')) {
      if (i + 1 >= argv.length || argv[i + 1] === '--') throw new UsageError(`${arg} needs a value`)
      options.push(argv[++i])
    }
  }
  return positionals.some((arg) => /^-\d/.test(arg)) ? [...options, '--', ...positionals] : normalized
}

/** Runs the CLI on `argv`; resolves to the exit code (0 ok, 1 failed, 2 bad usage or input). */
export async function main(argv: string[] = process.argv.slice(2)): Promise<number> {
  try {
    let args = argv
    // The global options, taken out wherever they stand: --db goes on in the environment, to the workers too.
    for (const [flag, needs] of [['--home', 'a folder'], ['--db', 'a postgres:// URL']] as const) {
      const options = args.indexOf('--') === -1 ? args : args.slice(0, args.indexOf('--'))
      const at = options.findIndex((arg) => arg === flag || arg.startsWith(`${flag}=`))
      if (at === -1) continue
      const inline = options[at].startsWith(`${flag}=`)
      const value = inline ? options[at].slice(flag.length + 1) : options[at + 1]
      if (!value || (!inline && at + 1 === options.length)) throw new UsageError(`${flag} needs ${needs}`)
      if (flag === '--home') cliHome = value
      else process.env.QUEUECTL_DB = parseDatabaseUrl(value).connectionString && value // checked here: one line, exit 2
      args = [...args.slice(0, at), ...args.slice(at + (inline ? 1 : 2))]
    }
    const before = args.includes('--') ? args.slice(0, args.indexOf('--')) : args
    if (before.length === 1 && (before[0] === '--version' || before[0] === '-v')) {
      print(VERSION)
      return 0
    }
    const { command, parent, rest, path } = await resolveCommand(args)
    if (before.includes('--help') || before.includes('-h') || args.length === 0) {
      const usage = await renderUsage(command, parent)
      print(stdoutIsTTY ? usage : stripAnsi(usage))
      const lines = examples.get(command)
      if (lines) print(`\n${paint('bold', 'EXAMPLES')}\n\n${lines.map((line) => `  ${line}`).join('\n')}\n`)
      return 0
    }
    if (command.subCommands && !command.run) throw new UsageError(`queuectl ${path.join(' ')} needs a subcommand: ${Object.keys(command.subCommands).join(', ')} (see --help)`)
    await runCommand(command, { rawArgs: checkFlags(rest, (command.args ?? {}) as ArgsDef, path) })
    return Number(process.exitCode ?? 0)
  } catch (error) {
    const usage = error instanceof UsageError || (error as { name?: string }).name === 'CLIError'
    const message = (error as Error).message || String(error)
    const expected = usage || error instanceof QueueError || typeof (error as NodeJS.ErrnoException).code === 'string' // a system error: disk full, permissions
    // Our messages are one line but may quote user input: escaped, its control characters keep it one line, whole.
    const line = expected ? escapeControls(message) : `${escapeControls(message.split('\n')[0])} (unexpected; set QUEUECTL_DEBUG=1 for details)`
    try {
      log.error(line)
    } catch {
      process.stderr.write(`queuectl: ${line}\n`) // consola itself failed to load
    }
    if (process.env.QUEUECTL_DEBUG) console.error(error)
    return usage ? 2 : 1
  }
}

function isMainModule(): boolean {
  try {
    return Boolean(process.argv[1]) && realpathSync(process.argv[1]) === realpathSync(scriptPath())
  } catch {
    return false
  }
}

if (isMainModule()) {
  // Node ≥ 22.1 keeps what V8 compiles of the modules loaded from here on (sql.js's glue, consola): later calls start
  // sooner. Node 20 has no compile cache.
  (nodeModule as { enableCompileCache?: () => unknown }).enableCompileCache?.()
  // A reader that closed the pipe early (`queuectl list | head`) has all it wants: not an error.
  process.stdout.on('error', (error: NodeJS.ErrnoException) => process.exit(error.code === 'EPIPE' ? 0 : 1))
  // Exit explicitly (nothing may keep a finished command alive), but only once stdout has drained: a pipe
  // takes large output in pieces, and process.exit() would cut it off.
  void main().then((code) => process.stdout.write('', () => process.exit(code)))
}
