import type pg from "pg";
import {
  type FastRows,
  queuesAggregates,
  writeMeasurements,
  writeMeasurementsFast,
  writeMeasurementsStaged,
} from "../db/measurements.js";
import { TransientError } from "../pipeline/runtime/errors.js";
import type { Logger } from "../pipeline/runtime/log.js";
import { entryField, ROW_STATUS, type StageSpec, type WorkBatch } from "../pipeline/runtime/stage.js";

// batch-copy: the batch's rows in ONE transaction through db/measurements.ts.
// Fast path (default): COPY straight into `measurement` inside a savepoint,
// the touched aggregate buckets queued in the same transaction; a batch holding
// an already stored key (a redelivered entry) fails that COPY with a unique
// violation and is written instead through staging + INSERT … ON CONFLICT DO
// NOTHING on (sensor_id, time), so a redelivered entry writes nothing new.
// Option fastPath=false always takes the staging path. A database that is
// unreachable or shutting down is a TransientError: the batch stays unacked and
// the runtime retries it with backoff, forever, never dead-lettering. Any other
// database error rejects something in the rows themselves: the batch is split in halves
// (each half its own transaction) until the entry that fails alone is found;
// that entry is dead-lettered with the database's message and the rest written.

/**
 * PostgreSQL conditions that mean "not reachable / not accepting work right
 * now" — retried with backoff + jitter, never treated as a bad entry.
 */
export const TRANSIENT_PG: readonly { match: string; what: string }[] = [
  { match: "08", what: "connection exception (class 08)" },
  { match: "57P01", what: "admin shutdown" },
  { match: "57P02", what: "crash shutdown" },
  { match: "57P03", what: "cannot connect now (starting up / recovery)" },
  { match: "57P05", what: "idle session timeout" },
  { match: "53000", what: "insufficient resources" },
  { match: "53100", what: "disk full" },
  { match: "53200", what: "out of memory" },
  { match: "53300", what: "too many connections" },
  { match: "40001", what: "serialization failure" },
  { match: "40P01", what: "deadlock detected" },
  { match: "55P03", what: "lock not available" },
  { match: "58000", what: "system error" },
  { match: "58030", what: "I/O error" },
];
const TRANSIENT_NET = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EPIPE",
  "ENOTFOUND",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EAI_AGAIN",
  "ECONNABORTED",
]);
const TRANSIENT_MSG =
  /Connection terminated|connection error|timeout exceeded when trying to connect|Client was closed|not queryable|terminating connection/i;

export const PG_BACKOFF = { baseMs: 200, maxMs: 5_000 };

/** True when a PostgreSQL/driver error means the database is unreachable or going away. */
export function isTransientPgError(err: unknown): boolean {
  if (err instanceof TransientError) return true;
  const e = err as { code?: unknown; message?: unknown } | null;
  const code = typeof e?.code === "string" ? e.code : "";
  if (code && TRANSIENT_NET.has(code)) return true;
  if (
    code.length === 5 &&
    TRANSIENT_PG.some((t) => (t.match.length === 2 ? code.startsWith(t.match) : code === t.match))
  )
    return true;
  return typeof e?.message === "string" && code.length !== 5 && TRANSIENT_MSG.test(e.message);
}

interface WriteHooks {
  /** Called after the COPY (before COMMIT) of a written batch: fault injection. */
  afterCopy?: () => void;
}

/** BEGIN; work; COMMIT. Transient failures become TransientError; the connection is dropped when broken. */
async function inTransaction<T>(pool: pg.Pool, work: (c: pg.PoolClient) => Promise<T>, hooks: WriteHooks): Promise<T> {
  let client: pg.PoolClient;
  try {
    client = await pool.connect();
  } catch (err) {
    throw asTransient(err);
  }
  let broken = false;
  try {
    await client.query("BEGIN");
    const result = await work(client);
    hooks.afterCopy?.();
    await client.query("COMMIT");
    return result;
  } catch (err) {
    if (isTransientPgError(err)) {
      broken = true;
      throw asTransient(err);
    }
    // keep the connection usable for the next attempt; a failed ROLLBACK means it is not
    await client.query("ROLLBACK").catch(() => {
      broken = true;
    });
    throw err;
  } finally {
    client.release(broken);
  }
}

/** BEGIN; COPY + merge; COMMIT. Returns new rows. Transient failures become TransientError. */
export async function writeInTransaction(pool: pg.Pool, copyText: string, hooks: WriteHooks = {}): Promise<number> {
  return inTransaction(pool, (c) => writeMeasurements(c, copyText), hooks);
}

/** BEGIN; direct COPY (or staging on a redelivery) + bucket queue; COMMIT. */
export async function writeFastInTransaction(
  pool: pg.Pool,
  rows: FastRows,
  queueBuckets: (c: pg.PoolClient) => Promise<boolean>,
  hooks: WriteHooks = {},
): Promise<{ inserted: number; fast: boolean }> {
  return inTransaction(pool, async (c) => writeMeasurementsFast(c, rows, await queueBuckets(c)), hooks);
}

/** The batch as the fast path takes it: decoded rows (binary or text) with their buckets, added rows apart. */
export function fastRows(batch: WorkBatch): FastRows {
  if (batch.copyBinary) return { copy: batch.copyBinary, buckets: batch.buckets, more: batch.copyText };
  // text decode: the decoded rows' lines come first in copyText, rows added by later stages after them
  const split = nthLineEnd(batch.copyText, batch.rows?.count ?? 0);
  return { copy: batch.copyText.slice(0, split), buckets: batch.buckets, more: batch.copyText.slice(split) };
}

function nthLineEnd(text: string, n: number): number {
  let pos = 0;
  for (let r = 0; r < n; r++) pos = text.indexOf("\n", pos) + 1;
  return pos;
}

function asTransient(err: unknown): unknown {
  if (err instanceof TransientError || !isTransientPgError(err)) return err;
  const e = err as Error & { code?: string };
  return Object.assign(new TransientError(`database unavailable: ${e.message}${e.code ? ` (${e.code})` : ""}`), {
    cause: err,
  });
}

/** The COPY lines of each entry, from the decoded rows (line r = row r). Derived lines (added by later stages) come last. */
function linesByEntry(batch: WorkBatch): { perEntry: Map<number, string>; derived: string } {
  const perEntry = new Map<number, string>();
  const rows = batch.rows;
  const count = rows?.count ?? 0;
  if (batch.copyBinary) {
    // binary decode: rebuild each row's text line from the columns and the entry's own ts
    for (let r = 0; r < count; r++) {
      const e = rows!.entry[r]!;
      const status = ROW_STATUS[rows!.status[r]!] ?? "\\N";
      const line = `${entryField(batch, e, "ts")}\t${rows!.sensor[r]}\t${rows!.value[r]}\t${status}\n`;
      perEntry.set(e, (perEntry.get(e) ?? "") + line);
    }
    return { perEntry, derived: batch.copyText };
  }
  let pos = 0;
  const text = batch.copyText;
  for (let r = 0; r < count; r++) {
    const end = text.indexOf("\n", pos) + 1;
    const e = rows!.entry[r]!;
    perEntry.set(e, (perEntry.get(e) ?? "") + text.slice(pos, end));
    pos = end;
  }
  return { perEntry, derived: text.slice(pos) };
}

/** Split-and-retry after a non-transient error: find the entries the database rejects. */
async function isolate(pool: pg.Pool, batch: WorkBatch, log: Logger): Promise<number> {
  const { perEntry, derived } = linesByEntry(batch);
  let inserted = 0;
  const walk = async (entries: number[]): Promise<void> => {
    if (entries.length === 0) return;
    try {
      inserted += await writeInTransaction(pool, entries.map((e) => perEntry.get(e)).join(""));
    } catch (err) {
      if (isTransientPgError(err)) throw err;
      if (entries.length === 1) {
        const e = err as Error & { code?: string };
        batch.dead.set(entries[0]!, `rejected by the database: ${e.message}${e.code ? ` (${e.code})` : ""}`);
        return;
      }
      const mid = entries.length >> 1;
      await walk(entries.slice(0, mid));
      await walk(entries.slice(mid));
    }
  };
  await walk([...perEntry.keys()]);
  // rows derived by added stages have no entry of their own: they must be valid
  if (derived) inserted += await writeInTransaction(pool, derived);
  log.warn({ dead: batch.dead.size }, "batch isolated after a database rejection");
  return inserted;
}

/**
 * fastPath: direct COPY with the staging path as fallback (true), or always the
 * staging path (false). concurrency: batches written at once, each in its own
 * transaction on its own connection.
 */
export const batchCopyDefaults = { fastPath: true, concurrency: 1 };

export const batchCopyStage: StageSpec<typeof batchCopyDefaults> = {
  name: "batch-copy",
  consumes: "measurement-rows",
  emits: "committed-batch",
  sequential: true,
  defaults: batchCopyDefaults,
  failure: {
    unrecoverable: ["a row the database rejects (isolated by splitting the batch)"],
    transient: TRANSIENT_PG.map((t) => `${t.match} ${t.what}`).concat([...TRANSIENT_NET]),
    backoff: PG_BACKOFF,
    classify: (err) => (isTransientPgError(err) ? "transient" : "fatal"),
  },
  create(ctx, options) {
    const { CEA_FAULT_KILL_MID_BATCH: killMid, CEA_FAULT_KILL_AFTER_COMMIT: killAfter } = ctx.config;
    let written = 0;
    let fallbacks = 0;
    // the edition, asked once, on the first write's own connection (the database may be down at start-up)
    let queue: Promise<boolean> | null = null;
    const queueBuckets = (c: pg.PoolClient) => {
      queue ??= queuesAggregates(c).catch((err: unknown) => {
        queue = null;
        throw err;
      });
      return queue;
    };
    ctx.shared.set("batchCopyFallbacks", () => fallbacks);
    return {
      // the fault hooks name "the N-th batch" and count on the batches before it being done: one at a time
      concurrency: killMid || killAfter ? 1 : options.concurrency,
      async process(batch) {
        if (batch.committed) return; // retried after a later stage failed
        if (batch.rowCount > 0) {
          const n = ++written;
          const hooks: WriteHooks = killMid === n ? { afterCopy: () => process.kill(process.pid, "SIGKILL") } : {};
          try {
            if (options.fastPath) {
              const r = await writeFastInTransaction(ctx.pool, fastRows(batch), queueBuckets, hooks);
              batch.inserted = r.inserted;
              if (!r.fast) {
                fallbacks++;
                ctx.log.info(
                  { entries: batch.ids.length, rows: batch.rowCount, inserted: r.inserted },
                  "batch held keys already stored (redelivery): written through staging + ON CONFLICT",
                );
              }
            } else {
              batch.inserted = await inTransaction(ctx.pool, (c) => writeMeasurementsStaged(c, fastRows(batch)), hooks);
            }
          } catch (err) {
            written--;
            if (isTransientPgError(err)) throw err;
            ctx.log.warn(
              { err: (err as Error).message, entries: batch.ids.length },
              "database rejected the batch; isolating",
            );
            written++;
            batch.inserted = await isolate(ctx.pool, batch, ctx.log);
          }
          if (killAfter === n) process.kill(process.pid, "SIGKILL");
        }
        batch.committed = true;
      },
    };
  },
};
