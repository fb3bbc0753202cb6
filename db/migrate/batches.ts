import type pg from "pg";
import { insertFromSelect } from "../measurements.js";
import { classifyDbError } from "../pg-errors.js";
import type { SensorMapping } from "./mapping.js";
import { prepareSession } from "./mapping.js";
import { iso, type Options, sql } from "./options.js";
import type { Window } from "./plan.js";
import type { ProgressSink } from "./progress.js";
import type { BatchStats } from "./report.js";
import type { LegacySource } from "./source.js";

// Moving the planned windows: each batch and its checkpoint in one
// transaction, handed out in time order to `parallel` sessions; a batch that
// loses a deadlock or serialization conflict to a concurrent writer is retried
// with backoff and jitter.

interface BatchRow {
  legacy_rows: string;
  values_seen: string;
  keys_numeric: string;
  kinds: [number, string, number][];
  inserted_by_sensor: [number, number][];
  conflicts: [number, number][];
  conflict_samples: [number, string, number, number][];
}

export interface BatchTotals {
  batches: number;
  legacy_rows: number;
  values_seen: number;
  keys_numeric: number;
  inserted: number;
  retries: number;
}

export interface BatchRun {
  todo: Window[];
  limit: number;
  startRows: number;
  progress: ProgressSink;
  signal?: AbortSignal;
  connect?: () => Promise<pg.Client>;
  /** called before each retry, for the log */
  onRetry?: (what: string) => void;
}

/** SQLSTATEs a concurrent writer can cause and a retry resolves. */
const RETRYABLE = new Set(["40P01", "40001"]);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Run `fn` again after a deadlock or serialization failure, with exponential backoff and full jitter. */
export async function withConflictRetry<T>(
  attempts: number,
  fn: () => Promise<T>,
  onRetry: (what: string, attempt: number) => void,
): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      const f = classifyDbError(err);
      if (!f.code || !RETRYABLE.has(f.code) || attempt > attempts) throw err;
      onRetry(`${f.code} ${f.what}`, attempt);
      await sleep(Math.random() * Math.min(5000, 50 * 2 ** attempt));
    }
  }
}

/**
 * The batch statement (batch.sql), writing through the one write module; the
 * aggregates are recomputed once over the migrated range at the end
 * (aggregates.ts), so nothing is queued per batch.
 */
export async function batchStatement(): Promise<string> {
  return (await sql("batch")).replace(
    "{{insert}}",
    insertFromSelect("SELECT time, sensor_id, value, status FROM new_rows", {
      conflict: "keep-stored",
      queueAggregates: false,
    }),
  );
}

export async function runBatches(
  db: pg.ClientBase,
  src: LegacySource,
  o: Options,
  mapping: SensorMapping,
  run: BatchRun,
): Promise<BatchTotals> {
  const batchSql = await batchStatement();
  const cpSql = await sql("checkpoint_insert");
  const totals: BatchTotals = { batches: 0, legacy_rows: 0, values_seen: 0, keys_numeric: 0, inserted: 0, retries: 0 };
  let rowsNow = run.startRows;

  // One batch: moved and recorded in one transaction, or neither.
  const runBatch = async (c: pg.ClientBase, s: number, e: number) => {
    await c.query("BEGIN");
    try {
      await c.query("SELECT set_config('work_mem', $1, true)", [o.workMem]);
      const b = (await c.query<BatchRow>(batchSql, [iso(s), iso(e)])).rows[0]!;
      const inserted = b.inserted_by_sensor.reduce((a, [, n]) => a + n, 0);
      const stats: BatchStats = {
        kinds: b.kinds,
        inserted: b.inserted_by_sensor,
        conflicts: b.conflicts,
        conflict_samples: b.conflict_samples,
      };
      await c.query(cpSql, [
        src.key,
        iso(s),
        iso(e),
        b.legacy_rows,
        b.values_seen,
        b.keys_numeric,
        inserted,
        stats,
        src.timeZone,
        src.ambiguous,
      ]);
      await c.query("COMMIT");
      return { ...b, inserted };
    } catch (err) {
      await c.query("ROLLBACK").catch(() => undefined);
      throw err;
    }
  };

  // A stop request, --max-batches or a failure stops the handing out and the
  // batches in hand finish. What committed is always recorded, so a gap left
  // by a batch that did not commit is moved by the next run.
  const sessions: pg.ClientBase[] = [db];
  const extra: pg.Client[] = [];
  let next = 0;
  let failed = false;
  const worker = async (c: pg.ClientBase) => {
    while (!failed && !run.signal?.aborted && next < run.limit) {
      const [s, e] = run.todo[next++]!;
      try {
        const b = await withConflictRetry(
          o.retries,
          () => runBatch(c, s, e),
          (what, attempt) => {
            totals.retries++;
            run.onRetry?.(`batch ${iso(s)}: ${what}; retry ${attempt} of ${o.retries}`);
          },
        );
        totals.batches++;
        totals.legacy_rows += Number(b.legacy_rows);
        totals.values_seen += Number(b.values_seen);
        totals.keys_numeric += Number(b.keys_numeric);
        totals.inserted += b.inserted;
        rowsNow += Number(b.legacy_rows);
        run.progress.update(rowsNow, totals.inserted, `batch ${iso(s).slice(0, 16)}`);
      } catch (err) {
        failed = true;
        throw err;
      }
    }
  };
  try {
    for (let i = 1; i < Math.min(o.parallel, run.limit) && run.connect; i++) {
      const c = await run.connect();
      extra.push(c);
      await prepareSession(c, o, mapping);
      sessions.push(c);
    }
    const settled = await Promise.allSettled(sessions.map(worker));
    const err = settled.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (err) throw err.reason;
  } finally {
    for (const c of extra) await c.end();
  }
  return totals;
}
