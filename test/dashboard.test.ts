// The web dashboard (issue 4): the JSON API, /metrics and the security rules over HTTP (a token on every request,
// loopback included, also tried as another user of the host), then the page itself in real headless Chromium
// (Debian's package, driven by playwright-core): opened from the printed URL, it shows a completed and a dead job,
// retries the dead one, follows a running job's log, and shows HTML in commands and output as text. Then the control
// features: the queue panel pauses and resumes, Kill cancels, Retry takes dead, cancelled and skipped jobs,
// a job's page links its parents and dependants; their API is checked through the CLI (`queue ls`, `show`).
// `UPDATE_SCREENSHOT=1` also saves the overview to docs/dashboard.png (off by default: it would dirty the tree).
import { test, describe, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { createServer, request, type IncomingHttpHeaders } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import type { ChildProcess } from 'node:child_process'
import { Home, ROOT, runProgram, waitFor, waitForState } from './helpers.ts'

const CHROMIUM = '/usr/bin/chromium'
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic',
  '--no-first-run', '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage']
const SETPRIV = '/usr/bin/setpriv'
const XSS = '<img src=x onerror=alert(1)>'
const JOB_FIELDS = ['id', 'command', 'cwd', 'state', 'attempts', 'max_retries', 'priority', 'run_at', 'timeout',
  'created_at', 'updated_at', 'started_at', 'finished_at', 'exit_code', 'last_error', 'worker']
// Every kind of path the server answers (and one it does not): each must refuse a request without the token.
const ALL_PATHS = ['/', '/metrics', '/api/overview', '/api/status', '/api/stats', '/api/jobs', '/api/jobs/broken-sync',
  '/api/jobs/broken-sync/log', '/api/jobs/broken-sync/retry', '/api/jobs/nightly-report/kill', '/api/dlq/retry-all',
  '/api/queues', '/api/schedules', '/api/queues/default/pause', '/api/queues/default/resume', '/api/queues/pause-all', '/api/queues/resume-all', '/nope']
// The POSTs that change something: each needs the token, and with the cookie, proof that it comes from the page.
const ACTIONS = ['/api/jobs/broken-sync/retry', '/api/jobs/nightly-report/kill', '/api/dlq/retry-all',
  '/api/queues/default/pause', '/api/queues/default/resume', '/api/queues/pause-all', '/api/queues/resume-all']
const NO_JOBS = { pending: 0, blocked: 0, processing: 0, completed: 0, failed: 0, dead: 0, cancelled: 0, skipped: 0 }

// ---------- local helpers ----------

/** The port and token in the URL a dashboard prints (`--port 0`: the system picked the port). */
function printedUrl(output: string): { port: number; token: string } | undefined {
  const m = /Dashboard: http:\/\/[^\s/]+:(\d+)\/\?token=(\S+)/.exec(output)
  return m ? { port: Number(m[1]), token: m[2] } : undefined
}

interface Dashboard {
  base: string
  port: number
  token: string
  /** The URL the dashboard printed, with 127.0.0.1 as its host. */
  url: string
  child: ChildProcess
  output: () => string
  stop: () => Promise<void>
}

/**
 * Starts `queuectl dashboard --port 0 ...args` (the system picks a free port: no race with other tests for one)
 * and waits until it answers with the token it printed.
 */
async function startDashboard(home: Home, args: string[] = [], env: Record<string, string> = {}): Promise<Dashboard> {
  const child = home.spawn(['dashboard', '--port', '0', ...args], { env })
  let output = ''
  child.stdout!.setEncoding('utf8').on('data', (d) => (output += d))
  child.stderr!.setEncoding('utf8').on('data', (d) => (output += d))
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return
    const exited = once(child, 'exit')
    child.kill('SIGTERM')
    const timer = setTimeout(() => child.kill('SIGKILL'), 5_000)
    await exited
    clearTimeout(timer)
  }
  try {
    const { port, token } = await waitFor('the dashboard to print its URL', () => {
      if (child.exitCode !== null) throw new Error(`dashboard exited ${child.exitCode}: ${output}`)
      return printedUrl(output)
    }, 15_000, 20)
    const base = `http://127.0.0.1:${port}`
    await waitFor('the dashboard to answer', async () => {
      if (child.exitCode !== null) return Promise.reject(new Error(`dashboard exited ${child.exitCode}: ${output}`))
      const res = await fetch(`${base}/api/overview`, { headers: { authorization: `Bearer ${token}` } })
      return res.status === 200
    }, 15_000)
    return { base, port, token, url: `${base}/?token=${token}`, child, output: () => output, stop }
  } catch (error) {
    await stop()
    throw new Error(`${(error as Error).message}\noutput: ${output}`)
  }
}

/** A raw HTTP request, for what fetch will not send as given (Host, Cookie, Sec-Fetch-Site). */
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

const bearer = (token: string) => ({ authorization: `Bearer ${token}` })
const enqueueJson = (home: Home, job: Record<string, unknown>) => home.ok(['enqueue', JSON.stringify(job)])

// One browser for the file (a launch costs about a second); each test gets its own page, in a context of its own
// (so no cookie carries over from one test to the next). The first launch reads ~200 MB of chromium from disk when
// it is not cached: 5 s on an idle machine here, and it took over 20 s with the rest of the suite running beside it.
let browser: Promise<import('playwright-core').Browser> | undefined
function launchBrowser(): Promise<import('playwright-core').Browser> {
  browser ??= import('playwright-core').then(({ chromium }) =>
    chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: 90_000 }))
  return browser
}
after(async () => {
  if (browser) await (await browser).close()
})

/** A page that records dialogs and script errors: an injected `alert` or a crash of the page's script fails the test. */
async function openPage(opts: { acceptConfirms?: boolean } = {}) {
  const page = await (await launchBrowser()).newPage({ viewport: { width: 1200, height: 760 } })
  page.setDefaultTimeout(10_000)
  const problems: string[] = []
  page.on('dialog', (d) => {
    if (opts.acceptConfirms && d.type() === 'confirm') return void d.accept()
    problems.push(`dialog: ${d.message()}`)
    void d.dismiss()
  })
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`))
  return { page, problems }
}

// ---------- loopback, with the token it generated ----------

describe('dashboard on 127.0.0.1, with the token it generated', () => {
  const home = new Home()
  let dash: Dashboard
  let auth: { authorization: string }
  const get = (path: string) => fetch(dash.base + path, { headers: auth })

  before(async () => {
    const jobs = [
      { id: 'nightly-report', command: 'echo report done' },
      { id: 'broken-sync', command: 'echo syncing; exit 3', max_retries: 0 },
      { id: 'html-test', command: `echo '${XSS}'` },
      { id: 'all', command: 'exit 4', max_retries: 0 },
      { id: 'also-dead', command: 'exit 5', max_retries: 0 },
    ]
    await home.ok(['enqueue', '--file', '-'], { input: jobs.map((job) => JSON.stringify(job)).join('\n') })
    await home.ok(['worker', 'run', '--drain'], { timeoutMs: 20_000 })
    dash = await startDashboard(home)
    auth = bearer(dash.token)
  })
  after(async () => {
    await dash?.stop()
    await home.cleanup()
  })

  test('every path needs the token, on loopback too: 401 without it, with or without X-Queuectl, GET or POST', async () => {
    const cookieName = `queuectl-${dash.port}`
    const refused: Record<string, string>[] = [
      {}, { 'x-queuectl': '1' }, { 'x-queuectl': '1', origin: dash.base },
      { authorization: `Bearer ${dash.token}X` }, { authorization: 'Bearer ' }, { authorization: dash.token },
      { cookie: `${cookieName}=${dash.token.slice(1)}` }, { cookie: `queuectl-1=${dash.token}` }, { cookie: `x${cookieName}=${dash.token}` },
    ]
    for (const path of ALL_PATHS) {
      for (const method of ['GET', 'POST']) {
        for (const headers of refused) {
          const res = await rawRequest(dash.port, path, { host: `127.0.0.1:${dash.port}`, ...headers }, method)
          assert.equal(res.status, 401, `${method} ${path} ${JSON.stringify(headers)}`)
          assert.match(res.headers['www-authenticate'] ?? '', /^Bearer/)
          assert.match(JSON.parse(res.body).error, /token is required/)
          assert.doesNotMatch(res.body, new RegExp(dash.token))
        }
      }
    }
    // The URL's token only opens the page; the API and /metrics take the header (or the page's cookie).
    for (const path of ['/api/overview', '/metrics', '/api/jobs/broken-sync']) {
      assert.equal((await fetch(`${dash.base}${path}?token=${dash.token}`)).status, 401, path)
    }
    assert.equal((await fetch(`${dash.base}/api/dlq/retry-all?token=${dash.token}`, { method: 'POST', headers: { 'x-queuectl': '1' } })).status, 401)
    assert.equal((await fetch(`${dash.base}/?token=${dash.token}X`)).status, 401)
    for (const path of ['/', '/metrics', '/api/overview', '/api/status', '/api/stats', '/api/jobs', '/api/jobs/broken-sync', '/api/jobs/broken-sync/log']) {
      assert.equal((await get(path)).status, 200, path)
    }
    assert.equal((await home.job('broken-sync')).state, 'dead')
    assert.deepEqual((await home.json(['queue', 'ls'])).map((q: any) => [q.name, q.paused]), [['default', false]])
  })

  test('the token is generated once into the home, mode 0600, and the next start reuses it', async () => {
    const file = join(home.dir, 'dashboard.token')
    assert.equal(statSync(file).mode & 0o777, 0o600)
    assert.equal(readFileSync(file, 'utf8').trim(), dash.token)
    assert.match(dash.token, /^[A-Za-z0-9_-]{32}$/)
    const again = await startDashboard(home)
    try {
      assert.equal(again.token, dash.token)
      assert.equal((await fetch(`${again.base}/api/overview`, { headers: auth })).status, 200)
    } finally {
      await again.stop()
    }
    assert.equal(readFileSync(file, 'utf8').trim(), dash.token)
  })

  test('another user of the host (nobody) gets 401 on every path, and cannot read the token file', async (t) => {
    if (process.getuid?.() !== 0) return t.skip('needs root, to run a request as the user nobody')
    if (!existsSync(SETPRIV)) return t.skip(`${SETPRIV} is missing (util-linux)`)
    const probe = `
      const [port, paths, file] = JSON.parse(process.argv[1]);
      const statuses = [];
      for (const path of paths) for (const method of ['GET', 'POST']) for (const extra of [{}, { 'x-queuectl': '1' }]) {
        const res = await fetch('http://127.0.0.1:' + port + path, { method, headers: extra });
        statuses.push([method + ' ' + path + ' ' + JSON.stringify(extra), res.status]);
      }
      let read;
      try { require('node:fs').readFileSync(file, 'utf8'); read = 'readable' } catch (e) { read = e.code }
      console.log(JSON.stringify({ uid: process.getuid(), statuses, read }));`
    const r = await runProgram(SETPRIV, ['--reuid=nobody', '--regid=nogroup', '--clear-groups', process.execPath,
      '--input-type=commonjs', '-e', `(async () => { ${probe} })()`, JSON.stringify([dash.port, ALL_PATHS, join(home.dir, 'dashboard.token')])],
    { env: { PATH: process.env.PATH ?? '/usr/bin:/bin' }, cwd: '/' })
    assert.equal(r.code, 0, r.stderr)
    const { uid, statuses, read } = JSON.parse(r.stdout)
    assert.equal(uid, 65534)
    assert.equal(statuses.length, ALL_PATHS.length * 4)
    for (const [what, status] of statuses) assert.equal(status, 401, what)
    assert.equal(read, 'EACCES')
    assert.equal((await home.job('broken-sync')).state, 'dead')
    assert.equal((await home.json(['list'])).length, 5)
  })

  test('/?token= answers the page with an HttpOnly, SameSite=Strict cookie, which then authenticates the page and the API', async () => {
    const login = await rawRequest(dash.port, `/?token=${dash.token}`, { host: `127.0.0.1:${dash.port}` })
    assert.equal(login.status, 200)
    assert.match(login.headers['content-type']!, /^text\/html/)
    assert.deepEqual(login.headers['set-cookie'], [`queuectl-${dash.port}=${dash.token}; HttpOnly; SameSite=Strict; Path=/`])
    const cookie = { host: `127.0.0.1:${dash.port}`, cookie: `other=1; queuectl-${dash.port}=${dash.token}` }
    const page = await rawRequest(dash.port, '/', cookie)
    assert.equal(page.status, 200)
    assert.equal(page.headers['set-cookie'], undefined, 'only the URL sets the cookie')
    assert.doesNotMatch(page.body, new RegExp(dash.token), 'the page never holds the token')
    assert.equal(JSON.parse((await rawRequest(dash.port, '/api/overview', cookie)).body).counts.dead, 3)
    assert.equal((await rawRequest(dash.port, '/metrics', cookie)).status, 200)
    // A wrong token in the URL is refused, even with a good cookie: it sets nothing.
    const wrong = await rawRequest(dash.port, '/?token=not-the-token-at-all', cookie)
    assert.equal(wrong.status, 401)
    assert.equal(wrong.headers['set-cookie'], undefined)
  })

  test('JSON API: overview, job list with filter/search/paging, a job with its attempts, its log by offset', async () => {
    const overview = await (await get('/api/overview')).json()
    assert.deepEqual(overview.counts, { ...NO_JOBS, completed: 2, dead: 3 })
    assert.deepEqual(overview.queues, [{ name: 'default', concurrency: null, paused: false, counts: { ...NO_JOBS, completed: 2, dead: 3 } }])
    assert.deepEqual(overview.workers, [])
    assert.equal(typeof overview.stats.success_rate, 'number')
    assert.equal(overview.allow_enqueue, false)
    assert.deepEqual(overview.schedules, [])

    const all = await (await get('/api/jobs')).json()
    assert.equal(all.total, 5)
    assert.deepEqual(all.jobs.map((j: any) => j.id), ['also-dead', 'all', 'html-test', 'broken-sync', 'nightly-report']) // newest first
    const dead = await (await get('/api/jobs?state=dead&search=sync')).json()
    assert.deepEqual([dead.total, dead.jobs.map((j: any) => j.id)], [1, ['broken-sync']])
    const byCommand = await (await get('/api/jobs?search=onerror')).json()
    assert.deepEqual(byCommand.jobs.map((j: any) => j.id), ['html-test'])
    const byId = await (await get('/api/jobs?search=nightly')).json()
    assert.deepEqual(byId.jobs.map((j: any) => j.id), ['nightly-report'])
    const page2 = await (await get('/api/jobs?limit=1&offset=3')).json()
    assert.deepEqual([page2.total, page2.limit, page2.offset, page2.jobs.map((j: any) => j.id)], [5, 1, 3, ['broken-sync']])
    assert.equal((await get('/api/jobs?state=bogus')).status, 400)
    assert.equal((await get('/api/jobs?limit=0')).status, 400)

    const job = await (await get('/api/jobs/nightly-report')).json()
    for (const field of JOB_FIELDS) assert.ok(field in job, `job field ${field}`)
    assert.equal(job.state, 'completed')
    assert.equal(job.history.length, 1)
    assert.equal(job.history[0].exit_code, 0)
    assert.match(job.output_tail, /report done/)
    assert.equal((await get('/api/jobs/no-such-job')).status, 404)

    const log = await get('/api/jobs/nightly-report/log?offset=0')
    assert.equal(log.status, 200)
    const full = Buffer.from(await log.arrayBuffer())
    assert.match(full.toString(), /=== attempt 1 .*\n(.*\n)*report done\n/)
    assert.equal(Number(log.headers.get('x-log-size')), full.length)
    assert.equal(Number(log.headers.get('x-next-offset')), full.length)
    const rest = await get('/api/jobs/nightly-report/log?offset=5')
    assert.deepEqual(Buffer.from(await rest.arrayBuffer()), full.subarray(5))
    assert.equal(rest.headers.get('x-next-offset'), String(full.length))
    const tail = await get('/api/jobs/nightly-report/log?tail=12')
    assert.deepEqual(Buffer.from(await tail.arrayBuffer()), full.subarray(-12))
    assert.equal(tail.headers.get('x-log-offset'), String(full.length - 12))
    const none = await get(`/api/jobs/nightly-report/log?offset=${full.length}`)
    assert.equal((await none.arrayBuffer()).byteLength, 0)
    assert.equal((await get('/api/jobs/no-such-job/log')).status, 404)
  })

  test('job ids in paths are validated: no way out of the logs folder', async () => {
    for (const path of ['/api/jobs/..%2F..%2Fetc/log', '/api/jobs/..%2F..%2Fetc%2Fpasswd', '/api/jobs/%2Fetc%2Fpasswd/log',
      '/api/jobs/.hidden/log', '/api/jobs/a%00b/log']) {
      const res = await get(path)
      assert.equal(res.status, 400, path)
      assert.match((await res.json()).error, /invalid job id/)
    }
    // `%2e%2e` is a `..` segment that URL parsing resolves: it must not reach a file either.
    assert.notEqual((await get('/api/jobs/%2e%2e/%2e%2e/etc/log')).status, 200)
  })

  test('/metrics: Prometheus text with jobs by state, workers, attempts and a duration histogram', async () => {
    const res = await get('/metrics')
    assert.equal(res.status, 200)
    assert.match(res.headers.get('content-type')!, /^text\/plain; version=0\.0\.4/)
    const text = await res.text()
    const value = (name: string) => {
      const line = text.split('\n').find((l) => l.startsWith(name + ' '))
      assert.ok(line, `metric ${name} in\n${text}`)
      return Number(line.slice(name.length + 1))
    }
    assert.equal(value('queuectl_jobs{state="completed"}'), 2)
    assert.equal(value('queuectl_jobs{state="dead"}'), 3)
    for (const state of Object.keys(NO_JOBS)) assert.equal(value(`queuectl_jobs{state="${state}"}`), state === 'completed' ? 2 : state === 'dead' ? 3 : 0)
    assert.equal(value('queuectl_workers'), 0)
    assert.equal(value('queuectl_attempts_total{outcome="completed"}'), 2)
    assert.equal(value('queuectl_attempts_total{outcome="failed"}'), 3)
    assert.match(text, /^# TYPE queuectl_attempt_duration_seconds histogram$/m)
    const buckets = [...text.matchAll(/^queuectl_attempt_duration_seconds_bucket\{le="([^"]+)"\} (\d+)$/gm)]
    assert.ok(buckets.length >= 5, 'histogram buckets')
    assert.equal(buckets.at(-1)![1], '+Inf')
    const counts = buckets.map((m) => Number(m[2]))
    assert.deepEqual(counts, [...counts].sort((a, b) => a - b), 'buckets are cumulative')
    assert.equal(counts.at(-1), 5)
    assert.equal(value('queuectl_attempt_duration_seconds_count'), 5)
    assert.ok(value('queuectl_attempt_duration_seconds_sum') >= 0)
    for (const line of text.trim().split('\n')) assert.match(line, /^(# (HELP|TYPE) \w+ .+|\w+(\{\w+="[^"]*"\})? [\d.e+-]+)$/, line)
  })

  test('a POST with the cookie must come from the page: X-Queuectl, same Origin, same-origin fetch; foreign Host refused', async () => {
    const host = `127.0.0.1:${dash.port}`
    const cookie = { host, cookie: `queuectl-${dash.port}=${dash.token}` }
    const post = (path: string, headers: Record<string, string>) => rawRequest(dash.port, path, headers, 'POST')
    const retry = '/api/jobs/broken-sync/retry'
    assert.equal((await post(retry, cookie)).status, 403, 'no X-Queuectl header')
    assert.equal((await post(retry, { ...cookie, 'x-queuectl': '1', origin: 'http://evil.example' })).status, 403, 'foreign Origin')
    assert.equal((await post(retry, { ...cookie, 'x-queuectl': '1', origin: 'http://127.0.0.1:1' })).status, 403, 'another port')
    assert.equal((await post(retry, { ...cookie, 'x-queuectl': '1', 'sec-fetch-site': 'same-site' })).status, 403,
      'a page on another port of this host is same-site: the cookie goes there too')
    assert.equal((await post(retry, { ...cookie, 'x-queuectl': '1', 'sec-fetch-site': 'cross-site' })).status, 403)
    for (const path of ACTIONS) {
      assert.equal((await post(path, cookie)).status, 403, `${path} without X-Queuectl`)
      assert.equal((await post(path, { ...cookie, 'x-queuectl': '1', origin: 'http://evil.example' })).status, 403, `${path} from a foreign Origin`)
    }
    assert.equal((await rawRequest(dash.port, '/api/overview', { ...auth, host: `evil.example:${dash.port}` })).status, 403,
      'DNS rebinding: a foreign Host')
    assert.equal((await rawRequest(dash.port, '/', { ...cookie, host: `evil.example:${dash.port}` })).status, 403)
    assert.equal((await get(retry)).status, 405, 'GET on an action')
    // Enqueue is off without --allow-enqueue.
    const enqueue = await fetch(`${dash.base}/api/jobs`, {
      method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify({ command: 'echo no' }),
    })
    assert.equal(enqueue.status, 403)
    // What the page sends passes those checks; a job that is not dead then changes nothing.
    const fromPage = { ...cookie, 'x-queuectl': '1', origin: `http://${host}`, 'sec-fetch-site': 'same-origin' }
    assert.equal((await post('/api/jobs/nightly-report/retry', fromPage)).status, 409)
    // A script's Bearer header needs no X-Queuectl: a foreign page can neither know the token nor send the header.
    assert.equal((await fetch(`${dash.base}/api/jobs/nope/retry`, { method: 'POST', headers: auth })).status, 404)
    for (const id of ['broken-sync', 'all', 'also-dead']) assert.equal((await home.job(id)).state, 'dead', id)
    assert.equal((await home.job('nightly-report')).state, 'completed')
    assert.deepEqual((await home.json(['queue', 'ls'])).map((q: any) => [q.name, q.paused]), [['default', false]])
    assert.equal((await home.json(['list'])).length, 5)
  })

  test('the page opened from the printed URL: the token moves to an HttpOnly cookie, retry moves a dead job to pending, HTML shown as text', async (t) => {
    if (!existsSync(CHROMIUM)) return t.skip(`${CHROMIUM} is missing (CI installs it)`)
    const { page, problems } = await openPage()
    try {
      await page.goto(dash.url)
      const row = (id: string) => page.locator(`tr[data-id="${id}"]`)
      await row('nightly-report').locator('.badge', { hasText: 'completed' }).waitFor()
      assert.equal(page.url(), `${dash.base}/`, 'the token has left the address bar')
      const cookies = await page.context().cookies()
      assert.deepEqual(cookies.map((c) => [c.name, c.value, c.httpOnly, c.sameSite, c.path]),
        [[`queuectl-${dash.port}`, dash.token, true, 'Strict', '/']])
      assert.equal(await page.evaluate(() => document.cookie), '', 'the page\'s script cannot read the token')
      await row('broken-sync').locator('.badge', { hasText: 'dead' }).waitFor()
      assert.equal(await page.locator('.card.s-completed b').textContent(), '2')
      assert.equal(await page.locator('.card.s-dead b').textContent(), '3')
      assert.equal(await row('html-test').locator('td.cmd').textContent(), `echo '${XSS}'`)
      assert.equal(await page.locator('img').count(), 0)
      await row('broken-sync').getByRole('button', { name: 'Retry' }).click()
      await row('broken-sync').locator('.badge', { hasText: 'pending' }).waitFor()
      const job = await home.job('broken-sync')
      assert.equal(job.state, 'pending')
      assert.equal(job.attempts, 0)
      await page.locator('.card.s-dead b', { hasText: /^2$/ }).waitFor()

      // The job page: every field, the attempts, and the log, all as text.
      await row('html-test').getByRole('link', { name: 'html-test' }).click()
      await page.locator('#log', { hasText: XSS }).waitFor()
      assert.match(await page.locator('table.kv').textContent() ?? '', /command.*onerror=alert\(1\)/)
      assert.equal(await page.locator('img').count(), 0)
      // Reloaded, the page is authenticated by its cookie alone.
      await page.reload()
      await page.locator('#log', { hasText: XSS }).waitFor()
      assert.deepEqual(problems, [])
    } finally {
      await page.close()
    }
  })

  test('the page: Retry on the dead job whose id is `all` retries that job only; "Retry all dead" retries the rest', async (t) => {
    if (!existsSync(CHROMIUM)) return t.skip(`${CHROMIUM} is missing (CI installs it)`)
    const { page, problems } = await openPage({ acceptConfirms: true })
    try {
      await page.goto(dash.url)
      const row = (id: string) => page.locator(`tr[data-id="${id}"]`)
      await row('also-dead').locator('.badge', { hasText: 'dead' }).waitFor()
      await row('all').getByRole('button', { name: 'Retry' }).click()
      await row('all').locator('.badge', { hasText: 'pending' }).waitFor()
      assert.equal((await home.job('all')).state, 'pending')
      assert.equal((await home.job('also-dead')).state, 'dead', 'another dead job is left alone')
      await page.locator('.card.s-dead b', { hasText: /^1$/ }).waitFor()
      assert.equal((await home.job('also-dead')).state, 'dead')

      await page.getByRole('button', { name: 'Retry all dead (1)' }).click()
      await row('also-dead').locator('.badge', { hasText: 'pending' }).waitFor()
      await page.locator('.card.s-dead b', { hasText: /^0$/ }).waitFor()
      assert.deepEqual((await home.json(['list', '--state', 'dead'])).map((j: any) => j.id), [])
      assert.deepEqual(problems, [])
    } finally {
      await page.close()
    }
  })

  test('opened by a link from another site, the page still gets its cookie (it sets it itself: no redirect)', async (t) => {
    if (!existsSync(CHROMIUM)) return t.skip(`${CHROMIUM} is missing (CI installs it)`)
    // localhost and 127.0.0.1 are different sites: a link between them is a cross-site navigation.
    const other = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/html' })
      res.end(`<a href="${dash.url}">open the dashboard</a>`)
    })
    await new Promise<void>((resolve) => other.listen(0, '127.0.0.1', resolve))
    try { // closed also when the browser does not start: a server left listening keeps the file's process alive
      const { page, problems } = await openPage()
      try {
        await page.goto(`http://localhost:${(other.address() as AddressInfo).port}/`)
        await page.getByRole('link', { name: 'open the dashboard' }).click()
        await page.locator('tr[data-id="nightly-report"] .badge', { hasText: 'completed' }).waitFor()
        assert.equal(page.url(), `${dash.base}/`)
        assert.deepEqual(problems, [])
      } finally {
        await page.close()
      }
    } finally {
      other.close()
    }
  })
})

// ---------- queues, kill, retry and dependencies ----------

describe('dashboard API: queues, pause, kill, retry and dependencies', () => {
  const home = new Home()
  let dash: Dashboard
  let auth: { authorization: string }
  const get = (path: string) => fetch(dash.base + path, { headers: auth })
  const post = (path: string, body?: string) => fetch(dash.base + path, {
    method: 'POST', headers: body === undefined ? auth : { ...auth, 'content-type': 'application/json' }, body,
  })
  const paused = async () => Object.fromEntries((await home.json(['queue', 'ls'])).map((q: any) => [q.name, q.paused]))

  before(async () => {
    await enqueueJson(home, { id: 'parent-dead', command: 'exit 3', max_retries: 0, queue: 'build' })
    await enqueueJson(home, { id: 'child-skipped', command: 'echo never', after: 'parent-dead', queue: 'build' })
    await home.ok(['worker', 'run', '--drain'], { timeoutMs: 20_000 })
    for (const id of ['wait-here', 'all', 'other']) await enqueueJson(home, { id, command: 'echo waiting' })
    await enqueueJson(home, { id: 'deploy-1', command: 'echo deploy', queue: 'deploy' })
    await home.ok(['queue', 'set', 'deploy', '--concurrency', '2'])
    dash = await startDashboard(home)
    auth = bearer(dash.token)
  })
  after(async () => {
    await dash?.stop()
    await home.cleanup()
  })

  test('GET /api/jobs takes every state and ?queue=; a bad queue name is 400', async () => {
    const ids = async (query: string) => {
      const res = await get(`/api/jobs?${query}`)
      assert.equal(res.status, 200, query)
      return (await res.json()).jobs.map((j: any) => j.id)
    }
    assert.deepEqual(await ids('queue=build'), ['child-skipped', 'parent-dead'])
    assert.deepEqual(await ids('queue=deploy'), ['deploy-1'])
    assert.deepEqual(await ids('queue=default&state=pending'), ['other', 'all', 'wait-here'])
    assert.deepEqual(await ids('state=skipped'), ['child-skipped'])
    assert.deepEqual(await ids('queue=no-such-queue'), [])
    for (const state of ['blocked', 'cancelled', 'processing', 'failed']) assert.deepEqual(await ids(`state=${state}`), [], state)
    assert.deepEqual((await (await get('/api/jobs?queue=build')).json()).jobs.map((j: any) => j.queue), ['build', 'build'])
    for (const bad of ['.hidden', '-x', 'a/b', 'q'.repeat(65)]) {
      const res = await get(`/api/jobs?queue=${encodeURIComponent(bad)}`)
      assert.equal(res.status, 400, bad)
      assert.match((await res.json()).error, /invalid queue name/)
    }
  })

  test('GET /api/queues is what `queue ls --json` shows; pause and resume a queue, or all of them, as the CLI sees it', async () => {
    const queues = await (await get('/api/queues')).json()
    assert.deepEqual(queues, await home.json(['queue', 'ls']))
    assert.deepEqual(queues.map((q: any) => [q.name, q.concurrency, q.paused]), [['build', null, false], ['default', null, false], ['deploy', 2, false]])
    assert.deepEqual(queues[0].counts, { ...NO_JOBS, dead: 1, skipped: 1 })

    const pause = await post('/api/queues/deploy/pause')
    assert.equal(pause.status, 200)
    assert.deepEqual(await pause.json(), { paused: true, changed: ['deploy'] })
    assert.deepEqual(await paused(), { build: false, default: false, deploy: true })
    assert.deepEqual(await (await post('/api/queues/deploy/pause')).json(), { paused: true, changed: [] }, 'already paused')
    assert.deepEqual(await (await post('/api/queues/deploy/resume')).json(), { paused: false, changed: ['deploy'] })
    assert.deepEqual(await paused(), { build: false, default: false, deploy: false })

    assert.deepEqual(await (await post('/api/queues/pause-all')).json(), { paused: true, changed: ['build', 'default', 'deploy'] })
    await enqueueJson(home, { id: 'later-1', command: 'echo later', queue: 'later' })
    assert.deepEqual(await paused(), { build: true, default: true, deploy: true, later: true }, 'pause-all also covers a queue made later')
    assert.deepEqual(await (await post('/api/queues/resume-all')).json(), { paused: false, changed: ['build', 'default', 'deploy', 'later'] })
    assert.deepEqual(await paused(), { build: false, default: false, deploy: false, later: false })
    await home.ok(['rm', 'later-1'])

    for (const bad of ['.hidden', '-x', 'a%2Fb', 'q'.repeat(65), '%20']) {
      const res = await post(`/api/queues/${bad}/pause`)
      assert.equal(res.status, 400, bad)
      assert.match((await res.json()).error, /invalid queue name/)
    }
    assert.equal((await get('/api/queues/deploy/pause')).status, 405)
    assert.equal((await get('/api/queues/pause-all')).status, 405)
    assert.equal((await post('/api/queues')).status, 405)
    assert.equal((await post('/api/queues/deploy/stop')).status, 404)
    assert.deepEqual(await paused(), { build: false, default: false, deploy: false, later: false })
  })

  test('POST /api/jobs/:id/kill cancels a waiting job; {signal, grace} are read as kill reads its flags; bad ones change nothing', async () => {
    for (const [body, error] of [
      ['{"signal":"NOPE"}', /unknown signal "NOPE"/], ['{"signal":9}', /signal must be a signal name/],
      ['{"grace":"soon"}', /invalid duration "soon"/], ['{"grace":-1}', /invalid duration/], ['{"grace":true}', /grace must be a duration/],
      ['{"force":true}', /unknown key force: allowed are signal, grace/], ['[1]', /must be a JSON object/], ['{', /must be a JSON object/],
    ] as const) {
      const res = await post('/api/jobs/wait-here/kill', body)
      assert.equal(res.status, 400, body)
      assert.match((await res.json()).error, error, body)
    }
    assert.equal((await home.job('wait-here')).state, 'pending')

    const kill = await post('/api/jobs/wait-here/kill')
    assert.equal(kill.status, 200)
    assert.deepEqual(await kill.json(), { cancelled: ['wait-here'], signalled: [], finished: [] })
    const job = await home.job('wait-here')
    assert.deepEqual([job.state, job.last_error], ['cancelled', 'cancelled'])
    const again = await post('/api/jobs/wait-here/kill')
    assert.equal(again.status, 409)
    assert.match((await again.json()).error, /already cancelled/)
    assert.equal((await post('/api/jobs/no-such-job/kill')).status, 404)
    assert.equal((await post('/api/jobs/..%2Fx/kill')).status, 400)
    assert.equal((await get('/api/jobs/other/kill')).status, 405)

    // `all` is a job id: it kills that job, not every job.
    assert.deepEqual(await (await post('/api/jobs/all/kill', '{"signal":"int","grace":"2s"}')).json(), { cancelled: ['all'], signalled: [], finished: [] })
    assert.equal((await home.job('all')).state, 'cancelled')
    assert.equal((await home.job('other')).state, 'pending')
  })

  test('POST /api/jobs/:id/kill of a running job: its worker sends the given signal and records it cancelled', async () => {
    await enqueueJson(home, {
      id: 'running', queue: 'slow', max_retries: 3,
      command: "trap 'echo got-int; exit 7' INT; echo started; while :; do sleep 0.1; done",
    })
    const worker = home.spawn(['worker', 'run', '--queue', 'slow'])
    try {
      // its own line, which comes after its trap: the log's header (`… · started …`) is written before the shell runs
      await waitFor('the job to set its trap', () => /^started$/m.test(readFileSync(join(home.dir, 'logs', 'running.log'), 'utf8')))
      const kill = await post('/api/jobs/running/kill', JSON.stringify({ signal: 'SIGINT', grace: 10 }))
      assert.equal(kill.status, 200)
      assert.deepEqual(await kill.json(), { cancelled: [], signalled: ['running'], finished: [] })
      const job = await waitForState(home, 'running', ['cancelled', 'failed', 'dead', 'completed'])
      assert.equal(job.state, 'cancelled')
      assert.equal(job.history.at(-1).exit_code, 7)
      assert.match(readFileSync(join(home.dir, 'logs', 'running.log'), 'utf8'), /got-int/, 'SIGINT, not the default SIGTERM')
    } finally {
      worker.kill('SIGTERM')
      await once(worker, 'exit')
    }
  })

  test('POST /api/jobs/:id/retry takes dead, cancelled and skipped jobs; a skipped job comes back with its parent', async () => {
    await enqueueJson(home, { id: 'to-cancel', command: 'echo hi' })
    await home.ok(['kill', 'to-cancel'])
    const cancelled = await post('/api/jobs/to-cancel/retry')
    assert.equal(cancelled.status, 200)
    assert.deepEqual(await cancelled.json(), { retried: ['to-cancel'], revived: 0 })
    assert.deepEqual([(await home.job('to-cancel')).state, (await home.job('to-cancel')).attempts], ['pending', 0])

    const skipped = await post('/api/jobs/child-skipped/retry')
    assert.equal(skipped.status, 409)
    assert.match((await skipped.json()).error, /waits for parent-dead, which is dead/)
    assert.equal((await home.job('child-skipped')).state, 'skipped')
    const parent = await post('/api/jobs/parent-dead/retry')
    assert.equal(parent.status, 200)
    assert.deepEqual(await parent.json(), { retried: ['parent-dead'], revived: 1 })
    assert.equal((await home.job('parent-dead')).state, 'pending')
    assert.equal((await home.job('child-skipped')).state, 'blocked')

    const detail = await (await get('/api/jobs/child-skipped')).json()
    assert.deepEqual(detail.parents, [{ id: 'parent-dead', state: 'pending', required: true }])
    assert.deepEqual((await (await get('/api/jobs/parent-dead')).json()).dependants, [{ id: 'child-skipped', state: 'blocked', required: true }])
    assert.equal((await post('/api/jobs/other/retry')).status, 409, 'a pending job is not retried')
    assert.equal((await home.job('other')).state, 'pending')
  })
})

describe('dashboard page: the queue panel, Kill, Retry and dependencies', () => {
  const home = new Home()
  let dash: Dashboard

  before(async () => {
    const jobs = [
      { id: 'page-parent', command: 'echo building; exit 3', max_retries: 0, queue: 'build' },
      { id: 'page-child', command: 'echo packaging', after: 'page-parent', queue: 'build' },
      { id: 'report', command: 'echo report done' },
      { id: 'lint', command: 'echo lint ok', queue: 'build' },
    ]
    await home.ok(['enqueue', '--file', '-'], { input: jobs.map((job) => JSON.stringify(job)).join('\n') })
    await home.ok(['worker', 'run', '--drain'], { timeoutMs: 20_000 })
    await enqueueJson(home, { id: 'doomed', command: 'sleep 60' })
    await enqueueJson(home, { id: 'ship', command: './deploy.sh', queue: 'deploy', after: 'doomed' })
    await home.ok(['queue', 'set', 'deploy', '--concurrency', '1'])
    await home.ok(['pause', '--queue', 'build'])
    await home.ok(['schedule', 'add', 'nightly', '--cron', '0 2 29 2 *', '--tz', 'Europe/Berlin', '--queue', 'build', '--', './backup.sh --full'])
    dash = await startDashboard(home)
  })
  after(async () => {
    await dash?.stop()
    await home.cleanup()
  })

  test('a paused queue shows as paused and Resume resumes it; Pause all and Resume all', async (t) => {
    if (!existsSync(CHROMIUM)) return t.skip(`${CHROMIUM} is missing (CI installs it)`)
    const { page, problems } = await openPage()
    const pausedNow = async () => Object.fromEntries((await home.json(['queue', 'ls'])).map((q: any) => [q.name, q.paused]))
    try {
      await page.goto(dash.url)
      const queueRow = (name: string) => page.locator(`tr[data-queue="${name}"]`)
      await queueRow('build').locator('.badge', { hasText: 'paused' }).waitFor()
      assert.equal(await queueRow('build').locator('td[data-state="dead"]').textContent(), '1')
      assert.equal(await queueRow('build').locator('td[data-state="skipped"]').textContent(), '1')
      assert.equal(await queueRow('build').locator('td[data-state="completed"]').textContent(), '1')
      assert.match(await queueRow('deploy').textContent() ?? '', /^deploy1running/)
      assert.match(await queueRow('default').textContent() ?? '', /^defaultunlimitedrunning/)
      for (const state of Object.keys(NO_JOBS)) await page.locator(`.card.s-${state}`).waitFor()
      assert.equal(await page.locator('.card.s-skipped b').textContent(), '1')
      assert.equal(await page.locator('.card.s-blocked b').textContent(), '1')
      assert.equal(await page.locator('tr[data-id="ship"] td').nth(2).textContent(), 'deploy', 'the jobs table shows the queue')
      const schedule = await page.locator('tr[data-schedule="nightly"] td').allTextContents()
      assert.deepEqual([schedule[0], schedule[1], schedule[2], schedule[4], schedule[5], schedule[6], schedule[7], schedule[8]],
        ['nightly', '0 2 29 2 *', 'Europe/Berlin', '—', '0', '0', 'active', './backup.sh --full'])
      assert.match(schedule[3], /^in \d+d$/, 'the next fire (a leap day: no worker of these tests fires it)')
      if (process.env.UPDATE_SCREENSHOT) {
        mkdirSync(join(ROOT, 'docs'), { recursive: true })
        await page.screenshot({ path: join(ROOT, 'docs', 'dashboard.png'), fullPage: true })
      }

      await queueRow('build').getByRole('button', { name: 'Resume' }).click()
      await queueRow('build').getByRole('button', { name: 'Pause' }).waitFor()
      assert.equal(await queueRow('build').locator('.badge').count(), 0)
      assert.deepEqual(await pausedNow(), { build: false, default: false, deploy: false })

      await page.getByRole('button', { name: 'Pause all' }).click()
      for (const name of ['build', 'default', 'deploy']) await queueRow(name).locator('.badge', { hasText: 'paused' }).waitFor()
      assert.deepEqual(await pausedNow(), { build: true, default: true, deploy: true })
      await page.getByRole('button', { name: 'Resume all' }).click()
      await waitFor('no queue shown as paused', async () => (await page.locator('tr[data-queue] .badge').count()) === 0, 10_000)
      assert.deepEqual(await pausedNow(), { build: false, default: false, deploy: false })

      // A queue's name shows its jobs only.
      await queueRow('deploy').getByRole('link', { name: 'deploy' }).click()
      await waitFor('the jobs of deploy only', async () =>
        JSON.stringify(await page.locator('tr[data-id]').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-id')))) === '["ship"]', 10_000)
      assert.deepEqual(problems, [])
    } finally {
      await page.close()
    }
  })

  test('a pending job\'s Kill cancels it; a skipped job shows its dead parent, and comes back when that parent is retried', async (t) => {
    if (!existsSync(CHROMIUM)) return t.skip(`${CHROMIUM} is missing (CI installs it)`)
    const { page, problems } = await openPage({ acceptConfirms: true })
    try {
      await page.goto(`${dash.url}#/jobs/doomed`)
      const title = page.locator('h1')
      await title.locator('.badge', { hasText: 'pending' }).waitFor()
      assert.equal(await title.getByRole('button', { name: 'Retry' }).count(), 0)
      await title.getByRole('button', { name: 'Kill' }).click()
      await title.locator('.badge', { hasText: 'cancelled' }).waitFor()
      await title.getByRole('button', { name: 'Retry' }).waitFor()
      assert.equal(await title.getByRole('button', { name: 'Kill' }).count(), 0)
      assert.equal((await home.job('doomed')).state, 'cancelled')

      await page.goto(`${dash.base}/#/jobs/page-child`)
      await title.locator('.badge', { hasText: 'skipped' }).waitFor()
      const parentRow = page.locator('tr[data-parent="page-parent"]')
      await parentRow.locator('.badge', { hasText: 'dead' }).waitFor()
      await title.getByRole('button', { name: 'Retry' }).click()
      await page.locator('#toast', { hasText: /Retry failed: .*waits for page-parent, which is dead/ }).waitFor()
      assert.equal((await home.job('page-child')).state, 'skipped')

      await parentRow.getByRole('link', { name: 'page-parent' }).click()
      await title.locator('.mono', { hasText: 'page-parent' }).waitFor()
      const childRow = page.locator('tr[data-dependant="page-child"]')
      await childRow.locator('.badge', { hasText: 'skipped' }).waitFor()
      await title.getByRole('button', { name: 'Retry' }).click()
      await title.locator('.badge', { hasText: 'pending' }).waitFor()
      await childRow.locator('.badge', { hasText: 'blocked' }).waitFor()
      assert.deepEqual([(await home.job('page-parent')).state, (await home.job('page-child')).state], ['pending', 'blocked'])

      await childRow.getByRole('link', { name: 'page-child' }).click()
      await title.locator('.badge', { hasText: 'blocked' }).waitFor()
      await title.getByRole('button', { name: 'Kill' }).waitFor()
      assert.equal(await title.getByRole('button', { name: 'Retry' }).count(), 0)
      await page.locator('tr[data-parent="page-parent"] .badge', { hasText: 'pending' }).waitFor()
      assert.deepEqual(problems, [])
    } finally {
      await page.close()
    }
  })
})

// ---------- where the token comes from ----------

describe('dashboard token sources', () => {
  const home = new Home()
  after(() => home.cleanup())
  const file = join(home.dir, 'dashboard.token')
  const envToken = 'from-the-environment-0123'
  const flagToken = 'from.the.flag~0123456789'

  test('QUEUECTL_DASHBOARD_TOKEN, then --token, win over the token file, and neither writes it', async () => {
    const fromEnv = await startDashboard(home, [], { QUEUECTL_DASHBOARD_TOKEN: envToken })
    try {
      assert.equal(fromEnv.token, envToken)
      assert.equal(existsSync(file), false)
    } finally {
      await fromEnv.stop()
    }
    const fromFlag = await startDashboard(home, ['--token', flagToken], { QUEUECTL_DASHBOARD_TOKEN: envToken })
    try {
      assert.equal(fromFlag.token, flagToken)
      assert.equal((await fetch(`${fromFlag.base}/api/overview`, { headers: bearer(envToken) })).status, 401)
      assert.equal(existsSync(file), false)
    } finally {
      await fromFlag.stop()
    }
    const generated = await startDashboard(home)
    let stored: string
    try {
      stored = readFileSync(file, 'utf8').trim()
      assert.equal(generated.token, stored)
    } finally {
      await generated.stop()
    }
    const overFile = await startDashboard(home, [], { QUEUECTL_DASHBOARD_TOKEN: envToken })
    try {
      assert.equal(overFile.token, envToken)
      assert.equal((await fetch(`${overFile.base}/api/overview`, { headers: bearer(stored) })).status, 401)
      assert.equal(readFileSync(file, 'utf8').trim(), stored)
    } finally {
      await overFile.stop()
    }
  })

  test('a token that is short or not URL-safe is refused with exit 2 and one line, before anything is stored', async () => {
    const fresh = new Home()
    try {
      for (const [args, env, source] of [
        [['--token', 'short'], {}, '--token'],
        [['--token', 'has spaces in it, sixteen+'], {}, '--token'],
        [['--token', 'semi;colon=cookie-breaker'], {}, '--token'],
        [[], { QUEUECTL_DASHBOARD_TOKEN: 'tiny' }, 'QUEUECTL_DASHBOARD_TOKEN'],
      ] as const) {
        const r = await fresh.run(['dashboard', '--port', '0', ...args], { env, timeoutMs: 15_000 })
        assert.equal(r.code, 2, `${JSON.stringify(args)} ${JSON.stringify(env)}: ${r.stdout}${r.stderr}`)
        assert.equal(r.stdout, '')
        assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr)
        assert.match(r.stderr, new RegExp(`${source} must be 16 to 512 characters from .* \\(leave it out`))
      }
      assert.deepEqual(readdirSync(fresh.dir), [], 'nothing was created')
    } finally {
      await fresh.cleanup()
    }
  })

  test('a token file that holds no token is reported (exit 1, naming it) and left as it is', async () => {
    const damaged = new Home()
    try {
      await damaged.ok(['status'])
      writeFileSync(join(damaged.dir, 'dashboard.token'), 'no\n', { mode: 0o600 })
      const r = await damaged.run(['dashboard', '--port', '0'], { timeoutMs: 15_000 })
      assert.equal(r.code, 1, r.stdout + r.stderr)
      assert.equal(r.stdout, '')
      assert.match(r.stderr, /dashboard\.token does not hold a dashboard token .*delete it/)
      assert.equal(readFileSync(join(damaged.dir, 'dashboard.token'), 'utf8'), 'no\n')
    } finally {
      await damaged.cleanup()
    }
  })
})

// ---------- with --token ----------

describe('dashboard with --token and --allow-enqueue', () => {
  const home = new Home()
  const token = 's3cret-token_for-tests'
  let dash: Dashboard

  before(async () => {
    dash = await startDashboard(home, ['--token', token, '--allow-enqueue'])
  })
  after(async () => {
    await dash?.stop()
    await home.cleanup()
  })

  test('the printed URL holds the given token; the page is served with its CSP and loads nothing from outside', async () => {
    assert.equal(dash.token, token)
    assert.equal((await fetch(`${dash.base}/api/overview`)).status, 401)
    const page = await fetch(dash.url)
    assert.equal(page.status, 200)
    assert.match(page.headers.get('content-type')!, /^text\/html/)
    assert.match(page.headers.get('content-security-policy')!, /script-src 'nonce-/)
    assert.equal(page.headers.get('referrer-policy'), 'no-referrer')
    assert.doesNotMatch(await page.text(), /https?:\/\/(?!www\.w3\.org)/, 'the page loads nothing from outside')
    assert.equal((await fetch(`${dash.base}/api/dlq/retry-all`, { method: 'POST', headers: bearer(token) })).status, 200)
  })

  test('POST /api/jobs enqueues with --allow-enqueue; bad input is refused and stores nothing', async () => {
    const post = (body: unknown) => fetch(`${dash.base}/api/jobs`, {
      method: 'POST', headers: { ...bearer(token), 'content-type': 'application/json' }, body: JSON.stringify(body),
    })
    assert.equal((await fetch(`${dash.base}/api/jobs`, { method: 'POST', headers: { 'x-queuectl': '1' }, body: '{"command":"id"}' })).status, 401)
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

  test('the page opened from the printed URL follows a running job\'s log, and enqueues from the form', async (t) => {
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
      await page.goto(`${dash.url}#/jobs/follow-me`)
      await page.locator('h1 .badge', { hasText: 'processing' }).waitFor()
      assert.equal(page.url(), `${dash.base}/#/jobs/follow-me`)
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

  test('it prints its URL with the stored token, and requests without it get 401', async () => {
    const dash = await startDashboard(home, ['--host', '0.0.0.0'])
    try {
      assert.equal(dash.token, readFileSync(join(home.dir, 'dashboard.token'), 'utf8').trim())
      for (const path of ['/', '/api/overview', '/metrics']) assert.equal((await fetch(dash.base + path)).status, 401, path)
      assert.equal((await fetch(`${dash.base}/api/overview`, { headers: bearer(dash.token) })).status, 200)
      // Reached by another name than loopback's, as from another machine: no Host check there, the token decides.
      const byName = { ...bearer(dash.token), host: `queue-host.example:${dash.port}` }
      assert.equal((await rawRequest(dash.port, '/api/overview', byName)).status, 200)
      assert.equal((await rawRequest(dash.port, '/api/overview', { host: `queue-host.example:${dash.port}` })).status, 401)
    } finally {
      await dash.stop()
    }
  })
})
