import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Api, measurementCount, startApi } from "./api-harness.js";

// A client that retries after a timeout resends readings that are already
// stored. Looking their keys up must touch only the chunks of the readings'
// own days, not every day the table holds (which made a resent batch of 1 000
// cost 46 000 index probes over 46 daily chunks). Proof without a stopwatch:
// another session holds an exclusive lock on an old chunk; a write that
// touched that chunk would wait on the lock (and show as waiting in
// pg_stat_activity), a write that prunes it answers at once.

const DAYS = 10;
const START = Date.parse("2024-02-01T00:00:00Z");
const DAY_MS = 86_400_000;
const SENSORS = [101, 102, 103, 104, 105];

let api: Api;
let locker: pg.Client;
beforeAll(async () => {
  api = await startApi();
  // one reading a minute per sensor over ten days: ten daily chunks
  await api.db.pool.query(
    `INSERT INTO measurement (time, sensor_id, value, status)
     SELECT t, s, s + extract(epoch FROM t) / 60, NULL
     FROM unnest($1::int[]) s,
          generate_series($2::timestamptz, $3::timestamptz - INTERVAL '1 minute', INTERVAL '1 minute') t`,
    [SENSORS, new Date(START).toISOString(), new Date(START + DAYS * DAY_MS).toISOString()],
  );
  locker = new pg.Client({ connectionString: api.db.url });
  await locker.connect();
});
afterAll(async () => {
  await locker?.end();
  await api?.close();
});

/** Readings as stored on day `day` (0-based), `n` minutes from its start. */
const stored = (day: number, n: number) =>
  Array.from({ length: n }, (_, i) => {
    const t = START + day * DAY_MS + Math.floor(i / SENSORS.length) * 60_000;
    const s = SENSORS[i % SENSORS.length]!;
    return { time: new Date(t).toISOString(), sensor_id: s, value: s + t / 60_000, status: null };
  });

/**
 * Runs `write` while another session holds an exclusive lock on the chunk of
 * day 0; returns its answer and whether any session waited on that lock
 * before the answer came. The lock is released in every case.
 */
async function whileOldChunkLocked(write: () => Promise<{ statusCode: number; body: string }>) {
  const { rows } = await locker.query<{ chunk: string }>(
    "SELECT c::text AS chunk FROM show_chunks('measurement', older_than => $1::timestamptz) c",
    [new Date(START + DAY_MS).toISOString()],
  );
  expect(rows).toHaveLength(1);
  const chunk = rows[0]!.chunk;
  await locker.query("BEGIN");
  await locker.query(`LOCK TABLE ${chunk} IN ACCESS EXCLUSIVE MODE`);
  let waited = false;
  let answer: { statusCode: number; body: string } | undefined;
  try {
    const pending = write().then((r) => {
      answer = r;
    });
    // until the write answers or someone waits on the chunk's lock
    while (answer === undefined && !waited) {
      const w = await api.db.pool.query(
        `SELECT count(*)::int AS n FROM pg_locks l WHERE NOT l.granted AND l.relation = $1::regclass`,
        [chunk],
      );
      waited = w.rows[0].n > 0;
      if (!waited) await new Promise((r) => setTimeout(r, 20));
    }
    await locker.query("ROLLBACK");
    await pending;
  } finally {
    await locker.query("ROLLBACK").catch(() => undefined);
  }
  return { waited, answer: answer! };
}

describe("a resent write touches only its own days' chunks", () => {
  it("batch route: a resent batch of stored readings answers 200 without touching older chunks", async () => {
    const batch = stored(5, 500);
    const before = await measurementCount(api.db);
    const { waited, answer } = await whileOldChunkLocked(() =>
      api.app.inject({ method: "POST", url: "/api/v1/measurements", headers: api.auth, payload: batch }),
    );
    expect(waited, "the resent batch waited on the lock of a chunk of another day").toBe(false);
    expect(answer.statusCode, answer.body).toBe(200);
    expect(JSON.parse(answer.body)).toEqual({ received: 500, inserted: 0, already_present: 500 });
    expect(await measurementCount(api.db)).toBe(before);
  });

  it("batch route: a resent batch with one changed value answers 409 naming it, without touching older chunks", async () => {
    const batch = stored(6, 200);
    batch[7] = { ...batch[7]!, value: -1 };
    const { waited, answer } = await whileOldChunkLocked(() =>
      api.app.inject({ method: "POST", url: "/api/v1/measurements", headers: api.auth, payload: batch }),
    );
    expect(waited).toBe(false);
    expect(answer.statusCode, answer.body).toBe(409);
    const original = stored(6, 200)[7]!;
    expect(JSON.parse(answer.body).conflicts).toEqual([
      { ...original, time: original.time.replace(".000Z", ".000000Z") },
    ]);
  });

  it("single route: a resent reading answers 200 without touching older chunks", async () => {
    const [reading] = stored(7, 1);
    const { waited, answer } = await whileOldChunkLocked(() =>
      api.app.inject({ method: "POST", url: "/api/v1/measurement", headers: api.auth, payload: reading! }),
    );
    expect(waited).toBe(false);
    expect(answer.statusCode, answer.body).toBe(200);
  });
});
