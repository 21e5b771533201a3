// Many hosts, for real. PostgreSQL listens on the root side of two veth pairs; hosts A and B are network + UTS + PID
// namespaces (`ip netns`, `unshare`), each with its own hostname and pids, whose workers reach the server only
// through their own veth. The test watches from outside over loopback. Every job appends `start|end|killed <id>
// <attempt> <hostname>` to a side-effect file that both hosts see; one kernel orders the appends, so the file's
// line order is the order things happened in. Nothing leaves the machine: the namespaces have no route but their
// /30, and the root side of a veth whose other end is down drops what it is sent.
import { after, before, describe, test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import pg from 'pg'
import { BACKEND, CLI, Home, isAlive, waitFor } from './helpers.ts'
import { startPostgres, type Postgres } from './postgres.ts'

const RUN = process.pid
const NAMESPACE = /^qctl-[ab]-(\d+)$/
const FOLDER = /^queuectl-hosts-(\d+)-/

function sh(file: string, args: string[]): string {
  const r = spawnSync(file, args, { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`${file} ${args.join(' ')} exited ${r.status ?? r.signal}: ${r.stderr.trim()}`)
  return r.stdout
}

function cannotRun(): string | false {
  if (BACKEND !== 'postgres') return 'needs PostgreSQL'
  if (process.getuid?.() !== 0) return 'needs root (ip netns, unshare)'
  for (const [file, args] of [['ip', ['netns', 'list']], ['unshare', ['--version']], ['setpriv', ['--version']]] as const) {
    if (spawnSync(file, args, { stdio: 'ignore' }).status !== 0) return `needs ${file}`
  }
  return false
}

/** The processes (root namespace pids) in network namespace `ns`. */
function netnsPids(ns: string): number[] {
  const r = spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' })
  return r.status === 0 ? r.stdout.split('\n').filter(Boolean).map(Number).filter(isAlive) : []
}

function signal(pids: number[], name: NodeJS.Signals): void {
  for (const pid of pids) {
    try {
      process.kill(pid, name)
    } catch {
      // exited meanwhile
    }
  }
}

/** Kills what still runs in `ns` and removes it; its veth pair goes with it. */
function removeNamespace(ns: string): void {
  signal(netnsPids(ns), 'SIGKILL')
  spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' })
}

/** The namespaces and folders of earlier runs that were killed before they could clean up (their pid is gone). */
function removeLeftovers(): void {
  for (const line of sh('ip', ['netns', 'list']).split('\n')) {
    const name = line.split(' ')[0]
    const owner = NAMESPACE.exec(name)?.[1]
    if (owner && !isAlive(Number(owner))) removeNamespace(name)
  }
  for (const name of readdirSync(tmpdir())) {
    const owner = FOLDER.exec(name)?.[1]
    if (owner && !isAlive(Number(owner))) rmSync(join(tmpdir(), name), { recursive: true, force: true })
  }
}

/** A host's network: namespace `ns` holds `nic` with `address`; the server listens on `gateway`, at the root end. */
interface Link {
  ns: string
  nic: string
  address: string
  gateway: string
}

/** n of a 10.231.n.0/24 no address or route of this machine uses yet. */
function freeSubnet(): number {
  const used = sh('ip', ['-4', 'addr']) + sh('ip', ['-4', 'route', 'show', 'table', 'all'])
  for (let i = 0; i < 200; i++) {
    const n = 16 + ((RUN + i) % 200)
    if (!used.includes(`10.231.${n}.`)) return n
  }
  throw new Error('no free 10.231.n.0/24 subnet for the test network')
}

function makeLink(letter: 'a' | 'b', subnet: number): Link {
  const ns = `qctl-${letter}-${RUN}`
  const root = `q${letter}${RUN}`
  const nic = `q${letter}${RUN}n`
  const base = letter === 'a' ? 0 : 4
  const gateway = `10.231.${subnet}.${base + 1}`
  const address = `10.231.${subnet}.${base + 2}`
  sh('ip', ['netns', 'add', ns])
  sh('ip', ['link', 'add', root, 'type', 'veth', 'peer', 'name', nic])
  sh('ip', ['link', 'set', nic, 'netns', ns])
  sh('ip', ['addr', 'add', `${gateway}/30`, 'dev', root])
  sh('ip', ['link', 'set', root, 'up'])
  sh('ip', ['-n', ns, 'addr', 'add', `${address}/30`, 'dev', nic])
  sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up'])
  sh('ip', ['-n', ns, 'link', 'set', nic, 'up'])
  return { ns, nic, address, gateway }
}

const linkUp = (link: Link) => sh('ip', ['-n', link.ns, 'link', 'show', link.nic]).includes('LOWER_UP')

/** The queue as the test sees it from outside the hosts: the CLI over loopback, in a home of its own. */
class Observer extends Home {
  constructor(private readonly db: string, dir: string) {
    super(join(relative(tmpdir(), dir), 'observer-')) // inside the scenario's folder, which goes at the end
  }

  override get env(): Record<string, string> {
    return { ...super.env, QUEUECTL_DB: this.db }
  }
}

/** A host: the PID and UTS namespace of `start()`, inside network namespace `link.ns`, with a home of its own. */
class Host {
  private unshare: ChildProcess | undefined
  private workers = 0

  constructor(readonly name: string, readonly link: Link, private readonly db: string, readonly home: string) {}

  /** `workers` foreground `worker run --concurrency <slots>` processes, started by the namespace's init (a shell). */
  start(workers = 2, slots = 2): void {
    mkdirSync(this.home, { recursive: true })
    const env: Record<string, string> = {}
    for (const [key, value] of Object.entries(process.env)) if (value !== undefined && !key.startsWith('QUEUECTL_') && key !== 'NODE_OPTIONS') env[key] = value
    const init = 'hostname "$1" && for i in $(seq "$2"); do "$3" "$4" worker run --concurrency "$5" >> "$QUEUECTL_HOME/worker.log" 2>&1 & done; wait'
    // pdeathsig: should this test die unannounced, unshare dies with it, and --kill-child takes the namespace along
    this.unshare = spawn('setpriv', ['--pdeathsig', 'KILL', '--', 'ip', 'netns', 'exec', this.link.ns,
      'unshare', '--uts', '--pid', '--fork', '--kill-child', '--mount-proc', '--',
      'sh', '-c', init, 'init', this.name, String(workers), process.execPath, CLI, String(slots)], {
      env: { ...env, QUEUECTL_HOME: this.home, QUEUECTL_DB: this.db }, stdio: 'ignore',
    })
    this.workers = workers
  }

  /** Root namespace pid of the PID namespace's init. */
  get init(): number | undefined {
    const pid = this.unshare?.pid
    try {
      return Number(readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(' ')[0]) || undefined
    } catch {
      return undefined
    }
  }

  /** Root namespace pids of the workers (the init's children). */
  workerPids(): number[] {
    const init = this.init
    if (!init) return []
    try {
      return readFileSync(`/proc/${init}/task/${init}/children`, 'utf8').trim().split(' ').filter(Boolean).map(Number)
    } catch {
      return []
    }
  }

  /** Waits until every worker is registered under this host's name; returns their rows of `status`. */
  async registered(observer: Observer, timeoutMs = 20_000): Promise<any[]> {
    return waitFor(`${this.workers} workers of ${this.name} to register`, async () => {
      const mine = (await observer.json(['status'])).workers.filter((w: any) => w.host === this.name)
      return mine.length === this.workers && this.workerPids().length === this.workers ? mine : undefined
    }, timeoutMs, 200)
  }

  log(): string {
    const path = join(this.home, 'worker.log')
    return existsSync(path) ? readFileSync(path, 'utf8') : ''
  }

  /** kill -9 of everything in the namespace: the death of a PID namespace's init takes every process of it along. */
  async killAll(): Promise<void> {
    const init = this.init
    if (init) process.kill(init, 'SIGKILL')
    await waitFor(`every process of ${this.name} to be gone`, () => netnsPids(this.link.ns).length === 0, 10_000)
  }

  /** SIGTERM to each worker: they finish their jobs and exit, and so does the namespace. */
  async stop(): Promise<void> {
    signal(this.workerPids(), 'SIGTERM')
    await waitFor(`${this.name} to stop`, () => netnsPids(this.link.ns).length === 0, 20_000, 100)
  }

  /** For t.after and the exit handler: whatever runs in the namespace is killed, SIGSTOPped or not. */
  dispose(): void {
    const pids = netnsPids(this.link.ns)
    signal(pids, 'SIGKILL')
  }
}

interface Mark {
  what: 'start' | 'end' | 'killed'
  id: string
  attempt: number
  host: string
  line: number
}

/** Writes the jobs' script: marks its start, works FIRST seconds (LATER on a later attempt), marks its end; a TERM
 *  (the group kill of a worker, never a SIGKILL) is marked `killed`. `read` from /proc keeps forks out of it. */
function writeJobScript(path: string): void {
  writeFileSync(path, [
    'read host < /proc/sys/kernel/hostname',
    'mark() { echo "$1 $QUEUECTL_JOB_ID $QUEUECTL_ATTEMPT $host" >> "$MARKS"; }',
    "trap 'mark killed; exit 143' TERM",
    'mark start',
    'seconds=$1; [ "$QUEUECTL_ATTEMPT" = 1 ] || seconds=$2',
    '[ "$seconds" = 0 ] || sleep "$seconds"',
    'mark end',
    '',
  ].join('\n'))
}

/** One scenario's queue: a schema of its own on the test's server, two hosts, one side-effect file. */
interface Scenario {
  observer: Observer
  a: Host
  b: Host
  marks(): Mark[]
  /** Enqueues `count` jobs with ids `<prefix>1`… that work `first` seconds on attempt 1, `later` on any other. */
  enqueue(prefix: string, count: number, first: number, later: number): Promise<string[]>
}

const liveHosts = new Set<Host>()
let server: Postgres | undefined
let links: { a: Link; b: Link } | undefined
let top: string | undefined

function removeEverything(): void {
  for (const host of liveHosts) host.dispose()
  if (links) for (const link of [links.a, links.b]) removeNamespace(link.ns)
  links = undefined
  if (top) rmSync(top, { recursive: true, force: true })
  top = undefined
}

let current: Scenario | undefined

/** A test of a scenario: when it fails, the hosts' worker logs and the side-effect file are part of its error. */
function hostsTest(name: string, options: { timeout: number }, body: (t: TestContext) => Promise<void>): void {
  test(name, options, async (t) => {
    current = undefined
    try {
      await body(t)
    } catch (error) {
      const s = current as Scenario | undefined
      if (s && error instanceof Error) {
        error.message += `\n--- ${s.a.name}'s worker.log\n${s.a.log()}--- ${s.b.name}'s worker.log\n${s.b.log()}--- marks\n${s.marks().map((m) => `${m.what} ${m.id} ${m.attempt} ${m.host}`).join('\n')}`
      }
      throw error
    }
  })
}

/** A lease of 3 s; host A takes 4 jobs whose attempt 1 lasts a minute (a retry 0.3 s), then host B joins. */
async function aRunsFourThenB(t: TestContext, name: string, prefix: string) {
  const s = await scenario(t, name, '3s')
  s.a.start()
  const aWorkers = await s.a.registered(s.observer)
  const ids = await s.enqueue(prefix, 4, 60, 0.3)
  await waitFor('host A to run all 4', () => startsOn(s.marks(), 'hostA').length === 4, 20_000)
  s.b.start()
  const bWorkers = await s.b.registered(s.observer)
  return { s, ids, aWorkers, bWorkers }
}

async function scenario(t: TestContext, name: string, lease?: string): Promise<Scenario> {
  const schema = `hosts_${name}_${RUN}`
  const dir = join(top!, name)
  mkdirSync(dir)
  const script = join(dir, 'job.sh')
  writeJobScript(script)
  const marksFile = join(dir, 'marks')
  const url = (address: string) => `postgres://queuectl@${address}:${server!.port}/postgres?schema=${schema}`
  const observer = new Observer(url('127.0.0.1'), dir)
  const a = new Host('hostA', links!.a, url(links!.a.gateway), join(dir, 'homeA'))
  const b = new Host('hostB', links!.b, url(links!.b.gateway), join(dir, 'homeB'))
  liveHosts.add(a).add(b)
  t.after(async () => {
    for (const host of [a, b]) {
      host.dispose()
      liveHosts.delete(host)
    }
    await waitFor('both hosts to be gone', () => netnsPids(a.link.ns).length + netnsPids(b.link.ns).length === 0, 10_000)
    rmSync(dir, { recursive: true, force: true })
  })
  if (lease) await observer.ok(['config', 'set', 'lease', lease])
  const marks = () => (existsSync(marksFile) ? readFileSync(marksFile, 'utf8') : '').split('\n').filter(Boolean).map((text, line) => {
    const [what, id, attempt, host] = text.split(' ')
    return { what, id, attempt: Number(attempt), host, line } as Mark
  })
  const enqueue = async (prefix: string, count: number, first: number, later: number) => {
    const ids = Array.from({ length: count }, (_, i) => `${prefix}${i + 1}`)
    const file = join(dir, `${prefix}.jsonl`)
    writeFileSync(file, ids.map((id) => JSON.stringify({ id, command: `MARKS=${marksFile} sh ${script} ${first} ${later}` })).join('\n'))
    await observer.ok(['enqueue', '--file', file], { cwd: dir })
    return ids
  }
  current = { observer, a, b, marks, enqueue }
  return current
}

/** The start marks written on `host`. */
const startsOn = (marks: Mark[], host: string) => marks.filter((m) => m.what === 'start' && m.host === host)

/**
 * What the side-effect file must show whatever happened: no attempt of a job started twice; the runs that reached
 * their end never overlap (none of them starts or ends between another's start and end); and each job reached its
 * end once at most, each of `completed` exactly once. Returns that end mark of each job.
 */
function assertSideEffects(marks: Mark[], completed: string[]): Map<string, Mark> {
  const starts = new Map<string, Mark>()
  for (const m of marks.filter((m) => m.what === 'start')) {
    assert.ok(!starts.has(`${m.id} ${m.attempt}`), `attempt ${m.attempt} of ${m.id} started twice:\n${marks.filter((x) => x.id === m.id).map((x) => x.line).join(',')}`)
    starts.set(`${m.id} ${m.attempt}`, m)
  }
  const ends = new Map<string, Mark>()
  for (const m of marks.filter((m) => m.what === 'end')) {
    const start = starts.get(`${m.id} ${m.attempt}`)
    assert.ok(start && start.line < m.line && start.host === m.host, `an end without its start: ${JSON.stringify(m)}`)
    const between = marks.filter((x) => x.id === m.id && x.attempt !== m.attempt && x.what !== 'killed' && x.line > start.line && x.line < m.line)
    const overlapping = between.filter((x) => marks.some((y) => y.what === 'end' && y.id === x.id && y.attempt === x.attempt))
    assert.deepEqual(overlapping, [], `attempt ${m.attempt} of ${m.id} overlaps another run that reached its end`)
    assert.ok(!ends.has(m.id), `${m.id} reached its end twice (attempts ${ends.get(m.id)?.attempt} and ${m.attempt})`)
    ends.set(m.id, m)
  }
  for (const id of completed) assert.ok(ends.has(id), `${id} never reached its end`)
  return ends
}

const leaseOf = async (observer: Observer) => Number((await observer.json(['config', 'get', 'lease'])).lease)

describe('many hosts, for real: PostgreSQL on a veth address, hosts A and B in network + UTS + PID namespaces', { skip: cannotRun(), timeout: 300_000 }, () => {
  before(async () => {
    removeLeftovers()
    // before the server's own handlers (startPostgres): this one runs first, then theirs re-raises the signal
    process.on('exit', removeEverything)
    for (const name of ['SIGINT', 'SIGTERM'] as const) {
      process.once(name, () => {
        removeEverything()
        if (process.listenerCount(name) === 0) process.kill(process.pid, name)
      })
    }
    top = mkdtempSync(join(tmpdir(), `queuectl-hosts-${RUN}-`))
    const subnet = freeSubnet()
    links = { a: makeLink('a', subnet), b: makeLink('b', subnet) }
    await waitFor('both veth pairs to be up', () => linkUp(links!.a) && linkUp(links!.b), 10_000)
    server = await startPostgres({ listen: [links.a.gateway, links.b.gateway] })
  })

  after(async () => {
    await server?.stop()
    removeEverything()
  })

  hostsTest('200 jobs spread over both hosts, two workers of two slots each: every attempt runs exactly once', { timeout: 90_000 }, async (t) => {
    const s = await scenario(t, 'spread')
    s.a.start()
    s.b.start()
    await Promise.all([s.a.registered(s.observer), s.b.registered(s.observer)])
    const ids = await s.enqueue('j', 200, 0, 0)
    await waitFor('200 jobs to complete', async () => (await s.observer.json(['status'])).counts.completed === 200, 60_000, 250)

    const ends = assertSideEffects(s.marks(), ids)
    const marks = s.marks()
    assert.equal(marks.length, 400, 'one start and one end per job, nothing else')
    assert.ok(marks.every((m) => m.attempt === 1), 'every job ran once, on its first attempt')
    const byHost = { hostA: 0, hostB: 0 } as Record<string, number>
    for (const end of ends.values()) byHost[end.host]++
    assert.equal(byHost.hostA + byHost.hostB, 200, `jobs ran on hosts other than A and B: ${JSON.stringify(byHost)}`)
    assert.ok(byHost.hostA >= 20 && byHost.hostB >= 20, `both hosts took a share: ${JSON.stringify(byHost)}`)
    const jobs = await s.observer.json(['list', '--limit', '1000'])
    assert.equal(jobs.length, 200)
    assert.ok(jobs.every((j: any) => j.state === 'completed' && j.attempts === 1), 'the queue agrees: each job completed on attempt 1')
    assert.deepEqual((await s.observer.json(['stats'])).attempts, { completed: 200, failed: 0, lost: 0, cancelled: 0, released: 0 })
    t.diagnostic(`hostA ran ${byHost.hostA} jobs, hostB ${byHost.hostB}`)
  })

  hostsTest('kill -9 of everything in host A\'s namespace: host B recovers its jobs and completes them within lease + 5 s', { timeout: 60_000 }, async (t) => {
    const s = await scenario(t, 'kill', '3s')
    s.a.start()
    s.b.start()
    const [aWorkers, bWorkers] = await Promise.all([s.a.registered(s.observer), s.b.registered(s.observer)])
    // eight slots, eight jobs: each host runs four, each attempt 1 lasting 3 s (a retry 0.5 s)
    const ids = await s.enqueue('k', 8, 3, 0.5)
    await waitFor('all 8 jobs to start, 4 on each host', () => {
      const marks = s.marks()
      return startsOn(marks, 'hostA').length === 4 && startsOn(marks, 'hostB').length === 4
    }, 20_000)
    const onA = startsOn(s.marks(), 'hostA').map((m) => m.id)
    const killedAt = Date.now()
    await s.a.killAll()
    const leaseMs = (await leaseOf(s.observer)) * 1000
    assert.equal(leaseMs, 3000)
    // the promise is timed by the jobs' own ends, as stored: not by how soon a loaded machine lets this test look
    await waitFor('every job to be completed', async () => (await s.observer.json(['status'])).counts.completed === 8, 30_000, 100)
    const lastEnd = Math.max(...await Promise.all(onA.map(async (id) => Date.parse((await s.observer.job(id)).finished_at))))
    t.diagnostic(`host A's jobs were completed by host B ${((lastEnd - killedAt) / 1000).toFixed(1)} s after the kill (lease 3 s)`)
    assert.ok(lastEnd - killedAt <= leaseMs + 5_000, `host A's jobs were completed ${lastEnd - killedAt} ms after the kill, over lease + 5 s`)

    const ends = assertSideEffects(s.marks(), ids)
    const aIds = new Set(aWorkers.map((w) => w.id))
    const bIds = new Set(bWorkers.map((w) => w.id))
    for (const id of ids) {
      const job = await s.observer.job(id)
      const history = job.history.map((h: any) => [h.attempt, h.outcome, aIds.has(h.worker) ? 'A' : bIds.has(h.worker) ? 'B' : h.worker])
      if (onA.includes(id)) {
        assert.deepEqual(history, [[1, 'lost', 'A'], [2, 'completed', 'B']], `${id} was recovered from A and completed by B`)
        assert.equal(job.history[0].error, 'worker lost')
        assert.deepEqual([ends.get(id)!.attempt, ends.get(id)!.host], [2, 'hostB'])
      } else {
        assert.deepEqual(history, [[1, 'completed', 'B']], `${id} ran once on B`)
      }
    }
    assert.equal((await s.observer.json(['stats'])).attempts.lost, 4)
  })

  hostsTest('SIGSTOP of host A past the lease, then SIGCONT: its stale attempts are killed by its own workers and nothing is recorded over host B\'s', { timeout: 90_000 }, async (t) => {
    // attempt 1 outlasts the pause by far: it can only end by being killed; a retry takes 0.3 s
    const { s, ids, aWorkers, bWorkers } = await aRunsFourThenB(t, 'stop', 's')

    // Host A stops answering: every process of it freezes, as on a paused machine. Never while a session of A is in
    // a transaction, which may hold the queue's write lock and so stop every host (another story): then thaw it
    // and try again.
    const frozen = await waitFor('host A to be frozen outside a transaction', async () => {
      const pids = netnsPids(s.a.link.ns)
      signal(pids, 'SIGSTOP')
      await waitFor('the SIGSTOP to take hold', () => pids.every((pid) => !isAlive(pid) || processState(pid) === 'T'), 5_000, 5)
      if (await quiet(s.a.link.address)) return pids
      signal(pids, 'SIGCONT')
      return undefined
    }, 15_000, 50)

    // host B judges A's workers by their heartbeat, which stands still: after the lease it runs attempt 2 of each
    await waitFor('host B to complete attempt 2 of all 4', () => s.marks().filter((m) => m.what === 'end' && m.host === 'hostB' && m.attempt === 2).length === 4, 30_000, 100)
    for (const id of ids) {
      const job = await s.observer.job(id)
      assert.equal(job.history[0].outcome, 'lost')
    }
    assert.ok(s.marks().every((m) => m.host === 'hostB' || m.what === 'start'), 'nothing of frozen A ran on')

    signal(frozen, 'SIGCONT')
    await waitFor('host A to kill its 4 stale attempts', () => s.marks().filter((m) => m.what === 'killed').length === 4, 20_000, 100)
    await waitFor("host A's workers to say why", () => (s.a.log().match(/attempt 1 of job s\d was taken over \(recovered as lost\): killed it/g) ?? []).length === 4, 10_000, 100)
    await waitFor('every job to be completed', async () => (await s.observer.json(['status'])).counts.completed === 4, 10_000, 200)
    // registered again, idle: A's workers live on and answer for themselves
    await waitFor("host A's workers back, idle", async () => {
      const mine = (await s.observer.json(['status'])).workers.filter((w: any) => w.host === 'hostA' && w.jobs.length === 0)
      return mine.length === 2
    }, 15_000, 200)

    const ends = assertSideEffects(s.marks(), ids)
    const aIds = new Set(aWorkers.map((w) => w.id))
    const bIds = new Set(bWorkers.map((w) => w.id))
    for (const id of ids) {
      const mine = s.marks().filter((m) => m.id === id).map((m) => `${m.what} ${m.attempt} ${m.host}`)
      // attempt 1 never reached its end: it was killed (by A, after the thaw) once B had taken over
      assert.deepEqual(mine.filter((m) => m.endsWith('hostA')), ['start 1 hostA', 'killed 1 hostA'], `${id} on A`)
      assert.deepEqual(mine.filter((m) => m.endsWith('hostB')), ['start 2 hostB', 'end 2 hostB'], `${id} on B`)
      assert.ok(mine.indexOf('start 2 hostB') < mine.indexOf('killed 1 hostA'), `${id}: B took over before A was thawed`)
      assert.equal(ends.get(id)!.host, 'hostB')
      const job = await s.observer.job(id)
      assert.deepEqual(job.history.map((h: any) => [h.attempt, h.outcome, h.error, aIds.has(h.worker) ? 'A' : bIds.has(h.worker) ? 'B' : h.worker]), [
        [1, 'lost', 'worker lost', 'A'],
        [2, 'completed', null, 'B'],
      ], `${id}: nothing recorded over B's attempt`)
      assert.equal(job.state, 'completed')
      assert.equal(job.exit_code, 0)
    }
    assert.deepEqual((await s.observer.json(['stats'])).attempts, { completed: 4, failed: 0, lost: 4, cancelled: 0, released: 0 })
  })

  hostsTest('host A\'s link cut (ip link set down) past the lease, then restored: B completes its jobs; A reconnects, kills its stale attempts and serves again', { timeout: 120_000 }, async (t) => {
    const { s, ids, aWorkers, bWorkers } = await aRunsFourThenB(t, 'cut', 'c')

    const link = s.a.link
    const setLink = (state: 'up' | 'down') => sh('ip', ['-n', link.ns, 'link', 'set', link.nic, state])
    t.after(() => void (linkUp(link) || setLink('up'))) // a failure below must not leave the next test without host A
    // as with the SIGSTOP: not while a session of A is in a transaction (the server would keep its locks for A). And
    // only once A's sessions are quiet with the link up: a statement held up by an earlier try goes on when its
    // packets get through, and cutting again meanwhile holds it up longer (TCP backs off its retransmissions), long
    // enough, on a loaded machine, for A to be judged lost before the cut.
    let tries = 0
    await waitFor("host A's link to be cut outside a transaction", async () => {
      if (!(await quiet(link.address))) return false
      tries++
      setLink('down')
      if (await quiet(link.address)) return true
      setLink('up')
      return false
    }, 15_000, 50)
    const cutAt = Date.now()
    t.diagnostic(`the link was cut at try ${tries}`)
    await waitFor('host B to complete attempt 2 of all 4', () => s.marks().filter((m) => m.what === 'end' && m.host === 'hostB' && m.attempt === 2).length === 4, 30_000, 100)
    await waitFor('every job to be completed', async () => (await s.observer.json(['status'])).counts.completed === 4, 10_000, 200)
    const stale = s.marks().filter((m) => m.host === 'hostA')
    assert.deepEqual(stale.map((m) => m.what), ['start', 'start', 'start', 'start'], 'the cut-off host cannot be reached: its attempts go on there (not promised otherwise)')
    setLink('up')
    t.diagnostic(`the link was down ${((Date.now() - cutAt) / 1000).toFixed(1)} s`)

    await waitFor('host A to kill its 4 stale attempts once it reaches the server again', () => s.marks().filter((m) => m.what === 'killed').length === 4, 45_000, 100)
    await waitFor("host A's workers to say why", () => (s.a.log().match(/attempt 1 of job c\d was taken over \(recovered as lost\): killed it/g) ?? []).length === 4, 10_000, 100)
    assert.equal(s.a.workerPids().length, 2, "host A's workers lived through the cut")

    // A serves again: with B stopped, A alone runs the next jobs
    await s.b.stop()
    const next = await s.enqueue('n', 4, 0, 0)
    await waitFor('host A to complete the next 4', async () => (await s.observer.json(['status'])).counts.completed === 8, 20_000, 200)
    assert.deepEqual(startsOn(s.marks(), 'hostA').filter((m) => m.id.startsWith('n')).map((m) => m.id).sort(), next)

    const ends = assertSideEffects(s.marks(), [...ids, ...next])
    const aIds = new Set(aWorkers.map((w) => w.id))
    const bIds = new Set(bWorkers.map((w) => w.id))
    for (const id of ids) {
      const mine = s.marks().filter((m) => m.id === id).map((m) => `${m.what} ${m.attempt} ${m.host}`)
      assert.deepEqual(mine, ['start 1 hostA', 'start 2 hostB', 'end 2 hostB', 'killed 1 hostA'], `${id}: attempt 1 never reached its end`)
      assert.equal(ends.get(id)!.host, 'hostB')
      const job = await s.observer.job(id)
      assert.deepEqual(job.history.map((h: any) => [h.attempt, h.outcome, aIds.has(h.worker) ? 'A' : bIds.has(h.worker) ? 'B' : h.worker]), [
        [1, 'lost', 'A'],
        [2, 'completed', 'B'],
      ], `${id}: nothing recorded over B's attempt`)
    }
  })

  hostsTest('PostgreSQL restarted twice under load (fast shutdown): every worker reconnects and no job is lost or run twice', { timeout: 120_000 }, async (t) => {
    // the default lease (30 s): an outage shorter than it is no reason to judge anyone lost
    const s = await scenario(t, 'restart')
    s.a.start()
    s.b.start()
    await Promise.all([s.a.registered(s.observer), s.b.registered(s.observer)])
    const pidsBefore = [...s.a.workerPids(), ...s.b.workerPids()]
    const ids = await s.enqueue('r', 120, 0.2, 0.2)
    const ended = () => s.marks().filter((m) => m.what === 'end').length
    const restartedAt: number[] = []
    for (const done of [30, 70]) {
      await waitFor(`${done} jobs to be done`, () => ended() >= done, 30_000, 50)
      restartedAt.push(s.marks().length)
      await server!.restart()
      t.diagnostic(`restarted after ${ended()} jobs had ended`)
    }
    await waitFor('all 120 jobs to complete', async () => (await s.observer.json(['status'])).counts.completed === 120, 60_000, 250)

    // the workers first: one that died of the outage would explain any other failure below
    assert.deepEqual([...s.a.workerPids(), ...s.b.workerPids()], pidsBefore, `the same workers, none exited:\n${s.a.log()}\n${s.b.log()}`)
    for (const host of [s.a, s.b]) {
      assert.ok(!host.log().includes('    at '), `${host.name} printed a stack trace:\n${host.log()}`)
      assert.ok((host.log().match(/lost the PostgreSQL notification connection/g) ?? []).length >= 4, `both workers of ${host.name} noticed each restart:\n${host.log()}`)
    }
    assertSideEffects(s.marks(), ids)
    const marks = s.marks()
    assert.equal(marks.length, 240, 'one start and one end per job, nothing else')
    assert.ok(marks.every((m) => m.attempt === 1), 'no job ran twice')
    for (const [i, at] of restartedAt.entries()) {
      const after = marks.slice(at, restartedAt[i + 1]).filter((m) => m.what === 'start')
      assert.ok(after.some((m) => m.host === 'hostA') && after.some((m) => m.host === 'hostB'), `both hosts started jobs after restart ${i + 1}`)
    }
    const jobs = await s.observer.json(['list', '--limit', '1000'])
    assert.ok(jobs.length === 120 && jobs.every((j: any) => j.state === 'completed' && j.attempts === 1), 'the queue agrees')
    assert.deepEqual((await s.observer.json(['stats'])).attempts, { completed: 120, failed: 0, lost: 0, cancelled: 0, released: 0 })
  })
})

/** State letter of /proc/<pid>/stat (`T` once a SIGSTOP has taken hold). */
function processState(pid: number): string {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3)
}

/**
 * Whether no session of the host at `address` has a transaction open or a statement running, so that it holds and
 * waits for no lock: asked twice, so that a statement already on its way when it froze is seen by the second look.
 */
async function quiet(address: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: server!.url, connectionTimeoutMillis: 5_000 })
  client.on('error', () => {})
  try {
    await client.connect()
    for (let look = 0; look < 2; look++) {
      const { rows } = await client.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE client_addr = $1::inet AND state <> 'idle'", [address])
      if (rows[0].n > 0) return false
    }
    return true
  } finally {
    await client.end().catch(() => {})
  }
}
