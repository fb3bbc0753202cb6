import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import type pg from "pg";
import { parseSite } from "../db/site.js";
import { loadCanDb } from "../pipeline/can/candb.js";
import type { Refusal } from "../pipeline/can/model.js";
import { buildDecodeTable, type DecodeTable } from "../pipeline/can/table.js";
import { ConfigError } from "../pipeline/runtime/errors.js";
import type { Logger } from "../pipeline/runtime/log.js";
import { projectPath } from "../pipeline/runtime/paths.js";
import type { StageSpec } from "../pipeline/runtime/stage.js";
import { isTransientPgError, PG_BACKOFF } from "./batch-copy.js";

// resolve-sensor: signal "Message.Signal" → sensor_id (+ calibration_offset).
//
// The map comes from the site file (its sensor ids ARE the database ids; the
// stage checks they exist in `sensor`) joined with the CAN database. stored
// value = decoded physical value + calibration_offset. The map is a small plain
// table published as `decodeTable` for the decode stage, which applies it in
// its thread while building the COPY text (one pass over the frames). Refresh:
// the site and CAN database files are re-read when their content hash changes,
// checked every `refreshMs` and on SIGHUP (wired by the entry point); a bad new
// file keeps the old map and logs an error instead of stopping the pipeline.

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

/** Load, validate and join site + CAN database; ConfigError names the file and element. */
export async function loadDecodeTable(files: SensorMapFiles, log?: Logger): Promise<LoadedDecodeTable> {
  const siteText = await readFile(files.siteFile, "utf8").catch((err: Error) => {
    throw new ConfigError(`${files.siteFile}: cannot read site file: ${err.message}`);
  });
  const dbBytes = await readFile(files.canDbFile).catch((err: Error) => {
    throw new ConfigError(`${files.canDbFile}: cannot read CAN database: ${err.message}`);
  });
  const site = parseSite(siteText, files.siteFile);
  const db = loadCanDb(files.canDbFile);
  const { table, unmapped } = buildDecodeTable(db, site, files.siteFile);
  const hash = createHash("sha1").update(siteText).update("\0").update(dbBytes).digest("hex");
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

/** Sensor ids of the table that the database lacks (site not synced). */
export async function missingSensors(db: pg.Pool | pg.ClientBase, table: DecodeTable): Promise<number[]> {
  const ids = Object.values(table.messages).flatMap((m) => m.signals.filter((s) => s.sensorId).map((s) => s.sensorId));
  const { rows } = await db.query<{ sensor_id: number }>(SENSORS_PRESENT, [ids]);
  const have = new Set(rows.map((r) => r.sensor_id));
  return ids.filter((id) => !have.has(id));
}

export const resolveSensorDefaults = { refreshMs: 10_000 };

export const resolveSensorStage: StageSpec<typeof resolveSensorDefaults> = {
  name: "resolve-sensor",
  consumes: "measurement-rows",
  emits: "measurement-rows",
  defaults: resolveSensorDefaults,
  failure: {
    unrecoverable: ["signal without a sensor (dead-lettered by decode with this table)"],
    transient: [],
    backoff: { baseMs: 100, maxMs: 2_000 },
    classify: () => "fatal",
  },
  async create(ctx, options) {
    const files = {
      siteFile: projectPath(ctx.config.CEA_SITE_FILE),
      canDbFile: projectPath(ctx.config.CEA_CAN_DB_FILE),
    };
    let current = await loadDecodeTable(files, ctx.log);
    // the database may be down at start-up: wait for it like for any transient failure
    let missing: number[] = [];
    for (let attempt = 0; ; attempt++) {
      try {
        missing = await missingSensors(ctx.pool, current.table);
        break;
      } catch (err) {
        if (!isTransientPgError(err)) throw err;
        const delay = Math.min(PG_BACKOFF.maxMs, PG_BACKOFF.baseMs * 2 ** Math.min(attempt, 8));
        if (attempt % 10 === 0)
          ctx.log.warn({ err: (err as Error).message, delay }, "database unavailable at start-up; waiting");
        await new Promise((r) => setTimeout(r, delay));
      }
    }
    if (missing.length)
      throw new ConfigError(
        `${files.siteFile}: sensors ${missing.join(", ")} are not in the database; run: cea site sync`,
      );
    ctx.shared.set("decodeTable", current.table);
    let lastCheck = Date.now();
    let refreshing = false;
    const refresh = async (why: string) => {
      if (refreshing) return;
      refreshing = true;
      try {
        const next = await loadDecodeTable(files);
        if (next.hash === current.hash) return;
        const gone = await missingSensors(ctx.pool, next.table);
        if (gone.length)
          throw new ConfigError(`sensors ${gone.join(", ")} are not in the database; run: cea site sync`);
        current = next;
        reportLoad(ctx.log, files, next);
        ctx.shared.set("decodeTable", next.table);
        ctx.log.info({ why, version: next.table.version }, "sensor map reloaded");
      } catch (err) {
        ctx.log.error({ err: (err as Error).message, why }, "sensor map reload failed; keeping the previous map");
      } finally {
        refreshing = false;
      }
    };
    ctx.shared.set("reloadSensorMap", () => refresh("SIGHUP"));
    return {
      process() {
        const now = Date.now();
        if (now - lastCheck >= options.refreshMs) {
          lastCheck = now;
          // in the background: the next batch uses the new map
          void refresh("periodic");
        }
      },
    };
  },
};
