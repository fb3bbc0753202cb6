import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { encodeBinaryCopy } from "../../db/copy-binary.js";
import { READING_STATUS } from "../../db/readings.js";
import { parseSite, type Site } from "../../db/site.js";
import { loadCanDb } from "../../pipeline/can/candb.js";
import { compileSignal, EncodeError, encodeMessage, physicalValue } from "../../pipeline/can/codec.js";
import { type CanDb, messageKey, type SignalDef } from "../../pipeline/can/model.js";
import { simulatedSecond } from "../../pipeline/can/simulator.js";
import {
  buildDecodeTable,
  type DecodeTable,
  decodedSignals,
  decodeMessage,
  labelOf,
} from "../../pipeline/can/table.js";
import { ConfigError } from "../../pipeline/runtime/errors.js";
import { projectPath } from "../../pipeline/runtime/paths.js";
import type { Batch } from "../../pipeline/runtime/stage.js";
import { packEntries, packFrames } from "../../stages/decode/pack.js";
import { decodePacked, unpackSignals } from "../../stages/decode/signals.js";
import { decodeFrame } from "../../stages/decode.js";
import { loadDecodeTable, resolveReadings } from "../../stages/resolve-sensor.js";

// The CAN database loaders (KCD, DBC) and the codec against files in the
// shapes vendors ship (tests/fixtures/greenhouse.{dbc,kcd}: same content in
// both formats) and the socketcan package's own sample KCD. Every frame here
// is written out by hand, byte by byte, with the value it must decode to.

const dbcFile = projectPath("tests/fixtures/greenhouse.dbc");
const kcdFile = projectPath("tests/fixtures/greenhouse.kcd");
const siteFile = projectPath("tests/fixtures/greenhouse-site.json");
const sampleKcd = projectPath("node_modules/socketcan/samples/can_definition_sample.kcd");

const hex = (s: string) => Uint8Array.from(Buffer.from(s.replace(/\s/g, ""), "hex"));

/** A minimal valid site file whose sensors (ids from 1) map the given signals. */
function siteFor(signals: string[]): Site {
  return parseSite(
    JSON.stringify({
      facility: { id: 1, name: "F", timezone: "UTC" },
      rooms: [{ id: 1, name: "R", racks: [] }],
      devices: [
        {
          id: 1,
          name: "d",
          type: "t",
          node_id: 1,
          room_id: 1,
          sensors: signals.map((signal, i) => ({ id: i + 1, name: `s${i + 1}`, unit: "", channel: i, signal })),
        },
      ],
    }),
    "inline-site.json",
  );
}

function tableOf(db: CanDb, site: Site): DecodeTable {
  return buildDecodeTable(db, site, "site.json").table;
}

/** Decoded values by sensor name, with their out_of_range flag. */
function decode(table: DecodeTable, id: number, data: string, ext = false) {
  const out: Record<string, { v: number; oor: boolean }> = {};
  for (const x of decodeFrame(table, id, hex(data), ext).values)
    out[x.signal.sensorName] = { v: x.value, oor: x.outOfRange };
  return out;
}
const values = (d: Record<string, { v: number; oor: boolean }>) =>
  Object.fromEntries(Object.entries(d).map(([k, x]) => [k, x.v]));

describe.each([
  ["DBC", dbcFile],
  ["KCD", kcdFile],
])("vendor-shaped %s file", (_format, file) => {
  const db = loadCanDb(file);
  const site = parseSite(readFileSync(siteFile, "utf8"), siteFile);
  const table = tableOf(db, site);

  it("loads every message but the one that cannot be decoded exactly, which is refused naming file, message, signal and why", () => {
    expect(db.refused).toHaveLength(1);
    const r = db.refused[0]!;
    expect(r).toMatchObject({ message: "HalfFloat_Bad", id: 0x702, extended: false, signal: "Temp16" });
    expect(r.text).toContain(file);
    expect(r.text).toContain('message "HalfFloat_Bad"');
    expect(r.text).toContain('signal "Temp16"');
    expect(r.reason).toContain("an IEEE single needs 32 bits, not 16");
    const byName = Object.fromEntries(db.messages.map((m) => [m.name, m]));
    expect(byName.Status_Std).toMatchObject({ id: 0xa0, extended: false, fd: false, length: 2 });
    expect(byName.Status_Ext).toMatchObject({ id: 0xa0, extended: true, fd: false, length: 2 });
    expect(byName.Spectrum_FD).toMatchObject({
      id: 0x18ff5003,
      extended: true,
      fd: true,
      length: 64,
      cycleTimeMs: 2000,
    });
    expect(byName.ClimateFloat_N1?.cycleTimeMs).toBe(1000);
    expect(byName.CO2_Motorola?.cycleTimeMs).toBeUndefined();
    // units as the file spells them (the DBC is Windows-1252, the KCD UTF-8)
    expect(byName.ClimateFloat_N1?.signals[0]).toMatchObject({ name: "AirTemp", unit: "°C", valueType: "float32" });
    // value tables are kept, so a status value can be named
    const state = byName.Substrate_Mux?.signals.find((s) => s.name === "SensorState");
    expect(labelOf(state?.labels, 255)).toBe("No sensor");
    expect(labelOf(state?.labels, 2)).toBe("Warming up");
    expect(labelOf(state?.labels, 7)).toBeUndefined();
  });

  it("IEEE single: 21.5 °C and 55.25 % in a 29-bit frame", () => {
    expect(values(decode(table, 0x18ff1001, "0000AC41 00005D42", true))).toEqual({ air_temp_gh: 21.5, rh_gh: 55.25 });
    // the same id as an 11-bit frame is another (unknown) message
    expect(() => decode(table, 0x18ff1001 & 0x7ff, "0000AC4100005D42")).toThrow(/unknown arbitration id/);
  });

  it("0x0A0 (11-bit) and 0x000000A0 (29-bit) are different messages with different sensors", () => {
    expect(values(decode(table, 0xa0, "0205"))).toEqual({ node_state_a: 2 });
    expect(values(decode(table, 0xa0, "0307", true))).toEqual({ node_state_b: 3 });
  });

  it("multiplexed: each multiplexer value selects its signals; the signal outside the mux is always there", () => {
    // channel 0: moisture 45.67 % (0x11D7), substrate -3.5 °C (0xFEA2), state OK
    expect(values(decode(table, 0x620, "00 D711 A2FE 0000 00"))).toEqual({
      moisture_gh: 45.67,
      substrate_temp_gh: -3.5,
      substrate_state_gh: 0,
    });
    // channel 1: EC 1.234 mS/cm (0x04D2), pH 6.5 (0x028A), state 2 (warming up)
    expect(values(decode(table, 0x620, "01 D204 8A02 0000 02"))).toEqual({
      ec_gh: 1.234,
      ph_gh: 6.5,
      substrate_state_gh: 2,
    });
    // channel 2: drain 250 ml as int32
    expect(values(decode(table, 0x620, "02 FA000000 0000 00"))).toEqual({ drain_gh: 250, substrate_state_gh: 0 });
    // channel 3: no group; only the unmultiplexed signal
    expect(values(decode(table, 0x620, "03 FFFF FFFF 0000 01"))).toEqual({ substrate_state_gh: 1 });
  });

  it("big-endian (Motorola) signals, signed, 12 and 4 bits across byte boundaries", () => {
    // CO2 812 (0x032C), leaf -12.34 °C (0xFB2E), pressure raw 0x403 → 1013.5 hPa, dimmer raw 7 → 70 %
    expect(values(decode(table, 0x501, "032C FB2E 40 37 0000"))).toEqual({
      co2_gh: 812,
      leaf_temp_gh: -12.34,
      pressure_gh: 1013.5,
      dimmer_gh: 70,
    });
  });

  it("IEEE double, big endian: 1234.5678 l", () => {
    expect(values(decode(table, 0x18ff2002, "40934A456D5CFAAD", true))).toEqual({ flow_total_gh: 1234.5678 });
  });

  it("CAN FD, 64 bytes: 64-bit and 40-bit integers, single and double, signals past byte 8", () => {
    const data = `0500000000010000 00A05444 D204 FFFF ${"00".repeat(34)} 0504030201 00 0000000000403140`;
    expect(hex(data)).toHaveLength(64);
    const d = decode(table, 0x18ff5003, data, true);
    expect(values(d)).toEqual({
      uptime_spectrum: 2 ** 40 + 5,
      ppfd_gh: 850.5,
      band450_gh: 123.4,
      band660_gh: 6553.5,
      counter40_gh: 0x0102030405,
      dli_gh: 17.25,
    });
    // 6553.5 is the range's maximum itself: in range
    expect(Object.values(d).some((x) => x.oor)).toBe(false);
  });

  it("a value outside the physical range (a sensor's 0x7FFF / 0xFFFF sentinel) is flagged out_of_range, the rest not", () => {
    const d = decode(table, 0x501, "032C 7FFF 40 37 0000");
    expect(d.leaf_temp_gh).toEqual({ v: 327.67, oor: true });
    expect(d.co2_gh).toEqual({ v: 812, oor: false });
    expect(decode(table, 0x620, "00 FFFF A2FE 0000 FF").moisture_gh).toEqual({ v: 655.35, oor: true });
    // a single's NaN is no number at all: the frame is a dead letter, not a reading
    expect(() => decode(table, 0x18ff1001, "0000C07F00005D42", true)).toThrow(
      /ClimateFloat_N1\.AirTemp is not a finite number/,
    );
  });

  it("frames of the refused message are dead letters naming the reason", () => {
    expect(() => decode(table, 0x702, "0000000000000000")).toThrow(
      /message refused by the CAN database: .*Temp16.*32 bits/,
    );
  });
});

describe("the simulator speaks whichever CAN database is configured", () => {
  it.each([
    ["DBC", dbcFile],
    ["KCD", kcdFile],
  ])(
    "%s: every sensor reports each simulated second, in range, with the message's id kind and FD flag",
    async (_f, file) => {
      const { table } = await loadDecodeTable({ siteFile, canDbFile: file });
      const site = parseSite(readFileSync(siteFile, "utf8"), siteFile);
      const opts = { table, site, startMs: Date.parse("2024-06-01T12:00:00Z"), speed: 1, iface: "sim0" };
      for (const k of [0, 1, 3600]) {
        const frames = simulatedSecond(opts, k);
        const seen = new Set<string>();
        for (const f of frames) {
          const m = Object.values(table.messages).find((x) => x.id === f.id && x.extended === (f.ext ?? false));
          expect(m, `frame ${f.id.toString(16)}`).toBeDefined();
          expect(f.fd ?? false).toBe(m?.fd);
          expect(f.data).toHaveLength(m?.length ?? -1);
          for (const v of decodeFrame(table, f.id, f.data, f.ext ?? false).values) {
            expect(v.outOfRange, v.signal.sensorName).toBe(false);
            seen.add(v.signal.sensorName);
          }
        }
        expect([...seen].sort()).toEqual(site.devices.flatMap((d) => d.sensors.map((s) => s.name)).sort());
        // one frame per multiplexer value the sensors need: channels 0, 1 and 2 of the substrate probe
        expect(frames.filter((f) => f.id === 0x620).map((f) => f.data[0])).toEqual([0, 1, 2]);
      }
    },
  );
});

describe("raw stream entries: ext and fd fields, out_of_range in both COPY formats", () => {
  const site = parseSite(readFileSync(siteFile, "utf8"), siteFile);
  const table = tableOf(loadCanDb(dbcFile), site);
  const ts = "2024-06-01T00:00:00.000000Z";

  it("ext=1 is a 29-bit id; no ext (an older scanner) above 0x7FF can only be 29-bit; ext=0 above 0x7FF, other ext values and a classic frame over 8 bytes are dead letters", () => {
    const p = packFrames([
      { ts, id: 0xa0, data: "0205" },
      { ts, id: 0xa0, data: "0307", ext: "1" },
      { ts, id: 0x18ff1001, data: "0000AC4100005D42" },
      { ts, id: 0x18ff1001, data: "0000AC4100005D42", ext: "0" },
      { ts, id: 0xa0, data: "0307", ext: "yes" },
      { ts, id: 0x18ff5003, data: "00".repeat(64), ext: "1" },
      { ts, id: 0x18ff5003, data: "00".repeat(64), ext: "1", fd: "1" },
    ]);
    const out = decodePacked({ buf: p.buf, n: p.n, table });
    expect(out.dead).toEqual([
      [3, "id is not a decimal 11-bit arbitration id (29-bit with ext=1)", null],
      [4, "id is not a decimal 11-bit arbitration id (29-bit with ext=1)", null],
      [5, "data is not hex of at most 8 bytes (64 with fd=1)", null],
    ]);
    const rows = unpackSignals(out, table);
    const byEntry = (e: number) => [...rows.entry].flatMap((x, r) => (x === e ? [rows.value[r]] : []));
    expect(byEntry(0)).toEqual([2]); // node_state_a
    expect(byEntry(1)).toEqual([3]); // node_state_b
    expect(byEntry(2)).toEqual([21.5, 55.25]);
    expect(byEntry(6)).toHaveLength(6);
  });

  it("a value out of range becomes a reading with status out_of_range, written so by the binary COPY", () => {
    const entries = [
      ["ts", ts, "id", String(0x501), "data", "032C7FFF40370000"],
      ["ts", "2024-06-01T00:00:01.000000Z", "id", String(0x501), "data", "032CFB2E40370000"],
    ];
    const batch: Batch = {
      seq: 1,
      ids: ["1-1", "1-2"],
      fields: entries,
      deliveries: null,
      dead: new Map(),
      skip: new Set(),
    };
    const out = decodePacked({ ...packEntries(entries, () => false), table });
    const { rows } = resolveReadings(batch, unpackSignals(out, table));
    const lines = Array.from(
      { length: rows.count },
      (_, r) => `${rows.sensor[r]}\t${rows.value[r]}\t${READING_STATUS[rows.status[r]!] ?? "\\N"}`,
    );
    expect(lines.filter((l) => l.endsWith("out_of_range"))).toEqual(["1005\t327.67\tout_of_range"]);
    const bin = encodeBinaryCopy(rows);
    const v = new DataView(bin.buffer, bin.byteOffset, bin.byteLength);
    const fromCopy: string[] = [];
    let o = 19;
    for (let r = 0; r < rows.count; r++) {
      const len = v.getInt32(o + 34);
      const status = len < 0 ? "\\N" : Buffer.from(bin.subarray(o + 38, o + 38 + len)).toString("latin1");
      fromCopy.push(`${v.getInt32(o + 18)}\t${v.getFloat64(o + 26)}\t${status}`);
      o += 38 + Math.max(0, len);
    }
    expect(v.getInt16(o)).toBe(-1);
    expect(fromCopy).toEqual(lines);
  });
});

describe("DBC specifics", () => {
  it("extended multiplexing (SG_MUL_VAL_): a multiplexer selected by another, value ranges", () => {
    const db = loadCanDb(dbcFile);
    const table = tableOf(db, siteFor(["Lab_ExtMux.LightLevel", "Lab_ExtMux.O2", "Lab_ExtMux.Ethylene"]));
    const id = 0x18ff3004;
    expect(values(decode(table, id, "00 E803 0000000000", true))).toEqual({ s1: 1000 });
    // Page 1, Sub 2: O2 20.95 % (0x082F)
    expect(values(decode(table, id, "21 2F08 0000000000", true))).toEqual({ s2: 20.95 });
    // Page 1, Sub 3 (range 2-3) and Sub 8 (range 7-9)
    expect(values(decode(table, id, "31 2F08 0000000000", true))).toEqual({ s2: 20.95 });
    expect(values(decode(table, id, "81 7B00 0000000000", true))).toEqual({ s3: 12.3 });
    // Page 1, Sub 4: nothing mapped is present; Page 2, Sub 2: Sub itself is absent, so O2 too
    expect(values(decode(table, id, "41 7B00 0000000000", true))).toEqual({});
    expect(values(decode(table, id, "22 2F08 0000000000", true))).toEqual({});
  });

  it("the per-frame decode reports each value with its signal's index in the table message and its range flag", () => {
    const db = loadCanDb(dbcFile);
    const table = tableOf(db, siteFor(["Lab_ExtMux.O2", "Lab_ExtMux.LightLevel"]));
    const m = table.messages[messageKey(0x18ff3004, true)]!;
    // multiplexers first (Page, then Sub), then the mapped signals
    expect(m.signals.map((s) => [s.name, s.sensorId, s.mux])).toEqual([
      ["Page", 0, -1],
      ["Sub", 0, 0],
      ["LightLevel", 2, 0],
      ["O2", 1, 1],
    ]);
    const out = decodedSignals(table);
    expect(decodeMessage(m, hex("21 FFFF 0000000000"), 0, out)).toBeNull();
    expect(out.count).toBe(1);
    expect([out.index[0], out.value[0], out.outOfRange[0]]).toEqual([3, 655.35, 1]);
  });

  it("reads CRLF, Windows-1252, the standard NS_ block, // comments; a bad signal line refuses only its message", () => {
    const dir = mkdtempSync(join(tmpdir(), "dbc-"));
    const f = join(dir, "small.dbc");
    const text = [
      'VERSION ""',
      "NS_ :",
      "\tNS_DESC_",
      "\tCM_",
      "\tFILTER",
      "\tSIG_VALTYPE_",
      "BS_:",
      "BU_: A B",
      "BO_ 256 Good: 8 A",
      ' SG_ T : 0|16@1- (0.1,0) [-40|85] "\xb0C" B',
      "BO_ 257 Broken: 8 A",
      ' SG_ X : 0|16@2+ (1,0) [0|0] "" B',
      ' SG_ Y : 16|8@1+ (1,0) [0|0] "" B',
      "BO_ 258 BadType: 8 A",
      ' SG_ Z : 0|32@1+ (1,0) [0|0] "" B',
      "BO_ 259 Overlap: 8 A",
      ' SG_ Word : 0|16@1+ (1,0) [0|1E+481] "" B',
      ' SG_ Low : 0|8@1+ (1,0) [0|0] "" B',
      ' SG_ Low : 8|8@1+ (1,0) [0|0] "" B',
      "BO_ 3221225472 VECTOR__INDEPENDENT_SIG_MSG: 0 Vector__XXX",
      ' SG_ Orphan : 0|8@1+ (1,0) [0|0] "" Vector__XXX',
      'CM_ SG_ 256 T "temperature; tenths"; // a line comment, as some tools write',
      "SIG_VALTYPE_ 258 Z : 3;",
      "",
    ].join("\r\n");
    writeFileSync(f, Buffer.from(text, "latin1"));
    const db = loadCanDb(f);
    expect(db.messages.map((m) => m.name)).toEqual(["Good", "Overlap"]);
    expect(db.messages[0]?.signals[0]).toMatchObject({ name: "T", unit: "°C", valueType: "signed", min: -40, max: 85 });
    expect(db.refused.map((r) => r.text)).toEqual([
      `${f}:11: message "Broken" 0x101 (11-bit): signal "X": line 12: byte order "2" is not 0 or 1`,
      `${f}:14: message "BadType" 0x102 (11-bit): signal "Z": line 23: SIG_VALTYPE_ 3 is not 0, 1 (single) or 2 (double)`,
    ]);
    // overlapping signals and a name used twice decode as written: warnings, not refusals
    expect(db.warnings).toEqual([
      `${f}:16: message "Overlap" 0x103 (11-bit): signal "Low": two signals of this message have this name`,
      `${f}:16: message "Overlap" 0x103 (11-bit): signal "Low": its bits overlap those of "Word", which the same frame carries`,
      `${f}:16: message "Overlap" 0x103 (11-bit): signal "Low": its bits overlap those of "Word", which the same frame carries`,
    ]);
    // a bound no double holds is no bound
    expect(db.messages[1]?.signals[0]).toMatchObject({ name: "Word", min: 0 });
    expect(db.messages[1]?.signals[0]?.max).toBeUndefined();
    const table = tableOf(db, siteFor(["Good.T", "Overlap.Word"]));
    expect(values(decode(table, 256, "1701000000000000"))).toEqual({ s1: 27.9 });
    expect(values(decode(table, 259, "3412000000000000"))).toEqual({ s2: 0x1234 });
    // but the site file cannot map a name two signals have
    expect(() => tableOf(db, siteFor(["Overlap.Low"]))).toThrow(/"Overlap\.Low" names more than one signal/);
  });

  it("a file that is not a CAN database at all stops start-up naming the file and line", () => {
    const dir = mkdtempSync(join(tmpdir(), "dbc-"));
    const f = join(dir, "junk.dbc");
    writeFileSync(f, 'VERSION ""\nhello world\n');
    expect(() => loadCanDb(f)).toThrow(ConfigError);
    expect(() => loadCanDb(f)).toThrow(`${f}:2: not a DBC statement: "hello"`);
    expect(() => loadCanDb(join(dir, "x.sym"))).toThrow(/must be a \.kcd or \.dbc file/);
  });
});

describe("the socketcan package's own sample KCD, as installed", () => {
  const db = loadCanDb(sampleKcd);

  it("loads; the one message whose id another bus already uses is refused with both places named", () => {
    expect(db.messages).toHaveLength(24);
    expect(db.refused.map((r) => [r.message, r.id])).toEqual([["DriverSeat", 0x55b]]);
    expect(db.refused[0]?.reason).toMatch(/already used by message "SteeringInfo".*Bus "Motor"/);
  });

  it("decodes multiplexed, scaled, 48/64-bit and 29-bit messages to hand-computed values", () => {
    const table = tableOf(
      db,
      siteFor([
        "ABS.Info0",
        "ABS.Info1",
        "ABS.OutsideTemp",
        "ABS.SpeedKm",
        "ABS.Handbrake",
        "Radio.StationId7",
        "Radio.SignalStrength",
        "BCC.Milage1",
        "BCC.Milage2",
        "DateTime.Year",
        "DateTime.Minute",
        "SteeringInfo.WheelAngle",
        "AntiTheft.Challenge",
      ]),
    );
    // Info0 0x11, Info1 0x22, mux 0, outside temp raw 130 (25 °C), speed raw 500 (100 km/h), handbrake 1
    expect(values(decode(table, 0x0b2, "112208027d004000"))).toEqual({ s1: 0x11, s2: 0x22, s3: 25, s4: 100, s5: 1 });
    // the same bytes with mux 1 carry Info2/Info3, which no sensor maps
    expect(values(decode(table, 0x0b2, "112209027d004000"))).toEqual({ s3: 25, s4: 100, s5: 1 });
    // StationId7 is listed in mux groups 6 and 7: present for both
    expect(values(decode(table, 0x79a, "0742e80301"))).toEqual({ s6: 0x42, s7: 1000 });
    expect(values(decode(table, 0x79a, "0642e80301"))).toEqual({ s6: 0x42, s7: 1000 });
    expect(values(decode(table, 0x79a, "0542e80301"))).toEqual({ s7: 1000 });
    // 24 and 48 bits × 0.1 km (a 12-byte CAN FD message)
    expect(values(decode(table, 0x385, "40e201070000000001000000"))).toEqual({ s8: 12345.6, s9: 109951162778.3 });
    expect(values(decode(table, 0xda7e, "1d0b1a000f2a07", true))).toEqual({ s10: 26, s11: 42 });
    expect(values(decode(table, 0x55b, "2548"))).toEqual({ s12: 123.4 });
    expect(values(decode(table, 0x667, "ffffffffffff1f00"))).toEqual({ s13: 2 ** 53 - 1 });
    // a 64-bit value a double cannot hold exactly is refused, not rounded
    expect(() => decode(table, 0x667, "efcdab8967452301")).toThrow(
      /AntiTheft\.Challenge is not a finite number a double holds exactly/,
    );
  });
});

describe("names as real files have them", () => {
  it("message and signal names with spaces and dots map from the site file; an ambiguous one is refused", () => {
    const dir = mkdtempSync(join(tmpdir(), "kcd-"));
    const f = join(dir, "names.kcd");
    writeFileSync(
      f,
      `<NetworkDefinition><Bus name="b">
        <Message id="0x10" name="Room 1.Climate"><Signal name="T (air)" offset="0" length="8"/></Message>
        <Message id="0x11" name="Room 1"><Signal name="Climate.T (air)" offset="0" length="8"/></Message>
        <Message id="0x12" name="Δ-Sensor"><Signal name="rh/%" offset="0" length="8"/></Message>
      </Bus></NetworkDefinition>`,
    );
    const db = loadCanDb(f);
    expect(db.refused).toEqual([]);
    const table = tableOf(db, siteFor(["Δ-Sensor.rh/%"]));
    expect(values(decode(table, 0x12, "2a"))).toEqual({ s1: 42 });
    expect(() => tableOf(db, siteFor(["Room 1.Climate.T (air)"]))).toThrow(/names more than one signal/);
  });
});

describe("encode: the inverse, complete for command frames", () => {
  it("sets multiplexers from the signals given, floats, 29-bit and FD messages; refuses what a signal cannot carry", () => {
    const db = loadCanDb(dbcFile);
    const m = (name: string) => db.messages.find((x) => x.name === name)!;
    expect(Buffer.from(encodeMessage(m("Lab_ExtMux"), { O2: 20.95 })).toString("hex")).toBe("212f080000000000");
    expect(
      Buffer.from(encodeMessage(m("ClimateFloat_N1"), { AirTemp: 21.5, RelHumidity: 55.25 })).toString("hex"),
    ).toBe("0000ac4100005d42");
    expect(
      Buffer.from(
        encodeMessage(m("CO2_Motorola"), { CO2: 812, LeafTemp: -12.34, Pressure: 1013.5, Dimmer: 70 }),
      ).toString("hex"),
    ).toBe("032cfb2e40370000");
    expect(encodeMessage(m("Spectrum_FD"), { DailyLightIntegral: 17.25 }).subarray(56)).toEqual(
      hex("0000000000403140"),
    );
    expect(() => encodeMessage(m("Lab_ExtMux"), { O2: 1, LightLevel: 2 })).toThrow(EncodeError);
    expect(() => encodeMessage(m("CO2_Motorola"), { CO2: 70_000 })).toThrow(
      /CO2_Motorola\.CO2: raw value 70000 does not fit 16 unsigned bits/,
    );
    expect(() => encodeMessage(m("CO2_Motorola"), { Nope: 1 })).toThrow(/has no signal "Nope"/);
  });
});

// ---- property: an independent encoder against the product's decoder ----------

/**
 * Write raw bits the textbook way, without the product's bit tables: an Intel
 * signal is `raw << start` in the payload read as one little-endian integer;
 * a Motorola signal is `raw << k` in the payload read as one big-endian
 * integer, k counted from the payload's last bit to the signal's LSB.
 */
function independentEncode(n: number, s: SignalDef, raw: bigint): Uint8Array {
  const bits = BigInt.asUintN(s.length, raw);
  let whole = 0n;
  if (s.byteOrder === "little") whole = bits << BigInt(s.startBit);
  else {
    const msbIndex = (s.startBit >> 3) * 8 + (7 - (s.startBit & 7)); // counted from the first bit on the wire
    whole = bits << BigInt(n * 8 - 1 - (msbIndex + s.length - 1));
  }
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const byte = Number((whole >> BigInt(8 * (s.byteOrder === "little" ? i : n - 1 - i))) & 0xffn);
    out[i] = byte;
  }
  return out;
}

const layout = fc
  .record({
    n: fc.constantFrom(8, 12, 16, 24, 32, 48, 64),
    kind: fc.constantFrom("unsigned", "signed", "float32", "float64"),
    len: fc.integer({ min: 1, max: 64 }),
    little: fc.boolean(),
    pos: fc.double({ min: 0, max: 1, noNaN: true }),
    factor: fc.constantFrom(1, 0.1, 0.01, 0.001, 0.5, 2, 10, 0.25, 1e-6, 3.7, -0.1),
    offset: fc.constantFrom(0, -40, 100, 0.5, -1000.25),
  })
  .map(({ n, kind, len, little, pos, factor, offset }) => {
    const length = kind === "float32" ? 32 : kind === "float64" ? 64 : len;
    const index = Math.floor(pos * (n * 8 - length)); // first bit on the wire (Motorola) or LSB (Intel)
    const startBit = little ? index : (index >> 3) * 8 + (7 - (index & 7));
    const float = kind === "float32" || kind === "float64";
    const s: SignalDef = {
      name: "x",
      startBit,
      length,
      byteOrder: little ? "little" : "big",
      valueType: kind as SignalDef["valueType"],
      factor: float ? 1 : factor,
      offset: float ? 0 : offset,
      unit: "",
      multiplexer: false,
    };
    return { n, s };
  });

describe("property: random layouts and values, encoded independently, decode within the signal's resolution", () => {
  it("integers of 1–64 bits in either byte order, signed or not, any factor and offset; IEEE single and double", () => {
    fc.assert(
      fc.property(
        layout,
        fc.double({ min: 0, max: 1, noNaN: true }),
        fc.double({ noNaN: true, noDefaultInfinity: true }),
        ({ n, s }, u, f) => {
          const c = compileSignal(s);
          if (s.valueType === "float32" || s.valueType === "float64") {
            const v = s.valueType === "float32" ? Math.fround(f) : f;
            const bits =
              s.valueType === "float32"
                ? BigInt(new Uint32Array(new Float32Array([v]).buffer)[0]!)
                : new BigUint64Array(new Float64Array([v]).buffer)[0]!;
            expect(Object.is(physicalValue(independentEncode(n, s, bits), 0, c), v)).toBe(true);
            return;
          }
          // a physical value inside what the bits can carry (and a double holds exactly: |raw| ≤ 2^53)
          const span = Math.min(2 ** s.length - 1, 2 ** 53);
          const lo = s.valueType === "signed" ? -Math.min(2 ** (s.length - 1), 2 ** 53) : 0;
          const raw0 = Math.floor(lo + u * span);
          const physical = raw0 * s.factor + s.offset + s.factor * 0.3 * (u - 0.5); // not on the grid
          // the nearest raw value, kept inside the bits (a double's rounding may step one past the end)
          const raw = BigInt(Math.min(lo + span, Math.max(lo, Math.round((physical - s.offset) / s.factor))));
          const decoded = physicalValue(independentEncode(n, s, raw), 0, c);
          const resolution = Math.abs(s.factor) / 2 + 1e-9 * Math.max(1, Math.abs(physical));
          expect(Math.abs(decoded - physical)).toBeLessThanOrEqual(resolution);
        },
      ),
      { numRuns: 3000 },
    );
  });
});
