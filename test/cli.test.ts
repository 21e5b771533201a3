// The CLI as a user sees it: escaping on a terminal, quoting `enqueue -- ARGS`, durations and times in one form
// everywhere, stats counted by how attempts ended, config's meanings, retry times and the no-worker hint.
// Terminal behaviour is checked on a real pseudo-terminal (util-linux `script`).
import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { CLI, Home, runProgram, waitFor, waitForState, type RunResult } from './helpers.ts'

const shq = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`

/** `queuectl ...args` on a pseudo-terminal: stdout and stderr both go to it, as in an interactive shell. */
function onTerminal(home: Home, args: string[], env: Record<string, string> = {}): Promise<RunResult> {
  const line = [process.execPath, CLI, ...args].map(shq).join(' ')
  return runProgram('script', ['-qec', line, '/dev/null'], { env: { ...home.env, ...env }, timeoutMs: 30_000 })
}

const ESC_SEQUENCES = ['\x1b[2J', '\x1b]0;pwned\x07'] // clear the screen; set the window title

function assertEscaped(text: string, what: string): void {
  for (const raw of ESC_SEQUENCES) assert.ok(!text.includes(raw), `${what} wrote ${JSON.stringify(raw)} raw:\n${JSON.stringify(text)}`)
  assert.ok(text.includes('\\x1b[2J') && text.includes('\\x1b]0;pwned\\x07'), `${what} shows the sequences escaped:\n${JSON.stringify(text)}`)
}

describe('the CLI', { concurrency: true }, () => {
  test('escape sequences from a job reach no terminal: list, show, logs and errors escape them; logs into a pipe keep the bytes', async () => {
    const home = new Home()
    try {
      const payload = `A${ESC_SEQUENCES.join('B')}C`
      await home.ok(['enqueue', JSON.stringify({ id: 'esc', command: `printf '%s\\n' '${payload}'` })])
      await home.ok(['worker', 'run', '--drain'])
      assert.equal((await home.job('esc')).command, `printf '%s\\n' '${payload}'`, 'the command is stored as given')

      for (const args of [['list'], ['show', 'esc'], ['logs', 'esc'], ['dlq', 'list']]) {
        const r = await onTerminal(home, args)
        assert.equal(r.code, 0, `${args.join(' ')}: ${r.stdout}`)
        if (args[0] !== 'dlq') assertEscaped(r.stdout, args.join(' '))
      }
      const shown = await onTerminal(home, ['show', 'esc'])
      assert.match(shown.stdout, /output \(tail\)/, 'show printed the output tail')
      // A table row stays one line and never carries the sequences, on a terminal or not.
      const piped = await home.ok(['list'])
      assertEscaped(piped, 'list into a pipe')
      assert.equal(piped.trim().split('\n').length, 2, 'a header and one row')
      // Output into a pipe is the job's bytes as they are.
      assert.ok((await home.ok(['logs', 'esc'])).includes(`${payload}\n`), 'logs into a pipe keep the bytes')
      // An error that quotes user input escapes it too.
      const error = await onTerminal(home, ['show', `x${ESC_SEQUENCES[0]}`])
      assert.equal(error.code, 1)
      assert.ok(!error.stdout.includes(ESC_SEQUENCES[0]) && error.stdout.includes('no job with id "x\\x1b[2J"'), JSON.stringify(error.stdout))
    } finally {
      await home.cleanup()
    }
  })

  test('enqueue -- printf \'%s\\n\' "a b" c: the job gets exactly those arguments; one argument is a command line as it is', async () => {
    const home = new Home()
    try {
      const words = (await home.ok(['enqueue', '--id', 'words', '--', 'printf', '%s\\n', 'a b', 'c'])).trim()
      const line = (await home.ok(['enqueue', '--id', 'line', 'echo hi | tr a-z A-Z'])).trim()
      const tricky = (await home.ok(['enqueue', '--id', 'tricky', '--', 'printf', '[%s]', '', "it's", '$HOME', '`id`', 'two\nlines'])).trim()
      await home.ok(['worker', 'run', '--drain'])
      const output = async (id: string) => (await home.job(id)).output_tail
      assert.equal(await output(words), 'a b\nc\n', 'printf printed a b and c on two lines')
      assert.equal((await home.job(words)).command, "printf '%s\\n' 'a b' c")
      assert.equal((await home.job(line)).command, 'echo hi | tr a-z A-Z', 'a single argument is stored as it is')
      assert.equal(await output(line), 'HI\n', 'and run by sh')
      assert.equal(await output(tricky), "[][it's][$HOME][`id`][two\nlines]")
    } finally {
      await home.cleanup()
    }
  })

  test('durations: --timeout 5m, "timeout": "2m", worker stop --timeout 1m, config durations shown as set', async () => {
    const home = new Home()
    try {
      await home.ok(['enqueue', '--id', 'flag', '--timeout', '5m', 'true'])
      await home.ok(['enqueue', JSON.stringify({ id: 'json', command: 'true', timeout: '2m' })])
      await home.ok(['enqueue', JSON.stringify({ id: 'secs', command: 'true', timeout: 90 })])
      assert.equal((await home.job('flag')).timeout, 300, '--timeout 5m is 300 s')
      assert.equal((await home.job('json')).timeout, 120)
      assert.equal((await home.job('secs')).timeout, 90, 'a number is seconds')
      assert.match(await home.ok(['show', 'flag']), /^timeout +5m$/m, 'show displays it as a duration')
      assert.match(await home.ok(['worker', 'stop', '--timeout', '1m']), /No workers running/)

      assert.equal((await home.ok(['config', 'set', 'job_timeout', '5m'])).trim(), 'job_timeout = 5m')
      await home.ok(['config', 'set', 'retention', '7d'])
      await home.ok(['config', 'set', 'backoff_max', '1h'])
      const human = await home.ok(['config', 'list'])
      assert.match(human, /^job_timeout +5m +0 /m)
      assert.match(human, /^retention +7d +0 /m)
      assert.match(human, /^backoff_max +1h +3600 /m)
      const json = await home.json(['config', 'list'])
      assert.deepEqual([json.job_timeout, json.retention, json.backoff_max], [300, 604800, 3600], '--json keeps seconds for scripts')
      assert.equal((await home.ok(['config', 'get', 'retention'])).trim(), '7d')
      assert.deepEqual(await home.json(['config', 'get', 'retention']), { retention: 604800 })
    } finally {
      await home.cleanup()
    }
  })

  test('--run-at without a zone is local time, a date alone too; with Z or an offset it keeps its zone (TZ=America/New_York)', async () => {
    const home = new Home()
    try {
      const env = { TZ: 'America/New_York' }
      const cases: Array<[string, string]> = [
        ['2030-01-01', '2030-01-01T05:00:00.000Z'],
        ['2030-01-01T10:00', '2030-01-01T15:00:00.000Z'],
        ['2030-07-01T10:00:30.5', '2030-07-01T14:00:30.500Z'], // summer time: UTC-4
        ['2030-01-01T10:00:00Z', '2030-01-01T10:00:00.000Z'],
        ['2030-01-01T10:00+02:00', '2030-01-01T08:00:00.000Z'],
      ]
      for (const [given, stored] of cases) {
        const id = (await home.ok(['enqueue', '--run-at', given, 'true'], { env })).trim()
        assert.equal((await home.job(id)).run_at, stored, `--run-at ${given}`)
      }
      const json = (await home.ok(['enqueue', JSON.stringify({ command: 'true', run_at: '2030-01-01' })], { env })).trim()
      assert.equal((await home.job(json)).run_at, '2030-01-01T05:00:00.000Z', 'the JSON field follows the same rule')
    } finally {
      await home.cleanup()
    }
  })

  test('stats and /metrics count attempts by how they ended: a force-stopped run is no retry and no failure', async () => {
    const home = new Home()
    let dashboard: ReturnType<Home['spawn']> | undefined
    try {
      await home.ok(['config', 'set', 'backoff_base', '0'])
      const gate = join(home.dir, 'gate')
      await home.ok(['enqueue', '--id', 'held', '--', 'sh', '-c', `while [ ! -e ${shq(gate)} ]; do sleep 0.05; done`])
      // Attempt 1: stopped by worker stop --force (released, not counted).
      await home.ok(['worker', 'start'])
      await waitForState(home, 'held', 'processing')
      await home.ok(['worker', 'stop', '--force'], { timeoutMs: 30_000 })
      assert.equal((await home.job('held')).state, 'pending')
      // Attempt 2: its worker killed with SIGKILL (lost: a failure, and a retry once the job runs again).
      const worker = home.spawn(['worker', 'run'])
      await waitFor('held to run on the new worker', async () => (await home.job('held')).worker?.includes(String(worker.pid)))
      const exited = new Promise((resolve) => worker.on('close', resolve))
      worker.kill('SIGKILL')
      await exited
      assert.equal((await home.json(['status'])).counts.failed, 1, 'status recovered the lost job')
      assert.match(await home.ok(['list']), /^held +failed .* retry due /m, 'list says the retry is due')
      // Attempt 3 completes; flaky fails twice and is dead.
      writeFileSync(gate, '')
      await home.ok(['enqueue', '--id', 'flaky', '--max-retries', '1', 'exit 1'])
      await home.ok(['worker', 'run', '--drain'], { timeoutMs: 30_000 })
      assert.equal((await home.job('held')).state, 'completed')
      assert.equal((await home.job('flaky')).state, 'dead')

      const stats = await home.json(['stats'])
      assert.deepEqual(stats.attempts, { completed: 1, failed: 2, lost: 1, cancelled: 0, released: 1 })
      assert.equal(stats.retries, 2, "flaky's first attempt and held's lost one were followed by another run; the released one was not a retry")
      assert.equal(stats.failures, 3, 'failed and lost attempts')
      assert.match(await home.ok(['stats']), /^attempts +1 completed · 2 failed · 1 worker lost · 1 not counted \(released\)$/m)
      assert.match(await home.ok(['stats']), /^retries +2$/m)

      dashboard = home.spawn(['dashboard', '--port', '0', '--token', 'cli-test-token-0123'])
      let printed = ''
      dashboard.stdout!.setEncoding('utf8').on('data', (d) => (printed += d))
      const base = await waitFor('the dashboard URL', () => /http:\/\/[^/\s]+/.exec(printed)?.[0])
      const metrics = await (await fetch(`${base}/metrics`, { headers: { authorization: 'Bearer cli-test-token-0123' } })).text()
      for (const [outcome, n] of [['completed', 1], ['failed', 2], ['lost', 1], ['released', 1]] as const) {
        assert.match(metrics, new RegExp(`^queuectl_attempts_total\\{outcome="${outcome}"\\} ${n}$`, 'm'), metrics)
      }
      assert.match(metrics, /^queuectl_retries_total 2$/m)
      assert.match(metrics, /^queuectl_attempt_duration_seconds_count 4$/m, 'the released attempt is not in the histogram')
    } finally {
      dashboard?.kill('SIGTERM')
      await home.cleanup()
    }
  })

  test('config list says what each key does and which values it takes', async () => {
    const home = new Home()
    try {
      const rows = (await home.ok(['config', 'list'])).trim().split('\n')
      assert.match(rows[0], /^KEY +VALUE +DEFAULT +MEANING$/)
      const meaning = (key: string) => rows.find((row) => row.startsWith(`${key} `))?.replace(/^\S+ +\S+ +\S+ +/, '')
      assert.equal(meaning('max_retries'), 'retries after the first attempt, for jobs without --max-retries; a whole number from 0 to 1000')
      assert.match(meaning('backoff_base')!, /waits backoff_base\^k seconds before retry k; a number from 0 to 1000/)
      assert.match(meaning('backoff_max')!, /the longest wait before a retry; a duration up to 7d/)
      assert.match(meaning('job_timeout')!, /attempt running longer is killed.*; a duration up to 23d.*0 = no limit/)
      assert.match(meaning('retention')!, /jobs are deleted.*; a duration up to 3650d.*0 = keep them/)
    } finally {
      await home.cleanup()
    }
  })

  test('list shows when a failed job retries', async () => {
    const home = new Home()
    try {
      await home.ok(['config', 'set', 'backoff_base', '600'])
      await home.ok(['enqueue', '--id', 'later', 'exit 1'])
      const worker = home.spawn(['worker', 'run'])
      try {
        await waitForState(home, 'later', 'failed')
      } finally {
        worker.kill('SIGTERM')
      }
      assert.match(await home.ok(['list']), /^later +failed +1\/4 +0 +retry in (9|10)m +exit 1$/m)
    } finally {
      await home.cleanup()
    }
  })

  test('enqueue on a terminal says when no worker is running; not with a live worker, and never into a pipe', async () => {
    const home = new Home()
    try {
      const alone = await onTerminal(home, ['enqueue', 'true'])
      assert.equal(alone.code, 0, alone.stdout)
      assert.match(alone.stdout, /no worker is running: start one with queuectl worker start/)
      const piped = await home.run(['enqueue', 'true'])
      assert.equal(piped.code, 0)
      assert.equal(piped.stderr, '', 'nothing on a stderr that is not a terminal')

      const pids = (await home.ok(['worker', 'start'])).trim()
      assert.ok(existsSync(`/proc/${pids}`), 'the worker runs')
      const attended = await onTerminal(home, ['enqueue', 'true'])
      assert.equal(attended.code, 0, attended.stdout)
      assert.doesNotMatch(attended.stdout, /no worker/)
      assert.match(attended.stdout.trim(), /^[0-9a-z]{13}$/, 'only the id')
    } finally {
      await home.cleanup()
    }
  })
})
