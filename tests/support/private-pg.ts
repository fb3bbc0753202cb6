import { execFile, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chownSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { appendFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import pg from "pg";
import { applySchema } from "../../db/schema.js";
import { loadSite, syncSite } from "../../db/site.js";
import { projectPath } from "../../pipeline/runtime/paths.js";
import { freePort } from "./procs.js";
import { enableRoleLogins } from "./roles.js";

const run = promisify(execFile);

// A PostgreSQL cluster of one test file's own, so the test can stop it, start
// it and kill -9 it without touching the shared stack. initdb per cluster
// (~1-2 s) keeps it simple and independent of other test files.

export interface PrivatePg {
  readonly port: number;
  readonly dataDir: string;
  /** URL of the `cea` database (schema applied, site synced). */
  readonly url: string;
  start(): Promise<void>;
  stop(opts?: { mode?: "smart" | "fast" | "immediate" }): Promise<void>;
  /** SIGKILL the postmaster and its backends, as a crash would; the next start() runs crash recovery. */
  kill9(): Promise<void>;
  running(): boolean;
  /** SIGSTOP the postmaster and its backends, as a hung host or disk would: connections stay open, nothing answers. */
  freeze(): Promise<void>;
  /** SIGCONT what freeze() stopped; safe to call when not frozen. */
  thaw(): Promise<void>;
  /** Stop (immediate) and delete the data directory; safe to call twice. */
  cleanup(): Promise<void>;
}

const asRoot = typeof process.getuid === "function" && process.getuid() === 0;
const PG_USER = asRoot ? "postgres" : (process.env.USER ?? "postgres");

function pgUid(): { uid: number; gid: number } | undefined {
  if (!asRoot) return undefined;
  const r = spawnSync("id", ["-u", "postgres"], { encoding: "utf8" });
  const g = spawnSync("id", ["-g", "postgres"], { encoding: "utf8" });
  if (r.status !== 0 || g.status !== 0) throw new Error("running as root but there is no `postgres` user");
  return { uid: Number(r.stdout.trim()), gid: Number(g.stdout.trim()) };
}

/** Command and arguments, run as `postgres` when we are root (initdb and postgres refuse root). */
function asPg(bin: string, args: string[]): [string, string[]] {
  return asRoot ? ["runuser", ["-u", "postgres", "--", bin, ...args]] : [bin, args];
}

const cleanups = new Set<() => void>();
let hookInstalled = false;
function onExit(fn: () => void): void {
  cleanups.add(fn);
  if (hookInstalled) return;
  hookInstalled = true;
  process.on("exit", () => {
    for (const c of cleanups) c();
  });
}

function postmasterPid(dataDir: string): number | undefined {
  const f = join(dataDir, "postmaster.pid");
  if (!existsSync(f)) return undefined;
  const pid = Number(readFileSync(f, "utf8").split("\n")[0]);
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Direct children of a pid, from /proc (the backends and auxiliary processes of a postmaster). */
function childrenOf(pid: number): number[] {
  const r = spawnSync("ps", ["-o", "pid=", "--ppid", String(pid)], { encoding: "utf8" });
  return r.stdout
    .split("\n")
    .map((s) => Number(s.trim()))
    .filter((n) => Number.isInteger(n) && n > 0);
}

function killTree(pid: number): void {
  const kids = childrenOf(pid);
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    // already gone
  }
  for (const k of kids) {
    try {
      process.kill(k, "SIGKILL");
    } catch {
      // already gone
    }
  }
}

export async function startPrivatePg(opts: { bindir: string; site?: string }): Promise<PrivatePg> {
  const bindir = opts.bindir;
  const base = `/var/tmp/cea-fault-${randomBytes(5).toString("hex")}`;
  const dataDir = join(base, "data");
  const logFile = join(base, "postgres.log");
  mkdirSync(base, { recursive: true, mode: 0o755 });
  const owner = pgUid();
  if (owner) chownSync(base, owner.uid, owner.gid);

  let port = 0;
  let gone = false;
  const frozen = new Set<number>();
  const hardCleanup = () => {
    if (gone) return;
    // never leave stopped processes behind, whatever the test did
    for (const p of frozen) {
      try {
        process.kill(p, "SIGCONT");
      } catch {
        // gone
      }
    }
    const pid = postmasterPid(dataDir);
    if (pid !== undefined && alive(pid)) killTree(pid);
    rmSync(base, { recursive: true, force: true });
    gone = true;
  };
  onExit(hardCleanup);

  try {
    const [cmd, args] = asPg(join(bindir, "initdb"), [
      "-D",
      dataDir,
      "-U",
      PG_USER,
      "--auth=trust",
      "-E",
      "UTF8",
      "--locale=C.UTF-8",
      "--no-sync",
    ]);
    await run(cmd, args);
    port = await freePort();
    // fsync off: the faults simulated here are process crashes (kill -9), after
    // which the kernel still holds every write; only a power cut would need fsync.
    // synchronous_commit stays on: a committed transaction must survive kill -9.
    writeFileSync(
      join(dataDir, "postgresql.auto.conf"),
      [
        `listen_addresses = '127.0.0.1'`,
        `port = ${port}`,
        `unix_socket_directories = '${base}'`,
        `shared_preload_libraries = 'timescaledb'`,
        `timescaledb.telemetry_level = off`,
        `max_connections = 50`,
        `shared_buffers = 64MB`,
        `fsync = off`,
        `full_page_writes = off`,
        `max_wal_size = 1GB`,
        "",
      ].join("\n"),
    );
    if (owner) chownSync(join(dataDir, "postgresql.auto.conf"), owner.uid, owner.gid);
  } catch (err) {
    hardCleanup();
    throw err;
  }

  const admin = `postgresql://${PG_USER}@127.0.0.1:${port}/postgres`;
  const url = `postgresql://${PG_USER}@127.0.0.1:${port}/cea`;

  const self: PrivatePg = {
    port,
    dataDir,
    url,
    async start() {
      const [cmd, args] = asPg(join(bindir, "pg_ctl"), ["-D", dataDir, "-l", logFile, "-w", "-t", "60", "start"]);
      try {
        await run(cmd, args);
      } catch (err) {
        const log = existsSync(logFile) ? readFileSync(logFile, "utf8").slice(-2000) : "";
        throw new Error(`private PostgreSQL on port ${port} did not start: ${(err as Error).message}\n${log}`);
      }
    },
    async stop({ mode = "fast" } = {}) {
      const [cmd, args] = asPg(join(bindir, "pg_ctl"), ["-D", dataDir, "-m", mode, "-w", "-t", "60", "stop"]);
      await run(cmd, args);
    },
    async kill9() {
      const pid = postmasterPid(dataDir);
      if (pid === undefined || !alive(pid)) throw new Error(`kill9: private PostgreSQL on port ${port} is not running`);
      killTree(pid);
      for (let i = 0; i < 100 && alive(pid); i++) await new Promise((r) => setTimeout(r, 50));
      await appendFile(logFile, `--- test: kill -9 of postmaster ${pid} ---\n`).catch(() => undefined);
    },
    running() {
      const pid = postmasterPid(dataDir);
      return pid !== undefined && alive(pid);
    },
    async freeze() {
      const pid = postmasterPid(dataDir);
      if (pid === undefined || !alive(pid))
        throw new Error(`freeze: private PostgreSQL on port ${port} is not running`);
      // the postmaster first, so it forks no backend that would escape the stop
      process.kill(pid, "SIGSTOP");
      for (const k of childrenOf(pid)) {
        try {
          process.kill(k, "SIGSTOP");
          frozen.add(k);
        } catch {
          // gone meanwhile
        }
      }
      frozen.add(pid);
    },
    async thaw() {
      for (const p of frozen) {
        try {
          process.kill(p, "SIGCONT");
        } catch {
          // gone meanwhile
        }
      }
      frozen.clear();
    },
    async cleanup() {
      if (gone) return;
      // the data directory is deleted next, so a crash-style stop is all it needs
      if (self.running()) await self.kill9();
      hardCleanup();
      cleanups.delete(hardCleanup);
    },
  };

  try {
    await self.start();
    const c = new pg.Client({ connectionString: admin });
    await c.connect();
    try {
      await c.query("CREATE DATABASE cea");
    } finally {
      await c.end();
    }
    const db = new pg.Client({ connectionString: url });
    await db.connect();
    try {
      await applySchema(db);
      await enableRoleLogins(db);
      await syncSite(db, await loadSite(projectPath(opts.site ?? "ops/site.json")));
    } finally {
      await db.end();
    }
  } catch (err) {
    await self.cleanup();
    throw err;
  }
  return self;
}
