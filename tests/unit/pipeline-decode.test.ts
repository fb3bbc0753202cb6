import { describe, expect, it } from "vitest";
import { encodeBinaryCopy, hourBuckets } from "../../db/copy-binary.js";
import { ReadingColumns, statusCode } from "../../db/readings.js";
import { loadSite } from "../../db/site.js";
import { isoMicros, parseIsoMicros } from "../../pipeline/can/frame.js";
import { simulatedSecond } from "../../pipeline/can/simulator.js";
import { projectPath } from "../../pipeline/runtime/paths.js";
import type { Batch } from "../../pipeline/runtime/stage.js";
import { packEntries, packFrames } from "../../stages/decode/pack.js";
import { decodePacked, NO_MESSAGE, unpackSignals } from "../../stages/decode/signals.js";
import { expectedRows } from "../../stages/expected.js";
import { resolveReadings } from "../../stages/resolve-sensor.js";
import { loadDecodeTable } from "../../stages/sensor-map.js";

// decode (raw entries → decoded signals), resolve-sensor (signals → readings
// with calibration and status) and the writer's binary COPY encoding, each on
// its own, without Redis or PostgreSQL.

const files = { siteFile: projectPath("ops/site.json"), canDbFile: projectPath("ops/cea.kcd") };
const ts = "2024-06-01T00:00:00.000000Z";

function batchOf(entries: Record<string, string>[]): Batch {
  return {
    seq: 1,
    ids: entries.map((_, i) => `1-${i}`),
    fields: entries.map((e) => Object.entries(e).flat()),
    deliveries: null,
    dead: new Map(),
    skip: new Set(),
  };
}

describe("decode", () => {
  it("dead-letters each frame that cannot be used with its reason; unknown ids carry a cause for counting", async () => {
    const { table } = await loadDecodeTable(files);
    const packed = packFrames([
      { ts, id: 0x7ff, data: "00" },
      { ts, id: 0x101, data: "0102" },
      { ts, id: 0x101, data: "zz" },
      { ts: "yesterday", id: 0x101, data: "0000000000000000" },
      { ts, id: "abc", data: "0000000000000000" },
      { ts, id: 0x405, data: "D2049427" },
      {},
    ]);
    const out = decodePacked({ buf: packed.buf, n: 7, table });
    expect(out.dead).toEqual([
      [0, "unknown arbitration id 0x7ff", "unknown-id:0x7ff"],
      [1, "data length 2 < 8 bytes of Climate_N1", null],
      [2, "data is not hex of at most 8 bytes (64 with fd=1)", null],
      [3, "ts is not ISO 8601 UTC with microseconds", null],
      [4, "id is not a decimal 11-bit arbitration id (29-bit with ext=1)", null],
      [6, "entry lacks ts, id or data", null],
    ]);
    const sig = unpackSignals(out, table);
    // physical values, before any calibration; the signals of the one good frame
    expect(sig.count).toBe(2);
    expect([...sig.entry]).toEqual([5, 5]);
    expect([...sig.entryMessage]).toEqual([
      NO_MESSAGE,
      NO_MESSAGE,
      NO_MESSAGE,
      NO_MESSAGE,
      NO_MESSAGE,
      0x405,
      NO_MESSAGE,
    ]);
    expect([...sig.signal]).toEqual([0, 1]);
    expect([...sig.value]).toEqual([12.34, 1013.2]);
    expect(sig.timeUs[5]).toBe(parseIsoMicros(ts));
    expect(Number.isNaN(sig.timeUs[0]!)).toBe(true);
  });

  it("a ts naming no real instant is a dead letter", async () => {
    const { table } = await loadDecodeTable(files);
    const bad = ["2024-02-30T00:00:00.000000Z", "2024-13-01T00:00:00.000000Z", "2024-06-01T24:00:00.000000Z"];
    const p = packFrames([
      ...bad.map((t) => ({ ts: t, id: 0x405, data: "D2049427" })),
      { ts: "2024-02-29T23:59:59.999999Z", id: 0x405, data: "D2049427" },
    ]);
    const out = decodePacked({ buf: p.buf, n: p.n, table });
    expect(out.dead).toEqual(bad.map((_, i) => [i, "ts is not ISO 8601 UTC with microseconds", null]));
    expect(out.count).toBe(2);
  });

  it("a ts with a character outside ASCII is a dead letter, even one whose low byte is a digit", async () => {
    const { table } = await loadDecodeTable(files);
    // U+0130 and U+FF10: their low bytes are "0" and the text still has 27 UTF-16 units
    const bad = ["2024-02-29T23:59:5\u0130.999999Z", "2024-02-29T23:59:5\uff10.999999Z"];
    const p = packFrames(bad.map((t) => ({ ts: t, id: 0x405, data: "D2049427" })));
    const out = decodePacked({ buf: p.buf, n: p.n, table });
    expect(out.dead).toEqual(bad.map((_, i) => [i, "ts is not ISO 8601 UTC with microseconds", null]));
    expect(out.count).toBe(0);
  });

  it("does not decode an entry that already has a verdict (skipped packing marks it missing)", async () => {
    const { table } = await loadDecodeTable(files);
    const fields = [["ts", ts, "id", String(0x405), "data", "D2049427"]];
    const out = decodePacked({ ...packEntries(fields, () => true), table });
    expect(out.count).toBe(0);
  });
});

describe("resolve-sensor", () => {
  it("turns signals into readings: calibration, status from the entry's source, unmapped frames counted by cause", async () => {
    const { table } = await loadDecodeTable(files);
    const entries: Record<string, string>[] = [
      { ts, id: String(0x405), data: "D2049427" },
      { ts, id: String(0x405), data: "D2049427", src: "simulator" },
      { ts, id: String(0x405), data: "D2049427", src: "replay" },
      { ts, id: String(0x405), data: "D2049427", src: "socketcan" },
      { ts, id: String(0x405), data: "D2049427", src: "candump" },
    ];
    const batch = batchOf(entries);
    const packed = packEntries(batch.fields, () => false);
    const out = decodePacked({ ...packed, table });
    const { rows } = resolveReadings(batch, unpackSignals(out, table));
    expect(rows.count).toBe(8);
    expect([...rows.sensor.subarray(0, 8)]).toEqual([509, 510, 509, 510, 509, 510, 509, 510]);
    expect([...rows.status.subarray(0, 8)]).toEqual([
      statusCode(null),
      statusCode(null),
      statusCode("simulated"),
      statusCode("simulated"),
      statusCode("replayed"),
      statusCode("replayed"),
      statusCode(null),
      statusCode(null),
    ]);
    expect(batch.dead.get(4)?.reason).toBe('src "candump" is not socketcan, simulator or replay');
    expect(expectedRows(table, { ts, id: 0x405, data: "D2049427", src: "replay" })).toEqual([
      { sensor_id: 509, time: ts, value: 12.34, status: "replayed" },
      { sensor_id: 510, time: ts, value: 1013.2, status: "replayed" },
    ]);
  });

  it("a message no sensor maps is a dead letter with a cause per message", async () => {
    const { table } = await loadDecodeTable(files);
    const m = table.messages[0x405]!;
    const unmapped = { ...table, messages: { ...table.messages, 1029: { ...m, mapped: 0 } } };
    const batch = batchOf([{ ts, id: String(0x405), data: "D2049427" }]);
    const out = decodePacked({ ...packEntries(batch.fields, () => false), table: unmapped });
    const { rows } = resolveReadings(batch, unpackSignals(out, unmapped));
    expect(rows.count).toBe(0);
    expect(batch.dead.get(0)).toEqual({
      reason: "no sensor for any signal of Weather_N5",
      cause: "unmapped:Weather_N5",
    });
  });

  it("names a stored key to probe for each entry past its delivery limit, without decoding it", async () => {
    const { table } = await loadDecodeTable(files);
    const batch = batchOf([
      { ts, id: String(0x405), data: "D2049427" },
      { ts: "not a time", id: String(0x405), data: "D2049427" },
    ]);
    batch.dead.set(0, { reason: "limit", overLimit: true });
    batch.dead.set(1, { reason: "limit", overLimit: true });
    const out = decodePacked({ ...packEntries(batch.fields, (i) => batch.dead.has(i)), table });
    const r = resolveReadings(batch, unpackSignals(out, table));
    expect(r.rows.count).toBe(0);
    expect(r.probes).toEqual([{ entry: 0, sensor: 509, timeUs: parseIsoMicros(ts) }]);
  });
});

describe("binary COPY encoding (the writer's)", () => {
  const PG_EPOCH_US = BigInt(Date.UTC(2000, 0, 1)) * 1000n;

  it("holds every row: times as int64 µs since 2000 (also before it), values exact, status NULL or text", async () => {
    const { table } = await loadDecodeTable(files);
    const site = await loadSite(files.siteFile);
    const opts = { table, site, startMs: Date.parse("1999-12-31T23:59:58Z"), speed: 1, iface: "sim0" };
    const frames = [0, 1, 2, 3].flatMap((k) => simulatedSecond(opts, k));
    const cols = new ReadingColumns(4);
    frames.forEach((f, i) => {
      for (const r of expectedRows(table, { ts: f.ts, id: f.id, data: Buffer.from(f.data).toString("hex") }))
        cols.push(i, r.sensor_id, parseIsoMicros(r.time), r.value, i % 3 === 0 ? statusCode("simulated") : 0);
    });
    // per simulated second: the 50 mapped signals of the sensor frames (the actuator nodes' status frames
    // are the nodes' to send, not simulated seconds), and 3 derived sensors in each of the 3 rooms with derived ones
    expect(cols.count).toBe(4 * (50 + 3 * 3));
    const bin = encodeBinaryCopy(cols);
    const v = new DataView(bin.buffer, bin.byteOffset, bin.byteLength);
    expect(Buffer.from(bin.subarray(0, 11)).toString("latin1")).toBe("PGCOPY\n\xff\r\n\0");
    expect([v.getInt32(11), v.getInt32(15)]).toEqual([0, 0]);
    let o = 19;
    for (let r = 0; r < cols.count; r++) {
      expect([v.getInt16(o), v.getInt32(o + 2), v.getInt32(o + 14), v.getInt32(o + 22)]).toEqual([4, 8, 4, 8]);
      const us = v.getBigInt64(o + 6) + PG_EPOCH_US;
      expect(isoMicros(Number(us))).toBe(isoMicros(cols.timeUs[r]!));
      expect(v.getInt32(o + 18)).toBe(cols.sensor[r]);
      expect(v.getFloat64(o + 26)).toBe(cols.value[r]);
      const len = v.getInt32(o + 34);
      if (cols.status[r] === 0) {
        expect(len).toBe(-1);
        o += 38;
      } else {
        expect(Buffer.from(bin.subarray(o + 38, o + 38 + len)).toString("utf8")).toBe("simulated");
        o += 38 + len;
      }
    }
    expect(v.getInt16(o)).toBe(-1);
    expect(o + 2).toBe(bin.length);
    // a subset of rows, in the order given
    const some = encodeBinaryCopy(cols, [1, 0]);
    expect(new DataView(some.buffer).getInt32(19 + 18)).toBe(cols.sensor[1]);
    // buckets: the frames span 1999-12-31 23:00 and 2000-01-01 00:00
    const b = hourBuckets(cols);
    expect([...new Set(b.hours)].sort()).toEqual([
      Date.UTC(1999, 11, 31, 23) / 3_600_000,
      Date.UTC(2000, 0, 1) / 3_600_000,
    ]);
    expect(b.sensors.length).toBe((50 + 3 * 3) * 2);
  });
});
