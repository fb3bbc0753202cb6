import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { classifyDbError } from "../../db/pg-errors.js";
import {
  GroupWriter,
  type SingleReading,
  WriteExpired,
  type WriteOutcome,
} from "../../pipeline/backend/group-writer.js";
import { createBackendLogger } from "../../pipeline/backend/logger.js";
import { isCommunity } from "../support/db.js";
import { type Api, closedPort, measurementCount, startApi } from "./api-harness.js";

// Group commit of POST /measurement: concurrent single readings share one
// statement, and each request still gets its own answer (201 new, 200
// identical retry, 409 naming the stored record), also when the same key
// appears twice in one group or the database rejects one reading of it.

// sensor created for the test, then deleted once the API's sensor cache holds it
const GONE_SENSOR = 9001;

let api: Api;
beforeAll(async () => {
  api = await startApi();
  await api.db.pool.query(
    `INSERT INTO sensor (sensor_id, device_id, name, unit, channel)
     SELECT $1, device_id, 'group_commit_gone', 'x', 900 FROM sensor WHERE sensor_id = 101`,
    [GONE_SENSOR],
  );
});
afterAll(() => api?.close());

const T0 = Date.parse("2024-03-01T00:00:00Z");
const at = (s: number) => new Date(T0 + s * 1000).toISOString();
const micro = (iso: string) => iso.replace(/\.(\d{3})Z$/, ".$1000Z");

interface Reading {
  time: string;
  sensor_id: number;
  value: number;
  status?: string | null;
}

const post = (r: Reading) =>
  api.app.inject({ method: "POST", url: "/api/v1/measurement", headers: api.auth, payload: r as object });

/** The "group commit" debug lines logged since `from`: rows per group. */
function groupSizes(from: number): number[] {
  return api.logs
    .slice(from)
    .map((l) => JSON.parse(l) as { msg?: string; rows?: number })
    .filter((l) => l.msg === "group commit")
    .map((l) => l.rows ?? 0);
}

async function stored(sensor: number, time: string): Promise<{ value: number; status: string | null }[]> {
  const { rows } = await api.db.pool.query(
    "SELECT value, status FROM measurement WHERE sensor_id = $1 AND time = $2::timestamptz",
    [sensor, time],
  );
  return rows;
}

describe("POST /api/v1/measurement under concurrency (group commit)", () => {
  it("200 concurrent requests: new, identical retries, conflicts and same-key pairs each get their own answer", async () => {
    // 30 readings stored beforehand (sensors 301..310)
    const pre: Reading[] = Array.from({ length: 30 }, (_, i) => ({
      time: at(i),
      sensor_id: 301 + (i % 10),
      value: i + 0.25,
      status: "ok",
    }));
    const preRes = await api.app.inject({
      method: "POST",
      url: "/api/v1/measurements",
      headers: api.auth,
      payload: pre,
    });
    expect(preRes.statusCode).toBe(201);
    const before = await measurementCount(api.db);

    const fresh: Reading[] = Array.from({ length: 80 }, (_, i) => ({
      time: at(1000 + i),
      sensor_id: 101 + (i % 10),
      value: -(i + 1) / 8,
    }));
    const retries = pre.map((r) => ({ ...r }));
    // half with another value, half with another status
    const conflicts = pre.map((r, i) => (i % 2 ? { ...r, value: r.value + 1 } : { ...r, status: "changed" }));
    // 20 pairs sent twice identically, 10 pairs with two different values (sensors 401..410)
    const same = Array.from({ length: 20 }, (_, i) => ({ time: at(2000 + i), sensor_id: 401 + (i % 10), value: i }));
    const split = Array.from({ length: 10 }, (_, i) => ({ time: at(3000 + i), sensor_id: 401 + i, value: 1 }));
    const splitOther = split.map((r) => ({ ...r, value: 2, status: "other" }));

    const requests: { kind: string; i: number; body: Reading }[] = [
      ...fresh.map((body, i) => ({ kind: "fresh", i, body })),
      ...retries.map((body, i) => ({ kind: "retry", i, body })),
      ...conflicts.map((body, i) => ({ kind: "conflict", i, body })),
      ...same.flatMap((body, i) => [
        { kind: "same", i, body },
        { kind: "same", i, body: { ...body } },
      ]),
      ...split.map((body, i) => ({ kind: "split", i, body })),
      ...splitOther.map((body, i) => ({ kind: "split", i, body })),
    ];
    expect(requests).toHaveLength(200);
    // interleave deterministically so each kind spreads over the groups
    const order = requests.map((_, k) => (k * 73) % requests.length);
    expect(new Set(order).size).toBe(200);
    const logFrom = api.logs.length;
    const responses = await Promise.all(order.map((k) => post(requests[k]!.body)));
    const answers = order.map((k, j) => ({ ...requests[k]!, res: responses[j]! }));

    for (const a of answers.filter((x) => x.kind === "fresh")) {
      expect(a.res.statusCode).toBe(201);
      expect(a.res.json()).toEqual({ ...a.body, time: micro(a.body.time), status: null });
    }
    for (const a of answers.filter((x) => x.kind === "retry")) {
      expect(a.res.statusCode).toBe(200);
      expect(a.res.json()).toEqual({ ...pre[a.i], time: micro(pre[a.i]!.time) });
    }
    for (const a of answers.filter((x) => x.kind === "conflict")) {
      expect(a.res.statusCode).toBe(409);
      expect(a.res.json()).toMatchObject({
        error: "conflict",
        existing: { ...pre[a.i], time: micro(pre[a.i]!.time) },
      });
    }
    for (let i = 0; i < same.length; i++) {
      const pair = answers.filter((x) => x.kind === "same" && x.i === i);
      expect(pair.map((p) => p.res.statusCode).sort()).toEqual([200, 201]);
      for (const p of pair) expect(p.res.json()).toEqual({ ...same[i], time: micro(same[i]!.time), status: null });
    }
    for (let i = 0; i < split.length; i++) {
      const pair = answers.filter((x) => x.kind === "split" && x.i === i);
      expect(pair.map((p) => p.res.statusCode).sort()).toEqual([201, 409]);
      const winner = pair.find((p) => p.res.statusCode === 201)!.res.json();
      const loser = pair.find((p) => p.res.statusCode === 409)!.res.json();
      expect(loser.existing).toEqual(winner);
      expect(await stored(split[i]!.sensor_id, split[i]!.time)).toEqual([
        { value: winner.value, status: winner.status },
      ]);
    }

    // exactly the new keys were written, nothing twice, conflicts left the stored rows alone
    expect(await measurementCount(api.db)).toBe(before + fresh.length + same.length + split.length);
    for (const r of pre) expect(await stored(r.sensor_id, r.time)).toEqual([{ value: r.value, status: "ok" }]);
    for (const r of fresh) expect(await stored(r.sensor_id, r.time)).toEqual([{ value: r.value, status: null }]);

    // the requests were grouped: fewer statements than requests, every request in one
    const sizes = groupSizes(logFrom);
    expect(sizes.reduce((a, b) => a + b, 0)).toBe(200);
    expect(sizes.length).toBeLessThan(200);
    expect(Math.max(...sizes)).toBeGreaterThan(1);

    // the hour buckets of the new rows were queued for the Apache-edition aggregates
    const pending = await api.db.pool.query(
      `SELECT count(DISTINCT (sensor_id, bucket))::int AS n FROM measurement_agg_pending
       WHERE bucket = $1::timestamptz AND sensor_id BETWEEN 101 AND 110`,
      [at(0)],
    );
    expect(pending.rows[0].n).toBe(isCommunity() ? 0 : 10);
  });

  it("a reading the database rejects inside a group fails only its own request", async () => {
    // the API's sensor cache is loaded (by the test above) with the sensor; now it goes away
    await api.db.pool.query("DELETE FROM sensor WHERE sensor_id = $1", [GONE_SENSOR]);
    const before = await measurementCount(api.db);
    const good: Reading[] = Array.from({ length: 45 }, (_, i) => ({
      time: at(5000 + i),
      sensor_id: 201 + (i % 10),
      value: i,
    }));
    const bad: Reading[] = Array.from({ length: 5 }, (_, i) => ({
      time: at(5000 + i),
      sensor_id: GONE_SENSOR,
      value: i,
    }));
    const all = [...good.slice(0, 20), ...bad, ...good.slice(20)];
    const logFrom = api.logs.length;
    const responses = await Promise.all(all.map(post));
    responses.forEach((res, k) => {
      const body = all[k]!;
      if (body.sensor_id === GONE_SENSOR) {
        expect(res.statusCode).toBe(422);
        expect(res.json()).toMatchObject({ error: "unknown_sensor", issues: [{ path: "sensor_id" }] });
      } else {
        expect(res.statusCode).toBe(201);
      }
    });
    expect(await measurementCount(api.db)).toBe(before + good.length);
    const failedGroups = api.logs
      .slice(logFrom)
      .filter((l) => l.includes("group commit failed; writing its readings one by one"));
    expect(failedGroups.length).toBeGreaterThan(0);
  });
});

describe("GroupWriter", () => {
  const rows = (n: number, base: number, sensor = 501): SingleReading[] =>
    Array.from({ length: n }, (_, i) => ({ time: at(base + i), sensor_id: sensor + (i % 10), value: i, status: null }));

  it("writes readings submitted together in one statement, same keys within the group resolved in order", async () => {
    const logs: string[] = [];
    const writer = new GroupWriter(api.pool, createBackendLogger("debug", { write: (s: string) => void logs.push(s) }));
    const base = rows(20, 7000);
    const batch = [
      ...base,
      base[3]!,
      { ...base[4]!, value: 99 },
      { time: at(7000), sensor_id: 999_999, value: 1, status: null },
    ];
    const before = await measurementCount(api.db);
    const settled = await Promise.allSettled(batch.map((r) => writer.write(r)));
    const ok = settled.slice(0, 22).map((s) => {
      expect(s.status).toBe("fulfilled");
      return (s as PromiseFulfilledResult<WriteOutcome>).value;
    });
    for (let i = 0; i < 20; i++) {
      expect(ok[i]).toEqual({ inserted: true, stored: { ...base[i], time: micro(base[i]!.time) } });
    }
    // the repeated key: not inserted again, answered with the first one's row
    expect(ok[20]).toEqual({ inserted: false, stored: ok[3]!.stored });
    expect(ok[21]).toEqual({ inserted: false, stored: ok[4]!.stored });
    // the unknown sensor: a foreign-key violation for that reading alone
    const rejected = settled[22]!;
    expect(rejected.status).toBe("rejected");
    expect(((rejected as PromiseRejectedResult).reason as { code?: string }).code).toBe("23503");
    expect(await measurementCount(api.db)).toBe(before + 20);
    // one group statement (failed on the bad row), then one statement per reading
    const lines = logs.map((l) => JSON.parse(l) as { msg: string; rows?: number });
    expect(lines.filter((l) => l.msg.startsWith("group commit failed"))).toEqual([
      expect.objectContaining({ rows: batch.length }),
    ]);
    expect(lines.filter((l) => l.msg === "group commit").map((l) => l.rows)).toEqual(new Array(22).fill(1));
  });

  it("a database that cannot be reached fails every waiting reading with a dependency error", async () => {
    const pool = new pg.Pool({
      connectionString: `postgresql://postgres@127.0.0.1:${await closedPort()}/cea`,
      connectionTimeoutMillis: 2_000,
    });
    try {
      const writer = new GroupWriter(pool);
      const settled = await Promise.allSettled(rows(12, 8000).map((r) => writer.write(r)));
      for (const s of settled) {
        expect(s.status).toBe("rejected");
        expect(classifyDbError((s as PromiseRejectedResult).reason).kind).toBe("outage");
      }
    } finally {
      await pool.end();
    }
  });

  it("a reading still queued when its request's deadline has passed is not written", async () => {
    const writer = new GroupWriter(api.pool, undefined, { maxInFlight: 1 });
    const [held, ...queued] = rows(6, 9000);
    // another session holds the first key uncommitted: the first group waits on it
    const blocker = await api.db.pool.connect();
    try {
      await blocker.query("BEGIN");
      await blocker.query("INSERT INTO measurement (time, sensor_id, value) VALUES ($1, $2, 0)", [
        held!.time,
        held!.sensor_id,
      ]);
      const first = writer.write(held!);
      // the group is in the database, waiting on the lock, before the others queue
      await waitUntilWaiting();
      const expiresAt = Date.now() + 20;
      const later = queued.map((r) => writer.write(r, expiresAt));
      while (Date.now() <= expiresAt) await new Promise((r) => setTimeout(r, 10));
      await blocker.query("ROLLBACK");
      expect((await first).inserted).toBe(true);
      for (const s of await Promise.allSettled(later)) {
        expect(s.status).toBe("rejected");
        expect((s as PromiseRejectedResult).reason).toBeInstanceOf(WriteExpired);
      }
      for (const r of queued) expect(await stored(r.sensor_id, r.time)).toEqual([]);
    } finally {
      await blocker.query("ROLLBACK").catch(() => undefined);
      blocker.release();
    }
  });
});

/** Until some session waits on a lock while inserting into measurement. */
async function waitUntilWaiting(): Promise<void> {
  for (;;) {
    const { rows: w } = await api.db.pool.query(
      "SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%INSERT INTO measurement%'",
    );
    if (w[0].n > 0) return;
    await new Promise((r) => setTimeout(r, 10));
  }
}
