import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { loadSite, syncSite } from "../../db/site.js";
import { redisKeys } from "../../pipeline/runtime/keys.js";
import { projectPath } from "../../pipeline/runtime/paths.js";
import { createRedis } from "../../pipeline/runtime/redis.js";
import { pendingCount } from "../../pipeline/runtime/stream.js";
import { createTestDatabase, type TestDatabase, testPrefix } from "../support/db.js";
import { killAll, spawnService } from "../support/procs.js";
import { startTestWorker, testConfig, waitFor } from "./pipeline-helpers.js";

// A facility's own CAN database, DBC or KCD, end to end: a candump log written
// here by hand → can-scanner (replay, the compiled entry point) → can:raw →
// can-worker → `measurement`, every value against the number computed by hand
// from the bytes; a value outside its physical range stored as out_of_range;
// a frame of the message the database refuses dead-lettered with the reason.

const siteFile = projectPath("tests/fixtures/greenhouse-site.json");

// (time, log line) — ids of 3 hex digits are 11-bit, of 8 digits 29-bit; "##1" is a CAN FD frame
const FD_PAYLOAD = `050000000001000000A05444D204FFFF${"00".repeat(34)}050403020100${"0000000000403140"}`;
const LOG = [
  "(1717200000.000100) can0 18FF1001#0000AC4100005D42",
  "(1717200000.000200) can0 0A0#0205",
  "(1717200000.000300) can0 000000A0#0307",
  "(1717200000.000400) can0 620#00D711A2FE000000",
  "(1717200000.000500) can0 620#01D2048A02000002",
  "(1717200000.000600) can0 501#032CFB2E40370000",
  "(1717200000.000700) can0 18FF2002#40934A456D5CFAAD",
  `(1717200000.000800) can0 18FF5003##1${FD_PAYLOAD}`,
  "(1717200001.000400) can0 620#00FFFFA2FE0000FF",
  "(1717200001.000600) can0 501#032C7FFF40370000",
  // the smallest subnormal double: kept, but as out_of_range (the aggregates cannot average it)
  "(1717200001.000700) can0 18FF2002#0000000000000001",
  "(1717200001.000900) can0 702#0000000000000000",
];

const T0 = "2024-06-01T00:00:00.000";
const T1 = "2024-06-01T00:00:01.000";
/** [sensor name, time, value, status] as computed by hand from the bytes above. */
const EXPECTED: [string, string, number, string | null][] = [
  ["air_temp_gh", `${T0}100Z`, 21.5, null],
  ["rh_gh", `${T0}100Z`, 55.25, null],
  ["node_state_a", `${T0}200Z`, 2, null],
  ["node_state_b", `${T0}300Z`, 3, null],
  ["moisture_gh", `${T0}400Z`, 45.67, null],
  ["substrate_state_gh", `${T0}400Z`, 0, null],
  ["substrate_temp_gh", `${T0}400Z`, -3.5, null],
  ["ec_gh", `${T0}500Z`, 1.234, null],
  ["ph_gh", `${T0}500Z`, 6.5, null],
  ["substrate_state_gh", `${T0}500Z`, 2, null],
  ["co2_gh", `${T0}600Z`, 812, null],
  ["dimmer_gh", `${T0}600Z`, 70, null],
  ["leaf_temp_gh", `${T0}600Z`, -12.34, null],
  ["pressure_gh", `${T0}600Z`, 1013.5, null],
  ["flow_total_gh", `${T0}700Z`, 1234.5678, null],
  ["band450_gh", `${T0}800Z`, 123.4, null],
  ["band660_gh", `${T0}800Z`, 6553.5, null],
  ["counter40_gh", `${T0}800Z`, 0x0102030405, null],
  ["dli_gh", `${T0}800Z`, 17.25, null],
  ["ppfd_gh", `${T0}800Z`, 850.5, null],
  ["uptime_spectrum", `${T0}800Z`, 2 ** 40 + 5, null],
  ["moisture_gh", `${T1}400Z`, 655.35, "out_of_range"],
  ["substrate_state_gh", `${T1}400Z`, 255, null],
  ["substrate_temp_gh", `${T1}400Z`, -3.5, null],
  ["co2_gh", `${T1}600Z`, 812, null],
  ["dimmer_gh", `${T1}600Z`, 70, null],
  ["leaf_temp_gh", `${T1}600Z`, 327.67, "out_of_range"],
  ["pressure_gh", `${T1}600Z`, 1013.5, null],
  ["flow_total_gh", `${T1}700Z`, 5e-324, "out_of_range"],
];

let db: TestDatabase;
let redis: Redis;
const prefixes: string[] = [];

beforeAll(async () => {
  db = await createTestDatabase();
  const c = await db.pool.connect();
  try {
    await syncSite(c, await loadSite(siteFile));
  } finally {
    c.release();
  }
  redis = createRedis(inject("redisUrl"));
});
afterAll(async () => {
  await killAll();
  for (const p of prefixes) {
    const ks = await redis.keys(`${p}*`);
    if (ks.length) await redis.del(...ks);
  }
  await redis.quit();
  await db?.drop();
});

describe.each([
  // the DBC through the decode thread pool (the table crosses to the threads), the KCD inline
  ["DBC", "tests/fixtures/greenhouse.dbc", "2"],
  ["KCD", "tests/fixtures/greenhouse.kcd", "0"],
])("a facility's %s file end to end: candump replay → can-scanner → can-worker → measurement", (_f, canDb, threads) => {
  it("stores every signal with its hand-computed value; out of range as out_of_range; the refused message dead-lettered", async () => {
    await db.pool.query("TRUNCATE measurement");
    const prefix = testPrefix();
    prefixes.push(prefix);
    const dir = mkdtempSync(join(tmpdir(), "candb-e2e-"));
    const logFile = join(dir, "greenhouse.log");
    writeFileSync(logFile, `${LOG.join("\n")}\n`);
    const env = {
      CEA_REDIS_URL: inject("redisUrl"),
      CEA_DATABASE_URL: db.url,
      CEA_REDIS_PREFIX: prefix,
      CEA_CAN_SOURCE: "replay",
      CEA_REPLAY_FILE: logFile,
      CEA_REPLAY_SPEED: "0",
      CEA_CAN_DB_FILE: projectPath(canDb),
      CEA_SITE_FILE: siteFile,
      CEA_LOG_LEVEL: "info",
    };
    const scanner = spawnService("can-scanner", env);
    const exit = await scanner.waitExit(60_000);
    expect(exit, scanner.tail()).toMatchObject({ code: 0 });
    // the refused message is named once at start-up, with file, message, signal and why
    const refusedLines = scanner.logs.filter((l) => String(l.msg).startsWith("CAN database message refused"));
    expect(refusedLines).toHaveLength(1);
    expect(String(refusedLines[0]?.msg)).toMatch(/HalfFloat_Bad.*Temp16.*IEEE single needs 32 bits/);

    const keys = redisKeys({ CEA_REDIS_PREFIX: prefix, CEA_STREAM: "can:raw", CEA_DEAD_STREAM: "can:dead" });
    const entries = await redis.xrange(keys.raw, "-", "+");
    expect(entries).toHaveLength(LOG.length);
    // the entry fields carry the id kind and CAN FD: ext / fd
    const fields = entries.map(([, f]) => Object.fromEntries(f.flatMap((_, i) => (i % 2 ? [] : [[f[i], f[i + 1]]]))));
    expect(fields.map((f) => [f.id, f.ext ?? "-", f.fd ?? "-", (f.data?.length ?? 0) / 2])).toEqual([
      [String(0x18ff1001), "1", "-", 8],
      ["160", "-", "-", 2],
      ["160", "1", "-", 2],
      ["1568", "-", "-", 8],
      ["1568", "-", "-", 8],
      ["1281", "-", "-", 8],
      [String(0x18ff2002), "1", "-", 8],
      [String(0x18ff5003), "1", "1", 64],
      ["1568", "-", "-", 8],
      ["1281", "-", "-", 8],
      [String(0x18ff2002), "1", "-", 8],
      ["1794", "-", "-", 8],
    ]);
    // live values: the newest reading of each sensor, out of range ones marked
    const live = await redis.hgetall(keys.live);
    const liveByName = Object.fromEntries(
      Object.values(live).map((v) => {
        const e = JSON.parse(v) as { name: string; value: number; status: string | null };
        return [e.name, [e.value, e.status]];
      }),
    );
    expect(liveByName.leaf_temp_gh).toEqual([327.67, "out_of_range"]);
    expect(liveByName.air_temp_gh).toEqual([21.5, null]);
    expect(liveByName.flow_total_gh).toEqual([5e-324, "out_of_range"]);

    const worker = await startTestWorker(
      testConfig(db.url, prefix, {
        CEA_CAN_DB_FILE: projectPath(canDb),
        CEA_SITE_FILE: siteFile,
        CEA_DECODE_THREADS: threads,
      }),
    );
    try {
      await waitFor("every entry acknowledged", async () => {
        const dead = await redis.xlen(keys.dead);
        const { rows } = await db.pool.query<{ n: string }>("SELECT count(*) AS n FROM measurement");
        return (
          dead === 1 &&
          Number(rows[0]?.n) === EXPECTED.length &&
          (await pendingCount(redis, keys.raw, "can-worker-group")) === 0
        );
      });
    } finally {
      await worker.stop();
    }
    const { rows } = await db.pool.query<{ name: string; t: string; value: number; status: string | null }>(
      `SELECT s.name, to_char(m.time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS t, m.value, m.status
       FROM measurement m JOIN sensor s USING (sensor_id) ORDER BY m.time, s.name`,
    );
    // the frames come from a candump replay (src=replay): a reading in range is stored as replayed,
    // one out of range as out_of_range
    expect(rows.map((r) => [r.name, r.t, r.value, r.status])).toEqual(
      EXPECTED.map(([n, t, v, st]) => [n, t, v, st ?? "replayed"]),
    );
    // the subnormal reading does not stop the aggregates (PostgreSQL's "underflow" in the average)
    await db.pool.query("SELECT cea_refresh_aggregates()");
    const hourly = await db.pool.query<{ n: string }>(
      `SELECT sample_count AS n FROM measurement_hourly JOIN sensor s USING (sensor_id) WHERE s.name = 'flow_total_gh'`,
    );
    expect(hourly.rows.map((r) => Number(r.n))).toEqual([1]);
    const dead = await redis.xrange(keys.dead, "-", "+");
    const reason = dead[0]?.[1][dead[0][1].indexOf("reason") + 1];
    expect(reason).toMatch(/message refused by the CAN database: .*HalfFloat_Bad.*Temp16/);
  });
});
