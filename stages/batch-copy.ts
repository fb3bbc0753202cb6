import type pg from "pg";
import { z } from "zod";
import { queuesAggregates, storedKeys, writeReadings, writeReadingsStaged } from "../db/measurements.js";
import { classifyDbError, describeDbFailure } from "../db/pg-errors.js";
import type { ReadingColumns } from "../db/readings.js";
import type { Logger } from "../pipeline/runtime/log.js";
import { type Batch, port, type StageSpec } from "../pipeline/runtime/stage.js";
import { SENSOR_READINGS, type SensorReadings } from "./resolve-sensor.js";

// batch-copy: the batch's readings in ONE transaction through
// db/measurements.ts, which encodes them (binary COPY) and writes them: COPY
// straight into `measurement` inside a savepoint, the touched aggregate buckets
// queued in the same transaction; a batch holding an already stored key (a
// redelivered entry) fails that COPY with a unique violation and is written
// instead through staging + INSERT … ON CONFLICT DO NOTHING, so a redelivery
// writes nothing new.
//
// Failures are classified by db/pg-errors.ts: only a data or constraint error
// (SQLSTATE classes 22, 23) is about the rows; then the batch is split (each
// part its own transaction) until the entries that fail alone are found, and
// those are dead letters with the database's message. Everything else (the
// database unreachable, read-only, a grant or table missing, a timeout,
// anything unforeseen) is an outage: thrown, so the runtime retries the batch
// with backoff, never acknowledging or dead-lettering anything meanwhile.

export interface WrittenBatch {
  /** Readings handed to the database. */
  rows: number;
  /** New rows stored (a redelivered reading is not new). */
  inserted: number;
}

export const WRITTEN_BATCH = port<WrittenBatch>("written-batch");

export const batchCopyOptions = z.object({
  fastPath: z
    .boolean()
    .default(true)
    .describe("direct COPY with the staging path as fallback (true), or always staging + ON CONFLICT (false)"),
  concurrency: z
    .number()
    .int()
    .min(1)
    .max(16)
    .default(1)
    .describe("batches written at once, each in its own transaction on its own connection"),
});

export interface BatchCopyDeps {
  pool: pg.Pool;
  /** Fault injection for the crash tests: SIGKILL after the COPY (before COMMIT) / after the COMMIT of the N-th batch written. */
  killMidBatch?: number | undefined;
  killAfterCommit?: number | undefined;
}

interface Hooks {
  afterCopy?: () => void;
}

/** BEGIN; work; COMMIT. On an outage the connection is dropped (it may be broken); on a data error rolled back. */
async function inTransaction<T>(pool: pg.Pool, work: (c: pg.PoolClient) => Promise<T>, hooks: Hooks = {}): Promise<T> {
  const client = await pool.connect();
  let broken = false;
  try {
    await client.query("BEGIN");
    const result = await work(client);
    hooks.afterCopy?.();
    await client.query("COMMIT");
    return result;
  } catch (err) {
    if (classifyDbError(err).kind === "outage") broken = true;
    else
      await client.query("ROLLBACK").catch(() => {
        broken = true;
      });
    throw err;
  } finally {
    client.release(broken);
  }
}

/** Split-and-retry after a data error: find the entries whose rows the database rejects. */
async function isolate(pool: pg.Pool, batch: Batch, rows: ReadingColumns, log: Logger): Promise<number> {
  const byEntry = new Map<number, number[]>();
  for (let r = 0; r < rows.count; r++) {
    const e = rows.entry[r]!;
    const list = byEntry.get(e);
    if (list) list.push(r);
    else byEntry.set(e, [r]);
  }
  let inserted = 0;
  const walk = async (entries: number[]): Promise<void> => {
    if (entries.length === 0) return;
    const keep = new Set(entries);
    const part = rows.filterEntries((e) => keep.has(e));
    try {
      inserted += await inTransaction(pool, (c) => writeReadingsStaged(c, part));
    } catch (err) {
      const f = classifyDbError(err);
      if (f.kind === "outage") throw err;
      if (entries.length === 1) {
        batch.dead.set(entries[0]!, {
          reason: `rejected by the database: ${f.message}${f.code ? ` (${f.code})` : ""}`,
        });
        return;
      }
      const mid = entries.length >> 1;
      await walk(entries.slice(0, mid));
      await walk(entries.slice(mid));
    }
  };
  await walk([...byEntry.keys()]);
  log.warn({ dead: batch.dead.size }, "batch isolated after the database rejected rows");
  return inserted;
}

export function batchCopyStage(deps: BatchCopyDeps): StageSpec<SensorReadings, WrittenBatch, typeof batchCopyOptions> {
  const { pool, killMidBatch, killAfterCommit } = deps;
  return {
    name: "batch-copy",
    consumes: SENSOR_READINGS,
    emits: WRITTEN_BATCH,
    sequential: true,
    options: batchCopyOptions,
    failure: {
      // data errors never leave the stage (isolated above); everything else is an outage
      classify: () => "retry",
      describe: (err) => describeDbFailure(classifyDbError(err)),
      backoff: { baseMs: 200, maxMs: 5_000 },
    },
    create(ctx, options) {
      const counters = { written: 0, rows: 0, inserted: 0, fallbacks: 0, isolations: 0, alreadyStored: 0 };
      // the edition, asked once, on the first write's own connection (the database may be down at start-up)
      let queue: Promise<boolean> | null = null;
      const queueBuckets = (c: pg.PoolClient) => {
        queue ??= queuesAggregates(c).catch((err: unknown) => {
          queue = null;
          throw err;
        });
        return queue;
      };
      return {
        // the fault hooks name "the N-th batch" and count on the batches before it being done: one at a time
        concurrency: killMidBatch || killAfterCommit ? 1 : options.concurrency,
        counters: () => ({ ...counters }),
        async process(batch, input) {
          // entries past their delivery limit whose rows an earlier delivery committed: acknowledged, not dead
          if (input.probes.length) {
            const stored = await storedKeys(pool, input.probes);
            input.probes.forEach((p, k) => {
              if (!stored[k]) return;
              batch.dead.delete(p.entry);
              batch.skip.add(p.entry);
              counters.alreadyStored++;
            });
          }
          // rows of entries refused in an earlier attempt of this batch (isolation) are not written again
          const rows = batch.dead.size ? input.rows.filterEntries((e) => !batch.dead.has(e)) : input.rows;
          if (rows.count === 0) return { rows: 0, inserted: 0 };
          const n = counters.written + 1;
          const hooks: Hooks = killMidBatch === n ? { afterCopy: () => process.kill(process.pid, "SIGKILL") } : {};
          let inserted: number;
          try {
            inserted = await inTransaction(
              pool,
              async (c) => {
                if (!options.fastPath) return writeReadingsStaged(c, rows);
                const r = await writeReadings(c, rows, await queueBuckets(c));
                if (!r.fast) counters.fallbacks++;
                return r.inserted;
              },
              hooks,
            );
          } catch (err) {
            const f = classifyDbError(err);
            if (f.kind === "outage") throw err;
            ctx.log.warn(
              { err: f.message, code: f.code, entries: batch.ids.length },
              "database rejected rows; isolating",
            );
            counters.isolations++;
            inserted = await isolate(pool, batch, rows, ctx.log);
          }
          counters.written = n;
          counters.inserted += inserted;
          counters.rows += rows.count;
          // the crash tests' "after COMMIT": nothing of this process happens after it, not even the log line
          if (killAfterCommit === n) process.kill(process.pid, "SIGKILL");
          ctx.log.debug({ seq: batch.seq, entries: batch.ids.length, rows: rows.count, inserted }, "batch committed");
          return { rows: rows.count, inserted };
        },
      };
    },
  };
}
