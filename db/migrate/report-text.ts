import { mkdir, writeFile } from "node:fs/promises";
import { dirname } from "node:path";
import type { Site } from "../site.js";
import type { MigrationReport, Outlier, UnknownKey } from "./report.js";

// The report for the operator: the messages that stop a run or ask a question,
// the readable summary, and the files (JSON + text).

export function unmappedMessage(unmapped: { node_id: number | null; rows: number }[]): string {
  const lines = unmapped.map((u) => `  node_id ${u.node_id ?? "NULL"}: ${u.rows} rows`);
  return [
    "The legacy table has rows of node ids the site file does not map to a device:",
    ...lines,
    "The site file is the only source of metadata, so no room or device is created from data.",
    "Add a device with that node_id to the site file (CEA_SITE_FILE, ops/site.json), or run again",
    "with --skip-unmapped to leave these rows out (they are counted in the report).",
  ].join("\n");
}

const UNIT_GUESS: [RegExp, string][] = [
  [/temp|bulb|dew/, "°C"],
  [/rh|moisture|humid|wetness/, "%"],
  [/co2/, "ppm"],
  [/vpd/, "kPa"],
  [/par/, "µmol/m²/s"],
  [/wind/, "m/s"],
  [/pressure/, "hPa"],
];

/** The stop message for keys the site file does not name, with sensors ready to paste. */
export function unknownKeysMessage(keys: UnknownKey[], site: Site): string {
  const out = ["The legacy data has keys the site file does not name as sensors of the node's device:"];
  for (const k of keys)
    out.push(
      `  node_id ${k.node_id}: ${JSON.stringify(k.key)} in ${k.n} rows` +
        (k.sensor_of_node !== null ? ` (a sensor of node_id ${k.sensor_of_node}, not of this node)` : ""),
    );
  out.push(
    "",
    "Add them to the site file (CEA_SITE_FILE, ops/site.json) and run again, or run with",
    "--skip-unknown-keys to leave them out (counted per key in the report). Proposed sensors,",
    'to paste into each device\'s "sensors" array (check unit, data_type and signal):',
  );
  const usedIds = new Set(site.devices.flatMap((d) => d.sensors.map((s) => s.id)));
  // sensor names and signals are unique in the whole site file: a key that is
  // not a free valid name gets a name of its own and keeps the key as legacy_key
  const usedNames = new Set(site.devices.flatMap((d) => d.sensors.map((s) => s.name)));
  const usedSignals = new Set(site.devices.flatMap((d) => d.sensors.map((s) => s.signal)));
  for (const d of site.devices) {
    const mine = keys.filter((k) => k.node_id === d.node_id);
    if (!mine.length) continue;
    let nextId = Math.max(...d.sensors.map((s) => s.id)) + 1;
    let channel = Math.max(...d.sensors.map((s) => s.channel)) + 1;
    const entries: string[] = [];
    for (const k of mine) {
      const valid = /^[a-z][a-z0-9_]*$/.test(k.key);
      let name = k.key;
      if (!valid || usedNames.has(name)) {
        const base = `${
          k.key
            .toLowerCase()
            .replace(/[^a-z0-9_]+/g, "_")
            .replace(/^[^a-z]+/, "")
            .replace(/_+$/, "") || "legacy"
        }_n${d.node_id}`;
        name = base;
        for (let i = 2; usedNames.has(name); i++) name = `${base}_${i}`;
      }
      usedNames.add(name);
      let signal = `Legacy_N${d.node_id}.${name}`;
      for (let i = 2; usedSignals.has(signal); i++) signal = `Legacy_N${d.node_id}.${name}_${i}`;
      usedSignals.add(signal);
      while (usedIds.has(nextId)) nextId++;
      usedIds.add(nextId);
      const unit = UNIT_GUESS.find(([re]) => re.test(k.key.toLowerCase()))?.[1] ?? "";
      entries.push(
        JSON.stringify({
          id: nextId,
          name,
          unit,
          data_type: "float",
          channel: channel++,
          calibration_offset: 0,
          signal,
          ...(name !== k.key ? { legacy_key: k.key } : {}),
        }),
      );
    }
    if (entries.length)
      out.push(`  device ${JSON.stringify(d.name)} (node_id ${d.node_id}):`, `    ${entries.join(",\n    ")}`);
  }
  return out.join("\n");
}

const n = (x: number) => x.toLocaleString("en-US");

export function outlierMessage(outliers: Outlier[], question: boolean): string {
  const out = [
    `Rows far from the bulk of the data (${outliers[0]!.bulk.from.slice(0, 10)} .. ${outliers[0]!.bulk.to.slice(0, 10)}):`,
  ];
  for (const o of outliers) {
    const total = o.nodes.reduce((a, x) => a + x.rows, 0);
    out.push(
      `  ${o.from.slice(0, 10)} .. ${o.to.slice(0, 10)}: ${n(total)} row(s); ` +
        o.nodes.map((x) => `node ${x.node_id ?? "NULL"}: ${n(x.rows)}`).join(", "),
    );
  }
  out.push(
    question
      ? "Are these times real? They will be migrated as they are; if they are not, correct or remove them in a copy of the legacy table first."
      : "They are migrated as they are (each costs one batch).",
  );
  return out.join("\n");
}

export function formatReport(r: MigrationReport): string {
  const out: string[] = [];
  const title = {
    migrate: "Legacy migration",
    "dry-run": "Legacy migration: DRY RUN (nothing written)",
    "verify-only": "Legacy migration: verification",
    undo: "Legacy migration: UNDO",
  }[r.mode];
  out.push(`${title}  ${r.started_at} .. ${r.finished_at}`);
  out.push(
    `source ${r.source.schema}.${r.source.table}: time ${r.source.time_column}${r.source.time_with_zone ? "" : " (without time zone)"}, node ${r.source.node_column}, data ${r.source.data_column}, type ${r.source.type_column ?? "-"}${r.source.time_indexed ? "" : "  [no index on the time column]"}`,
  );
  out.push(`range ${r.range.first ?? "-"} .. ${r.range.last ?? "-"}   TimescaleDB ${r.edition} edition`);
  out.push("", "nodes:");
  for (const x of r.nodes) {
    const types = Object.entries(x.message_types)
      .map(([t, c]) => `${t} ${n(c)}`)
      .join(", ");
    out.push(
      x.mapped
        ? `  node ${x.node_id} -> ${x.device} (${x.device_type}) ${x.room}/${x.rack ?? "-"}: ${n(x.legacy_rows)} rows; message_types: ${types}`
        : `  node ${x.node_id ?? "NULL"} UNMAPPED: ${n(x.legacy_rows)} rows; message_types: ${types}`,
    );
  }
  if (r.unknown_keys.length) {
    out.push("", "keys the site file does not name:");
    for (const k of r.unknown_keys) out.push(`  node ${k.node_id} ${k.key}: ${n(k.n)}`);
  }
  if (r.rows_without_time) out.push(`rows without a timestamp (not migrated): ${n(r.rows_without_time)}`);
  if (r.rows_with_nul)
    out.push(`rows with a \\u0000 in their json (counted as non-numeric strings): ${n(r.rows_with_nul)}`);
  if (r.rows_with_duplicate_keys)
    out.push(`rows repeating a json key (the last value read): ${n(r.rows_with_duplicate_keys)}`);
  if (r.local_times.ambiguous || r.local_times.nonexistent)
    out.push(
      `local times in ${r.local_times.zone}: ${n(r.local_times.ambiguous)} ambiguous (${r.local_times.ambiguous_rule}), ${n(r.local_times.nonexistent)} nonexistent (${r.local_times.nonexistent_rule})`,
    );
  if (r.outliers.length) out.push("", outlierMessage(r.outliers, r.mode === "dry-run"));
  if (r.rows_not_object) out.push(`rows whose data is not a JSON object (nothing to migrate): ${n(r.rows_not_object)}`);
  if (r.would_create)
    out.push(
      "",
      `site sync would create: rooms [${r.would_create.rooms.join(", ")}], devices [${r.would_create.devices.join(", ")}], sensors [${r.would_create.sensors.join(", ")}]`,
    );
  if (r.site_sync)
    out.push(
      "",
      `site synced: ${r.site_sync.rooms} rooms, ${r.site_sync.devices} devices, ${r.site_sync.sensors} sensors`,
    );
  out.push(
    "",
    `batches of ${r.batch}: ${r.batches.total} in range, ${r.batches.before_this_run} committed before, ${r.batches.this_run} this run, ${r.batches.remaining} remaining`,
  );
  if (r.mode === "migrate")
    out.push(
      `this run: ${n(r.this_run.legacy_rows)} legacy rows, ${n(r.this_run.values_seen)} values, ${n(r.this_run.inserted)} new measurement rows in ${r.this_run.seconds.toFixed(1)} s` +
        (r.this_run.seconds > 0 ? ` (${n(Math.round(r.this_run.inserted / r.this_run.seconds))}/s)` : ""),
    );
  if (r.mode !== "dry-run")
    out.push(
      `all runs: ${n(r.totals.legacy_rows)} legacy rows, ${n(r.totals.values_seen)} values, ${n(r.totals.inserted)} rows inserted, ${n(r.totals.duplicates)} duplicate copies collapsed, ${n(r.totals.already_present)} already present`,
    );
  out.push(
    "",
    `sensors (${r.mode === "dry-run" ? "rows = distinct numeric timestamps" : "rows = inserted"}; value kinds; skipped = not a number):`,
  );
  for (const s of r.sensors) {
    const kinds = Object.entries(s.kinds)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([k, c]) => `${k} ${n(c)}`)
      .join(", ");
    out.push(
      `  ${String(s.sensor_id).padEnd(4)} ${(s.name ?? "?").padEnd(22)} rows ${n(s.rows).padStart(10)}  skipped ${n(s.skipped)}  conflicts ${n(s.conflicts)}  [${kinds}]`,
    );
  }
  if (r.conflicts.total) {
    out.push("", `conflicts (same sensor and time, different values; ${r.conflicts.rule}): ${n(r.conflicts.total)}`);
    for (const c of r.conflicts.samples.slice(0, 10))
      out.push(`  ${c.sensor} ${c.time}: kept ${c.kept}, also seen ${c.also_seen}`);
  }
  if (r.aggregates) out.push("", `aggregates: ${r.aggregates.method}, ${r.aggregates.from} .. ${r.aggregates.to}`);
  if (r.stopped_early)
    out.push("", `STOPPED after ${r.batches.this_run} batch(es); ${r.batches.remaining} remain. Run again to resume.`);
  if (r.undone)
    out.push(
      "",
      `undone: ${n(r.undone.measurement_rows)} migrated rows and ${n(r.undone.checkpoints)} checkpoints deleted` +
        (r.undone.from ? ` (${r.undone.from} .. ${r.undone.to}); aggregates recomputed over that range` : ""),
    );
  if (r.verification) {
    const v = r.verification;
    out.push(
      "",
      `verification: ${v.ok ? "OK" : "MISMATCH"}: ${n(v.sensor_days)} sensor-days of ${v.sensors} sensors, ${n(v.legacy_values)} legacy values vs ${n(v.measurement_rows)} measurement rows, ${v.mismatch_count} mismatching`,
    );
    for (const m of v.mismatches.slice(0, 20)) {
      out.push(`  ${m.sensor ?? m.sensor_id} ${m.day}: ${m.problems.join("; ")}`);
      for (const d of m.first_differences)
        out.push(
          `    ${d.time}: legacy ${d.legacy ?? "-"}, stored ${d.stored ?? "-"}${d.status && d.status !== "migrated" ? ` (status ${d.status})` : ""}`,
        );
    }
  }
  for (const w of r.warnings) out.push("", `warning: ${w}`);
  for (const p of r.problems) out.push("", p);
  return `${out.join("\n")}\n`;
}

/** Write <path> (JSON) and <path without .json>.txt (the summary); returns both paths. */
export async function writeReport(r: MigrationReport, path: string): Promise<{ json: string; text: string }> {
  const json = path.endsWith(".json") ? path : `${path}.json`;
  const text = `${json.slice(0, -5)}.txt`;
  await mkdir(dirname(json), { recursive: true });
  await writeFile(json, `${JSON.stringify(r, null, 2)}\n`);
  await writeFile(text, formatReport(r));
  return { json, text };
}
