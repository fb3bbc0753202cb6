import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { parseSite, type Site } from "../../db/site.js";
import { ConfigError } from "../runtime/errors.js";
import type { Logger } from "../runtime/log.js";
import { loadCanDb } from "./candb.js";
import type { Refusal } from "./model.js";
import { buildDecodeTable, type DecodeTable, type SensorSignal } from "./table.js";

// The site file and the CAN database read together and joined (buildDecodeTable):
// the one way every service that needs sensors → signals loads them (can-worker's
// sensor map, can-scanner, cea-backend's value labels), with the same refusals
// and the same log lines.

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
  /** Command and status-protocol signals: not readings by design (not unmapped). */
  protocol: string[];
  /** The site file as parsed. */
  site: Site;
  /** Every sensor of the site file with its signal's full definition (value tables included). */
  sensors: SensorSignal[];
}

/** Both files' content and its digest: what a periodic check compares before it parses anything. */
export async function readSources(files: SensorMapFiles): Promise<{ siteText: string; hash: string }> {
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
  const { table, unmapped, protocol, sensors } = buildDecodeTable(db, site, files.siteFile);
  const loaded = { table, hash, refused: db.refused, warnings: db.warnings, unmapped, protocol, site, sensors };
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
      { count: loaded.unmapped.length, signals: loaded.unmapped.slice(0, 50), file: files.canDbFile },
      "CAN signals without a sensor (not decoded, not stored)",
    );
  if (loaded.protocol.length)
    log.debug(
      { count: loaded.protocol.length, file: files.canDbFile },
      "command and status-protocol signals (not readings, not stored)",
    );
}
