import type pg from "pg";
import { classifyDbError, describeDbFailure } from "../db/pg-errors.js";
import {
  type LoadedDecodeTable,
  loadDecodeTable,
  readSources,
  reportLoad,
  type SensorMapFiles,
} from "../pipeline/can/load.js";
import type { DecodeTable } from "../pipeline/can/table.js";
import { ConfigError } from "../pipeline/runtime/errors.js";
import type { Logger } from "../pipeline/runtime/log.js";
import { backoffDelay, sleep } from "../pipeline/runtime/retry.js";
import type { Component, ComponentContext } from "../pipeline/runtime/worker.js";

// The sensor map: the site file (its sensor ids ARE the database ids) joined
// with the CAN database into one decode table (pipeline/can/load.ts): arbitration id → message →
// signals → sensor id and calibration_offset. A declared component of the
// worker: loaded and checked against the database at start (waiting while the
// database is unavailable), re-read when the files' content changes (checked
// every refreshMs) and on reload() (SIGHUP); a bad new file keeps the old map
// and logs an error instead of stopping the pipeline. decode and resolve-sensor
// read `table`; each batch is decoded and resolved with one and the same table.

export { type LoadedDecodeTable, loadDecodeTable, reportLoad, type SensorMapFiles };

const SENSORS_PRESENT = "SELECT sensor_id FROM sensor WHERE sensor_id = ANY($1::int[])";

/** Sensor ids of the table (derived sensors included) that the database lacks (site not synced). */
export async function missingSensors(db: pg.Pool | pg.ClientBase, table: DecodeTable): Promise<number[]> {
  const ids = Object.values(table.messages).flatMap((m) => m.signals.filter((s) => s.sensorId).map((s) => s.sensorId));
  for (const d of table.derived) for (const id of [d.airVpd, d.leafVpd, d.dewPoint]) if (id) ids.push(id);
  const { rows } = await db.query<{ sensor_id: number }>(SENSORS_PRESENT, [ids]);
  const have = new Set(rows.map((r) => r.sensor_id));
  return ids.filter((id) => !have.has(id));
}

export class SensorMap implements Component {
  readonly name = "sensor-map";
  private current: LoadedDecodeTable | null = null;
  private timer: NodeJS.Timeout | null = null;
  private refreshing = false;
  private log: Logger | null = null;
  private readonly stopper = new AbortController();

  constructor(
    private readonly files: SensorMapFiles,
    private readonly pool: pg.Pool,
    private readonly refreshMs = 10_000,
  ) {}

  get table(): DecodeTable {
    if (!this.current) throw new Error("sensor map used before it was started");
    return this.current.table;
  }

  async start(ctx: ComponentContext): Promise<void> {
    this.log = ctx.log;
    const loaded = await loadDecodeTable(this.files, ctx.log);
    // the database may be unavailable at start-up: wait for it like for any outage
    for (let attempt = 0; ; attempt++) {
      try {
        const missing = await missingSensors(this.pool, loaded.table);
        if (missing.length)
          throw new ConfigError(
            `${this.files.siteFile}: sensors ${missing.join(", ")} are not in the database; run: cea site sync`,
          );
        break;
      } catch (err) {
        if (err instanceof ConfigError || this.stopper.signal.aborted) throw err;
        ctx.problem(`database unavailable at start-up: ${describeDbFailure(classifyDbError(err))}`);
        await sleep(backoffDelay({ baseMs: 200, maxMs: 5_000 }, attempt), this.stopper.signal);
      }
    }
    ctx.problem(null);
    this.current = loaded;
    this.timer = setInterval(() => void this.reload("periodic"), this.refreshMs);
  }

  /** Re-read both files; a changed, valid map replaces the current one from the next batch on. */
  async reload(why: string): Promise<void> {
    if (this.refreshing || !this.current) return;
    this.refreshing = true;
    try {
      // unchanged files (every periodic check but the rare edit): no parse, no allocation of a new table
      const read = await readSources(this.files);
      if (read.hash === this.current.hash) return;
      const next = await loadDecodeTable(this.files, undefined, read);
      const gone = await missingSensors(this.pool, next.table);
      if (gone.length) throw new ConfigError(`sensors ${gone.join(", ")} are not in the database; run: cea site sync`);
      this.current = next;
      if (this.log) reportLoad(this.log, this.files, next);
      this.log?.info({ why, version: next.table.version }, "sensor map reloaded");
    } catch (err) {
      this.log?.error({ err: (err as Error).message, why }, "sensor map reload failed; keeping the previous map");
    } finally {
      this.refreshing = false;
    }
  }

  stop(): void {
    this.stopper.abort();
    if (this.timer) clearInterval(this.timer);
  }
}
