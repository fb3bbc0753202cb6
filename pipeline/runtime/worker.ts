import type { Redis } from "ioredis";
import type pg from "pg";
import type { Config } from "./config.js";
import { TransientError } from "./errors.js";
import { type RedisKeys, redisKeys } from "./keys.js";
import type { Logger } from "./log.js";
import {
  type Backoff,
  checkChain,
  newBatch,
  type StageContext,
  type StageInstance,
  type StageOptions,
  type StageSpec,
  type WorkBatch,
} from "./stage.js";
import { autoClaim, deliveryCounts, ensureGroup, isNoGroup, readGroup, type StreamEntries, touch } from "./stream.js";

// The worker runtime: reads the raw stream through the consumer group and
// drives any ordered list of stage specs over each read batch. It owns
// batching, read-ahead, retries with backoff, claims, delivery-count dead
// letters, health, maintenance and shutdown; stages own what they do.
//
// Read-ahead: while the sequential stages (COPY/COMMIT, ack) work on batch N,
// batch N+1 is already read and run through the prepare stages (decode on the
// pool), so Redis, the decode threads and PostgreSQL overlap. The sequential
// stages form a pipeline of ordered lanes: each lane is entered in batch order
// by at most its stage's `concurrency` batches at once, and a batch passes the
// lanes in chain order, so every batch is still committed before it is acked,
// while batch N+1 may commit as batch N acks (or beside it, on a second
// connection, when the writer's concurrency is 2).

export interface WorkerDeps {
  config: Config;
  log: Logger;
  redis: Redis;
  pool: pg.Pool;
  stages: readonly StageSpec<StageOptions>[];
  /** Per-stage option overrides by stage name. */
  options?: Record<string, StageOptions>;
}

export interface WorkerStats {
  batches: number;
  entries: number;
  rows: number;
  inserted: number;
  dead: number;
  claimed: number;
  retries: number;
  lastBatchAt: string | null;
  /** Milliseconds spent per stage and in stream reads (for the benchmark and the summaries). */
  ms: Record<string, number>;
}

export interface WorkerHandle {
  /** Resolves when the loop has ended (after stop(), or rejects on a fatal error). */
  done: Promise<void>;
  /** Stop reading; abandon the batch in hand without acking (it stays pending for this consumer). */
  stop(): Promise<void>;
  stats: WorkerStats;
  ctx: StageContext;
}

/** An ordered, bounded lane for one sequential stage. */
class Lane {
  private last: Promise<void> = Promise.resolve();
  private active = 0;
  private waiting: (() => void)[] = [];
  constructor(readonly concurrency: number) {}

  /** Take a place in batch order now; `enter` later waits for the turn and a free slot. */
  reserve(): { enter: () => Promise<void>; leave: () => void } {
    const prev = this.last;
    let entered!: () => void;
    this.last = new Promise<void>((r) => {
      entered = r;
    });
    let inside = false;
    return {
      enter: async () => {
        await prev;
        // a slot freed by leave() passes straight to the first waiter (active unchanged)
        if (this.active >= this.concurrency) await new Promise<void>((r) => this.waiting.push(r));
        else this.active++;
        inside = true;
        entered();
      },
      leave: () => {
        entered(); // a batch that never entered (it failed earlier) must not hold up the next
        if (!inside) return;
        inside = false;
        const next = this.waiting.shift();
        if (next) next();
        else this.active--;
      },
    };
  }
}

class Abandoned extends Error {
  override name = "Abandoned";
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export function backoffDelay(b: Backoff, attempt: number): number {
  const exp = Math.min(b.maxMs, b.baseMs * 2 ** Math.min(attempt, 16));
  // full jitter on the upper half, so many workers do not retry in step
  return Math.round(exp / 2 + Math.random() * (exp / 2));
}

export async function startWorker(deps: WorkerDeps): Promise<WorkerHandle> {
  const { config, log, redis, pool } = deps;
  const keys: RedisKeys = redisKeys(config);
  const group = config.CEA_GROUP;
  const consumer = config.CEA_CONSUMER;
  log.info({ chain: checkChain(deps.stages, "raw-entries") }, "stage chain");

  await ensureGroup(redis, keys.raw, group);
  const ctx: StageContext = { config, log, redis, pool, keys, shared: new Map() };
  const instances: { spec: StageSpec<StageOptions>; stage: StageInstance }[] = [];
  for (const spec of deps.stages) {
    const options = { ...spec.defaults, ...(deps.options?.[spec.name] ?? {}) };
    instances.push({ spec, stage: await spec.create(ctx, options) });
  }
  const firstSequential = instances.findIndex((s) => s.spec.sequential);
  const split = firstSequential < 0 ? instances.length : firstSequential;
  const prepareStages = instances.slice(0, split);
  const commitStages = instances.slice(split);
  const lanes = commitStages.map((s) => new Lane(Math.max(1, Math.floor(s.stage.concurrency ?? 1))));
  // batches between their first sequential stage and their last
  const window = Math.max(1, ...lanes.map((l) => l.concurrency));

  // blocking reads get their own connection so acks never wait behind a BLOCK
  const reader = redis.duplicate();
  reader.on("error", () => undefined); // reconnects itself; the main client logs outages

  const stats: WorkerStats = {
    batches: 0,
    entries: 0,
    rows: 0,
    inserted: 0,
    dead: 0,
    claimed: 0,
    retries: 0,
    lastBatchAt: null,
    ms: {},
  };
  let stopping = false;
  let degraded: string | null = null;
  let seq = 0;
  let cursor = "0"; // own pending first, then ">"
  let claimCursor = "0-0";
  let nextClaimAt = Date.now() + Math.min(config.CEA_CLAIM_IDLE_MS, 5_000);
  const claimEveryMs = Math.max(500, Math.min(30_000, Math.floor(config.CEA_CLAIM_IDLE_MS / 2)));

  /** Run one stage with its failure policy; transient errors retry with backoff until success or stop. */
  async function runStage(s: (typeof instances)[number], batch: WorkBatch): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        const t = performance.now();
        await s.stage.process(batch);
        stats.ms[s.spec.name] = (stats.ms[s.spec.name] ?? 0) + performance.now() - t;
        if (attempt > 0) {
          log.info({ stage: s.spec.name, attempts: attempt + 1 }, "recovered");
          degraded = null;
        }
        return;
      } catch (err) {
        const kind = err instanceof TransientError ? "transient" : s.spec.failure.classify(err);
        if (kind !== "transient") throw err;
        if (stopping) throw new Abandoned(`stopping during a retry of ${s.spec.name}`);
        stats.retries++;
        degraded = `${s.spec.name}: ${(err as Error).message}`;
        const delay = backoffDelay(s.spec.failure.backoff, attempt);
        if (attempt === 0 || attempt % 10 === 0)
          log.warn(
            { stage: s.spec.name, err: (err as Error).message, attempt, delay },
            "transient failure; retrying the batch",
          );
        // keep our entries from being claimed by others while we wait (no delivery-count increase)
        await touch(redis, keys.raw, group, consumer, batch.ids).catch(() => undefined);
        await sleep(delay);
      }
    }
  }

  async function read(): Promise<{ entries: StreamEntries; counted: boolean } | null> {
    for (let attempt = 0; !stopping; attempt++) {
      try {
        if (Date.now() >= nextClaimAt && degraded === null) {
          const r = await autoClaim(
            redis,
            keys.raw,
            group,
            consumer,
            config.CEA_CLAIM_IDLE_MS,
            claimCursor,
            config.CEA_BATCH_SIZE,
          );
          claimCursor = r.next;
          if (r.next === "0-0") nextClaimAt = Date.now() + claimEveryMs;
          if (r.deleted) log.warn({ deleted: r.deleted }, "claimed entries had been trimmed from the stream");
          if (r.entries.ids.length) {
            stats.claimed += r.entries.ids.length;
            log.info({ entries: r.entries.ids.length }, "claimed idle entries from another consumer");
            return { entries: r.entries, counted: true };
          }
        }
        if (cursor !== ">") {
          const r = await readGroup(reader, keys.raw, group, consumer, cursor, config.CEA_BATCH_SIZE, null);
          if (r.ids.length === 0) {
            cursor = ">";
            continue;
          }
          cursor = r.ids[r.ids.length - 1]!;
          return { entries: r, counted: true };
        }
        const r = await readGroup(reader, keys.raw, group, consumer, ">", config.CEA_BATCH_SIZE, config.CEA_FLUSH_MS);
        if (r.ids.length) return { entries: r, counted: false };
      } catch (err) {
        if (isNoGroup(err)) {
          log.warn("consumer group missing; re-creating it");
          await ensureGroup(redis, keys.raw, group).catch((e: Error) =>
            log.warn({ err: e.message }, "group create failed"),
          );
          cursor = "0";
          continue;
        }
        const delay = backoffDelay({ baseMs: 100, maxMs: 5_000 }, attempt);
        log.warn({ err: (err as Error).message, delay }, "stream read failed; retrying");
        await sleep(delay);
      }
    }
    return null;
  }

  async function readAndPrepare(): Promise<WorkBatch | null> {
    const t = performance.now();
    const r = await read();
    stats.ms.read = (stats.ms.read ?? 0) + performance.now() - t;
    if (!r) return null;
    const { ids, fields } = r.entries;
    let deliveries: number[] | null = null;
    if (r.counted) deliveries = await deliveryCounts(redis, keys.raw, group, consumer, ids);
    const batch = newBatch(++seq, ids, fields, deliveries);
    if (deliveries) {
      deliveries.forEach((d, i) => {
        if (d > config.CEA_MAX_DELIVERIES)
          batch.dead.set(i, `delivered ${d} times (CEA_MAX_DELIVERIES=${config.CEA_MAX_DELIVERIES}) without a commit`);
      });
    }
    for (const s of prepareStages) await runStage(s, batch);
    return batch;
  }

  async function commit(batch: WorkBatch): Promise<void> {
    const places = lanes.map((l) => l.reserve());
    try {
      for (let i = 0; i < commitStages.length; i++) {
        await places[i]!.enter();
        try {
          await runStage(commitStages[i]!, batch);
        } finally {
          places[i]!.leave();
        }
      }
    } finally {
      for (const p of places) p.leave();
    }
    stats.batches++;
    stats.entries += batch.ids.length;
    stats.rows += batch.rowCount;
    stats.inserted += batch.inserted;
    stats.dead += batch.dead.size;
    stats.lastBatchAt = new Date().toISOString();
    log.debug(
      {
        msg: "batch committed",
        rows: batch.rowCount,
        inserted: batch.inserted,
        entries: batch.ids.length,
        dead: batch.dead.size,
        seq: batch.seq,
      },
      "batch committed",
    );
  }

  // health + periodic summary
  const healthKey = keys.health(consumer);
  const writeHealth = async () => {
    const body = JSON.stringify({
      service: "can-worker",
      consumer,
      status: degraded ? "degraded" : "ok",
      reason: degraded,
      pid: process.pid,
      at: new Date().toISOString(),
      ...stats,
    });
    await redis.set(healthKey, body, "EX", config.CEA_HEALTH_TTL_S);
  };
  let lastSummary = { ...stats };
  const healthTimer = setInterval(
    () => {
      writeHealth().catch((err: Error) => log.warn({ err: err.message }, "health update failed"));
      if (stats.entries !== lastSummary.entries) {
        log.info({ ...stats, sinceLast: stats.entries - lastSummary.entries }, "worker summary");
        lastSummary = { ...stats };
      }
    },
    Math.max(1_000, Math.min(10_000, (config.CEA_HEALTH_TTL_S * 1000) / 3)),
  );
  await writeHealth().catch((err: Error) => log.warn({ err: err.message }, "health update failed"));

  // maintenance: Apache-edition aggregates (no-op on Community) and retention
  let maintaining = false;
  const maintTimer = setInterval(() => {
    if (maintaining) return;
    maintaining = true;
    (async () => {
      await pool.query("SELECT cea_refresh_aggregates()");
      await pool.query("SELECT cea_apply_retention()");
    })()
      .catch((err: Error) => log.warn({ err: err.message }, "aggregate refresh / retention failed; next round retries"))
      .finally(() => {
        maintaining = false;
      });
  }, config.CEA_AGG_REFRESH_MS);

  const loop = async () => {
    let ahead = readAndPrepare();
    const inFlight = new Set<Promise<void>>();
    let failed = null as { err: unknown } | null;
    try {
      for (;;) {
        const batch = await ahead;
        if (!batch || stopping || failed) break;
        ahead = readAndPrepare();
        const p: Promise<void> = commit(batch).then(
          () => {
            inFlight.delete(p);
          },
          (err: unknown) => {
            inFlight.delete(p);
            failed ??= { err };
            stopping = true;
          },
        );
        inFlight.add(p);
        while (inFlight.size >= window && !failed) await Promise.race(inFlight);
      }
    } finally {
      // the read-ahead batch is abandoned unacked: it stays pending for this consumer
      stopping = true;
      await Promise.all(inFlight);
      await ahead.catch((err: Error) => log.debug({ err: err.message }, "read-ahead batch abandoned"));
    }
    if (failed) throw failed.err;
  };

  const done = loop()
    .catch((err: unknown) => {
      if (err instanceof Abandoned) {
        log.info({ err: err.message }, "batch abandoned unacked");
        return;
      }
      throw err;
    })
    .finally(async () => {
      clearInterval(healthTimer);
      clearInterval(maintTimer);
      for (const s of instances) await s.stage.close?.();
      reader.disconnect();
    });

  return {
    done,
    stats,
    ctx,
    async stop() {
      stopping = true;
      await done;
    },
  };
}

/** `--check`: healthy when the health key exists and says ok. */
export async function checkHealth(redis: Redis, key: string): Promise<{ ok: boolean; body: string | null }> {
  const body = await redis.get(key);
  if (!body) return { ok: false, body };
  try {
    return { ok: (JSON.parse(body) as { status?: string }).status === "ok", body };
  } catch {
    return { ok: false, body };
  }
}
