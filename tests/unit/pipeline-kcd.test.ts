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
import { decodeFrame } from "../../stages/decode.js";
import { expectedRows } from "../../stages/expected.js";
import { loadDecodeTable } from "../../stages/sensor-map.js";

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
    // only the command messages and the status frames' seq and safe carry no sensor
    expect(unmapped.filter((u) => !/^(Cmd|Status)_N[134]\./.test(u))).toEqual([]);
    for (const n of [1, 3, 4]) {
      expect(ids[`Cmd_N${n}`]).toBe(0x500 + n);
      expect(ids[`Status_N${n}`]).toBe(0x600 + n);
    }
    const mapped = Object.values(table.messages).reduce((n, m) => n + m.mapped, 0);
    expect(mapped).toBe(65);
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

  it("counts as unmapped only signals that could be readings: command signals and status seq/safe are protocol", async () => {
    const { unmapped, protocol } = await loadDecodeTable({ siteFile, canDbFile: kcdFile });
    for (const n of ["N1", "N3", "N4"]) {
      expect(protocol).toEqual(expect.arrayContaining([`Cmd_${n}.seq`, `Status_${n}.seq`, `Status_${n}.safe`]));
      expect(unmapped.filter((u) => u.startsWith(`Cmd_${n}.`) || u.startsWith(`Status_${n}.`))).toEqual([]);
    }
    expect(protocol).toContain("Cmd_N1.heater");
    // the applied outputs are readings (state sensors), neither unmapped nor protocol
    expect(protocol).not.toContain("Status_N1.heater");
    expect(unmapped).not.toContain("Status_N1.heater");
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

  it("simulator frames round-trip: encode then decode gives back every value to the signal resolution", async () => {
    const { table } = await loadDecodeTable({ siteFile, canDbFile: kcdFile });
    const site = await loadSite(siteFile);
    // with the CAN database the actuator nodes' Status frames are the nodes' (Simulation), not sensor curves
    const candb = loadCanDb(kcdFile);
    const opts = { table, site, candb, startMs: Date.parse("2024-06-01T00:00:00Z"), speed: 1, iface: "sim0" };
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
