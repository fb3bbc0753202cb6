import type pg from "pg";
import { classifyDbError, describeDbFailure } from "../db/pg-errors.js";
import type { Logger } from "../pipeline/runtime/log.js";
import type { Component, ComponentContext } from "../pipeline/runtime/worker.js";

// Aggregate and retention upkeep, a declared component of the can-worker:
// every everyMs it runs cea_refresh_aggregates() (recomputes the hour and day
// buckets queued by the writers; a no-op on the Community edition, where
// TimescaleDB's policies do it) and cea_apply_retention() (drops raw chunks
// past the retention set with `cea retention set`, when one is). A failure is
// an outage of this component: health degraded with the cause, the next round
// retries; the readings keep flowing.

export class AggregateMaintenance implements Component {
  readonly name = "maintenance";
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;

  constructor(
    private readonly pool: pg.Pool,
    private readonly everyMs: number,
  ) {}

  start(ctx: ComponentContext): void {
    this.timer = setInterval(() => {
      this.running ??= this.round(ctx.log, ctx).finally(() => {
        this.running = null;
      });
    }, this.everyMs);
  }

  private async round(log: Logger, ctx: ComponentContext): Promise<void> {
    try {
      await this.pool.query("SELECT cea_refresh_aggregates()");
      await this.pool.query("SELECT cea_apply_retention()");
      ctx.problem(null);
    } catch (err) {
      const cause = describeDbFailure(classifyDbError(err));
      log.debug({ cause }, "aggregate refresh / retention failed; the next round retries");
      ctx.problem(cause);
    }
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.running;
  }
}
