import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { writeMeasurements } from "../../db/measurements.js";
import { freePort } from "../../pipeline/runtime/net.js";
import { projectPath, projectRoot } from "../../pipeline/runtime/paths.js";
import { createTestDatabase, type TestDatabase, testPrefix } from "../support/db.js";

// The two monitor scripts run with --once against a database and a Redis key
// prefix of this file's own; the test builds the stream, the consumer group and
// the pending entries itself and checks the figures the monitors print.

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function runScript(
  script: string,
  args: string[],
  env: Record<string, string>,
  onStdout?: (all: string) => void,
): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn("bash", [projectPath(script), ...args], {
      // CEA_ENV_FILE points nowhere so a machine's /etc/cea/cea.env never leaks in
      env: {
        ...process.env,
        CEA_ENV_FILE: "/nonexistent/cea.env",
        CEA_MONITOR_ENV_FILE: "/nonexistent/monitor.env",
        NO_COLOR: "1",
        ...env,
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    const timer = setTimeout(() => child.kill("SIGKILL"), 50_000);
    child.stdout.on("data", (d: Buffer) => {
      stdout += d.toString();
      onStdout?.(stdout);
    });
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** The value printed after `label` on its line. */
function figure(out: string, label: string): string | undefined {
  const line = out.split("\n").find((l) => l.trimStart().startsWith(label));
  return line?.slice(line.indexOf(label) + label.length).trim();
}

let db: TestDatabase;
let redis: Redis;
let prefix: string;
let env: Record<string, string>;
// newest measurement written by the test, as the monitors print it
const newest = new Date(Date.now() - 5_000);
newest.setUTCMilliseconds(123);
const newestText = newest.toISOString().replace(/\.(\d{3})Z$/, ".$1000Z");

async function write(rows: { time: Date; sensor_id: number; value: number }[]): Promise<void> {
  // a client of its own, closed afterwards, so the server flushes its insert statistics now
  const c = new pg.Client({ connectionString: db.url });
  await c.connect();
  try {
    await c.query("BEGIN");
    await writeMeasurements(c, rows);
    await c.query("COMMIT");
  } finally {
    await c.end();
  }
}

beforeAll(async () => {
  db = await createTestDatabase();
  prefix = testPrefix();
  redis = new Redis(inject("redisUrl"));
  // the monitors read as the read-only role, as in production
  env = {
    CEA_DATABASE_URL: db.url,
    CEA_READER_DATABASE_URL: db.urlAs("reader"),
    CEA_REDIS_URL: inject("redisUrl"),
    CEA_REDIS_PREFIX: prefix,
  };

  // 30 rows in the last minute, 12 older ones within the hour, the newest last
  const rows: { time: Date; sensor_id: number; value: number }[] = [];
  for (let i = 1; i <= 30; i++) rows.push({ time: new Date(newest.getTime() - i * 1000), sensor_id: 103, value: 55 });
  for (let i = 1; i <= 12; i++)
    rows.push({ time: new Date(newest.getTime() - i * 240_000), sensor_id: 205, value: 800 });
  rows.push({ time: newest, sensor_id: 101, value: 23.5 });
  await write(rows);

  // stream of 10 entries; consumer c1 got 7 and acknowledged 2: 5 pending, 3 not yet delivered
  const raw = `${prefix}can:raw`;
  const ids: string[] = [];
  for (let i = 0; i < 10; i++) {
    const id = await redis.xadd(raw, "*", "ts", new Date().toISOString(), "id", "257", "data", "0102", "iface", "can0");
    if (id) ids.push(id);
  }
  await redis.xgroup("CREATE", raw, "can-worker-group", "0");
  await redis.xreadgroup("GROUP", "can-worker-group", "c1", "COUNT", "7", "STREAMS", raw, ">");
  await redis.xack(raw, "can-worker-group", ids[0]!, ids[1]!);
  await redis.xadd(`${prefix}can:dead`, "*", "orig_id", ids[0]!, "reason", "test");
  await redis.xadd(`${prefix}can:dead`, "*", "orig_id", ids[1]!, "reason", "test");
  await redis.hset(
    `${prefix}live:values`,
    "101",
    JSON.stringify({ value: 23.5, time: newest.toISOString(), name: "dry_bulb_b" }),
  );
  await redis.hset(`${prefix}stats:can-scanner`, "appended", "10", "dropped_hard_limit", "3", "dropped_buffer", "0");
  await redis.set(`${prefix}health:can-worker`, JSON.stringify({ status: "ok" }), "EX", 60);
});

afterAll(async () => {
  if (redis) {
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length) await redis.del(...keys);
    redis.disconnect();
  }
  await db?.drop();
});

describe("monitor_can_db.sh --once", () => {
  it("prints the joined recent measurements, the group status, live values and the dead-letter count", async () => {
    const r = await runScript("ops/monitor_can_db.sh", ["--once", "--sample", "0"], env);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    // newest row of the plan's join: room, sensor, device, value, timestamp
    const row = r.stdout.split("\n").find((l) => l.includes("dry_bulb_b") && l.includes("|"));
    expect(row?.split("|").map((c) => c.trim())).toEqual([
      "Flower Room",
      "dry_bulb_b",
      "node-1",
      "23.5",
      "",
      newestText,
    ]);
    expect(figure(r.stdout, "stream length:")).toBe("10");
    expect(figure(r.stdout, "pending (delivered, unacked):")).toBe("5");
    expect(figure(r.stdout, "consumer lag (not yet delivered):")).toMatch(/^3\s+\(entries read 7 of 10 added\)$/);
    expect(figure(r.stdout, "XPENDING:")).toMatch(/^5 unacked/);
    expect(figure(r.stdout, "c1:")).toBe("5 unacked");
    expect(r.stdout).toMatch(
      new RegExp(`^101\\s+dry_bulb_b\\s+23\\.5\\s+${newest.toISOString().replace(".", "\\.")}\\s+\\d+\\.\\d$`, "m"),
    );
    expect(figure(r.stdout, "last minute (by measurement time):")).toBe("31 rows, 0.5 rows/s");
    expect(figure(r.stdout, "dead letters:")).toMatch(new RegExp(`^2 in ${prefix}can:dead \\(XRANGE`));
  });

  it("samples the insert rate from the rows written while it waits", async () => {
    let wrote: Promise<void> | undefined;
    const base = new Date(Date.now() - 3_600_000 * 2);
    const r = await runScript("ops/monitor_can_db.sh", ["--once", "--sample", "8"], env, (out) => {
      // the first sample is taken right after this line (its query can take most
      // of a second on a loaded machine); write well inside the 8 s wait
      if (!wrote && out.includes("last minute (by measurement time)")) {
        wrote = new Promise((res) => setTimeout(res, 3_000)).then(() =>
          write(
            Array.from({ length: 100 }, (_, i) => ({
              time: new Date(base.getTime() + i * 1000),
              sensor_id: 305,
              value: i,
            })),
          ),
        );
      }
    });
    await wrote;
    expect(r.code).toBe(0);
    expect(figure(r.stdout, "sampled:")).toMatch(/^100 rows inserted in \d+\.\d s = [\d.]+ rows\/s/);
  });
});

describe("monitor_redis_backend.sh --once", () => {
  it("prints consumers, drop counters, health keys and the schema health", async () => {
    const r = await runScript("ops/monitor_redis_backend.sh", ["--once", "--sample", "0"], env);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(figure(r.stdout, "stream length:")).toBe("10");
    expect(figure(r.stdout, "pending (delivered, unacked):")).toBe("5");
    expect(r.stdout).toMatch(/^\s+c1\s+pending 5\s+idle \d+\.\d+s$/m);
    expect(r.stdout).toContain("backpressure: ok (backlog 8 <= 5000; stream length 10)");
    expect(r.stdout).toContain("DROPPED frames: dropped_hard_limit 3, dropped_buffer 0");
    expect(figure(r.stdout, "appended:")).toBe("10");
    expect(r.stdout).toMatch(/^health:can-worker\s+ttl\s+\d+s\s+\{"status":"ok"\}$/m);
    expect(r.stdout).toContain("schema accessible");
    // every row written in beforeAll lies within the last hour (the sampling test adds older ones)
    expect(Number(figure(r.stdout, "measurements in the last hour:"))).toBe(43);
    expect(figure(r.stdout, "latest measurement:")).toMatch(
      new RegExp(`^${newestText.replace(".", "\\.")} \\(age \\d+\\.\\d s\\)$`),
    );
    expect(r.stdout).toMatch(/^\d+-\d+\s+ts=\S+\s+id=257\s+data=0102\s+iface=can0$/m);
  });

  it("warns in yellow above a backlog of 5000 entries and in red above the critical length", async () => {
    const p2 = testPrefix();
    try {
      const raw = `${p2}can:raw`;
      for (let done = 0; done < 5001; ) {
        const pipe = redis.pipeline();
        const n = Math.min(1000, 5001 - done);
        for (let i = 0; i < n; i++) pipe.xadd(raw, "*", "ts", "x", "id", "1", "data", "00", "iface", "can0");
        await pipe.exec();
        done += n;
      }
      const warn = await runScript("ops/monitor_redis_backend.sh", ["--once", "--sample", "0"], {
        ...env,
        CEA_REDIS_PREFIX: p2,
      });
      expect(warn.code).toBe(0);
      expect(figure(warn.stdout, "stream length:")).toBe("5001");
      expect(warn.stdout).toContain("WARNING backpressure: backlog 5001 > 5000 (stream length 5001;");
      expect(warn.stdout).not.toContain("CRITICAL");
      // no escape codes when stdout is not a terminal
      expect(warn.stdout).not.toContain("\u001b[");

      const crit = await runScript("ops/monitor_redis_backend.sh", ["--once", "--sample", "0"], {
        ...env,
        CEA_REDIS_PREFIX: p2,
        MONITOR_CRIT_LENGTH: "5000",
      });
      expect(crit.stdout).toContain("CRITICAL backpressure: backlog 5001 > 5000 (stream length 5001,");

      // a worker that caught up: the group has read and acknowledged everything,
      // so a long stream of acknowledged entries is no backpressure
      await redis.xgroup("CREATE", raw, "can-worker-group", "$");
      const caughtUp = await runScript("ops/monitor_redis_backend.sh", ["--once", "--sample", "0"], {
        ...env,
        CEA_REDIS_PREFIX: p2,
      });
      expect(caughtUp.stdout).toContain("backpressure: ok (backlog 0 <= 5000; stream length 5001)");
    } finally {
      const keys = await redis.keys(`${p2}*`);
      if (keys.length) await redis.del(...keys);
    }
  });
});

describe("actuators of automation-service in both monitors", () => {
  it("shows each actuator's room, state, last decision, and an active fail-safe in red", async () => {
    const p = testPrefix();
    const k = (x: string) => `${p}${x}`;
    await redis.hset(
      k("automation:actuators"),
      "flower_heater",
      JSON.stringify({
        room: "Flower Room",
        state: "off",
        action: "safe",
        reason: "fail-safe: data stale 95 s",
        failsafe: true,
      }),
      "veg_heater",
      JSON.stringify({
        room: "Veg Room",
        state: "on",
        action: "on",
        reason: "21 vs target 24: below target - 0.5",
        failsafe: false,
      }),
    );
    await redis.set(
      k("health:automation-service"),
      JSON.stringify({
        service: "automation-service",
        status: "degraded",
        reason: "Flower Room: flower_heater: fail-safe: data stale 95 s",
      }),
      "EX",
      60,
    );
    try {
      for (const script of ["ops/monitor_redis_backend.sh", "ops/monitor_can_db.sh"]) {
        const r = await runScript(script, ["--once", "--sample", "0"], { ...env, CEA_REDIS_PREFIX: p });
        expect(r.code, r.stderr).toBe(0);
        expect(r.stdout).toMatch(/^\S*flower_heater\s+Flower Room\s+off\s+safe\s+fail-safe: data stale 95 s/m);
        expect(r.stdout).toMatch(/^veg_heater\s+Veg Room\s+on\s+on\s+21 vs target 24: below target - 0\.5$/m);
        expect(r.stdout).toContain("FAIL-SAFE / OUTAGE");
        expect(r.stdout).toContain("Flower Room: flower_heater: fail-safe: data stale 95 s");
      }
    } finally {
      await redis.del(k("automation:actuators"), k("health:automation-service"));
    }
  });

  it("shows a command the node did not acknowledge (the alert until the node acks again)", async () => {
    const p = testPrefix();
    const k = (x: string) => `${p}${x}`;
    const why = "no Status_N1 echoing seq 7 within 1000 ms after 4 transmissions";
    await redis.set(
      k("health:automation-service"),
      JSON.stringify({
        service: "automation-service",
        status: "degraded",
        reason: `command Cmd_N1 unacknowledged: ${why}`,
        unacknowledged: { Cmd_N1: why, Cmd_N3: "no Status_N3 echoing seq 2 within 1000 ms after 4 transmissions" },
      }),
      "EX",
      60,
    );
    try {
      for (const script of ["ops/monitor_redis_backend.sh", "ops/monitor_can_db.sh"]) {
        const r = await runScript(script, ["--once", "--sample", "0"], { ...env, CEA_REDIS_PREFIX: p });
        expect(r.code, r.stderr).toBe(0);
        expect(r.stdout).toMatch(/UNACKNOWLEDGED\S* command Cmd_N1: no Status_N1 echoing seq 7 within 1000 ms after 4/);
        expect(r.stdout).toMatch(/UNACKNOWLEDGED\S* command Cmd_N3: no Status_N3 echoing seq 2/);
      }
    } finally {
      await redis.del(k("health:automation-service"));
    }
  });
});

describe("a dependency that is down", () => {
  for (const script of ["ops/monitor_can_db.sh", "ops/monitor_redis_backend.sh"]) {
    it(`${script}: Redis down is reported and the exit status is 2`, async () => {
      const port = await freePort();
      const r = await runScript(script, ["--once", "--sample", "0"], {
        ...env,
        CEA_REDIS_URL: `redis://127.0.0.1:${port}`,
      });
      expect(r.code).toBe(2);
      expect(r.stdout).toContain(`REDIS DOWN at redis://127.0.0.1:${port}`);
      expect(r.stdout).toContain("(skipped: Redis is down)");
      // PostgreSQL is still shown
      expect(r.stdout).not.toContain("POSTGRESQL DOWN");
      expect(r.stdout).toContain(script.includes("can_db") ? "Flower Room" : "schema accessible");
    });

    it(`${script}: PostgreSQL down is reported and the exit status is 2`, async () => {
      const port = await freePort();
      const url = new URL(db.urlAs("reader"));
      url.port = String(port);
      const r = await runScript(script, ["--once", "--sample", "0"], {
        ...env,
        CEA_READER_DATABASE_URL: url.toString(),
      });
      expect(r.code).toBe(2);
      expect(r.stdout).toContain("POSTGRESQL DOWN");
      expect(r.stdout).toContain("(skipped: PostgreSQL is down)");
      expect(figure(r.stdout, "pending (delivered, unacked):")).toBe("5");
    });
  }
});

describe("secrets", () => {
  const dir = mkdtempSync(join(tmpdir(), "cea-mon-secrets-"));
  const user = `mon-${randomBytes(4).toString("hex")}`;
  afterAll(async () => {
    await redis.call("ACL", "DELUSER", user);
    rmSync(dir, { recursive: true, force: true });
  });

  /** A stand-in for psql or redis-cli that records its command line and password variable, then runs the real one. */
  const recorder = (name: string, real: string, variable: string) => {
    const file = join(dir, name);
    writeFileSync(
      file,
      `#!/bin/bash\nprintf '%s\\n' "$*" >> "${dir}/${name}.argv"\nprintf '%s\\n' "\${${variable}-}" >> "${dir}/${name}.env"\nexec ${real} "$@"\n`,
    );
    chmodSync(file, 0o755);
    return file;
  };

  it("psql and redis-cli get passwords by environment, never on their command line; output shows them redacted", async () => {
    // the test cluster trusts local connections, so psql's password is shown by what it receives;
    // Redis gets a user whose password it checks
    const pgPass = "pg-s3cret/x@y";
    const redisPass = "redis-s3cret";
    await redis.call("ACL", "SETUSER", user, "on", `>${redisPass}`, "~*", "&*", "+@all");
    // the monitors connect as the read-only role: its URL carries the password
    const dbUrl = new URL(db.urlAs("reader"));
    dbUrl.password = pgPass;
    const redisUrl = new URL(inject("redisUrl"));
    redisUrl.username = user;
    redisUrl.password = redisPass;
    const which = (cmd: string) => spawnSync("bash", ["-c", `command -v ${cmd}`], { encoding: "utf8" }).stdout.trim();
    const recorded = {
      PSQL: recorder("psql", which("psql"), "PGPASSWORD"),
      REDIS_CLI: recorder("redis-cli", which("redis-cli"), "REDISCLI_AUTH"),
    };
    for (const script of ["ops/monitor_can_db.sh", "ops/monitor_redis_backend.sh"]) {
      const r = await runScript(script, ["--once", "--sample", "0"], {
        ...env,
        ...recorded,
        CEA_READER_DATABASE_URL: dbUrl.toString(),
        CEA_REDIS_URL: redisUrl.toString(),
      });
      expect(r.code, r.stdout).toBe(0);
      expect(r.stdout).not.toContain("DOWN");
      expect(r.stdout).toContain(`Redis: redis://${user}:***@`);
      expect(r.stdout).toContain(`PostgreSQL: postgresql://${dbUrl.username}:***@`);
      expect(r.stdout + r.stderr).not.toContain("s3cret");
    }
    const argv = readFileSync(join(dir, "psql.argv"), "utf8") + readFileSync(join(dir, "redis-cli.argv"), "utf8");
    expect(argv).not.toContain("s3cret");
    expect(argv).toContain(`--user ${user}`);
    expect(new Set(readFileSync(join(dir, "psql.env"), "utf8").trim().split("\n"))).toEqual(new Set([pgPass]));
    expect(new Set(readFileSync(join(dir, "redis-cli.env"), "utf8").trim().split("\n"))).toEqual(new Set([redisPass]));
  });

  it("start_all_services.sh never prints the database password", async () => {
    const empty = await createTestDatabase({ empty: true });
    try {
      const url = new URL(empty.url);
      url.password = "start-s3cret";
      const r = await runScript("ops/start_all_services.sh", ["--no-health"], {
        CEA_APP_DIR: projectRoot(),
        CEA_DATABASE_URL: url.toString(),
        SYSTEMCTL: "/nonexistent/systemctl",
      });
      expect(r.code).toBe(1);
      expect(r.stderr).toContain("REFUSING TO START");
      expect(r.stderr).toContain(`CEA_DATABASE_URL=postgresql://${url.username}:***@`);
      expect(r.stdout + r.stderr).not.toContain("start-s3cret");
    } finally {
      await empty.drop();
    }
  });
});

describe("refresh loop", () => {
  it("prints a new frame every interval until stopped", async () => {
    let frames = 0;
    const r = await new Promise<Run>((resolve, reject) => {
      const child = spawn("bash", [projectPath("ops/monitor_can_db.sh"), "--interval", "1"], {
        env: { ...process.env, CEA_ENV_FILE: "/nonexistent/cea.env", ...env },
        stdio: ["ignore", "pipe", "pipe"],
      });
      let stdout = "";
      const timer = setTimeout(() => child.kill("SIGKILL"), 40_000);
      child.stdout.on("data", (d: Buffer) => {
        stdout += d.toString();
        frames = stdout.split("(refresh every 1s; Ctrl-C to stop)").length - 1;
        if (frames >= 2) child.kill("SIGTERM");
      });
      child.on("error", reject);
      child.on("close", (code) => {
        clearTimeout(timer);
        resolve({ code, stdout, stderr: "" });
      });
    });
    expect(frames).toBeGreaterThanOrEqual(2);
    // the second frame has a previous sample, so it reports a sampled rate
    expect(r.stdout).toMatch(/sampled: \d+ rows inserted in/);
    expect(r.code).toBe(0);
  });
});
