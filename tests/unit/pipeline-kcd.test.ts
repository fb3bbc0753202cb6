import { writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { loadSite } from "../../db/site.js";
import { loadCanDb } from "../../pipeline/can/candb.js";
import { encodeSignal } from "../../pipeline/can/codec.js";
import { isoMicros } from "../../pipeline/can/frame.js";
import { simulatedSecond } from "../../pipeline/can/simulator.js";
import { buildDecodeTable } from "../../pipeline/can/table.js";
import { ConfigError } from "../../pipeline/runtime/errors.js";
import { projectPath } from "../../pipeline/runtime/paths.js";
import { decodeFrame, decodePacked, expectedRows, packFrames, unpackRows } from "../../stages/decode.js";
import { loadDecodeTable } from "../../stages/resolve-sensor.js";

const kcdFile = projectPath("ops/cea.kcd");
const siteFile = projectPath("ops/site.json");

const hex = (s: string) => Uint8Array.from(Buffer.from(s, "hex"));

describe("CAN database ops/cea.kcd", () => {
  it("has every message of the five nodes with the documented ids, and every site signal", async () => {
    const db = loadCanDb(kcdFile);
    const ids = Object.fromEntries(db.messages.map((m) => [m.name, m.id]));
    for (let n = 1; n <= 5; n++) {
      expect(ids[`Climate_N${n}`]).toBe(0x100 + n);
      expect(ids[`Air_N${n}`]).toBe(0x200 + n);
    }
    for (let n = 1; n <= 4; n++) expect(ids[`Substrate_N${n}`]).toBe(0x300 + n);
    expect(ids.Weather_N5).toBe(0x405);
    const { table, unmapped } = buildDecodeTable(db, await loadSite(siteFile), siteFile);
    expect(unmapped).toEqual([]);
    const mapped = Object.values(table.messages).reduce((n, m) => n + m.mapped, 0);
    expect(mapped).toBe(50);
  });

  it("decodes known bytes of every message kind into physical values", async () => {
    const { table } = await loadDecodeTable({ siteFile, canDbFile: kcdFile });
    const v = (id: number, data: string) =>
      Object.fromEntries(decodeFrame(table, id, hex(data)).values.map((x) => [x.signal.name, x.value]));
    // dry 23.45 (0x0929), wet -1.5 (0xFF6A), rh 61.3 (0x17F2), dew -40 (0xF060), little endian
    expect(v(0x101, "2909" + "6AFF" + "F217" + "60F0")).toEqual({
      dry_bulb: 23.45,
      wet_bulb: -1.5,
      rh: 61.3,
      dew_point: -40,
    });
    // co2 1234 (0x04D2), vpd 1.234 (0x04D2), par 850 (0x0352), leaf 21.07 (0x083B)
    expect(v(0x203, "D204" + "D204" + "5203" + "3B08")).toEqual({ co2: 1234, vpd: 1.234, par: 850, leaf_temp: 21.07 });
    // substrate temp 19.99 (0x07CF), moisture 100 (0x2710)
    expect(v(0x304, "CF07" + "1027")).toEqual({ substrate_temp: 19.99, substrate_moisture: 100 });
    // wind 12.34 (0x04D2), pressure 1013.2 (0x2794)
    expect(v(0x405, "D204" + "9427")).toEqual({ wind_speed: 12.34, pressure: 1013.2 });
    // extra bytes beyond the message length are ignored
    expect(v(0x405, "D2049427FFFF")).toEqual({ wind_speed: 12.34, pressure: 1013.2 });
  });

  it("applies calibration_offset: stored = decoded + offset", async () => {
    const site = await loadSite(siteFile);
    site.devices[0]!.sensors[0]!.calibration_offset = -0.25; // dry_bulb_b on Climate_N1
    const { table } = buildDecodeTable(loadCanDb(kcdFile), site, siteFile);
    const rows = expectedRows(table, { ts: "2024-06-01T00:00:00.000001Z", id: 0x101, data: "2909000000000000" });
    expect(rows.find((r) => r.sensor_id === 101)?.value).toBe(23.45 - 0.25);
    expect(rows.find((r) => r.sensor_id === 102)?.value).toBe(0);
    expect(rows.every((r) => r.time === "2024-06-01T00:00:00.000001Z")).toBe(true);
  });

  it("dead-letter reasons for frames that cannot be used", async () => {
    const { table } = await loadDecodeTable({ siteFile, canDbFile: kcdFile });
    const ts = "2024-06-01T00:00:00.000000Z";
    const packed = packFrames([
      { ts, id: 0x7ff, data: "00" },
      { ts, id: 0x101, data: "0102" },
      { ts, id: 0x101, data: "zz" },
      { ts: "yesterday", id: 0x101, data: "0000000000000000" },
      { ts, id: "abc", data: "0000000000000000" },
      { ts, id: 0x405, data: "D2049427" },
    ]);
    const out = decodePacked({ buf: packed.buf, n: 6, table });
    expect(out.dead.map(([i, r]) => [i, r.split(" ").slice(0, 2).join(" ")])).toEqual([
      [0, "unknown arbitration"],
      [1, "data length"],
      [2, "data is"],
      [3, "ts is"],
      [4, "id is"],
    ]);
    const rows = unpackRows(out.rowsBuf, out.rowCount);
    expect([...rows.sensor]).toEqual([509, 510]);
    expect([...rows.entry]).toEqual([5, 5]);
    expect(out.copyText).toBe(`${ts}\t509\t12.34\t\\N\n${ts}\t510\t1013.2\t\\N\n`);
  });

  it("simulator frames round-trip: encode then decode gives back every value to the signal resolution", async () => {
    const { table } = await loadDecodeTable({ siteFile, canDbFile: kcdFile });
    const site = await loadSite(siteFile);
    const opts = { table, site, startMs: Date.parse("2024-06-01T00:00:00Z"), speed: 1, iface: "sim0" };
    const seen = new Set<number>();
    for (const k of [0, 3600 * 6, 3600 * 14, 3600 * 22]) {
      const frames = simulatedSecond(opts, k);
      expect(frames.length).toBe(15);
      for (const f of frames) {
        expect(f.ts.slice(0, 19)).toBe(isoMicros((opts.startMs + k * 1000) * 1000).slice(0, 19));
        for (const { signal, value } of decodeFrame(table, f.id, f.data).values) {
          seen.add(signal.sensorId);
          expect(Number.isFinite(value)).toBe(true);
          // re-encoding the decoded value gives the same bytes
          const again = new Uint8Array(f.data.length);
          encodeSignal(again, signal, value - signal.calibration);
          const back = decodeFrame(table, f.id, again).values.find((x) => x.signal === signal);
          expect(back?.value).toBe(value);
        }
      }
      // plausible: night has no light, rh stays a percentage
      const vals = Object.fromEntries(
        frames.flatMap((f) => decodeFrame(table, f.id, f.data).values.map((x) => [x.signal.sensorName, x.value])),
      );
      if (k === 3600 * 22) expect(vals.par_b).toBe(0);
      if (k === 3600 * 14) expect(vals.par_b).toBeGreaterThan(100);
      expect(vals.rh_b).toBeGreaterThan(0);
      expect(vals.rh_b).toBeLessThanOrEqual(100);
    }
    expect(seen.size).toBe(50);
  });
});

describe("a bad CAN database or site file is refused naming the file and element", () => {
  const dir = tmpdir();
  it("malformed XML", () => {
    const f = join(dir, `bad-${process.pid}.kcd`);
    writeFileSync(f, "<nope>");
    expect(() => loadCanDb(f)).toThrow(ConfigError);
    expect(() => loadCanDb(f)).toThrow(f);
  });
  it("a signal that does not fit its message", () => {
    const f = join(dir, `bad2-${process.pid}.kcd`);
    writeFileSync(
      f,
      `<NetworkDefinition><Bus name="b"><Message id="0x10" name="M" length="2"><Signal name="s" offset="8" length="16"/></Message></Bus></NetworkDefinition>`,
    );
    // only that message is refused, naming file, line, message, signal and why
    const db = loadCanDb(f);
    expect(db.messages).toEqual([]);
    expect(db.refused.map((r) => r.text)).toEqual([
      `${f}:1: Bus "b": message "M" 0x010 (11-bit): signal "s": its bits reach bit 23 (byte 2) but the message has 2 bytes`,
    ]);
  });
  it("a site sensor whose signal is not in the KCD", async () => {
    const site = await loadSite(siteFile);
    site.devices[2]!.sensors[4]!.signal = "Air_N3.co3";
    expect(() => buildDecodeTable(loadCanDb(kcdFile), site, siteFile)).toThrow(
      /site.json: devices\.2\.sensors\.4\.signal: "Air_N3\.co3" is not a signal of/,
    );
  });
});

describe("decode output formats", () => {
  const PG_EPOCH_MS = Date.UTC(2000, 0, 1);

  it("binary COPY holds the same rows as the text, times as int64 µs since 2000, status NULL; buckets per sensor and hour", async () => {
    const { table } = await loadDecodeTable({ siteFile, canDbFile: kcdFile });
    const site = await loadSite(siteFile);
    const opts = { table, site, startMs: Date.parse("1999-12-31T23:59:58Z"), speed: 1, iface: "sim0" };
    const entries = [0, 1, 2, 3]
      .flatMap((k) => simulatedSecond(opts, k))
      .map((f) => ({ ts: f.ts, id: f.id, data: Buffer.from(f.data).toString("hex") }));
    const p1 = packFrames(entries);
    const text = decodePacked({ buf: p1.buf, n: p1.n, table });
    const p2 = packFrames(entries);
    const bin = decodePacked({ buf: p2.buf, n: p2.n, table, format: "binary" });
    expect(bin.rowCount).toBe(200);
    expect(bin.copyText).toBe("");
    expect(bin.buckets).toEqual(text.buckets);
    const v = new DataView(bin.rowsBuf, bin.binaryOffset, bin.binaryLength);
    expect(Buffer.from(bin.rowsBuf, bin.binaryOffset, 11).toString("latin1")).toBe("PGCOPY\n\xff\r\n\0");
    expect([v.getInt32(11), v.getInt32(15)]).toEqual([0, 0]);
    const lines: string[] = [];
    let o = 19;
    for (let r = 0; r < bin.rowCount; r++) {
      expect([v.getInt16(o), v.getInt32(o + 2), v.getInt32(o + 14), v.getInt32(o + 22), v.getInt32(o + 34)]).toEqual([
        4, 8, 4, 8, -1,
      ]);
      const us = v.getBigInt64(o + 6) + BigInt(PG_EPOCH_MS) * 1000n;
      lines.push(`${isoMicros(Number(us))}\t${v.getInt32(o + 18)}\t${v.getFloat64(o + 26)}\t\\N\n`);
      o += 38;
    }
    expect(v.getInt16(o)).toBe(-1);
    expect(o + 2).toBe(bin.binaryLength);
    expect(lines.join("")).toBe(text.copyText);
    // the frames span 1999-12-31 23:00 and 2000-01-01 00:00 (negative µs before PostgreSQL's epoch)
    const hours = new Set(bin.buckets.filter((_, i) => i % 2 === 1));
    expect([...hours].sort()).toEqual([Date.UTC(1999, 11, 31, 23) / 3_600_000, Date.UTC(2000, 0, 1) / 3_600_000]);
    expect(bin.buckets.length).toBe(2 * 50 * 2);
  });

  it("a ts naming no real instant is dead-lettered at decode, in both formats", async () => {
    const { table } = await loadDecodeTable({ siteFile, canDbFile: kcdFile });
    const bad = ["2024-02-30T00:00:00.000000Z", "2024-13-01T00:00:00.000000Z", "2024-06-01T24:00:00.000000Z"];
    for (const format of ["text", "binary"] as const) {
      const p = packFrames([
        ...bad.map((ts) => ({ ts, id: 0x405, data: "D2049427" })),
        { ts: "2024-02-29T23:59:59.999999Z", id: 0x405, data: "D2049427" },
      ]);
      const out = decodePacked({ buf: p.buf, n: p.n, table, format });
      expect(out.dead).toEqual(bad.map((_, i) => [i, "ts is not ISO 8601 UTC with microseconds"]));
      expect(out.rowCount).toBe(2);
    }
  });
});
