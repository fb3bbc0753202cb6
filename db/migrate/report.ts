import type { SyncReport } from "../site.js";
import type { Options } from "./options.js";
import type { LegacySource } from "./source.js";

// The migration's report: what it holds (written as JSON for tools, and as
// text by report-text.ts for the operator).

/** Stored per batch in migration_checkpoint.stats. */
export interface BatchStats {
  /** [sensor_id, kind, occurrences] */
  kinds: [number, string, number][];
  /** [sensor_id, rows inserted] */
  inserted: [number, number][];
  /** [sensor_id, timestamps whose duplicates disagree] */
  conflicts: [number, number][];
  /** [sensor_id, time, kept value, largest other value] */
  conflict_samples: [number, string, number, number][];
}

export interface NodeReport {
  node_id: number | null;
  mapped: boolean;
  device: string | null;
  device_type: string | null;
  room: string | null;
  rack: string | null;
  /** message_type seen in the legacy rows of this node -> rows */
  message_types: Record<string, number>;
  legacy_rows: number;
  not_object_rows: number;
  first: string | null;
  last: string | null;
}

export interface SensorReport {
  sensor_id: number;
  name: string | null;
  /** rows written to measurement (dry run: distinct numeric timestamps it would write at most) */
  rows: number;
  /** legacy value occurrences by kind */
  kinds: Record<string, number>;
  /** occurrences that are not numbers (every kind but number and numeric_string) */
  skipped: number;
  conflicts: number;
}

export interface UnknownKey {
  node_id: number;
  key: string;
  n: number;
  /** the node whose device has a sensor of this name, if any */
  sensor_of_node: number | null;
}

export interface VerifyMismatch {
  sensor_id: number;
  sensor: string | null;
  /** the facility-local day (cea_daily_bucket) */
  day: string;
  problems: string[];
  /** the first keys (time) whose rows differ: legacy value vs stored row, null = absent */
  first_differences: { time: string; legacy: number | null; stored: number | null; status: string | null }[];
  [k: string]: unknown;
}

/** A range of the data far from its bulk, with its rows per node. */
export interface Outlier {
  from: string;
  to: string;
  bulk: { from: string; to: string };
  nodes: { node_id: number | null; rows: number }[];
}

export interface MigrationReport {
  mode: "migrate" | "dry-run" | "verify-only" | "undo";
  started_at: string;
  finished_at: string;
  edition: "community" | "apache";
  source: {
    schema: string;
    table: string;
    time_column: string;
    time_with_zone: boolean;
    node_column: string;
    data_column: string;
    type_column: string | null;
    time_indexed: boolean;
  };
  range: { first: string | null; last: string | null };
  nodes: NodeReport[];
  unmapped_nodes: { node_id: number | null; rows: number }[];
  unknown_keys: UnknownKey[];
  rows_without_time: number;
  rows_not_object: number;
  /** rows whose json held a \u0000 (jsonb cannot: the value is counted as a non-numeric string) */
  rows_with_nul: number;
  /** rows whose json object repeated a key (the last value is the one read) */
  rows_with_duplicate_keys: number;
  /** local times of a column without time zone that the zone's changes make ambiguous / nonexistent */
  local_times: {
    zone: string | null;
    ambiguous: number;
    ambiguous_rule: string;
    nonexistent: number;
    nonexistent_rule: string;
  };
  outliers: Outlier[];
  site_sync: SyncReport | null;
  would_create: { rooms: string[]; devices: string[]; sensors: string[] } | null;
  /** --batch, or "about N legacy rows (windows of 1h)" */
  batch: string;
  batches: { total: number; before_this_run: number; this_run: number; remaining: number };
  this_run: {
    legacy_rows: number;
    values_seen: number;
    keys_numeric: number;
    inserted: number;
    seconds: number;
    /** batches run again after a deadlock or serialization failure */
    retries: number;
  };
  /** over every committed batch of this source, earlier runs included */
  totals: {
    legacy_rows: number;
    values_seen: number;
    keys_numeric: number;
    inserted: number;
    /** numeric keys whose (sensor, time) was already in measurement */
    already_present: number;
    /** numeric occurrences collapsed onto a timestamp another copy already had */
    duplicates: number;
  };
  sensors: SensorReport[];
  conflicts: {
    total: number;
    rule: string;
    samples: { sensor_id: number; sensor: string | null; time: string; kept: number; also_seen: number }[];
  };
  aggregates: { edition: string; method: string; from: string; to: string } | null;
  stopped_early: boolean;
  /** what --undo removed */
  undone: { measurement_rows: number; checkpoints: number; from: string | null; to: string | null } | null;
  verification: {
    ok: boolean;
    sensor_days: number;
    sensors: number;
    legacy_values: number;
    measurement_rows: number;
    mismatch_count: number;
    mismatches: VerifyMismatch[];
  } | null;
  /** things to look at that do not stop the run */
  warnings: string[];
  /** what stops the run (unmapped nodes, unknown keys) */
  problems: string[];
}

export function newSensor(sensorId: number, names: Map<number, string>): SensorReport {
  return { sensor_id: sensorId, name: names.get(sensorId) ?? null, rows: 0, kinds: {}, skipped: 0, conflicts: 0 };
}

export function finishSensors(list: SensorReport[]): SensorReport[] {
  for (const s of list) {
    s.skipped = Object.entries(s.kinds)
      .filter(([k]) => k !== "number" && k !== "numeric_string")
      .reduce((a, [, c]) => a + c, 0);
  }
  return list.sort((a, b) => a.sensor_id - b.sensor_id);
}

/** The rows far from the bulk, per node; in a dry run asked as a question. */

/** The report before anything is known, for one mode. */
export function emptyReport(
  mode: MigrationReport["mode"],
  startedAt: string,
  ed: "community" | "apache",
  src: LegacySource,
  o: Options,
): MigrationReport {
  return {
    mode,
    started_at: startedAt,
    finished_at: startedAt,
    edition: ed,
    source: {
      schema: src.schema,
      table: src.table,
      time_column: src.timeColumn,
      time_with_zone: src.timeWithZone,
      node_column: src.nodeColumn,
      data_column: src.dataColumn,
      type_column: src.typeColumn,
      time_indexed: src.timeIndexed,
    },
    range: { first: null, last: null },
    nodes: [],
    unmapped_nodes: [],
    unknown_keys: [],
    rows_without_time: 0,
    rows_not_object: 0,
    rows_with_nul: 0,
    rows_with_duplicate_keys: 0,
    local_times: {
      zone: src.timeZone,
      ambiguous: 0,
      ambiguous_rule: `the ${o.ambiguous} of the two instants (--ambiguous)`,
      nonexistent: 0,
      nonexistent_rule: "moved forward by the length of the gap",
    },
    outliers: [],
    site_sync: null,
    would_create: null,
    batch: o.batch ?? `about ${o.batchRows} legacy rows`,
    batches: { total: 0, before_this_run: 0, this_run: 0, remaining: 0 },
    this_run: { legacy_rows: 0, values_seen: 0, keys_numeric: 0, inserted: 0, seconds: 0, retries: 0 },
    totals: { legacy_rows: 0, values_seen: 0, keys_numeric: 0, inserted: 0, already_present: 0, duplicates: 0 },
    sensors: [],
    conflicts: { total: 0, rule: "smallest value kept", samples: [] },
    aggregates: null,
    stopped_early: false,
    undone: null,
    verification: null,
    warnings: [],
    problems: [],
  };
}
