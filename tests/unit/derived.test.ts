import { describe, expect, it } from "vitest";
import { READING_STATUS, ReadingColumns, type ReadingStatus, statusCode } from "../../db/readings.js";
import type { DerivedInputs } from "../../pipeline/can/table.js";
import { Deriver } from "../../stages/derived.js";

// The derived stage's pairing and provenance rules on hand-made readings (no
// CAN, no database). Values by hand from FAO-56 eq. 11: e°(25) = 3.168 kPa,
// e°(23) = 2.809 kPa, e°(20) = 2.338 kPa (FAO-56 Annex 2, Table 2.3, 3 decimals).

const ROOM: DerivedInputs = {
  room: 1,
  temperature: 101,
  humidity: 103,
  leafOffsetC: -2,
  airVpd: 911,
  leafVpd: 912,
  dewPoint: 913,
};
const S = 1_000_000; // µs
const T0 = Date.UTC(2024, 4, 1) * 1000;

type Row = { entry: number; sensor: number; t: number; value: number; status?: ReadingStatus };

function columns(rows: Row[]): ReadingColumns {
  const c = new ReadingColumns(rows.length);
  for (const r of rows) c.push(r.entry, r.sensor, T0 + r.t * S, r.value, statusCode(r.status ?? null));
  return c;
}

/** The rows the deriver added (after the first `n`), as plain objects. */
function added(c: ReadingColumns, n: number) {
  return Array.from({ length: c.count - n }, (_, k) => ({
    entry: c.entry[n + k]!,
    sensor: c.sensor[n + k]!,
    t: (c.timeUs[n + k]! - T0) / S,
    value: c.value[n + k]!,
    status: READING_STATUS[c.status[n + k]!],
  }));
}

describe("derived rows of a room", () => {
  it("temperature and humidity of the same entry: air VPD, leaf VPD and dew point at that time, by hand", () => {
    const c = columns([
      { entry: 0, sensor: 101, t: 0, value: 25 },
      { entry: 0, sensor: 102, t: 0, value: 19 }, // another sensor of the frame: ignored
      { entry: 0, sensor: 103, t: 0, value: 60 },
    ]);
    new Deriver(10 * S).add([ROOM], c);
    const out = added(c, 3);
    expect(out.map((r) => [r.entry, r.sensor, r.t, r.status])).toEqual([
      [0, 911, 0, null],
      [0, 912, 0, null],
      [0, 913, 0, null],
    ]);
    // air: 3.168 · 0.4 = 1.2672; leaf: 2.809 − 0.6 · 3.168 = 0.9082; dew point of ea = 1.9008 kPa: 16.70 °C
    expect(Math.abs(out[0]!.value - 1.2672)).toBeLessThan(0.0005);
    expect(Math.abs(out[1]!.value - 0.9082)).toBeLessThan(0.001);
    expect(Math.abs(out[2]!.value - 16.7)).toBeLessThan(0.01);
  });

  it("humidity from an earlier entry within the window pairs; older than the window does not", () => {
    const d = new Deriver(5 * S);
    const plan = [ROOM]; // the table's array: the same object from batch to batch
    const c = columns([
      { entry: 0, sensor: 103, t: 0, value: 50 },
      { entry: 1, sensor: 101, t: 4, value: 20 }, // 4 s after the humidity: paired
      { entry: 2, sensor: 101, t: 6, value: 21 }, // 6 s after it: no partner
    ]);
    d.add(plan, c);
    const out = added(c, 3);
    expect(out.map((r) => [r.entry, r.t])).toEqual([
      [1, 4],
      [1, 4],
      [1, 4],
    ]);
    // 2.338 · 0.5 = 1.169
    expect(Math.abs(out[0]!.value - 1.169)).toBeLessThan(0.0005);
    expect(d.counters).toMatchObject({ derived: 1, rows: 3, unpaired: 1 });
    // the memory outlives the batch: the next batch's temperature 2 s later pairs with it too
    const next = columns([{ entry: 0, sensor: 101, t: 2, value: 20 }]);
    d.add(plan, next);
    expect(next.count).toBe(4);
  });

  it("a humidity reading newer than the temperature is not its partner (no value from the future)", () => {
    const c = columns([
      { entry: 0, sensor: 103, t: 3, value: 50 },
      { entry: 1, sensor: 101, t: 1, value: 20 },
    ]);
    new Deriver(10 * S).add([ROOM], c);
    expect(c.count).toBe(2);
  });

  it("out_of_range inputs make nothing, and a bad humidity is not replaced by an older good one", () => {
    const d = new Deriver(60 * S);
    const c = columns([
      { entry: 0, sensor: 101, t: 0, value: 120, status: "out_of_range" },
      { entry: 0, sensor: 103, t: 0, value: 50 },
      { entry: 1, sensor: 101, t: 1, value: 20 },
      { entry: 1, sensor: 103, t: 1, value: 101, status: "out_of_range" },
      { entry: 2, sensor: 101, t: 2, value: 20 }, // the latest humidity (t 1) is bad
    ]);
    d.add([ROOM], c);
    expect(c.count).toBe(5);
    expect(d.counters).toMatchObject({ derived: 0, outOfRange: 3 });
  });

  it("keeps provenance: the strongest status of the inputs (simulated > replayed > migrated > NULL)", () => {
    const c = columns([
      { entry: 0, sensor: 101, t: 0, value: 25, status: "replayed" },
      { entry: 0, sensor: 103, t: 0, value: 60 },
      { entry: 1, sensor: 101, t: 1, value: 25, status: "replayed" },
      { entry: 1, sensor: 103, t: 1, value: 60, status: "simulated" },
      { entry: 2, sensor: 101, t: 2, value: 25, status: "migrated" },
      { entry: 2, sensor: 103, t: 2, value: 60 },
    ]);
    new Deriver(0).add([ROOM], c);
    expect(added(c, 6).map((r) => r.status)).toEqual([
      ...Array(3).fill("replayed"),
      ...Array(3).fill("simulated"),
      ...Array(3).fill("migrated"),
    ]);
  });

  it("the same frame twice in a batch: each entry gets the same derived keys (stored once by the writer)", () => {
    const c = columns([
      { entry: 0, sensor: 101, t: 0, value: 25 },
      { entry: 0, sensor: 103, t: 0, value: 60 },
      { entry: 1, sensor: 101, t: 0, value: 25 },
      { entry: 1, sensor: 103, t: 0, value: 60 },
    ]);
    new Deriver(10 * S).add([ROOM], c);
    const out = added(c, 4);
    expect(out.map((r) => [r.entry, r.sensor, r.t])).toEqual([
      [0, 911, 0],
      [0, 912, 0],
      [0, 913, 0],
      [1, 911, 0],
      [1, 912, 0],
      [1, 913, 0],
    ]);
    expect(out.slice(3).map((r) => r.value)).toEqual(out.slice(0, 3).map((r) => r.value));
  });

  it("only the declared kinds; humidity 0 % (no dew point) makes nothing and is counted", () => {
    const dewOnly: DerivedInputs = { ...ROOM, airVpd: 0, leafVpd: 0 };
    const d = new Deriver(0);
    const c = columns([
      { entry: 0, sensor: 101, t: 0, value: 20 },
      { entry: 0, sensor: 103, t: 0, value: 50 },
      { entry: 1, sensor: 101, t: 1, value: 20 },
      { entry: 1, sensor: 103, t: 1, value: 0 },
    ]);
    d.add([dewOnly], c);
    const out = added(c, 4);
    expect(out.map((r) => r.sensor)).toEqual([913]);
    expect(Math.abs(out[0]!.value - 9.27)).toBeLessThan(0.01);
    expect(d.counters.outOfDomain).toBe(1);
  });

  it("input sensor ids too large for a dense lookup table work the same", () => {
    const big: DerivedInputs = { ...ROOM, temperature: 2_000_000_001, humidity: 2_000_000_003 };
    const c = columns([
      { entry: 0, sensor: 2_000_000_001, t: 0, value: 25 },
      { entry: 0, sensor: 2_000_000_003, t: 0, value: 60 },
    ]);
    new Deriver(0).add([big], c);
    const out = added(c, 2);
    expect(out.map((r) => r.sensor)).toEqual([911, 912, 913]);
    expect(Math.abs(out[0]!.value - 1.2672)).toBeLessThan(0.0005);
  });

  it("rooms stay apart, and a new plan (site reload) forgets the old pairing memory", () => {
    const room2: DerivedInputs = {
      ...ROOM,
      room: 2,
      temperature: 301,
      humidity: 303,
      airVpd: 921,
      leafVpd: 0,
      dewPoint: 0,
    };
    const d = new Deriver(60 * S);
    const c = columns([
      { entry: 0, sensor: 103, t: 0, value: 60 },
      { entry: 1, sensor: 301, t: 1, value: 25 }, // room 2 has no humidity yet: room 1's does not count
      { entry: 2, sensor: 303, t: 2, value: 60 },
      { entry: 3, sensor: 301, t: 3, value: 25 },
    ]);
    d.add([ROOM, room2], c);
    expect(added(c, 4).map((r) => [r.entry, r.sensor])).toEqual([[3, 921]]);
    const after = columns([{ entry: 0, sensor: 301, t: 4, value: 25 }]);
    d.add([{ ...room2 }], after); // another plan object: memory reset
    expect(after.count).toBe(1);
  });
});
