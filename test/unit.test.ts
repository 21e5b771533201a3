// Unit tests of the pure helpers exported by queuectl.ts: durations, retry delay, job ids, quoting a command.
import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { parseDuration, formatDuration, retryDelay, generateJobId, quoteCommand } from '../queuectl.ts'

describe('parseDuration', () => {
  const valid: Array<[string, number]> = [
    ['30s', 30_000],
    ['5m', 300_000],
    ['2h', 7_200_000],
    ['1d', 86_400_000],
    ['1.5s', 1_500],
    ['0.5m', 30_000],
    ['10', 10_000],
    ['0', 0],
    ['0s', 0],
    ['2.5', 2_500],
  ]
  for (const [text, ms] of valid) {
    test(`${JSON.stringify(text)} is ${ms} ms`, () => {
      assert.equal(parseDuration(text), ms)
    })
  }

  const invalid = ['', ' ', 'abc', '5x', 's', 'm5', '-5s', '-1', '5s5', '1..5s', 'NaN', '5 minutes']
  for (const text of invalid) {
    test(`${JSON.stringify(text)} is refused`, () => {
      assert.throws(() => parseDuration(text))
    })
  }

  test('the refusal names what was being read and the forms it takes', () => {
    assert.throws(() => parseDuration('5x', '--timeout'), /^Error: invalid --timeout "5x": use a duration such as 500ms, 30s, 5m, 2h, 1d, or a number of seconds$/)
    assert.throws(() => parseDuration(-1, 'timeout'), /invalid timeout -1/)
  })
})

describe('formatDuration', () => {
  const cases: Array<[number, string]> = [[0, '0'], [604_800_000, '7d'], [7_200_000, '2h'], [300_000, '5m'], [90_000, '90s'], [1_500, '1500ms']]
  for (const [ms, text] of cases) {
    test(`${ms} ms is ${text}, which parses back to ${ms} ms`, () => {
      assert.equal(formatDuration(ms), text)
      assert.equal(parseDuration(text), ms)
    })
  }
})

describe('quoteCommand', () => {
  const cases: Array<[string[], string]> = [
    [['printf', '%s\\n', 'a b', 'c'], "printf '%s\\n' 'a b' c"],
    [['echo', ''], "echo ''"],
    [['echo', "it's"], "echo 'it'\\''s'"],
    [['echo', '$HOME', '`id`', '$(id)'], "echo '$HOME' '`id`' '$(id)'"],
    [['echo', 'two\nlines'], "echo 'two\nlines'"],
    [['ls', '--color=auto', './a-b_c.txt', 'x@y:1,2%+'], 'ls --color=auto ./a-b_c.txt x@y:1,2%+'],
    [['FOO=bar', 'baz'], "'FOO=bar' baz"],
  ]
  for (const [args, line] of cases) {
    test(`${JSON.stringify(args)} -> ${line}`, () => {
      assert.equal(quoteCommand(args), line)
    })
  }

  test('/bin/sh -c runs the line with exactly the arguments given', () => {
    const args = ['%s\\n', 'a b', '', "'", '"', "it's \"quoted\"", '$HOME', '${PATH}', '`id`', '$(id)', 'two\nlines', '\ttab', '*', '?', '~',
      '#comment', ';', '&&', '|', '>', '<', '\\', ' lead', 'trail ', 'é', '!x', '{a,b}', '[ab]', '-n', 'x=1']
    const program = 'process.stdout.write(JSON.stringify(process.argv.slice(1)))'
    const r = spawnSync('/bin/sh', ['-c', quoteCommand([process.execPath, '-e', program, ...args])], { encoding: 'utf8', env: { HOME: '/nowhere', PATH: process.env.PATH } })
    assert.equal(r.status, 0, r.stderr)
    assert.deepEqual(JSON.parse(r.stdout), args)
  })
})

describe('retryDelay', () => {
  const cases: Array<[number, number, number, number]> = [
    // failed attempts k, backoff_base, backoff_max, expected seconds
    [1, 2, 3600, 2],
    [2, 2, 3600, 4],
    [3, 2, 3600, 8],
    [11, 2, 3600, 2048],
    [12, 2, 3600, 3600],
    [20, 2, 3600, 3600],
    [10_000, 2, 3600, 3600], // 2^10000 is Infinity: still capped
    [1, 0, 3600, 0], // base 0 = retry at once
    [5, 0, 3600, 0],
    [1, 1, 3600, 1],
    [7, 1, 3600, 1],
    [3, 10, 500, 500],
    [2, 1.5, 100, 2.25],
    [1, 5, 0, 0],
  ]
  for (const [k, base, max, expected] of cases) {
    test(`k=${k} base=${base} max=${max} -> ${expected}s`, () => {
      assert.equal(retryDelay(k, base, max), expected)
    })
  }

  test('grows monotonically until the cap', () => {
    let previous = -1
    for (let k = 1; k <= 30; k++) {
      const d = retryDelay(k, 2, 3600)
      assert.ok(d >= previous, `retryDelay(${k}) = ${d} < ${previous}`)
      assert.ok(d <= 3600)
      previous = d
    }
  })
})

describe('generateJobId', () => {
  test('13 chars of [0-9a-z]', () => {
    for (let i = 0; i < 50; i++) {
      const id = generateJobId()
      assert.match(id, /^[0-9a-z]{13}$/)
    }
  })

  test('strictly increasing across 1000 calls in one process', () => {
    const ids = Array.from({ length: 1000 }, () => generateJobId())
    for (let i = 1; i < ids.length; i++) {
      assert.ok(ids[i - 1] < ids[i], `id ${i - 1} (${ids[i - 1]}) is not < id ${i} (${ids[i]})`)
    }
    assert.equal(new Set(ids).size, ids.length)
  })

  test('ids generated later sort after earlier ones (creation order)', async () => {
    const first = generateJobId()
    await new Promise((r) => setTimeout(r, 20))
    const second = generateJobId()
    assert.ok(first < second)
  })
})
