import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";
import { freePort } from "./procs.js";

// A Redis of one test file's own, append-only with fsync on every write, so a
// test can kill -9 or restart it and find every acknowledged write again.

export interface PrivateRedis {
  readonly port: number;
  readonly url: string;
  readonly dir: string;
  start(): Promise<void>;
  /** SIGTERM: Redis fsyncs the AOF and exits. */
  stop(): Promise<void>;
  kill9(): Promise<void>;
  /** Start again on the same port with the same data directory (the AOF is replayed). */
  restart(): Promise<void>;
  running(): boolean;
  cleanup(): Promise<void>;
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

async function ping(port: number): Promise<boolean> {
  const r = new Redis({ port, host: "127.0.0.1", lazyConnect: true, retryStrategy: () => null });
  r.on("error", () => undefined);
  try {
    await r.connect();
    return (await r.ping()) === "PONG";
  } catch {
    return false;
  } finally {
    r.disconnect();
  }
}

export async function startPrivateRedis(): Promise<PrivateRedis> {
  const dir = mkdtempSync(join(tmpdir(), "cea-fault-redis-"));
  const port = await freePort();
  let proc: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  let gone = false;

  const hardCleanup = () => {
    if (gone) return;
    if (proc && proc.exitCode === null && proc.signalCode === null) proc.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
    gone = true;
  };
  onExit(hardCleanup);

  const self: PrivateRedis = {
    port,
    url: `redis://127.0.0.1:${port}`,
    dir,
    async start() {
      if (self.running()) throw new Error(`private Redis on port ${port} is already running`);
      const p = spawn(
        "redis-server",
        [
          "--port",
          String(port),
          "--bind",
          "127.0.0.1",
          "--appendonly",
          "yes",
          "--appendfsync",
          "always",
          "--save",
          "",
          "--dir",
          dir,
          "--logfile",
          join(dir, "redis.log"),
        ],
        { stdio: "ignore" },
      );
      proc = p;
      exited = new Promise((resolve) => p.once("exit", () => resolve()));
      for (let i = 0; i < 100; i++) {
        if (await ping(port)) return;
        if (p.exitCode !== null || p.signalCode !== null) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      let log = "";
      try {
        log = readFileSync(join(dir, "redis.log"), "utf8").slice(-2000);
      } catch {
        // no log written
      }
      p.kill("SIGKILL");
      throw new Error(`private Redis did not answer on port ${port}\n${log}`);
    },
    async stop() {
      if (!self.running()) return;
      proc?.kill("SIGTERM");
      await exited;
    },
    async kill9() {
      if (!self.running()) throw new Error(`kill9: private Redis on port ${port} is not running`);
      proc?.kill("SIGKILL");
      await exited;
    },
    async restart() {
      await self.stop();
      await self.start();
    },
    running() {
      return proc !== undefined && proc.exitCode === null && proc.signalCode === null;
    },
    async cleanup() {
      if (gone) return;
      // the data goes away with the directory, so there is nothing to flush first
      if (self.running()) await self.kill9();
      hardCleanup();
      cleanups.delete(hardCleanup);
    },
  };
  try {
    await self.start();
  } catch (err) {
    hardCleanup();
    throw err;
  }
  return self;
}
