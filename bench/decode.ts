import { encodeBinaryCopy } from "../db/copy-binary.js";
import { loadSite } from "../db/site.js";
import type { CanFrame } from "../pipeline/can/frame.js";
import { simulatedSecond } from "../pipeline/can/simulator.js";
import { projectPath } from "../pipeline/runtime/paths.js";
import type { Batch } from "../pipeline/runtime/stage.js";
import { packEntries } from "../stages/decode/pack.js";
import { decodePacked, unpackSignals } from "../stages/decode/signals.js";
import { loadDecodeTable, resolveReadings } from "../stages/resolve-sensor.js";
import type { Bench, BenchRow } from "./lib.js";

// The decode microbench: the worker's decode of a read batch (pack the stream
// fields into one buffer, find each frame's message by id and extended flag,
// decode its mapped signals), resolve-sensor (readings) and the writer's
// binary COPY encoding, on one thread, no
// database and no Redis. Cases, each on simulated frames of its own database:
//   - the facility's KCD (ops/cea.kcd: 16-bit little-endian integers) — the baseline;
//   - a vendor DBC (tests/fixtures/greenhouse.dbc: IEEE single and double,
//     multiplexed and extended-multiplexed messages, big-endian signals, 29-bit
//     ids and a 64-byte CAN FD message with 64-bit signals).
// Rates are the best of several rounds (the machine is shared).

const BATCH = 5_000;
const ROUNDS = 5;

interface Frames {
  entries: { ts: string; id: number; data: string; ext?: string; fd?: string }[];
  table: Awaited<ReturnType<typeof loadDecodeTable>>["table"];
}

async function frames(canDbFile: string, siteFile: string, count: number): Promise<Frames> {
  const { table } = await loadDecodeTable({ siteFile, canDbFile });
  const site = await loadSite(siteFile);
  const opts = { table, site, startMs: Date.parse("2026-01-01T00:00:00Z"), speed: 1, iface: "sim0" };
  const entries: Frames["entries"] = [];
  for (let k = 0; entries.length < count; k++)
    for (const f of simulatedSecond(opts, k) as (CanFrame & { ext?: boolean; fd?: boolean })[])
      entries.push({
        ts: f.ts,
        id: f.id,
        data: Buffer.from(f.data).toString("hex"),
        ...(f.ext ? { ext: "1" } : {}),
        ...(f.fd ? { fd: "1" } : {}),
      });
  return { entries: entries.slice(0, count), table };
}

/** Frames/s and measurements/s of pack + decode + resolve + binary COPY encoding, best of ROUNDS. */
function measure(f: Frames): { frames: number; rows: number } {
  let best = Number.POSITIVE_INFINITY;
  let rows = 0;
  for (let r = 0; r < ROUNDS; r++) {
    rows = 0;
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < f.entries.length; i += BATCH) {
      const fields = f.entries.slice(i, i + BATCH).map((e) => {
        const l = ["ts", e.ts, "id", String(e.id), "data", e.data];
        if (e.ext) l.push("ext", e.ext);
        if (e.fd) l.push("fd", e.fd);
        return l;
      });
      const batch: Batch = {
        seq: 0,
        ids: fields.map(() => "0-1"),
        fields,
        deliveries: null,
        dead: new Map(),
        skip: new Set(),
      };
      const out = decodePacked({ ...packEntries(fields, () => false), table: f.table });
      const readings = resolveReadings(batch, unpackSignals(out, f.table)).rows;
      if (out.dead.length || batch.dead.size) throw new Error("simulated frames dead-lettered");
      encodeBinaryCopy(readings);
      rows += readings.count;
    }
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e9);
  }
  return { frames: f.entries.length / best, rows: rows / best };
}

const bench: Bench = async (ctx) => {
  const count = Math.max(20_000, Math.round(400_000 * ctx.scale));
  const rows: BenchRow[] = [];
  ctx.log(`${count} frames per case`);
  const kcd = await frames(projectPath("ops/cea.kcd"), projectPath("ops/site.json"), count);
  const base = measure(kcd);
  rows.push(
    { case: "decode, facility KCD (16-bit integers)", value: base.frames, unit: "frames/s" },
    { case: "decode, facility KCD, measurements", value: base.rows, unit: "measurements/s" },
  );
  let dbc: Frames | null = null;
  try {
    dbc = await frames(
      projectPath("tests/fixtures/greenhouse.dbc"),
      projectPath("tests/fixtures/greenhouse-site.json"),
      count,
    );
  } catch (err) {
    // a build that cannot load DBC files (before DBC support) still gives the baseline
    rows.push({
      case: "decode, vendor DBC",
      value: Number.NaN,
      unit: "frames/s",
      note: `cannot load: ${(err as Error).message.split("\n")[0]}`,
    });
  }
  if (dbc) {
    const d = measure(dbc);
    rows.push(
      {
        case: "decode, vendor DBC (floats, mux, 29-bit, FD)",
        value: d.frames,
        unit: "frames/s",
        baseline: "decode, facility KCD (16-bit integers)",
        ratio: d.frames / base.frames,
      },
      {
        case: "decode, vendor DBC, measurements",
        value: d.rows,
        unit: "measurements/s",
        baseline: "decode, facility KCD, measurements",
        ratio: d.rows / base.rows,
        note: "per measurement: the DBC's frames carry fewer mapped signals each (1–6) than the KCD's (2–4)",
      },
    );
  }
  return { rows, params: { frames: count, batch: BATCH, rounds: ROUNDS } };
};

export default bench;
