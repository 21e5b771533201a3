// Shell completions as a shell runs them: bash, zsh and fish each load the script `queuectl completions SHELL`
// prints and complete a line; the script calls the real CLI (a `queuectl` on PATH) against a real home.
// zsh runs interactive on a pseudo-terminal (zpty) with compinit, so its own completion system offers the
// candidates (compadd is wrapped to print them); bash calls the registered function as readline would.
import { test, describe, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { BACKEND, CLI, Home, runProgram } from './helpers.ts'
import { CONFIG_KEYS, JOB_STATES } from '../queuectl.ts'

const BASH_COMPLETION = '/usr/share/bash-completion/bash_completion' // _get_comp_words_by_ref, which the script uses

/** bash SCRIPT LINE: COMPREPLY from the function `complete -F` registered, with COMP_* set as readline sets them. */
const BASH_DRIVER = `
source ${BASH_COMPLETION}
source "$1"
read -ra COMP_WORDS <<< "$2"
[[ $2 == *' ' ]] && COMP_WORDS+=('')
COMP_CWORD=$(( \${#COMP_WORDS[@]} - 1 )) COMP_LINE=$2 COMP_POINT=\${#2}
spec=$(complete -p queuectl) && fn=\${spec##*-F } && fn=\${fn%% *}
"$fn" queuectl "\${COMP_WORDS[-1]}" "\${COMP_WORDS[-2]}" 2>/dev/null
printf '%s\\n' "\${COMPREPLY[@]}"
`

/** zsh SCRIPT LINE: types LINE and TAB into an interactive zsh; prints what it read back, matches marked <hit>…</hit>. */
const ZSH_DRIVER = String.raw`
zmodload zsh/zpty
zpty z zsh -f -i
zpty -w z "PROMPT=; autoload -Uz compinit; compinit -u -d ${'$'}{(q)3}; source ${'$'}{(q)1}"
zpty -w z 'compadd() { if [[ ${'$'}{@[1,(i)(-|--)]} == *-(O|A|D)\ * ]]; then builtin compadd "$@"; return; fi; local -a hits; builtin compadd -A hits "$@"; print -l -- "\x3chit>"${'$'}{^hits}"\x3c/hit>"; builtin compadd "$@"; }'
zpty -w z 'comppostfuncs=(finished); finished() { print "\x3cdone>"; exit }; print "\x3cready>"'
out=
until [[ $out == *'<ready>'* ]]; do zpty -r z line || exit 1; out+=$line; done
zpty -w z "$2"$'\t'
out=
until [[ $out == *'<done>'* ]]; do zpty -r z line || break; out+=$line; done
print -r -- $out
`

const has = (program: string) => spawnSync('sh', ['-c', `command -v ${program}`]).status === 0

interface Shell {
  missing: string | false
  /** The candidates the shell offers for `line`, sorted. */
  complete(line: string): Promise<string[]>
}

describe('shell completions', { concurrency: true }, () => {
  const home = new Home()
  const dir = mkdtempSync(join(tmpdir(), 'queuectl-completions-'))
  const env = { ...home.env, PATH: `${join(dir, 'bin')}:${process.env.PATH}` }
  const script = (shell: string) => join(dir, `queuectl.${shell}`)
  const sorted = (lines: string[]) => [...new Set(lines.map((line) => line.trim()).filter(Boolean))].sort()
  const run = async (program: string, args: string[]) => {
    const r = await runProgram(program, args, { env, cwd: dir, timeoutMs: 30_000 })
    assert.equal(r.code, 0, `${program} ${args.join(' ')}: ${r.stdout}${r.stderr}`)
    return r.stdout
  }
  const shells: Record<string, Shell> = {
    bash: {
      missing: !existsSync(BASH_COMPLETION) && `${BASH_COMPLETION} is missing (apt-get install bash-completion)`,
      complete: async (line) => sorted((await run('bash', ['--norc', '--noprofile', '-c', BASH_DRIVER, 'bash', script('bash'), line])).split('\n')),
    },
    zsh: {
      missing: !has('zsh') && 'zsh is not installed (apt-get install zsh)',
      complete: async (line) => sorted([...(await run('zsh', ['-f', '-c', ZSH_DRIVER, 'zsh', script('zsh'), line, join(dir, 'zcompdump')])).matchAll(/<hit>(.*?)<\/hit>/g)].map((m) => m[1])),
    },
    fish: {
      missing: !has('fish') && 'fish is not installed (apt-get install fish)',
      complete: async (line) => sorted((await run('fish', ['--no-config', '-c', 'source $argv[1]; complete -C $argv[2]', script('fish'), line])).split('\n').map((l) => l.split('\t')[0])),
    },
  }

  before(async () => {
    mkdirSync(join(dir, 'bin'))
    writeFileSync(join(dir, 'bin', 'queuectl'), `#!/bin/sh\nexec '${process.execPath}' '${CLI}' "$@"\n`)
    chmodSync(join(dir, 'bin', 'queuectl'), 0o755)
    await home.ok(['enqueue', '--id', 'flaky', '--max-retries', '0', 'exit 3'])
    await home.ok(['worker', 'run', '--drain'])
    await home.ok(['enqueue', '--id', 'build-1', 'true'])
    await home.ok(['enqueue', '--id', 'build-2', 'true'])
    await home.ok(['enqueue', '--id', 'deploy-1', '--queue', 'deploy', 'true'])
    for (const shell of Object.keys(shells)) writeFileSync(script(shell), await home.ok(['completions', shell]))
  })
  after(async () => {
    await home.cleanup()
    rmSync(dir, { recursive: true, force: true })
  })

  for (const [name, shell] of Object.entries(shells)) {
    test(`${name}: commands, job ids of the home, config keys, states, dead jobs and queue names`, { skip: shell.missing }, async () => {
      assert.deepEqual(await shell.complete('queuectl sh'), ['show'])
      assert.deepEqual(await shell.complete('queuectl show '), ['build-1', 'build-2', 'deploy-1', 'flaky'])
      assert.deepEqual(await shell.complete('queuectl config get '), Object.keys(CONFIG_KEYS).sort())
      assert.deepEqual(await shell.complete('queuectl list --state '), [...JOB_STATES].sort())
      assert.deepEqual(await shell.complete('queuectl dlq retry '), ['flaky'])
      assert.deepEqual(await shell.complete('queuectl pause --queue '), ['default', 'deploy'])
    })
  }

  test('what the scripts ask at TAB: every command of --help, the home of --home, ids not yet given, nothing created', async () => {
    const complete = async (...words: string[]) => {
      const r = await home.run(['complete', '--', ...words], { env: { QUEUECTL_HOME: join(dir, 'elsewhere') } })
      assert.equal(r.code, 0, r.stderr)
      return r.stdout.split('\n').filter((line) => line && !line.startsWith(':')).map((line) => line.split('\t')[0])
    }
    const help = await home.ok(['--help'])
    const listed = [...help.slice(help.indexOf('COMMANDS')).matchAll(/^ +([a-z]+) {4}/gm)].map((m) => m[1])
    assert.ok(listed.includes('completions') && !listed.includes('complete'), help)
    assert.deepEqual((await complete('')).sort(), listed.sort(), 'the commands of the tree, without the hidden one')
    assert.deepEqual(await complete('--home', home.dir, 'rm', 'build-1', 'b'), ['build-2'], 'an id already given is not offered again')
    assert.deepEqual(await complete(`--home=${home.dir}`, 'queue', 'set', ''), ['default', 'deploy'])
    // on SQLite the queue is the home's file, and that home does not exist; on PostgreSQL it is QUEUECTL_DB's schema
    assert.deepEqual(await complete('show', ''), BACKEND === 'sqlite' ? [] : ['deploy-1', 'build-2', 'build-1', 'flaky'], 'the ids of the queue that QUEUECTL_HOME or QUEUECTL_DB names')
    assert.ok(!existsSync(join(dir, 'elsewhere')), 'completing does not create a home')
    assert.deepEqual(await complete('worker', 'start', '--q'), ['--queue'])

    const wrong = await home.run(['completions', 'tcsh'])
    assert.equal(wrong.code, 2)
    assert.match(wrong.stderr, /no completions for "tcsh": use one of bash, zsh, fish/)
  })
})
