import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import type pg from "pg";
import { classifyDbError, describeDbFailure } from "../db/pg-errors.js";
import { parseSite } from "../db/site.js";
import { loadCanDb } from "../pipeline/can/candb.js";
import type { Refusal } from "../pipeline/can/model.js";
import { buildDecodeTable, type DecodeTable } from "../pipeline/can/table.js";
import { ConfigError } from "../pipeline/runtime/errors.js";
import type { Logger } from "../pipeline/runtime/log.js";
import { backoffDelay, sleep } from "../pipeline/runtime/retry.js";
import type { Component, ComponentContext } from "../pipeline/runtime/worker.js";

// The sensor map: the site file (its sensor ids ARE the database ids) joined
// with the CAN database into one decode table: arbitration id → message →
// signals → sensor id and calibration_offset. A declared component of the
// worker: loaded and checked against the database at start (waiting while the
// database is unavailable), re-read when the files' content changes (checked
// every refreshMs) and on reload() (SIGHUP); a bad new file keeps the old map
// and logs an error instead of stopping the pipeline. decode and resolve-sensor
// read `table`; each batch is decoded and resolved with one and the same table.

const SENSORS_PRESENT = "SELECT sensor_id FROM sensor WHERE sensor_id = ANY($1::int[])";

export interface SensorMapFiles {
  siteFile: string;
  canDbFile: string;
}

export interface LoadedDecodeTable {
  table: DecodeTable;
  hash: string;
  /** Messages of the CAN database that cannot be decoded exactly (their frames are dead-lettered). */
  refused: Refusal[];
  /** What looks wrong but decodes as written (overlapping signals, duplicate names). */
  warnings: string[];
  /** CAN database signals no sensor maps. */
  unmapped: string[];
}

/** Both files' content and its digest: what a periodic check compares before it parses anything. */
async function readSources(files: SensorMapFiles): Promise<{ siteText: string; hash: string }> {
  const siteText = await readFile(files.siteFile, "utf8").catch((err: Error) => {
    throw new ConfigError(`${files.siteFile}: cannot read site file: ${err.message}`);
  });
  const dbBytes = await readFile(files.canDbFile).catch((err: Error) => {
    throw new ConfigError(`${files.canDbFile}: cannot read CAN database: ${err.message}`);
  });
  return { siteText, hash: createHash("sha1").update(siteText).update("\0").update(dbBytes).digest("hex") };
}

/** Load, validate and join site + CAN database; ConfigError names the file and element. */
export async function loadDecodeTable(
  files: SensorMapFiles,
  log?: Logger,
  read?: { siteText: string; hash: string },
): Promise<LoadedDecodeTable> {
  const { siteText, hash } = read ?? (await readSources(files));
  const site = parseSite(siteText, files.siteFile);
  const db = loadCanDb(files.canDbFile);
  const { table, unmapped } = buildDecodeTable(db, site, files.siteFile);
  const loaded = { table, hash, refused: db.refused, warnings: db.warnings, unmapped };
  if (log) reportLoad(log, files, loaded);
  return loaded;
}

/** Log what a load refused and left unmapped: once per load of a changed file, not per frame. */
export function reportLoad(log: Logger, files: SensorMapFiles, loaded: LoadedDecodeTable): void {
  for (const r of loaded.refused)
    log.error(
      { file: files.canDbFile, message: r.message, signal: r.signal, reason: r.reason },
      `CAN database message refused (its frames are dead-lettered): ${r.text}`,
    );
  if (loaded.warnings.length)
    log.warn(
      { file: files.canDbFile, count: loaded.warnings.length, warnings: loaded.warnings.slice(0, 50) },
      "CAN database: signals that overlap or share a name (decoded as the file writes them)",
    );
  if (loaded.unmapped.length)
    log.warn(
      { signals: loaded.unmapped.length, file: files.canDbFile },
      "CAN signals without a sensor (not decoded, not stored)",
    );
}

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
