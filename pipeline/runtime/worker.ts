import { Health } from "./health.js";
import { Lane } from "./lanes.js";
import { type ReadBatch, StreamReader } from "./reader.js";
import { Abandoned, type InFlight, type Running, runStage } from "./run-stage.js";
import { type Batch, chainOptions, checkChain } from "./stage.js";
import { startParts } from "./start-parts.js";
import { ensureGroup, type StreamEntries } from "./stream.js";
import { type Component, newWorkerStats, type WorkerDeps, type WorkerHandle } from "./worker-contract.js";

export { checkHealth } from "./health.js";
export {
  type Component,
  type ComponentContext,
  RAW_ENTRIES,
  type WorkerDeps,
  type WorkerHandle,
  type WorkerObserver,
  type WorkerSettings,
  type WorkerStats,
  workerSettings,
} from "./worker-contract.js";

// The worker runtime: reads a stream through its consumer group and drives a
// declared chain of stages over each read batch. It is put together from its
// parts: the reader (reader.ts: claims, own pending; held entries kept
// fresh), ordered lanes for the sequential stages (lanes.ts), the retry policy
// (run-stage.ts: each stage's FailurePolicy with backoff), health (health.ts:
// degraded while a retry is pending, logged once per change), its contract
// (worker-contract.ts) and, here, read-ahead and shutdown. Domain work that is not a
// stage (aggregate upkeep, a reloadable map) is a declared Component.
//
// Read-ahead: while the sequential stages work on batch N, batch N+1 is read
// and run through the prepare stages, so Redis, decode and PostgreSQL overlap.

function newBatch(seq: number, r: ReadBatch): Batch {
  return { seq, ids: r.ids, fields: r.fields, deliveries: r.deliveries, dead: new Map(), skip: new Set() };
}

export async function startWorker(deps: WorkerDeps): Promise<WorkerHandle> {
  const { settings: o, log, redis } = deps;
  // options and links are checked before anything is created or read: a wrong one stops start-up
  const options = chainOptions(deps.chain.stages);
  log.info({ chain: checkChain(deps.chain.input, deps.chain.stages) }, "stage chain");

  const health = new Health(log);
  const stopper = new AbortController();
  const components: Component[] = [];
  const instances: Running[] = [];
  const stats = newWorkerStats();
  const closeAll = async () => {
    for (const s of instances) await s.stage.close?.();
    for (const c of components.reverse()) await c.stop();
  };
  try {
    await startParts(
      { components: deps.components, stages: deps.chain.stages, options, log, health, signal: stopper.signal },
      { components, stages: instances },
    );
    await ensureGroup(redis, o.stream, o.group);
  } catch (err) {
    await closeAll();
    throw err;
  }

  const firstSequential = instances.findIndex((s) => s.spec.sequential);
  const split = firstSequential < 0 ? instances.length : firstSequential;
  const prepareStages = instances.slice(0, split);
  const commitStages = instances.slice(split);
  const lanes = commitStages.map((s) => new Lane(Math.max(1, Math.floor(s.stage.concurrency ?? 1))));
  // batches between their first sequential stage and their last
  const window = Math.max(1, ...lanes.map((l) => l.concurrency));
  const reader = new StreamReader(
    redis,
    {
      stream: o.stream,
      group: o.group,
      consumer: o.consumer,
      batchSize: o.batchSize,
      flushMs: o.flushMs,
      claimIdleMs: o.claimIdleMs,
    },
    log,
    health,
    stopper.signal,
  );
  let seq = 0;
  const runCtx = { stats, health, signal: stopper.signal, observer: deps.observer };

  async function readAndPrepare(): Promise<InFlight | null> {
    const t = performance.now();
    const r = await reader.next();
    stats.ms.read = (stats.ms.read ?? 0) + performance.now() - t;
    if (!r) return null;
    const batch = newBatch(++seq, r);
    // past the delivery limit: not processed again (a frame that crashes the worker must not crash it forever)
    r.deliveries?.forEach((d, i) => {
      if (d > o.maxDeliveries)
        batch.dead.set(i, {
          reason: `delivered ${d} times (limit ${o.maxDeliveries}) without an acknowledgement; not processed again`,
          overLimit: true,
        });
    });
    // entries deleted from the stream (trimmed past the hard limit) have no fields: acknowledged, nothing else
    r.fields.forEach((f, i) => {
      if (f === null) {
        batch.dead.delete(i);
        batch.skip.add(i);
      }
    });
    const f: InFlight = { batch, data: { ids: r.ids, fields: r.fields } satisfies StreamEntries };
    try {
      for (const s of prepareStages) await runStage(s, f, runCtx);
    } catch (err) {
      reader.release(batch.ids);
      throw err;
    }
    return f;
  }

  async function commit(f: InFlight): Promise<void> {
    const places = lanes.map((l) => l.reserve());
    try {
      for (let i = 0; i < commitStages.length; i++) {
        await places[i]!.enter();
        try {
          await runStage(commitStages[i]!, f, runCtx);
        } finally {
          places[i]!.leave();
        }
      }
    } finally {
      for (const p of places) p.leave();
      reader.release(f.batch.ids);
    }
    stats.batches++;
    stats.entries += f.batch.ids.length;
    stats.dead += f.batch.dead.size;
    stats.skipped += f.batch.skip.size;
    stats.lastBatchAt = new Date().toISOString();
    deps.observer?.batchDone?.(f.batch);
  }

  const collect = () => {
    stats.claimed = reader.claimed;
    for (const s of instances) if (s.stage.counters) stats.stages[s.spec.name] = s.stage.counters();
  };

  // health + periodic summary
  const writeHealth = async () => {
    collect();
    const h = health.report();
    const body = JSON.stringify({
      service: o.service,
      consumer: o.consumer,
      ...h,
      pid: process.pid,
      at: new Date().toISOString(),
      holding: reader.holding,
      ...stats,
    });
    await redis.set(o.healthKey, body, "EX", o.healthTtlS);
  };
  let lastEntries = 0;
  const healthTimer = setInterval(
    () => {
      writeHealth().catch((err: Error) => log.debug({ err: err.message }, "health update failed"));
      if (stats.entries !== lastEntries) {
        log.info({ ...stats, sinceLast: stats.entries - lastEntries }, "worker summary");
        lastEntries = stats.entries;
      }
    },
    Math.max(1_000, Math.min(10_000, (o.healthTtlS * 1000) / 3)),
  );
  await writeHealth().catch((err: Error) => log.warn({ err: err.message }, "health update failed"));
  health.onChange = () =>
    void writeHealth().catch((err: Error) => log.debug({ err: err.message }, "health update failed"));

  const loop = async () => {
    let ahead = readAndPrepare();
    // handled here and awaited below: a failure of the read-ahead while the loop waits on a
    // commit must take the orderly path, never end the process as an unhandled rejection
    ahead.catch(() => undefined);
    const inFlight = new Set<Promise<void>>();
    let failed = null as { err: unknown } | null;
    try {
      for (;;) {
        const f = await ahead;
        if (!f || stopper.signal.aborted || failed) {
          if (f) reader.release(f.batch.ids);
          break;
        }
        ahead = readAndPrepare();
        ahead.catch(() => undefined);
        const p: Promise<void> = commit(f).then(
          () => {
            inFlight.delete(p);
          },
          (err: unknown) => {
            inFlight.delete(p);
            failed ??= { err };
            stopper.abort();
          },
        );
        inFlight.add(p);
        while (inFlight.size >= window && !failed) await Promise.race(inFlight);
      }
    } catch (err) {
      failed ??= { err };
    } finally {
      // the read-ahead batch is abandoned unacknowledged: it stays pending for this consumer
      stopper.abort();
      await Promise.all(inFlight);
      await ahead.then(
        (f) => f && reader.release(f.batch.ids),
        (err: Error) => log.debug({ err: err.message }, "read-ahead batch abandoned"),
      );
    }
    if (failed && !(failed.err instanceof Abandoned)) throw failed.err;
    if (failed) log.info({ err: (failed.err as Error).message }, "batch abandoned unacknowledged");
  };

  const done = loop().finally(async () => {
    clearInterval(healthTimer);
    reader.close();
    collect();
    await closeAll();
  });
  // the caller awaits `done`; this keeps a fatal error from also counting as an unhandled rejection meanwhile
  done.catch(() => undefined);

  return {
    done,
    stats,
    health,
    async stop() {
      stopper.abort();
      await done;
    },
  };
}
