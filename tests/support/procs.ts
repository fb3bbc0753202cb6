import { type ChildProcess, spawn } from "node:child_process";
import { createServer } from "node:net";
import { projectPath } from "../../pipeline/runtime/paths.js";
import { roleUrl } from "./roles.js";

// Child processes of the fault tests: the compiled service entry points run as
// black boxes, configured only through CEA_* variables. Every child is tracked
// so a failing test never leaves one behind (killAll in afterAll, and a
// synchronous kill when the test process exits).

export interface LogLine {
  level?: number;
  msg?: string;
  [k: string]: unknown;
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface Service {
  readonly name: string;
  readonly pid: number;
  readonly proc: ChildProcess;
  /** Parsed JSON log lines from stdout, in order. */
  readonly logs: LogLine[];
  /** Non-JSON stdout lines and all of stderr, for failure messages. */
  readonly text: string[];
  exit: Exit | undefined;
  /** Resolves with the first log line matching, rejects on timeout or if the process exits first. */
  waitForLog(match: (l: LogLine) => boolean, timeoutMs: number): Promise<LogLine>;
  waitExit(timeoutMs: number): Promise<Exit>;
  /** Send a signal (if still running) and wait for the exit. */
  kill(signal: NodeJS.Signals, timeoutMs?: number): Promise<Exit>;
  /** The last lines of output, for assertion messages. */
  tail(n?: number): string;
}

const live = new Set<Service>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on("exit", () => {
    for (const s of live) if (s.exit === undefined) s.proc.kill("SIGKILL");
  });
}

/** A TCP port on 127.0.0.1 in 57000-58999 that nothing listens on right now. */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = 57_000 + Math.floor(Math.random() * 2_000);
    const ok = await new Promise<boolean>((resolve) => {
      const srv = createServer();
      srv.once("error", () => resolve(false));
      srv.listen(port, "127.0.0.1", () => srv.close(() => resolve(true)));
    });
    if (ok) return port;
  }
  throw new Error("no free port found in 57000-58999");
}

/**
 * Start `node dist/pipeline/<entry>.js` with exactly the given CEA_* variables
 * on top of PATH/HOME (the parent's CEA_* are not inherited, so the test says
 * everything the service sees).
 */
export function spawnService(entry: string, env: Record<string, string>, args: string[] = []): Service {
  installExitHook();
  const base: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("CEA_") && k !== "NODE_OPTIONS") base[k] = v;
  const proc = spawn(process.execPath, [projectPath(`dist/pipeline/${entry}.js`), ...args], {
    env: { ...base, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  if (proc.pid === undefined) throw new Error(`could not spawn ${entry}`);
  const logs: LogLine[] = [];
  const text: string[] = [];
  const waiters = new Set<() => void>();
  const notify = () => {
    for (const w of [...waiters]) w();
  };
  const lines = (chunk: Buffer, into: (line: string) => void, buf: { rest: string }) => {
    const parts = (buf.rest + chunk.toString("utf8")).split("\n");
    buf.rest = parts.pop() ?? "";
    for (const p of parts) if (p.length) into(p);
    notify();
  };
  const outBuf = { rest: "" };
  const errBuf = { rest: "" };
  proc.stdout?.on("data", (c: Buffer) =>
    lines(
      c,
      (l) => {
        try {
          logs.push(JSON.parse(l) as LogLine);
        } catch {
          text.push(l);
        }
      },
      outBuf,
    ),
  );
  proc.stderr?.on("data", (c: Buffer) => lines(c, (l) => text.push(`stderr: ${l}`), errBuf));

  const svc: Service = {
    name: entry,
    pid: proc.pid,
    proc,
    logs,
    text,
    exit: undefined,
    waitForLog(match, timeoutMs) {
      return new Promise((resolve, reject) => {
        let seen = 0;
        const check = () => {
          for (; seen < logs.length; seen++) {
            const l = logs[seen]!;
            if (match(l)) {
              done();
              resolve(l);
              return;
            }
          }
          if (svc.exit !== undefined) {
            done();
            reject(
              new Error(`${entry} exited (${JSON.stringify(svc.exit)}) before the awaited log line\n${svc.tail()}`),
            );
          }
        };
        const timer = setTimeout(() => {
          done();
          reject(new Error(`${entry}: awaited log line not seen within ${timeoutMs} ms\n${svc.tail()}`));
        }, timeoutMs);
        const done = () => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        waiters.add(check);
        check();
      });
    },
    waitExit(timeoutMs) {
      return new Promise((resolve, reject) => {
        const check = () => {
          if (svc.exit !== undefined) {
            done();
            resolve(svc.exit);
          }
        };
        const timer = setTimeout(() => {
          done();
          reject(new Error(`${entry} (pid ${proc.pid}) did not exit within ${timeoutMs} ms\n${svc.tail()}`));
        }, timeoutMs);
        const done = () => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        waiters.add(check);
        check();
      });
    },
    async kill(signal, timeoutMs = 20_000) {
      if (svc.exit === undefined) proc.kill(signal);
      return svc.waitExit(timeoutMs);
    },
    tail(n = 30) {
      const all = [...logs.slice(-n).map((l) => JSON.stringify(l)), ...text.slice(-n)];
      return all.slice(-n).join("\n");
    },
  };
  proc.on("exit", (code, signal) => {
    svc.exit = { code, signal };
    live.delete(svc);
    notify();
  });
  live.add(svc);
  return svc;
}

/** Run an entry point to completion (e.g. `--check`) and return its exit. */
export async function runService(
  entry: string,
  env: Record<string, string>,
  args: string[],
  timeoutMs = 30_000,
): Promise<Exit & { output: string }> {
  const s = spawnService(entry, env, args);
  const exit = await s.waitExit(timeoutMs);
  return { ...exit, output: s.tail(100) };
}

/** SIGKILL every child still running; for afterAll. */
export async function killAll(): Promise<void> {
  await Promise.all([...live].map((s) => s.kill("SIGKILL", 10_000)));
}

/** Poll `probe` until it returns a value that is not undefined, or fail after timeoutMs naming `what`. */
export async function waitUntil<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  timeoutMs: number,
  everyMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** The CEA_* variables every pipeline child of a fault test gets, plus the test's own. */
export function pipelineEnv(o: {
  databaseUrl: string;
  redisUrl: string;
  prefix: string;
  extra?: Record<string, string | number>;
}): Record<string, string> {
  const env: Record<string, string> = {
    CEA_DATABASE_URL: o.databaseUrl,
    // each service as its own role, so a missing grant fails the test
    CEA_WORKER_DATABASE_URL: roleUrl(o.databaseUrl, "worker"),
    CEA_API_DATABASE_URL: roleUrl(o.databaseUrl, "api"),
    CEA_READER_DATABASE_URL: roleUrl(o.databaseUrl, "reader"),
    CEA_AUTOMATION_DATABASE_URL: roleUrl(o.databaseUrl, "automation"),
    CEA_REDIS_URL: o.redisUrl,
    CEA_REDIS_PREFIX: o.prefix,
    CEA_LOG_LEVEL: "debug",
    CEA_SITE_FILE: projectPath("ops/site.json"),
    CEA_CAN_DB_FILE: projectPath("ops/cea.kcd"),
    // metrics on a port the kernel picks (logged), so services of parallel tests never contend for one
    CEA_SCANNER_METRICS_PORT: "0",
    CEA_WORKER_METRICS_PORT: "0",
    CEA_BACKEND_METRICS_PORT: "0",
    CEA_AUTOMATION_METRICS_PORT: "0",
  };
  for (const [k, v] of Object.entries(o.extra ?? {})) env[k] = String(v);
  return env;
}
