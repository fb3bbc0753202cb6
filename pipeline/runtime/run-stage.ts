import type { Health } from "./health.js";
import { backoffDelay, sleep } from "./retry.js";
import type { Batch, StageInstance, StageSpec } from "./stage.js";
import type { WorkerObserver, WorkerStats } from "./worker-contract.js";

// The retry policy applied to one stage on one batch: the stage's own
// FailurePolicy decides; an outage ("retry") keeps the batch, degrades health
// naming the cause and retries with backoff until it succeeds or the worker
// stops; "fatal" ends the worker. A stop during a retry abandons the batch
// unacknowledged (it stays pending).

export class Abandoned extends Error {
  override name = "Abandoned";
}

export interface Running {
  spec: StageSpec<unknown, unknown>;
  stage: StageInstance<unknown, unknown>;
}

/** A batch between stages: the envelope and what the last stage emitted. */
export interface InFlight {
  batch: Batch;
  data: unknown;
}

export interface StageRunContext {
  stats: WorkerStats;
  health: Health;
  signal: AbortSignal;
  observer?: WorkerObserver | undefined;
}

export async function runStage(s: Running, f: InFlight, ctx: StageRunContext): Promise<void> {
  const { stats, health, signal, observer } = ctx;
  const name = s.spec.name;
  for (let attempt = 0; ; attempt++) {
    try {
      const t = performance.now();
      f.data = await s.stage.process(f.batch, f.data);
      const ms = performance.now() - t;
      stats.ms[name] = (stats.ms[name] ?? 0) + ms;
      observer?.stageDone?.(name, f.batch, ms);
      health.recover(name);
      return;
    } catch (err) {
      if (s.spec.failure.classify(err) === "fatal") throw err;
      if (signal.aborted) throw new Abandoned(`stopping during a retry of ${name}`);
      stats.retries++;
      observer?.retry?.(name, err);
      health.degrade(name, s.spec.failure.describe(err), { seq: f.batch.seq, entries: f.batch.ids.length });
      await sleep(backoffDelay(s.spec.failure.backoff, attempt), signal);
      if (signal.aborted) throw new Abandoned(`stopping during a retry of ${name}`);
    }
  }
}
