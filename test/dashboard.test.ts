// The web dashboard (issue 4): the JSON API, /metrics and the security rules over HTTP, then the page itself in
// real headless Chromium (Debian's package, driven by playwright-core): it shows a completed and a dead job,
// retries the dead one, follows a running job's log, and shows HTML in commands and output as text.
// `UPDATE_SCREENSHOT=1` also saves the overview to docs/dashboard.png (off by default: it would dirty the tree).
import { test, describe, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { existsSync, mkdirSync, writeFileSync } from 'node:fs'
import { request, type IncomingHttpHeaders } from 'node:http'
import { join } from 'node:path'
import type { ChildProcess } from 'node:child_process'
import { Home, ROOT, waitFor } from './helpers.ts'

const CHROMIUM = '/usr/bin/chromium'
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic',
  '--no-first-run', '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage']
const XSS = '<img src=x onerror=alert(1)>'
const JOB_FIELDS = ['id', 'command', 'cwd', 'state', 'attempts', 'max_retries', 'priority', 'run_at', 'timeout',
  'created_at', 'updated_at', 'started_at', 'finished_at', 'exit_code', 'last_error', 'worker']

// ---------- local helpers ----------

/** The port a dashboard started with `--port 0` chose, read from the address it prints. */
function printedPort(output: string): number | undefined {
  const m = /Dashboard: http:\/\/[^\s/]+:(\d+)\//.exec(output)
  return m ? Number(m[1]) : undefined
}

interface Dashboard {
  base: string
  port: number
  child: ChildProcess
  output: () => string
  stop: () => Promise<void>
}

/**
 * Starts `queuectl dashboard --port 0 ...args` (the system picks a free port: no race with other tests for one)
 * and waits until it answers (with `token` when it needs one).
 */
async function startDashboard(home: Home, args: string[] = [], token?: string): Promise<Dashboard> {
  const child = home.spawn(['dashboard', '--port', '0', ...args])
  let output = ''
  child.stdout!.setEncoding('utf8').on('data', (d) => (output += d))
  child.stderr!.setEncoding('utf8').on('data', (d) => (output += d))
  let port = 0
  let base = ''
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return
    const exited = once(child, 'exit')
    child.kill('SIGTERM')
    const timer = setTimeout(() => child.kill('SIGKILL'), 5_000)
    await exited
    clearTimeout(timer)
  }
  try {
    port = await waitFor('the dashboard to print its address', () => {
      if (child.exitCode !== null) throw new Error(`dashboard exited ${child.exitCode}: ${output}`)
      return printedPort(output)
    }, 15_000, 20)
    base = `http://127.0.0.1:${port}`
    await waitFor('the dashboard to answer', async () => {
      if (child.exitCode !== null) return Promise.reject(new Error(`dashboard exited ${child.exitCode}: ${output}`))
      const res = await fetch(`${base}/api/overview`, { headers: token ? { authorization: `Bearer ${token}` } : {} })
      return res.status === 200
    }, 15_000)
  } catch (error) {
    await stop()
    throw new Error(`${(error as Error).message}\noutput: ${output}`)
  }
  return { base, port, child, output: () => output, stop }
}

/** A raw HTTP request, for what fetch will not send (a foreign Host header). */
function rawRequest(port: number, path: string, headers: Record<string, string>, method = 'GET'):
  Promise<{ status: number; headers: IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method, headers }, (res) => {
      let body = ''
      res.setEncoding('utf8').on('data', (d) => (body += d))
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }))
    })
    req.on('error', reject)
    req.end()
  })
}

const enqueueJson = (home: Home, job: Record<string, unknown>) => home.ok(['enqueue', JSON.stringify(job)])

// One browser for the file (a launch costs about a second); each test gets its own page.
let browser: Promise<import('playwright-core').Browser> | undefined
function launchBrowser(): Promise<import('playwright-core').Browser> {
  browser ??= import('playwright-core').then(({ chromium }) =>
    chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: 20_000 }))
  return browser
}
after(async () => {
  if (browser) await (await browser).close()
})

/** A page that records dialogs and script errors: an injected `alert` or a crash of the page's script fails the test. */
async function openPage() {
  const page = await (await launchBrowser()).newPage({ viewport: { width: 1200, height: 760 } })
  page.setDefaultTimeout(10_000)
  const problems: string[] = []
  page.on('dialog', (d) => { problems.push(`dialog: ${d.message()}`); void d.dismiss() })
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`))
  return { page, problems }
}

// ---------- loopback, no token ----------

describe('dashboard on 127.0.0.1 without a token', () => {
  const home = new Home()
  let dash: Dashboard

  before(async () => {
    const jobs = [
      { id: 'nightly-report', command: 'echo report done' },
      { id: 'broken-sync', command: 'echo syncing; exit 3', max_retries: 0 },
      { id: 'html-test', command: `echo '${XSS}'` },
    ]
    await home.ok(['enqueue', '--file', '-'], { input: jobs.map((job) => JSON.stringify(job)).join('\n') })
    await home.ok(['worker', 'run', '--drain'], { timeoutMs: 20_000 })
    dash = await startDashboard(home)
  })
  after(async () => {
    await dash?.stop()
    await home.cleanup()
  })

  test('JSON API: overview, job list with filter/search/paging, a job with its attempts, its log by offset', async () => {
    const overview = await (await fetch(`${dash.base}/api/overview`)).json()
    assert.deepEqual(overview.counts, { pending: 0, processing: 0, completed: 2, failed: 0, dead: 1 })
    assert.deepEqual(overview.workers, [])
    assert.equal(typeof overview.stats.success_rate, 'number')
    assert.equal(overview.allow_enqueue, false)

    const all = await (await fetch(`${dash.base}/api/jobs`)).json()
    assert.equal(all.total, 3)
    assert.deepEqual(all.jobs.map((j: any) => j.id), ['html-test', 'broken-sync', 'nightly-report']) // newest first
    const dead = await (await fetch(`${dash.base}/api/jobs?state=dead`)).json()
    assert.deepEqual([dead.total, dead.jobs.map((j: any) => j.id)], [1, ['broken-sync']])
    const byCommand = await (await fetch(`${dash.base}/api/jobs?search=onerror`)).json()
    assert.deepEqual(byCommand.jobs.map((j: any) => j.id), ['html-test'])
    const byId = await (await fetch(`${dash.base}/api/jobs?search=nightly`)).json()
    assert.deepEqual(byId.jobs.map((j: any) => j.id), ['nightly-report'])
    const page2 = await (await fetch(`${dash.base}/api/jobs?limit=1&offset=1`)).json()
    assert.deepEqual([page2.total, page2.limit, page2.offset, page2.jobs.map((j: any) => j.id)], [3, 1, 1, ['broken-sync']])
    assert.equal((await fetch(`${dash.base}/api/jobs?state=bogus`)).status, 400)
    assert.equal((await fetch(`${dash.base}/api/jobs?limit=0`)).status, 400)

    const job = await (await fetch(`${dash.base}/api/jobs/nightly-report`)).json()
    for (const field of JOB_FIELDS) assert.ok(field in job, `job field ${field}`)
    assert.equal(job.state, 'completed')
    assert.equal(job.history.length, 1)
    assert.equal(job.history[0].exit_code, 0)
    assert.match(job.output_tail, /report done/)
    assert.equal((await fetch(`${dash.base}/api/jobs/no-such-job`)).status, 404)

    const log = await fetch(`${dash.base}/api/jobs/nightly-report/log?offset=0`)
    assert.equal(log.status, 200)
    const full = Buffer.from(await log.arrayBuffer())
    assert.match(full.toString(), /=== attempt 1 .*\n(.*\n)*report done\n/)
    assert.equal(Number(log.headers.get('x-log-size')), full.length)
    assert.equal(Number(log.headers.get('x-next-offset')), full.length)
    const rest = await fetch(`${dash.base}/api/jobs/nightly-report/log?offset=5`)
    assert.deepEqual(Buffer.from(await rest.arrayBuffer()), full.subarray(5))
    assert.equal(rest.headers.get('x-next-offset'), String(full.length))
    const tail = await fetch(`${dash.base}/api/jobs/nightly-report/log?tail=12`)
    assert.deepEqual(Buffer.from(await tail.arrayBuffer()), full.subarray(-12))
    assert.equal(tail.headers.get('x-log-offset'), String(full.length - 12))
    const none = await fetch(`${dash.base}/api/jobs/nightly-report/log?offset=${full.length}`)
    assert.equal((await none.arrayBuffer()).byteLength, 0)
    assert.equal((await fetch(`${dash.base}/api/jobs/no-such-job/log`)).status, 404)
  })

  test('job ids in paths are validated: no way out of the logs folder', async () => {
    for (const path of ['/api/jobs/..%2F..%2Fetc/log', '/api/jobs/..%2F..%2Fetc%2Fpasswd', '/api/jobs/%2Fetc%2Fpasswd/log',
      '/api/jobs/.hidden/log', '/api/jobs/a%00b/log']) {
      const res = await fetch(dash.base + path)
      assert.equal(res.status, 400, path)
      assert.match((await res.json()).error, /invalid job id/)
    }
    // `%2e%2e` is a `..` segment that URL parsing resolves: it must not reach a file either.
    assert.notEqual((await fetch(`${dash.base}/api/jobs/%2e%2e/%2e%2e/etc/log`)).status, 200)
  })

  test('/metrics: Prometheus text with jobs by state, workers, attempts and a duration histogram', async () => {
    const res = await fetch(`${dash.base}/metrics`)
    assert.equal(res.status, 200)
    assert.match(res.headers.get('content-type')!, /^text\/plain; version=0\.0\.4/)
    const text = await res.text()
    const value = (name: string) => {
      const line = text.split('\n').find((l) => l.startsWith(name + ' '))
      assert.ok(line, `metric ${name} in\n${text}`)
      return Number(line.slice(name.length + 1))
    }
    assert.equal(value('queuectl_jobs{state="completed"}'), 2)
    assert.equal(value('queuectl_jobs{state="dead"}'), 1)
    assert.equal(value('queuectl_jobs{state="pending"}'), 0)
    assert.equal(value('queuectl_workers'), 0)
    assert.equal(value('queuectl_attempts_total{outcome="completed"}'), 2)
    assert.equal(value('queuectl_attempts_total{outcome="failed"}'), 1)
    assert.match(text, /^# TYPE queuectl_attempt_duration_seconds histogram$/m)
    const buckets = [...text.matchAll(/^queuectl_attempt_duration_seconds_bucket\{le="([^"]+)"\} (\d+)$/gm)]
    assert.ok(buckets.length >= 5, 'histogram buckets')
    assert.equal(buckets.at(-1)![1], '+Inf')
    const counts = buckets.map((m) => Number(m[2]))
    assert.deepEqual(counts, [...counts].sort((a, b) => a - b), 'buckets are cumulative')
    assert.equal(counts.at(-1), 3)
    assert.equal(value('queuectl_attempt_duration_seconds_count'), 3)
    assert.ok(value('queuectl_attempt_duration_seconds_sum') >= 0)
    for (const line of text.trim().split('\n')) assert.match(line, /^(# (HELP|TYPE) \w+ .+|\w+(\{\w+="[^"]*"\})? [\d.e+-]+)$/, line)
  })

  test('state-changing requests: POST only, with X-Queuectl and a same-origin Origin; foreign Host refused', async () => {
    const retryUrl = `${dash.base}/api/jobs/broken-sync/retry`
    assert.equal((await fetch(retryUrl, { method: 'POST' })).status, 403, 'no X-Queuectl header')
    assert.equal((await fetch(retryUrl, { method: 'POST', headers: { 'x-queuectl': '1', origin: 'http://evil.example' } })).status, 403,
      'foreign Origin')
    assert.equal((await fetch(retryUrl)).status, 405, 'GET on an action')
    assert.equal((await fetch(`${dash.base}/api/dlq/retry-all`, { method: 'POST' })).status, 403)
    assert.equal((await rawRequest(dash.port, '/api/overview', { host: `evil.example:${dash.port}` })).status, 403,
      'DNS rebinding: a foreign Host')
    // Enqueue is off without --allow-enqueue, even with the header.
    const enqueue = await fetch(`${dash.base}/api/jobs`, {
      method: 'POST', headers: { 'x-queuectl': '1', 'content-type': 'application/json' }, body: JSON.stringify({ command: 'echo no' }),
    })
    assert.equal(enqueue.status, 403)
    // A proper request for a job that is not dead changes nothing.
    const notDead = await fetch(`${dash.base}/api/jobs/nightly-report/retry`, { method: 'POST', headers: { 'x-queuectl': '1' } })
    assert.equal(notDead.status, 409)
    assert.equal((await fetch(`${dash.base}/api/jobs/nope/retry`, { method: 'POST', headers: { 'x-queuectl': '1' } })).status, 404)
    assert.equal((await home.job('broken-sync')).state, 'dead')
    assert.equal((await home.job('nightly-report')).state, 'completed')
    assert.equal((await home.json(['list'])).length, 3)
  })

  test('the page in Chromium: completed and dead jobs, retry moves the dead one to pending, HTML shown as text', async (t) => {
    if (!existsSync(CHROMIUM)) return t.skip(`${CHROMIUM} is missing (CI installs it)`)
    const { page, problems } = await openPage()
    try {
      await page.goto(`${dash.base}/`)
      const row = (id: string) => page.locator(`tr[data-id="${id}"]`)
      await row('nightly-report').locator('.badge', { hasText: 'completed' }).waitFor()
      await row('broken-sync').locator('.badge', { hasText: 'dead' }).waitFor()
      assert.equal(await page.locator('.card.s-completed b').textContent(), '2')
      assert.equal(await page.locator('.card.s-dead b').textContent(), '1')
      assert.equal(await row('html-test').locator('td.cmd').textContent(), `echo '${XSS}'`)
      assert.equal(await page.locator('img').count(), 0)
      if (process.env.UPDATE_SCREENSHOT) {
        mkdirSync(join(ROOT, 'docs'), { recursive: true })
        await page.screenshot({ path: join(ROOT, 'docs', 'dashboard.png') })
      }

      await row('broken-sync').getByRole('button', { name: 'Retry' }).click()
      await row('broken-sync').locator('.badge', { hasText: 'pending' }).waitFor()
      const job = await home.job('broken-sync')
      assert.equal(job.state, 'pending')
      assert.equal(job.attempts, 0)
      await page.locator('.card.s-dead b', { hasText: /^0$/ }).waitFor()

      // The job page: every field, the attempts, and the log, all as text.
      await row('html-test').getByRole('link', { name: 'html-test' }).click()
      await page.locator('#log', { hasText: XSS }).waitFor()
      assert.match(await page.locator('table.kv').textContent() ?? '', /command.*onerror=alert\(1\)/)
      assert.equal(await page.locator('img').count(), 0)
      assert.deepEqual(problems, [])
    } finally {
      await page.close()
    }
  })
})

// ---------- with a token ----------

describe('dashboard with --token and --allow-enqueue', () => {
  const home = new Home()
  const token = 's3cret-token_for-tests'
  let dash: Dashboard

  before(async () => {
    dash = await startDashboard(home, ['--token', token, '--allow-enqueue'], token)
  })
  after(async () => {
    await dash?.stop()
    await home.cleanup()
  })

  test('every request needs the token: Bearer header, or ?token= on a GET', async () => {
    for (const path of ['/', '/api/overview', '/api/jobs', '/metrics', '/api/jobs/x/log', '/nope']) {
      const res = await fetch(dash.base + path)
      assert.equal(res.status, 401, path)
      assert.match(res.headers.get('www-authenticate') ?? '', /^Bearer/)
    }
    const wrong = { authorization: 'Bearer s3cret-token_for-testsX' }
    assert.equal((await fetch(`${dash.base}/api/overview`, { headers: wrong })).status, 401)
    assert.equal((await fetch(`${dash.base}/api/overview?token=nope`)).status, 401)
    const auth = { authorization: `Bearer ${token}` }
    assert.equal((await fetch(`${dash.base}/api/overview`, { headers: auth })).status, 200)
    assert.equal((await fetch(`${dash.base}/metrics`, { headers: auth })).status, 200)
    const page = await fetch(`${dash.base}/?token=${token}`)
    assert.equal(page.status, 200)
    assert.match(page.headers.get('content-type')!, /^text\/html/)
    assert.match(page.headers.get('content-security-policy')!, /script-src 'nonce-/)
    assert.equal(page.headers.get('referrer-policy'), 'no-referrer')
    assert.doesNotMatch(await page.text(), /https?:\/\/(?!www\.w3\.org)/, 'the page loads nothing from outside')
    // A POST must carry the token in the header, not the URL.
    assert.equal((await fetch(`${dash.base}/api/dlq/retry-all?token=${token}`, { method: 'POST' })).status, 401)
    assert.equal((await fetch(`${dash.base}/api/dlq/retry-all`, { method: 'POST', headers: auth })).status, 200)
  })

  test('POST /api/jobs enqueues with --allow-enqueue; bad input is refused and stores nothing', async () => {
    const post = (body: unknown) => fetch(`${dash.base}/api/jobs`, {
      method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body),
    })
    const res = await post({ id: 'api-job', command: 'echo from the api', priority: 3 })
    assert.equal(res.status, 201)
    const job = await res.json()
    assert.deepEqual([job.id, job.state, job.priority], ['api-job', 'pending', 3])
    assert.equal((await home.job('api-job')).command, 'echo from the api')
    for (const bad of [{ command: 'x', bogus: 1 }, { id: '../x', command: 'x' }, { id: 'api-job', command: 'x' }, { priority: 1 }, [1], 'x']) {
      assert.equal((await post(bad)).status, 400, JSON.stringify(bad))
    }
    assert.equal((await home.json(['list'])).length, 1)
  })

  test('the page opened with ?token= uses it, follows a running job\'s log, and enqueues from the form', async (t) => {
    if (!existsSync(CHROMIUM)) return t.skip(`${CHROMIUM} is missing (CI installs it)`)
    const gate = join(home.dir, 'go')
    await enqueueJson(home, {
      id: 'follow-me',
      command: `echo first-line; while [ ! -e ${gate} ]; do sleep 0.05; done; echo 'second <b>line</b>'`,
    })
    const worker = home.spawn(['worker', 'run', '--drain'])
    const workerExit = once(worker, 'exit')
    const { page, problems } = await openPage()
    try {
      await page.goto(`${dash.base}/?token=${token}#/jobs/follow-me`)
      await page.locator('h1 .badge', { hasText: 'processing' }).waitFor()
      await page.locator('#log', { hasText: 'first-line' }).waitFor()
      assert.doesNotMatch(await page.locator('#log').textContent() ?? '', /second/)
      writeFileSync(gate, '')
      await page.locator('#log', { hasText: 'second <b>line</b>' }).waitFor()
      await page.locator('h1 .badge', { hasText: 'completed' }).waitFor()
      assert.equal(await page.locator('#log b').count(), 0)
      assert.equal((await workerExit)[0], 0)

      await page.getByRole('link', { name: 'Overview' }).click()
      await page.getByPlaceholder('Command to enqueue').fill('echo queued from the page')
      await page.getByRole('button', { name: 'Enqueue' }).click()
      await page.locator('tr', { hasText: 'echo queued from the page' }).locator('.badge', { hasText: 'pending' }).waitFor()
      const jobs = await home.json(['list', '--state', 'pending'])
      assert.deepEqual(jobs.map((j: any) => j.command), ['echo queued from the page'])
      assert.deepEqual(problems, [])
    } finally {
      await page.close()
      if (worker.exitCode === null) worker.kill('SIGKILL')
    }
  })
})

describe('dashboard on a non-loopback host', () => {
  const home = new Home()
  after(() => home.cleanup())

  test('without --token one is generated and printed, and requests without it get 401', async () => {
    const child = home.spawn(['dashboard', '--host', '0.0.0.0', '--port', '0'])
    let output = ''
    child.stdout!.setEncoding('utf8').on('data', (d) => (output += d))
    child.stderr!.setEncoding('utf8').on('data', (d) => (output += d))
    try {
      const printed = await waitFor('a token in the dashboard\'s output', () => /token=([A-Za-z0-9_-]{16,})/.exec(output)?.[1], 15_000)
      const base = `http://127.0.0.1:${printedPort(output)}`
      assert.equal((await fetch(`${base}/api/overview`)).status, 401)
      assert.equal((await fetch(`${base}/api/overview`, { headers: { authorization: `Bearer ${printed}` } })).status, 200)
    } finally {
      child.kill('SIGTERM')
      if (child.exitCode === null) await once(child, 'exit')
    }
  })
})
