// The npm package works when installed: pack the project, install the tarball into an empty project,
// run the `queuectl` bin with plain node through npx, and import the API from an .mjs file.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ROOT, CLI, sqliteOnly, type RunResult } from './helpers.ts'

/** The environment without npm's lifecycle variables (npm_config_local_prefix etc. would point nested npm at ROOT)
 *  and without NODE_OPTIONS (no tsx loader leaking in). */
function cleanEnv(extra: Record<string, string> = {}): Record<string, string> {
  const env: Record<string, string> = {}
  for (const [k, v] of Object.entries(process.env)) {
    // npm's lifecycle variables would point the nested npm at this project; where to fetch from is kept
    const fetchSetting = /^npm_config_(registry|cache|proxy|https_proxy|noproxy|strict_ssl|cafile|ca|userconfig|globalconfig)$/i.test(k)
    if (v === undefined || (/^npm_/i.test(k) && !fetchSetting) || k === 'NODE_OPTIONS' || k === 'INIT_CWD') continue
    env[k] = v
  }
  return { ...env, ...extra }
}

function run(cmd: string, args: string[], cwd: string, env: Record<string, string>, timeoutMs = 60_000): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (d) => (stdout += d))
    child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d))
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
    child.on('error', reject)
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, stdout, stderr })
    })
  })
}

function ok(r: RunResult, what: string): string {
  assert.equal(r.code, 0, `${what} exited ${r.code} (signal ${r.signal})\nstdout: ${r.stdout}\nstderr: ${r.stderr}`)
  return r.stdout
}

test('npm pack -> npm install -> npx queuectl works with plain node, and the API imports', { timeout: 120_000, skip: sqliteOnly }, async () => {
  assert.ok(existsSync(CLI), `${CLI} is missing: run npm run build first (npm test does)`)
  const tmp = mkdtempSync(join(tmpdir(), 'queuectl-pack-'))
  try {
    const packDir = join(tmp, 'pack')
    const app = join(tmp, 'app')
    const home = join(tmp, 'home')
    mkdirSync(packDir)
    mkdirSync(app)
    // --ignore-scripts: dist/ is already built; rebuilding it here would rewrite dist/queuectl.js under
    // the test files that run at the same time
    const packed = JSON.parse(ok(await run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', packDir], ROOT, cleanEnv()), 'npm pack'))
    const files = packed[0].files.map((f: any) => f.path)
    for (const f of ['package.json', 'dist/queuectl.js', 'dist/queuectl.d.ts']) assert.ok(files.includes(f), `${f} not in the package (${files.join(', ')})`)
    assert.ok(!files.some((f: string) => f.startsWith('test/')), 'tests are not shipped')
    const tarball = join(packDir, packed[0].filename)

    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'queuectl-pack-smoke', version: '1.0.0', private: true }))
    const env = cleanEnv({ QUEUECTL_HOME: home })
    ok(await run('npm', ['install', tarball, '--no-audit', '--no-fund', '--prefer-offline'], app, env, 90_000), 'npm install')
    assert.ok(existsSync(join(app, 'node_modules', 'queuectl', 'dist', 'queuectl.d.ts')), 'dist/queuectl.d.ts installed')
    assert.match(readFileSync(join(app, 'node_modules', 'queuectl', 'dist', 'queuectl.d.ts'), 'utf8'), /openQueue/)
    assert.ok(!existsSync(join(app, 'node_modules', 'tsx')), 'tsx is not a runtime dependency')

    const id = ok(await run('npx', ['--no', 'queuectl', 'enqueue', 'echo hi from the package'], app, env), 'npx queuectl enqueue').trim()
    assert.match(id, /^[0-9a-z]{13}$/)
    ok(await run('npx', ['--no', 'queuectl', 'worker', 'run', '--drain'], app, env), 'npx queuectl worker run --drain')
    const job = JSON.parse(ok(await run('npx', ['--no', 'queuectl', 'show', id, '--json'], app, env), 'npx queuectl show'))
    assert.equal(job.state, 'completed')
    assert.equal(job.exit_code, 0)
    assert.match(job.output_tail, /hi from the package/)
    assert.ok(existsSync(join(home, 'queue.db')), 'the queue lives in QUEUECTL_HOME')

    // the typed API over the same queue
    writeFileSync(join(app, 'check.mjs'), [
      "import { openQueue } from 'queuectl'",
      "if (typeof openQueue !== 'function') throw new Error('openQueue is not exported')",
      'const q = await openQueue(process.env.QUEUECTL_HOME)',
      `const job = await q.getJob(${JSON.stringify(id)})`,
      'await q.close()',
      'console.log(JSON.stringify(job))',
    ].join('\n'))
    const viaApi = JSON.parse(ok(await run(process.execPath, ['check.mjs'], app, env), 'node check.mjs'))
    assert.equal(viaApi.id, id)
    assert.equal(viaApi.state, 'completed')
  } finally {
    rmSync(tmp, { recursive: true, force: true })
  }
})
