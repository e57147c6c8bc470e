import { type ChildProcess, spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'

export const ROOT = fileURLToPath(new URL('../..', import.meta.url))

export interface Child {
  proc: ChildProcess
  stdout: string
  stderr: string
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  /** Resolves with the first match of `re` in stdout+stderr. */
  waitForOutput(re: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>
}

/**
 * Runs a TypeScript entry point (src/server.ts, src/cli.ts) as a real child process, as a user would.
 * Node itself runs it (`--import tsx`), not the tsx wrapper: a signal then reaches the server, and
 * kill -9 kills it rather than orphaning it.
 */
export function runTs(entry: string, args: string[] = [], env: Record<string, string | undefined> = {}): Child {
  return runNode(['--import', 'tsx', entry, ...args], env)
}

/** Runs `node <args>` from the project's folder (a built entry in dist/, as `npm start` runs it). */
export function runNode(args: string[], env: Record<string, string | undefined> = {}): Child {
  const proc = spawn(process.execPath, args, {
    cwd: ROOT,
    // One process per instance unless a test asks for workers (WORKERS defaults to one per core on PostgreSQL).
    env: { ...process.env, LOG_LEVEL: 'warn', WORKERS: '1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const child: Child = {
    proc,
    stdout: '',
    stderr: '',
    exited: new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal }))),
    waitForOutput(re, timeoutMs = 30_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const m = (child.stdout + child.stderr).match(re)
          if (m) {
            clearTimeout(timer)
            proc.stdout?.off('data', check)
            proc.stderr?.off('data', check)
            resolve(m)
          }
        }
        const timer = setTimeout(
          () => reject(new Error(`no ${re} within ${timeoutMs} ms; output:\n${child.stdout}\n${child.stderr}`)),
          timeoutMs,
        )
        proc.stdout?.on('data', check)
        proc.stderr?.on('data', check)
        check()
      })
    },
  }
  proc.stdout?.setEncoding('utf8').on('data', (d: string) => (child.stdout += d))
  proc.stderr?.setEncoding('utf8').on('data', (d: string) => (child.stderr += d))
  return child
}

/** Runs to completion and returns the exit code and output. */
export async function runToEnd(entry: string, args: string[], env: Record<string, string | undefined> = {}) {
  const child = runTs(entry, args, env)
  const { code } = await child.exited
  return { code, stdout: child.stdout, stderr: child.stderr }
}
