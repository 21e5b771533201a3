// `logs` on a log of hundreds of MB: it tails, finds an attempt, streams and follows in constant memory; on a
// terminal its chunks are decoded as one text. Real CLI, real workers, a fresh home per test.
import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { createHash } from 'node:crypto'
import { appendFileSync, createReadStream, existsSync, readdirSync, readFileSync, statSync, truncateSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { CLI, Home, isAlive, runProgram, sqliteOnly, waitFor, waitForState } from './helpers.ts'

// A sparse run of NUL bytes: no disk to speak of, but as much to read as real output. Reading the whole log
// into memory, as `logs` once did, peaked above 450 MB of resident memory on it; streaming stays near the
// ~60 MB that any `queuectl` process takes.
const GAP = 400 * 1024 * 1024
const PEAK_LIMIT_KB = 150 * 1024

const logFile = (home: Home, id: string) => join(home.dir, 'logs', `${id}.log`)

/** What a process printed, without holding it: its size, its hash, and its first and last bytes. */
class Output {
  bytes = 0
  private head = Buffer.alloc(0)
  private last = Buffer.alloc(0)
  private readonly hash = createHash('sha256')
  add(chunk: Buffer): void {
    this.bytes += chunk.length
    this.hash.update(chunk)
    if (this.head.length < 65_536) this.head = Buffer.concat([this.head, chunk]).subarray(0, 65_536)
    this.last = Buffer.concat([this.last, chunk]).subarray(-65_536)
  }
  /** All of it, for output known to be short. */
  text(): string {
    assert.ok(this.bytes <= this.head.length, `expected a short output, got ${this.bytes} bytes`)
    return this.head.toString('utf8')
  }
  end(): string {
    return this.last.toString('utf8')
  }
  digest(): string {
    return this.hash.copy().digest('hex')
  }
}

interface Measured {
  proc: ChildProcess
  out: Output
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string; peakKb: number }>
}

let runs = 0
/** `queuectl ...args` with its peak resident memory (VmHWM) written down as it exits. */
function measured(home: Home, args: string[]): Measured {
  const preload = join(home.dir, 'peak-rss.mjs')
  if (!existsSync(preload)) {
    writeFileSync(preload, `import { readFileSync, writeFileSync } from 'node:fs'
process.on('exit', () => writeFileSync(process.env.PEAK_RSS_FILE, /VmHWM:\\s*(\\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'))[1]))
`)
  }
  const peakFile = join(home.dir, `peak-rss-${++runs}`)
  const proc = spawn(process.execPath, ['--import', pathToFileURL(preload).href, CLI, ...args], {
    cwd: home.dir,
    env: { ...home.env, PEAK_RSS_FILE: peakFile },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const out = new Output()
  let stderr = ''
  proc.stdout!.on('data', (chunk: Buffer) => out.add(chunk))
  proc.stderr!.setEncoding('utf8').on('data', (d) => (stderr += d))
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string; peakKb: number }>((resolve, reject) => {
    const timer = setTimeout(() => proc.kill('SIGKILL'), 120_000)
    proc.on('error', reject)
    proc.on('close', (code, signal) => {
      clearTimeout(timer)
      const peak = existsSync(peakFile) ? Number(readFileSync(peakFile, 'utf8')) : NaN
      resolve({ code, signal, stderr, peakKb: peak })
    })
  })
  return { proc, out, exited }
}

/** Runs `queuectl ...args` to its end; fails unless it exits 0 within the memory limit. */
async function withinMemory(home: Home, args: string[]): Promise<Output> {
  const run = measured(home, args)
  const r = await run.exited
  assert.equal(r.code, 0, `queuectl ${args.join(' ')} exited ${r.code} (signal ${r.signal}): ${r.stderr}`)
  assert.ok(r.peakKb < PEAK_LIMIT_KB, `queuectl ${args.join(' ')} peaked at ${Math.round(r.peakKb / 1024)} MB of memory (limit ${PEAK_LIMIT_KB / 1024} MB)`)
  return run.out
}

async function drain(home: Home): Promise<void> {
  const r = await home.run(['worker', 'run', '--drain'], { timeoutMs: 40_000 })
  assert.equal(r.code, 0, `worker run --drain exited ${r.code}: ${r.stderr}`)
}

async function fileDigest(path: string, start = 0): Promise<string> {
  const hash = createHash('sha256')
  for await (const chunk of createReadStream(path, { start })) hash.update(chunk as Buffer)
  return hash.digest('hex')
}

describe('logs of any size (review item 10)', { concurrency: true }, () => {
  test('a log of 400 MB: --tail, --attempt, --json --attempt and the whole log, each in constant memory', { skip: sqliteOnly, timeout: 180_000 }, async () => {
    const home = new Home('queuectl-logs-')
    try {
      await home.ok(['config', 'set', 'backoff_base', '0'])
      const counter = join(home.dir, 'runs')
      await home.ok(['enqueue', '--id', 'huge', '--max-retries', '0', '--',
        `n=$(cat ${counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > ${counter}; echo run-$n-a; echo run-$n-b; [ $n -ge 2 ]`])
      await drain(home)
      assert.equal((await home.job('huge')).state, 'dead')
      // attempt 1's output gets the gap between its two lines; then attempt 2 runs for real, after it
      const log = logFile(home, 'huge')
      const original = readFileSync(log, 'latin1')
      const cut = original.indexOf('run-1-b\n')
      assert.ok(cut > 0, original)
      writeFileSync(log, original.slice(0, cut), 'latin1')
      truncateSync(log, cut + GAP)
      appendFileSync(log, `\n${original.slice(cut)}`, 'latin1')
      await home.ok(['dlq', 'retry', 'huge'])
      await drain(home)
      assert.equal((await home.job('huge')).state, 'completed')

      const footer = (n: number, summary: string) => `=== attempt ${n} · ${summary} · [\\d.]+s ===\n`
      const header2 = '=== attempt 2 · started \\S+ · worker \\S+ ===\n'
      assert.match((await withinMemory(home, ['logs', 'huge', '--tail', '5'])).text(),
        new RegExp(`^${footer(1, 'exit code 1')}${header2}run-2-a\nrun-2-b\n${footer(2, 'exit code 0')}$`))
      assert.equal((await withinMemory(home, ['logs', 'huge', '--tail', '0'])).bytes, 0, '--tail 0 prints no line')
      assert.match((await withinMemory(home, ['logs', 'huge', '--attempt', '2'])).text(),
        new RegExp(`^${header2}run-2-a\nrun-2-b\n${footer(2, 'exit code 0')}$`), 'attempt 2 is found past the gap')
      assert.match((await withinMemory(home, ['logs', 'huge', '--attempt', '1', '--tail', '2'])).text(),
        new RegExp(`^run-1-b\n${footer(1, 'exit code 1')}$`), 'attempt 1 ends where attempt 2 begins')
      const sections = JSON.parse((await withinMemory(home, ['logs', 'huge', '--json', '--attempt', '2'])).text())
      assert.equal(sections.length, 1)
      assert.match(sections[0].started_at, /^\d{4}-\d\d-\d\dT/)
      assert.deepEqual({ ...sections[0], started_at: 'x' }, { attempt: 2, started_at: 'x', output: 'run-2-a\nrun-2-b\n', ended: 'exit code 0' })

      const whole = await withinMemory(home, ['logs', 'huge'])
      assert.equal(whole.bytes, statSync(log).size, 'the whole log is printed')
      assert.equal(whole.digest(), await fileDigest(log), 'byte for byte')
    } finally {
      await home.cleanup()
    }
  })

  test('--follow prints what is appended, 400 MB of it, in constant memory, and exits 0 when the job completes', { skip: sqliteOnly, timeout: 180_000 }, async () => {
    const home = new Home('queuectl-logs-')
    let worker: ChildProcess | undefined
    let follow: Measured | undefined
    try {
      const gate = join(home.dir, 'gate')
      await home.ok(['enqueue', '--id', 'grow', '--',
        `echo first; echo going; i=0; while [ ! -f ${gate} ] && [ $i -lt 2400 ]; do sleep 0.05; i=$((i+1)); done; echo after-gate`])
      worker = home.spawn(['worker', 'run'])
      worker.stdout!.resume()
      worker.stderr!.resume()
      const log = logFile(home, 'grow')
      await waitFor('the job to print', () => existsSync(log) && readFileSync(log, 'utf8').includes('going\n'), 20_000)

      follow = measured(home, ['logs', 'grow', '--follow', '--tail', '1'])
      await waitFor('--follow to print the last line', () => follow!.out.bytes > 0, 20_000)
      const from = readFileSync(log, 'latin1').indexOf('going\n')
      const before = statSync(log).size
      truncateSync(log, before + GAP)
      appendFileSync(log, '\nafter-the-gap\n')
      await waitFor('--follow to print the appended bytes', () => follow!.out.end().endsWith('\nafter-the-gap\n'), 90_000, 200)
      assert.equal(follow.out.bytes, before - from + GAP + '\nafter-the-gap\n'.length, 'the last line, then what was appended, once')
      assert.equal(follow.proc.exitCode, null, '--follow goes on while the job runs')

      writeFileSync(gate, '')
      const r = await follow.exited
      assert.equal(r.code, 0, `--follow exits 0 once the job completes: ${r.stderr}`)
      assert.ok(r.peakKb < PEAK_LIMIT_KB, `--follow peaked at ${Math.round(r.peakKb / 1024)} MB of memory (limit ${PEAK_LIMIT_KB / 1024} MB)`)
      assert.match(follow.out.end(), /\nafter-the-gap\nafter-gate\n=== attempt 1 · exit code 0 · [\d.]+s ===\n$/)
      assert.equal(follow.out.digest(), await fileDigest(log, from), 'it printed the log from its last line on, byte for byte')
    } finally {
      if (follow?.proc.pid && isAlive(follow.proc.pid)) follow.proc.kill('SIGKILL')
      await home.cleanup()
      if (worker?.pid && isAlive(worker.pid)) worker.kill('SIGKILL')
    }
  })

  test('--follow --attempt 2 finds attempt 2 in a log that grows by megabytes of attempt 1, and prints it alone', { timeout: 120_000 }, async () => {
    const home = new Home('queuectl-logs-')
    let worker: ChildProcess | undefined
    let follow: Measured | undefined
    try {
      await home.ok(['config', 'set', 'backoff_base', '0'])
      const [gate1, gate2, counter] = ['gate1', 'gate2', 'runs'].map((name) => join(home.dir, name))
      const wait = (gate: string) => `i=0; while [ ! -f ${gate} ] && [ $i -lt 2400 ]; do sleep 0.05; i=$((i+1)); done`
      await home.ok(['enqueue', '--id', 'second', '--max-retries', '1', '--',
        `n=$(cat ${counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > ${counter}; ` +
        `if [ $n = 1 ]; then echo first-going; ${wait(gate1)}; yes 0123456789abcdef | head -c 5000000; exit 1; fi; ` +
        `echo second-going; ${wait(gate2)}; echo second-done`])
      follow = measured(home, ['logs', 'second', '--follow', '--attempt', '2'])
      worker = home.spawn(['worker', 'run'])
      worker.stdout!.resume()
      worker.stderr!.resume()
      const log = logFile(home, 'second')
      await waitFor('attempt 1 to print', () => existsSync(log) && readFileSync(log, 'utf8').includes('first-going\n'), 20_000)
      writeFileSync(gate1, '')
      await waitFor('--follow to print attempt 2', () => follow!.out.end().includes('second-going\n'), 30_000)
      writeFileSync(gate2, '')
      const r = await follow.exited
      assert.equal(r.code, 0, `--follow exits 0 once the job completes: ${r.stderr}`)
      assert.match(follow.out.text(), /^=== attempt 2 · started \S+ · worker \S+ ===\nsecond-going\nsecond-done\n=== attempt 2 · exit code 0 · [\d.]+s ===\n$/)
    } finally {
      if (follow?.proc.pid && isAlive(follow.proc.pid)) follow.proc.kill('SIGKILL')
      await home.cleanup()
      if (worker?.pid && isAlive(worker.pid)) worker.kill('SIGKILL')
    }
  })

  test('on a terminal, control characters are shown escaped and no UTF-8 character breaks between chunks', { timeout: 120_000 }, async () => {
    const home = new Home('queuectl-logs-')
    try {
      // 3 MB of 3-byte characters with nothing between them: some chunk boundary falls inside one of them
      await home.ok(['enqueue', '--id', 'tty', '--', `printf 'red:\\033[31mX\\033[0m\\r\\n'; yes € | tr -d '\\n' | head -c 3000000; echo`])
      await drain(home)
      const r = await runProgram('script', ['-qec', `${process.execPath} ${CLI} logs tty`, '/dev/null'], { env: home.env, timeoutMs: 100_000 })
      assert.equal(r.code, 0, `logs on a terminal exited ${r.code}: ${r.stderr}`)
      assert.ok(r.stdout.includes('red:\\x1b[31mX\\x1b[0m\\r'), `escape sequences and the carriage return are shown, not run: ${JSON.stringify(r.stdout.slice(0, 300))}`)
      assert.ok(!r.stdout.includes('\ufffd'), 'no character was split into replacement characters')
      assert.equal(r.stdout.split('€').length - 1, 1_000_000, 'every character arrived whole')
    } finally {
      await home.cleanup()
    }
  })
})

describe('logs made ahead', () => {
  test('a worker links each new log from a spare it made ahead, appends a retry to its log, and a killed worker\'s spares go with its other files', { timeout: 90_000 }, async () => {
    const home = new Home()
    try {
      await home.ok(['config', 'set', 'backoff_base', '1'])
      const [pid] = (await home.ok(['worker', 'start', '--concurrency', '2'])).trim().split('\n').map(Number)
      const { workers } = JSON.parse(await home.ok(['status', '--json']))
      const spares = () => readdirSync(join(home.dir, 'wake')).filter((f) => f.startsWith(`${workers[0].id}.spare.`))
      await waitFor('the worker to make its spares', () => spares().length === 2)
      const first = statSync(join(home.dir, 'wake', `${workers[0].id}.spare.0`)).ino
      const id = (await home.ok(['enqueue', 'echo out'])).trim()
      await home.ok(['enqueue', '--id', 'flaky', '--max-retries', '1', '--', 'echo try $QUEUECTL_ATTEMPT; exit 1'])
      await waitForState(home, id, 'completed')
      await waitForState(home, 'flaky', 'dead', 30_000)
      const log = statSync(logFile(home, id))
      assert.equal(log.ino, first, 'the first job\'s log is the first spare')
      assert.equal(log.nlink, 1, 'the spare\'s own name is gone')
      assert.equal(log.mode & 0o777, 0o600)
      assert.match(readFileSync(logFile(home, id), 'utf8'), /^=== attempt 1 · started .*\nout\n=== attempt 1 · exit code 0 /)
      assert.match(readFileSync(logFile(home, 'flaky'), 'utf8'), /\ntry 1\n[^]*\ntry 2\n/, 'the retry appended to the log of the first attempt')
      await waitFor('the spares to be made again', () => spares().length === 2)
      process.kill(pid, 'SIGKILL')
      await waitFor('the killed worker to be gone', () => !isAlive(pid))
      await home.ok(['worker', 'start'])
      await waitFor('its spares to be removed with its other files', () => readdirSync(join(home.dir, 'wake')).every((f) => !f.startsWith(`${workers[0].id}.`)), 45_000)
      await home.ok(['worker', 'stop'])
      assert.deepEqual(readdirSync(join(home.dir, 'wake')), [], 'a stopped worker leaves no spare behind')
    } finally {
      await home.cleanup()
    }
  })
})
